/**
 * Cross-cutting store wrappers. Each takes an ObjectStore and returns one, so they stack; the
 * daemon applies them to every store it opens (see withStoreWrappers).
 * @module
 */
import { isErrorCode } from "../api/errors.ts";
import type { Logger } from "../util/log.ts";
import type { ObjectStore, RetryPolicy, StoreFactory, WriteOptions } from "./types.ts";

/** Options of withRetry (a RetryPolicy). */
export type RetryOptions = RetryPolicy;

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
 * Runs `fn`, retrying transient failures (see isTransient) up to `opts.attempts` tries in all,
 * waiting `opts.backoff(err, retry)` (default: `delayMs` doubled per retry) before each retry.
 */
export async function retrying<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = Math.max(1, opts.attempts ?? 3);
  const delayMs = opts.delayMs ?? 200;
  const backoff = opts.backoff ?? ((_err: unknown, retry: number) => delayMs * 2 ** (retry - 1));
  for (let i = 1;; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isTransient(err)) throw err;
      await new Promise((r) => setTimeout(r, backoff(err, i)));
    }
  }
}

/**
 * Retries transient failures (see retrying). Not-found, invalid-argument and other errors
 * fail at once; a write with a stream body is tried once, as the stream cannot be replayed.
 */
export function withRetry(store: ObjectStore, opts: RetryOptions = {}): ObjectStore {
  const retry = <T>(fn: () => Promise<T>) => retrying(fn, opts);
  return {
    kind: store.kind,
    url: store.url,
    stat: (key) => retry(() => store.stat(key)),
    read: (key) => retry(() => store.read(key)),
    readStream: (key) => retry(() => store.readStream(key)),
    write: (key, body, wopts?: WriteOptions) =>
      body instanceof Uint8Array
        ? retry(() => store.write(key, body, wopts))
        : store.write(key, body, wopts),
    list: (prefix) => retry(() => store.list(prefix)),
    remove: (...keys) => retry(() => store.remove(...keys)),
    ...(store.removeObjects &&
      { removeObjects: (...keys) => retry(() => store.removeObjects!(...keys)) }),
    ...(store.flush && { flush: () => retry(() => store.flush!()) }),
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
    ...(store.removeObjects && {
      removeObjects: (...keys) =>
        logged("removeObjects", keys.join(" "), () => store.removeObjects!(...keys)),
    }),
    ...(store.flush && { flush: () => logged("flush", "", () => store.flush!()) }),
    ...(store.sweepTemps &&
      {
        sweepTemps: (prefix, sopts) =>
          logged("sweep", prefix, () => store.sweepTemps!(prefix, sopts)),
      }),
  };
}

/**
 * `factory` as the daemon uses it: opening a store retries transient failures with the
 * factory's `retry` policy, and so do the store's operations (withRetry); factories without a
 * policy are not retried. The result has no policy of its own (wrap once). Every store logs its operations to `opts.log` (withLogging).
 */
export function withStoreWrappers(factory: StoreFactory, opts: { log: Logger }): StoreFactory {
  const policy = factory.retry;
  return {
    scheme: factory.scheme,
    supportsEndpoint: factory.supportsEndpoint,
    async open(destURL, oopts) {
      const open = () => factory.open(destURL, oopts);
      const store = policy ? withRetry(await retrying(open, policy), policy) : await open();
      return withLogging(store, opts.log);
    },
  };
}
