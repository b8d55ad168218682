/**
 * Convoy's on-store layout (v0.5.2), as pure functions returning store keys relative to the
 * store URL's path. Golden-tested: old backups must stay readable.
 *
 * ```
 * convoy-objectstore/volumes/<n[0:2]>/<n[2:4]>/<n>/   n = name right-padded with "!" to 4 chars
 *   volume.cfg
 *   backups/backup_<backup>.cfg
 *   blocks/<c[0:2]>/<c[2:4]>/<c>.blk                  c = 64-hex block checksum
 *   BackupFiles/<backup>.bak
 * ```
 * @module
 */
import { InvalidArgumentError } from "../api/errors.ts";
import { validateName } from "../util/names.ts";

export const OBJECTSTORE_BASE = "convoy-objectstore";
/** The folder holding every volume folder, three levels down. */
export const VOLUMES_DIR = `${OBJECTSTORE_BASE}/volumes`;
export const VOLUME_CONFIG_FILE = "volume.cfg";
export const BACKUPS_DIR = "backups";
export const BLOCKS_DIR = "blocks";
export const BACKUP_FILES_DIR = "BackupFiles";

const BACKUP_CONFIG = /^backup_(.+)\.cfg$/;
const CHECKSUM = /^[0-9a-f]{64}$/;

/** `name` right-padded with "!" to at least 4 characters ("ab" → "ab!!"). */
export function paddedName(name: string): string {
  return name.padEnd(4, "!");
}

/** The volume's folder: `convoy-objectstore/volumes/vo/l1/vol1`, `…/ab/!!/ab!!`. */
export function volumeDir(volume: string): string {
  const n = paddedName(validateName(volume, "volume"));
  if (n.slice(2, 4) === "..") {
    // Convoy's filepath.Join would fold ".." away and store the volume outside the 3-level walk.
    throw new InvalidArgumentError(
      `Cannot back up volume "${volume}": characters 3 and 4 of the name must not be ".."`,
    );
  }
  return `${VOLUMES_DIR}/${n.slice(0, 2)}/${n.slice(2, 4)}/${n}`;
}

/** `<volumeDir>/volume.cfg`. */
export function volumeConfigPath(volume: string): string {
  return `${volumeDir(volume)}/${VOLUME_CONFIG_FILE}`;
}

/** `<volumeDir>/backups`. */
export function backupsDir(volume: string): string {
  return `${volumeDir(volume)}/${BACKUPS_DIR}`;
}

/** The file name of a backup record: `backup_<backup>.cfg`. */
export function backupConfigName(backup: string): string {
  return `backup_${validateName(backup, "backup")}.cfg`;
}

/** The backup name in a backup record's file name, or undefined for any other file. */
export function parseBackupConfigName(fileName: string): string | undefined {
  return BACKUP_CONFIG.exec(fileName)?.[1];
}

/** `<volumeDir>/backups/backup_<backup>.cfg`. */
export function backupConfigPath(volume: string, backup: string): string {
  return `${backupsDir(volume)}/${backupConfigName(backup)}`;
}

/** `<volumeDir>/blocks/<c0c1>/<c2c3>/<c>.blk`; `checksum` must be 64 lowercase hex digits. */
export function blockPath(volume: string, checksum: string): string {
  if (!CHECKSUM.test(checksum)) {
    throw new InvalidArgumentError(
      `Invalid block checksum "${checksum}": must be 64 lowercase hex digits`,
    );
  }
  return `${volumeDir(volume)}/${BLOCKS_DIR}/${checksum.slice(0, 2)}/${
    checksum.slice(2, 4)
  }/${checksum}.blk`;
}

/** `<volumeDir>/BackupFiles/<backup>.bak`: the archive of a single-file backup. */
export function singleFilePath(volume: string, backup: string): string {
  return `${volumeDir(volume)}/${BACKUP_FILES_DIR}/${validateName(backup, "backup")}.bak`;
}
