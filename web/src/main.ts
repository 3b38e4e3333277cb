// spamscope web UI. Hash routes (page state in the query):
//   #/?q=&sort=                    channel list
//   #/channel/<stream>?from=&to=&event=   chat beside the channel's spam
//   #/user/<login or id>           one user's flags across streams
//   #/search?q=                    find where a spam was seen
//   #/cluster                      replicas, shards, lag
//   #/params?scope=                detector params (admin token to change)
import { channelPage } from "./channel";
import { probeEmoteImages } from "./chat";
import { channelsPage, clusterPage, paramsPage, searchPage, userPage } from "./pages";
import { current } from "./route";
import { errorBox } from "./ui";

const app = document.getElementById("app")!;
let running: AbortController | null = null;

// Pages change their own query with history.replaceState, which fires no
// hashchange: only navigation reloads a page.
function route() {
  const r = current();
  running?.abort();
  running = new AbortController();
  const signal = running.signal;
  document.querySelectorAll("dialog").forEach((d) => d.remove());
  document.querySelectorAll("header nav a").forEach((a) => a.classList.toggle("here", a.getAttribute("href") === `#/${r.page}`));
  const fail = (e: unknown) => { if (!signal.aborted) app.append(errorBox(e)); };
  switch (r.page) {
    case "channel": channelPage(app, r.arg, signal).catch(fail); break;
    case "user": userPage(app, r.arg, signal).catch(fail); break;
    case "search": searchPage(app, signal); break;
    case "cluster": clusterPage(app, signal).catch(fail); break;
    case "params": paramsPage(app); break;
    default: channelsPage(app, signal).catch(fail);
  }
}

// Dark mode follows the system unless the reader chose.
const theme = document.getElementById("theme") as HTMLButtonElement;
function applyTheme() {
  const chosen = localStorage.getItem("spamscope-theme");
  const dark = chosen ? chosen === "dark" : window.matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  theme.textContent = dark ? "Light" : "Dark";
  theme.setAttribute("aria-label", `switch to ${dark ? "light" : "dark"} mode`);
}
theme.addEventListener("click", () => {
  localStorage.setItem("spamscope-theme", document.documentElement.dataset.theme === "dark" ? "light" : "dark");
  applyTheme();
});
window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", applyTheme);
applyTheme();

window.addEventListener("hashchange", route);
probeEmoteImages();
route();
