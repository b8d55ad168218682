/**
 * The devicemapper driver: every volume is a thin device of one device-mapper thin pool
 * (`dm.datadev` + `dm.metadatadev`), formatted with ext4 or xfs and mounted on demand.
 * Snapshots are thin snapshots (`create_snap`, the origin suspended for a consistent point).
 * Backups are Convoy's delta-block backups: `thin_delta` on a reserved metadata snapshot tells
 * the engine which 2 MiB blocks changed since the last backed-up snapshot.
 *
 * On-disk layout (Convoy's files and fields, plus a few of ours):
 *
 * ```
 * <root>/devicemapper.cfg                   {"Root","DataDevice","MetadataDevice","ThinpoolDevice",
 *                                           "ThinpoolSize","ThinpoolBlockSize","DefaultVolumeSize",
 *                                           "LastDevID","Filesystem","Kept","PendingDevIDs"}
 * <root>/devicemapper_volume_<name>.json    {"Name","DevID","Size","Base","MountPoint","CreatedTime",
 *                                           "Snapshots":{"<snap>":{"Name","CreatedTime","DevID","Activated"}},
 *                                           "Filesystem","UUID","DeviceName"}
 * <root>/mounts/<name>/                     the default mount point
 * /dev/mapper/<dm.thinpoolname>             the pool
 * /dev/mapper/convoy-<pool>-<name>          a volume (see dm.ts for the naming rules)
 * /dev/mapper/convoy-<pool>-<name>@<snap>   a snapshot, read-only, only while a backup reads it
 * ```
 *
 * Start-up: the first start zeroes the metadata header and creates the pool; later starts re-use
 * an active pool with the expected table or re-create it with the saved table, then re-activate
 * every volume (also when the pool was already active) and re-mount every recorded mount at its
 * recorded mount point. A pool that cannot be activated gives an error with recovery advice.
 *
 * Thin ids are journaled (`PendingDevIDs`): an id is added in the same atomic write of
 * devicemapper.cfg that hands it out, or before a delete removes the record that references it,
 * and cleared once a record references it or the pool no longer has it. A daemon killed in
 * between leaves the id journaled; the next start deletes each journaled id that no record and
 * no Kept entry references (after removing any device mapping it). Ids that were never
 * journaled (made by another tool) are never deleted. The one window left: killed after the
 * journal write but before the pool message, an id the pool never made stays journaled, and
 * were another tool to take that very id before the next start, that start would delete it.
 *
 * ReferenceOnly delete never destroys data: the volume's device is deactivated and its record
 * moves to `Kept` in devicemapper.cfg, with its thin device and snapshots left in the pool;
 * creating a volume of the same name adopts them again (and a normal delete then frees them).
 * @module
 */
import { open, readdir, stat } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import type {
  ConvoyDriver,
  DeltaBlockOperations,
  KeyedLock,
  Logger,
  Mappings,
  MountEntry,
  OperationContext,
  PluginApi,
  RecordStore,
  StringMap,
  UseCounter,
} from "../../mod.ts";
import {
  CONFIG_FILE,
  type DmConfig,
  type FirstStartOptions,
  loadOrCreateConfig,
  MAPPER_DIR,
  poolName,
  saveConfig,
} from "./config.ts";
import {
  BACKUP_BLOCK_SIZE,
  BUSY,
  comparePoolTable,
  compareThinTable,
  deltaToMappings,
  devNumber,
  DmSetup,
  EXISTS,
  failedWith,
  isSnapshotDeviceName,
  MAX_DEV_ID,
  mountsOfDevice,
  NO_DATA,
  parsePoolStatus,
  parseTable,
  parseThinDelta,
  poolTable,
  roundUp,
  sizeAlignment,
  snapshotDeviceName,
  thinTable,
  volumeDeviceName,
} from "./dm.ts";
import {
  createSchemas,
  OPT_DATA_DEVICE,
  OPT_METADATA_DEVICE,
  OPT_THINPOOL_NAME,
  type Schemas,
  type SnapshotRecord,
  type VolumeRecord,
} from "./options.ts";

/** The driver's name. */
export const DRIVER_NAME = "devicemapper";

/** dm-thin's superblock magic (le64 at byte 32 of the metadata device). */
const THIN_SUPERBLOCK_MAGIC = 27022010n;
/** A volume record's file is `<root>/<RECORD_PREFIX><name>.json`. */
const RECORD_PREFIX = "devicemapper_volume_";
const CFG_LOCK = "\u0000config";
const METADATA_SNAP_LOCK = "\u0000metadata-snap";
/** Attempts at a free thin id when the pool already has the next one (an id lost by a crash). */
const ID_ATTEMPTS = 16;

/** What one compareSnapshot did (logged; tests read it). */
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

/** The devicemapper ConvoyDriver, with its delta-block operations reachable for tests and tools. */
export interface DmConvoyDriver extends ConvoyDriver {
  /** A DeltaBlockOperations session (what a backup uses); call close() when done. */
  deltaOps(ctx?: OperationContext): { ops: DeltaBlockOperations; close(): Promise<void> };
}

/**
 * Creates a devicemapper driver instance (Convoy's InitFunc). `root` is
 * `<daemon root>/devicemapper`; `config` is the `--driver-opts` map, read only on the first
 * start.
 */
export async function createDevicemapperDriver(
  api: PluginApi,
  root: string,
  config: StringMap,
): Promise<DmConvoyDriver> {
  const log = api.log.child({ pkg: "devicemapper", driver: DRIVER_NAME });
  const driverRoot = resolve(root);
  await api.util.ensureDir(driverRoot);
  const driver = new DmDriver(api, { root: driverRoot, schemas: createSchemas(api), log });
  await driver.init(config ?? {});
  return driver.convoyDriver();
}

/** An open snapshot device of a backup session. */
interface OpenSnapshot {
  device: string;
  fh: FileHandle;
  release: () => void;
}

class DmDriver {
  #api: PluginApi;
  #root: string;
  #schemas: Schemas;
  #log: Logger;
  #dm: DmSetup;
  #cfg!: DmConfig;
  #locks: KeyedLock;
  #records: RecordStore<VolumeRecord>;
  /** (volume, snapshot) pairs a backup is reading, with reader counts; they cannot be deleted. */
  #inUse: UseCounter;
  /** The pool's held metadata root at start-up ("-": none; undefined: a new pool). */
  #heldRoot: string | undefined;
  /** True when start-up found the pool active (the daemon restarted, the host did not). */
  #poolWasActive = false;

  constructor(api: PluginApi, opts: { root: string; schemas: Schemas; log: Logger }) {
    this.#api = api;
    this.#locks = api.util.createLock();
    this.#inUse = api.util.createUseCounter();
    this.#root = opts.root;
    this.#schemas = opts.schemas;
    this.#log = opts.log;
    this.#records = api.util.createRecordStore({
      dir: opts.root,
      prefix: RECORD_PREFIX,
      schema: opts.schemas.volumeRecord,
      nameField: "Name",
      kind: "volume",
      log: opts.log,
    });
    this.#dm = new DmSetup(api, opts.log);
  }

  // ---- names and paths ---------------------------------------------------------------------

  get #pool(): string {
    return poolName(this.#cfg);
  }
  get #configFile(): string {
    return join(this.#root, CONFIG_FILE);
  }
  get #mountsDir(): string {
    return join(this.#root, "mounts");
  }
  #defaultMountPoint(name: string): string {
    return join(this.#mountsDir, name);
  }
  /** The volume's device-mapper name: recorded, or Convoy's bare name for Convoy's records. */
  #deviceName(rec: VolumeRecord): string {
    return rec.DeviceName || rec.Name;
  }
  #devicePath(rec: VolumeRecord): string {
    return join(MAPPER_DIR, this.#deviceName(rec));
  }
  #alignment(): number {
    return sizeAlignment(this.#cfg.ThinpoolBlockSize);
  }

  // ---- start-up ----------------------------------------------------------------------------

  async init(config: StringMap): Promise<void> {
    let created: DmConfig | undefined;
    let loaded;
    try {
      loaded = await loadOrCreateConfig(this.#api, this.#schemas, {
        root: this.#root,
        config,
        log: this.#log,
        create: async (o) => (created = await this.#firstStart(o)),
      });
    } catch (err) {
      if (!created) throw err;
      // The pool was made but its configuration could not be saved: take the pool down again.
      await this.#dm.remove(poolName(created)).catch(() => {});
      throw new this.#api.errors.BackendError(
        `Cannot start the devicemapper driver: cannot save "${this.#configFile}": ${
          this.#api.errors.errorMessage(err)
        }`,
        { cause: err },
      );
    }
    this.#cfg = loaded.cfg;
    if (loaded.created) {
      this.#log.info(`Created thin pool "${this.#pool}"`, {
        pool: this.#pool,
        dataDevice: this.#cfg.DataDevice,
        metadataDevice: this.#cfg.MetadataDevice,
        size: this.#cfg.ThinpoolSize,
        blockSize: this.#cfg.ThinpoolBlockSize * 512,
        file: this.#configFile,
      });
    } else {
      await this.#startPool();
      if (loaded.dirty) await saveConfig(this.#api, this.#cfg);
    }
    await this.#api.util.ensureDir(this.#mountsDir);
    await this.#cleanLeftovers();
    await this.#checkKept();
    await this.#cleanPendingIDs();
    await this.#restoreVolumes();
  }

  /** `major:minor` of a block device; InvalidArgumentError naming the option when it is not one. */
  async #blockDevice(path: string, what: string): Promise<string> {
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      throw new this.#api.errors.InvalidArgumentError(
        `${what} "${path}" does not exist${
          this.#api.util.errno(err) === "ENOENT" ? "" : `: ${this.#api.errors.errorMessage(err)}`
        }`,
        { cause: err },
      );
    }
    if (!st.isBlockDevice()) {
      throw new this.#api.errors.InvalidArgumentError(`${what} "${path}" is not a block device`);
    }
    return devNumber(st.rdev);
  }

  /** Fails clearly when the kernel has no device-mapper; warns when thin-pool is not loaded. */
  async #checkDeviceMapper(what: string): Promise<void> {
    let targets: string;
    try {
      targets = (await this.#api.exec("dmsetup", ["targets"])).stdout;
    } catch (err) {
      throw new this.#api.errors.BackendError(
        `${what}: device-mapper is not available (${this.#api.errors.errorMessage(err)}); ` +
          `it needs a kernel with device-mapper and dm-thin-pool (modprobe dm-thin-pool) ` +
          `and the dmsetup command`,
        { cause: err },
      );
    }
    if (!/^thin-pool\s/m.test(targets)) {
      this.#log.warn(
        "The thin-pool target is not loaded yet; creating the pool should load it " +
          "(modprobe dm-thin-pool)",
      );
    }
  }

  async #deviceSize(path: string): Promise<number> {
    const { stdout } = await this.#api.exec("blockdev", ["--getsize64", path]);
    const n = Number(stdout.trim());
    if (!Number.isSafeInteger(n) || n <= 0) {
      throw new this.#api.errors.BackendError(
        `blockdev printed no size for "${path}": ${JSON.stringify(stdout)}`,
      );
    }
    return n;
  }

  /** True when the metadata device starts with a thin-pool superblock. */
  async #hasPoolMetadata(path: string): Promise<boolean> {
    const fh = await open(path, "r");
    try {
      const buf = new Uint8Array(4096);
      await this.#api.util.readFull(fh, { buf, pos: 0 });
      return new DataView(buf.buffer).getBigUint64(32, true) === THIN_SUPERBLOCK_MAGIC;
    } finally {
      await fh.close();
    }
  }

  /** Zeroes the first 4 KiB of the metadata device: the pool then formats fresh metadata. */
  async #zeroMetadataHeader(path: string): Promise<void> {
    const fh = await open(path, "r+");
    try {
      await fh.write(new Uint8Array(4096), 0, 4096, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  /** The first start: validate the devices, create the pool; the caller saves the config. */
  async #firstStart(o: FirstStartOptions): Promise<DmConfig> {
    const what = "Cannot start the devicemapper driver";
    const { InvalidArgumentError, ConflictError, BackendError } = this.#api.errors;
    let data: string;
    let meta: string;
    try {
      data = await this.#blockDevice(o.dataDevice, `${OPT_DATA_DEVICE}`);
      meta = await this.#blockDevice(o.metadataDevice, `${OPT_METADATA_DEVICE}`);
    } catch (err) {
      throw new InvalidArgumentError(`${what}: ${this.#api.errors.errorMessage(err)}`, {
        cause: err,
      });
    }
    if (data === meta) {
      throw new InvalidArgumentError(
        `${what}: ${OPT_DATA_DEVICE} "${o.dataDevice}" and ${OPT_METADATA_DEVICE} ` +
          `"${o.metadataDevice}" are the same device (${data})`,
      );
    }
    await this.#checkDeviceMapper(what);
    const live = await this.#dm.table(o.poolName);
    if (live !== undefined) {
      throw new ConflictError(
        `${what}: a device-mapper device named "${o.poolName}" already exists ` +
          `(table "${live.trim()}") and "${this.#configFile}" does not: it is not this ` +
          `driver's pool; choose another ${OPT_THINPOOL_NAME}`,
      );
    }
    const size = await this.#deviceSize(o.dataDevice);
    const blockBytes = o.blockSectors * 512;
    if (size < blockBytes) {
      throw new InvalidArgumentError(
        `${what}: ${OPT_DATA_DEVICE} "${o.dataDevice}" (${size} bytes) is smaller than one ` +
          `pool block (${blockBytes} bytes)`,
      );
    }
    if (await this.#hasPoolMetadata(o.metadataDevice)) {
      throw new ConflictError(
        `${what}: ${OPT_METADATA_DEVICE} "${o.metadataDevice}" already holds thin-pool ` +
          `metadata, but "${this.#configFile}" does not exist. Creating a pool there would ` +
          `destroy every thin device in it. Restore the saved configuration, or, to start ` +
          `over and lose that data, zero the header first: ` +
          `dd if=/dev/zero of=${o.metadataDevice} bs=4096 count=1`,
      );
    }
    const sectors = Math.floor(size / 512);
    await this.#zeroMetadataHeader(o.metadataDevice);
    const table = poolTable({
      sectors,
      metadata: o.metadataDevice,
      data: o.dataDevice,
      blockSectors: o.blockSectors,
    });
    try {
      await this.#dm.create(o.poolName, table);
    } catch (err) {
      throw new BackendError(
        `${what}: cannot create the thin pool "${o.poolName}": ${
          this.#api.errors.errorMessage(err)
        }`,
        {
          cause: err,
        },
      );
    }
    return {
      Root: this.#root,
      DataDevice: o.dataDevice,
      MetadataDevice: o.metadataDevice,
      ThinpoolDevice: join(MAPPER_DIR, o.poolName),
      ThinpoolSize: sectors * 512,
      ThinpoolBlockSize: o.blockSectors,
      DefaultVolumeSize: o.defaultVolumeSize,
      LastDevID: 0,
      Filesystem: o.filesystem,
      Kept: {},
      PendingDevIDs: [],
    };
  }

  /** Later starts: re-use the active pool (same table) or activate it again with the saved table. */
  async #startPool(): Promise<void> {
    const cfg = this.#cfg;
    const pool = this.#pool;
    const what = `Cannot start the devicemapper driver with thin pool "${pool}"`;
    const { ConflictError, BackendError, InvalidArgumentError } = this.#api.errors;
    let data: string;
    let meta: string;
    try {
      data = await this.#blockDevice(cfg.DataDevice, "the data device");
      meta = await this.#blockDevice(cfg.MetadataDevice, "the metadata device");
    } catch (err) {
      throw new InvalidArgumentError(
        `${what}: ${this.#api.errors.errorMessage(err)} (recorded in "${this.#configFile}")`,
        { cause: err },
      );
    }
    let live: string | undefined;
    try {
      live = await this.#dm.table(pool);
    } catch (err) {
      await this.#checkDeviceMapper(what);
      throw err;
    }
    if (live !== undefined) {
      const diff = comparePoolTable(parseTable(live), {
        metadata: meta,
        data,
        blockSectors: cfg.ThinpoolBlockSize,
      });
      if (diff) {
        throw new ConflictError(
          `${what}: a device-mapper device named "${pool}" exists with another table ` +
            `(${diff}): it is not the pool of "${this.#configFile}"`,
        );
      }
      const status = parsePoolStatus((await this.#dm.status(pool)) ?? "");
      this.#heldRoot = status?.heldRoot ?? "-";
      this.#poolWasActive = true;
      if (!status || /^(Fail|Error)$/i.test(status.mode)) {
        throw new BackendError(
          `${what}: the pool has failed (status "${status?.mode ?? "unknown"}"). ` +
            this.#repairAdvice(),
        );
      }
      if (status.needsCheck || status.mode === "ro") {
        this.#log.warn(
          `Thin pool "${pool}" is ${
            status.needsCheck ? "flagged needs_check" : "read-only"
          }: volumes cannot be written. ${this.#repairAdvice()}`,
          { pool, mode: status.mode },
        );
      }
      this.#log.info(`Re-using the active thin pool "${pool}"`, { pool });
      return;
    }
    const table = poolTable({
      sectors: Math.floor(cfg.ThinpoolSize / 512),
      metadata: cfg.MetadataDevice,
      data: cfg.DataDevice,
      blockSectors: cfg.ThinpoolBlockSize,
    });
    try {
      await this.#dm.create(pool, table);
    } catch (err) {
      let check: string;
      try {
        const r = await this.#api.exec("thin_check", [cfg.MetadataDevice]);
        check = `thin_check found no problem in the metadata (${
          (r.stdout + r.stderr).trim().split("\n").slice(-1)[0] || "ok"
        }); check that the devices are not in use by another pool or program`;
      } catch (checkErr) {
        check = `thin_check reports damaged metadata: ${this.#api.errors.errorMessage(checkErr)}`;
      }
      throw new BackendError(
        `${what}: cannot activate the pool: ${
          this.#api.errors.errorMessage(err)
        }. ${check}. ${this.#repairAdvice()}`,
        { cause: err },
      );
    }
    this.#heldRoot = parsePoolStatus((await this.#dm.status(pool)) ?? "")?.heldRoot;
    this.#log.info(`Activated thin pool "${pool}"`, { pool, table });
  }

  #repairAdvice(): string {
    const meta = this.#cfg.MetadataDevice;
    return `To recover: deactivate the pool and its volumes (dmsetup remove), run ` +
      `"thin_check ${meta}"; if it reports errors, repair the metadata onto a spare device of ` +
      `the same size with "thin_repair -i ${meta} -o <spare>", copy it back ` +
      `("dd if=<spare> of=${meta}") and restart the daemon. Never zero the metadata device: ` +
      `that loses every volume`;
  }

  /**
   * Removes what an interrupted operation left: snapshot devices of a backup, a reserved
   * metadata snapshot, Kept entries of volumes that exist again.
   */
  async #cleanLeftovers(): Promise<void> {
    const pool = this.#pool;
    // Snapshot devices can only be left on a pool that stayed active (a daemon crash).
    for (const name of this.#poolWasActive ? await this.#dm.list() : []) {
      if (!isSnapshotDeviceName(pool, name)) continue;
      this.#log.info(`Removing the snapshot device "${name}" left by an interrupted backup`);
      await this.#dm.remove(name, 10).catch((err) =>
        this.#log.warn(`Cannot remove "${name}": ${this.#api.errors.errorMessage(err)}`)
      );
    }
    // A reserved metadata snapshot is kept in the metadata: also after a reboot.
    if (this.#heldRoot && this.#heldRoot !== "-") {
      this.#log.warn(
        `Releasing the metadata snapshot of pool "${pool}" left reserved by an interrupted backup`,
      );
      await this.#dm.message(pool, "release_metadata_snap").catch((err) =>
        this.#log.warn(
          `Cannot release the metadata snapshot: ${this.#api.errors.errorMessage(err)}`,
        )
      );
    }
  }

  /** Drops Kept entries of volumes that exist again (a crash during an adopt) and lists the rest. */
  async #checkKept(): Promise<void> {
    const kept = Object.keys(this.#cfg.Kept);
    let dirty = false;
    for (const name of kept) {
      const rec = await this.#records.read(name).catch(() => undefined);
      if (rec && rec.DevID === this.#cfg.Kept[name].DevID) {
        delete this.#cfg.Kept[name];
        dirty = true;
      }
    }
    if (dirty) await saveConfig(this.#api, this.#cfg);
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

  /**
   * Every thin id the records and Kept reference. Throws when a record file cannot be read: the
   * ids it holds are unknown then.
   */
  async #referencedIDs(): Promise<Set<number>> {
    const ids = new Set<number>();
    const add = (rec: VolumeRecord) => {
      ids.add(rec.DevID);
      for (const s of Object.values(rec.Snapshots)) ids.add(s.DevID);
    };
    for (const rec of Object.values(this.#cfg.Kept)) add(rec);
    for (const entry of await readdir(this.#root)) {
      if (entry.startsWith(".") || !entry.startsWith(RECORD_PREFIX) || !entry.endsWith(".json")) {
        continue;
      }
      const name = entry.slice(RECORD_PREFIX.length, -".json".length);
      const rec = await this.#records.read(name);
      if (rec) add(rec);
    }
    return ids;
  }

  /** The active thin devices of the pool, by thin id. */
  async #thinDevices(): Promise<Map<number, string[]>> {
    const pool = await this.#mapperNumber(this.#pool);
    const out = new Map<number, string[]>();
    for (const name of await this.#dm.list()) {
      const t = parseTable((await this.#dm.table(name)) ?? "");
      if (t?.type !== "thin" || t.args[0] !== pool || !/^\d+$/.test(t.args[1] ?? "")) continue;
      const id = Number(t.args[1]);
      out.set(id, [...out.get(id) ?? [], name]);
    }
    return out;
  }

  /**
   * Finishes what a killed create or delete left in the journal (PendingDevIDs): an id that a
   * record or Kept references is only cleared; any other is deleted from the pool (the devices
   * mapping it removed first; an id the pool does not have is fine), then cleared. Never throws:
   * an id that cannot be deleted is logged and stays journaled for the next start. When a record
   * cannot be read, nothing is deleted (the ids it references are unknown).
   */
  async #cleanPendingIDs(): Promise<void> {
    const pending = [...this.#cfg.PendingDevIDs];
    if (!pending.length) return;
    const pool = this.#pool;
    const why = (err: unknown) =>
      `${this.#api.errors.errorMessage(err)}; the next start tries again`;
    let referenced: Set<number>;
    let devices: Map<number, string[]>;
    try {
      referenced = await this.#referencedIDs();
      devices = await this.#thinDevices();
    } catch (err) {
      this.#log.warn(
        `Not deleting the thin ids ${pending.join(", ")} left by interrupted operations: ${
          why(err)
        }`,
        { pool, devIDs: pending },
      );
      return;
    }
    const done: number[] = [];
    for (const id of pending) {
      if (referenced.has(id)) {
        done.push(id);
        continue;
      }
      try {
        for (const name of devices.get(id) ?? []) {
          await this.#dm.remove(name, 10);
          this.#log.info(`Removed device "${name}" of the orphaned thin id ${id}`, {
            pool,
            devID: id,
            device: name,
          });
        }
        await this.#deleteThinID(id);
        this.#log.info(`Deleted thin id ${id}, orphaned by an interrupted operation`, {
          pool,
          devID: id,
        });
        done.push(id);
      } catch (err) {
        this.#log.warn(`Cannot delete the orphaned thin id ${id}: ${why(err)}`, {
          pool,
          devID: id,
        });
      }
    }
    await this.#settle(done);
  }

  /** Re-activates every volume and re-mounts recorded mounts; failures are logged. */
  async #restoreVolumes(): Promise<void> {
    for (const { name, record } of await this.#records.list()) {
      try {
        const rec = await this.#upgradeRecord(record);
        const dev = await this.#ensureActive(rec);
        if (await this.#dm.suspended(this.#deviceName(rec))) {
          // A snapshot create killed between suspend and resume: its I/O would wait forever.
          await this.#dm.resume(this.#deviceName(rec));
          this.#log.warn(
            `Resumed volume "${name}", left suspended by an interrupted snapshot create`,
            { volume: name },
          );
        }
        if (!rec.MountPoint) continue;
        const entry = await this.#api.util.mounts.mountAt(rec.MountPoint);
        if (await this.#isMountOf(entry, dev.number)) continue;
        if (entry) {
          throw new this.#api.errors.ConflictError(
            `"${rec.MountPoint}" is a mount point of "${entry.source}"`,
          );
        }
        await this.#fs.mount(dev.path, rec.MountPoint, { fs: rec.Filesystem });
        this.#log.info(`Restored the mount of volume "${name}" at "${rec.MountPoint}"`, {
          volume: name,
          device: dev.path,
          mountpoint: rec.MountPoint,
        });
      } catch (err) {
        this.#log.error(`Cannot restore volume "${name}": ${this.#api.errors.errorMessage(err)}`, {
          volume: name,
        });
      }
    }
  }

  /** Fills in what Convoy's records lack: a UUID, the device name, an ext4 default. */
  async #upgradeRecord(rec: VolumeRecord): Promise<VolumeRecord> {
    if (rec.UUID && rec.DeviceName && rec.Filesystem) return rec;
    const out = {
      ...rec,
      UUID: rec.UUID || crypto.randomUUID(),
      DeviceName: rec.DeviceName || rec.Name,
      Filesystem: rec.Filesystem || "ext4",
    };
    await this.#writeRecord(out);
    return out;
  }

  // ---- records -----------------------------------------------------------------------------

  #validVolumeName(id: unknown): string {
    return this.#api.util.validateName(id, "volume");
  }

  #serialize(r: VolumeRecord) {
    const snapshots: Record<string, SnapshotRecord> = {};
    for (const [k, s] of Object.entries(r.Snapshots)) {
      snapshots[k] = {
        Name: s.Name,
        CreatedTime: s.CreatedTime,
        DevID: s.DevID,
        Activated: s.Activated,
      };
    }
    return {
      Name: r.Name,
      DevID: r.DevID,
      Size: r.Size,
      Base: r.Base,
      MountPoint: r.MountPoint,
      CreatedTime: r.CreatedTime,
      Snapshots: snapshots,
      Filesystem: r.Filesystem,
      UUID: r.UUID,
      DeviceName: r.DeviceName,
    };
  }

  async #writeRecord(r: VolumeRecord): Promise<void> {
    await this.#records.write(r.Name, this.#serialize(r));
  }

  /** Runs `fn` on the configuration under its lock, then saves it; reverted on failure. */
  async #updateConfig<T>(fn: (cfg: DmConfig) => T): Promise<T> {
    return await this.#locks.run(CFG_LOCK, async () => {
      const before = structuredClone(this.#cfg);
      const out = fn(this.#cfg);
      try {
        await saveConfig(this.#api, this.#cfg);
      } catch (err) {
        this.#cfg = before;
        throw err;
      }
      return out;
    });
  }

  /** A new thin device id, saved (LastDevID) and journaled (PendingDevIDs) in one write before use. */
  async #allocateDevID(): Promise<number> {
    return await this.#updateConfig((cfg) => {
      const id = cfg.LastDevID + 1;
      if (id > MAX_DEV_ID) {
        throw new this.#api.errors.BackendError(
          `Thin pool "${this.#pool}" has run out of thin device ids (${MAX_DEV_ID})`,
        );
      }
      cfg.LastDevID = id;
      cfg.PendingDevIDs = [...cfg.PendingDevIDs, id];
      return id;
    });
  }

  /**
   * Sends `msg(id)` with a fresh journaled id; the caller clears it (#settle) once a record
   * references it, or deletes it (#deleteIDs). When the pool already has that id (made by
   * another tool, or lost by a crash of a version without the journal), it is not ours: it
   * leaves the journal, is never deleted, and the next id is tried. On any other failure the id
   * is deleted in case the pool made it (a failed metadata commit, a timeout).
   */
  async #withNewDevID(msg: (id: number) => string): Promise<number> {
    for (let attempt = 1;; attempt++) {
      const id = await this.#allocateDevID();
      try {
        await this.#dm.message(this.#pool, msg(id));
        return id;
      } catch (err) {
        if (!failedWith(err, EXISTS)) {
          await this.#deleteIDs([id], `"${msg(id)}" failed`);
          throw err;
        }
        await this.#settle([id]);
        if (attempt >= ID_ATTEMPTS) throw err;
        this.#log.warn(`Thin id ${id} is taken in pool "${this.#pool}"; trying the next one`);
      }
    }
  }

  /**
   * Deletes thin ids a delete no longer needs, in the order journal, record, ids: `unrecord`
   * removes them from the record. Killed before that, the record is as it was; after, the next
   * start deletes the ids (as it does when the pool refuses now). Throws only when journaling or
   * `unrecord` fails, and then the ids leave the journal again.
   */
  async #retireIDs(
    ids: number[],
    opts: { unrecord: () => Promise<unknown>; why: string },
  ): Promise<void> {
    await this.#updateConfig((cfg) => {
      cfg.PendingDevIDs = [...new Set([...cfg.PendingDevIDs, ...ids])];
    });
    try {
      await opts.unrecord();
    } catch (err) {
      await this.#settle(ids);
      throw err;
    }
    await this.#deleteIDs(ids, opts.why);
  }

  /**
   * Clears `ids` from the journal: a record references them, the pool no longer has them, or
   * they are not ours. Never throws, and never reverted: when the save fails, the next save
   * drops them from the file.
   */
  async #settle(ids: number[]): Promise<void> {
    if (!ids.length) return;
    await this.#locks.run(CFG_LOCK, async () => {
      this.#cfg.PendingDevIDs = this.#cfg.PendingDevIDs.filter((id) => !ids.includes(id));
      try {
        await saveConfig(this.#api, this.#cfg);
      } catch (err) {
        this.#log.warn(
          `Cannot clear thin ids ${ids.join(", ")} from the journal in "${this.#configFile}": ${
            this.#api.errors.errorMessage(err)
          }`,
          { devIDs: ids },
        );
      }
    });
  }

  /** `delete <id>`; an id the pool does not have is fine. */
  async #deleteThinID(id: number): Promise<void> {
    try {
      await this.#dm.message(this.#pool, `delete ${id}`);
    } catch (err) {
      if (!failedWith(err, NO_DATA)) throw err;
    }
  }

  /**
   * Deletes journaled ids that nothing references any more and clears them from the journal.
   * Never throws: an id the pool cannot delete is logged (`why` says what was being done) and
   * stays journaled; the next start deletes it.
   */
  async #deleteIDs(ids: number[], why: string): Promise<void> {
    const deleted: number[] = [];
    for (const id of ids) {
      try {
        await this.#deleteThinID(id);
        deleted.push(id);
      } catch (err) {
        this.#log.warn(
          `Cannot delete thin id ${id} (${why}): ${
            this.#api.errors.errorMessage(err)
          }; the next start deletes it`,
          { pool: this.#pool, devID: id },
        );
      }
    }
    if (deleted.length) await this.#settle(deleted);
  }

  // ---- helpers -----------------------------------------------------------------------------

  /**
   * Re-throws an error with context (`api.errors.wrapError`): BackendErrors (failed commands)
   * and plain errors get the prefix, and so do TimeoutErrors.
   */
  #wrap(err: unknown, prefix: string): unknown {
    const { TimeoutError, wrapError } = this.#api.errors;
    // A command stopped by --cmd-timeout (a stuck device): reported with what was being done.
    if (err instanceof TimeoutError && !err.message.startsWith(prefix)) {
      return new TimeoutError(`${prefix}: ${err.message}`, { cause: err });
    }
    return wrapError(err, prefix);
  }

  /** `major:minor` of the block device at `path`; undefined when it is none (or not a path). */
  async #blockNumber(path: string): Promise<string | undefined> {
    if (!isAbsolute(path)) return undefined;
    try {
      const st = await stat(path);
      return st.isBlockDevice() ? devNumber(st.rdev) : undefined;
    } catch {
      return undefined;
    }
  }

  /**
   * True when `entry` is a mount of the device `major:minor`: device numbers are compared, not
   * paths, as "/dev/mapper/x" and "/dev/dm-3" are the same device.
   */
  async #isMountOf(entry: MountEntry | undefined, number: string): Promise<boolean> {
    return entry !== undefined && (await this.#blockNumber(entry.source)) === number;
  }

  /** Every mount point of the device `major:minor`, whichever of its nodes it was mounted by. */
  async #mountsOf(number: string): Promise<string[]> {
    const entries = await this.#api.util.mounts.list();
    return await mountsOfDevice(entries, number, (source) => this.#blockNumber(source));
  }

  /** `major:minor` of a /dev/mapper node; the node is made when dmsetup left none. */
  async #mapperNumber(name: string): Promise<string> {
    const path = join(MAPPER_DIR, name);
    try {
      return devNumber((await stat(path)).rdev);
    } catch (err) {
      if (this.#api.util.errno(err) !== "ENOENT") throw err;
      await this.#dm.run(["mknodes", name]);
      return devNumber((await stat(path)).rdev);
    }
  }

  /** Activates a volume's device when it is not active; verifies the table when it is. */
  async #ensureActive(rec: VolumeRecord): Promise<{ path: string; number: string }> {
    const name = this.#deviceName(rec);
    const sectors = Math.ceil(rec.Size / 512);
    const live = await this.#dm.table(name);
    if (live === undefined) {
      await this.#dm.create(
        name,
        thinTable({ sectors, pool: this.#cfg.ThinpoolDevice, devID: rec.DevID }),
      );
      this.#log.info(`Activated volume "${rec.Name}" as "${join(MAPPER_DIR, name)}"`, {
        volume: rec.Name,
        devID: rec.DevID,
      });
    } else {
      const diff = compareThinTable(parseTable(live), {
        sectors,
        pool: await this.#mapperNumber(this.#pool),
        devID: rec.DevID,
      });
      if (diff) {
        throw new this.#api.errors.ConflictError(
          `device-mapper device "${name}" exists with another table (${diff})`,
        );
      }
    }
    return { path: join(MAPPER_DIR, name), number: await this.#mapperNumber(name) };
  }

  /**
   * Undoes #newThin once its record is removed: deactivates the device and deletes the id. Never
   * throws: what cannot be undone is logged, and the id stays journaled for the next start.
   */
  async #rollBackThin(name: string, thin: { devID: number; device: string }): Promise<void> {
    try {
      await this.#dm.remove(thin.device);
    } catch (err) {
      this.#log.warn(
        `Cannot roll back volume "${name}": ${this.#api.errors.errorMessage(err)}; ` +
          `the next start deletes thin id ${thin.devID}`,
        { volume: name, devID: thin.devID },
      );
      return;
    }
    await this.#deleteIDs([thin.devID], `rolling back volume "${name}"`);
  }

  /** Creates a thin device of `size` bytes, activated; rolled back on failure. */
  async #newThin(
    name: string,
    opts: { size: number; what: string },
  ): Promise<{ devID: number; device: string; path: string }> {
    const { size, what } = opts;
    const device = volumeDeviceName(this.#pool, name);
    const live = await this.#dm.table(device);
    if (live !== undefined) {
      throw new this.#api.errors.ConflictError(
        `${what}: a device-mapper device named "${device}" already exists ` +
          `(table "${live.trim()}")`,
      );
    }
    const devID = await this.#withNewDevID((id) => `create_thin ${id}`);
    try {
      await this.#dm.create(
        device,
        thinTable({ sectors: size / 512, pool: this.#cfg.ThinpoolDevice, devID }),
      );
    } catch (err) {
      await this.#deleteIDs([devID], `activating "${device}" failed`);
      throw err;
    }
    return { devID, device, path: join(MAPPER_DIR, device) };
  }

  /** The filesystem on a volume's device: the host's helpers, shared by the block drivers. */
  get #fs() {
    return this.#api.util.filesystems;
  }

  // ---- volumes -----------------------------------------------------------------------------

  async createVolume(id: string, opts: StringMap, ctx?: OperationContext): Promise<void> {
    const name = this.#validVolumeName(id);
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.createVolume,
      opts ?? {},
      `options of volume "${name}"`,
    );
    await this.#locks.run(name, async () => {
      if (await this.#records.read(name)) {
        throw new this.#api.errors.AlreadyExistsError(
          `Cannot create volume "${name}": volume already exists`,
        );
      }
      if (o.BackupURL) {
        await this.#createFromBackup(name, {
          url: o.BackupURL,
          endpoint: o.EndpointURL || undefined,
          size: o.Size || 0,
          ctx,
        });
      } else if (this.#cfg.Kept[name]) {
        await this.#adopt(name, o.Size || 0);
      } else await this.#createEmpty(name, o.Size || 0);
    });
  }

  /**
   * A new thin volume of `size` bytes: `opts.fill` writes its data and resolves to its
   * filesystem, then the record is written and the id settled. On failure nothing is left.
   */
  async #createThinVolume(
    name: string,
    opts: { size: number; what: string; fill: (path: string) => Promise<string> },
  ): Promise<{ devID: number; path: string; fs: string }> {
    const { size, what } = opts;
    let thin: { devID: number; device: string; path: string } | undefined;
    let fs: string;
    try {
      thin = await this.#newThin(name, { size, what });
      fs = await opts.fill(thin.path);
      await this.#writeRecord({
        Name: name,
        DevID: thin.devID,
        Size: size,
        Base: "",
        MountPoint: "",
        CreatedTime: this.#api.util.now(),
        Snapshots: {},
        Filesystem: fs,
        UUID: crypto.randomUUID(),
        DeviceName: thin.device,
      });
    } catch (err) {
      if (thin) {
        await this.#records.remove(name).catch(() => {});
        await this.#rollBackThin(name, thin);
      }
      throw this.#wrap(err, what);
    }
    await this.#settle([thin.devID]);
    return { devID: thin.devID, path: thin.path, fs };
  }

  async #createEmpty(name: string, requested: number): Promise<void> {
    const what = `Cannot create volume "${name}"`;
    const size = roundUp(requested || this.#cfg.DefaultVolumeSize, this.#alignment());
    const thin = await this.#createThinVolume(name, {
      size,
      what,
      fill: async (path) => {
        await this.#fs.mkfs(path, this.#cfg.Filesystem, { discard: false });
        return this.#cfg.Filesystem;
      },
    });
    this.#log.info(`Created volume "${name}"`, {
      volume: name,
      device: thin.path,
      devID: thin.devID,
      size,
      filesystem: this.#cfg.Filesystem,
    });
  }

  /** Takes back a volume kept by a reference-only delete: same thin device, data and snapshots. */
  async #adopt(name: string, requested: number): Promise<void> {
    const what = `Cannot create volume "${name}"`;
    const kept = this.#cfg.Kept[name];
    if (requested && roundUp(requested, this.#alignment()) !== kept.Size) {
      throw new this.#api.errors.InvalidArgumentError(
        `${what}: the thin device kept from an earlier volume "${name}" is ${kept.Size} ` +
          `bytes, not ${roundUp(requested, this.#alignment())}`,
      );
    }
    const rec: VolumeRecord = {
      ...kept,
      MountPoint: "",
      DeviceName: volumeDeviceName(this.#pool, name),
    };
    let activated = false;
    try {
      const live = await this.#dm.table(this.#deviceName(rec));
      if (live !== undefined) {
        throw new this.#api.errors.ConflictError(
          `${what}: a device-mapper device named "${this.#deviceName(rec)}" already exists`,
        );
      }
      await this.#ensureActive(rec);
      activated = true;
      await this.#writeRecord(rec);
      await this.#updateConfig((cfg) => void delete cfg.Kept[name]);
    } catch (err) {
      await this.#records.remove(name).catch(() => {});
      if (activated) await this.#dm.remove(this.#deviceName(rec)).catch(() => {});
      throw this.#wrap(err, what);
    }
    this.#log.info(`Adopted the thin device kept from an earlier volume "${name}"`, {
      volume: name,
      devID: rec.DevID,
      size: rec.Size,
      snapshots: Object.keys(rec.Snapshots),
    });
  }

  /**
   * Restores a delta-block backup of a devicemapper or loop volume: a thin device of the
   * backup's size receives the blocks (no mkfs). On failure or cancel (`src.ctx.signal`) nothing
   * is left behind: #createThinVolume removes the thin device.
   */
  async #createFromBackup(
    name: string,
    src: { url: string; endpoint?: string; size: number; ctx?: OperationContext },
  ): Promise<void> {
    const { url, endpoint } = src;
    const what = `Cannot create volume "${name}" from backup "${url}"`;
    let backupSize: number;
    try {
      const bv = await this.#api.backup.getBackupVolume(url, { endpoint });
      if (bv.format !== "delta-block") {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: it was made by driver "${bv.driver}" as a file-level backup; only block ` +
            `backups restore into devicemapper volumes`,
        );
      }
      if (!Number.isSafeInteger(bv.size) || bv.size <= 0) {
        throw new this.#api.errors.InvalidArgumentError(`${what}: the backup's volume has no size`);
      }
      if (src.size && src.size !== bv.size) {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: volume size ${src.size} must match with backup's size ${bv.size}`,
        );
      }
      backupSize = bv.size;
    } catch (err) {
      throw this.#wrap(err, what);
    }
    if (this.#cfg.Kept[name]) {
      throw new this.#api.errors.ConflictError(
        `${what}: a thin device kept by a reference-only delete of volume "${name}" exists; ` +
          `create "${name}" without a backup to adopt it, or delete it first`,
      );
    }
    const size = roundUp(backupSize, this.#alignment());
    const thin = await this.#createThinVolume(name, {
      size,
      what,
      fill: async (path) => {
        const signal = src.ctx?.signal;
        await this.#api.backup.restoreDeltaBackup(url, path, {
          endpoint,
          signal,
          progress: src.ctx?.progress,
        });
        const fs = await this.#fs.detect(path);
        if (signal?.aborted) throw new this.#api.errors.CancelledError(`${what}: cancelled`);
        return fs;
      },
    });
    const fs = thin.fs;
    if (!fs) {
      this.#log.warn(`No filesystem recognised in the restored volume "${name}"`, {
        volume: name,
        url,
      });
    }
    this.#log.info(`Restored backup "${url}" into volume "${name}"`, {
      volume: name,
      device: thin.path,
      devID: thin.devID,
      size,
      filesystem: fs,
    });
  }

  async deleteVolume(id: string, opts: StringMap): Promise<void> {
    const name = this.#validVolumeName(id);
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.deleteVolume,
      opts ?? {},
      `options of volume "${name}"`,
    );
    const what = `Cannot delete volume "${name}"`;
    await this.#locks.run(name, async () => {
      const rec = await this.#records.must(name, "delete volume");
      if (rec.MountPoint) {
        throw new this.#api.errors.ConflictError(
          `${what}: volume is mounted at "${rec.MountPoint}"`,
        );
      }
      for (const snap of Object.keys(rec.Snapshots)) {
        if (this.#inUse.inUse(name, snap)) {
          throw new this.#api.errors.ConflictError(
            `${what}: its snapshot "${snap}" is being backed up`,
          );
        }
      }
      const device = this.#deviceName(rec);
      try {
        if ((await this.#dm.table(device)) !== undefined) {
          const mounts = await this.#mountsOf(await this.#mapperNumber(device));
          if (mounts.length) {
            throw new this.#api.errors.ConflictError(
              `${what}: its device "${join(MAPPER_DIR, device)}" is mounted at "${mounts[0]}"`,
            );
          }
        }
        if (o.ReferenceOnly) {
          await this.#dm.remove(device);
          // Kept first, record second: a crash in between leaves the volume as it was.
          await this.#updateConfig((cfg) => {
            cfg.Kept[name] = { ...rec, MountPoint: "" };
          });
          await this.#records.remove(name);
        } else {
          if ((await this.#dm.table(device)) !== undefined) {
            // Tell the data device the blocks are free (thin deletes do not pass discards down).
            await this.#api.exec("blkdiscard", [join(MAPPER_DIR, device)]).catch((err) =>
              this.#log.debug(
                `blkdiscard of "${device}" failed: ${this.#api.errors.errorMessage(err)}`,
              )
            );
          }
          await this.#dm.remove(device);
          await this.#retireIDs(
            [...Object.values(rec.Snapshots).map((s) => s.DevID), rec.DevID],
            { unrecord: () => this.#records.remove(name), why: `deleting volume "${name}"` },
          );
        }
      } catch (err) {
        throw this.#wrap(err, what);
      }
      this.#log.info(
        `Deleted volume "${name}"${
          o.ReferenceOnly ? "; its thin device and snapshots are kept in the pool" : ""
        }`,
        { volume: name, devID: rec.DevID, referenceOnly: o.ReferenceOnly },
      );
    });
  }

  async mountVolume(id: string, opts: StringMap): Promise<string> {
    const name = this.#validVolumeName(id);
    const wanted = this.#api.util.requestedMountPoint(opts, name);
    return await this.#locks.run(name, async () => {
      const rec = await this.#records.must(name, "mount volume");
      return await this.#api.util.mountBlockVolume(name, {
        current: rec.MountPoint,
        wanted,
        defaultMountPoint: this.#defaultMountPoint(name),
        fs: rec.Filesystem,
        activate: async () => {
          const dev = await this.#ensureActive(rec);
          return {
            path: dev.path,
            mountsOf: () => this.#mountsOf(dev.number),
            isMountOf: (entry) => this.#isMountOf(entry, dev.number),
          };
        },
        save: (mountPoint) => this.#writeRecord({ ...rec, MountPoint: mountPoint }),
        wrap: (err, prefix) => this.#wrap(err, prefix),
        log: this.#log,
      });
    });
  }

  async umountVolume(id: string): Promise<void> {
    const name = this.#validVolumeName(id);
    await this.#locks.run(name, async () => {
      const rec = await this.#records.must(name, "unmount volume");
      await this.#api.util.umountBlockVolume(name, {
        mountPoint: rec.MountPoint,
        defaultMountPoint: this.#defaultMountPoint(name),
        isMountOf: async (entry) =>
          (await this.#dm.table(this.#deviceName(rec))) !== undefined &&
          await this.#isMountOf(entry, await this.#mapperNumber(this.#deviceName(rec))),
        save: () => this.#writeRecord({ ...rec, MountPoint: "" }),
        wrap: (err, prefix) => this.#wrap(err, prefix),
        log: this.#log,
      });
    });
  }

  async mountPoint(id: string): Promise<string> {
    const name = this.#validVolumeName(id);
    return (await this.#records.must(name, "find the mount point of volume")).MountPoint;
  }

  #volumeInfo(rec: VolumeRecord): StringMap {
    return {
      DevID: String(rec.DevID),
      Device: this.#devicePath(rec),
      VolumeName: rec.Name,
      VolumeCreatedAt: rec.CreatedTime,
      MountPoint: rec.MountPoint,
      Size: String(rec.Size),
      Filesystem: rec.Filesystem,
    };
  }

  async getVolumeInfo(id: string): Promise<StringMap> {
    const name = this.#validVolumeName(id);
    return this.#volumeInfo(await this.#records.must(name, "inspect volume"));
  }

  async listVolume(_opts: StringMap): Promise<Record<string, StringMap>> {
    const out: Record<string, StringMap> = {};
    for (const { name, record } of await this.#records.list()) out[name] = this.#volumeInfo(record);
    return out;
  }

  // ---- snapshots ---------------------------------------------------------------------------

  async createSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const what = `Cannot create snapshot "${snap}" of volume "${name}"`;
    await this.#locks.run(name, async () => {
      const rec = await this.#records.must(name, `create snapshot "${snap}" of volume`);
      if (rec.Snapshots[snap]) {
        throw new this.#api.errors.AlreadyExistsError(`${what}: snapshot already exists`);
      }
      const device = this.#deviceName(rec);
      let devID: number;
      try {
        devID = await this.#snapshotThin(rec, device);
      } catch (err) {
        throw this.#wrap(err, what);
      }
      const entry: SnapshotRecord = {
        Name: snap,
        CreatedTime: this.#api.util.now(),
        DevID: devID,
        Activated: false,
      };
      try {
        await this.#writeRecord({ ...rec, Snapshots: { ...rec.Snapshots, [snap]: entry } });
      } catch (err) {
        await this.#deleteIDs([devID], `rolling back snapshot "${snap}" of volume "${name}"`);
        throw this.#wrap(err, what);
      }
      await this.#settle([devID]);
      this.#log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        devID,
      });
    });
  }

  /**
   * `create_snap <new id> <origin id>` with the origin suspended when it is active (suspending
   * also freezes a mounted filesystem, so the snapshot is consistent); the origin is resumed
   * whatever happened.
   */
  async #snapshotThin(rec: VolumeRecord, device: string): Promise<number> {
    const active = (await this.#dm.table(device)) !== undefined;
    if (active) await this.#dm.suspend(device);
    let devID: number | undefined;
    let failure: unknown;
    try {
      devID = await this.#withNewDevID((id) => `create_snap ${id} ${rec.DevID}`);
    } catch (err) {
      failure = err;
    }
    if (active) {
      try {
        await this.#dm.resume(device);
      } catch (err) {
        this.#log.error(
          `Cannot resume "${device}" after a snapshot: ${this.#api.errors.errorMessage(err)}`,
          {
            volume: rec.Name,
          },
        );
        if (devID !== undefined) {
          await this.#deleteIDs([devID], `rolling back a snapshot of volume "${rec.Name}"`);
        }
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    return devID!;
  }

  /** What the snapshot helpers of `api.util` use of this driver. */
  get #snapshotHelperSpec() {
    return {
      records: this.#records,
      locks: this.#locks,
      inUse: this.#inUse,
      wrap: (err: unknown, prefix: string) => this.#wrap(err, prefix),
      log: this.#log,
    };
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    await this.#api.util.deleteSnapshot({ id, volumeID }, {
      ...this.#snapshotHelperSpec,
      remove: ({ volume, snap, snapshot, unrecorded }) =>
        this.#retireIDs([snapshot.DevID], {
          unrecord: () => this.#writeRecord(unrecorded),
          why: `deleting snapshot "${snap}" of volume "${volume}"`,
        }),
      logFields: (snapshot) => ({ devID: snapshot.DevID }),
    });
  }

  #snapshotInfo(rec: VolumeRecord, s: SnapshotRecord): StringMap {
    return {
      UUID: s.Name,
      SnapshotName: s.Name,
      SnapshotCreatedAt: s.CreatedTime,
      Size: String(rec.Size),
      VolumeUUID: rec.Name,
      DevID: String(s.DevID),
    };
  }

  async #mustSnapshot(snap: string, of: { volume: string; what: string }) {
    return await this.#api.util.mustSnapshot(this.#records, snap, of);
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const { record, snapshot } = await this.#mustSnapshot(snap, { volume: name, what: "inspect" });
    return this.#snapshotInfo(record, snapshot);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumes = await this.#records.select(opts?.VolumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { record } of volumes) {
      for (const s of Object.values(record.Snapshots)) out[s.Name] = this.#snapshotInfo(record, s);
    }
    return out;
  }

  // ---- delta-block operations --------------------------------------------------------------

  /**
   * thin_delta between two thin ids, on a metadata snapshot reserved for the call and released
   * in every path (the live metadata is never read). Resolves to thin_delta's XML.
   */
  async #thinDelta(snap1: number, snap2: number): Promise<string> {
    const pool = this.#pool;
    const meta = this.#cfg.MetadataDevice;
    return await this.#locks.run(METADATA_SNAP_LOCK, async () => {
      try {
        await this.#dm.message(pool, "reserve_metadata_snap");
      } catch (err) {
        if (failedWith(err, BUSY)) {
          throw new this.#api.errors.ConflictError(
            `a metadata snapshot of thin pool "${pool}" is already reserved (by another tool, ` +
              `or left by a crash); release it with ` +
              `"dmsetup message ${pool} 0 release_metadata_snap"`,
            { cause: err },
          );
        }
        throw err;
      }
      let xml = "";
      let failure: unknown;
      try {
        xml = (await this.#api.exec("thin_delta", [
          "-m",
          "--snap1",
          String(snap1),
          "--snap2",
          String(snap2),
          meta,
        ])).stdout;
      } catch (err) {
        failure = err instanceof this.#api.errors.TimeoutError
          ? new this.#api.errors.TimeoutError(
            `thin_delta did not finish: ${this.#api.errors.errorMessage(err)}`,
            {
              cause: err,
            },
          )
          : /command not found/i.test(this.#api.errors.errorMessage(err))
          ? new this.#api.errors.BackendError(
            `thin_delta is not installed: backups of devicemapper volumes need ` +
              `thin-provisioning-tools (${this.#api.errors.errorMessage(err)})`,
            { cause: err },
          )
          : new this.#api.errors.BackendError(
            `thin_delta failed: ${this.#api.errors.errorMessage(err)}`,
            {
              cause: err,
            },
          );
      }
      try {
        await this.#dm.message(pool, "release_metadata_snap");
      } catch (err) {
        this.#log.error(
          `Cannot release the metadata snapshot of pool "${pool}": ${
            this.#api.errors.errorMessage(err)
          }; ` +
            `backups fail until it is released ("dmsetup message ${pool} 0 release_metadata_snap")`,
        );
        failure ??= err;
      }
      if (failure !== undefined) throw failure;
      return xml;
    });
  }

  /**
   * The 2 MiB ranges of snapshot `snap` that differ from snapshot `base` (every provisioned
   * range when `base` is "" or `snap`), from thin_delta. Pool blocks of any size are rounded out
   * to 2 MiB backup blocks.
   */
  async compareSnapshot(
    snap: string,
    opts: { base: string; volume: string },
  ): Promise<Mappings & { stats: CompareStats }> {
    const { base, volume } = opts;
    const started = performance.now();
    const full = !base || base === snap;
    const what = `Cannot compare snapshot "${snap}" of volume "${volume}"${
      full ? "" : ` with snapshot "${base}"`
    }`;
    const { record, snapshot } = await this.#mustSnapshot(snap, { volume, what: "compare" });
    const baseSnap = full
      ? snapshot
      : (await this.#mustSnapshot(base, { volume, what: "compare" })).snapshot;
    const release = full ? () => {} : this.#inUse.use(volume, base);
    try {
      const xml = await this.#thinDelta(baseSnap.DevID, snapshot.DevID);
      const delta = parseThinDelta(xml);
      const blockSectors = delta.blockSectors || this.#cfg.ThinpoolBlockSize;
      const kinds = full
        ? ["same", "different", "left_only", "right_only"] as const
        : ["different", "left_only", "right_only"] as const;
      const mappings = deltaToMappings(delta.ranges, {
        kinds,
        blockBytes: blockSectors * 512,
        limit: record.Size,
      });
      const stats: CompareStats = {
        method: full ? "full" : "incremental",
        ranges: delta.ranges.filter((r) => (kinds as readonly string[]).includes(r.kind)).length,
        blocks: mappings.reduce((n, m) => n + m.size / BACKUP_BLOCK_SIZE, 0),
        poolBlockSize: blockSectors * 512,
        ms: Math.round(performance.now() - started),
      };
      this.#log.info(
        `Compared snapshot "${snap}" of volume "${volume}" with ${
          full ? "nothing (full)" : `"${base}"`
        }`,
        { volume, snapshot: snap, base, ...stats },
      );
      return { mappings, blockSize: BACKUP_BLOCK_SIZE, stats };
    } catch (err) {
      throw this.#wrap(err, what);
    } finally {
      release();
    }
  }

  /** Activates a snapshot read-only and opens it. */
  async #openSnapshot(snap: string, volume: string): Promise<OpenSnapshot> {
    const what = `Cannot open snapshot "${snap}" of volume "${volume}"`;
    const { record, snapshot } = await this.#mustSnapshot(snap, { volume, what: "open" });
    const release = this.#inUse.use(volume, snap);
    const device = snapshotDeviceName(this.#pool, volume, snap);
    const sectors = Math.ceil(record.Size / 512);
    let created = false;
    try {
      const live = await this.#dm.table(device);
      let reuse = false;
      if (live !== undefined) {
        const diff = compareThinTable(parseTable(live), {
          sectors,
          pool: await this.#mapperNumber(this.#pool),
          devID: snapshot.DevID,
        });
        if (diff) await this.#dm.remove(device);
        else reuse = true;
      }
      if (!reuse) {
        await this.#dm.create(
          device,
          thinTable({ sectors, pool: this.#cfg.ThinpoolDevice, devID: snapshot.DevID }),
          { readonly: true },
        );
        created = true;
      }
      await this.#mapperNumber(device);
      const fh = await open(join(MAPPER_DIR, device), "r");
      return { device, fh, release };
    } catch (err) {
      if (created) await this.#dm.remove(device).catch(() => {});
      release();
      throw this.#wrap(err, what);
    }
  }

  async #closeSnapshot(o: OpenSnapshot): Promise<void> {
    try {
      await o.fh.close();
      await this.#dm.remove(o.device);
    } finally {
      o.release();
    }
  }

  /** The DeltaBlockOperations of one backup: its own devices and handles, closed at the end. */
  #deltaSession(): { ops: DeltaBlockOperations; close(): Promise<void> } {
    const opened = new Map<string, Promise<OpenSnapshot>>();
    const key = (id: string, volumeID: string) => `${volumeID}\u0000${id}`;
    const get = async (id: string, volumeID: string): Promise<OpenSnapshot> => {
      const o = opened.get(key(id, volumeID));
      if (!o) {
        throw new this.#api.errors.InvalidArgumentError(
          `Snapshot "${id}" of volume "${volumeID}" is not open`,
        );
      }
      return await o;
    };
    const ops: DeltaBlockOperations = {
      hasSnapshot: async (id, volumeID) => {
        const rec = await this.#records.read(this.#validVolumeName(volumeID));
        return !!rec?.Snapshots[id];
      },
      compareSnapshot: async (id, compareID, volumeID) => {
        const { mappings, blockSize } = await this.compareSnapshot(id, {
          base: compareID,
          volume: volumeID,
        });
        return { mappings, blockSize };
      },
      openSnapshot: async (id, volumeID) => {
        const k = key(id, volumeID);
        if (opened.has(k)) return void await opened.get(k);
        const p = this.#openSnapshot(id, volumeID);
        opened.set(k, p);
        p.catch(() => opened.delete(k));
        await p;
      },
      readSnapshot: async (id, volumeID, start, data) => {
        await this.#api.util.readFull((await get(id, volumeID)).fh, { buf: data, pos: start });
      },
      snapshotFile: async (id, volumeID) => join(MAPPER_DIR, (await get(id, volumeID)).device),
      closeSnapshot: async (id, volumeID) => {
        const p = opened.get(key(id, volumeID));
        opened.delete(key(id, volumeID));
        if (p) await this.#closeSnapshot(await p);
      },
    };
    return {
      ops,
      close: async () => {
        const all = [...opened.values()];
        opened.clear();
        for (const p of all) {
          const o = await p.catch(() => undefined);
          if (o) {
            await this.#closeSnapshot(o).catch((err) =>
              this.#log.warn(
                `Cannot close snapshot device "${o.device}": ${this.#api.errors.errorMessage(err)}`,
              )
            );
          }
        }
      },
    };
  }

  // ---- backups -----------------------------------------------------------------------------

  async createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Promise<string> {
    return await this.#api.util.backUpSnapshot(
      { snapshotID, volumeID, destURL, opts, ctx },
      { ...this.#snapshotHelperSpec, driver: DRIVER_NAME, session: () => this.#deltaSession() },
    );
  }

  /** Deleting, inspecting and listing backups need nothing of this driver but its name. */
  get #queries() {
    return this.#api.backup.queries(DRIVER_NAME, { blocks: true });
  }

  async deleteBackup(url: string, opts?: StringMap): Promise<void> {
    await this.#queries.deleteBackup(url, opts ?? {});
  }

  async getBackupInfo(url: string, opts?: StringMap): Promise<StringMap> {
    return await this.#queries.getBackupInfo(url, opts ?? {});
  }

  async listBackup(destURL: string, opts: StringMap): Promise<Record<string, StringMap>> {
    return await this.#queries.listBackup(destURL, opts ?? {});
  }

  // ---- the ConvoyDriver object -------------------------------------------------------------

  convoyDriver(): DmConvoyDriver {
    const driver = this.#api.util.convoyDriver(DRIVER_NAME, this, () => {
      const cfg = this.#cfg;
      return {
        Driver: DRIVER_NAME,
        Root: cfg.Root,
        DataDevice: cfg.DataDevice,
        MetadataDevice: cfg.MetadataDevice,
        ThinpoolDevice: cfg.ThinpoolDevice,
        ThinpoolSize: String(cfg.ThinpoolSize),
        ThinpoolBlockSize: String(cfg.ThinpoolBlockSize * 512),
        DefaultVolumeSize: String(cfg.DefaultVolumeSize),
        Filesystem: cfg.Filesystem,
      };
    });
    return { ...driver, deltaOps: () => this.#deltaSession() };
  }
}
