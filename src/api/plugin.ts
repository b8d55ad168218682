/**
 * What the host hands a plugin's `setup(api)`. Plugins use `import type` only and take every
 * runtime value (register, zod, exec, errors, backup store helpers) from `api`, so the same file
 * loads under deno run, Node and the single binaries.
 * @module
 */
import type { z } from "zod";
import type {
  Awaitable,
  BackupOperations,
  ConvoyDriver,
  DeltaBlockOperations,
  InitFunc,
  OperationContext,
  SnapshotOperations,
  StringMap,
  VolumeOperations,
} from "./driver.ts";
import type * as errors from "./errors.ts";
import type { AwsSdkDeps } from "./aws.ts";
import type { BlockDeviceInit } from "./block.ts";
import type { Exec, LogFields, Logger, MountEntry, OptionSchemas, ReadableFile } from "./host.ts";

export type {
  Exec,
  ExecOptions,
  ExecResult,
  LogFields,
  Logger,
  MountEntry,
  OptionSchemas,
  ReadableFile,
} from "./host.ts";

/** The plugin API version this host implements. */
export const PLUGIN_API_VERSION = 1;

/** The volume record kept in a backup store (volume.cfg). */
export interface BackupVolume {
  name: string;
  driver: string;
  /** Bytes; 0 for file-level (vfs) volumes. */
  size: number;
  createdTime: string;
  /**
   * A stable identity of this volume (e.g. a UUID made at create). Incremental backups only
   * build on earlier backups with the same identity, so two volumes that share a name (other
   * hosts, or a re-created volume) never merge each other's blocks.
   */
  uuid?: string;
  /** "delta-block" (a block volume's image) or "single-file" (an archive, e.g. vfs). */
  format?: "delta-block" | "single-file";
}

/** Options of `api.backup.createDeltaBackup`. */
export interface DeltaBackupOptions extends OperationContext {
  volume: BackupVolume;
  snapshot: { name: string; createdTime: string };
  destURL: string;
  endpoint?: string;
  /** Block compression for a new store: "gzip" (readable by Convoy v0.5.2) or "zstd". */
  compression?: string;
}

/** Options of `api.backup.restoreDeltaBackup`. */
export interface DeltaRestoreOptions extends BackupTargetOptions {
  /** Bytes of the target to keep; a regular-file target is truncated to the volume size. */
  truncate?: boolean;
}

/** What `verifyBackup` found. */
export interface VerifyReport {
  backupURL: string;
  blocks: number;
  checked: number;
  bytes: number;
  /** One line per missing or corrupt block; empty when the backup is sound. */
  problems: string[];
}

/** What `api.backup.queries` returns: three BackupOperations of a driver. */
export type BackupQueries = Pick<BackupOperations, "deleteBackup" | "getBackupInfo" | "listBackup">;

/** Options of the backup helpers that address an existing backup. */
export interface BackupTargetOptions extends OperationContext {
  endpoint?: string;
}

/** Options of `api.backup.createSingleFileBackup`. */
export interface SingleFileBackupOptions extends OperationContext {
  volume: BackupVolume;
  snapshot: { name: string; createdTime: string };
  destURL: string;
  endpoint?: string;
}

/**
 * Backup store helpers (Convoy's objectstore package): the host owns the stores (vfs://, s3://),
 * their layout and URL format; drivers call these from their BackupOperations.
 */
export interface BackupStoreApi {
  /**
   * Uploads `file` (a local archive) as a single-file backup of `opts.volume`, writes the backup
   * record, then the volume record, and resolves to the backup URL.
   */
  createSingleFileBackup(file: string, opts: SingleFileBackupOptions): Promise<string>;
  /** Downloads the archive of a single-file backup into `targetFile`. */
  restoreSingleFileBackup(
    backupURL: string,
    targetFile: string,
    opts?: BackupTargetOptions,
  ): Promise<void>;
  /** The volume record of the backup's volume; throws NotFoundError when the backup does not exist. */
  getBackupVolume(backupURL: string, opts?: BackupTargetOptions): Promise<BackupVolume>;
  /**
   * Backs up snapshot `opts.snapshot` of a block volume in Convoy's delta-block format: only
   * the ranges `ops.compareSnapshot` reports changed since the volume's last backup are read
   * (when it answers "unknown": every allocated range, and only blocks the last backup's map
   * lacks are stored); blocks are deduplicated, all-zero blocks are not stored. Resolves to the
   * backup URL.
   */
  createDeltaBackup(ops: DeltaBlockOperations, opts: DeltaBackupOptions): Promise<string>;
  /** Writes every block of a delta-block backup into `target` (a file or block device), verifying checksums. */
  restoreDeltaBackup(backupURL: string, target: string, opts?: DeltaRestoreOptions): Promise<void>;
  /** Checks that every block (or a `sample` fraction) of a backup is present and sound. */
  verifyBackup(
    backupURL: string,
    opts?: BackupTargetOptions & { sample?: number },
  ): Promise<VerifyReport>;
  /** Deletes one backup, and the volume's folder in the store when it was the last. */
  deleteBackup(backupURL: string, opts?: BackupTargetOptions): Promise<void>;
  /** Convoy's BackupInfo map of one backup. */
  getBackupInfo(backupURL: string, opts?: BackupTargetOptions): Promise<StringMap>;
  /** BackupInfo maps keyed by backup URL, for volumes recorded with `opts.driver`. */
  listBackup(
    destURL: string,
    opts: { driver: string; volumeName?: string; endpoint?: string },
  ): Promise<Record<string, StringMap>>;
  /**
   * A driver's deleteBackup, getBackupInfo and listBackup, from their string options
   * (OPT_ENDPOINT_URL, OPT_VOLUME_NAME): it deletes only backups made by `driver`, inspects
   * those of `driver` and of the drivers in `opts.readable` (with `opts.blocks`, every
   * delta-block backup), and lists those of `driver`.
   */
  queries(driver: string, opts?: { readable?: string[]; blocks?: boolean }): BackupQueries;
}

/** Small helpers shared with drivers. */
export interface PluginUtil {
  /** Bytes from "10G", "512M", "1048576"; throws InvalidArgumentError. */
  parseSize(input: string): number;
  /** Throws InvalidArgumentError unless `name` follows the name rule. */
  validateName(name: unknown, kind: string): string;
  /** Go RubyDate in local time, as every Convoy CreatedTime. */
  now(): string;
  /** Go RubyDate of `at`, in local time or UTC (`opts.utc`, as Convoy prints AWS's times). */
  formatTime(at: Date, opts?: { utc?: boolean }): string;
  /** Atomic JSON write: temp file, fsync, rename. */
  writeJSON(path: string, value: unknown): Promise<void>;
  /** Parsed JSON, or undefined when the file does not exist. */
  readJSON<T = unknown>(path: string): Promise<T | undefined>;
  /**
   * Parses a driver's string options with a zod schema; throws InvalidArgumentError naming
   * every bad key.
   */
  parseOptions<S extends z.ZodType>(schema: S, raw: StringMap, what: string): z.output<S>;
  /** Zod schemas of option strings, built with `api.deps.z`. */
  schemas: OptionSchemas;
  /** Creates `path` and its missing parents with mode 0755, whatever the umask. */
  ensureDir(path: string): Promise<void>;
  /** A new per-key async mutex. */
  createLock(): KeyedLock;
  /** Mount lookups, by exact path, in the namespace volumes are mounted in (`--mnt-ns`). */
  mounts: PluginMounts;
  /** The filesystem on a block device or image: mkfs, detect, mount, umount. */
  filesystems: BlockFilesystems;
  /** Loads a driver's saved configuration, or makes and saves it on the first start. */
  loadDriverConfig<O extends z.ZodType, S extends z.ZodType, C>(
    spec: DriverConfigSpec<O, S, C>,
  ): Promise<C>;
  /**
   * A ConvoyDriver named `name` whose volume, snapshot and backup operations call the methods
   * of `impl` (with `impl` as `this`), and whose `info()` is `info`.
   */
  convoyDriver(name: string, impl: DriverMethods, info: () => Awaitable<StringMap>): ConvoyDriver;
  /**
   * The mount point a mountVolume request asks for (OPT_MOUNT_POINT), resolved, or "" when it
   * names none; InvalidArgumentError when it is not an absolute path.
   */
  requestedMountPoint(opts: StringMap | undefined, volume: string): string;
  /** JSON records of a driver's volumes, one file each, validated on every read. */
  createRecordStore<S extends z.ZodType>(spec: RecordStoreSpec<S>): RecordStore<z.output<S>>;
  /** The `code` of a Node error ("ENOENT"), or undefined. */
  errno(err: unknown): string | undefined;
  /** 12 random hex digits, for the names of temporary files. */
  randomId(): string;
  /** Fills `at.buf` from byte `at.pos` of `fh` (zeros past the end); resolves to the bytes read. */
  readFull(fh: ReadableFile, at: { buf: Uint8Array; pos: number }): Promise<number>;
}

/** What `api.util.createRecordStore` needs. */
export interface RecordStoreSpec<S extends z.ZodType> {
  /** The folder of the record files. */
  dir: string;
  /** A record's file is `<dir>/<prefix><name>.json`. */
  prefix: string;
  /** Validates a record read from disk; a bad one is a BackendError naming the file. */
  schema: S;
  /** The record field that must equal the name its file carries (e.g. "Name"), if any. */
  nameField?: string;
  /** What the records describe, in messages: "volume" gives `Cannot read volume "db1": ...`. */
  kind: string;
  /** Where `list()` reports the files it skips. */
  log: Logger;
}

/** A driver's records (`api.util.createRecordStore`). Names are validated by the caller. */
export interface RecordStore<T> {
  /** The file of `name`'s record. */
  file(name: string): string;
  /** The record, or undefined when there is none; BackendError naming the file when bad. */
  read(name: string): Promise<T | undefined>;
  /** The record; NotFoundError `Cannot <what> "<name>": <kind> does not exist` when there is none. */
  must(name: string, what: string): Promise<T>;
  /** Writes `value` (already in its saved shape) atomically. */
  write(name: string, value: unknown): Promise<void>;
  /** Removes the record durably (the directory is fsynced); a missing one is fine. */
  remove(name: string): Promise<void>;
  /** The names of every record file, readable or not. */
  names(): Promise<string[]>;
  /** Every readable record, by name; files that are not valid records are logged and skipped. */
  list(): Promise<Array<{ name: string; record: T }>>;
  /**
   * `list()` when `name` is empty or undefined, else only `name`'s record: the name validated
   * (InvalidArgumentError) and the record required as by `must(name, what)`.
   */
  select(name: string | undefined, what: string): Promise<Array<{ name: string; record: T }>>;
}

/** A driver's operations as methods of one object, for `api.util.convoyDriver`. */
export type DriverMethods =
  & Omit<VolumeOperations, "name">
  & Omit<SnapshotOperations, "name">
  & Omit<BackupOperations, "name">;

/** A per-key async mutex (`api.util.createLock()`). */
export interface KeyedLock {
  /** Runs `fn` once every earlier `run` with the same key has settled; other keys run freely. */
  run<T>(key: string, fn: () => Promise<T>): Promise<T>;
}

/** `api.util.filesystems`: the same commands and rules for every block driver. */
export interface BlockFilesystems {
  /**
   * `mkfs.<fs>` on `target`, quiet and forced. `discard: false` skips discarding the device
   * first (thin devices: it would only cost time).
   */
  mkfs(target: string, fs: string, opts?: { discard?: boolean; timeoutMs?: number }): Promise<void>;
  /** The filesystem type on a device or image (`blkid -p`), "" when none is recognised. */
  detect(target: string): Promise<string>;
  /** Mounts `device` at `mountPoint` (created 0755 if missing); xfs with `nouuid`. */
  mount(device: string, mountPoint: string, opts?: { fs?: string }): Promise<void>;
  /**
   * Unmounts `mountPoint`; one not mounted is fine. A busy one is a ConflictError:
   * `Cannot unmount volume "<volume>" from "<mountPoint>": the mount point is busy`.
   */
  umount(mountPoint: string, opts: { volume: string }): Promise<void>;
}

/**
 * `api.util.mounts`: reads, on every call, the mount table of the namespace volumes are mounted
 * in: /proc/self/mountinfo, or that of the daemon's `--mnt-ns`.
 */
export interface PluginMounts {
  /** Every entry of the table, in mountinfo order (stacked mounts: the topmost last). */
  list(): Promise<MountEntry[]>;
  /** The entry mounted at exactly `path` (symlinks resolved; the topmost when stacked), or undefined. */
  mountAt(path: string): Promise<MountEntry | undefined>;
  /** Every mount point of `device` (e.g. "/dev/loop3"); none for "". */
  mountsOf(device: string): Promise<string[]>;
  /** True when `path` (symlinks resolved) is a mount point. */
  isMountPoint(path: string): Promise<boolean>;
  /** `path` with symlinks resolved, as mountinfo lists mount points (just resolved when missing). */
  canonicalPath(path: string): Promise<string>;
  /** The entries of a mountinfo text. */
  parseMountInfo(text: string): MountEntry[];
}

/**
 * What `api.util.loadDriverConfig` needs. The first start validates `options` with `schema`,
 * saves `create`'s result as JSON in `file` and logs it; later starts validate the file with
 * `savedSchema` (InvalidArgumentError when bad), take `load`'s result, warn about each option
 * that `current` says disagrees with it (the option is ignored), and save it again when asked.
 */
export interface DriverConfigSpec<O extends z.ZodType, S extends z.ZodType, C> {
  /** The driver's name, in messages. */
  driver: string;
  /** The saved configuration, e.g. `<root>/<driver>.cfg`. */
  file: string;
  /** `--driver-opts`. */
  options: StringMap | undefined;
  /** Validates `options` on the first start. */
  schema: O;
  /** Validates the saved file. */
  savedSchema: S;
  /** The configuration of the first start. */
  create(options: z.output<O>): Awaitable<C>;
  /** The configuration from the saved file; `save: true` writes it back (upgraded, moved). */
  load(saved: z.output<S>): Awaitable<LoadedConfig<C>>;
  /** Per option key: what `config` uses (as the warning shows it), and whether a value agrees. */
  current(config: C): Record<string, { uses: string; same(value: string): boolean }>;
  /** Fields of the "Saved <driver> configuration" log line. */
  logFields(config: C): LogFields;
  log: Logger;
}

/** What `DriverConfigSpec.load` returns. */
export interface LoadedConfig<C> {
  config: C;
  save: boolean;
}

/** The object passed to a plugin's default export. */
export interface PluginApi {
  apiVersion: number;
  /** Records a driver. A second registration of a name is an error. */
  register(name: string, init: InitFunc): void;
  /**
   * Records a block device adapter (src/api/block.ts): the host makes it a driver with
   * records, mounts, snapshots, backups and restores. Names share one namespace with `register`.
   */
  registerBlockDevice(name: string, init: BlockDeviceInit): void;
  log: Logger;
  /** Libraries: zod, and the AWS SDK (imported on first use). */
  deps: { z: typeof z; aws: AwsSdkDeps };
  /**
   * Runs a command with the daemon's `--cmd-timeout`. With `--mnt-ns`, the mount-point commands
   * (mount, umount, mkdir, stat, truncate, mknod, rm, fsfreeze) run in that namespace, through
   * nsenter; every other command, and the plugin's own file calls, in the daemon's.
   */
  exec: Exec;
  errors: typeof errors;
  util: PluginUtil;
  backup: BackupStoreApi;
}

/** The shape of a plugin module's default export. */
export type PluginSetup = (api: PluginApi) => void | Promise<void>;
