// The chat of one stream as a moderator reads it: timestamps, role
// badges, emotes, moderation inline, spam marked; it stays where the
// reader scrolled to and says how many messages came since.
import type { Author, ChatEvent, EmoteRange } from "./gen/spamscope/v1/chat_pb";
import { Platform } from "./gen/spamscope/v1/chat_pb";
import type { MessageScore } from "./gen/spamscope/v1/detect_pb";
import { button, clock, h, visible } from "./ui";

/** Rows kept while following the live end; more while scrolled back. */
const KEEP_LIVE = 1500;
const KEEP_MAX = 6000;

/** The stream key (`<platform>.<id>`) of anything that names its stream. */
export function streamOf(x: { platform: Platform; streamId: string }): string {
  const p = x.platform === Platform.TWITCH ? "twitch" : x.platform === Platform.YOUTUBE ? "youtube" : "unknown";
  return `${p}.${x.streamId}`;
}

/**
 * A link to a user's page (with the stream it was seen in, if known).
 * YouTube users go by their channel id, the one stable id (display names
 * are neither unique nor fixed); Twitch users by login.
 */
export function userLink(login: string, id = "", stream = ""): HTMLElement {
  const key = (stream.startsWith("youtube.") && id) || login || id;
  const q = stream ? `?stream=${encodeURIComponent(stream)}` : "";
  return h("a", { class: "who", href: `#/user/${encodeURIComponent(key)}${q}` }, login || id || "?");
}

function badges(a: Author | undefined, platform: Platform): HTMLElement[] {
  const r = a?.roles;
  if (!r) return [];
  const out: [boolean, string, string][] = [
    [r.broadcaster, "broadcaster", platform === Platform.YOUTUBE ? "owner" : "broadcaster"],
    [r.staff, "staff", "staff"],
    [r.moderator, "mod", "moderator"],
    [r.vip, "vip", "VIP"],
    [r.member, "sub", platform === Platform.YOUTUBE ? "member" : `subscriber${r.memberMonths ? ` for ${r.memberMonths} months` : ""}`],
    [r.verified, "verified", "verified"],
    [r.firstTimeChatter, "first", "first message in this channel"],
  ];
  return out.filter(([on]) => on).map(([, cls, title]) => h("span", { class: `badge ${cls}`, title }, cls === "first" ? "new" : cls));
}

/**
 * Twitch emote images, once the browser has shown it can reach Twitch's
 * CDN (one probe at start); until then, and on YouTube, emotes are their
 * names, styled.
 */
let twitchCdn = false;
export function probeEmoteImages() {
  const img = new Image();
  img.onload = () => { twitchCdn = img.naturalWidth > 0; };
  img.src = "https://static-cdn.jtvnw.net/emoticons/v2/25/default/dark/1.0";
}

function emote(name: string, id: string, platform: Platform): HTMLElement {
  if (twitchCdn && platform === Platform.TWITCH && /^[\w-]+$/.test(id)) {
    const dark = document.documentElement.dataset.theme === "dark" ? "dark" : "light";
    return h("img", { class: "emote-img", alt: name, title: name, src: `https://static-cdn.jtvnw.net/emoticons/v2/${id}/default/${dark}/1.0` });
  }
  return h("span", { class: "emote", title: `emote ${id}` }, name);
}

/** The text with its emotes shown as such. */
export function withEmotes(text: string, emotes: EmoteRange[], platform = Platform.UNSPECIFIED): (Node | string)[] {
  if (!emotes.length) return [visible(text)];
  const chars = Array.from(text);
  const out: (Node | string)[] = [];
  let at = 0;
  for (const e of [...emotes].sort((a, b) => a.start - b.start)) {
    if (e.start < at || e.end > chars.length) continue;
    if (e.start > at) out.push(visible(chars.slice(at, e.start).join("")));
    out.push(emote(chars.slice(e.start, e.end).join(""), e.emoteId, platform));
    at = e.end;
  }
  if (at < chars.length) out.push(visible(chars.slice(at).join("")));
  return out;
}

/**
 * One chat event as a row; null for events a reader need not see. `names`
 * maps user ids to the names seen with them (YouTube removals name only
 * the id).
 */
export function chatRow(ev: ChatEvent, names?: Map<string, string>): HTMLElement | null {
  const t = h("span", { class: "ts" }, clock(ev.tsMs));
  const st = streamOf(ev);
  const link = (login: string, id = "") => userLink(login, id, st);
  const k = ev.kind;
  switch (k.case) {
    case "message": {
      const m = k.value;
      const a = m.author;
      return h("div", { class: `msg${m.action ? " action" : ""}`, "data-id": ev.eventId, "data-user": a?.login ?? "", "data-user-id": a?.userId ?? "" },
        t, ...badges(a, ev.platform), link(a?.login ?? "", a?.userId ?? ""), h("span", { class: "text" }, ...withEmotes(m.text, m.emotes, ev.platform)));
    }
    case "messageDeleted": {
      const d = k.value;
      const who = d.userLogin || d.userId || "someone";
      return h("div", { class: "mod-line" }, t, d.byAuthor ? `${who} took a message back` : `a message by ${who} was deleted by a moderator`);
    }
    case "userTimedOut":
      return h("div", { class: "mod-line" }, t, link(k.value.userLogin, k.value.userId), ` was timed out for ${k.value.durationS} s`);
    case "userBanned":
      return h("div", { class: "mod-line" }, t, link(k.value.userLogin, k.value.userId), " was banned");
    case "userMessagesRemoved": {
      const id = k.value.userId;
      return h("div", { class: "mod-line" }, t, "every message of ", link(names?.get(id) ?? id, id), " was removed by a moderator");
    }
    case "chatCleared":
      return h("div", { class: "mod-line" }, t, "the chat was cleared by a moderator");
    case "roomState": {
      const r = k.value;
      const parts: string[] = [];
      if (r.slowModeS !== undefined) parts.push(r.slowModeS ? `slow mode ${r.slowModeS} s` : "slow mode off");
      if (r.followersOnlyMin !== undefined) parts.push(r.followersOnlyMin < 0 ? "followers-only off" : `followers-only ${r.followersOnlyMin} min`);
      if (r.membersOnly !== undefined) parts.push(r.membersOnly ? "members-only" : "members-only off");
      if (r.emoteOnly !== undefined) parts.push(r.emoteOnly ? "emote-only" : "emote-only off");
      if (r.uniqueChat !== undefined) parts.push(r.uniqueChat ? "unique chat" : "unique chat off");
      return parts.length ? h("div", { class: "room-line" }, t, parts.join(", ")) : null;
    }
    case "support": {
      const s = k.value;
      return h("div", { class: "support-line" }, t, link(s.author?.login ?? "", s.author?.userId ?? ""), ` supported ${s.amountText}`, s.text ? `: ${visible(s.text)}` : "");
    }
    case "userNotice":
      return h("div", { class: "room-line" }, t, visible(k.value.systemText || k.value.text));
    case "streamEnded":
      return h("div", { class: "mod-line" }, t, "the stream ended");
    default:
      return null;
  }
}

export class ChatView {
  readonly el: HTMLElement;
  private readonly list: HTMLElement;
  private readonly resume: HTMLButtonElement;
  private readonly older: HTMLButtonElement;
  private unseen = 0;
  private following = true;
  /** The scrollTop this view last set itself: scrolling above it is the reader's. */
  private autoTop = 0;
  /** Scores that arrived before their message. */
  private scores = new Map<string, number>();
  /** Names seen per user id, for lines that name only the id. */
  private names = new Map<string, string>();
  /** Event ids already shown (a reopened watch and a backfill overlap). */
  private seen = new Set<string>();
  /** Last event time shown, and when chat last arrived live (wall clock). */
  lastTsMs = 0;
  lastArrivalMs = 0;
  ended = false;

  constructor(loadOlder: () => Promise<boolean>) {
    this.list = h("div", { class: "scroll chat", id: "chat", tabindex: "0", "aria-live": "off" });
    this.resume = button("", () => this.toBottom(), { class: "resume", hidden: "" });
    this.older = button("Load earlier chat", async () => {
      this.older.disabled = true;
      const more = await loadOlder();
      this.older.disabled = false;
      this.older.hidden = !more;
    }, { class: "older", hidden: "" });
    this.list.prepend(this.older);
    this.list.addEventListener("scroll", () => {
      this.following = this.readerAtEnd();
      if (this.following) { this.unseen = 0; this.resume.hidden = true; }
    });
    this.el = h("div", { class: "chat-wrap" }, this.list, this.resume);
  }

  private atBottom(): boolean {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
  }

  /** Whether the view is where this view last put it (or at the end): above that, the reader scrolled. */
  private readerAtEnd(): boolean {
    return this.atBottom() || this.list.scrollTop >= this.autoTop - 2;
  }

  private pin() {
    this.list.scrollTop = this.list.scrollHeight;
    this.autoTop = this.list.scrollTop;
  }

  private toBottom() {
    this.pin();
    this.following = true;
    this.unseen = 0;
    this.resume.hidden = true;
  }

  /** Whether the reader has scrolled away from the newest message. */
  get paused(): boolean {
    return !this.following;
  }

  setMoreOlder(more: boolean) {
    this.older.hidden = !more;
  }

  private apply(ev: ChatEvent) {
    const k = ev.kind;
    const strike = (sel: string) => this.list.querySelectorAll(sel).forEach((e) => e.classList.add("removed"));
    if (k.case === "messageDeleted") strike(`[data-id="${CSS.escape(k.value.targetMessageId)}"]`);
    else if (k.case === "userTimedOut" || k.case === "userBanned") {
      if (k.value.userLogin) strike(`[data-user="${CSS.escape(k.value.userLogin)}"]`);
      if (k.value.userId) strike(`[data-user-id="${CSS.escape(k.value.userId)}"]`);
    } else if (k.case === "userMessagesRemoved") strike(`[data-user-id="${CSS.escape(k.value.userId)}"]`);
    else if (k.case === "streamEnded") this.ended = true;
  }

  private row(ev: ChatEvent): HTMLElement | null {
    if (this.seen.has(ev.eventId)) return null;
    this.seen.add(ev.eventId);
    if (ev.kind.case === "message") {
      const a = ev.kind.value.author;
      if (a?.userId && (a.displayName || a.login) && this.names.size < 50000) this.names.set(a.userId, a.displayName || a.login);
    }
    const r = chatRow(ev, this.names);
    const s = this.scores.get(ev.eventId);
    if (r && s !== undefined) { mark(r, s); this.scores.delete(ev.eventId); }
    return r;
  }

  /** Newer events at the end (`live`: as they arrive); scrolls only while following. */
  append(events: ChatEvent[], live = false) {
    if (live && events.length) this.lastArrivalMs = Date.now();
    // A scroll whose event is not dispatched yet (it fires on the next
    // frame) is the reader's all the same: pinning now would undo it.
    if (this.following && !this.readerAtEnd()) this.following = false;
    let added = 0;
    for (const ev of events) {
      const r = this.row(ev);
      if (r) { this.list.append(r); added++; }
      this.apply(ev);
      this.lastTsMs = Math.max(this.lastTsMs, Number(ev.tsMs));
      if (ev.kind.case === "message") this.ended = false;
    }
    const rows = this.list.querySelectorAll(".msg, .mod-line, .room-line, .support-line");
    const keep = this.following ? KEEP_LIVE : KEEP_MAX;
    if (rows.length > keep) {
      for (let i = 0; i < rows.length - keep; i++) rows[i].remove();
      this.older.hidden = false;
    }
    if (this.following) this.pin();
    else if (added) {
      this.unseen += added;
      this.resume.hidden = false;
      this.resume.textContent = `${this.unseen} new ${this.unseen === 1 ? "message" : "messages"} ↓`;
    }
  }

  /** Older events (oldest first) at the start; the view does not move. */
  prepend(events: ChatEvent[]) {
    const before = this.list.scrollHeight;
    const rows = events.map((ev) => this.row(ev)).filter((r): r is HTMLElement => r !== null);
    this.older.after(...rows);
    for (const ev of events) { this.apply(ev); this.lastTsMs = Math.max(this.lastTsMs, Number(ev.tsMs)); }
    if (this.following && before <= this.list.clientHeight + 40) this.pin();
    else {
      const grown = this.list.scrollHeight - before;
      this.list.scrollTop += grown;
      this.autoTop += grown;
    }
  }

  score(s: MessageScore) {
    const r = this.list.querySelector(`[data-id="${CSS.escape(s.messageId)}"]`);
    if (r) mark(r as HTMLElement, s.score);
    else if (this.scores.size < 5000) this.scores.set(s.messageId, s.score);
  }
}

function mark(r: HTMLElement, score: number) {
  if (score >= 0.5) {
    r.classList.add("spam");
    r.title = `spam score ${score.toFixed(2)}`;
  }
}
