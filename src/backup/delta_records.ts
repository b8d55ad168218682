/**
 * The records of a delta-block backup as the engine reads them: our additions to Convoy's
 * volume.cfg and backup_<name>.cfg, the checksum algorithm and volume size they name, and
 * loadDelta (both records of a backup, with errors naming its URL).
 * @module
 */
import { InvalidArgumentError, NotFoundError } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import { loadVolumeRecord, requireBackupRecord } from "./catalog.ts";
import type { ChecksumAlgorithm, Compression } from "./codec.ts";
import type { BackupRecord, VolumeRecord } from "./records.ts";

/** Our additions to volume.cfg (Convoy ignores unknown fields). */
export interface VolumeExtra {
  BlockCompression?: Compression;
  ChecksumAlgorithm?: ChecksumAlgorithm;
}
/** Our additions to backup_<name>.cfg. */
export interface BackupExtra {
  VolumeUUID?: string;
  VolumeSize?: number;
  VolumeCreatedAt?: string;
  ChecksumAlgorithm?: ChecksumAlgorithm;
}

/** The checksum algorithm of a volume's or backup's blocks: sha512 unless the record says sha256. */
export function checksumOf(v: VolumeRecord | BackupRecord): ChecksumAlgorithm {
  return (v as VolumeExtra).ChecksumAlgorithm === "sha256" ? "sha256" : "sha512";
}

/** Loads a delta-block backup's records; NotFoundError naming the URL when missing. */
export async function loadDelta(
  store: ObjectStore,
  ref: { volume: string; backup: string; url: string; action: string },
): Promise<{ volume: VolumeRecord; backup: BackupRecord }> {
  const backup = await requireBackupRecord(store, ref, { action: ref.action, url: ref.url });
  const volume = await loadVolumeRecord(store, ref.volume);
  if (!volume) {
    throw new NotFoundError(
      `Cannot ${ref.action} backup "${ref.url}": the volume has no volume.cfg in the store`,
    );
  }
  if (backup.SingleFile.FilePath !== "") {
    throw new InvalidArgumentError(
      `Cannot ${ref.action} backup "${ref.url}": it is a single-file backup, not a block backup`,
    );
  }
  return { volume, backup };
}

/** The size of the volume a backup was taken of. */
export function backupSize(volume: VolumeRecord, backup: BackupRecord): number {
  return (backup as BackupExtra).VolumeSize ?? volume.Size;
}
