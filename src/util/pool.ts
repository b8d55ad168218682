/**
 * A bounded-concurrency loop over a list.
 * @module
 */
import { CancelledError } from "../api/errors.ts";

/**
 * Runs `fn` over `items` with at most `opts.concurrency` at a time; after the first failure it
 * starts no more, waits for those running and rethrows it. CancelledError once `signal` aborts.
 */
export async function pool<T>(
  items: T[],
  opts: { concurrency: number; signal?: AbortSignal },
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      if (opts.signal?.aborted) throw new CancelledError("Operation cancelled");
      const item = items[next++];
      try {
        await fn(item);
      } catch (err) {
        failed ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency, items.length) }, worker));
  if (failed !== undefined) throw failed;
  if (opts.signal?.aborted) throw new CancelledError("Operation cancelled");
}
