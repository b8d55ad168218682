/**
 * Sweeping the leftovers of interrupted writes (a process killed mid-write, a host that lost
 * power): vfs temp files `.<name>.tmp-<hex>` that were never renamed into place, and S3
 * multipart uploads that were never completed or aborted. Neither is ever visible as an object.
 * A vfs temp file whose name names a writer of this host that is gone is swept at once
 * (temp_name.ts); any other leftover only by its age.
 * @module
 */
import { errorMessage } from "../api/errors.ts";
import type { Logger } from "../util/log.ts";
import type { ObjectStore, SweepOptions } from "./types.ts";

/**
 * Leftovers idle for at least this long are swept: 1 hour. Age counts from the leftover's
 * last write (vfs: the temp file's mtime; s3: the upload's newest part, else its start), and a
 * live write touches it with every chunk it writes (vfs) or part it uploads (s3), so only a
 * write stalled for an hour could lose its temp object. A block write takes seconds.
 */
export const STALE_TEMP_AGE_MS = 60 * 60_000;

/**
 * Removes the leftovers of interrupted writes under `opts.prefix` (default: the whole store)
 * idle for `opts.olderThanMs` (default STALE_TEMP_AGE_MS) or longer, or left by a local writer
 * that is gone; resolves to their keys (vfs: the temp file's key; s3: `<key>?uploadId=<id>`).
 * With `dryRun`, removes nothing. `onSwept` is told each key's size in bytes (see SweepOptions).
 * Resolves to [] for stores that leave no leftovers (mem://).
 */
export async function sweepStaleTemps(
  store: ObjectStore,
  opts: {
    olderThanMs?: number;
    prefix?: string;
    dryRun?: boolean;
    onSwept?: SweepOptions["onSwept"];
  } = {},
): Promise<string[]> {
  if (!store.sweepTemps) return [];
  return await store.sweepTemps(opts.prefix ?? "", {
    olderThanMs: opts.olderThanMs ?? STALE_TEMP_AGE_MS,
    dryRun: opts.dryRun,
    onSwept: opts.onSwept,
  });
}

/** How often sweepQuietly sweeps one folder of one store, at most (per process). */
export const QUIET_SWEEP_INTERVAL_MS = 10 * 60_000;
const lastQuietSweep = new Map<string, number>();

/**
 * sweepStaleTemps under `opts.prefix` with the default safe age, for running beside other work:
 * never rejects (a failure is logged as a warning), logs what it removed. Sweeps a folder of a
 * store at most once per QUIET_SWEEP_INTERVAL_MS: on vfs a sweep walks every block folder, which
 * would otherwise cost each small incremental backup more than its blocks (`convoy backup gc`
 * sweeps whenever asked).
 */
export async function sweepQuietly(
  store: ObjectStore,
  opts: { prefix: string; log: Logger },
): Promise<void> {
  const key = `${store.url}\n${opts.prefix}`;
  const last = lastQuietSweep.get(key);
  if (last !== undefined && Date.now() - last < QUIET_SWEEP_INTERVAL_MS) return;
  lastQuietSweep.set(key, Date.now());
  try {
    const removed = await sweepStaleTemps(store, { prefix: opts.prefix });
    if (removed.length > 0) opts.log.info("removed stale temporary objects", { removed });
  } catch (err) {
    opts.log.warn("cannot sweep stale temporary objects", { error: errorMessage(err) });
  }
}
