// Small DOM and formatting helpers shared by every page.
import { Code, ConnectError } from "@connectrpc/connect";

export function h(tag: string, attrs: Record<string, string> = {}, ...children: (Node | string)[]): HTMLElement {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  for (const c of children) e.append(c);
  return e;
}

/** A button that runs `fn` on click. */
export function button(label: string, fn: () => void, attrs: Record<string, string> = {}): HTMLButtonElement {
  const b = h("button", { type: "button", ...attrs }, label) as HTMLButtonElement;
  b.addEventListener("click", fn);
  return b;
}

/** A number as a person reads it. */
export const num = (v: number) => (Math.abs(v) >= 10 || Number.isInteger(v) ? v.toFixed(0) : v.toFixed(2));

/** Date and time in the reader's time zone, to the second. */
export function time(ms: bigint | number): string {
  const n = Number(ms);
  if (!n) return "-";
  const d = new Date(n);
  const p = (x: number) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

/** Time of day only, for chat lines. */
export function clock(ms: bigint | number): string {
  return time(ms).slice(11);
}

/** Removes invisible characters spammers use to dodge filters. */
export const visible = (s: string) => s.replace(/[\u200b-\u200f\u2060-\u206f\u{e0000}-\u{e0fff}]/gu, "");

const CODE_TEXT: Partial<Record<Code, string>> = {
  [Code.InvalidArgument]: "The request was refused",
  [Code.NotFound]: "Not found",
  [Code.Unauthenticated]: "The admin token is missing or wrong",
  [Code.PermissionDenied]: "Not allowed",
  [Code.FailedPrecondition]: "Cannot do that now",
  [Code.Unavailable]: "The server is unreachable",
  [Code.DeadlineExceeded]: "The server took too long",
  [Code.ResourceExhausted]: "Too many open views: close some tabs",
  [Code.Internal]: "The server failed",
  [Code.Unimplemented]: "The server does not offer this (an older gateway?)",
};

/** A sentence for any error an API call can end with. */
export function errorText(e: unknown): string {
  if (e instanceof ConnectError) {
    const what = CODE_TEXT[e.code] ?? `Error (${Code[e.code] ?? e.code})`;
    return e.rawMessage ? `${what}: ${e.rawMessage}` : what;
  }
  return e instanceof Error ? e.message : String(e);
}

export function errorBox(e: unknown): HTMLElement {
  return h("p", { class: "error", role: "alert" }, errorText(e));
}

/** Whether retrying later can help: the server or network is down. */
export function transient(e: unknown): boolean {
  if (!(e instanceof ConnectError)) return e instanceof TypeError;
  return [Code.Unavailable, Code.Unknown, Code.DeadlineExceeded, Code.Aborted, Code.Internal].includes(e.code)
    && !/not found/i.test(e.rawMessage);
}

/** Milliseconds since the epoch from a `datetime-local` value, 0 if empty. */
export function fromLocalInput(v: string): number {
  return v ? new Date(v).getTime() : 0;
}

/** A `datetime-local` value from milliseconds since the epoch. */
export function toLocalInput(ms: number): string {
  if (!ms) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 19);
}
