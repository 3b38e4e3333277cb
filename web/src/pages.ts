// The channel list, search, user, cluster and params pages.
import { api, ADMIN_TOKEN_KEY } from "./api";
import { CLASS_NAMES, decisionRow } from "./channel";
import { chatRow, streamOf } from "./chat";
import { poll, retrying } from "./conn";
import type { ActionRecord } from "./gen/spamscope/v1/detect_pb";
import type { ChannelSummary } from "./gen/spamscope/v1/gateway_pb";
import { current, setQuery } from "./route";
import { button, errorBox, h, time, visible } from "./ui";

type Column = [key: string, label: string, value: (c: ChannelSummary) => number | string, show: (c: ChannelSummary) => Node | string];

const COLUMNS: Column[] = [
  ["stream", "stream", (c) => c.stream, (c) => h("a", { href: `#/channel/${encodeURIComponent(c.stream)}` }, c.stream)],
  ["messages", "messages / min", (c) => c.messagesPerMinute, (c) => c.messagesPerMinute.toFixed(0)],
  ["spam", "spam / min", (c) => c.spamMessagesPerMinute, (c) => c.spamMessagesPerMinute.toFixed(0)],
  ["events", "active spam events", (c) => c.activeSpamEvents, (c) => String(c.activeSpamEvents)],
  ["state", "state", (c) => state(c), (c) => h("span", { class: `state ${state(c)}` }, state(c))],
  ["last", "last message", (c) => Number(c.lastMessageMs), (c) => time(c.lastMessageMs)],
];

/** Live: chat arrived within the last minute; ended: the platform said so. */
function state(c: ChannelSummary): string {
  if (c.ended) return "ended";
  return c.quietMs >= 0 && c.quietMs < 60000n ? "live" : "quiet";
}

export async function channelsPage(app: HTMLElement, signal: AbortSignal) {
  const q = current().query;
  let sort = q.get("sort") ?? "messages";
  let filter = q.get("q") ?? "";
  const input = h("input", { type: "search", id: "filter", placeholder: "Filter streams", value: filter, "aria-label": "filter streams" }) as HTMLInputElement;
  const table = h("table", { id: "channels" });
  const note = h("p", { class: "meta" });
  let rows: ChannelSummary[] = [];
  const draw = () => {
    const col = COLUMNS.find((c) => c[0] === sort) ?? COLUMNS[1];
    const shown = rows.filter((c) => c.stream.includes(filter.toLowerCase()))
      .sort((a, b) => {
        const x = col[2](a), y = col[2](b);
        return typeof x === "string" ? String(x).localeCompare(String(y)) : (y as number) - (x as number);
      });
    const head = h("tr", {}, ...COLUMNS.map(([key, label]) => {
      const b = button(label + (key === sort ? " ▾" : ""), () => { sort = key; setQuery({ sort: key }); draw(); }, { class: "sort" });
      return h("th", { "aria-sort": key === sort ? "descending" : "none" }, b);
    }));
    table.replaceChildren(head, ...shown.map((c) => h("tr", { "data-stream": c.stream }, ...COLUMNS.map((col) => h("td", {}, col[3](c))))));
    note.textContent = rows.length === 0 ? "No streams yet: a stream shows here from its first chat until an hour after its last." : `${shown.length} of ${rows.length} streams seen in the last hour.`;
  };
  input.addEventListener("input", () => { filter = input.value.trim(); setQuery({ q: filter }); draw(); });
  app.replaceChildren(h("h1", {}, "Channels"), input, note, table);
  draw();
  await poll(async () => {
    rows = (await api.listChannels({ limit: 1000 }, { signal })).channels;
    draw();
  }, 2000, signal);
}

export function searchPage(app: HTMLElement, signal: AbortSignal) {
  const input = h("input", { type: "text", id: "q", placeholder: "Paste a message: where and when was it seen?", "aria-label": "message to look for" }) as HTMLInputElement;
  const results = h("div", { id: "results" });
  const form = h("form", {}, input, h("button", { type: "submit" }, "Search"));
  const run = async () => {
    const text = input.value;
    if (!text.trim()) return;
    setQuery({ q: text });
    results.replaceChildren(h("p", {}, "Searching…"));
    try {
      const res = await retrying(() => api.searchSpam({ text, pageSize: 20 }, { signal }), signal);
      if (res.matches.length === 0) { results.replaceChildren(h("p", {}, "Not seen in the history.")); return; }
      results.replaceChildren(...res.matches.map((m) => h("div", { class: "panel match", "data-fingerprint": m.fingerprint },
        h("div", { class: "text" }, visible(m.text)), h("div", { class: "meta" }, `similarity ${m.similarity.toFixed(2)} · ${m.fingerprint}`),
        h("table", {}, h("tr", {}, h("th", {}, "channel"), h("th", {}, "messages"), h("th", {}, "users"), h("th", {}, "first seen"), h("th", {}, "last seen")),
          ...m.sightings.map((s) => {
            const st = streamOf(s);
            return h("tr", {}, h("td", {}, h("a", { href: `#/channel/${encodeURIComponent(st)}?event=${s.eventId}` }, st)), h("td", {}, String(s.count)), h("td", {}, String(s.uniqueUsers)), h("td", {}, time(s.firstSeenMs)), h("td", {}, time(s.lastSeenMs)));
          })))));
    } catch (e) {
      results.replaceChildren(errorBox(e));
    }
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); void run(); });
  app.replaceChildren(h("h1", {}, "Search"), form, results);
  const q = current().query.get("q");
  if (q) { input.value = q; void run(); }
}

/** What a user did in one stream: messages, moderator actions, spam events. */
async function activity(user: string, stream: string, signal: AbortSignal): Promise<HTMLElement> {
  const box = h("section", { class: "panel activity", "data-stream": stream }, h("h2", {}, "In ", h("a", { href: `#/channel/${encodeURIComponent(stream)}` }, stream)), h("p", { class: "meta" }, "Reading the kept chat…"));
  try {
    const a = await retrying(() => api.userActivity({ user, stream, limit: 200 }, { signal }), signal);
    const rows = (evs: typeof a.messages) => evs.map((e) => chatRow(e)).filter((r): r is HTMLElement => r !== null);
    box.replaceChildren(box.firstChild!,
      h("p", { class: "meta" }, a.complete ? "All the chat and outputs spamscope keeps of this stream were read." : "Only the newest 300,000 stored messages were read."),
      h("h3", {}, `Moderator actions (${a.moderation.length})`),
      a.moderation.length ? h("div", { class: "user-actions" }, ...rows(a.moderation)) : h("p", { class: "meta" }, "None kept."),
      h("h3", {}, `Spam events they took part in (${a.spamEvents.length})`),
      a.spamEvents.length ? h("ul", { class: "user-events" }, ...a.spamEvents.map((e) => h("li", {},
        h("span", { class: `class${e.spam ? "" : " crowd"}` }, CLASS_NAMES[e.class] ?? "unclassified"), " ",
        h("a", { href: `#/channel/${encodeURIComponent(stream)}?event=${e.eventId}` }, visible(e.text)),
        h("span", { class: "meta" }, ` ${e.count} messages from ${e.uniqueUsers} users, ${time(e.firstSeenMs)}`)))) : h("p", { class: "meta" }, "None."),
      h("h3", {}, `Messages (${a.messages.length}${a.messages.length >= 200 ? ", the newest" : ""})`),
      a.messages.length ? h("div", { class: "scroll user-messages" }, ...rows(a.messages)) : h("p", { class: "meta" }, "None kept."));
  } catch (e) {
    box.append(errorBox(e));
  }
  return box;
}

/** One action about a user (spamscope's, or a moderator's seen in the chat), with its stream. */
function actionRow(x: ActionRecord): HTMLElement {
  const stream = streamOf(x);
  return h("li", { class: "record", "data-status": x.status, "data-action": x.action, "data-by": x.by === "moderator" ? "moderator" : "spamscope" },
    x.by === "moderator" ? "moderator · " : "",
    h("b", {}, x.action === "timeout" ? `timeout ${x.timeoutS} s` : x.action), ` · ${x.status.replaceAll("_", " ")}`,
    x.detail ? h("span", { class: "meta" }, ` (${x.detail})`) : "",
    " in ", h("a", { href: `#/channel/${encodeURIComponent(stream)}` }, stream),
    h("span", { class: "meta" }, ` ${time(x.atMs)} · ${x.by}: ${x.evidence}`));
}

export async function userPage(app: HTMLElement, user: string, signal: AbortSignal) {
  const list = h("div", { id: "user-flags" });
  const more = h("div", {});
  const acts = h("ul", { id: "user-actions" });
  const moreActs = h("div", {});
  const streams = h("div", { id: "user-streams" });
  const title = h("h1", {}, user);
  app.replaceChildren(title,
    h("p", { class: "meta" }, "Flags across every stream, newest first, each with its evidence; what spamscope suggested or did about the user, and what the moderators did (marked moderator); then what the user did in the streams they were flagged or seen in. Look a user up by login or by id (Twitch user id, YouTube channel id)."),
    h("h2", {}, "Flags"), list, more, h("h2", {}, "Actions"), acts, moreActs, streams);
  const loadActs = async (token: string) => {
    const p = await retrying(() => api.userHistory({ user, pageSize: 50, actionsPageToken: token }, { signal }), signal);
    acts.append(...p.actions.map(actionRow));
    moreActs.replaceChildren();
    if (p.nextActionsPageToken) moreActs.append(button("Load more", () => void loadActs(p.nextActionsPageToken), { class: "more" }));
  };
  const seen = new Set<string>();
  const from = current().query.get("stream");
  const show = (stream: string) => {
    if (seen.has(stream) || seen.size >= 5) return;
    seen.add(stream);
    const slot = h("div", {});
    streams.append(slot);
    void activity(user, stream, signal).then((b) => slot.replaceWith(b));
  };
  if (from) show(from);
  const load = async (token: string) => {
    const p = await retrying(() => api.userHistory({ user, pageSize: 50, pageToken: token }, { signal }), signal);
    p.decisions.forEach((d) => list.append(decisionRow(d, true)));
    if (!token) {
      acts.append(...p.actions.map(actionRow));
      if (p.nextActionsPageToken) moreActs.append(button("Load more", () => void loadActs(p.nextActionsPageToken), { class: "more" }));
      if (!p.actions.length) acts.append(h("li", { class: "empty" }, "None in the history it keeps."));
    }
    // A YouTube channel id: say the name it goes by.
    const name = p.decisions[0]?.userLogin;
    if (!token && name && name.toLowerCase() !== user.toLowerCase()) title.textContent = `${name} (${user})`;
    more.replaceChildren();
    if (p.nextPageToken) more.append(button("Load more", () => void load(p.nextPageToken), { class: "more" }));
    if (!token && !p.decisions.length) list.append(h("p", { class: "empty" }, `spamscope has not flagged ${user} in the history it keeps.`));
    p.decisions.forEach((d) => show(streamOf(d)));
  };
  try { await load(""); } catch (e) { list.append(errorBox(e)); }
}

export async function clusterPage(app: HTMLElement, signal: AbortSignal) {
  const body = h("div", {});
  app.replaceChildren(h("h1", {}, "Cluster"), body);
  await poll(async () => {
    const st = await api.clusterStatus({}, { signal });
    const owners = new Map<string, number>();
    let lag = 0n;
    for (const s of st.shards) { owners.set(s.owner || "(none)", (owners.get(s.owner || "(none)") ?? 0) + 1); lag += s.lag; }
    body.replaceChildren(
      h("p", {}, `${st.replicas.length} detector replicas · ${st.shardCount} shards · ${lag} chat messages waiting`),
      h("table", { id: "replicas" }, h("tr", {}, h("th", {}, "replica"), h("th", {}, "shards owned")),
        ...[...owners].map(([o, n]) => h("tr", {}, h("td", {}, o), h("td", {}, String(n))))),
      h("details", {}, h("summary", {}, "Every shard"),
        h("table", { id: "shards" }, h("tr", {}, h("th", {}, "shard"), h("th", {}, "owner"), h("th", {}, "epoch"), h("th", {}, "last sequence"), h("th", {}, "lag")),
          ...st.shards.map((s) => h("tr", {}, h("td", {}, String(s.shard)), h("td", {}, s.owner || "-"), h("td", {}, String(s.epoch)), h("td", {}, String(s.lastSequence)), h("td", {}, String(s.lag)))))));
  }, 2000, signal);
}

interface FieldSchema {
  type?: string | string[];
  description?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  maxItems?: number;
  default?: unknown;
}

/** "0.05 to 20", "above 0, at most 1", "at most 10000 entries". */
function rangeText(f: FieldSchema): string {
  const lo = f.exclusiveMinimum !== undefined ? `above ${f.exclusiveMinimum}` : f.minimum !== undefined && !(f.type === "integer" && f.minimum === 0) ? `from ${f.minimum}` : "";
  const hi = f.maximum !== undefined && f.maximum < 1e15 ? `at most ${f.maximum}` : "";
  const items = f.maxItems !== undefined ? `at most ${f.maxItems} entries` : "";
  return [lo, hi, items].filter(Boolean).join(", ");
}

/** One param as a form row: override switch, input, meaning, range. */
function paramField(key: string, f: FieldSchema, value: unknown, overridden: boolean) {
  const on = h("input", { type: "checkbox", id: `ov-${key}`, "aria-label": `override ${key} at this scope` }) as HTMLInputElement;
  on.checked = overridden;
  let input: HTMLInputElement | HTMLTextAreaElement;
  let read: () => unknown;
  if (f.type === "boolean") {
    input = h("input", { type: "checkbox", id: `p-${key}` }) as HTMLInputElement;
    input.checked = Boolean(value);
    read = () => (input as HTMLInputElement).checked;
  } else if (f.type === "integer" || f.type === "number") {
    input = h("input", { type: "number", id: `p-${key}`, step: f.type === "integer" ? "1" : "any", value: String(value) }) as HTMLInputElement;
    if (f.minimum !== undefined) input.min = String(f.minimum);
    if (f.maximum !== undefined && f.maximum < 1e15) input.max = String(f.maximum);
    read = () => Number(input.value);
  } else {
    input = h("textarea", { id: `p-${key}`, rows: "3", placeholder: "one per line" }) as HTMLTextAreaElement;
    input.value = Array.isArray(value) ? value.join("\n") : String(value ?? "");
    read = () => input.value.split("\n").map((l) => l.trim()).filter(Boolean);
  }
  input.setAttribute("aria-describedby", `d-${key}`);
  input.addEventListener("input", () => { on.checked = true; });
  const range = rangeText(f);
  const row = h("div", { class: `param${overridden ? " overridden" : ""}`, "data-key": key },
    h("label", { class: "param-name", for: `p-${key}` }, key), on, input,
    h("div", { class: "meta", id: `d-${key}` }, (f.description ?? "").replace(/\s+/g, " "),
      range ? ` Range: ${range}.` : "", f.default !== undefined ? ` Default: ${JSON.stringify(f.default)}.` : ""));
  on.addEventListener("change", () => row.classList.toggle("overridden", on.checked));
  return { row, take: () => (on.checked ? read() : undefined) };
}

export function paramsPage(app: HTMLElement) {
  const scope = h("input", { type: "text", id: "scope", list: "scopes", value: current().query.get("scope") ?? "", placeholder: "scope: empty for the cluster defaults, or twitch.<channel>, youtube.<channel or video id>", "aria-label": "scope" }) as HTMLInputElement;
  const scopes = h("datalist", { id: "scopes" });
  const scopeLinks = h("p", { class: "meta", id: "scope-list" });
  const form = h("form", { id: "params-form" });
  const effective = h("pre", { id: "effective" });
  const token = h("input", { type: "password", placeholder: "admin token (needed to save; kept for this tab only)", value: sessionStorage.getItem(ADMIN_TOKEN_KEY) ?? "", "aria-label": "admin token" }) as HTMLInputElement;
  const status = h("div", { role: "status" });
  let fields: { key: string; take: () => unknown }[] = [];
  const load = async () => {
    status.replaceChildren();
    setQuery({ scope: scope.value.trim() });
    try {
      const p = await api.getParams({ scope: scope.value.trim() });
      const layer = JSON.parse(p.paramsJson || "{}") as Record<string, unknown>;
      const eff = JSON.parse(p.effectiveJson) as Record<string, unknown>;
      const schema = JSON.parse(p.schemaJson || "{}") as { properties?: Record<string, FieldSchema> };
      effective.textContent = JSON.stringify(eff, null, 2);
      scopes.replaceChildren(...p.scopes.map((s) => h("option", { value: s })));
      scopeLinks.replaceChildren("Scopes with overrides: ", ...p.scopes.flatMap((s, i) => [i ? ", " : "", h("a", { href: `#/params?scope=${encodeURIComponent(s)}` }, s || "(cluster)")]));
      if (!p.scopes.length) scopeLinks.textContent = "No scope has overrides: every detector runs on the built-in defaults.";
      const made = Object.entries(schema.properties ?? {}).map(([key, f]) => ({ key, ...paramField(key, f, key in layer ? layer[key] : eff[key], key in layer) }));
      fields = made;
      form.replaceChildren(...made.map((m) => m.row));
    } catch (e) { status.append(errorBox(e)); }
  };
  const save = async () => {
    status.replaceChildren();
    const layer: Record<string, unknown> = {};
    for (const f of fields) { const v = f.take(); if (v !== undefined) layer[f.key] = v; }
    try {
      const p = await api.setParams({ scope: scope.value.trim(), paramsJson: JSON.stringify(layer) }, { headers: { authorization: `Bearer ${token.value}` } });
      sessionStorage.setItem(ADMIN_TOKEN_KEY, token.value);
      effective.textContent = JSON.stringify(JSON.parse(p.effectiveJson), null, 2);
      status.append(h("p", { class: "saved" }, `Saved ${Object.keys(layer).length} overrides; the detectors apply them now.`));
    } catch (e) { status.append(errorBox(e)); }
  };
  scope.addEventListener("change", () => void load());
  app.replaceChildren(h("h1", {}, "Detector params"),
    h("p", { class: "meta" }, "Layers apply in order: built-in defaults, the cluster (empty scope), a channel, a stream. Tick a key to override it at this scope; untick to inherit it."),
    scope, scopes, button("Load", () => void load()), scopeLinks, form, token, button("Save", () => void save(), { id: "save" }), status,
    h("details", {}, h("summary", {}, "Effective params (JSON)"), effective));
  void load();
}
