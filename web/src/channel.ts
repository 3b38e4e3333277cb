// A stream's page: its chat beside its spam events, the spam rate, the
// users flagged, a time range; events open with their messages and users.
import { Code, ConnectError } from "@connectrpc/connect";
import { api, ADMIN_TOKEN_KEY } from "./api";
import { ChatView, chatRow, streamOf, userLink } from "./chat";
import { RateChart } from "./chart";
import { follow, retrying } from "./conn";
import type { ChatEvent } from "./gen/spamscope/v1/chat_pb";
import { SpamEventClass, SpamEventState, type ActionRecord, type CommandResult, type Decision, type NukeSuggestion, type SpamEvent } from "./gen/spamscope/v1/detect_pb";
import { current, setQuery } from "./route";
import { button, errorBox, fromLocalInput, h, num, time, toLocalInput, visible } from "./ui";

export const CLASS_NAMES: Record<number, string> = {
  [SpamEventClass.CROWD_REACTION]: "crowd reaction",
  [SpamEventClass.COPYPASTA]: "copypasta",
  [SpamEventClass.BOT_WAVE]: "bot wave",
  [SpamEventClass.LINK_PROMO]: "link spam",
  [SpamEventClass.FLOOD]: "flood",
};

const EVENTS_PAGE = 50;
const FLAGS_PAGE = 50;
/** Chat is live when its newest event is this recent. */
const LIVE_MS = 5 * 60000;

/** Why, for a reader: each trigger with what was seen and the bar. */
export function evidence(d: Decision): HTMLElement {
  return h("ul", { class: "evidence" }, ...d.triggers.map((t) => {
    const norm = t.norm > 0 ? `, channel now ${num(t.norm)}` : "";
    const detail = t.detail ? ` (${t.detail})` : "";
    return h("li", {}, h("b", {}, t.name.replaceAll("_", " ")), ` ${num(t.observed)} against ${num(t.threshold)}${norm}${detail}: +${t.contribution.toFixed(2)}`);
  }));
}

export function decisionRow(d: Decision, withStream = false): HTMLElement {
  const stream = streamOf(d);
  return h("div", { class: "flag", "data-user": d.userLogin || d.userId },
    h("div", {}, userLink(d.userLogin, d.userId, stream), withStream ? h("a", { href: `#/channel/${encodeURIComponent(stream)}` }, ` in ${stream}`) : "",
      h("span", { class: "meta" }, ` ${time(d.atMs)} · suspicion ${d.suspicion.toFixed(2)} of ${d.flagThreshold.toFixed(2)} · ${d.messagesSeen} messages seen${d.slowModeS ? ` · slow mode ${d.slowModeS} s${d.slowModeInferred ? " (inferred)" : ""}` : ""}`)),
    evidence(d));
}

export async function channelPage(app: HTMLElement, stream: string, signal: AbortSignal) {
  const q = current().query;
  const from = Number(q.get("from") ?? 0), to = Number(q.get("to") ?? 0);
  const ranged = from > 0 || to > 0;
  const state = h("span", { class: "state", id: "stream-state" }, "…");
  const fromIn = h("input", { type: "datetime-local", step: "1", id: "from", value: toLocalInput(from), "aria-label": "from" }) as HTMLInputElement;
  const toIn = h("input", { type: "datetime-local", step: "1", id: "to", value: toLocalInput(to), "aria-label": "to" }) as HTMLInputElement;
  const range = h("form", { class: "range" }, h("label", {}, "From ", fromIn), h("label", {}, " to ", toIn),
    h("button", { type: "submit" }, "Show"), button("Live", () => { setQuery({ from: null, to: null }); window.dispatchEvent(new HashChangeEvent("hashchange")); }));
  range.addEventListener("submit", (e) => {
    e.preventDefault();
    setQuery({ from: String(fromLocalInput(fromIn.value) || ""), to: String(fromLocalInput(toIn.value) || "") });
    window.dispatchEvent(new HashChangeEvent("hashchange"));
  });
  const chart = new RateChart();
  const events = h("div", { class: "scroll", id: "spam-events" });
  const moreEvents = h("div", {});
  const flags = h("div", { id: "decisions" });
  const moreFlags = h("div", {});
  // Acting on spam: nukes, their undo, suggestions and every action's
  // record, live (the channel's detector runs a policy, --policy).
  const dryRun = h("input", { type: "checkbox", id: "dry-run", checked: "" }) as HTMLInputElement;
  const acts = h("div", { class: "scroll", id: "actions" });
  const actsPanel = h("div", { class: "panel", id: "moderation" },
    h("h2", {}, "Actions"),
    h("label", { class: "meta", title: "Report what a nuke would do; send nothing" }, dryRun, " dry run"),
    acts);
  const token = (): string => {
    const t = sessionStorage.getItem(ADMIN_TOKEN_KEY) || prompt("Admin or moderator token (kept for this tab only):") || "";
    if (t) sessionStorage.setItem(ADMIN_TOKEN_KEY, t);
    return t;
  };
  const forget = (err: unknown) => {
    if (err instanceof ConnectError && [Code.Unauthenticated, Code.PermissionDenied].includes(err.code)) sessionStorage.removeItem(ADMIN_TOKEN_KEY);
  };
  // One row per action: the actor's answer replaces the pending row.
  const rows = new Map<bigint, HTMLElement>();
  const addAct = (row: HTMLElement) => {
    acts.querySelector(".empty")?.remove();
    acts.prepend(row);
  };
  const commandRow = (what: string, r: CommandResult, dry: boolean, undoable = true): HTMLElement => {
    const said = !r.ok ? `${what} refused: ${r.error}`
      : undoable ? `${what} #${r.nukeId}: ${r.users} users, ${r.messages} messages${dry ? " (dry run)" : ""}`
      : `${what} #${r.nukeId}: every timeout and ban it made is being lifted`;
    const row = h("div", { class: `nuke-result${r.ok ? "" : " refused"}`, "data-nuke": String(r.nukeId) }, said);
    if (r.ok && r.nukeId > 0n && !dry && undoable) {
      const undo = button("Undo", async () => {
        const t = token();
        if (!t) return;
        undo.disabled = true;
        try {
          const u = await api.undoNuke({ stream, nukeId: r.nukeId }, { headers: { authorization: `Bearer ${t}` } });
          addAct(commandRow("Undo of nuke", { ...u, nukeId: r.nukeId } as CommandResult, false, false));
        } catch (err) { forget(err); undo.disabled = false; row.append(errorBox(err)); }
      }, { class: "undo" });
      row.append(" ", undo);
    }
    return row;
  };
  const nuke = async (eventId: bigint) => {
    const t = token();
    if (!t) return;
    const dry = dryRun.checked;
    try {
      const r = await api.nuke({ stream, spamEventId: eventId, dryRun: dry }, { headers: { authorization: `Bearer ${t}` } });
      addAct(commandRow(`Nuke of event #${eventId}`, r, dry));
    } catch (err) { forget(err); addAct(h("div", { class: "nuke-result refused" }, errorBox(err))); }
  };
  const record = (a: ActionRecord) => {
    const what = a.action === "timeout" ? `timeout ${a.timeoutS} s` : a.action;
    const by = a.by === "moderator" ? "moderator" : "spamscope";
    const row = h("div", { class: `record status-${a.status} by-${by}`, "data-status": a.status, "data-action": a.action, "data-by": by, "data-record": String(a.recordId), "data-undoes": String(a.undoes) },
      h("span", { class: "meta" }, `${time(a.atMs)} `), h("b", {}, what), " ", userLink(a.userLogin, a.userId, stream), ` · ${a.status.replaceAll("_", " ")}`,
      a.detail ? h("span", { class: "meta" }, ` (${a.detail})`) : "",
      h("div", { class: "meta" }, `${a.by}: ${a.evidence}`));
    // One timeout or ban spamscope made can be taken back on its own.
    if (by === "spamscope" && (a.action === "timeout" || a.action === "ban") && ["pending", "done", "dry_run"].includes(a.status)) {
      const back = button("Undo", async () => {
        const t = token();
        if (!t) return;
        back.disabled = true;
        try {
          const r = await api.undoAction({ stream, recordId: a.recordId }, { headers: { authorization: `Bearer ${t}` } });
          if (!r.ok) { row.append(h("span", { class: "meta" }, ` ${r.error}`)); back.disabled = false; }
        } catch (err) { forget(err); back.disabled = false; row.append(errorBox(err)); }
      }, { class: "undo-one", title: "Lift this timeout or ban" });
      row.append(back);
    }
    if (a.status === "suggested") {
      const ok = button("Accept", async () => {
        const t = token();
        if (!t) return;
        ok.disabled = true;
        try {
          const r = await api.acceptSuggestion({ stream, recordId: a.recordId }, { headers: { authorization: `Bearer ${t}` } });
          if (!r.ok) row.append(h("span", { class: "meta" }, ` ${r.error}`));
        } catch (err) { forget(err); ok.disabled = false; row.append(errorBox(err)); }
      }, { class: "accept" });
      row.append(ok);
    }
    const old = rows.get(a.recordId);
    rows.set(a.recordId, row);
    if (old?.isConnected) old.replaceWith(row);
    else addAct(row);
  };
  const suggestion = (n: NukeSuggestion) => {
    addAct(h("div", { class: "suggestion" }, `${time(n.atMs)} suggested: nuke the ${CLASS_NAMES[n.class] ?? "spam"} #${n.spamEventId} (${n.users} users) `,
      button("Nuke", () => void nuke(n.spamEventId), { class: "nuke" })));
  };
  acts.append(h("p", { class: "meta empty" }, "Nothing done or suggested yet."));
  actsPanel.append(policyBox(stream, token, forget), backtestBox(stream, token, forget));
  // The trail so far (from the history store), oldest first so the newest
  // ends on top. A record already shown is replaced only by a later status
  // (the history writer is a moment behind the live stream).
  const RANK: Record<string, number> = { done: 2, failed: 2 };
  const rank = (status: string | undefined) => RANK[status ?? ""] ?? 1;
  let suggestionsShown = false;
  const loadTrail = async () => {
    try {
      const t = await retrying(() => api.channelActions({ stream, limit: 100 }, { signal }), signal);
      if (!suggestionsShown) {
        suggestionsShown = true;
        [...t.nukeSuggestions].reverse().forEach(suggestion);
      }
      [...t.actions].reverse().forEach((a) => {
        const shown = rows.get(a.recordId);
        if (!shown || rank(a.status) > rank(shown.dataset.status)) record(a);
      });
    } catch (e) {
      if (!signal.aborted) actsPanel.append(errorBox(e));
    }
  };
  // Read again once the live stream is open: what was decided between
  // the first read and the subscription shows too.
  void loadTrail();
  const trailAgain = setTimeout(() => void loadTrail(), 3000);
  signal.addEventListener("abort", () => clearTimeout(trailAgain), { once: true });
  const eventsTitle = h("h2", {}, "Spam events, then crowd reactions");
  const flagsTitle = h("h2", {}, "Flagged users");
  let chatPanel: HTMLElement;
  let olderToken = "";
  const chat = new ChatView(async () => {
    try {
      const p = await retrying(() => api.channelChat({ stream, pageToken: olderToken, limit: 300 }, { signal }), signal);
      olderToken = p.nextPageToken;
      chat.prepend(p.events);
      p.scores.forEach((s) => chat.score(s));
      return olderToken !== "";
    } catch (e) {
      chatPanel.append(errorBox(e));
      return false;
    }
  });
  chatPanel = h("div", { class: "panel chat-panel" }, h("h2", {}, "Chat, unfiltered"), chat.el);
  app.replaceChildren(
    h("div", { class: "title" }, h("h1", {}, stream), state),
    range,
    h("h2", {}, ranged ? "Spam messages per minute in this range" : "Spam messages per minute"), chart.el,
    h("div", { class: "cols" }, chatPanel, h("div", { class: "panel" }, eventsTitle, events, moreEvents)),
    h("div", { class: "cols" }, h("div", { class: "panel" }, flagsTitle, flags, moreFlags), actsPanel));
  signal.addEventListener("abort", () => chart.destroy(), { once: true });

  const cards = new Map<bigint, HTMLElement>();
  const lastCount = new Map<bigint, bigint>();
  const muted = new Set<string>();
  const put = (e: SpamEvent, live: boolean) => {
    if (muted.has(e.text)) return;
    const card = eventCard(e, stream, () => mute(e), () => void nuke(e.eventId));
    const old = cards.get(e.eventId);
    if (old) old.replaceWith(card);
    else if (live) events.prepend(card);
    else events.append(card);
    cards.set(e.eventId, card);
    const added = Number(e.count - (lastCount.get(e.eventId) ?? e.count));
    lastCount.set(e.eventId, e.count);
    // Crowd reactions are chat, not spam: not in the spam rate.
    if (live && added > 0 && e.spam) { chart.add(Number(e.lastSeenMs), added); chart.draw(); }
    eventsTitle.textContent = `Spam events, then crowd reactions (${cards.size} shown)`;
  };
  const mute = async (e: SpamEvent) => {
    const token = sessionStorage.getItem(ADMIN_TOKEN_KEY) || prompt("Admin token (kept for this tab only):") || "";
    if (!token) return;
    sessionStorage.setItem(ADMIN_TOKEN_KEY, token);
    const card = cards.get(e.eventId);
    try {
      const p = await api.getParams({ scope: stream });
      const layer = JSON.parse(p.paramsJson || "{}");
      const phrases: string[] = layer.allowed_phrases ?? [];
      if (!phrases.includes(e.text)) phrases.push(e.text);
      layer.allowed_phrases = phrases;
      await api.setParams({ scope: stream, paramsJson: JSON.stringify(layer) }, { headers: { authorization: `Bearer ${token}` } });
      muted.add(e.text);
      for (const [id, c] of cards) if (c.dataset.text === e.text) { c.remove(); cards.delete(id); }
    } catch (err) {
      if (err instanceof ConnectError && [Code.Unauthenticated, Code.PermissionDenied].includes(err.code)) sessionStorage.removeItem(ADMIN_TOKEN_KEY);
      card?.append(errorBox(err));
    }
  };
  const putFlag = (d: Decision, live: boolean) => {
    const row = decisionRow(d);
    if (live) flags.prepend(row); else flags.append(row);
    flagsTitle.textContent = `Flagged users (${flags.childElementCount} shown)`;
  };
  const pager = (holder: HTMLElement, label: string, token: string, load: (t: string) => Promise<string>) => {
    holder.replaceChildren();
    if (!token) return;
    const b = button(label, async () => {
      b.disabled = true;
      try { pager(holder, label, await load(token), load); } catch (e) { b.disabled = false; holder.append(errorBox(e)); }
    }, { class: "more" });
    holder.append(b);
  };
  const loadEvents = async (token: string) => {
    const p = await retrying(() => api.channelHistory({ stream, fromMs: BigInt(from), toMs: BigInt(to), pageSize: EVENTS_PAGE, pageToken: token }, { signal }), signal);
    p.spamEvents.forEach((e) => { lastCount.set(e.eventId, e.count); put(e, false); });
    return p.nextPageToken;
  };
  const loadFlags = async (token: string) => {
    const p = await retrying(() => api.channelHistory({ stream, fromMs: BigInt(from), toMs: BigInt(to), pageSize: FLAGS_PAGE, decisionsPageToken: token }, { signal }), signal);
    p.decisions.forEach((d) => putFlag(d, false));
    return p.nextDecisionsPageToken;
  };

  try {
    const hist = await retrying(() => api.channelHistory({ stream, fromMs: BigInt(from), toMs: BigInt(to), pageSize: EVENTS_PAGE }, { signal }), signal);
    hist.spamEvents.forEach((e) => { lastCount.set(e.eventId, e.count); put(e, false); });
    pager(moreEvents, "Load older events", hist.nextPageToken, loadEvents);
    hist.spamRate.forEach((p) => chart.set(Number(p.minuteMs), Number(p.spamMessages)));
    chart.draw();
    hist.decisions.forEach((d) => putFlag(d, false));
    pager(moreFlags, "Load more flagged users", hist.nextDecisionsPageToken, loadFlags);
    if (!hist.spamEvents.length) events.append(h("p", { class: "meta empty" }, ranged ? "No spam events in this range." : "No spam events yet."));
    if (!hist.decisions.length) flags.append(h("p", { class: "meta empty" }, "Nobody flagged."));
  } catch (e) {
    app.replaceChildren(h("h1", {}, stream), errorBox(e), h("p", {}, h("a", { href: "#/" }, "Back to the channels")));
    return;
  }
  const ev = current().query.get("event");
  if (ev) void openEvent(stream, BigInt(ev));

  // The newest kept chat, then the live chat from there on.
  const backfill = async () => {
    const p = await retrying(() => api.channelChat({ stream, limit: 200 }, { signal }), signal);
    if (!olderToken && p.nextPageToken) olderToken = p.nextPageToken;
    chat.setMoreOlder(olderToken !== "");
    chat.append(p.events);
    p.scores.forEach((s) => chat.score(s));
  };
  const showState = () => {
    // Live: chat arrived within the last minute (a replay counts), or its
    // newest event is recent.
    const now = Date.now();
    const live = !chat.ended && chat.lastTsMs > 0 && (now - chat.lastArrivalMs < 60000 || now - chat.lastTsMs < LIVE_MS);
    state.className = `state ${live ? "live" : "ended"}`;
    state.textContent = live ? "live" : chat.ended ? "ended" : chat.lastTsMs ? `no chat since ${time(chat.lastTsMs)}` : "no chat kept";
  };
  try { await backfill(); } catch (e) { chatPanel.append(errorBox(e)); }
  showState();
  const timer = setInterval(showState, 5000);
  signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  if (ranged) return;
  try {
    await follow((s) => api.watchChannel({ stream }, { signal: s }), (w) => {
      switch (w.kind.case) {
        case "chat": chat.append([w.kind.value as ChatEvent], true); showState(); break;
        case "spamEvent": put(w.kind.value, true); break;
        case "decision": putFlag(w.kind.value, true); break;
        case "score": chat.score(w.kind.value); break;
        case "action": record(w.kind.value); break;
        case "nukeSuggestion": suggestion(w.kind.value); break;
      }
    }, signal, async () => { await backfill(); void loadTrail(); });
  } catch (e) {
    chatPanel.append(errorBox(e));
  }
}

/** The channel's policy: the layer set at run time over the cluster's
 * file (editable with a token), and the policy in effect. */
function policyBox(stream: string, token: () => string, forget: (e: unknown) => void): HTMLElement {
  const layer = h("textarea", { id: "policy-layer", rows: "4", placeholder: "keys of the channel's policy, e.g. copypasta = \"suggest\"; empty: the cluster's policy" }) as HTMLTextAreaElement;
  const effective = h("pre", { id: "policy-effective", class: "meta" });
  const said = h("div", {});
  const show = (p: { storedToml: string; effectiveToml: string }) => {
    layer.value = p.storedToml;
    effective.textContent = p.effectiveToml;
  };
  const save = button("Save", async () => {
    const t = token();
    if (!t) return;
    save.disabled = true;
    try {
      show(await api.setChannelPolicy({ stream, policyToml: layer.value }, { headers: { authorization: `Bearer ${t}` } }));
      said.replaceChildren(h("p", { class: "meta saved" }, "Saved: the detectors run it from their next message."));
    } catch (err) { forget(err); said.replaceChildren(errorBox(err)); }
    save.disabled = false;
  }, { class: "save-policy" });
  const box = h("details", { id: "policy" }, h("summary", {}, "Policy of this channel"),
    h("p", { class: "meta" }, "Set here, over the cluster's policy file. dry_run = false acts only where the detectors run with --policy-live."),
    layer, save, said, h("p", { class: "meta" }, "In effect:"), effective);
  box.addEventListener("toggle", () => {
    if (!(box as HTMLDetailsElement).open) return;
    void api.getChannelPolicy({ stream }).then(show, (err) => said.replaceChildren(errorBox(err)));
  });
  return box;
}

interface BacktestSummary { actions: number; users: number; users_per_1000_chatters: number; users_moderated: number; agreement: number; moderated_covered: number }
interface BacktestRule { mode: string; users: number; users_moderated: number; agreement: number; lead_time_median_s: number | null; actions: Record<string, number> }
interface BacktestCurvePoint { sensitivity: number; users_per_1000_chatters: number; agreement: number; moderated_covered: number; f1: number }
interface BacktestReportJson {
  chatters: number; moderated_users: number; auto: BacktestSummary; if_accepted: BacktestSummary;
  rules: Record<string, BacktestRule>; curve?: BacktestCurvePoint[]; best_sensitivity?: number | null;
}

/** Backtest: a policy (the cluster's, or one pasted here) over the
 * channel's kept chat of the last hours, beside what its moderators did. */
function backtestBox(stream: string, token: () => string, forget: (e: unknown) => void): HTMLElement {
  const hours = h("input", { type: "number", id: "backtest-hours", min: "1", max: "24", value: "1" }) as HTMLInputElement;
  const sens = h("input", { type: "text", id: "backtest-sensitivities", value: "0.5, 1, 2, 4", size: "14" }) as HTMLInputElement;
  const policy = h("textarea", { id: "backtest-policy", rows: "3", placeholder: "policy TOML; empty: the cluster's policy" }) as HTMLTextAreaElement;
  const out = h("div", { id: "backtest-result" });
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  const run = async () => {
    const t = token();
    if (!t) return;
    const sensitivities = sens.value.split(/[\s,]+/).filter(Boolean).map(Number);
    go.disabled = true;
    out.replaceChildren(h("p", { class: "meta" }, "Running the policy over the kept chat…"));
    try {
      const r = await api.backtest({ stream, hours: Number(hours.value) || 1, sensitivities, policyToml: policy.value },
        { headers: { authorization: `Bearer ${t}` } });
      const j = JSON.parse(r.reportJson) as BacktestReportJson;
      const line = (name: string, x: BacktestSummary) => h("tr", {}, h("td", {}, name), h("td", {}, String(x.users)),
        h("td", {}, x.users_per_1000_chatters.toFixed(1)), h("td", {}, String(x.users_moderated)), h("td", {}, pct(x.agreement)), h("td", {}, pct(x.moderated_covered)));
      out.replaceChildren(
        h("p", { class: "meta" }, `${r.events} chat events from ${time(r.fromMs)} to ${time(r.toMs)}${r.complete ? "" : " (the kept chat began later than asked)"}; ${j.chatters} chatters, ${j.moderated_users} moderated by the channel's moderators. Every channel in dry-run: nothing was sent.`),
        h("table", { class: "backtest-summary" },
          h("tr", {}, h("th", {}, ""), h("th", {}, "users acted on"), h("th", {}, "per 1,000 chatters"), h("th", {}, "moderated too"), h("th", {}, "agreement"), h("th", {}, "of the moderated")),
          line("on its own", j.auto), line("every suggestion accepted", j.if_accepted)),
        h("table", { class: "backtest-rules" },
          h("tr", {}, h("th", {}, "rule"), h("th", {}, "mode"), h("th", {}, "users"), h("th", {}, "moderated too"), h("th", {}, "median lead")),
          ...Object.entries(j.rules).map(([name, x]) => h("tr", {}, h("td", {}, name.replaceAll("_", " ")), h("td", {}, x.mode), h("td", {}, String(x.users)),
            h("td", {}, String(x.users_moderated)), h("td", {}, x.lead_time_median_s === null ? "-" : `${x.lead_time_median_s.toFixed(0)} s`)))),
        ...(j.curve?.length ? [h("table", { class: "backtest-curve" },
          h("tr", {}, h("th", {}, "sensitivity"), h("th", {}, "per 1,000 chatters"), h("th", {}, "agreement"), h("th", {}, "of the moderated"), h("th", {}, "F1")),
          ...j.curve.map((c) => h("tr", { class: c.sensitivity === j.best_sensitivity ? "best" : "" }, h("td", {}, String(c.sensitivity)),
            h("td", {}, c.users_per_1000_chatters.toFixed(1)), h("td", {}, pct(c.agreement)), h("td", {}, pct(c.moderated_covered)),
            h("td", {}, c.f1.toFixed(3) + (c.sensitivity === j.best_sensitivity ? " ← matched the moderators best" : "")))))] : []));
    } catch (err) { forget(err); out.replaceChildren(errorBox(err)); }
    go.disabled = false;
  };
  const go = button("Run", () => void run(), { class: "run-backtest" });
  return h("details", { id: "backtest" }, h("summary", {}, "Backtest a policy on this channel's kept chat"),
    h("label", { class: "meta" }, "last ", hours, " hours"), " ",
    h("label", { class: "meta", title: "Other sensitivities to compare, comma-separated" }, "sensitivities ", sens),
    policy, go, out);
}

function eventCard(e: SpamEvent, stream: string, mute: () => void, nuke: () => void): HTMLElement {
  const ended = e.state === SpamEventState.ENDED;
  const cls = CLASS_NAMES[e.class] ?? "unclassified";
  const why = e.classEvidence.map((t) => `${t.name.replaceAll("_", " ")} ${num(t.observed)} (threshold ${num(t.threshold)})`).join(", ");
  const open = h("a", { href: "#", class: "open", role: "button" }, visible(e.text) || "(no text)");
  open.addEventListener("click", (ev) => { ev.preventDefault(); void openEvent(stream, e.eventId); });
  const card = h("div", { class: `event${ended ? " ended" : ""}${e.spam ? "" : " crowd"}`, "data-event": String(e.eventId), "data-class": cls },
    h("div", { class: "text" }, h("span", { class: "class" }, cls), " ", open),
    h("div", { class: "meta" }, `${e.count} messages from ${e.uniqueUsers} users · ${time(e.firstSeenMs)} → ${time(e.lastSeenMs)} · ${ended ? "ended" : "active"}`),
    h("div", { class: "meta" }, why),
    h("div", { class: "actions" }, button("Mute in this channel", mute, { class: "mute", title: "Add this text to the channel's allowed phrases (admin token)" }),
      " ", button("Nuke", nuke, { class: "nuke", title: "Act on everyone who sent it, and on new copies for a while (admin or moderator token; see the Actions panel)" })));
  card.dataset.text = e.text;
  return card;
}

/** A spam event's detail in a dialog: its timeline, users and messages. */
async function openEvent(stream: string, id: bigint) {
  setQuery({ event: String(id) });
  document.getElementById("event-detail")?.remove();
  const body = h("div", { class: "detail-body" }, h("p", {}, "Loading…"));
  const close = button("Close", () => dlg.close(), { class: "close" });
  const dlg = h("dialog", { id: "event-detail", "aria-label": "spam event" }, close, body) as HTMLDialogElement;
  dlg.addEventListener("close", () => { setQuery({ event: null }); dlg.remove(); });
  document.body.append(dlg);
  dlg.showModal();
  try {
    const d = await retrying(() => api.spamEventDetail({ stream, eventId: id, limit: 500 }));
    const e = d.event!;
    const chart = new RateChart("messages / 10 s", 10000);
    const bucket = new Map<number, number>();
    for (const p of d.timeline) bucket.set(Number(p.atMs), Number(p.messages));
    const msgs = h("div", { class: "scroll detail-messages", id: "event-messages" }, ...d.messages.map((m) => chatRow(m)).filter((r): r is HTMLElement => r !== null));
    body.replaceChildren(
      h("h2", {}, h("span", { class: `class${e.spam ? "" : " crowd"}` }, CLASS_NAMES[e.class] ?? "unclassified"), " ", visible(e.text)),
      h("p", { class: "meta" }, `${e.count} messages from ${e.uniqueUsers} users · ${time(e.firstSeenMs)} → ${time(e.lastSeenMs)} · fingerprint ${e.fingerprint}`),
      h("h3", {}, "Messages per 10 seconds"), chart.el,
      h("div", { class: "cols" },
        h("div", {}, h("h3", {}, `Messages (${d.messages.length} of ${d.scoredMessages} shown)`), msgs),
        h("div", {}, h("h3", {}, `Users (${d.users.length}${e.uniqueUsers > BigInt(d.users.length) ? ` of ${e.uniqueUsers}` : ""})`),
          h("ol", { class: "users", id: "event-users" }, ...d.users.map((u) => h("li", {}, userLink(u.userLogin, "", stream), ` ${u.messages}`))))));
    for (const [t, n] of bucket) chart.set(t, n);
    chart.draw();
    dlg.addEventListener("close", () => chart.destroy(), { once: true });
  } catch (err) {
    body.replaceChildren(errorBox(err));
  }
}
