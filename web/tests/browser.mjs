// Browser test of the web UI against a running `spamscope standalone`:
//   node tests/browser.mjs <base url> <screenshot dir>
// Environment: XQCOW_EVENTS and XQCOW_DECISIONS (what paging must reach,
// counted through the API), LIVE_STREAM (a stream whose chat is arriving),
// ADMIN_TOKEN. To see the page fail and recover it prints "KILL SERVER" and
// "START SERVER" and waits for a line on stdin after each.
// Debian's Chromium, driven by playwright-core (no browser download).
import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { createInterface } from "node:readline";

const [base, shots = "artifacts/screenshots"] = process.argv.slice(2);
if (!base) {
  console.error("usage: node tests/browser.mjs <base url> [screenshot dir]");
  process.exit(64);
}
const env = (k, d) => process.env[k] ?? d;
const expectedEvents = Number(env("XQCOW_EVENTS", "0"));
const expectedFlags = Number(env("XQCOW_DECISIONS", "0"));
const liveStream = env("LIVE_STREAM", "");
const token = env("ADMIN_TOKEN", "");
mkdirSync(shots, { recursive: true });

const stdin = createInterface({ input: process.stdin });
const replies = [];
let waiting = null;
stdin.on("line", (l) => { if (waiting) { const w = waiting; waiting = null; w(l); } else replies.push(l); });
const ask = (what) => new Promise((resolve) => {
  console.log(what);
  if (replies.length) resolve(replies.shift()); else waiting = resolve;
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
let page = await context.newPage();
page.on("pageerror", (e) => failures.push(`page error: ${e.message}`));
const fail = (m) => { throw new Error(m); };

async function step(name, fn, p = () => page) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.log(`FAIL ${name}: ${e.message}`);
  }
  await p().screenshot({ path: `${shots}/${name}.png`, fullPage: true });
}

await step("channels", async () => {
  await page.goto(`${base}/#/`);
  await page.locator('tr[data-stream="twitch.xqcow"]').waitFor({ timeout: 30000 });
  // Filtering is kept in the URL.
  await page.fill("#filter", "xqc");
  await page.waitForFunction(() => [...document.querySelectorAll("#channels tr[data-stream]")].every((r) => r.dataset.stream.includes("xqc")));
  if (!page.url().includes("q=xqc")) fail(`filter not in the URL: ${page.url()}`);
  await page.fill("#filter", "");
  // Each stream's state: the live replay is live, the finished log is not.
  await page.locator(`tr[data-stream="${liveStream}"] .state.live`).waitFor({ timeout: 30000 });
  const xq = await page.locator('tr[data-stream="twitch.xqcow"] .state').innerText();
  if (xq === "live") fail("the finished xqcow log is shown as live");
});

await step("live-scroll-back", async () => {
  await page.goto(`${base}/#/channel/${liveStream}`);
  await page.waitForFunction(() => document.querySelectorAll("#chat .msg").length >= 40, null, { timeout: 60000 });
  await page.waitForFunction(() => document.getElementById("stream-state")?.textContent === "live", null, { timeout: 10000 });
  // Scrolled back, the chat stays put while messages arrive.
  await page.locator("#chat").evaluate((e) => { e.scrollTop = 0; });
  const top = await page.locator("#chat .msg").first().getAttribute("data-id");
  await page.locator(".resume:not([hidden])").waitFor({ timeout: 30000 });
  await page.waitForTimeout(1500);
  const st = await page.locator("#chat").evaluate((e) => e.scrollTop);
  if (st > 5) fail(`chat moved to ${st} while scrolled back`);
  const still = await page.locator("#chat .msg").first().getAttribute("data-id");
  if (still !== top) fail("the rows under the reader changed");
  const label = await page.locator(".resume").innerText();
  if (!/\d+ new message/.test(label)) fail(`resume control says "${label}"`);
  await page.screenshot({ path: `${shots}/live-scroll-back.png` });
  await page.click(".resume");
  const atBottom = await page.locator("#chat").evaluate((e) => e.scrollHeight - e.scrollTop - e.clientHeight < 40);
  if (!atBottom) fail("resume did not go to the newest message");
});

await step("nuke", async () => {
  // The live channel acts through a local stand-in for Twitch's API (its
  // policy says dry_run = false, and standalone runs an actor).
  await page.goto(`${base}/#/channel/${liveStream}`);
  await page.locator("#spam-events .event").first().waitFor({ timeout: 60000 });
  await page.evaluate((t) => sessionStorage.setItem("spamscope-admin-token", t), token);
  // The event with the most users.
  const id = await page.evaluate(() => {
    let best = null, most = -1;
    for (const c of document.querySelectorAll("#spam-events .event")) {
      const m = /from (\d+) users/.exec(c.textContent);
      if (m && Number(m[1]) > most) { most = Number(m[1]); best = c.dataset.event; }
    }
    return best;
  });
  const card = page.locator(`#spam-events .event[data-event="${id}"]`);
  if (!(await page.locator("#dry-run").isChecked())) fail("dry run is not the default");
  await card.locator("button.nuke").click();
  const dry = page.locator("#actions .nuke-result").first();
  await dry.waitFor({ timeout: 15000 });
  const dryText = await dry.innerText();
  if (!/: [1-9]\d* users, .*\(dry run\)/.test(dryText)) fail(`the dry run says "${dryText}"`);
  if (await dry.locator("button.undo").count()) fail("a dry run offers an undo");
  await page.locator('#actions .record[data-status="dry_run"]').first().waitFor({ timeout: 15000 });
  // For real: the actor sends the timeouts and their answers come back.
  await page.locator("#dry-run").uncheck();
  await card.locator("button.nuke").click();
  const live = page.locator("#actions .nuke-result:has(button.undo)").first();
  await live.waitFor({ timeout: 15000 });
  await page.locator('#actions .record[data-by="spamscope"][data-action="timeout"][data-status="done"]').first().waitFor({ timeout: 20000 });
  await page.screenshot({ path: `${shots}/nuke-done.png`, fullPage: true });
  // One timeout lifted on its own: its unban names it, and is sent.
  const one = page.locator('#actions .record[data-by="spamscope"][data-action="timeout"][data-status="done"]').first();
  const oneId = await one.getAttribute("data-record");
  await one.locator("button.undo-one").click();
  await page.locator(`#actions .record[data-by="spamscope"][data-action="unban"][data-status="done"][data-undoes="${oneId}"]`).waitFor({ timeout: 20000 });
  // Undo: every timeout lifted, each answer shown.
  await live.locator("button.undo").click();
  await page.locator("#actions .nuke-result", { hasText: "Undo of nuke" }).first().waitFor({ timeout: 15000 });
  await page.waitForFunction(() => {
    const n = (sel) => document.querySelectorAll(`#actions .record[data-by="spamscope"]${sel}`).length;
    const done = n('[data-action="timeout"][data-status="done"]');
    return done > 0 && n('[data-action="unban"][data-status="done"]') >= done;
  }, null, { timeout: 20000 });
  // The trail is kept: a page opened later reads it back.
  await page.reload();
  await page.locator('#actions .record[data-by="spamscope"][data-action="unban"][data-status="done"]').first().waitFor({ timeout: 20000 });
  if (!(await page.locator("#dry-run").isChecked())) fail("dry run is not the default after a reload");
});
await step("channel-page", async () => {
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  await page.locator("#spam-events .event").first().waitFor({ timeout: 30000 });
  const n = await page.locator("#spam-events .event").count();
  if (n < 5) fail(`only ${n} spam events shown`);
  // The chart (uPlot draws bars, axes and their labels on a canvas) fills
  // its box and says its unit.
  const canvas = page.locator(".chart .u-wrap canvas").first();
  await canvas.waitFor({ timeout: 10000 });
  const box = await canvas.boundingBox();
  const holder = await page.locator(".chart").first().boundingBox();
  if (box.width < holder.width * 0.9) fail(`chart ${box.width} px wide in a ${holder.width} px box`);
  const unit = await page.locator(".chart").first().getAttribute("aria-label");
  if (unit !== "spam messages / min") fail(`chart labelled ${unit}`);
  await page.locator("#decisions .flag").first().waitFor({ timeout: 10000 });
  // The kept chat is backfilled, with timestamps, and the stream's state.
  await page.waitForFunction(() => document.querySelectorAll("#chat .msg").length >= 100, null, { timeout: 15000 });
  if (!(await page.locator("#chat .msg .ts").first().innerText()).match(/^\d\d:\d\d:\d\d$/)) fail("no timestamps");
  // The audit trail read back when the page opens (the flagged users'
  // suggestions of the default policy).
  await page.locator('#actions .record[data-status="suggested"]').first().waitFor({ timeout: 15000 });
  // And what the moderators did themselves, beside it.
  await page.locator('#actions .record[data-by="moderator"][data-status="done"]').first().waitFor({ timeout: 15000 });
  const state = await page.locator("#stream-state").innerText();
  if (state === "live") fail("a 2019 log shown as live");
});

await step("policy", async () => {
  // The channel's policy set at run time: copypasta nukes suggested on
  // #xqcow, then the layer removed.
  await page.locator("#policy summary").click();
  await page.locator("#policy-effective").filter({ hasText: "copypasta" }).waitFor({ timeout: 15000 });
  await page.locator("#policy-layer").fill('copypasta = "suggest"');
  await page.locator("#policy button.save-policy").click();
  await page.locator("#policy .saved").waitFor({ timeout: 15000 });
  const effective = await page.locator("#policy-effective").innerText();
  if (!effective.includes('copypasta = "suggest"')) fail(`in effect: ${effective}`);
  await page.screenshot({ path: `${shots}/policy-set.png`, fullPage: true });
  await page.locator("#policy-layer").fill("");
  await page.locator("#policy button.save-policy").click();
  await page.waitForFunction(() => document.querySelector("#policy-effective").textContent.includes('copypasta = "off"'), null, { timeout: 15000 });
  await page.locator("#policy summary").click();
});

await step("backtest", async () => {
  // The cluster's policy over the kept #xqcow chat, at four sensitivities.
  await page.locator("#backtest summary").click();
  await page.locator("#backtest button.run-backtest").click();
  await page.locator("#backtest .backtest-summary").waitFor({ timeout: 60000 });
  const said = await page.locator("#backtest-result p.meta").first().innerText();
  const m = /^(\d+) chat events .*; (\d+) chatters, (\d+) moderated/.exec(said);
  if (!m || Number(m[1]) < 1000 || Number(m[2]) < 100 || Number(m[3]) < 1) fail(`the backtest says "${said}"`);
  const points = await page.locator("#backtest .backtest-curve tr:not(:first-child)").count();
  if (points !== 4) fail(`${points} sensitivities shown, 4 asked`);
  if ((await page.locator("#backtest .backtest-curve tr.best").count()) !== 1) fail("no best sensitivity marked");
  await page.locator("#backtest").screenshot({ path: `${shots}/backtest-panel.png` });
});

await step("paging", async () => {
  // Every spam event and every flag by paging, as many as the API holds.
  for (let i = 0; i < 20 && await page.locator("#spam-events + div button.more").count(); i++) {
    await page.click("#spam-events + div button.more");
    await page.waitForTimeout(300);
  }
  const events = await page.locator("#spam-events .event").count();
  if (events !== expectedEvents) fail(`${events} events shown, the API holds ${expectedEvents}`);
  for (let i = 0; i < 20 && await page.locator("#decisions + div button.more").count(); i++) {
    await page.click("#decisions + div button.more");
    await page.waitForTimeout(300);
  }
  const flags = await page.locator("#decisions .flag").count();
  if (flags !== expectedFlags) fail(`${flags} flags shown, the API holds ${expectedFlags}`);
});

await step("event-detail", async () => {
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  await page.locator("#spam-events .event .open").first().click();
  await page.locator("dialog#event-detail #event-messages .msg").first().waitFor({ timeout: 20000 });
  const users = await page.locator("#event-users li").count();
  if (users < 1) fail("no users listed");
  if (!page.url().includes("event=")) fail("the open event is not in the URL");
});

await step("user-page", async () => {
  await page.keyboard.press("Escape");
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  const link = page.locator("#decisions .flag a.who").first();
  await link.waitFor({ timeout: 20000 });
  const who = await link.innerText();
  await link.click();
  await page.locator("#user-flags .flag .evidence li").first().waitFor({ timeout: 20000 });
  const h1 = await page.locator("h1").innerText();
  if (h1 !== who) fail(`user page of ${h1}, clicked ${who}`);
  // What they said there and what the moderators did, from the kept chat.
  const there = page.locator('#user-streams .activity[data-stream="twitch.xqcow"]');
  await there.locator(".user-messages .msg").first().waitFor({ timeout: 20000 });
  const heading = await there.locator("h3").first().innerText();
  if (!/^Moderator actions \(\d+\)$/.test(heading)) fail(`actions heading: ${heading}`);
  // A user spamscope suggested acting on (the channel's Actions panel):
  // their page lists it, from the history store, with its stream.
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  const suggested = page.locator('#actions .record[data-status="suggested"] a').first();
  await suggested.waitFor({ timeout: 20000 });
  await suggested.click();
  const acted = page.locator('#user-actions .record[data-status="suggested"] a[href="#/channel/twitch.xqcow"]');
  await acted.first().waitFor({ timeout: 20000 });
});

await step("mute", async () => {
  await page.goto(`${base}/#/channel/twitch.xqcow`);
  const card = page.locator("#spam-events .event").first();
  await card.waitFor({ timeout: 20000 });
  const id = await card.getAttribute("data-event");
  const text = await card.getAttribute("data-text");
  page.once("dialog", (d) => d.accept(token));
  await card.locator("button.mute").click();
  await page.locator(`#spam-events .event[data-event="${id}"]`).waitFor({ state: "detached", timeout: 10000 });
  // The channel's params now allow it.
  await page.goto(`${base}/#/params?scope=twitch.xqcow`);
  await page.waitForFunction((t) => document.getElementById("p-allowed_phrases")?.value.split("\n").includes(t), text, { timeout: 10000 });
  if (!(await page.locator("#ov-allowed_phrases").isChecked())) fail("allowed_phrases not shown as overridden");
});

await step("search", async () => {
  // Straight from a URL: the query is page state.
  await page.goto(`${base}/#/search?q=${encodeURIComponent("\u200bspam🥰this🥰cheese🥰for🥰good🥰luck")}`);
  await page.locator(".match", { hasText: "chilledcow-2020-11" }).first().waitFor({ timeout: 30000 });
});

await step("cluster", async () => {
  await page.goto(`${base}/#/cluster`);
  await page.locator("#replicas tr").nth(1).waitFor({ timeout: 30000 });
  const text = await page.locator("#replicas").innerText();
  if (!text.includes("standalone-0")) fail("no replica shown");
});

await step("params", async () => {
  // A form: each key with its meaning and range; the scope is in the URL.
  await page.goto(`${base}/#/params?scope=twitch.livechan`);
  await page.locator("#p-sensitivity").waitFor({ timeout: 10000 });
  const about = await page.locator("#d-sensitivity").innerText();
  if (!about.includes("from 0.05, at most 20")) fail(`sensitivity described as: ${about}`);
  if (!(await page.locator("#scope-list").innerText()).includes("twitch.xqcow")) fail("scopes with overrides not listed");
  // Out of range: refused with the key named.
  await page.fill("#p-sensitivity", "50");
  await page.fill('input[aria-label="admin token"]', token);
  await page.click("#save");
  await page.locator("[role=status] .error", { hasText: "sensitivity" }).waitFor({ timeout: 10000 });
  await page.fill("#p-sensitivity", "2");
  await page.click("#save");
  await page.locator("[role=status] .saved").waitFor({ timeout: 10000 });
  await page.reload();
  await page.locator("#p-sensitivity").waitFor({ timeout: 10000 });
  if ((await page.locator("#p-sensitivity").inputValue()) !== "2" || !(await page.locator("#ov-sensitivity").isChecked())) fail("the override did not stay");
});

const dark = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "dark" });
const darkPage = await dark.newPage();
await step("dark", async () => {
  await darkPage.goto(`${base}/#/channel/twitch.xqcow`);
  await darkPage.locator("#spam-events .event").first().waitFor({ timeout: 30000 });
  if ((await darkPage.evaluate(() => document.documentElement.dataset.theme)) !== "dark") fail("no dark mode from prefers-color-scheme");
  // The switch overrides it, and is reachable from the keyboard.
  await darkPage.focus("#theme");
  await darkPage.keyboard.press("Enter");
  if ((await darkPage.evaluate(() => document.documentElement.dataset.theme)) !== "light") fail("the switch did not change the theme");
  await darkPage.keyboard.press("Enter");
}, () => darkPage);

const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
const phonePage = await phone.newPage();
await step("narrow", async () => {
  await phonePage.goto(`${base}/#/channel/twitch.xqcow`);
  await phonePage.locator("#spam-events .event").first().waitFor({ timeout: 30000 });
  const chat = await phonePage.locator("#chat").boundingBox();
  const events = await phonePage.locator("#spam-events").boundingBox();
  if (!chat || !events) fail("chat or events not shown");
  if (chat.width < 300 || events.width < 300) fail(`panes too narrow: ${chat.width}, ${events.width}`);
  if (events.y <= chat.y) fail("events not below the chat on a narrow screen");
}, () => phonePage);

await step("unknown-channel", async () => {
  await page.goto(`${base}/#/channel/twitch.nobodyhere`);
  await page.locator(".error", { hasText: "Not found" }).waitFor({ timeout: 10000 });
});

await step("server-down", async () => {
  await page.goto(`${base}/#/`);
  await page.locator('tr[data-stream="twitch.xqcow"]').waitFor({ timeout: 30000 });
  await ask("KILL SERVER");
  await page.locator("#banner:not([hidden])").waitFor({ timeout: 15000 });
  if (!(await page.locator("#banner").innerText()).includes("Cannot reach")) fail("banner says nothing");
});

await step("server-back", async () => {
  await ask("START SERVER");
  await page.locator("#banner").waitFor({ state: "hidden", timeout: 40000 });
  await page.locator('tr[data-stream="twitch.xqcow"]').waitFor({ timeout: 30000 });
});

await browser.close();
stdin.close();
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log(`screenshots in ${shots}`);
