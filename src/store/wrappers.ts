/**
 * Cross-cutting store wrappers. Each takes an ObjectStore and returns one, so they stack.
 * @module
 */
import { isErrorCode } from "../api/errors.ts";
import type { Logger } from "../util/log.ts";
import type { ObjectStore, WriteOptions } from "./types.ts";

/** Options of withRetry. */
export interface RetryOptions {
  /** Total tries per operation (default 3). */
  attempts?: number;
  /** Delay before the first retry, doubled each time (default 200 ms). */
  delayMs?: number;
}

/**
 * True for failures worth retrying: backend, unavailable and timeout errors, unless the error
 * says `permanent: true` (a store's verdict, e.g. S3 access denied or another 4xx status).
 */
export function isTransient(err: unknown): boolean {
  if ((err as { permanent?: unknown } | null)?.permanent === true) return false;
  return isErrorCode(err, "Backend") || isErrorCode(err, "Unavailable") ||
    isErrorCode(err, "Timeout");
}

/**
 * Retries transient failures (see isTransient). Not-found, invalid-argument and other errors
 * fail at once; a write with a stream body is tried once, as the stream cannot be replayed.
 */
export function withRetry(store: ObjectStore, opts: RetryOptions = {}): ObjectStore {
  const attempts = Math.max(1, opts.attempts ?? 3);
  const delayMs = opts.delayMs ?? 200;
  async function retry<T>(fn: () => Promise<T>, tries = attempts): Promise<T> {
    for (let i = 1;; i++) {
      try {
        return await fn();
      } catch (err) {
        if (i >= tries || !isTransient(err)) throw err;
        await new Promise((r) => setTimeout(r, delayMs * 2 ** (i - 1)));
      }
    }
  }
  return {
    kind: store.kind,
    url: store.url,
    stat: (key) => retry(() => store.stat(key)),
    read: (key) => retry(() => store.read(key)),
    readStream: (key) => retry(() => store.readStream(key)),
    write: (key, body, wopts?: WriteOptions) =>
      retry(() => store.write(key, body, wopts), body instanceof Uint8Array ? attempts : 1),
    list: (prefix) => retry(() => store.list(prefix)),
    remove: (...keys) => retry(() => store.remove(...keys)),
    ...(store.sweepTemps &&
      { sweepTemps: (prefix, sopts) => retry(() => store.sweepTemps!(prefix, sopts)) }),
  };
}

/** Logs every operation at debug level with its key and duration, and failures at warn level. */
export function withLogging(store: ObjectStore, log: Logger): ObjectStore {
  const l = log.child({ store: store.url });
  async function logged<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    const start = performance.now();
    try {
      const out = await fn();
      l.debug(`store ${op}`, { key, ms: Math.round(performance.now() - start) });
      return out;
    } catch (err) {
      const fields = { key, error: err instanceof Error ? err.message : String(err) };
      if (isErrorCode(err, "NotFound")) l.debug(`store ${op} failed`, fields);
      else l.warn(`store ${op} failed`, fields);
      throw err;
    }
  }
  return {
    kind: store.kind,
    url: store.url,
    stat: (key) => logged("stat", key, () => store.stat(key)),
    read: (key) => logged("read", key, () => store.read(key)),
    readStream: (key) => logged("readStream", key, () => store.readStream(key)),
    write: (key, body, wopts?: WriteOptions) =>
      logged("write", key, () => store.write(key, body, wopts)),
    list: (prefix) => logged("list", prefix, () => store.list(prefix)),
    remove: (...keys) => logged("remove", keys.join(" "), () => store.remove(...keys)),
    ...(store.sweepTemps &&
      {
        sweepTemps: (prefix, sopts) =>
          logged("sweep", prefix, () => store.sweepTemps!(prefix, sopts)),
      }),
  };
}
