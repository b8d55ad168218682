/**
 * The temporary-object part of `backup gc`: leftovers of writes that died midway. Only vfs
 * stores leave any (`.<name>.tmp-<8 hex>` files beside the object, hidden from `list()`); S3
 * multipart uploads are aborted on failure, memory stores write atomically.
 *
 * TODO(integrity): a store-level `sweepStaleTemps(store, { olderThanMs })` is being written on
 * another branch; when it lands, `staleTemps` should call it (scoped to `prefix`) instead.
 * @module
 */
import { lstat, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { parseVfsURL } from "../store/dest_url.ts";
import type { ObjectStore } from "../store/types.ts";

/** The name of a vfs store's temp file, as src/store/vfs.ts writes it. */
const TEMP_NAME = /^\..+\.tmp-[0-9a-f]{8}$/;

/** Temp files younger than this may belong to a write in progress and are left alone. */
export const STALE_TEMP_MS = 60 * 60_000;

/** What staleTemps found (and removed, unless dryRun). */
export interface TempSweep {
  count: number;
  bytes: number;
}

/**
 * Finds the stale temp objects under `prefix` (older than `olderThanMs`) and removes them unless
 * `dryRun`. Resolves to zero for stores that leave none.
 */
export async function staleTemps(
  store: ObjectStore,
  prefix: string,
  opts: { olderThanMs?: number; dryRun?: boolean } = {},
): Promise<TempSweep> {
  const out: TempSweep = { count: 0, bytes: 0 };
  if (store.kind !== "vfs") return out;
  const cutoff = Date.now() - (opts.olderThanMs ?? STALE_TEMP_MS);
  const walk = async (dir: string): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return; // gone meanwhile, or not a folder
    }
    for (const name of names) {
      const path = join(dir, name);
      const st = await lstat(path).catch(() => undefined);
      if (!st) continue;
      if (st.isDirectory()) await walk(path);
      else if (st.isFile() && TEMP_NAME.test(name) && st.mtimeMs < cutoff) {
        if (!opts.dryRun) await rm(path, { force: true });
        out.count++;
        out.bytes += st.size;
      }
    }
  };
  await walk(join(parseVfsURL(store.url).path, prefix));
  return out;
}
