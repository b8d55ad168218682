/**
 * The devicemapper device adapter: every volume is a thin device of one device-mapper thin pool
 * (`dm.datadev` + `dm.metadatadev`, see pool.ts), formatted with ext4 or xfs by the host.
 * Snapshots are thin snapshots (`create_snap`, the origin suspended for a consistent point).
 * Backups are the host's delta-block backups: `thin_delta` on a reserved metadata snapshot says
 * which 2 MiB blocks changed since the last backed-up snapshot. Everything else (records,
 * mkfs, mounts, backups, restores) is the host's block framework.
 *
 * On-disk layout (Convoy's files and fields, plus a few of ours):
 *
 * ```
 * <root>/devicemapper.cfg                   {"Root","DataDevice","MetadataDevice","ThinpoolDevice",
 *                                           "ThinpoolSize","ThinpoolBlockSize","DefaultVolumeSize",
 *                                           "LastDevID","Filesystem","Kept","PendingDevIDs"}
 * <root>/devicemapper_volume_<name>.json    the host's record in Convoy's place: {"Name","DevID",
 *                                           "Size","Base","MountPoint","CreatedTime","Snapshots":
 *                                           {"<snap>":{"Name","CreatedTime","DevID","Activated"}},
 *                                           "Filesystem","UUID","DeviceName","Device"}
 * <root>/mounts/<name>/                     the default mount point
 * /dev/mapper/<dm.thinpoolname>             the pool
 * /dev/mapper/convoy-<pool>-<name>          a volume (see dm.ts for the naming rules)
 * /dev/mapper/convoy-<pool>-<name>@<snap>   a snapshot, read-only, only while a backup reads it
 * ```
 *
 * Thin ids are journaled (journal.ts): handed out journaled, cleared by `recorded` once a record
 * holds them, journaled again by `beforeRemove` before a delete drops the record; start-up
 * deletes journaled ids no record references.
 *
 * ReferenceOnly delete never destroys data: the volume's record moves to `Kept` in
 * devicemapper.cfg (before the record goes), its thin device and snapshots stay in the pool;
 * creating a volume of the same name adopts them again (and a normal delete then frees them).
 * @module
 */
import { join, resolve } from "node:path";
import type {
  BlockDeviceAdapter,
  BlockDeviceContext,
  BlockSnapshot,
  BlockVolume,
  ChangedRanges,
  CreatedDevice,
  Logger,
  PluginApi,
  SnapshotSource,
} from "../../mod.ts";
import { MAPPER_DIR } from "./config.ts";
import {
  BACKUP_BLOCK_SIZE,
  compareThinTable,
  deltaToMappings,
  parseTable,
  parseThinDelta,
  roundUp,
  sizeAlignment,
  snapshotDeviceName,
  thinTable,
  volumeDeviceName,
} from "./dm.ts";
import { ThinIds } from "./journal.ts";
import { createSchemas, type VolumeRecord } from "./options.ts";
import { ThinPool } from "./pool.ts";

/** The driver's name. */
export const DRIVER_NAME = "devicemapper";

/** What one compareSnapshots did (logged with "Compared snapshot ..."; tests read it). */
export interface CompareStats {
  /** "full" (every provisioned block) or "incremental". */
  method: "full" | "incremental";
  /** thin_delta ranges kept. */
  ranges: number;
  /** 2 MiB blocks reported. */
  blocks: number;
  /** The pool block size in bytes. */
  poolBlockSize: number;
  ms: number;
}

/** The adapter's fields of a volume record (Convoy's). */
interface VolumeFields extends Record<string, unknown> {
  DevID: number;
  Base: string;
  /** The device-mapper name; Convoy's records have none and use the volume name. */
  DeviceName?: string;
}
/** The adapter's fields of a snapshot record (Convoy's). */
interface SnapshotFields extends Record<string, unknown> {
  DevID: number;
  Activated: boolean;
}
type Volume = BlockVolume<VolumeFields>;
type Snapshot = BlockSnapshot<SnapshotFields>;

/**
 * Creates the devicemapper adapter (the init of `api.registerBlockDevice`): starts the pool,
 * or creates it on the first start from `--driver-opts`.
 */
export async function createDevicemapperAdapter(
  api: PluginApi,
  ctx: BlockDeviceContext,
): Promise<BlockDeviceAdapter<VolumeFields, SnapshotFields>> {
  const root = resolve(ctx.root);
  const pool = await ThinPool.start(api, {
    root,
    config: ctx.options,
    schemas: createSchemas(api),
    log: ctx.log,
  });
  return new ThinDevices(api, { pool, log: ctx.log }).adapter();
}

class ThinDevices {
  #api: PluginApi;
  #pool: ThinPool;
  #ids: ThinIds;
  #log: Logger;

  constructor(api: PluginApi, o: { pool: ThinPool; log: Logger }) {
    this.#api = api;
    this.#pool = o.pool;
    this.#log = o.log;
    this.#ids = new ThinIds(api, { pool: o.pool, log: o.log });
  }

  get #cfg() {
    return this.#pool.cfg;
  }

  /** The volume's device-mapper name: recorded, or Convoy's bare name for Convoy's records. */
  #deviceName(vol: Volume): string {
    return vol.fields.DeviceName || vol.name;
  }

  /** `err` with `prefix`: BackendErrors, plain errors and TimeoutErrors get it (wrapError). */
  #wrap(err: unknown, prefix: string): unknown {
    const { TimeoutError, wrapError } = this.#api.errors;
    if (err instanceof TimeoutError && !err.message.startsWith(prefix)) {
      return new TimeoutError(`${prefix}: ${err.message}`, { cause: err });
    }
    return wrapError(err, prefix);
  }

  // ---- start-up ----------------------------------------------------------------------------

  async #start(
    volumes: Volume[],
    o: { snapshots: Record<string, Snapshot[]>; unreadable: string[] },
  ): Promise<void> {
    const { unreadable } = o;
    await this.#pool.cleanLeftovers();
    await this.#checkKept(volumes);
    const referenced = new Set<number>();
    for (const v of volumes) {
      referenced.add(v.fields.DevID);
      for (const s of o.snapshots[v.name] ?? []) referenced.add(s.fields.DevID);
    }
    for (const rec of Object.values(this.#cfg.Kept)) {
      referenced.add(rec.DevID);
      for (const s of Object.values(rec.Snapshots)) referenced.add(s.DevID);
    }
    await this.#ids.finish(
      unreadable.length ? undefined : referenced,
      unreadable.map((n) => `Cannot read volume "${n}": its record is not valid`).join("; "),
    );
    for (const v of volumes) {
      const name = this.#deviceName(v);
      try {
        if ((await this.#pool.dm.table(name)) === undefined) continue;
        if (!(await this.#pool.dm.suspended(name))) continue;
        // A snapshot create killed between suspend and resume: its I/O would wait forever.
        await this.#pool.dm.resume(name);
        this.#log.warn(
          `Resumed volume "${v.name}", left suspended by an interrupted snapshot create`,
          { volume: v.name },
        );
      } catch (err) {
        this.#log.error(
          `Cannot resume volume "${v.name}": ${this.#api.errors.errorMessage(err)}`,
          { volume: v.name },
        );
      }
    }
  }

  /** Drops the Kept entries of `volumes` that hold the same thin device (the volume is recorded). */
  async #dropKept(volumes: Volume[]): Promise<void> {
    const stale = volumes.filter((v) => this.#cfg.Kept[v.name]?.DevID === v.fields.DevID);
    if (!stale.length) return;
    await this.#pool.config.update((cfg) => {
      for (const v of stale) delete cfg.Kept[v.name];
    });
  }

  /** Drops Kept entries of volumes that exist again (a crash during an adopt); lists the rest. */
  async #checkKept(volumes: Volume[]): Promise<void> {
    await this.#dropKept(volumes);
    const left = Object.keys(this.#cfg.Kept);
    if (left.length) {
      this.#log.info(
        `Volumes kept by reference-only deletes (create the name again to adopt one): ${
          left.join(", ")
        }`,
        { kept: left },
      );
    }
  }

  // ---- volumes -----------------------------------------------------------------------------

  async #createDevice(req: {
    name: string;
    size: number;
    sizeRequested: boolean;
    restore?: { url: string };
  }): Promise<CreatedDevice<VolumeFields, SnapshotFields>> {
    const { name } = req;
    const kept = this.#cfg.Kept[name];
    if (kept && req.restore) {
      throw new this.#api.errors.ConflictError(
        `a thin device kept by a reference-only delete of volume "${name}" exists; ` +
          `create "${name}" without a backup to adopt it, or delete it first`,
      );
    }
    const device = volumeDeviceName(this.#pool.name, name);
    const live = await this.#pool.dm.table(device);
    if (live !== undefined) {
      throw new this.#api.errors.ConflictError(
        `a device-mapper device named "${device}" already exists (table "${live.trim()}")`,
      );
    }
    if (kept) {
      return this.#adopt(kept, { device, size: req.size, sizeRequested: req.sizeRequested });
    }
    // A restore keeps the backup's size, rounded up to whole pool blocks.
    const size = roundUp(req.size, sizeAlignment(this.#cfg.ThinpoolBlockSize));
    const devID = await this.#ids.withNew((id) => `create_thin ${id}`);
    return { fields: { DevID: devID, Base: "", DeviceName: device }, size };
  }

  /** Takes back a volume kept by a reference-only delete: same thin device, data and snapshots. */
  #adopt(
    kept: VolumeRecord,
    o: { device: string; size: number; sizeRequested: boolean },
  ): CreatedDevice<VolumeFields, SnapshotFields> {
    if (o.sizeRequested && o.size !== kept.Size) {
      throw new this.#api.errors.InvalidArgumentError(
        `the thin device kept from an earlier volume "${kept.Name}" is ${kept.Size} bytes, ` +
          `not ${o.size}`,
      );
    }
    this.#log.info(`Adopting the thin device kept from an earlier volume "${kept.Name}"`, {
      volume: kept.Name,
      devID: kept.DevID,
      size: kept.Size,
      snapshots: Object.keys(kept.Snapshots),
    });
    return {
      fields: { DevID: kept.DevID, Base: kept.Base, DeviceName: o.device },
      size: kept.Size,
      adopted: true,
      previous: {
        uuid: kept.UUID ?? "",
        createdTime: kept.CreatedTime,
        snapshots: Object.values(kept.Snapshots).map((s) => ({
          name: s.Name,
          createdTime: s.CreatedTime,
          size: kept.Size,
          fields: { DevID: s.DevID, Activated: s.Activated },
        })),
      },
    };
  }

  /** Clears the journal of what a record now holds; an adopted volume leaves Kept. */
  async #recorded(vol: Volume, snap?: Snapshot): Promise<void> {
    if (snap) return await this.#ids.settle([snap.fields.DevID]);
    await this.#ids.settle([vol.fields.DevID]);
    await this.#dropKept([vol]);
  }

  /**
   * Before a record goes: a reference-only delete moves the volume to Kept; any other delete
   * journals the ids it is about to delete.
   */
  async #beforeRemove(
    vol: Volume,
    what: { snapshots: Snapshot[]; volume: boolean; keepData: boolean },
  ): Promise<void> {
    if (what.volume && what.keepData) {
      await this.#pool.config.update((cfg) => {
        cfg.Kept[vol.name] = this.#keptRecord(vol, what.snapshots);
      });
      return;
    }
    const ids = what.snapshots.map((s) => s.fields.DevID);
    if (what.volume) ids.push(vol.fields.DevID);
    await this.#ids.journal(ids);
  }

  /** The volume's record as Kept holds it (Convoy's record fields). */
  #keptRecord(vol: Volume, snapshots: Snapshot[]): VolumeRecord {
    return {
      Name: vol.name,
      DevID: vol.fields.DevID,
      Size: vol.size,
      Base: vol.fields.Base,
      MountPoint: "",
      CreatedTime: vol.createdTime,
      Snapshots: Object.fromEntries(snapshots.map((s) => [s.name, {
        Name: s.name,
        CreatedTime: s.createdTime,
        DevID: s.fields.DevID,
        Activated: s.fields.Activated,
      }])),
      Filesystem: vol.filesystem,
      UUID: vol.uuid,
      DeviceName: this.#deviceName(vol),
    };
  }

  async #removeDevice(vol: Volume, opts: { keepData: boolean }): Promise<void> {
    if (opts.keepData) return;
    await this.#discard(vol);
    await this.#ids.delete([vol.fields.DevID], `deleting volume "${vol.name}"`);
    await this.#dropKept([vol]);
  }

  /**
   * Tells the data device that a deleted volume's blocks are free (thin deletes do not pass
   * discards down): the thin device is mapped again for a blkdiscard. Best effort; a device of
   * that name that maps another thin id is left alone.
   */
  async #discard(vol: Volume): Promise<void> {
    const dm = this.#pool.dm;
    const name = this.#deviceName(vol);
    try {
      const live = await dm.table(name);
      if (live !== undefined) {
        const diff = await this.#otherTable(live, { size: vol.size, devID: vol.fields.DevID });
        if (diff) {
          this.#log.debug(`Not discarding "${name}": it is another device (${diff})`);
          return;
        }
      } else await dm.create(name, this.#table(vol.size, vol.fields.DevID));
    } catch (err) {
      this.#log.debug(`Cannot map "${name}" to discard it: ${this.#api.errors.errorMessage(err)}`);
      return;
    }
    try {
      await this.#api.exec("blkdiscard", [join(MAPPER_DIR, name)]);
    } catch (err) {
      this.#log.debug(`blkdiscard of "${name}" failed: ${this.#api.errors.errorMessage(err)}`);
    } finally {
      await dm.remove(name).catch(() => {});
    }
  }

  /** How a live table differs from the thin device `devID` of `size` bytes; "" when it is that. */
  async #otherTable(live: string, o: { size: number; devID: number }): Promise<string> {
    return compareThinTable(parseTable(live), {
      sectors: Math.ceil(o.size / 512),
      pool: await this.#pool.mapperNumber(this.#pool.name),
      devID: o.devID,
    });
  }

  #table(size: number, devID: number): string {
    return thinTable({ sectors: Math.ceil(size / 512), pool: this.#cfg.ThinpoolDevice, devID });
  }

  /** Activates a volume's device when it is not active; verifies the table when it is. */
  async #activate(vol: Volume) {
    const name = this.#deviceName(vol);
    const live = await this.#pool.dm.table(name);
    if (live === undefined) {
      await this.#pool.dm.create(name, this.#table(vol.size, vol.fields.DevID));
      this.#log.info(`Activated volume "${vol.name}" as "${join(MAPPER_DIR, name)}"`, {
        volume: vol.name,
        devID: vol.fields.DevID,
      });
    } else {
      const diff = await this.#otherTable(live, { size: vol.size, devID: vol.fields.DevID });
      if (diff) {
        throw new this.#api.errors.ConflictError(
          `device-mapper device "${name}" exists with another table (${diff})`,
        );
      }
    }
    await this.#pool.mapperNumber(name);
    return {
      path: join(MAPPER_DIR, name),
      fields: vol.fields.DeviceName ? undefined : { ...vol.fields, DeviceName: name },
    };
  }

  // ---- snapshots ---------------------------------------------------------------------------

  /**
   * `create_snap <new id> <origin id>` with the origin suspended when it is active (suspending
   * also freezes a mounted filesystem, so the snapshot is consistent); the origin is resumed
   * whatever happened.
   */
  async #createSnapshot(vol: Volume): Promise<{ fields: SnapshotFields }> {
    const device = this.#deviceName(vol);
    const dm = this.#pool.dm;
    const active = (await dm.table(device)) !== undefined;
    if (active) await dm.suspend(device);
    let devID: number | undefined;
    let failure: unknown;
    try {
      devID = await this.#ids.withNew((id) => `create_snap ${id} ${vol.fields.DevID}`);
    } catch (err) {
      failure = err;
    }
    if (active) {
      try {
        await dm.resume(device);
      } catch (err) {
        this.#log.error(
          `Cannot resume "${device}" after a snapshot: ${this.#api.errors.errorMessage(err)}`,
          { volume: vol.name },
        );
        if (devID !== undefined) {
          await this.#ids.delete([devID], `rolling back a snapshot of volume "${vol.name}"`);
        }
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    return { fields: { DevID: devID!, Activated: false } };
  }

  async #removeSnapshot(
    vol: Volume,
    snap: Snapshot,
    opts: { unrecorded?: boolean; keepData?: boolean } = {},
  ): Promise<void> {
    // A reference-only volume delete keeps the snapshot in the pool, with the volume (Kept).
    if (opts.keepData) return;
    await this.#ids.delete(
      [snap.fields.DevID],
      `${
        opts.unrecorded ? "rolling back" : "deleting"
      } snapshot "${snap.name}" of volume "${vol.name}"`,
    );
  }

  /** Activates a snapshot read-only (removed again by close). */
  async #openSnapshot(vol: Volume, snap: Snapshot): Promise<SnapshotSource> {
    const what = `Cannot open snapshot "${snap.name}" of volume "${vol.name}"`;
    const dm = this.#pool.dm;
    const device = snapshotDeviceName(this.#pool.name, vol.name, snap.name);
    let created = false;
    try {
      const live = await dm.table(device);
      let reuse = false;
      if (live !== undefined) {
        const diff = await this.#otherTable(live, { size: vol.size, devID: snap.fields.DevID });
        if (diff) await dm.remove(device);
        else reuse = true;
      }
      if (!reuse) {
        await dm.create(device, this.#table(vol.size, snap.fields.DevID), { readonly: true });
        created = true;
      }
      await this.#pool.mapperNumber(device);
    } catch (err) {
      if (created) await dm.remove(device).catch(() => {});
      throw this.#wrap(err, what);
    }
    return { kind: "device", path: join(MAPPER_DIR, device), close: () => dm.remove(device) };
  }

  /**
   * The 2 MiB ranges of `snap` that differ from `base` (every provisioned range without a
   * base), from thin_delta. Pool blocks of any size are rounded out to 2 MiB backup blocks.
   */
  async #compare(vol: Volume, snap: Snapshot, base: Snapshot | undefined): Promise<ChangedRanges> {
    const started = performance.now();
    const full = !base;
    const what = `Cannot compare snapshot "${snap.name}" of volume "${vol.name}"${
      full ? "" : ` with snapshot "${base.name}"`
    }`;
    try {
      const xml = await this.#pool.thinDelta((base ?? snap).fields.DevID, snap.fields.DevID);
      const delta = parseThinDelta(xml);
      const blockSectors = delta.blockSectors || this.#cfg.ThinpoolBlockSize;
      const kinds = full
        ? ["same", "different", "left_only", "right_only"] as const
        : ["different", "left_only", "right_only"] as const;
      const mappings = deltaToMappings(delta.ranges, {
        kinds,
        blockBytes: blockSectors * 512,
        limit: vol.size,
      });
      const stats: CompareStats = {
        method: full ? "full" : "incremental",
        ranges: delta.ranges.filter((r) => (kinds as readonly string[]).includes(r.kind)).length,
        blocks: mappings.reduce((n, m) => n + m.size / BACKUP_BLOCK_SIZE, 0),
        poolBlockSize: blockSectors * 512,
        ms: Math.round(performance.now() - started),
      };
      this.#log.info(
        `Compared snapshot "${snap.name}" of volume "${vol.name}" with ${
          full ? "nothing (full)" : `"${base.name}"`
        }`,
        { volume: vol.name, snapshot: snap.name, base: base?.name ?? "", ...stats },
      );
      return { mappings, blockSize: BACKUP_BLOCK_SIZE };
    } catch (err) {
      throw this.#wrap(err, what);
    }
  }

  // ---- the adapter -------------------------------------------------------------------------

  adapter(): BlockDeviceAdapter<VolumeFields, SnapshotFields> {
    const z = this.#api.deps.z;
    const cfg = this.#cfg;
    return {
      capabilities: {
        // Suspending the origin for create_snap freezes its filesystem.
        freezeForSnapshot: false,
        filesystem: cfg.Filesystem,
        // Thin devices read zeros where nothing was written: no discard before mkfs.
        discardOnMkfs: false,
        sizeAlignment: sizeAlignment(cfg.ThinpoolBlockSize),
        defaultSize: cfg.DefaultVolumeSize,
      },
      records: { dir: ".", prefix: "devicemapper_volume_" },
      volumeFields: z.looseObject({
        DevID: z.number().int().nonnegative(),
        Base: z.string().default(""),
        DeviceName: z.string().optional(),
      }),
      snapshotFields: z.looseObject({
        DevID: z.number().int().nonnegative(),
        Activated: z.boolean().default(false),
      }),
      createDevice: (req) => this.#createDevice(req),
      recorded: (vol, snap) => this.#recorded(vol, snap),
      beforeRemove: (vol, what) => this.#beforeRemove(vol, what),
      removeDevice: (vol, opts) => this.#removeDevice(vol, opts),
      activate: (vol) => this.#activate(vol),
      deactivate: async (vol) => await this.#pool.dm.remove(this.#deviceName(vol)),
      createSnapshot: (vol) => this.#createSnapshot(vol),
      removeSnapshot: (vol, snap, opts) => this.#removeSnapshot(vol, snap, opts),
      openSnapshot: (vol, snap) => this.#openSnapshot(vol, snap),
      compareSnapshots: (vol, snap, base) => this.#compare(vol, snap, base),
      info: () => {
        const c = this.#cfg;
        return {
          Driver: DRIVER_NAME,
          Root: c.Root,
          DataDevice: c.DataDevice,
          MetadataDevice: c.MetadataDevice,
          ThinpoolDevice: c.ThinpoolDevice,
          ThinpoolSize: String(c.ThinpoolSize),
          ThinpoolBlockSize: String(c.ThinpoolBlockSize * 512),
          DefaultVolumeSize: String(c.DefaultVolumeSize),
          Filesystem: c.Filesystem,
        };
      },
      volumeInfo: (vol) => ({ DevID: String(vol.fields.DevID) }),
      snapshotInfo: (_vol, snap) => ({ UUID: snap.name, DevID: String(snap.fields.DevID) }),
      start: (volumes, o) => this.#start(volumes, o),
    };
  }
}
