/**
 * Bounded exponential waits for EC2's eventually consistent states: the first check at once, then
 * delays doubling from `initialDelayMs` up to `maxDelayMs` (with jitter), never past the deadline.
 * No fixed sleeps; a wait that runs out says what it waited for and the last state it saw.
 * @module
 */

/** One look at the awaited thing: done with a value, or not yet, in `state`. */
export type Check<T> = { done: true; value: T } | { done: false; state: string };

/** How long and how often `waitFor` looks. */
export interface WaitOptions {
  /** What is awaited, for the timeout message: `attach volume "db1" (vol-1)`. */
  what: string;
  /** The whole wait, checks included. */
  timeoutMs: number;
  /** The first delay (default 250 ms). */
  initialDelayMs?: number;
  /** The longest delay (default 5 s). */
  maxDelayMs?: number;
  signal?: AbortSignal;
}

/** Builds the error of a wait that ran out. */
export type TimeoutFactory = (message: string) => Error;

/** Calls `check` until it is done; throws `timeout(...)` once `opts.timeoutMs` has passed. */
export async function waitFor<T>(
  check: () => Promise<Check<T>>,
  opts: WaitOptions & { timeout: TimeoutFactory },
): Promise<T> {
  const start = Date.now();
  const deadline = start + opts.timeoutMs;
  let delay = opts.initialDelayMs ?? 250;
  const max = opts.maxDelayMs ?? 5000;
  for (let n = 1;; n++) {
    opts.signal?.throwIfAborted();
    const r = await check();
    if (r.done) return r.value;
    const left = deadline - Date.now();
    if (left <= 0) {
      const secs = Math.round((Date.now() - start) / 100) / 10;
      throw opts.timeout(
        `Cannot ${opts.what}: timed out after ${secs} s (${n} checks), last state "${r.state}"`,
      );
    }
    const jittered = delay / 2 + Math.random() * delay / 2;
    await sleep(Math.min(left, jittered), opts.signal);
    delay = Math.min(max, delay * 2);
  }
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
