// Reaching the server: one banner for the whole page while it cannot be
// reached, and calls that retry with backoff until it can.
import { transient } from "./ui";

const banner = document.getElementById("banner")!;
let failingSince = 0;

function show(retryInMs: number) {
  if (!failingSince) failingSince = Date.now();
  banner.hidden = false;
  banner.textContent = `Cannot reach the spamscope server since ${new Date(failingSince).toLocaleTimeString()}: retrying in ${Math.ceil(retryInMs / 1000)} s. What is shown may be stale.`;
}

/** The server answered: the banner goes. */
export function reachable() {
  failingSince = 0;
  banner.hidden = true;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });

/** Backoff for the nth retry: 1, 2, 4, 8, then 15 s, with jitter. */
export const backoff = (n: number) => Math.min(15000, 1000 * 2 ** n) * (0.8 + Math.random() * 0.4);

/**
 * Runs `call` until it succeeds or fails for a reason retrying cannot fix
 * (thrown). While the server is unreachable the banner says so.
 */
export async function retrying<T>(call: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  for (let n = 0; ; n++) {
    try {
      const v = await call();
      reachable();
      return v;
    } catch (e) {
      if (signal?.aborted || !transient(e)) throw e;
      const wait = backoff(n);
      show(wait);
      await sleep(wait, signal);
      if (signal?.aborted) throw e;
    }
  }
}

/**
 * Keeps a live stream open: `open` starts it from where it stopped, each
 * item goes to `each`; when it breaks the banner shows and it reopens with
 * backoff. Ends when `signal` aborts or on an error retrying cannot fix.
 */
export async function follow<T>(open: (signal: AbortSignal) => AsyncIterable<T>, each: (v: T) => void, signal: AbortSignal, onReopen?: () => Promise<void>): Promise<void> {
  for (let n = 0; !signal.aborted; n++) {
    try {
      if (n > 0 && onReopen) await onReopen();
      for await (const v of open(signal)) {
        reachable();
        n = 0;
        each(v);
      }
      // The server ended the stream (it is stopping): open it again.
    } catch (e) {
      if (signal.aborted) return;
      if (!transient(e)) throw e;
    }
    const wait = backoff(n);
    show(wait);
    await sleep(wait, signal);
  }
}

/** Runs `tick` every `everyMs` until `signal` aborts, with the banner and backoff on failure. */
export async function poll(tick: () => Promise<void>, everyMs: number, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await retrying(tick, signal);
    await sleep(everyMs, signal);
  }
}
