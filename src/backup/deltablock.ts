/**
 * Convoy's delta-block backups: a volume is cut into 2 MiB blocks, each stored once per volume
 * under its checksum; a backup record maps offsets to checksums. Only the blocks a driver
 * reports changed since the volume's last backup are read; when it cannot say ("unknown"), every
 * allocated block is read once and only those whose checksum the last backup's map lacks are
 * stored. All-zero blocks are not stored.
 * Order of writes: blocks, then the backup record, then volume.cfg — a backup killed midway is
 * never listed, and a re-run reuses the blocks it had uploaded once it has checked them (a
 * killed upload may have left a truncated object). A backup that fails or is cancelled removes
 * the blocks it uploaded (see discardUploads), and each backup sweeps the volume's stale
 * temporary objects (see sweepStaleTemps).
 *
 * One concern per file: delta_backup.ts (createDeltaBackup), delta_discard.ts (a failed backup's
 * uploads), delta_restore.ts, delta_verify.ts, delta_delete.ts; delta_records.ts (our record
 * fields, loadDelta) and delta_blocks.ts (a stored block read back) serve them. Garbage
 * collection is gc.ts.
 * @module
 */
export {
  blockOffsets,
  createDeltaBackup,
  type EngineOptions,
  mergeBlocks,
} from "./delta_backup.ts";
export { DEFAULT_CONCURRENCY } from "./delta_blocks.ts";
export { backupSize } from "./delta_records.ts";
export { restoreDeltaBackup } from "./delta_restore.ts";
export { verifyDeltaBackup } from "./delta_verify.ts";
export { deleteDeltaBackup } from "./delta_delete.ts";
