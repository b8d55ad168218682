/**
 * The restore of a delta-block backup into a file or block device (restoreDeltaBackup).
 * @module
 */
import { open, stat } from "node:fs/promises";
import { BackendError } from "../api/errors.ts";
import type { Progress } from "../api/driver.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { BackgroundSync } from "../util/background_sync.ts";
import { pool } from "../util/pool.ts";
import { BLOCK_SIZE } from "./codec.ts";
import { closeFile } from "./codec_pool.ts";
import { DEFAULT_CONCURRENCY, restoreBlock } from "./delta_blocks.ts";
import { backupSize, checksumOf, loadDelta } from "./delta_records.ts";

/**
 * A restore datasyncs in the background every this many bytes written through the page cache
 * (BackgroundSync). Direct writes leave nothing to write back, and a datasync meanwhile would only
 * stall them behind a log and cache flush (measured: twice the write time per block).
 */
const RESTORE_SYNC_EVERY = 64 * 1024 * 1024;

/**
 * Writes every block of a delta-block backup into `target` (an existing file or block device);
 * unmapped ranges are left as they are (zeros in a fresh target). A regular-file target is sized
 * to the volume.
 */
export async function restoreDeltaBackup(
  store: ObjectStore,
  opts: {
    volume: string;
    backup: string;
    url: string;
    target: string;
    signal?: AbortSignal;
    progress?: (p: Progress) => void;
    log: Logger;
    concurrency?: number;
  },
): Promise<void> {
  const { volume, backup } = await loadDelta(store, { ...opts, action: "restore" });
  const size = backupSize(volume, backup);
  const algo = checksumOf(backup);
  const st = await stat(opts.target);
  const fh = await open(opts.target, "r+");
  const background = new BackgroundSync(RESTORE_SYNC_EVERY, () => fh.datasync());
  let done = false;
  try {
    if (st.isFile()) await fh.truncate(size);
    const progress: Progress = { done: 0, total: backup.Blocks.length, bytes: 0 };
    const t0 = performance.now();
    await pool(backup.Blocks, {
      concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY,
      signal: opts.signal,
    }, async (block) => {
      if (block.Offset + BLOCK_SIZE > size && size > 0) {
        throw new BackendError(
          `Cannot restore backup "${opts.url}": block at offset ${block.Offset} is past the volume size ${size}`,
        );
      }
      const how = await restoreBlock(store, {
        volume: opts.volume,
        block,
        algo,
        url: opts.url,
        action: "restore",
        target: opts.target,
      });
      if (how === "buffered") background.wrote(BLOCK_SIZE);
      progress.done++;
      progress.bytes += BLOCK_SIZE;
      opts.progress?.({ ...progress });
    });
    const tWritten = performance.now();
    await background.drain();
    await fh.sync();
    opts.log.info("Restored delta-block backup", {
      volume: opts.volume,
      backup: opts.backup,
      blocks: backup.Blocks.length,
      blocksSeconds: +((tWritten - t0) / 1000).toFixed(2),
      syncSeconds: +((performance.now() - tWritten) / 1000).toFixed(2),
    });
    done = true;
  } finally {
    await background.drain().catch(() => {}); // never close the handle under a running datasync
    const closed = closeFile(opts.target).finally(() => fh.close());
    // A failed close matters after a good restore; after a failure, the first error does.
    await (done ? closed : closed.catch(() => {}));
  }
}
