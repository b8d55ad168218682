/**
 * What a failed or cancelled delta-block backup leaves: discardUploads removes the blocks it
 * uploaded, under the store's rule for concurrent backups of a volume.
 * @module
 */
import { errorMessage } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { generateName } from "../util/names.ts";
import { trustedBlocks } from "./delta_blocks.ts";
import { removeBlocks } from "./gc.ts";
import { blockPath } from "./layout.ts";
import { liveLeases, noteSweepNeeded, takeLease } from "./leases.ts";

/**
 * Removes the blocks (by checksum) that a failed or cancelled backup uploaded. The store's rule
 * for concurrent backups: a live backup of the same volume (another daemon or host) may have
 * found one of these blocks in the store and reused it, so nothing is removed while one holds a
 * lease (`convoy backup gc` collects them later); blocks that a backup record references are
 * kept. A gc lease is held meanwhile, as a delete's sweep holds one, so a backup starting now
 * waits instead of reusing a block being removed. Never throws: what it cannot remove it logs
 * and leaves to gc.
 */
export async function discardUploads(
  store: ObjectStore,
  opts: { volume: string; sums: Set<string>; backup: string; log: Logger },
): Promise<void> {
  const { volume, log } = opts;
  if (opts.sums.size === 0) return;
  // Blocks kept here are referenced by no record: a note makes the next delete sweep them.
  const leaveNote = () =>
    noteSweepNeeded(store, volume, { id: opts.backup, why: `backup "${opts.backup}" failed` })
      .catch(() => {});
  let lease;
  try {
    lease = await takeLease(store, volume, { kind: "gc", id: generateName("gc", 16) });
  } catch (err) {
    log.warn("cannot remove the failed backup's blocks; left for gc", {
      blocks: opts.sums.size,
      error: errorMessage(err),
    });
    await leaveNote();
    return;
  }
  try {
    const others = await liveLeases(store, volume, { kind: "backup", exceptID: opts.backup });
    if (others.length > 0) {
      log.info("another backup of this volume is running; the failed backup's blocks are kept", {
        blocks: opts.sums.size,
      });
      await leaveNote();
      return;
    }
    const referenced = await trustedBlocks(store, volume);
    const keys = [...opts.sums].filter((sum) => !referenced.has(sum)).map((sum) =>
      blockPath(volume, sum)
    );
    await removeBlocks(store, keys);
    log.info("removed the failed backup's blocks", { blocksRemoved: keys.length });
  } catch (err) {
    log.warn("cannot remove the failed backup's blocks; left for gc", {
      blocks: opts.sums.size,
      error: errorMessage(err),
    });
    await leaveNote();
  } finally {
    await lease.release().catch(() => {});
  }
}
