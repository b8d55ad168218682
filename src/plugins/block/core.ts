/**
 * The block framework's core: what a block driver is made of (the adapter, its records, locks,
 * the host's services), reading records as the adapter's BlockVolume, and start-up. Its
 * operations are added one concern per file: volumes.ts, snapshots.ts, backups.ts; driver.ts
 * makes the ConvoyDriver.
 * @module
 */
import * as errors from "../../api/errors.ts";
import { open } from "node:fs/promises";
import { join } from "node:path";
import type {
  AdapterFields,
  BlockDeviceAdapter,
  BlockSnapshot,
  BlockVolume,
} from "../../api/block.ts";
import type { ConvoyDriver, DeltaBlockOperations, OperationContext } from "../../api/driver.ts";
import type {
  BackupStoreApi,
  BlockFilesystems,
  Exec,
  Logger,
  MountEntry,
  PluginMounts,
} from "../../api/plugin.ts";
import { ensureDir } from "../../util/fs.ts";
import { blockDeviceNumber, mountsDevice } from "../../util/mountinfo.ts";
import { KeyedMutex } from "../../util/keyed_mutex.ts";
import { UseCounter } from "../../util/use_counter.ts";
import { createRecordStore } from "../driver_util.ts";
import { createMounting } from "./mounting.ts";
import type { NativeBackupRegistry } from "./native.ts";
import {
  toRecord,
  toSnapshot,
  toVolume,
  type VolumeRecord,
  volumeRecordSchema,
} from "./records.ts";

/** mkfs of a large device may take long. */
export const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** What the host gives the framework. */
export interface BlockHost {
  exec: Exec;
  log: Logger;
  mounts: PluginMounts;
  filesystems: BlockFilesystems;
  backup: BackupStoreApi;
  /** The native backups of the daemon's block drivers (restores of one driver's into another). */
  natives?: NativeBackupRegistry;
}

/** A typed backup request (the daemon's path: options parsed once, at the REST boundary). */
export interface BlockBackupRequest extends OperationContext {
  destURL: string;
  endpoint?: string;
  compression?: string;
}

/** The ConvoyDriver of a block adapter, with the host's typed entry points. */
export interface BlockDriver extends ConvoyDriver {
  /** Marks a driver made by the block framework (backups restore into any of them). */
  readonly block: {
    /** Backs up a snapshot; resolves to the backup URL. */
    backUp(snapshot: string, volume: string, req: BlockBackupRequest): Promise<string>;
    /** URL schemes of the adapter's own backups. */
    nativeSchemes: string[];
    /** The DeltaBlockOperations a backup uses (tests, tools); close() when done. */
    deltaOps(ctx?: OperationContext): { ops: DeltaBlockOperations; close(): Promise<void> };
  };
}

/**
 * `err` with the operation's context `what` ("Cannot <op> <kind> "<name>"..."): a typed error
 * that already names the same operation and object (a BackendError too) is kept as it is; another
 * typed error keeps its class and gets `what` in front unless it says what failed ("Cannot ...");
 * the rest become BackendErrors.
 */
export function inContext(err: unknown, what: string): unknown {
  if (err instanceof errors.ConvoyError) {
    const subject = /^Cannot [^"]*"[^"]*"/.exec(what)?.[0];
    if (subject && err.message.startsWith(subject)) return err;
    if (!(err instanceof errors.BackendError) && !err.message.startsWith("Cannot ")) {
      const E = err.constructor as new (m: string, o?: { cause?: unknown }) => errors.ConvoyError;
      return new E(`${what}: ${err.message}`, { cause: err });
    }
  }
  return errors.wrapError(err, what);
}

export function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.replace(/:$/, "");
  } catch {
    return "";
  }
}

export async function fsync(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** One block driver's state: the adapter, records, locks; records and start-up. */
export class BlockCore {
  protected host: BlockHost;
  protected name: string;
  protected root: string;
  protected adapter: BlockDeviceAdapter<AdapterFields, AdapterFields, unknown>;
  protected log: Logger;
  protected locks = new KeyedMutex();
  /** (volume, snapshot) pairs a backup is reading; they cannot be deleted meanwhile. */
  protected inUse = new UseCounter();
  protected records;
  protected mounting;

  constructor(
    host: BlockHost,
    opts: { name: string; root: string; adapter: BlockDeviceAdapter; log: Logger },
  ) {
    this.host = host;
    this.name = opts.name;
    this.root = opts.root;
    this.adapter = opts.adapter as BlockDeviceAdapter<AdapterFields, AdapterFields, unknown>;
    this.log = opts.log;
    const where = opts.adapter.records ?? { dir: "state", prefix: "" };
    this.records = createRecordStore({
      dir: join(opts.root, where.dir),
      prefix: where.prefix,
      schema: volumeRecordSchema,
      nameField: "Name",
      kind: "volume",
      log: opts.log,
    });
    this.mounting = createMounting({ mounts: host.mounts, filesystems: host.filesystems });
  }

  // ---- records -----------------------------------------------------------------------------

  protected volume(r: VolumeRecord): BlockVolume {
    try {
      return toVolume(r, this.adapter.volumeFields);
    } catch (err) {
      throw new errors.BackendError(
        `Bad record of volume "${r.Name}" in "${this.records.file(r.Name)}": ${
          errors.errorMessage(err)
        }`,
      );
    }
  }

  protected snapshots(r: VolumeRecord): Record<string, BlockSnapshot> {
    const out: Record<string, BlockSnapshot> = {};
    for (const [k, s] of Object.entries(r.Snapshots)) {
      out[k] = toSnapshot(s, { schema: this.adapter.snapshotFields, volumeSize: r.Size });
    }
    return out;
  }

  protected async must(name: string, what: string) {
    const rec = await this.records.must(name, what);
    return { rec, vol: this.volume(rec), snaps: this.snapshots(rec) };
  }

  protected async write(v: BlockVolume, snaps: Record<string, BlockSnapshot>): Promise<void> {
    await this.records.write(v.name, toRecord(v, snaps));
  }

  protected defaultMountPoint(name: string): string {
    return join(this.root, "mounts", name);
  }

  protected get caps() {
    return this.adapter.capabilities ?? {};
  }

  /** The adapter's native backups when `url` is of their kind. */
  protected native(url: string) {
    const nb = this.adapter.nativeBackups;
    return nb?.schemes.includes(schemeOf(url)) ? nb : undefined;
  }

  // ---- start-up ----------------------------------------------------------------------------

  async start(): Promise<void> {
    await ensureDir(join(this.root, this.adapter.records?.dir ?? "state"));
    await ensureDir(join(this.root, "mounts"));
    const { records: recs, unreadable } = await this.readAll();
    const parsed: Array<{ name: string; vol: BlockVolume; snaps: Record<string, BlockSnapshot> }> =
      [];
    for (const { name, record } of recs) {
      try {
        parsed.push({ name, vol: this.volume(record), snaps: this.snapshots(record) });
      } catch (err) {
        unreadable.push(name);
        this.log.error(errors.errorMessage(err), { volume: name });
      }
    }
    await this.adapter.start?.(parsed.map((p) => p.vol), {
      snapshots: Object.fromEntries(parsed.map((p) => [p.name, Object.values(p.snaps)])),
      unreadable,
    });
    // Re-activates every recorded volume and re-mounts recorded mounts; failures are logged.
    for (const { name, vol, snaps } of parsed) {
      try {
        let active = await this.activate(vol, snaps);
        if (!active.filesystem) {
          // Convoy's records name none: blkid tells.
          const filesystem = await this.host.filesystems.detect(active.device);
          if (filesystem) {
            active = { ...active, filesystem };
            await this.write(active, snaps);
          }
        }
        if (!active.mountPoint) continue;
        const entry = await this.host.mounts.mountAt(active.mountPoint);
        if (entry && (await this.isMountOf(active, entry))) continue;
        if (entry) {
          throw new errors.ConflictError(
            `"${active.mountPoint}" is a mount point of "${entry.source}"`,
          );
        }
        await this.host.filesystems.mount(active.device, active.mountPoint, {
          fs: active.filesystem,
        });
        this.log.info(`Restored the mount of volume "${name}" at "${active.mountPoint}"`, {
          volume: name,
          device: active.device,
          mountpoint: active.mountPoint,
        });
      } catch (err) {
        this.log.error(`Cannot restore volume "${name}": ${errors.errorMessage(err)}`, {
          volume: name,
        });
      }
    }
  }

  /**
   * Every record, a record without a UUID (Convoy's) given one; `unreadable` names the files
   * that cannot be read or parsed.
   */
  protected async readAll() {
    const out: Array<{ name: string; record: VolumeRecord }> = [];
    const unreadable: string[] = [];
    for (const name of await this.records.names()) {
      try {
        let record = await this.records.read(name);
        if (!record) continue;
        if (!record.UUID) {
          record = { ...record, UUID: crypto.randomUUID() };
          await this.records.write(name, record);
        }
        out.push({ name, record });
      } catch (err) {
        unreadable.push(name);
        this.log.error(errors.errorMessage(err), { volume: name });
      }
    }
    return { records: out, unreadable };
  }

  /** Activates the device; records a new device path or fields. */
  protected async activate(
    vol: BlockVolume,
    snaps: Record<string, BlockSnapshot>,
  ): Promise<BlockVolume> {
    const dev = await this.adapter.activate(vol);
    if (dev.path === vol.device && !dev.fields) return vol;
    const next = { ...vol, device: dev.path, fields: dev.fields ?? vol.fields };
    await this.write(next, snaps);
    return next;
  }

  /** The adapter's `recorded` hook; a failure is logged. */
  protected async recorded(vol: BlockVolume, snap?: BlockSnapshot): Promise<void> {
    await this.adapter.recorded?.(vol, snap).catch((err) =>
      this.log.warn(
        `After recording ${snap ? `snapshot "${snap.name}" of ` : ""}volume "${vol.name}": ${
          errors.errorMessage(err)
        }`,
        { volume: vol.name, snapshot: snap?.name },
      )
    );
  }

  protected async isMountOf(vol: BlockVolume, entry: MountEntry): Promise<boolean> {
    if (this.adapter.isMountOf) return await this.adapter.isMountOf(vol, entry);
    if (!vol.device) return false;
    return mountsDevice(entry, { path: vol.device, number: await blockDeviceNumber(vol.device) });
  }
}
