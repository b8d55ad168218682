/**
 * The driver contract, after Convoy's convoydriver package: the same interfaces and method
 * names in camelCase, the same arguments, string maps at the boundary.
 * @module
 */

/** A value or a promise of it: every driver method may answer either way. */
export type Awaitable<T> = T | Promise<T>;
/** Options and info maps stay string maps on the wire, as in Convoy. */
export type StringMap = Record<string, string>;

/** Per-call context for long operations. */
export interface OperationContext {
  /** Aborts the operation; the driver stops and throws a CancelledError. */
  signal?: AbortSignal;
  /** Called with progress as the operation advances. */
  progress?: (p: Progress) => void;
}

/** Progress of a long operation. */
export interface Progress {
  done: number;
  total: number;
  bytes: number;
}

/**
 * A driver instance. `volumeOps()` is required; `snapshotOps()` and `backupOps()` throw a
 * NotSupportedError when the driver does not offer them.
 */
export interface ConvoyDriver {
  name(): string;
  info(): Awaitable<StringMap>;
  volumeOps(): Awaitable<VolumeOperations>;
  snapshotOps(): Awaitable<SnapshotOperations>;
  backupOps(): Awaitable<BackupOperations>;
  /** Optional: release resources when the daemon stops. Volumes stay mounted. */
  shutdown?(): Awaitable<void>;
  /** Optional: what the driver declares about its volumes. */
  capabilities?: DriverCapabilities;
}

/** What a driver declares about its volumes; every field is optional. */
export interface DriverCapabilities {
  /**
   * Docker's Remove only forgets a volume and keeps its data (a reference-only delete), as
   * Convoy v0.5.2 did for vfs (a folder other hosts may share) and ebs (a cloud volume).
   */
  dockerRemoveKeepsData?: boolean;
}

/** Volume operations; every driver implements them. */
export interface VolumeOperations {
  name(): string;
  /**
   * Creates volume `id`; with `opts[OPT_BACKUP_URL]` it restores that backup into it, reporting
   * to `ctx.progress` and stopping with a CancelledError once `ctx.signal` aborts. A failed or
   * cancelled create leaves nothing behind (no record, image, device or folder).
   */
  createVolume(id: string, opts: StringMap, ctx?: OperationContext): Awaitable<void>;
  /** Deletes volume `id`; with `opts[OPT_REFERENCE_ONLY] === "true"` the data is kept. Throws ConflictError while mounted. */
  deleteVolume(id: string, opts: StringMap): Awaitable<void>;
  /** Mounts volume `id` (at `opts[OPT_MOUNT_POINT]` when given) and resolves to the mount point. */
  mountVolume(id: string, opts: StringMap): Awaitable<string>;
  umountVolume(id: string): Awaitable<void>;
  /** The current mount point, or "" when not mounted. */
  mountPoint(id: string): Awaitable<string>;
  /** Throws NotFoundError when the volume does not exist. */
  getVolumeInfo(id: string): Awaitable<StringMap>;
  /** Every volume of this driver, keyed by name. */
  listVolume(opts: StringMap): Awaitable<Record<string, StringMap>>;
}

/** Snapshot operations, optional. */
export interface SnapshotOperations {
  name(): string;
  createSnapshot(id: string, volumeID: string): Awaitable<void>;
  deleteSnapshot(id: string, volumeID: string): Awaitable<void>;
  /** Throws NotFoundError when the snapshot does not exist. */
  getSnapshotInfo(id: string, volumeID: string): Awaitable<StringMap>;
  /** Snapshots keyed by name; `opts[OPT_VOLUME_NAME]` restricts them to one volume. */
  listSnapshot(opts: StringMap): Awaitable<Record<string, StringMap>>;
}

/**
 * Backup operations, optional. Restore is `createVolume` with `opts[OPT_BACKUP_URL]`.
 * `opts[OPT_ENDPOINT_URL]` carries a custom S3 endpoint.
 */
export interface BackupOperations {
  name(): string;
  /** Backs up snapshot `snapshotID` of `volumeID` to `destURL`; resolves to the backup URL. */
  createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Awaitable<string>;
  deleteBackup(backupURL: string, opts?: StringMap): Awaitable<void>;
  getBackupInfo(backupURL: string, opts?: StringMap): Awaitable<StringMap>;
  /** Backups in `destURL` made by this driver, keyed by backup URL. `opts[OPT_VOLUME_NAME]` filters. */
  listBackup(destURL: string, opts: StringMap): Awaitable<Record<string, StringMap>>;
}

/** Creates a driver. `root` is the driver's own folder under the daemon root; `config` is `--driver-opts`. */
export type InitFunc = (root: string, config: StringMap) => Promise<ConvoyDriver>;

/** A byte range of a snapshot, in bytes. */
export interface Mapping {
  offset: number;
  size: number;
}

/** The ranges that differ between two snapshots, and the block size they are aligned to. */
export interface Mappings {
  mappings: Mapping[];
  blockSize: number;
}

/**
 * A comparison's answer when the driver cannot tell which ranges differ cheaply (a loop image on
 * a filesystem without reflinks, a device without change tracking).
 */
export type UnknownChanges = "unknown";

/** What the delta-block backup engine needs from a block driver (Convoy's DeltaBlockBackupOperations). */
export interface DeltaBlockOperations {
  hasSnapshot(id: string, volumeID: string): Awaitable<boolean>;
  /**
   * Ranges of `id` that differ from `compareID`; with an empty `compareID`, every allocated range
   * (never "unknown": all of the volume when the driver cannot tell holes apart). With a
   * `compareID`, "unknown" when the driver cannot say what changed without reading both: the
   * engine then reads every allocated range of `id` once and compares each block's checksum
   * with the previous backup's block map, storing only the blocks that differ.
   */
  compareSnapshot(
    id: string,
    compareID: string,
    volumeID: string,
  ): Awaitable<Mappings | UnknownChanges>;
  openSnapshot(id: string, volumeID: string): Awaitable<void>;
  /** Fills `data` with the snapshot's bytes starting at `start`. */
  readSnapshot(id: string, volumeID: string, start: number, data: Uint8Array): Awaitable<void>;
  /**
   * Optional, called after openSnapshot: a regular file or block device holding the open
   * snapshot's bytes at their volume offsets (past its end reads as zeros), which the engine then
   * reads itself, with direct I/O on its worker threads, instead of calling readSnapshot. It is
   * closed before closeSnapshot. Undefined: readSnapshot serves.
   */
  snapshotFile?(id: string, volumeID: string): Awaitable<string | undefined>;
  closeSnapshot(id: string, volumeID: string): Awaitable<void>;
}
