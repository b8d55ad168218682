/**
 * Single-file backups (Convoy's objectstore/singlefile.go): one archive per backup at
 * `<volumeDir>/BackupFiles/<backup>.bak`, described by a backup record without blocks.
 * @module
 */
import type { BackupVolume } from "../api/plugin.ts";
import type { OperationContext } from "../api/driver.ts";
import {
  BackendError,
  ConflictError,
  errorMessage,
  InvalidArgumentError,
  isErrorCode,
  NotFoundError,
  NotSupportedError,
} from "../api/errors.ts";
import { sweepQuietly } from "../store/sweep.ts";
import { downloadFile, uploadFile } from "../store/transfer.ts";
import { checkKey, type ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { generateName, validateName } from "../util/names.ts";
import { rubyDate } from "../util/time.ts";
import {
  backupURLOf,
  listBackupNames,
  loadVolumeRecord,
  requireBackupRecord,
  saveBackupRecord,
  saveVolumeRecord,
} from "./catalog.ts";
import { backupConfigPath, singleFilePath, volumeDir } from "./layout.ts";
import {
  type BackupRecord,
  isSingleFileBackup,
  RecordParseError,
  type VolumeRecord,
} from "./records.ts";
import type { BackupRef } from "./url.ts";

/** A backup within one store. */
export type StoredBackupRef = Pick<BackupRef, "backup" | "volume">;

/** How messages name the backup. */
export interface MessageOptions {
  /** The backup URL as the user gave it (default: built from the store URL). */
  url?: string;
}

/** Options of createSingleFileBackup. */
export interface CreateSingleFileOptions extends OperationContext {
  volume: BackupVolume;
  snapshot: { name: string; createdTime: string };
  log: Logger;
  /** The CreatedTime of the record (default: now, as RubyDate). */
  now?: () => string;
}

async function newBackupName(store: ObjectStore, volume: string): Promise<string> {
  for (let i = 0; i < 5; i++) {
    const name = generateName("backup", 16);
    if (!(await store.stat(backupConfigPath(volume, name)))) return name;
  }
  throw new ConflictError(`Cannot create backup of volume "${volume}": no free backup name`);
}

/**
 * Uploads `file` as a new single-file backup of `opts.volume` and resolves to the backup name.
 * Order, for crash safety: the archive, then the backup record, then volume.cfg (created when
 * missing, else refreshed; its LastBackupName is kept). A failure removes what was written.
 */
export async function createSingleFileBackup(
  store: ObjectStore,
  file: string,
  opts: CreateSingleFileOptions,
): Promise<string> {
  const volume = validateName(opts.volume.name, "volume");
  const backup = await newBackupName(store, volume);
  const log = opts.log.child({ store: store.url, volume, backup });
  const archive = singleFilePath(volume, backup);
  const record: BackupRecord = {
    Name: backup,
    Driver: "",
    VolumeName: volume,
    SnapshotName: opts.snapshot.name,
    SnapshotCreatedAt: opts.snapshot.createdTime,
    CreatedTime: (opts.now ?? rubyDate)(),
    Blocks: [],
    SingleFile: { FilePath: archive },
  };
  const written: string[] = [];
  const sweep = sweepQuietly(store, { prefix: volumeDir(volume), log }); // beside the upload
  try {
    log.debug("Uploading backup archive", { file, key: archive });
    written.push(archive);
    await uploadFile(store, archive, {
      file,
      signal: opts.signal,
      onProgress: (bytes, total) => opts.progress?.({ done: bytes, total, bytes }),
    });
    written.push(backupConfigPath(volume, backup));
    await saveBackupRecord(store, record);
    await saveVolumeRecord(store, await refreshedVolume(store, opts.volume, log));
  } catch (err) {
    log.warn("Backup failed, removing what was written", { error: errorMessage(err) });
    await store.remove(...written.reverse()).catch((e) =>
      log.error("Cannot clean up a failed backup", { keys: written, error: errorMessage(e) })
    );
    throw err;
  } finally {
    await sweep;
  }
  log.info("Created single-file backup", { snapshot: opts.snapshot.name });
  return backup;
}

/** The volume.cfg to write: the stored one (or a new one) with this volume's metadata. */
async function refreshedVolume(
  store: ObjectStore,
  volume: BackupVolume,
  log: Logger,
): Promise<VolumeRecord> {
  let old: VolumeRecord | undefined;
  try {
    old = await loadVolumeRecord(store, volume.name);
  } catch (err) {
    if (!(err instanceof RecordParseError)) throw err;
    log.warn("Replacing an unreadable volume.cfg", { error: err.message });
  }
  if (old && old.Driver !== "" && old.Driver !== volume.driver) {
    log.warn("volume.cfg names another driver; taking over the volume's record", {
      previous: old.Driver,
      driver: volume.driver,
    });
  }
  return {
    ...old,
    Name: volume.name,
    Driver: volume.driver,
    Size: volume.size,
    CreatedTime: volume.createdTime,
    LastBackupName: old?.LastBackupName ?? "",
  };
}

/** The archive key of a single-file backup record. */
function archiveKey(rec: BackupRecord, opts: { url: string; action: string }): string {
  const { url, action } = opts;
  if (!isSingleFileBackup(rec)) {
    throw new InvalidArgumentError(`Cannot ${action} backup "${url}": not a single-file backup`);
  }
  try {
    return checkKey(rec.SingleFile.FilePath);
  } catch (err) {
    throw new BackendError(
      `Cannot ${action} backup "${url}": invalid FilePath "${rec.SingleFile.FilePath}" in its record`,
      { cause: err },
    );
  }
}

/**
 * Downloads the archive of a single-file backup into `opts.file` (complete or not at all).
 * NotFoundError when the backup or its archive does not exist.
 */
export async function restoreSingleFileBackup(
  store: ObjectStore,
  ref: StoredBackupRef,
  opts: OperationContext & MessageOptions & { file: string; log: Logger },
): Promise<void> {
  const url = opts.url ?? backupURLOf(store, ref);
  const rec = await requireBackupRecord(store, ref, { action: "restore", url });
  const key = archiveKey(rec, { action: "restore", url });
  try {
    await downloadFile(store, key, {
      file: opts.file,
      signal: opts.signal,
      onProgress: (bytes, total) => opts.progress?.({ done: bytes, total, bytes }),
    });
  } catch (err) {
    if (!isErrorCode(err, "NotFound")) throw err;
    throw new NotFoundError(
      `Cannot restore backup "${url}": archive "${key}" does not exist`,
      { cause: err },
    );
  }
  opts.log.info("Restored single-file backup", {
    store: store.url,
    volume: ref.volume,
    backup: ref.backup,
    file: opts.file,
  });
}

/**
 * Deletes a single-file backup: the archive, then the record. When no backup of the volume
 * remains, the whole volume folder goes too (volume.cfg included). NotFoundError when the backup
 * does not exist; NotSupportedError for a delta-block backup.
 */
export async function deleteSingleFileBackup(
  store: ObjectStore,
  ref: StoredBackupRef,
  opts: MessageOptions & { log: Logger },
): Promise<void> {
  const log = opts.log.child({ store: store.url, volume: ref.volume, backup: ref.backup });
  const url = opts.url ?? backupURLOf(store, ref);
  const rec = await requireBackupRecord(store, ref, { action: "delete", url });
  if (!isSingleFileBackup(rec)) {
    throw new NotSupportedError(
      `Cannot delete backup "${url}": delta-block backups are deleted by the block engine`,
    );
  }
  const key = archiveKey(rec, { action: "delete", url });
  const dir = volumeDir(ref.volume);
  if (!key.startsWith(dir + "/")) {
    throw new BackendError(
      `Cannot delete backup "${url}": its archive "${key}" is outside "${dir}"`,
    );
  }
  await store.remove(key);
  await store.remove(backupConfigPath(ref.volume, ref.backup));
  log.info("Deleted single-file backup");
  if ((await listBackupNames(store, ref.volume)).length > 0) return;
  try {
    await store.remove(dir);
    log.info("Removed the volume from the backup store: no backups remain", { folder: dir });
  } catch (err) {
    log.warn("Cannot remove the volume folder of its last backup", {
      folder: dir,
      error: errorMessage(err),
    });
  }
}
