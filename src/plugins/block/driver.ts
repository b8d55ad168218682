/**
 * The block-volume framework: a ConvoyDriver made from a device adapter (src/api/block.ts). The
 * host writes once what every block driver needs: records, mkfs, mount and unmount, fsfreeze
 * around snapshots, snapshot bookkeeping, restores from any block backup, and backups with the
 * delta-block engine (the adapter gives a snapshot source and a comparison).
 * @module
 */
import { type FileHandle, open } from "node:fs/promises";
import { join, resolve } from "node:path";
import * as errors from "../../api/errors.ts";
import type {
  AdapterFields,
  BlockDeviceAdapter,
  BlockDeviceInit,
  BlockSnapshot,
  BlockVolume,
  SnapshotSource,
} from "../../api/block.ts";
import type {
  ConvoyDriver,
  DeltaBlockOperations,
  InitFunc,
  Mappings,
  OperationContext,
  StringMap,
} from "../../api/driver.ts";
import type {
  BackupStoreApi,
  BlockFilesystems,
  Exec,
  Logger,
  PluginMounts,
} from "../../api/plugin.ts";
import { optionSchemas } from "../../util/option_schemas.ts";
import { validateName } from "../../util/names.ts";
import { ensureDir } from "../../util/fs.ts";
import { rubyDate } from "../../util/time.ts";
import { KeyedMutex } from "../../util/keyed_mutex.ts";
import { UseCounter } from "../../util/use_counter.ts";
import {
  convoyDriver,
  createRecordStore,
  parseOptions,
  requestedMountPoint,
} from "../driver_util.ts";
import { createBlockVolumeHelpers, deleteSnapshot, readFull } from "../block_volumes.ts";
import {
  toRecord,
  toSnapshot,
  toVolume,
  type VolumeRecord,
  volumeRecordSchema,
} from "./records.ts";

/** The delta-block engine's block size. */
const BLOCK_SIZE = 2 * 1024 * 1024;
/** mkfs of a large device may take long. */
const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** What the host gives the framework. */
export interface BlockHost {
  exec: Exec;
  log: Logger;
  mounts: PluginMounts;
  filesystems: BlockFilesystems;
  backup: BackupStoreApi;
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

/** True for a driver made by the block framework. */
export function isBlockDriver(d: ConvoyDriver): d is BlockDriver {
  return typeof (d as Partial<BlockDriver>).block?.backUp === "function";
}

/** The InitFunc of a block adapter: the driver the daemon sees. */
export function blockDriverInit(host: BlockHost, name: string, init: BlockDeviceInit): InitFunc {
  return async (root, config) => {
    const log = host.log.child({ pkg: name, driver: name });
    const driverRoot = resolve(root);
    await ensureDir(driverRoot);
    const adapter = await init({ root: driverRoot, options: config ?? {}, log, exec: host.exec });
    const d = new BlockVolumes(host, { name, root: driverRoot, adapter, log });
    await d.start();
    return d.driver();
  };
}

/**
 * `err` with the operation's context: a typed error of the adapter keeps its class and gets
 * `what` in front unless it already says what failed ("Cannot ..."); others become BackendErrors.
 */
function inContext(err: unknown, what: string): unknown {
  if (
    err instanceof errors.ConvoyError && !(err instanceof errors.BackendError) &&
    !err.message.startsWith("Cannot ")
  ) {
    const E = err.constructor as new (m: string, o?: { cause?: unknown }) => errors.ConvoyError;
    return new E(`${what}: ${err.message}`, { cause: err });
  }
  return errors.wrapError(err, what);
}

function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.replace(/:$/, "");
  } catch {
    return "";
  }
}

/** One block driver: the adapter's devices, the host's flows. */
class BlockVolumes {
  #host: BlockHost;
  #name: string;
  #root: string;
  #a: BlockDeviceAdapter<AdapterFields, AdapterFields, unknown>;
  #log: Logger;
  #locks = new KeyedMutex();
  /** (volume, snapshot) pairs a backup is reading; they cannot be deleted meanwhile. */
  #inUse = new UseCounter();
  #records;
  #mounting;

  constructor(
    host: BlockHost,
    opts: { name: string; root: string; adapter: BlockDeviceAdapter; log: Logger },
  ) {
    this.#host = host;
    this.#name = opts.name;
    this.#root = opts.root;
    this.#a = opts.adapter as BlockDeviceAdapter<AdapterFields, AdapterFields, unknown>;
    this.#log = opts.log;
    this.#records = createRecordStore({
      dir: join(opts.root, "state"),
      prefix: "",
      schema: volumeRecordSchema,
      nameField: "Name",
      kind: "volume",
      log: opts.log,
    });
    this.#mounting = createBlockVolumeHelpers({
      mounts: host.mounts,
      filesystems: host.filesystems,
      backup: host.backup,
    });
  }

  // ---- records -----------------------------------------------------------------------------

  #volume(r: VolumeRecord): BlockVolume {
    try {
      return toVolume(r, this.#a.volumeFields);
    } catch (err) {
      throw new errors.BackendError(
        `Bad record of volume "${r.Name}" in "${this.#records.file(r.Name)}": ${
          errors.errorMessage(err)
        }`,
      );
    }
  }

  #snapshots(r: VolumeRecord): Record<string, BlockSnapshot> {
    const out: Record<string, BlockSnapshot> = {};
    for (const [k, s] of Object.entries(r.Snapshots)) {
      out[k] = toSnapshot(s, this.#a.snapshotFields);
    }
    return out;
  }

  async #must(name: string, what: string) {
    const rec = await this.#records.must(name, what);
    return { rec, vol: this.#volume(rec), snaps: this.#snapshots(rec) };
  }

  async #write(v: BlockVolume, snaps: Record<string, BlockSnapshot>): Promise<void> {
    await this.#records.write(v.name, toRecord(v, snaps));
  }

  #defaultMountPoint(name: string): string {
    return join(this.#root, "mounts", name);
  }

  get #caps() {
    return this.#a.capabilities ?? {};
  }

  // ---- start-up ----------------------------------------------------------------------------

  async start(): Promise<void> {
    await ensureDir(join(this.#root, "state"));
    await ensureDir(join(this.#root, "mounts"));
    const recs = await this.#records.list();
    const volumes: BlockVolume[] = [];
    for (const { name, record } of recs) {
      try {
        volumes.push(this.#volume(record));
      } catch (err) {
        this.#log.error(errors.errorMessage(err), { volume: name });
      }
    }
    await this.#a.start?.(volumes);
    // Re-activates every recorded volume and re-mounts recorded mounts; failures are logged.
    for (const { name, record } of recs) {
      try {
        const vol = this.#volume(record);
        const snaps = this.#snapshots(record);
        const active = await this.#activate(vol, snaps);
        if (!active.mountPoint) continue;
        const entry = await this.#host.mounts.mountAt(active.mountPoint);
        if (entry && (await this.#isMountOf(active, entry))) continue;
        if (entry) {
          throw new errors.ConflictError(
            `"${active.mountPoint}" is a mount point of "${entry.source}"`,
          );
        }
        await this.#host.filesystems.mount(active.device, active.mountPoint, {
          fs: active.filesystem,
        });
        this.#log.info(`Restored the mount of volume "${name}" at "${active.mountPoint}"`, {
          volume: name,
          device: active.device,
          mountpoint: active.mountPoint,
        });
      } catch (err) {
        this.#log.error(`Cannot restore volume "${name}": ${errors.errorMessage(err)}`, {
          volume: name,
        });
      }
    }
  }

  /** Activates the device; records a new device path or fields. */
  async #activate(
    vol: BlockVolume,
    snaps: Record<string, BlockSnapshot>,
  ): Promise<BlockVolume> {
    const dev = await this.#a.activate(vol);
    if (dev.path === vol.device && !dev.fields) return vol;
    const next = { ...vol, device: dev.path, fields: dev.fields ?? vol.fields };
    await this.#write(next, snaps);
    return next;
  }

  async #isMountOf(vol: BlockVolume, entry: { source: string }): Promise<boolean> {
    if (this.#a.isMountOf) return await this.#a.isMountOf(vol, entry as never);
    return entry.source === vol.device;
  }

  // ---- volumes -----------------------------------------------------------------------------

  async createVolume(id: string, opts: StringMap, ctx?: OperationContext): Promise<void> {
    const name = validateName(id, "volume");
    const raw = opts ?? {};
    const o = parseOptions(optionSchemas.createVolume, raw, `options of volume "${name}"`);
    const options = this.#a.volumeOptions
      ? parseOptions(this.#a.volumeOptions, raw, `options of volume "${name}"`)
      : undefined;
    await this.#locks.run(name, async () => {
      if (await this.#records.read(name)) {
        throw new errors.AlreadyExistsError(
          `Cannot create volume "${name}": volume already exists`,
        );
      }
      const url = o.BackupURL || "";
      const what = url
        ? `Cannot create volume "${name}" from backup "${url}"`
        : `Cannot create volume "${name}"`;
      const endpoint = o.EndpointURL || undefined;
      const native = !!url && !!this.#a.nativeBackups?.schemes.includes(schemeOf(url));
      const requested = o.Size || 0;
      let size: number;
      try {
        size = url
          ? await this.#backupSize(url, { native, endpoint, requested, what })
          : this.#size(name, requested);
      } catch (err) {
        throw errors.wrapError(err, what);
      }
      await this.#create(name, {
        size,
        requested: !!requested,
        options,
        restore: url ? { url, native, endpoint } : undefined,
        ctx,
        what,
      });
    });
  }

  /** The size of a new volume: the request rounded to the adapter's alignment, or its default. */
  #size(name: string, requested: number): number {
    const align = this.#caps.sizeAlignment ?? 1;
    if (!requested) {
      const d = this.#caps.defaultSize;
      if (!d) throw new errors.InvalidArgumentError(`no size given and driver has no default size`);
      return Math.ceil(d / align) * align;
    }
    const size = Math.ceil(requested / align) * align;
    if (size !== requested) {
      this.#log.warn(`Size of volume "${name}" rounded up from ${requested} to ${size} bytes`, {
        volume: name,
      });
    }
    return size;
  }

  /** The size of the volume a backup restores; only block backups restore into block volumes. */
  async #backupSize(
    url: string,
    o: { native: boolean; endpoint?: string; requested: number; what: string },
  ): Promise<number> {
    let size: number;
    if (o.native) size = await this.#a.nativeBackups!.size(url);
    else {
      const bv = await this.#host.backup.getBackupVolume(url, { endpoint: o.endpoint });
      if (bv.format !== "delta-block") {
        throw new errors.InvalidArgumentError(
          `${o.what}: it was made by driver "${bv.driver}" as a file-level backup; only block ` +
            `backups restore into ${this.#name} volumes`,
        );
      }
      size = bv.size;
    }
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new errors.InvalidArgumentError(`${o.what}: the backup's volume has no size`);
    }
    if (o.requested && o.requested !== size) {
      throw new errors.InvalidArgumentError(
        `${o.what}: size must match the backup's size ${size}`,
      );
    }
    return size;
  }

  /**
   * Makes the device, fills it (mkfs, or the backup's blocks), activates it and writes the record
   * last. A failed or cancelled create leaves nothing behind (an adopted device's data is kept).
   */
  async #create(
    name: string,
    c: {
      size: number;
      requested: boolean;
      options: unknown;
      restore?: { url: string; native: boolean; endpoint?: string };
      ctx?: OperationContext;
      what: string;
    },
  ): Promise<void> {
    const { restore, ctx, what } = c;
    const signal = ctx?.signal;
    const fsType = this.#caps.filesystem ?? "ext4";
    const created = await this.#a.createDevice({
      name,
      size: c.size,
      sizeRequested: c.requested,
      options: c.options,
      restore: restore && { url: restore.url, native: restore.native },
      signal,
    }).catch((err) => {
      throw inContext(err, what);
    });
    let vol: BlockVolume = {
      name,
      uuid: crypto.randomUUID(),
      size: created.size,
      filesystem: "",
      createdTime: rubyDate(),
      device: "",
      mountPoint: "",
      fields: created.fields,
    };
    const fs = this.#host.filesystems;
    /** Fills `target` (the staging file or the device); resolves to its filesystem. */
    const fill = async (target: string, fresh: boolean): Promise<string> => {
      if (restore && !restore.native) {
        await this.#host.backup.restoreDeltaBackup(restore.url, target, {
          endpoint: restore.endpoint,
          signal,
          progress: ctx?.progress,
        });
        await fsync(target);
        if (signal?.aborted) throw new errors.CancelledError(`${what}: cancelled`);
        return await fs.detect(target);
      }
      const found = fresh ? "" : await fs.detect(target);
      if (found || restore) return found;
      await fs.mkfs(target, fsType, {
        discard: this.#caps.discardOnMkfs ?? true,
        timeoutMs: LONG_COMMAND_TIMEOUT_MS,
      });
      return fsType;
    };
    try {
      let filesystem: string;
      if (created.staging) {
        filesystem = await fill(created.staging.path, true);
        const fields = await created.staging.commit();
        if (fields) vol = { ...vol, fields };
        vol = await this.#activateNew(vol);
      } else {
        vol = await this.#activateNew(vol);
        filesystem = await fill(vol.device, !created.adopted && !restore);
      }
      if (!filesystem && restore) {
        this.#log.warn(`No filesystem recognised in the restored volume "${name}"`, {
          volume: name,
          url: restore.url,
        });
      }
      if (created.adopted) {
        this.#log.info(`Adopting the device of an earlier volume "${name}"`, {
          volume: name,
          size: vol.size,
          filesystem,
        });
      }
      vol = { ...vol, filesystem };
      await this.#write(vol, {});
    } catch (err) {
      await this.#records.remove(name).catch(() => {});
      await created.staging?.discard().catch(() => {});
      try {
        if (vol.device) await this.#a.deactivate?.(vol);
        await this.#a.removeDevice(vol, { keepData: !!created.adopted });
      } catch (e) {
        this.#log.warn(
          `Cannot remove the device of volume "${name}": ${errors.errorMessage(e)}`,
          { volume: name },
        );
      }
      throw inContext(err, what);
    }
    this.#log.info(`Created volume "${name}"`, {
      volume: name,
      device: vol.device,
      size: vol.size,
      filesystem: vol.filesystem,
    });
    if (restore) {
      this.#log.info(`Restored backup "${restore.url}" into volume "${name}"`, {
        volume: name,
        size: vol.size,
      });
    }
  }

  async #activateNew(vol: BlockVolume): Promise<BlockVolume> {
    const dev = await this.#a.activate(vol);
    return { ...vol, device: dev.path, fields: dev.fields ?? vol.fields };
  }

  async deleteVolume(id: string, opts: StringMap): Promise<void> {
    const name = validateName(id, "volume");
    const o = parseOptions(optionSchemas.deleteVolume, opts ?? {}, `options of volume "${name}"`);
    const what = `Cannot delete volume "${name}"`;
    await this.#locks.run(name, async () => {
      const { vol, snaps } = await this.#must(name, "delete volume");
      if (vol.mountPoint) {
        throw new errors.ConflictError(`${what}: volume is mounted at "${vol.mountPoint}"`);
      }
      for (const snap of Object.keys(snaps)) {
        if (this.#inUse.inUse(name, snap)) {
          throw new errors.ConflictError(`${what}: its snapshot "${snap}" is being backed up`);
        }
      }
      try {
        if (vol.device) {
          const mounts = await this.#host.mounts.mountsOf(vol.device);
          if (mounts.length) {
            throw new errors.ConflictError(
              `${what}: its device "${vol.device}" is mounted at "${mounts[0]}"`,
            );
          }
        }
        await this.#a.deactivate?.(vol);
        // The record goes first: a crash afterwards leaves devices without a record, which the
        // adapter's start (snapshots) or the next create of the name (the device) takes care of.
        await this.#records.remove(name);
        for (const s of Object.values(snaps)) await this.#a.removeSnapshot(vol, s);
        await this.#a.removeDevice(vol, { keepData: o.ReferenceOnly });
      } catch (err) {
        throw inContext(err, what);
      }
      this.#log.info(`Deleted volume "${name}"${o.ReferenceOnly ? ", kept its data" : ""}`, {
        volume: name,
        referenceOnly: o.ReferenceOnly,
      });
    });
  }

  async mountVolume(id: string, opts: StringMap): Promise<string> {
    const name = validateName(id, "volume");
    const wanted = requestedMountPoint(opts, name);
    return await this.#locks.run(name, async () => {
      const { vol, snaps } = await this.#must(name, "mount volume");
      let active = vol;
      return await this.#mounting.mountBlockVolume(name, {
        current: vol.mountPoint,
        wanted,
        defaultMountPoint: this.#defaultMountPoint(name),
        fs: vol.filesystem,
        activate: async () => {
          active = await this.#activate(vol, snaps);
          return {
            path: active.device,
            isMountOf: (entry) => this.#isMountOf(active, entry),
          };
        },
        save: (mountPoint) => this.#write({ ...active, mountPoint }, snaps),
        log: this.#log,
      });
    });
  }

  async umountVolume(id: string): Promise<void> {
    const name = validateName(id, "volume");
    await this.#locks.run(name, async () => {
      const { vol, snaps } = await this.#must(name, "unmount volume");
      await this.#mounting.umountBlockVolume(name, {
        mountPoint: vol.mountPoint,
        defaultMountPoint: this.#defaultMountPoint(name),
        isMountOf: async (entry) => !vol.device || await this.#isMountOf(vol, entry),
        save: () => this.#write({ ...vol, mountPoint: "" }, snaps),
        log: this.#log,
      });
    });
  }

  async mountPoint(id: string): Promise<string> {
    const name = validateName(id, "volume");
    return (await this.#records.must(name, "find the mount point of volume")).MountPoint;
  }

  #volumeInfo(vol: BlockVolume): StringMap {
    return {
      Device: vol.device,
      Size: String(vol.size),
      Filesystem: vol.filesystem,
      MountPoint: vol.mountPoint,
      VolumeName: vol.name,
      VolumeCreatedAt: vol.createdTime,
      ...this.#a.volumeInfo?.(vol),
    };
  }

  async getVolumeInfo(id: string): Promise<StringMap> {
    const name = validateName(id, "volume");
    return this.#volumeInfo((await this.#must(name, "inspect volume")).vol);
  }

  async listVolume(_opts: StringMap): Promise<Record<string, StringMap>> {
    const out: Record<string, StringMap> = {};
    for (const { name, record } of await this.#records.list()) {
      try {
        out[name] = this.#volumeInfo(this.#volume(record));
      } catch (err) {
        this.#log.warn(errors.errorMessage(err), { volume: name });
      }
    }
    return out;
  }

  // ---- snapshots ---------------------------------------------------------------------------

  async createSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = validateName(id, "snapshot");
    const name = validateName(volumeID, "volume");
    const what = `Cannot create snapshot "${snap}" of volume "${name}"`;
    await this.#locks.run(name, async () => {
      const { vol, snaps } = await this.#must(name, `create snapshot "${snap}" of volume`);
      if (snaps[snap]) throw new errors.AlreadyExistsError(`${what}: snapshot already exists`);
      const started = performance.now();
      let fields;
      try {
        const entry = vol.mountPoint ? await this.#host.mounts.mountAt(vol.mountPoint) : undefined;
        const freeze = this.#caps.freezeForSnapshot !== false && entry &&
            await this.#isMountOf(vol, entry)
          ? vol.mountPoint
          : "";
        if (freeze) await this.#host.exec("fsfreeze", ["--freeze", freeze]);
        try {
          ({ fields } = await this.#a.createSnapshot(vol, { name: snap }));
        } finally {
          if (freeze) await this.#thaw(freeze);
        }
      } catch (err) {
        throw inContext(err, what);
      }
      const s: BlockSnapshot = { name: snap, createdTime: rubyDate(), size: vol.size, fields };
      try {
        await this.#write(vol, { ...snaps, [snap]: s });
      } catch (err) {
        await this.#a.removeSnapshot(vol, s).catch(() => {});
        throw errors.wrapError(err, what);
      }
      this.#log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        ms: Math.round(performance.now() - started),
      });
    });
  }

  /** `fsfreeze --unfreeze`, retried; an error that is left is thrown. */
  async #thaw(mountPoint: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.#host.exec("fsfreeze", ["--unfreeze", mountPoint]);
        return;
      } catch (err) {
        if (attempt >= 3) {
          this.#log.error(
            `Cannot thaw the filesystem at "${mountPoint}": ${errors.errorMessage(err)}`,
            { mountpoint: mountPoint },
          );
          throw err;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    await deleteSnapshot({ id, volumeID }, {
      records: this.#records,
      locks: this.#locks,
      inUse: this.#inUse,
      log: this.#log,
      remove: async ({ record, unrecorded, snap }) => {
        const vol = this.#volume(record);
        const s = toSnapshot(record.Snapshots[snap], this.#a.snapshotFields);
        await this.#write(vol, this.#snapshots(unrecorded));
        await this.#a.removeSnapshot(vol, s);
      },
    });
  }

  #snapshotInfo(vol: BlockVolume, s: BlockSnapshot): StringMap {
    return {
      SnapshotName: s.name,
      SnapshotCreatedAt: s.createdTime,
      VolumeUUID: vol.name,
      Size: String(s.size),
      ...this.#a.snapshotInfo?.(vol, s),
    };
  }

  async #mustSnapshot(snap: string, of: { volume: string; what: string }) {
    const { volume: name, what } = of;
    const found = await this.#must(name, `${what} snapshot "${snap}" of volume`);
    const s = found.snaps[snap];
    if (!s) {
      throw new errors.NotFoundError(
        `Cannot ${what} snapshot "${snap}" of volume "${name}": snapshot does not exist`,
      );
    }
    return { ...found, snap: s };
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = validateName(id, "snapshot");
    const name = validateName(volumeID, "volume");
    const { vol, snap: s } = await this.#mustSnapshot(snap, { volume: name, what: "inspect" });
    return this.#snapshotInfo(vol, s);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumes = await this.#records.select(opts?.VolumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { record } of volumes) {
      const vol = this.#volume(record);
      for (const s of Object.values(this.#snapshots(record))) {
        out[s.name] = this.#snapshotInfo(vol, s);
      }
    }
    return out;
  }

  // ---- backups -----------------------------------------------------------------------------

  /**
   * The DeltaBlockOperations of one backup over the adapter: snapshot sources opened once and
   * closed by close(), comparisons given the recorded base snapshot.
   */
  #deltaSession(ctx?: OperationContext) {
    const sources = new Map<string, Promise<SnapshotSource>>();
    const key = (id: string, volumeID: string) => `${volumeID}\u0000${id}`;
    const handles = new Map<string, Promise<FileHandle>>();
    const source = (id: string, volumeID: string) => {
      let s = sources.get(key(id, volumeID));
      if (!s) {
        s = this.#mustSnapshot(id, { volume: volumeID, what: "read" }).then(({ vol, snap }) =>
          this.#a.openSnapshot(vol, snap, { ...ctx, log: this.#log })
        );
        s.catch(() => sources.delete(key(id, volumeID)));
        sources.set(key(id, volumeID), s);
      }
      return s;
    };
    const closeOne = async (k: string) => {
      const fh = handles.get(k);
      handles.delete(k);
      if (fh) await (await fh.catch(() => undefined))?.close();
      const s = sources.get(k);
      sources.delete(k);
      if (s) await (await s.catch(() => undefined))?.close?.();
    };
    const ops: DeltaBlockOperations = {
      hasSnapshot: async (id, volumeID) => {
        const rec = await this.#records.read(validateName(volumeID, "volume"));
        return !!rec?.Snapshots[id];
      },
      compareSnapshot: async (id, compareID, volumeID) => {
        return await this.compare(id, { base: compareID, volume: volumeID, ctx });
      },
      openSnapshot: async (id, volumeID) => {
        await source(id, volumeID);
      },
      snapshotFile: async (id, volumeID) => {
        const s = await source(id, volumeID);
        return s.kind === "reader" ? undefined : s.path;
      },
      readSnapshot: async (id, volumeID, start, data) => {
        const s = await source(id, volumeID);
        if (s.kind === "reader") return await s.read(start, data, { signal: ctx?.signal });
        const k = key(id, volumeID);
        let fh = handles.get(k);
        if (!fh) {
          fh = open(s.path, "r");
          handles.set(k, fh);
        }
        await readFull(await fh, { buf: data, pos: start });
      },
      closeSnapshot: async (id, volumeID) => {
        await closeOne(key(id, volumeID));
      },
    };
    return {
      ops,
      close: async () => {
        for (const k of [...sources.keys(), ...handles.keys()]) await closeOne(k);
      },
    };
  }

  /**
   * The ranges of snapshot `snap` that differ from snapshot `base` (every range with data when
   * `base` is "" or `snap`, or no longer recorded). "unknown" reads as every block.
   */
  async compare(
    snap: string,
    opts: { base: string; volume: string; ctx?: OperationContext },
  ): Promise<Mappings> {
    const { vol, snap: s } = await this.#mustSnapshot(snap, {
      volume: opts.volume,
      what: "compare",
    });
    const base = opts.base && opts.base !== snap
      ? (await this.#mustSnapshot(opts.base, { volume: opts.volume, what: "compare" })).snap
      : undefined;
    const release = base ? this.#inUse.use(vol.name, base.name) : () => {};
    try {
      const r = this.#a.compareSnapshots
        ? await this.#a.compareSnapshots(vol, s, base, { ...opts.ctx, log: this.#log })
        : "unknown";
      if (r !== "unknown") return r;
      return { mappings: [{ offset: 0, size: s.size }], blockSize: BLOCK_SIZE };
    } finally {
      release();
    }
  }

  /** See BlockDriver.block.backUp. */
  async backUp(snapshotID: string, volumeID: string, req: BlockBackupRequest): Promise<string> {
    const snap = validateName(snapshotID, "snapshot");
    const name = validateName(volumeID, "volume");
    const what = `Cannot back up snapshot "${snap}" of volume "${name}"`;
    const { destURL } = req;
    // The volume lock is held only to pin the snapshot, not for the whole upload.
    const { vol, snap: s, release } = await this.#locks.run(name, async () => {
      const found = await this.#mustSnapshot(snap, { volume: name, what: "back up" });
      return { ...found, release: this.#inUse.use(name, snap) };
    });
    const session = this.#deltaSession(req);
    try {
      const nb = this.#a.nativeBackups;
      const url = nb?.schemes.includes(schemeOf(destURL))
        ? await nb.create(vol, s, { url: destURL, ctx: { ...req, log: this.#log } })
        : await this.#host.backup.createDeltaBackup(session.ops, {
          volume: {
            name,
            driver: this.#name,
            size: vol.size,
            createdTime: vol.createdTime,
            uuid: vol.uuid,
          },
          snapshot: { name: snap, createdTime: s.createdTime },
          destURL,
          endpoint: req.endpoint || undefined,
          compression: req.compression || undefined,
          signal: req.signal,
          progress: req.progress,
        });
      this.#log.info(`Backed up snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        dest_url: destURL,
        backup_url: url,
      });
      return url;
    } catch (err) {
      throw errors.wrapError(err, what);
    } finally {
      await session.close();
      release();
    }
  }

  async createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Promise<string> {
    const o = parseOptions(optionSchemas.backup, opts ?? {}, "backup options");
    return await this.backUp(snapshotID, volumeID, {
      destURL,
      endpoint: o.EndpointURL,
      compression: o.Compression,
      ...ctx,
    });
  }

  #native(url: string) {
    const nb = this.#a.nativeBackups;
    return nb?.schemes.includes(schemeOf(url)) ? nb : undefined;
  }

  /** Any block backup may be inspected by any block driver; delete and list keep to this one's. */
  get #queries() {
    return this.#host.backup.queries(this.#name, { blocks: true });
  }

  async deleteBackup(url: string, opts?: StringMap): Promise<void> {
    const nb = this.#native(url);
    if (nb) return await nb.delete(url);
    await this.#queries.deleteBackup(url, opts ?? {});
  }

  async getBackupInfo(url: string, opts?: StringMap): Promise<StringMap> {
    const nb = this.#native(url);
    if (nb) return await nb.inspect(url);
    return await this.#queries.getBackupInfo(url, opts ?? {});
  }

  async listBackup(destURL: string, opts: StringMap): Promise<Record<string, StringMap>> {
    const nb = this.#native(destURL);
    if (nb) return await nb.list(destURL, { volumeName: opts?.VolumeName || undefined });
    return await this.#queries.listBackup(destURL, opts ?? {});
  }

  // ---- the ConvoyDriver object -------------------------------------------------------------

  driver(): BlockDriver {
    const d = convoyDriver(this.#name, this, () => this.#a.info());
    return {
      ...d,
      shutdown: async () => await this.#a.shutdown?.(),
      capabilities: { dockerRemoveKeepsData: this.#caps.dockerRemoveKeepsData ?? false },
      block: {
        backUp: (snap, vol, req) => this.backUp(snap, vol, req),
        nativeSchemes: this.#a.nativeBackups?.schemes ?? [],
        deltaOps: (ctx) => this.#deltaSession(ctx),
      },
    };
  }
}

async function fsync(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
