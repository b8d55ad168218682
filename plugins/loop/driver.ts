/**
 * The loop driver: every volume is a sparse image file holding a filesystem (ext4 or xfs),
 * attached to a loop device and mounted on demand. Snapshots are crash-consistent copies of the
 * image (the filesystem is frozen around the copy) that share every extent with it on
 * filesystems with reflinks (xfs with reflink=1, btrfs), and are sparse copies elsewhere.
 * Backups are Convoy's delta-block backups: the driver tells the engine which 2 MiB blocks
 * changed since the last backed-up snapshot by comparing extent maps (FIEMAP) where snapshots
 * share extents, and answers "unknown" elsewhere (the engine then compares checksums).
 *
 * On-disk layout:
 *
 * ```
 * <root>/loop.cfg                          {"Root","Path","SnapshotPath","DefaultVolumeSize","Filesystem","DirectIO"}
 * <root>/state/<volume>.json               the volume record: {"Name","UUID","Size","Filesystem",
 *                                          "CreatedTime","Path","Device","MountPoint","Snapshots"}
 * <root>/mounts/<volume>/                  the default mount point
 * <loop.path>/<volume>.img                 the volume image (sparse; loop.path defaults to <root>/volumes)
 * <loop.path>/.tmp-<volume>-<id>.img       an image being made (mkfs or restore), renamed into place
 * <SnapshotPath>/<volume>/<snapshot>.img   a snapshot image; SnapshotPath is <root>/snapshots, or
 *                                          <loop.path>/snapshots when loop.path is another filesystem
 * <SnapshotPath>/<volume>/.tmp-<snapshot>-<id>.img   a snapshot being copied
 * ```
 *
 * Crash safety: the record is written last on create and removed first on delete. Start-up
 * removes `.tmp-*` images and the snapshot folders of volumes without a record, re-attaches
 * every recorded image (reusing an existing attachment) and re-mounts recorded mounts at their
 * recorded mount points. An image without a record (kept by a reference-only delete) is adopted
 * by the next create of the same name.
 * @module
 */
import { open, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import { join, resolve } from "node:path";
import type {
  ConvoyDriver,
  DeltaBlockOperations,
  KeyedLock,
  Logger,
  Mappings,
  OperationContext,
  PluginApi,
  RecordStore,
  StringMap,
  UnknownChanges,
  UseCounter,
} from "../../mod.ts";
import { loadOrCreateConfig, type LoopConfig, roundSize } from "./config.ts";
import {
  BLOCK_SIZE,
  blockMap,
  blocksToMappings,
  diffBlockMaps,
  FILEFRAG_UNIT,
  parseFilefrag,
} from "./extents.ts";
import { createSchemas, type Schemas, type SnapshotRecord, type VolumeRecord } from "./options.ts";

/** The driver's name. */
export const DRIVER_NAME = "loop";
/** Drivers whose backups are raw block images of a filesystem, restorable into a loop volume. */
export const BLOCK_BACKUP_DRIVERS = ["loop", "devicemapper"];

/** Copies, mkfs and long compares may take long: no short command timeout. */
const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;
const TMP_PREFIX = ".tmp-";
const IMAGE_FILE = /^(.+)\.img$/;

/** What one compareSnapshot did (logged; tests read it). */
export interface CompareStats {
  /**
   * "full" (base ""), "extents" (reflink: extent maps only) or "unknown" (no reflinks or no
   * extent maps: answered "unknown", the engine compares checksums with the last backup's map).
   */
  method: "full" | "extents" | "unknown";
  /** Blocks of the snapshot. */
  blocks: number;
  /** Blocks reported. */
  changed: number;
  /** Blocks found equal because both files share their extents. */
  shared: number;
  /** Data bytes read from the two images to compare. */
  bytesRead: number;
  ms: number;
}

/**
 * Creates a loop driver instance (Convoy's InitFunc). `root` is `<daemon root>/loop`; `config`
 * is the `--driver-opts` map, read only on the first start.
 */
export async function createLoopDriver(
  api: PluginApi,
  root: string,
  config: StringMap,
): Promise<ConvoyDriver> {
  const log = api.log.child({ pkg: "loop", driver: DRIVER_NAME });
  const driverRoot = resolve(root);
  await api.util.ensureDir(driverRoot);
  const schemas = createSchemas(api);
  const cfg = await loadOrCreateConfig(api, schemas, { root: driverRoot, config, log });
  const driver = new LoopDriver(api, { cfg, schemas, log });
  await driver.init();
  return driver.convoyDriver();
}

/** Creates a sparse file of `size` bytes; fails when it exists. */
async function createSparse(path: string, size: number): Promise<void> {
  const fh = await open(path, "wx", 0o644);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

/** `bytes` in the largest unit (K, M, G, T: powers of 1024) that divides it: 1000T, 66M. */
function sizeText(bytes: number): string {
  for (const [unit, exp] of [["T", 40], ["G", 30], ["M", 20], ["K", 10]] as const) {
    if (bytes % 2 ** exp === 0) return `${bytes / 2 ** exp}${unit}`;
  }
  return String(bytes);
}

/** EFBIG: Node sets the code; Deno (2.9) only says "File too large (os error 27)". */
function isFileTooLarge(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === "EFBIG" || /\(os error 27\)$/.test(String(e?.message ?? ""));
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

class LoopDriver {
  #api: PluginApi;
  #cfg: LoopConfig;
  #schemas: Schemas;
  #log: Logger;
  #locks: KeyedLock;
  #records: RecordStore<VolumeRecord>;
  /** (volume, snapshot) pairs a backup is reading, with reader counts; they cannot be deleted. */
  #inUse: UseCounter;
  #reflink = false;

  constructor(api: PluginApi, opts: { cfg: LoopConfig; schemas: Schemas; log: Logger }) {
    this.#api = api;
    this.#locks = api.util.createLock();
    this.#inUse = api.util.createUseCounter();
    this.#cfg = opts.cfg;
    this.#schemas = opts.schemas;
    this.#log = opts.log;
    this.#records = api.util.createRecordStore({
      dir: join(opts.cfg.Root, "state"),
      prefix: "",
      schema: opts.schemas.volumeRecord,
      nameField: "Name",
      kind: "volume",
      log: opts.log,
    });
  }

  // ---- paths -------------------------------------------------------------------------------

  get #stateDir(): string {
    return join(this.#cfg.Root, "state");
  }
  #imagePath(name: string): string {
    return join(this.#cfg.Path, `${name}.img`);
  }
  #snapshotDir(volume: string): string {
    return join(this.#cfg.SnapshotPath, volume);
  }
  #snapshotFile(volume: string, snapshot: string): string {
    return join(this.#snapshotDir(volume), `${snapshot}.img`);
  }
  get #mountsDir(): string {
    return join(this.#cfg.Root, "mounts");
  }
  #defaultMountPoint(name: string): string {
    return join(this.#mountsDir, name);
  }

  // ---- start-up ----------------------------------------------------------------------------

  /** Creates the folders, detects reflinks, removes leftovers, re-attaches and re-mounts. */
  async init(): Promise<void> {
    for (const dir of [this.#cfg.Path, this.#stateDir, this.#cfg.SnapshotPath, this.#mountsDir]) {
      await this.#api.util.ensureDir(dir);
    }
    this.#reflink = await this.#probeReflink();
    await this.#cleanLeftovers();
    await this.#restoreVolumes();
  }

  /** True when a reflink copy from loop.path to the snapshot folder works. */
  async #probeReflink(): Promise<boolean> {
    const id = this.#api.util.randomId();
    const src = join(this.#cfg.Path, `${TMP_PREFIX}reflink-probe-${id}`);
    const dst = join(this.#cfg.SnapshotPath, `${TMP_PREFIX}reflink-probe-${id}`);
    try {
      await writeFile(src, "convoy loop reflink probe\n");
      await this.#api.exec("cp", ["--reflink=always", src, dst]);
      this.#log.info("Snapshots are reflink copies", { path: this.#cfg.Path });
      return true;
    } catch (err) {
      this.#log.info("Snapshots are sparse copies (no reflinks here)", { path: this.#cfg.Path });
      this.#log.debug("reflink probe failed", { error: this.#api.errors.errorMessage(err) });
      return false;
    } finally {
      await rm(src, { force: true });
      await rm(dst, { force: true });
    }
  }

  async #cleanLeftovers(): Promise<void> {
    // Images of interrupted creates and restores.
    for (const entry of await readdir(this.#cfg.Path)) {
      if (!entry.startsWith(TMP_PREFIX)) continue;
      const path = join(this.#cfg.Path, entry);
      this.#log.info("Removing an unfinished volume image", { path });
      try {
        await this.#detachAll(path);
        await rm(path, { recursive: true, force: true });
      } catch (err) {
        this.#log.warn(`Cannot remove "${path}": ${this.#api.errors.errorMessage(err)}`, { path });
      }
    }
    // Unfinished snapshot copies, and the snapshots of volumes that no longer exist.
    for (const volume of await readdir(this.#cfg.SnapshotPath)) {
      const dir = join(this.#cfg.SnapshotPath, volume);
      if (volume.startsWith(TMP_PREFIX)) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (!(await stat(dir)).isDirectory()) continue;
      if (!(await this.#statOrUndefined(this.#records.file(volume)))) {
        this.#log.info(`Removing the snapshots of volume "${volume}": volume does not exist`, {
          path: dir,
        });
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      for (const entry of await readdir(dir)) {
        if (!entry.startsWith(TMP_PREFIX)) continue;
        this.#log.info("Removing an unfinished snapshot copy", { path: join(dir, entry) });
        await rm(join(dir, entry), { force: true });
      }
    }
    // Images without a record: kept by a reference-only delete (or a crash during delete).
    for (const entry of await readdir(this.#cfg.Path)) {
      const m = IMAGE_FILE.exec(entry);
      if (!m || entry.startsWith(".")) continue;
      if (await this.#statOrUndefined(this.#records.file(m[1]))) continue;
      this.#log.info(
        `Image "${join(this.#cfg.Path, entry)}" belongs to no volume: ` +
          `creating volume "${m[1]}" adopts it`,
        { volume: m[1] },
      );
    }
  }

  /** Re-attaches every recorded image and re-mounts recorded mounts; failures are logged. */
  async #restoreVolumes(): Promise<void> {
    for (const { name, record } of await this.#records.list()) {
      try {
        const { record: rec, device } = await this.#ensureAttached(record);
        if (!rec.MountPoint) continue;
        const entry = await this.#api.util.mounts.mountAt(rec.MountPoint);
        if (entry?.source === device) continue;
        if (entry) {
          throw new this.#api.errors.ConflictError(
            `"${rec.MountPoint}" is a mount point of "${entry.source}"`,
          );
        }
        await this.#fs.mount(device, rec.MountPoint, { fs: rec.Filesystem });
        this.#log.info(`Restored the mount of volume "${name}" at "${rec.MountPoint}"`, {
          volume: name,
          device,
          mountpoint: rec.MountPoint,
        });
      } catch (err) {
        this.#log.error(`Cannot restore volume "${name}": ${this.#api.errors.errorMessage(err)}`, {
          volume: name,
        });
      }
    }
  }

  // ---- records -----------------------------------------------------------------------------

  #validVolumeName(id: unknown): string {
    return this.#api.util.validateName(id, "volume");
  }

  async #writeRecord(r: VolumeRecord): Promise<void> {
    await this.#records.write(r.Name, {
      Name: r.Name,
      UUID: r.UUID,
      Size: r.Size,
      Filesystem: r.Filesystem,
      CreatedTime: r.CreatedTime,
      Path: r.Path,
      Device: r.Device,
      MountPoint: r.MountPoint,
      Snapshots: r.Snapshots,
    });
  }

  // ---- helpers -----------------------------------------------------------------------------

  async #statOrUndefined(path: string) {
    try {
      return await stat(path);
    } catch (err) {
      if (this.#api.util.errno(err) === "ENOENT") return undefined;
      throw err;
    }
  }

  /** The loop devices `image` is attached to. */
  async #findDevices(image: string): Promise<string[]> {
    const { stdout } = await this.#api.exec("losetup", [
      "--list",
      "--noheadings",
      "--output",
      "NAME",
      "--associated",
      image,
    ]);
    return stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  }

  async #attach(image: string): Promise<string> {
    const args = ["--find", "--show"];
    if (this.#cfg.DirectIO) args.push("--direct-io=on");
    const { stdout } = await this.#api.exec("losetup", [...args, image]);
    const device = stdout.trim();
    if (!device.startsWith("/dev/")) {
      throw new this.#api.errors.BackendError(
        `losetup printed no device for "${image}": ${JSON.stringify(stdout)}`,
      );
    }
    return device;
  }

  async #detachAll(image: string): Promise<void> {
    for (const device of await this.#findDevices(image)) {
      await this.#api.exec("losetup", ["--detach", device]);
    }
  }

  /**
   * The loop device of a volume: an existing attachment of its image (never a second one), or
   * a new one. The record's Device is updated when it changed.
   */
  async #ensureAttached(rec: VolumeRecord): Promise<{ record: VolumeRecord; device: string }> {
    if (!(await this.#statOrUndefined(rec.Path))) {
      throw new this.#api.errors.BackendError(`the image "${rec.Path}" does not exist`);
    }
    const devices = await this.#findDevices(rec.Path);
    let device = devices[0];
    if (devices.length > 1) {
      this.#log.warn(`Image "${rec.Path}" is attached more than once: using "${device}"`, {
        volume: rec.Name,
        devices,
      });
    }
    if (!device) {
      device = await this.#attach(rec.Path);
      this.#log.info(`Attached volume "${rec.Name}" to "${device}"`, {
        volume: rec.Name,
        device,
        image: rec.Path,
      });
    }
    if (device === rec.Device) return { record: rec, device };
    const record = { ...rec, Device: device };
    await this.#writeRecord(record);
    return { record, device };
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
      // Snapshots left by an older volume of the same name are not this volume's.
      await rm(this.#snapshotDir(name), { recursive: true, force: true });
      if (o.BackupURL) {
        await this.#createFromBackup(name, {
          url: o.BackupURL,
          endpoint: o.EndpointURL || undefined,
          size: o.Size || 0,
          ctx,
        });
      } else await this.#createEmpty(name, o.Size || 0);
    });
  }

  /**
   * `err` of creating an image of `size` bytes: the filesystem's refusal of the size (EFBIG) as
   * InvalidArgumentError, anything else wrapped.
   */
  #createError(err: unknown, what: string, size: number): unknown {
    if (isFileTooLarge(err)) {
      return new this.#api.errors.InvalidArgumentError(
        `${what}: size ${sizeText(size)} exceeds what the filesystem at "${this.#cfg.Path}" allows`,
        { cause: err },
      );
    }
    return this.#api.errors.wrapError(err, what);
  }

  async #createEmpty(name: string, requested: number): Promise<void> {
    const what = `Cannot create volume "${name}"`;
    const image = this.#imagePath(name);
    const size = requested ? roundSize(requested) : this.#cfg.DefaultVolumeSize;
    if (requested && size !== requested) {
      this.#log.warn(`Size of volume "${name}" rounded up from ${requested} to ${size} bytes`, {
        volume: name,
      });
    }
    const kept = await this.#statOrUndefined(image);
    if (kept) {
      if (!kept.isFile()) {
        throw new this.#api.errors.ConflictError(`${what}: "${image}" exists and is not a file`);
      }
      if (requested && size !== kept.size) {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: the image "${image}" kept from an earlier volume is ${kept.size} bytes, not ${size}`,
        );
      }
      let fs = await this.#fs.detect(image);
      if (!fs) {
        try {
          await this.#fs.mkfs(image, this.#cfg.Filesystem, { timeoutMs: LONG_COMMAND_TIMEOUT_MS });
        } catch (err) {
          throw this.#api.errors.wrapError(err, what);
        }
        fs = this.#cfg.Filesystem;
      }
      this.#log.info(`Adopting the image "${image}" kept from an earlier volume "${name}"`, {
        volume: name,
        size: kept.size,
        filesystem: fs,
      });
      await this.#finishCreate(name, { size: kept.size, fs, created: false, what });
      return;
    }
    const tmp = join(this.#cfg.Path, `${TMP_PREFIX}${name}-${this.#api.util.randomId()}.img`);
    try {
      await createSparse(tmp, size);
      await this.#fs.mkfs(tmp, this.#cfg.Filesystem, { timeoutMs: LONG_COMMAND_TIMEOUT_MS });
      await rename(tmp, image);
    } catch (err) {
      await rm(tmp, { force: true });
      throw this.#createError(err, what, size);
    }
    await this.#finishCreate(name, { size, fs: this.#cfg.Filesystem, created: true, what });
  }

  /**
   * Restores a delta-block backup of a loop or devicemapper volume: a sparse image of the
   * backup's size receives the blocks (no mkfs), then it is renamed into place and attached.
   * A failed or cancelled (`src.ctx.signal`) restore removes the image it was writing.
   */
  async #createFromBackup(
    name: string,
    src: { url: string; endpoint?: string; size: number; ctx?: OperationContext },
  ): Promise<void> {
    const { url, endpoint } = src;
    const signal = src.ctx?.signal;
    const what = `Cannot create volume "${name}" from backup "${url}"`;
    let size: number;
    try {
      const bv = await this.#api.backup.getBackupVolume(url, { endpoint });
      if (!BLOCK_BACKUP_DRIVERS.includes(bv.driver)) {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: it was made by driver "${bv.driver}"; only loop and devicemapper backups ` +
            `restore into loop volumes`,
        );
      }
      if (!Number.isSafeInteger(bv.size) || bv.size <= 0) {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: the backup's volume has no size`,
        );
      }
      if (src.size && src.size !== bv.size) {
        throw new this.#api.errors.InvalidArgumentError(
          `${what}: size must match the backup's size ${bv.size}`,
        );
      }
      size = bv.size;
    } catch (err) {
      throw this.#api.errors.wrapError(err, what);
    }
    const image = this.#imagePath(name);
    if (await this.#statOrUndefined(image)) {
      throw new this.#api.errors.ConflictError(`${what}: the image "${image}" exists`);
    }
    const tmp = join(this.#cfg.Path, `${TMP_PREFIX}${name}-${this.#api.util.randomId()}.img`);
    let fs: string;
    try {
      await createSparse(tmp, size).catch((err) => {
        throw this.#createError(err, what, size);
      });
      await this.#api.backup.restoreDeltaBackup(url, tmp, {
        endpoint,
        signal,
        progress: src.ctx?.progress,
      });
      await fsyncFile(tmp);
      fs = await this.#fs.detect(tmp);
      if (signal?.aborted) throw new this.#api.errors.CancelledError(`${what}: cancelled`);
      if (await this.#statOrUndefined(image)) {
        throw new this.#api.errors.ConflictError(`${what}: the image "${image}" exists`);
      }
      await rename(tmp, image);
    } catch (err) {
      await rm(tmp, { force: true });
      throw this.#api.errors.wrapError(err, what);
    }
    if (!fs) {
      this.#log.warn(`No filesystem recognised in the restored volume "${name}"`, {
        volume: name,
        url,
      });
    }
    await this.#finishCreate(name, { size, fs, created: true, what });
    this.#log.info(`Restored backup "${url}" into volume "${name}"`, { volume: name, size });
  }

  /** Attaches the image in place and writes the record (last). On failure nothing is left. */
  async #finishCreate(
    name: string,
    v: { size: number; fs: string; created: boolean; what: string },
  ): Promise<void> {
    const image = this.#imagePath(name);
    try {
      const devices = await this.#findDevices(image);
      const device = devices[0] ?? await this.#attach(image);
      await this.#writeRecord({
        Name: name,
        UUID: crypto.randomUUID(),
        Size: v.size,
        Filesystem: v.fs,
        CreatedTime: this.#api.util.now(),
        Path: image,
        Device: device,
        MountPoint: "",
        Snapshots: {},
      });
      this.#log.info(`Created volume "${name}"`, {
        volume: name,
        image,
        device,
        size: v.size,
        filesystem: v.fs,
      });
    } catch (err) {
      await this.#records.remove(name).catch(() => {});
      await this.#detachAll(image).catch((e) =>
        this.#log.warn(`Cannot detach "${image}": ${this.#api.errors.errorMessage(e)}`, {
          volume: name,
        })
      );
      if (v.created) await rm(image, { force: true });
      throw this.#api.errors.wrapError(err, v.what);
    }
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
      try {
        const devices = await this.#findDevices(rec.Path);
        for (const device of devices) {
          const mounts = await this.#api.util.mounts.mountsOf(device);
          if (mounts.length) {
            throw new this.#api.errors.ConflictError(
              `${what}: its device "${device}" is mounted at "${mounts[0]}"`,
            );
          }
        }
        for (const device of devices) {
          await this.#api.exec("losetup", ["--detach", device]);
        }
        // The record goes first: a crash afterwards leaves files without a record, which the
        // next start (snapshots) or the next create of the name (the image) takes care of.
        await this.#records.remove(name);
        for (const s of Object.values(rec.Snapshots)) await rm(s.FilePath, { force: true });
        await rm(this.#snapshotDir(name), { recursive: true, force: true });
        if (!o.ReferenceOnly) await rm(rec.Path, { force: true });
      } catch (err) {
        throw this.#api.errors.wrapError(err, what);
      }
      this.#log.info(`Deleted volume "${name}"${o.ReferenceOnly ? ", kept its image" : ""}`, {
        volume: name,
        image: rec.Path,
        referenceOnly: o.ReferenceOnly,
      });
    });
  }

  async mountVolume(id: string, opts: StringMap): Promise<string> {
    const name = this.#validVolumeName(id);
    const wanted = this.#api.util.requestedMountPoint(opts, name);
    return await this.#locks.run(name, async () => {
      let rec = await this.#records.must(name, "mount volume");
      return await this.#api.util.mountBlockVolume(name, {
        current: rec.MountPoint,
        wanted,
        defaultMountPoint: this.#defaultMountPoint(name),
        fs: rec.Filesystem,
        activate: async () => {
          const attached = await this.#ensureAttached(rec);
          rec = attached.record;
          return { path: attached.device };
        },
        save: (mountPoint) => this.#writeRecord({ ...rec, MountPoint: mountPoint }),
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
        isMountOf: (entry) => entry.source === rec.Device || !rec.Device,
        save: () => this.#writeRecord({ ...rec, MountPoint: "" }),
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
      Device: rec.Device,
      Size: String(rec.Size),
      Filesystem: rec.Filesystem,
      MountPoint: rec.MountPoint,
      VolumeName: rec.Name,
      VolumeCreatedAt: rec.CreatedTime,
      Path: rec.Path,
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
      const dir = this.#snapshotDir(name);
      const final = this.#snapshotFile(name, snap);
      const tmp = join(dir, `${TMP_PREFIX}${snap}-${this.#api.util.randomId()}.img`);
      const started = performance.now();
      try {
        await this.#api.util.ensureDir(dir);
        // A file without a record entry is left from a crash: it was never a snapshot.
        await rm(final, { force: true });
        const mounted = rec.MountPoint &&
          (await this.#api.util.mounts.mountAt(rec.MountPoint))?.source === rec.Device;
        await this.#copyImage(rec.Path, tmp, { freeze: mounted ? rec.MountPoint : "" });
        await fsyncFile(tmp);
        await rename(tmp, final);
      } catch (err) {
        await rm(tmp, { force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      const entry: SnapshotRecord = {
        Name: snap,
        CreatedTime: this.#api.util.now(),
        Size: rec.Size,
        FilePath: final,
      };
      try {
        await this.#writeRecord({ ...rec, Snapshots: { ...rec.Snapshots, [snap]: entry } });
      } catch (err) {
        await rm(final, { force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      this.#log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        reflink: this.#reflink,
        ms: Math.round(performance.now() - started),
      });
    });
  }

  /**
   * Copies an image: a reflink (or, failing that, a sparse) copy, with the filesystem mounted at
   * `opts.freeze` frozen for the copy, and always thawed afterwards.
   */
  async #copyImage(src: string, dst: string, opts: { freeze: string }): Promise<void> {
    const { freeze } = opts;
    if (freeze) await this.#api.exec("fsfreeze", ["--freeze", freeze]);
    try {
      if (this.#reflink) {
        try {
          await this.#api.exec("cp", ["--reflink=always", src, dst], {
            timeoutMs: LONG_COMMAND_TIMEOUT_MS,
          });
          return;
        } catch (err) {
          this.#log.warn(
            `Reflink copy of "${src}" failed, making a sparse copy: ${
              this.#api.errors.errorMessage(err)
            }`,
          );
          await rm(dst, { force: true });
        }
      }
      await this.#api.exec("cp", ["--sparse=always", src, dst], {
        timeoutMs: LONG_COMMAND_TIMEOUT_MS,
      });
    } finally {
      if (freeze) await this.#thaw(freeze);
    }
  }

  /** `fsfreeze --unfreeze`, retried; an error that is left is thrown. */
  async #thaw(mountPoint: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.#api.exec("fsfreeze", ["--unfreeze", mountPoint]);
        return;
      } catch (err) {
        if (attempt >= 3) {
          this.#log.error(
            `Cannot thaw the filesystem at "${mountPoint}": ${this.#api.errors.errorMessage(err)}`,
            {
              mountpoint: mountPoint,
            },
          );
          throw err;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  /** What the snapshot helpers of `api.util` use of this driver. */
  get #snapshotHelperSpec() {
    return { records: this.#records, locks: this.#locks, inUse: this.#inUse, log: this.#log };
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    await this.#api.util.deleteSnapshot({ id, volumeID }, {
      ...this.#snapshotHelperSpec,
      remove: async ({ snapshot, unrecorded }) => {
        await this.#writeRecord(unrecorded);
        await rm(snapshot.FilePath, { force: true });
      },
    });
  }

  #snapshotInfo(volume: string, s: SnapshotRecord): StringMap {
    return {
      SnapshotName: s.Name,
      SnapshotCreatedAt: s.CreatedTime,
      VolumeUUID: volume,
      Size: String(s.Size),
      FilePath: s.FilePath,
    };
  }

  async #mustSnapshot(snap: string, of: { volume: string; what: string }) {
    return await this.#api.util.mustSnapshot(this.#records, snap, of);
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const { snapshot } = await this.#mustSnapshot(snap, { volume: name, what: "inspect" });
    return this.#snapshotInfo(name, snapshot);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumes = await this.#records.select(opts?.VolumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { name, record } of volumes) {
      for (const s of Object.values(record.Snapshots)) out[s.Name] = this.#snapshotInfo(name, s);
    }
    return out;
  }

  // ---- delta-block operations --------------------------------------------------------------

  /** The image of a recorded snapshot; NotFoundError when either is missing. */
  async #snapshotImage(snap: string, of: { volume: string; what: string }): Promise<string> {
    const { volume, what } = of;
    const { snapshot } = await this.#mustSnapshot(snap, of);
    if (!(await this.#statOrUndefined(snapshot.FilePath))) {
      throw new this.#api.errors.NotFoundError(
        `Cannot ${what} snapshot "${snap}" of volume "${volume}": its image "${snapshot.FilePath}" does not exist`,
      );
    }
    return snapshot.FilePath;
  }

  /** The block map of `file` from filefrag, or undefined when FIEMAP is not available. */
  async #blockMap(file: string, size: number): Promise<Map<number, string> | undefined> {
    try {
      const { stdout } = await this.#api.exec(
        "filefrag",
        ["-s", "-v", `-b${FILEFRAG_UNIT}`, file],
        { timeoutMs: LONG_COMMAND_TIMEOUT_MS },
      );
      const extents = parseFilefrag(stdout);
      if (extents) return blockMap(extents, { size });
      this.#log.warn(`No extent map of "${file}": unexpected filefrag output`);
    } catch (err) {
      this.#log.warn(`No extent map of "${file}": ${this.#api.errors.errorMessage(err)}`);
    }
    return undefined;
  }

  /**
   * The 2 MiB ranges of snapshot `snap` that differ from snapshot `base` (every range holding
   * data when `base` is "" or `snap`). With reflinks, blocks whose extents are shared are equal
   * and every other block with data is reported without reading anything. Without reflinks (or
   * extent maps), "unknown": reading both images would cost more than the engine's compare of
   * one image with the last backup's block map.
   */
  async compareSnapshot(
    snap: string,
    opts: { base: string; volume: string; signal?: AbortSignal },
  ): Promise<Mappings | UnknownChanges> {
    const { base, volume } = opts;
    const started = performance.now();
    const fileA = await this.#snapshotImage(snap, { volume, what: "compare" });
    const sizeA = (await stat(fileA)).size;
    if (!base || base === snap) {
      const blocks = Math.ceil(sizeA / BLOCK_SIZE);
      const map = await this.#blockMap(fileA, sizeA);
      const list = map
        ? [...map.keys()].sort((x, y) => x - y)
        : Array.from({ length: blocks }, (_, i) => i);
      const stats: CompareStats = {
        method: "full",
        blocks,
        changed: list.length,
        shared: 0,
        bytesRead: 0,
        ms: Math.round(performance.now() - started),
      };
      this.#logCompare({ volume, snap, base, stats });
      return { mappings: blocksToMappings(list), blockSize: BLOCK_SIZE };
    }
    const release = this.#inUse.use(volume, base);
    try {
      const fileB = await this.#snapshotImage(base, { volume, what: "compare" });
      const sizeB = (await stat(fileB)).size;
      const blocks = Math.ceil(Math.max(sizeA, sizeB) / BLOCK_SIZE);
      const unknown = (): UnknownChanges => {
        const ms = Math.round(performance.now() - started);
        const stats: CompareStats = {
          method: "unknown",
          blocks,
          changed: 0,
          shared: 0,
          bytesRead: 0,
          ms,
        };
        this.#logCompare({ volume, snap, base, stats });
        return "unknown";
      };
      if (!this.#reflink) return unknown();
      const [mapA, mapB] = [await this.#blockMap(fileA, sizeA), await this.#blockMap(fileB, sizeB)];
      if (!mapA || !mapB) return unknown();
      const { differ: changed, shared } = diffBlockMaps(mapA, mapB);
      const stats: CompareStats = {
        method: "extents",
        blocks,
        changed: changed.length,
        shared,
        bytesRead: 0,
        ms: Math.round(performance.now() - started),
      };
      this.#logCompare({ volume, snap, base, stats });
      return { mappings: blocksToMappings(changed), blockSize: BLOCK_SIZE };
    } finally {
      release();
    }
  }

  #logCompare(c: { volume: string; snap: string; base: string; stats: CompareStats }): void {
    this.#log.info(
      `Compared snapshot "${c.snap}" of volume "${c.volume}" with ${
        c.base && c.base !== c.snap ? `"${c.base}"` : "nothing (full)"
      }`,
      { volume: c.volume, snapshot: c.snap, base: c.base, ...c.stats },
    );
  }

  /** The DeltaBlockOperations of one backup: its own file handles, closed at the end. */
  #deltaSession(ctx?: OperationContext): { ops: DeltaBlockOperations; close(): Promise<void> } {
    const handles = new Map<string, Promise<FileHandle>>();
    const key = (id: string, volumeID: string) => `${volumeID}\u0000${id}`;
    const handle = (id: string, volumeID: string) => {
      let fh = handles.get(key(id, volumeID));
      if (!fh) {
        fh = this.#snapshotImage(id, { volume: volumeID, what: "read" }).then((file) =>
          open(file, "r")
        );
        fh.catch(() => handles.delete(key(id, volumeID)));
        handles.set(key(id, volumeID), fh);
      }
      return fh;
    };
    const ops: DeltaBlockOperations = {
      hasSnapshot: async (id, volumeID) => {
        const rec = await this.#records.read(this.#validVolumeName(volumeID));
        const s = rec?.Snapshots[id];
        return !!s && (await this.#statOrUndefined(s.FilePath))?.isFile() === true;
      },
      compareSnapshot: (id, compareID, volumeID) =>
        this.compareSnapshot(id, { base: compareID, volume: volumeID, signal: ctx?.signal }),
      openSnapshot: async (id, volumeID) => {
        await handle(id, volumeID);
      },
      readSnapshot: async (id, volumeID, start, data) => {
        await this.#api.util.readFull(await handle(id, volumeID), { buf: data, pos: start });
      },
      snapshotFile: (id, volumeID) => this.#snapshotImage(id, { volume: volumeID, what: "read" }),
      closeSnapshot: async (id, volumeID) => {
        const fh = handles.get(key(id, volumeID));
        handles.delete(key(id, volumeID));
        if (fh) await (await fh).close();
      },
    };
    return {
      ops,
      close: async () => {
        for (const fh of handles.values()) await (await fh.catch(() => undefined))?.close();
        handles.clear();
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
      {
        ...this.#snapshotHelperSpec,
        driver: DRIVER_NAME,
        session: (ctx) => this.#deltaSession(ctx),
      },
    );
  }

  /** DeltaBlockOperations outside a backup (tests, tools); the caller closes what it opens. */
  deltaOps(ctx?: OperationContext): { ops: DeltaBlockOperations; close(): Promise<void> } {
    return this.#deltaSession(ctx);
  }

  /** Deleting, inspecting and listing backups need nothing of this driver but its name. */
  get #queries() {
    return this.#api.backup.queries(DRIVER_NAME, { readable: BLOCK_BACKUP_DRIVERS });
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

  convoyDriver(): LoopConvoyDriver {
    const cfg = this.#cfg;
    const driver = this.#api.util.convoyDriver(DRIVER_NAME, this, () => ({
      Root: cfg.Root,
      Path: cfg.Path,
      SnapshotPath: cfg.SnapshotPath,
      DefaultVolumeSize: String(cfg.DefaultVolumeSize),
      Filesystem: cfg.Filesystem,
      DirectIO: String(cfg.DirectIO),
      Reflink: String(this.#reflink),
    }));
    return { ...driver, deltaOps: (ctx) => this.deltaOps(ctx) };
  }
}

/** The loop ConvoyDriver, with its delta-block operations reachable for tests and tools. */
export interface LoopConvoyDriver extends ConvoyDriver {
  /** A DeltaBlockOperations session (what a backup uses); call close() when done. */
  deltaOps(ctx?: OperationContext): { ops: DeltaBlockOperations; close(): Promise<void> };
}
