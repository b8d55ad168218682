/**
 * Reading and writing the records of a backup store (volume.cfg, backup cfgs) and walking its
 * volumes. Shared by the single-file and delta-block engines.
 * @module
 */
import type { StringMap } from "../api/driver.ts";
import { BackendError, isErrorCode, NotFoundError } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { isValidName } from "../util/names.ts";
import {
  backupConfigPath,
  backupsDir,
  parseBackupConfigName,
  VOLUME_CONFIG_FILE,
  volumeConfigPath,
  volumeDir,
  VOLUMES_DIR,
} from "./layout.ts";
import {
  type BackupRecord,
  parseBackupRecord,
  parseVolumeRecord,
  recordChecksumProblem,
  RecordParseError,
  serializeBackupRecord,
  serializeVolumeRecord,
  type VolumeRecord,
  withRecordChecksum,
} from "./records.ts";
import { encodeBackupURL } from "./url.ts";

const enc = new TextEncoder();

/** Reads `key`; resolves to undefined only when the object does not exist. */
async function readIfExists(store: ObjectStore, key: string): Promise<Uint8Array | undefined> {
  try {
    return await store.read(key);
  } catch (err) {
    if (isErrorCode(err, "NotFound")) return undefined;
    throw err;
  }
}

/** The volume's volume.cfg, or undefined when there is none. Throws RecordParseError when corrupt. */
export async function loadVolumeRecord(
  store: ObjectStore,
  volume: string,
): Promise<VolumeRecord | undefined> {
  const key = volumeConfigPath(volume);
  const data = await readIfExists(store, key);
  return data && parseVolumeRecord(data, `${store.url}/${key}`);
}

/** Writes volume.cfg (keyed by `v.Name`). */
export async function saveVolumeRecord(store: ObjectStore, v: VolumeRecord): Promise<void> {
  await store.write(volumeConfigPath(v.Name), enc.encode(serializeVolumeRecord(v)));
}

/** The backup record, or undefined when there is none. Throws RecordParseError when corrupt. */
export async function loadBackupRecord(
  store: ObjectStore,
  ref: { volume: string; backup: string },
): Promise<BackupRecord | undefined> {
  const key = backupConfigPath(ref.volume, ref.backup);
  const data = await readIfExists(store, key);
  return data && parseBackupRecord(data, `${store.url}/${key}`);
}

/** Writes backups/backup_<Name>.cfg of `b.VolumeName`, with its RecordChecksum. */
export async function saveBackupRecord(store: ObjectStore, b: BackupRecord): Promise<void> {
  await store.write(
    backupConfigPath(b.VolumeName, b.Name),
    enc.encode(serializeBackupRecord(withRecordChecksum(b))),
  );
}

/**
 * Throws BackendError `Cannot <action> backup "<url>": backup record "<key>" …` when the record's
 * RecordChecksum does not match its content (see records.ts); records without one pass.
 */
export function checkBackupRecord(
  store: ObjectStore,
  b: BackupRecord,
  ref: { volume: string; backup: string; url: string; action: string },
): void {
  const problem = recordChecksumProblem(b);
  if (problem) {
    throw new BackendError(
      `Cannot ${ref.action} backup "${ref.url}": backup record "${store.url}/${
        backupConfigPath(ref.volume, ref.backup)
      }" is corrupt: ${problem}`,
    );
  }
}

/** Names of the backups recorded for `volume` (from backup_<name>.cfg files), sorted. */
export async function listBackupNames(store: ObjectStore, volume: string): Promise<string[]> {
  const names = (await store.list(backupsDir(volume))).map(parseBackupConfigName);
  return names.filter((n): n is string => n !== undefined && isValidName(n));
}

/** Convoy's BackupInfo map; the URL is built from `destURL` (the store's normalised URL). */
export function backupInfo(
  destURL: string,
  rec: { volume: VolumeRecord; backup: BackupRecord },
): StringMap {
  const { volume: v, backup: b } = rec;
  return {
    BackupName: b.Name,
    BackupURL: encodeBackupURL({ backup: b.Name, volume: v.Name, destURL }),
    DriverName: v.Driver,
    VolumeName: b.VolumeName,
    VolumeSize: String(v.Size),
    VolumeCreatedAt: v.CreatedTime,
    SnapshotName: b.SnapshotName,
    SnapshotCreatedAt: b.SnapshotCreatedAt,
    CreatedTime: b.CreatedTime,
  };
}

/** The field of a `backup list` entry that reports a record which cannot be read. */
export const LIST_ERROR_FIELD = "Error";

/**
 * The `backup list` entry of a backup whose record cannot be read: the names known from its path
 * and the volume record, and `Error` (all strings, like BackupInfo).
 */
export function unreadableInfo(
  destURL: string,
  rec: { volume: VolumeRecord; backup: string; error: string },
): StringMap {
  return {
    BackupName: rec.backup,
    BackupURL: encodeBackupURL({ backup: rec.backup, volume: rec.volume.Name, destURL }),
    DriverName: rec.volume.Driver,
    VolumeName: rec.volume.Name,
    [LIST_ERROR_FIELD]: rec.error,
  };
}

/** The volume's folder, or undefined when the name cannot be stored. */
function folderOf(name: string): string | undefined {
  try {
    return volumeDir(name);
  } catch {
    return undefined;
  }
}

/**
 * The volume records found by walking `volumes/*\/*\/*`. A folder without a readable volume.cfg,
 * or whose volume.cfg names a volume stored elsewhere, is logged and skipped. Store failures
 * (other than a missing object) are thrown.
 */
export async function walkVolumes(store: ObjectStore, log: Logger): Promise<VolumeRecord[]> {
  const out: VolumeRecord[] = [];
  for (const l1 of await store.list(VOLUMES_DIR)) {
    for (const l2 of await store.list(`${VOLUMES_DIR}/${l1}`)) {
      for (const dir of await store.list(`${VOLUMES_DIR}/${l1}/${l2}`)) {
        const folder = `${VOLUMES_DIR}/${l1}/${l2}/${dir}`;
        const key = `${folder}/${VOLUME_CONFIG_FILE}`;
        const data = await readIfExists(store, key);
        if (!data) {
          log.warn("Skipping backup store folder without volume.cfg", { store: store.url, folder });
          continue;
        }
        let v: VolumeRecord;
        try {
          v = parseVolumeRecord(data, `${store.url}/${key}`);
          if (folderOf(v.Name) !== folder) {
            log.warn("Skipping volume.cfg that names a volume stored elsewhere", {
              store: store.url,
              folder,
              name: v.Name,
            });
            continue;
          }
        } catch (err) {
          if (!(err instanceof RecordParseError)) throw err;
          log.warn("Skipping unreadable volume.cfg", {
            store: store.url,
            folder,
            error: err.message,
          });
          continue;
        }
        out.push(v);
      }
    }
  }
  return out;
}

/**
 * The BackupInfo maps of every backup of `volume`, keyed by backup URL. An unreadable record is
 * listed as `{"BackupName","BackupURL","DriverName","VolumeName","Error"}` (see unreadableInfo)
 * and logged; misnamed records are logged and skipped; a record deleted meanwhile is ignored.
 */
export async function volumeBackupInfos(
  store: ObjectStore,
  volume: VolumeRecord,
  log: Logger,
): Promise<Record<string, StringMap>> {
  const out: Record<string, StringMap> = {};
  for (const name of await listBackupNames(store, volume.Name)) {
    let b: BackupRecord | undefined;
    try {
      b = await loadBackupRecord(store, { volume: volume.Name, backup: name });
    } catch (err) {
      if (!(err instanceof RecordParseError)) throw err;
      log.warn("Listing unreadable backup record with an Error", {
        store: store.url,
        volume: volume.Name,
        backup: name,
        error: err.message,
      });
      const info = unreadableInfo(store.url, { volume, backup: name, error: err.message });
      out[info.BackupURL] = info;
      continue;
    }
    if (!b) continue;
    if (b.Name !== name || b.VolumeName !== volume.Name) {
      log.warn("Skipping backup record whose names do not match its path", {
        store: store.url,
        volume: volume.Name,
        backup: name,
      });
      continue;
    }
    const info = backupInfo(store.url, { volume, backup: b });
    out[info.BackupURL] = info;
  }
  return out;
}

/** The URL naming `ref` in `store` (for messages and results). */
export function backupURLOf(store: ObjectStore, ref: { volume: string; backup: string }): string {
  return encodeBackupURL({ ...ref, destURL: store.url });
}

/** The backup record of `ref`; NotFoundError naming the backup URL when there is none. */
export async function requireBackupRecord(
  store: ObjectStore,
  ref: { volume: string; backup: string },
  opts: { action: string; url?: string },
): Promise<BackupRecord> {
  const url = opts.url ?? backupURLOf(store, ref);
  const rec = await loadBackupRecord(store, ref);
  if (!rec) {
    throw new NotFoundError(
      `Cannot ${opts.action} backup "${url}": backup record "${
        backupConfigPath(ref.volume, ref.backup)
      }" does not exist`,
    );
  }
  if (opts.action === "restore" || opts.action === "verify") {
    checkBackupRecord(store, rec, { ...ref, url, action: opts.action });
  }
  return rec;
}
