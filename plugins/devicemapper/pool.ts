/**
 * The devicemapper driver's thin pool: start-up (the first start validates the devices, zeroes
 * the metadata header and creates the pool; later starts re-use an active pool with the
 * expected table or activate it again with the saved one), repair advice when it cannot start,
 * the leftovers of interrupted backups, and `thin_delta` on a reserved metadata snapshot.
 * @module
 */
import { open, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger, PluginApi, StringMap } from "../../mod.ts";
import {
  CONFIG_FILE,
  type DmConfig,
  type FirstStartOptions,
  loadOrCreateConfig,
  MAPPER_DIR,
  poolName,
  SavedConfig,
} from "./config.ts";
import {
  BUSY,
  comparePoolTable,
  devNumber,
  DmSetup,
  failedWith,
  isSnapshotDeviceName,
  parsePoolStatus,
  parseTable,
  poolTable,
} from "./dm.ts";
import {
  OPT_DATA_DEVICE,
  OPT_METADATA_DEVICE,
  OPT_THINPOOL_NAME,
  type Schemas,
} from "./options.ts";

/** dm-thin's superblock magic (le64 at byte 32 of the metadata device). */
const THIN_SUPERBLOCK_MAGIC = 27022010n;

/** A started thin pool. */
export class ThinPool {
  readonly dm: DmSetup;
  readonly config: SavedConfig;
  #api: PluginApi;
  #log: Logger;
  #lock;
  /** True when start-up found the pool active (the daemon restarted, the host did not). */
  #wasActive: boolean;
  /** The pool's held metadata root at start-up ("-": none; undefined: a new pool). */
  #heldRoot: string | undefined;

  private constructor(
    api: PluginApi,
    o: { dm: DmSetup; config: SavedConfig; log: Logger; wasActive: boolean; heldRoot?: string },
  ) {
    this.#api = api;
    this.dm = o.dm;
    this.config = o.config;
    this.#log = o.log;
    this.#wasActive = o.wasActive;
    this.#heldRoot = o.heldRoot;
    this.#lock = api.util.createLock();
  }

  /**
   * Loads `<root>/devicemapper.cfg` and starts its pool, or, on the first start, validates
   * `config` (`--driver-opts`), creates the pool and saves the configuration.
   */
  static async start(
    api: PluginApi,
    o: { root: string; config: StringMap; schemas: Schemas; log: Logger },
  ): Promise<ThinPool> {
    const starter = new PoolStarter(api, { root: o.root, log: o.log });
    let created: DmConfig | undefined;
    let loaded;
    try {
      loaded = await loadOrCreateConfig(api, o.schemas, {
        root: o.root,
        config: o.config,
        log: o.log,
        create: async (f) => (created = await starter.firstStart(f)),
      });
    } catch (err) {
      if (!created) throw err;
      // The pool was made but its configuration could not be saved: take the pool down again.
      await starter.dm.remove(poolName(created)).catch(() => {});
      throw new api.errors.BackendError(
        `Cannot start the devicemapper driver: cannot save "${join(o.root, CONFIG_FILE)}": ${
          api.errors.errorMessage(err)
        }`,
        { cause: err },
      );
    }
    const cfg = loaded.cfg;
    const config = new SavedConfig(api, cfg);
    let state: { wasActive: boolean; heldRoot?: string } = { wasActive: false };
    if (loaded.created) {
      o.log.info(`Created thin pool "${poolName(cfg)}"`, {
        pool: poolName(cfg),
        dataDevice: cfg.DataDevice,
        metadataDevice: cfg.MetadataDevice,
        size: cfg.ThinpoolSize,
        blockSize: cfg.ThinpoolBlockSize * 512,
        file: config.file,
      });
    } else {
      state = await starter.startPool(cfg);
      if (loaded.dirty) await config.update(() => {});
    }
    return new ThinPool(api, { dm: starter.dm, config, log: o.log, ...state });
  }

  get cfg(): Readonly<DmConfig> {
    return this.config.cfg;
  }

  /** The pool's device-mapper name. */
  get name(): string {
    return poolName(this.cfg);
  }

  async message(msg: string): Promise<void> {
    await this.dm.message(this.name, msg);
  }

  /** Removes what interrupted backups left: snapshot devices, a reserved metadata snapshot. */
  async cleanLeftovers(): Promise<void> {
    const pool = this.name;
    // Snapshot devices can only be left on a pool that stayed active (a daemon crash).
    for (const name of this.#wasActive ? await this.dm.list() : []) {
      if (!isSnapshotDeviceName(pool, name)) continue;
      this.#log.info(`Removing the snapshot device "${name}" left by an interrupted backup`);
      await this.dm.remove(name, 10).catch((err) =>
        this.#log.warn(`Cannot remove "${name}": ${this.#api.errors.errorMessage(err)}`)
      );
    }
    // A reserved metadata snapshot is kept in the metadata: also after a reboot.
    if (this.#heldRoot && this.#heldRoot !== "-") {
      this.#log.warn(
        `Releasing the metadata snapshot of pool "${pool}" left reserved by an interrupted backup`,
      );
      await this.dm.message(pool, "release_metadata_snap").catch((err) =>
        this.#log.warn(
          `Cannot release the metadata snapshot: ${this.#api.errors.errorMessage(err)}`,
        )
      );
    }
  }

  /** `major:minor` of a /dev/mapper node; the node is made when dmsetup left none. */
  async mapperNumber(name: string): Promise<string> {
    const path = join(MAPPER_DIR, name);
    try {
      return devNumber((await stat(path)).rdev);
    } catch (err) {
      if (this.#api.util.errno(err) !== "ENOENT") throw err;
      await this.dm.run(["mknodes", name]);
      return devNumber((await stat(path)).rdev);
    }
  }

  /** The active thin devices of the pool, by thin id. */
  async thinDevices(): Promise<Map<number, string[]>> {
    const pool = await this.mapperNumber(this.name);
    const out = new Map<number, string[]>();
    for (const name of await this.dm.list()) {
      const t = parseTable((await this.dm.table(name)) ?? "");
      if (t?.type !== "thin" || t.args[0] !== pool || !/^\d+$/.test(t.args[1] ?? "")) continue;
      const id = Number(t.args[1]);
      out.set(id, [...out.get(id) ?? [], name]);
    }
    return out;
  }

  /**
   * thin_delta between two thin ids, on a metadata snapshot reserved for the call and released
   * in every path (the live metadata is never read). Resolves to thin_delta's XML.
   */
  async thinDelta(snap1: number, snap2: number): Promise<string> {
    const pool = this.name;
    const { errors } = this.#api;
    return await this.#lock.run("metadata-snap", async () => {
      try {
        await this.dm.message(pool, "reserve_metadata_snap");
      } catch (err) {
        if (failedWith(err, BUSY)) {
          throw new errors.ConflictError(
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
          this.cfg.MetadataDevice,
        ])).stdout;
      } catch (err) {
        const msg = errors.errorMessage(err);
        failure = err instanceof errors.TimeoutError
          ? new errors.TimeoutError(`thin_delta did not finish: ${msg}`, { cause: err })
          : /command not found/i.test(msg)
          ? new errors.BackendError(
            `thin_delta is not installed: backups of devicemapper volumes need ` +
              `thin-provisioning-tools (${msg})`,
            { cause: err },
          )
          : new errors.BackendError(`thin_delta failed: ${msg}`, { cause: err });
      }
      try {
        await this.dm.message(pool, "release_metadata_snap");
      } catch (err) {
        this.#log.error(
          `Cannot release the metadata snapshot of pool "${pool}": ${errors.errorMessage(err)}; ` +
            `backups fail until it is released ("dmsetup message ${pool} 0 release_metadata_snap")`,
        );
        failure ??= err;
      }
      if (failure !== undefined) throw failure;
      return xml;
    });
  }
}

/** The checks and commands of start-up. */
class PoolStarter {
  readonly dm: DmSetup;
  #api: PluginApi;
  #root: string;
  #log: Logger;

  constructor(api: PluginApi, o: { root: string; log: Logger }) {
    this.#api = api;
    this.#root = o.root;
    this.#log = o.log;
    this.dm = new DmSetup(api, o.log);
  }

  get #configFile(): string {
    return join(this.#root, CONFIG_FILE);
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
  async firstStart(o: FirstStartOptions): Promise<DmConfig> {
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
    const live = await this.dm.table(o.poolName);
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
      await this.dm.create(o.poolName, table);
    } catch (err) {
      throw new BackendError(
        `${what}: cannot create the thin pool "${o.poolName}": ${
          this.#api.errors.errorMessage(err)
        }`,
        { cause: err },
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
  async startPool(cfg: DmConfig): Promise<{ wasActive: boolean; heldRoot?: string }> {
    const pool = poolName(cfg);
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
      live = await this.dm.table(pool);
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
      const status = parsePoolStatus((await this.dm.status(pool)) ?? "");
      if (!status || /^(Fail|Error)$/i.test(status.mode)) {
        throw new BackendError(
          `${what}: the pool has failed (status "${status?.mode ?? "unknown"}"). ` +
            repairAdvice(cfg),
        );
      }
      if (status.needsCheck || status.mode === "ro") {
        this.#log.warn(
          `Thin pool "${pool}" is ${
            status.needsCheck ? "flagged needs_check" : "read-only"
          }: volumes cannot be written. ${repairAdvice(cfg)}`,
          { pool, mode: status.mode },
        );
      }
      this.#log.info(`Re-using the active thin pool "${pool}"`, { pool });
      return { wasActive: true, heldRoot: status.heldRoot ?? "-" };
    }
    const table = poolTable({
      sectors: Math.floor(cfg.ThinpoolSize / 512),
      metadata: cfg.MetadataDevice,
      data: cfg.DataDevice,
      blockSectors: cfg.ThinpoolBlockSize,
    });
    try {
      await this.dm.create(pool, table);
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
        `${what}: cannot activate the pool: ${this.#api.errors.errorMessage(err)}. ${check}. ${
          repairAdvice(cfg)
        }`,
        { cause: err },
      );
    }
    this.#log.info(`Activated thin pool "${pool}"`, { pool, table });
    return {
      wasActive: false,
      heldRoot: parsePoolStatus((await this.dm.status(pool)) ?? "")?.heldRoot,
    };
  }
}

/** How to recover a pool that cannot start. */
function repairAdvice(cfg: DmConfig): string {
  const meta = cfg.MetadataDevice;
  return `To recover: deactivate the pool and its volumes (dmsetup remove), run ` +
    `"thin_check ${meta}"; if it reports errors, repair the metadata onto a spare device of ` +
    `the same size with "thin_repair -i ${meta} -o <spare>", copy it back ` +
    `("dd if=<spare> of=${meta}") and restart the daemon. Never zero the metadata device: ` +
    `that loses every volume`;
}
