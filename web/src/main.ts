// spamscope web UI. Hash routes:
//   #/                     channel list
//   #/channel/<stream>     live chat beside the channel's spam events
//   #/search               find where a spam was seen
//   #/cluster              replicas, shards, lag
//   #/params               detector params (admin token to change)
import { ConnectError } from "@connectrpc/connect";
import { api } from "./api";
import { Platform, type ChatEvent } from "./gen/spamscope/v1/chat_pb";
import { SpamEventClass, SpamEventState, type SpamEvent, type Decision } from "./gen/spamscope/v1/detect_pb";

/** Human name of an event class. */
const CLASS_NAMES: Record<number, string> = {
  [SpamEventClass.CROWD_REACTION]: "crowd reaction",
  [SpamEventClass.COPYPASTA]: "copypasta",
  [SpamEventClass.BOT_WAVE]: "bot wave",
  [SpamEventClass.LINK_PROMO]: "link spam",
  [SpamEventClass.FLOOD]: "flood",
};

/** A number as a person reads it. */
const num = (v: number) => (Math.abs(v) >= 10 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(2));

const app = document.getElementById("app")!;
let stop: (() => void) | null = null;

function h(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

function time(ms: bigint | number): string {
  const n = Number(ms);
  return n ? new Date(n).toISOString().replace("T", " ").slice(0, 19) : "-";
}

function platformKey(p: Platform): string {
  return p === Platform.TWITCH ? "twitch" : p === Platform.YOUTUBE ? "youtube" : "unknown";
}

function showError(where: HTMLElement, e: unknown) {
  const msg = e instanceof ConnectError ? `${e.code}: ${e.rawMessage}` : String(e);
  where.append(h("p", { class: "error" }, msg));
}

async function channels() {
  const table = h("table", {}, h("tr", {}, h("th", {}, "stream"), h("th", {}, "messages / min"), h("th", {}, "spam / min"), h("th", {}, "active spam events"), h("th", {}, "last message")));
  app.replaceChildren(h("h1", {}, "Channels"), table);
  let alive = true;
  stop = () => (alive = false);
  while (alive) {
    try {
      const res = await api.listChannels({ limit: 200 });
      const rows = res.channels.map((c) =>
        h("tr", { "data-stream": c.stream },
          h("td", {}, h("a", { href: `#/channel/${c.stream}` }, c.stream)),
          h("td", {}, c.messagesPerMinute.toFixed(0)),
          h("td", {}, c.spamMessagesPerMinute.toFixed(0)),
          h("td", {}, String(c.activeSpamEvents)),
          h("td", {}, time(c.lastMessageMs))));
      table.replaceChildren(table.firstChild!, ...rows);
      if (rows.length === 0) table.append(h("tr", {}, h("td", { colspan: "5" }, "No live channels yet.")));
    } catch (e) {
      showError(app, e);
      return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function eventCard(e: SpamEvent): HTMLElement {
  const ended = e.state === SpamEventState.ENDED;
  const cls = CLASS_NAMES[e.class] ?? "unclassified";
  const why = e.classEvidence.map((t) => `${t.name.replaceAll("_", " ")} ${num(t.observed)} (threshold ${num(t.threshold)})`).join(", ");
  return h("div", { class: `event${ended ? " ended" : ""}${e.spam ? "" : " crowd"}`, "data-event": String(e.eventId), "data-class": cls },
    h("div", { class: "text" }, h("span", { class: "class" }, cls), " ", e.text.replace(/[\u200b-\u200f\u2060-\u206f\u{e0000}-\u{e0fff}]/gu, "")),
    h("div", { class: "meta" }, `${e.count} messages from ${e.uniqueUsers} users · ${time(e.firstSeenMs)} → ${time(e.lastSeenMs)} · ${ended ? "ended" : "active"} · ${e.fingerprint}`),
    h("div", { class: "meta" }, why));
}

function chart(svg: SVGSVGElement, points: Map<number, number>) {
  const xs = [...points.keys()].sort((a, b) => a - b);
  const max = Math.max(1, ...points.values());
  const w = 600, hgt = 120, bw = xs.length ? w / xs.length : w;
  svg.setAttribute("viewBox", `0 0 ${w} ${hgt}`);
  svg.replaceChildren(...xs.map((x, i) => {
    const v = points.get(x)!;
    const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    r.setAttribute("x", String(i * bw));
    r.setAttribute("width", String(Math.max(1, bw - 1)));
    r.setAttribute("y", String(hgt - (v / max) * (hgt - 10)));
    r.setAttribute("height", String((v / max) * (hgt - 10)));
    r.setAttribute("fill", "#d33");
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = `${time(x)}: ${v} spam messages`;
    r.append(t);
    return r;
  }));
}

async function channel(stream: string) {
  const chat = h("div", { class: "scroll", id: "chat" });
  const events = h("div", { class: "scroll", id: "spam-events" });
  const decisions = h("div", { class: "scroll", id: "decisions" });
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "chart");
  app.replaceChildren(
    h("h1", {}, stream),
    h("h2", {}, "Spam messages per minute"), svg,
    h("div", { class: "cols" },
      h("div", { class: "panel" }, h("h2", {}, "Chat, unfiltered"), chat),
      h("div", { class: "panel" }, h("h2", {}, "Spam events, then crowd reactions"), events)),
    h("div", { class: "panel" }, h("h2", {}, "Flagged users"), decisions));
  const cards = new Map<bigint, HTMLElement>();
  const rate = new Map<number, number>();
  const lastCount = new Map<bigint, bigint>();
  const putEvent = (e: SpamEvent) => {
    const card = eventCard(e);
    const old = cards.get(e.eventId);
    if (old) old.replaceWith(card); else events.prepend(card);
    cards.set(e.eventId, card);
    const added = Number(e.count - (lastCount.get(e.eventId) ?? e.count));
    lastCount.set(e.eventId, e.count);
    // Crowd reactions are chat, not spam: not in the spam rate.
    if (added > 0 && e.spam) {
      const m = Math.floor(Number(e.lastSeenMs) / 60000) * 60000;
      rate.set(m, (rate.get(m) ?? 0) + added);
      chart(svg, rate);
    }
  };
  const putDecision = (d: Decision) => {
    const why = d.triggers.map((t) => {
      const norm = t.norm > 0 ? `, chat now ${num(t.norm)}` : "";
      const detail = t.detail ? ` [${t.detail}]` : "";
      return `${t.name.replaceAll("_", " ")} ${num(t.observed)} (threshold ${num(t.threshold)}${norm}) +${t.contribution.toFixed(2)}${detail}`;
    }).join(", ");
    decisions.prepend(h("div", { class: "msg" }, h("span", { class: "who" }, d.userLogin || d.userId),
      `${time(d.atMs)} · suspicion ${d.suspicion.toFixed(2)} of ${d.flagThreshold.toFixed(2)} · ${why}`));
  };
  try {
    const hist = await api.channelHistory({ stream, pageSize: 100 });
    for (const e of [...hist.spamEvents].reverse()) { lastCount.set(e.eventId, e.count); putEvent(e); }
    for (const p of hist.spamRate) rate.set(Number(p.minuteMs), Number(p.spamMessages));
    chart(svg, rate);
    for (const d of [...hist.decisions].reverse()) putDecision(d);
  } catch (e) {
    showError(app, e);
  }
  const abort = new AbortController();
  stop = () => abort.abort();
  try {
    for await (const ev of api.watchChannel({ stream }, { signal: abort.signal })) {
      switch (ev.kind.case) {
        case "chat": addChat(chat, ev.kind.value); break;
        case "spamEvent": putEvent(ev.kind.value); break;
        case "decision": putDecision(ev.kind.value); break;
        case "score":
          if (ev.kind.value.score >= 0.5) chat.querySelector(`[data-id="${CSS.escape(ev.kind.value.messageId)}"]`)?.classList.add("spam");
          break;
      }
    }
  } catch (e) {
    if (!abort.signal.aborted) showError(app, e);
  }
}

function addChat(chat: HTMLElement, ev: ChatEvent) {
  if (ev.kind.case !== "message") return;
  const m = ev.kind.value;
  chat.append(h("div", { class: "msg", "data-id": ev.eventId }, h("span", { class: "who" }, m.author?.displayName ?? "?"), m.text));
  while (chat.childElementCount > 500) chat.firstElementChild!.remove();
  chat.scrollTop = chat.scrollHeight;
}

function search() {
  const input = h("input", { type: "text", id: "q", placeholder: "Paste a message: where and when was it seen?" }) as HTMLInputElement;
  const results = h("div", { id: "results" });
  const form = h("form", {}, input, h("button", { type: "submit" }, "Search"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    results.replaceChildren(h("p", {}, "Searching…"));
    try {
      const res = await api.searchSpam({ text: input.value, pageSize: 20 });
      if (res.matches.length === 0) { results.replaceChildren(h("p", {}, "Not seen.")); return; }
      results.replaceChildren(...res.matches.map((m) => h("div", { class: "panel match", "data-fingerprint": m.fingerprint },
        h("div", { class: "text" }, m.text), h("div", { class: "meta" }, `similarity ${m.similarity.toFixed(2)} · ${m.fingerprint}`),
        h("table", {}, h("tr", {}, h("th", {}, "channel"), h("th", {}, "messages"), h("th", {}, "users"), h("th", {}, "first seen"), h("th", {}, "last seen")),
          ...m.sightings.map((s) => {
            const st = `${platformKey(s.platform)}.${s.streamId}`;
            return h("tr", {}, h("td", {}, h("a", { href: `#/channel/${st}` }, st)), h("td", {}, String(s.count)), h("td", {}, String(s.uniqueUsers)), h("td", {}, time(s.firstSeenMs)), h("td", {}, time(s.lastSeenMs)));
          })))));
    } catch (e) {
      results.replaceChildren();
      showError(results, e);
    }
  });
  app.replaceChildren(h("h1", {}, "Search"), form, results);
}

async function cluster() {
  const body = h("div", {});
  app.replaceChildren(h("h1", {}, "Cluster"), body);
  let alive = true;
  stop = () => (alive = false);
  while (alive) {
    try {
      const st = await api.clusterStatus({});
      body.replaceChildren(
        h("p", {}, `${st.replicas.length} detector replicas: ${st.replicas.join(", ") || "none"} · ${st.shardCount} shards`),
        h("table", { id: "shards" }, h("tr", {}, h("th", {}, "shard"), h("th", {}, "owner"), h("th", {}, "epoch"), h("th", {}, "last sequence"), h("th", {}, "lag")),
          ...st.shards.map((s) => h("tr", {}, h("td", {}, String(s.shard)), h("td", {}, s.owner || "-"), h("td", {}, String(s.epoch)), h("td", {}, String(s.lastSequence)), h("td", {}, String(s.lag))))));
    } catch (e) {
      showError(body, e);
      return;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function params() {
  const scope = h("input", { type: "text", placeholder: "scope: empty for the cluster defaults, or twitch.<channel>" }) as HTMLInputElement;
  const editor = h("textarea", {}) as HTMLTextAreaElement;
  const effective = h("pre", {});
  const token = h("input", { type: "password", placeholder: "admin token (needed to save)" }) as HTMLInputElement;
  const status = h("div", {});
  const load = h("button", {}, "Load");
  const save = h("button", {}, "Save");
  load.addEventListener("click", async () => {
    status.replaceChildren();
    try {
      const p = await api.getParams({ scope: scope.value.trim() });
      editor.value = JSON.stringify(JSON.parse(p.paramsJson || "{}"), null, 2);
      effective.textContent = JSON.stringify(JSON.parse(p.effectiveJson), null, 2);
    } catch (e) { showError(status, e); }
  });
  save.addEventListener("click", async () => {
    status.replaceChildren();
    try {
      const p = await api.setParams({ scope: scope.value.trim(), paramsJson: editor.value }, { headers: { authorization: `Bearer ${token.value}` } });
      effective.textContent = JSON.stringify(JSON.parse(p.effectiveJson), null, 2);
      status.append(h("p", {}, "Saved; the detectors apply it now."));
    } catch (e) { showError(status, e); }
  });
  app.replaceChildren(h("h1", {}, "Detector params"), scope, load, h("h2", {}, "Override at this scope (JSON)"), editor, token, save, status, h("h2", {}, "Effective"), effective);
}

function route() {
  stop?.();
  stop = null;
  const hash = decodeURIComponent(window.location.hash.slice(1) || "/");
  if (hash.startsWith("/channel/")) void channel(hash.slice("/channel/".length));
  else if (hash === "/search") search();
  else if (hash === "/cluster") void cluster();
  else if (hash === "/params") params();
  else void channels();
}

window.addEventListener("hashchange", route);
route();
