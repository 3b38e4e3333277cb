// Browser test of the web UI against a running `spamscope standalone`:
// node tests/browser.mjs <base url> <screenshot dir>
// Debian's Chromium, driven by playwright-core (no browser download).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";

const [base, shots = "artifacts/screenshots"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node tests/browser.mjs <base url> [screenshot dir]");
  process.exit(64);
}
mkdirSync(shots, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));

async function step(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.log(`FAIL ${name}: ${e.message}`);
  }
  await page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

await step("channels", async () => {
  await page.goto(`${base}/#/`);
  await page.locator('tr[data-stream="twitch.xqcow"]').waitFor({ timeout: 30000 });
});

await step("channel-page", async () => {
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  // Spam events from the history, beside the chat panel.
  await page.locator("#spam-events .event").first().waitFor({ timeout: 30000 });
  const n = await page.locator("#spam-events .event").count();
  if (n < 5) throw new Error(`only ${n} spam events shown`);
  await page.locator("svg.chart rect").first().waitFor({ timeout: 10000 });
  await page.locator("#decisions .msg").first().waitFor({ timeout: 10000 });
});

await step("search", async () => {
  await page.goto(`${base}/#/search`);
  await page.fill("#q", "\u200bspam🥰this🥰cheese🥰for🥰good🥰luck");
  await page.click("button[type=submit]");
  await page.locator(".match", { hasText: "chilledcow-2020-11" }).first().waitFor({ timeout: 30000 });
});

await step("cluster", async () => {
  await page.goto(`${base}/#/cluster`);
  await page.locator("#shards tr").nth(1).waitFor({ timeout: 30000 });
  const text = await page.locator("#shards").innerText();
  if (!text.includes("standalone-0")) throw new Error("no shard owner shown");
});

await browser.close();
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`screenshots in ${shots}`);
