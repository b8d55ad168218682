/**
 * The delete of a delta-block backup (deleteDeltaBackup): its record, then a sweep of the blocks
 * no remaining backup uses, under a gc lease.
 * @module
 */
import { errorMessage } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { generateName } from "../util/names.ts";
import { listBackupNames, loadBackupRecord, saveVolumeRecord } from "./catalog.ts";
import { loadDelta } from "./delta_records.ts";
import { clearLeftovers, removeBlocks, sweepUnreferenced } from "./gc.ts";
import { backupConfigPath, blockPath, volumeDir } from "./layout.ts";
import {
  describeLease,
  leaseStates,
  liveLeases,
  noteSweepNeeded,
  sweepNotes,
  takeLease,
} from "./leases.ts";
import { type BackupRecord, RecordParseError } from "./records.ts";

/**
 * Deletes a delta-block backup: its record, then (unless a backup of the volume is running,
 * here or on another host) the blocks no remaining backup uses; the whole volume folder when it
 * was the last backup. When a crashed or failed holder left a lease or a sweep note behind, or
 * a delete had to skip its sweep, every unreferenced block of the volume is swept, not only the
 * deleted backup's. A skipped sweep leaves a note for the next delete or `backup gc`.
 */
export async function deleteDeltaBackup(
  store: ObjectStore,
  opts: { volume: string; backup: string; url: string; log: Logger },
): Promise<void> {
  const log = opts.log.child({ volume: opts.volume, backup: opts.backup });
  const { volume, backup } = await loadDelta(store, { ...opts, action: "delete" });
  await store.remove(backupConfigPath(opts.volume, opts.backup));
  if (volume.LastBackupName === opts.backup) {
    await saveVolumeRecord(store, { ...volume, LastBackupName: "" });
  }
  const gcID = generateName("gc", 16);
  const lease = await takeLease(store, opts.volume, { kind: "gc", id: gcID });
  let released = false;
  try {
    const notes = await sweepNotes(store, opts.volume);
    const backups = await leaseStates(store, opts.volume, { kind: "backup" });
    if (backups.live.length > 0) {
      log.info("a backup of this volume is running; unused blocks are kept until a later sweep", {
        running: backups.live.map(describeLease),
      });
      await noteSweepNeeded(store, opts.volume, {
        id: gcID,
        why: `delete of backup "${opts.backup}" skipped its sweep`,
      });
      return;
    }
    const remaining = await listBackupNames(store, opts.volume);
    if (remaining.length === 0) {
      await lease.release();
      released = true;
      if ((await liveLeases(store, opts.volume, { kind: "backup" })).length === 0) {
        await store.remove(volumeDir(opts.volume));
        log.info("deleted the last backup; removed the volume's folder");
      }
      return;
    }
    const leftovers = notes.length > 0 || backups.dead.length > 0 ||
      (await leaseStates(store, opts.volume, { kind: "gc", exceptID: gcID })).dead.length > 0;
    if (leftovers) {
      const swept = await sweepUnreferenced(store, opts.volume, {});
      if ("unreadable" in swept) {
        log.warn("unused blocks are kept: a backup record cannot be read", {
          error: swept.unreadable,
        });
        return;
      }
      await clearLeftovers(store, opts.volume, { notes, exceptID: gcID });
      log.info("deleted backup; swept every unreferenced block", { blocksRemoved: swept.count });
      return;
    }
    const discard = new Set(backup.Blocks.map((b) => b.BlockChecksum));
    for (const name of remaining) {
      if (discard.size === 0) break;
      let other: BackupRecord | undefined;
      try {
        other = await loadBackupRecord(store, { volume: opts.volume, backup: name });
      } catch (err) {
        if (!(err instanceof RecordParseError)) throw err;
        log.warn("unused blocks are kept: a backup record cannot be read", {
          error: errorMessage(err),
        });
        await noteSweepNeeded(store, opts.volume, { id: gcID, why: errorMessage(err) });
        return;
      }
      for (const b of other?.Blocks ?? []) discard.delete(b.BlockChecksum);
    }
    const keys = [...discard].map((sum) => blockPath(opts.volume, sum));
    await removeBlocks(store, keys);
    log.info("deleted backup", { blocksRemoved: keys.length });
  } finally {
    if (!released) await lease.release().catch(() => {});
  }
}
