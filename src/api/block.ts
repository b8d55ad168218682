/**
 * The block-volume framework's contract: what a block device adapter supplies. The host owns
 * everything that is the same for every block device (records, mkfs, mount and unmount at
 * default or custom mount points, fsfreeze around snapshots, snapshot bookkeeping, backups with
 * the delta-block engine, restores from any block adapter's backups, option parsing, Convoy's
 * string maps toward the daemon); an adapter supplies only what is specific to its devices.
 *
 * A plugin registers an adapter as easily as a full driver:
 *
 * ```ts
 * export default function setup(api: PluginApi) {
 *   api.registerBlockDevice("mydev", async (ctx) => ({ ...adapter methods... }));
 * }
 * ```
 *
 * Records: the host keeps one JSON record per volume, `<root>/state/<volume>.json` (or where
 * `records` says), with the common fields (Name, UUID, Size, Filesystem, CreatedTime, Device,
 * MountPoint, Snapshots) and the adapter's own fields (`fields`, validated with `volumeFields`)
 * beside them at the top level; each snapshot likewise (Name, CreatedTime, Size, and
 * `snapshotFields`). Records that lack UUID, Device, Filesystem or a snapshot's Size (Convoy's
 * devicemapper records) are read with defaults and completed.
 * @module
 */
import type { z } from "zod";
import type { Awaitable, Mapping, OperationContext, StringMap } from "./driver.ts";
import type { Exec, Logger, MountEntry } from "./host.ts";

/** Fields an adapter keeps about a volume or a snapshot (saved as JSON in the host's record). */
export type AdapterFields = Record<string, unknown>;

/** A volume as the host hands it to its adapter. */
export interface BlockVolume<V extends AdapterFields = AdapterFields> {
  name: string;
  /** A stable identity made at create (backups only build on backups of the same identity). */
  uuid: string;
  /** Bytes. */
  size: number;
  /** The filesystem on the device; "" when unknown (mount detects it). */
  filesystem: string;
  /** Go RubyDate. */
  createdTime: string;
  /** The device path of the last activation; "" when never activated. */
  device: string;
  /** "" when not mounted. */
  mountPoint: string;
  /** The adapter's own fields. */
  fields: V;
}

/** A snapshot as the host hands it to its adapter. */
export interface BlockSnapshot<S extends AdapterFields = AdapterFields> {
  name: string;
  createdTime: string;
  /** Bytes: the volume's size when the snapshot was taken. */
  size: number;
  fields: S;
}

/**
 * How the host reads a snapshot's bytes for a backup. `file` and `device` hold the bytes at
 * their volume offsets (past the end reads as zeros) and are read by the engine with direct I/O;
 * `reader` serves a snapshot with no local file or device (e.g. an EBS snapshot through the EBS
 * direct API). `close` (optional) runs once the backup is done with it, success or not.
 */
export type SnapshotSource =
  & (
    | { kind: "file"; path: string }
    | { kind: "device"; path: string }
    | {
      kind: "reader";
      /**
       * Fills `data` with the snapshot's bytes from `offset` (zeros where it holds none).
       * Calls may run concurrently; `offset` is a multiple of 2 MiB and `data` at most 2 MiB.
       */
      read(offset: number, data: Uint8Array, ctx?: { signal?: AbortSignal }): Promise<void>;
    }
  )
  & { close?(): Promise<void> };

/**
 * What changed between two snapshots: byte ranges (aligned to `blockSize`), or "unknown" when the
 * adapter cannot say (the host then compares the snapshot with the previous backup's block map).
 */
export type ChangedRanges = { mappings: Mapping[]; blockSize: number } | "unknown";

/** What an adapter declares about its devices; every field is optional. */
export interface BlockCapabilities {
  /**
   * The host freezes a mounted volume's filesystem (fsfreeze) around `createSnapshot`.
   * Default true; false for adapters whose snapshot is crash-consistent by itself or remote.
   */
  freezeForSnapshot?: boolean;
  /** Docker's Remove keeps the volume's data (a reference-only delete). Default false. */
  dockerRemoveKeepsData?: boolean;
  /** The filesystem made on new devices. Default "ext4". */
  filesystem?: string;
  /** mkfs discards the device first. Default true; false for thin devices. */
  discardOnMkfs?: boolean;
  /** Sizes are rounded up to a multiple of this many bytes (default 1: no rounding). */
  sizeAlignment?: number;
  /** The size of a volume created without one, in bytes. */
  defaultSize?: number;
}

/** What `createDevice` is asked to make. */
export interface CreateDeviceRequest<O> {
  name: string;
  /** Bytes, rounded to `sizeAlignment`; the default size when none was asked for. */
  size: number;
  /** True when the caller asked for this size (false: `size` is the default). */
  sizeRequested: boolean;
  /** The volume's options parsed with the adapter's `volumeOptions` (undefined without one). */
  options: O;
  /**
   * Set when the volume is made from a backup. `native`: a backup of this adapter's own kind
   * (a URL with one of `nativeBackups.schemes`) that `createDevice` itself turns into the
   * device; otherwise the host writes the backup (a delta-block backup, or another block
   * driver's native backup through its `NativeBackups.open`) into the staging file or device.
   */
  restore?: { url: string; native: boolean };
  signal?: AbortSignal;
}

/** What `createDevice` made. */
export interface CreatedDevice<V extends AdapterFields, S extends AdapterFields = AdapterFields> {
  fields: V;
  /** The device's size in bytes (it may differ from the request, e.g. an adopted device). */
  size: number;
  /**
   * True when the device existed before (kept by a reference-only delete, or an adopted cloud
   * volume): a failed create then calls `removeDevice` with `keepData: true`.
   */
  adopted?: boolean;
  /**
   * With `adopted`: the earlier volume whose device was adopted (kept by a reference-only
   * delete with its snapshots). The new record keeps its identity, so incremental backups go
   * on, and its snapshots.
   */
  previous?: { uuid: string; createdTime: string; snapshots: BlockSnapshot<S>[] };
  /**
   * A regular file of `size` bytes that the host fills before the device is activated (mkfs, or
   * the blocks of a restored backup), so that a crash meanwhile leaves no half-made device that
   * a later create could adopt: `commit` then puts it in place (e.g. a rename) and may give new
   * fields; `discard` removes it when the create fails. Without it the host writes to the device.
   */
  staging?: { path: string; commit(): Promise<V | void>; discard(): Promise<void> };
}

/** What `activate` gives: the device node, and fields to record when they changed. */
export interface ActiveDevice<V extends AdapterFields> {
  /** The device node, e.g. "/dev/loop3"; it is mounted and shown in messages. */
  path: string;
  /** New fields to record (e.g. an attachment id); undefined keeps them. */
  fields?: V;
}

/** The per-call context the host passes to adapter methods that may take long. */
export interface BlockCallContext extends OperationContext {
  log?: Logger;
}

/** A native backup opened by `NativeBackups.open`. */
export interface NativeBackupReader {
  /** Bytes of the volume it restores. */
  size: number;
  /** The byte ranges that may hold data; the rest reads as zeros and is not copied. */
  mappings: Mapping[];
  /** The bytes; its `close` runs once the restore is done with it, success or not. */
  source: SnapshotSource;
}

/**
 * An adapter's own backup kind (e.g. an EBS snapshot, `ebs://region/snap-id`), beside the
 * host's delta-block backups to vfs:// and s3:// stores. A backup whose destination has one of
 * `schemes` goes to `create`; delete, inspect and list of such URLs go to the others, and a
 * create from such a URL reaches `createDevice` with `restore.native`.
 */
export interface NativeBackups<V extends AdapterFields, S extends AdapterFields> {
  /** URL schemes, without ":" (e.g. ["ebs"]). */
  schemes: string[];
  /** Backs up `snapshot`; resolves to the backup URL. */
  create(
    volume: BlockVolume<V>,
    snapshot: BlockSnapshot<S>,
    dest: { url: string; ctx?: BlockCallContext },
  ): Promise<string>;
  /** The size in bytes of the volume a backup restores. */
  size(url: string): Promise<number>;
  /**
   * Opens a backup for a restore into a volume of another block driver (e.g. an EBS snapshot
   * into a loop volume): the host copies `mappings` from `source` into the new device. Without
   * it, such restores are refused.
   */
  open?(url: string, ctx?: BlockCallContext): Promise<NativeBackupReader>;
  delete(url: string): Promise<void>;
  /** Convoy's BackupInfo map. */
  inspect(url: string): Promise<StringMap>;
  /** BackupInfo maps keyed by URL; `volumeName` filters. */
  list(destURL: string, opts: { volumeName?: string }): Promise<Record<string, StringMap>>;
}

/**
 * A block device adapter. Every method runs under the host's per-volume lock; names are
 * validated by the host. Errors should be the API's typed errors; the host adds context
 * ("Cannot create volume "db1": ...").
 */
export interface BlockDeviceAdapter<
  V extends AdapterFields = AdapterFields,
  S extends AdapterFields = AdapterFields,
  O = unknown,
> {
  capabilities?: BlockCapabilities;
  /** Validates the adapter's fields of a volume record (read from disk on every use). */
  volumeFields: z.ZodType<V>;
  /** Validates the adapter's fields of a snapshot record. */
  snapshotFields: z.ZodType<S>;
  /**
   * Parses createVolume's string map (every key the daemon passes: Size, VolumeType,
   * VolumeIOPS, VolumeDriverID, ...) into the adapter's per-volume options. Without it, options
   * are undefined. A bad value is an InvalidArgumentError naming the key.
   */
  volumeOptions?: z.ZodType<O>;

  /**
   * Where the host keeps the records: `<root>/<dir>/<prefix><volume>.json`. Default: dir
   * "state", prefix "". For an adapter that keeps an existing layout (devicemapper: Convoy's
   * `<root>/devicemapper_volume_<volume>.json`, dir ".").
   */
  records?: { dir: string; prefix: string };

  /** Makes the device of a new volume (a new image, thin device, cloud volume...). */
  createDevice(req: CreateDeviceRequest<O>): Promise<CreatedDevice<V, S>>;
  /**
   * Called once the host has written the record of what `createDevice` or `createSnapshot`
   * made (`snapshot` set for a snapshot): an adapter that journals what it makes until a
   * record refers to it (devicemapper's thin ids) clears the journal here. Errors are logged.
   */
  recorded?(volume: BlockVolume<V>, snapshot?: BlockSnapshot<S>): Promise<void>;
  /**
   * Called before the host removes the record of a volume (`snapshots`: all of its snapshots)
   * or of one snapshot (`snapshots`: that one, `volume` false) on delete, so that an adapter
   * can journal what the delete removes next and its `start` finish a delete killed after the
   * record went. `keepData`: a reference-only volume delete. A failure stops the delete.
   */
  beforeRemove?(
    volume: BlockVolume<V>,
    what: { snapshots: BlockSnapshot<S>[]; volume: boolean; keepData: boolean },
  ): Promise<void>;
  /**
   * Removes a volume's device, deactivated before; `keepData` (a reference-only delete, or a
   * failed create of an adopted device) keeps what holds the data. Snapshots are removed first.
   */
  removeDevice(volume: BlockVolume<V>, opts: { keepData: boolean }): Promise<void>;
  /** Makes the device usable and gives its path; idempotent (an active device is reused). */
  activate(volume: BlockVolume<V>): Promise<ActiveDevice<V>>;
  /** Releases the device (detach); idempotent. Optional. */
  deactivate?(volume: BlockVolume<V>): Promise<void>;
  /**
   * True when mount table entry `entry` mounts this volume's device. Default: `entry.source`
   * is the recorded device path.
   */
  isMountOf?(volume: BlockVolume<V>, entry: MountEntry): Awaitable<boolean>;

  /**
   * Takes a snapshot. With `freezeForSnapshot`, the host has frozen the mounted filesystem and
   * thaws it afterwards. A failure must leave nothing behind.
   */
  createSnapshot(volume: BlockVolume<V>, snapshot: { name: string }): Promise<{ fields: S }>;
  /**
   * Removes a snapshot. `unrecorded`: its create failed after `createSnapshot` (the host could
   * not record it), so nothing refers to it and an adapter that keeps snapshot data on delete
   * (reference-only) removes it too. `keepData`: its volume is deleted reference-only; an
   * adapter whose kept device keeps its snapshots (`CreatedDevice.previous`) keeps it.
   */
  removeSnapshot(
    volume: BlockVolume<V>,
    snapshot: BlockSnapshot<S>,
    opts?: { unrecorded?: boolean; keepData?: boolean },
  ): Promise<void>;
  /** Opens a snapshot for reading by a backup (see SnapshotSource). */
  openSnapshot(
    volume: BlockVolume<V>,
    snapshot: BlockSnapshot<S>,
    ctx?: BlockCallContext,
  ): Promise<SnapshotSource>;
  /**
   * The ranges of `snapshot` that differ from `base` (the snapshot the volume's previous backup
   * was made from, as recorded by the host), or, with no base, every range that may hold data.
   * Without this method, or when it returns "unknown", the host compares against the previous
   * backup's block map.
   */
  compareSnapshots?(
    volume: BlockVolume<V>,
    snapshot: BlockSnapshot<S>,
    base: BlockSnapshot<S> | undefined,
    ctx?: BlockCallContext,
  ): Promise<ChangedRanges>;

  /** The driver's info map (Convoy's `convoy info` section of this driver). */
  info(): Awaitable<StringMap>;
  /** More fields of a volume's DriverInfo (the host gives Device, Size, Filesystem, ...). */
  volumeInfo?(volume: BlockVolume<V>): StringMap;
  /** More fields of a snapshot's DriverInfo. */
  snapshotInfo?(volume: BlockVolume<V>, snapshot: BlockSnapshot<S>): StringMap;

  /**
   * Called once at start, before the host re-activates and re-mounts recorded volumes: clean
   * leftovers of interrupted operations. `volumes` are the recorded ones, `snapshots` their
   * snapshots by volume name; `unreadable` names records that could not be read (what they
   * refer to is unknown: do not remove it).
   */
  start?(
    volumes: BlockVolume<V>[],
    opts: { snapshots: Record<string, BlockSnapshot<S>[]>; unreadable: string[] },
  ): Promise<void>;
  /** Called when the daemon stops. Volumes stay mounted. */
  shutdown?(): Promise<void>;

  nativeBackups?: NativeBackups<V, S>;
}

/** What the host passes to a device adapter's init. */
export interface BlockDeviceContext {
  /** The driver's own folder under the daemon root (the host keeps its records in `<root>/state`). */
  root: string;
  /** `--driver-opts`: the adapter reads its keys (see `api.util.loadDriverConfig`). */
  options: StringMap;
  /** A logger with the driver's name. */
  log: Logger;
  exec: Exec;
}

/** Creates a device adapter at daemon start. */
export type BlockDeviceInit = (
  ctx: BlockDeviceContext,
  // deno-lint-ignore no-explicit-any
) => Promise<BlockDeviceAdapter<any, any, any>>;
