/**
 * The vfs driver: every volume is a directory under `vfs.path` (a local folder or a shared NFS
 * mount). Volume records stay in Convoy's place and format on that path, so other hosts and old
 * Convoy volumes are seen; what is per host (mount state, snapshots) stays under the driver
 * root.
 *
 * On-disk layout:
 *
 * ```
 * <root>/vfs.cfg                               {"Root","Path","ConfigPath","DefaultVolumeSize"}
 * <root>/state/<volume>.json                   per-host state: {"Name","VolumeCreatedTime","MountPoint","Snapshots"}
 * <root>/snapshots/<volume>/<snapshot>/        a snapshot: a full copy (reflinked where possible)
 * <root>/snapshots/<volume>_<snapshot>.tar.gz  an old Convoy snapshot, adopted as is
 * <root>/tmp/                                  backup and restore archives while in use
 * <vfs.path>/<volume>/                         the volume data (mode 0755)
 * <vfs.path>/config/vfs_volume_<volume>.json   the shared record, Convoy's format
 * <vfs.path>/.tmp-restore.<id>.<pid>@<host>/   a restore in progress (renamed into place)
 * ```
 * @module
 */
import {
  chmod,
  copyFile,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  rename,
  rm,
  rmdir,
  stat,
} from "node:fs/promises";
import { hostname } from "node:os";
import { join, resolve } from "node:path";
import process from "node:process";
import type {
  ConvoyDriver,
  KeyedLock,
  Logger,
  OperationContext,
  PluginApi,
  RecordStore,
  StringMap,
} from "../../mod.ts";
import { loadOrCreateConfig, type VfsConfig } from "./config.ts";
import {
  createSchemas,
  type Schemas,
  type SnapshotState,
  type VolumeRecord,
  type VolumeState,
} from "./options.ts";

/** The driver's name. */
export const DRIVER_NAME = "vfs";

/** Copying, archiving and extracting whole volumes may take long: no short command timeout. */
const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;
const RESTORE_DIR = /^\.tmp-restore\.[0-9a-f]+\.([0-9]+)@(.+)$/;

/** Reads a state file with a stale-check result. */
interface LoadedState {
  /** The state to use for this incarnation of the volume. */
  state: VolumeState;
  /** State left by an older volume of the same name (deleted on another host); to discard. */
  stale?: VolumeState;
}

/**
 * Creates a vfs driver instance (Convoy's InitFunc). `root` is `<daemon root>/vfs`; `config` is
 * the `--driver-opts` map, read only on the first start.
 */
export async function createVfsDriver(
  api: PluginApi,
  root: string,
  config: StringMap,
): Promise<ConvoyDriver> {
  const log = api.log.child({ pkg: "vfs", driver: DRIVER_NAME });
  const driverRoot = resolve(root);
  await api.util.ensureDir(driverRoot);
  const schemas = createSchemas(api);
  const cfg = await loadOrCreateConfig(api, schemas, { root: driverRoot, config, log });
  const driver = new VfsDriver(api, { cfg, schemas, log });
  await driver.init();
  return driver.convoyDriver();
}

class VfsDriver {
  #api: PluginApi;
  #cfg: VfsConfig;
  #schemas: Schemas;
  #log: Logger;
  #locks: KeyedLock;
  #records: RecordStore<VolumeRecord>;

  constructor(api: PluginApi, opts: { cfg: VfsConfig; schemas: Schemas; log: Logger }) {
    this.#api = api;
    this.#locks = api.util.createLock();
    this.#cfg = opts.cfg;
    this.#schemas = opts.schemas;
    this.#log = opts.log;
    this.#records = api.util.createRecordStore({
      dir: opts.cfg.ConfigPath,
      prefix: "vfs_volume_",
      schema: opts.schemas.volumeRecord,
      kind: "volume",
      log: opts.log,
    });
  }

  // ---- paths -------------------------------------------------------------------------------

  #volumeDir(name: string): string {
    return join(this.#cfg.Path, name);
  }
  get #stateDir(): string {
    return join(this.#cfg.Root, "state");
  }
  #stateFile(name: string): string {
    return join(this.#stateDir, `${name}.json`);
  }
  get #snapshotsDir(): string {
    return join(this.#cfg.Root, "snapshots");
  }
  #snapshotRoot(volume: string): string {
    return join(this.#snapshotsDir, volume);
  }
  #legacySnapshotFile(volume: string, snapshot: string): string {
    return join(this.#snapshotsDir, `${volume}_${snapshot}.tar.gz`);
  }
  get #tmpDir(): string {
    return join(this.#cfg.Root, "tmp");
  }

  // ---- start-up ----------------------------------------------------------------------------

  /** Creates the folders, removes leftovers of interrupted operations, restores bind mounts. */
  async init(): Promise<void> {
    for (const dir of [this.#cfg.Path, this.#cfg.ConfigPath, this.#stateDir, this.#snapshotsDir]) {
      await this.#api.util.ensureDir(dir);
    }
    await rm(this.#tmpDir, { recursive: true, force: true });
    await this.#api.util.ensureDir(this.#tmpDir);
    await this.#cleanLeftovers();
    await this.#restoreMounts();
  }

  async #cleanLeftovers(): Promise<void> {
    // Unfinished snapshot copies (local; one daemon per root).
    for (const vol of await readdir(this.#snapshotsDir)) {
      const dir = join(this.#snapshotsDir, vol);
      if (!(await lstat(dir)).isDirectory()) continue;
      for (const entry of await readdir(dir)) {
        if (!entry.startsWith(".tmp-")) continue;
        this.#log.info("Removing an unfinished snapshot copy", { path: join(dir, entry) });
        await rm(join(dir, entry), { recursive: true, force: true });
      }
    }
    // Unfinished restores of this host whose daemon is gone (vfs.path may be shared).
    const host = hostname();
    for (const entry of await readdir(this.#cfg.Path)) {
      const m = RESTORE_DIR.exec(entry);
      if (!m || m[2] !== host || this.#processAlive(Number(m[1]))) continue;
      this.#log.info("Removing an unfinished restore", { path: join(this.#cfg.Path, entry) });
      await rm(join(this.#cfg.Path, entry), { recursive: true, force: true });
    }
  }

  /** Re-creates recorded bind mounts that are gone (after a reboot); failures are only logged. */
  async #restoreMounts(): Promise<void> {
    for (const file of await readdir(this.#stateDir)) {
      if (file.startsWith(".") || !file.endsWith(".json")) continue;
      const name = file.slice(0, -".json".length);
      let mountPoint = "";
      try {
        const record = await this.#records.read(name);
        if (!record) {
          this.#log.warn(`Skipping the local state of volume "${name}": volume no longer exists`, {
            volume: name,
          });
          continue;
        }
        const { state, stale } = await this.#readState(name, record);
        if (stale) {
          await this.#discardStale(name, stale);
          continue;
        }
        mountPoint = state.MountPoint;
        if (!mountPoint || mountPoint === this.#volumeDir(name)) continue;
        if (await this.#api.util.mounts.isMountPoint(mountPoint)) continue;
        await this.#bind(name, mountPoint);
        this.#log.info(`Restored the mount of volume "${name}" at "${mountPoint}"`, {
          volume: name,
          mountpoint: mountPoint,
        });
      } catch (err) {
        this.#log.error(
          `Cannot restore the mount of volume "${name}"${
            mountPoint ? ` at "${mountPoint}"` : ""
          }: ${this.#api.errors.errorMessage(err)}`,
          { volume: name },
        );
      }
    }
  }

  // ---- records and state -------------------------------------------------------------------

  #validVolumeName(id: unknown): string {
    return this.#api.util.validateName(id, "volume");
  }

  /** The per-host state file as saved, or undefined. */
  async #readStateFile(name: string): Promise<VolumeState | undefined> {
    const file = this.#stateFile(name);
    let raw: unknown;
    try {
      raw = await this.#api.util.readJSON(file);
    } catch (err) {
      throw new this.#api.errors.BackendError(
        `Cannot read the state of volume "${name}": "${file}" is not valid JSON: ${
          this.#api.errors.errorMessage(err)
        }`,
        { cause: err },
      );
    }
    if (raw === undefined) return undefined;
    const r = this.#schemas.volumeState.safeParse(raw);
    if (!r.success) {
      throw new this.#api.errors.BackendError(
        `Cannot read the state of volume "${name}": "${file}" is not a valid state file`,
      );
    }
    return r.data;
  }

  /**
   * The per-host state of the volume `record` describes. Without a state file, old Convoy
   * snapshot tarballs of this host listed in the record are adopted.
   */
  async #readState(name: string, record: VolumeRecord): Promise<LoadedState> {
    const saved = await this.#readStateFile(name);
    const fresh: VolumeState = {
      Name: name,
      VolumeCreatedTime: record.CreatedTime,
      MountPoint: "",
      Snapshots: {},
    };
    if (saved) {
      if (saved.VolumeCreatedTime === record.CreatedTime) return { state: saved };
      return { state: fresh, stale: saved };
    }
    for (const [snap, s] of Object.entries(record.Snapshots ?? {})) {
      const file = this.#legacySnapshotFile(name, snap);
      if (s.FilePath !== file) continue;
      try {
        if (!(await stat(file)).isFile()) continue;
      } catch {
        continue;
      }
      fresh.Snapshots[snap] = { Name: snap, CreatedTime: s.CreatedTime ?? "", FilePath: file };
    }
    return { state: fresh };
  }

  /** The state for a changing operation: a stale state is discarded first. */
  async #stateForWrite(name: string, record: VolumeRecord): Promise<VolumeState> {
    const { state, stale } = await this.#readState(name, record);
    if (stale) await this.#discardStale(name, stale);
    return state;
  }

  /**
   * Drops the local state of an older volume with the same name (it was deleted, and perhaps
   * re-created, on another host sharing vfs.path): its bind mount and its snapshots.
   */
  async #discardStale(name: string, stale: VolumeState): Promise<void> {
    this.#log.warn(
      `Discarding the local state of an older volume "${name}" (created ${
        JSON.stringify(stale.VolumeCreatedTime)
      }): the volume was deleted on another host`,
      { volume: name },
    );
    if (stale.MountPoint && stale.MountPoint !== this.#volumeDir(name)) {
      await this.#unbind(stale.MountPoint, name).catch((err) =>
        this.#log.warn(
          `Cannot unmount "${stale.MountPoint}": ${this.#api.errors.errorMessage(err)}`,
          { volume: name },
        )
      );
    }
    await this.#removeSnapshotFiles(name, stale);
    await rm(this.#stateFile(name), { force: true });
  }

  async #writeState(name: string, state: VolumeState): Promise<void> {
    if (!state.MountPoint && Object.keys(state.Snapshots).length === 0) {
      await rm(this.#stateFile(name), { force: true });
      return;
    }
    await this.#api.util.writeJSON(this.#stateFile(name), {
      Name: name,
      VolumeCreatedTime: state.VolumeCreatedTime,
      MountPoint: state.MountPoint,
      Snapshots: state.Snapshots,
    });
  }

  async #removeSnapshotFiles(name: string, state: VolumeState): Promise<void> {
    for (const s of Object.values(state.Snapshots)) {
      await rm(s.FilePath, { recursive: true, force: true });
    }
    await rm(this.#snapshotRoot(name), { recursive: true, force: true });
  }

  // ---- helpers -----------------------------------------------------------------------------

  #processAlive(pid: number): boolean {
    if (pid === process.pid) return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (err) {
      return this.#api.util.errno(err) === "EPERM";
    }
  }

  async #bind(name: string, mountPoint: string): Promise<void> {
    await this.#api.util.ensureDir(mountPoint);
    await this.#api.exec("mount", ["--bind", this.#volumeDir(name), mountPoint]);
  }

  /** Unmounts a bind mount; one not mounted is fine, a busy one is a ConflictError. */
  async #unbind(mountPoint: string, volume: string): Promise<void> {
    if (!(await this.#api.util.mounts.isMountPoint(mountPoint))) return;
    await this.#api.util.filesystems.umount(mountPoint, { volume });
  }

  async #mustDir(name: string, what: string): Promise<string> {
    const dir = this.#volumeDir(name);
    let ok = false;
    try {
      ok = (await stat(dir)).isDirectory();
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new this.#api.errors.NotFoundError(
        `Cannot ${what} "${name}": the volume directory "${dir}" does not exist`,
      );
    }
    return dir;
  }

  /** Creates `<dir>/disk.img`, sparse, of exactly the volume size, unless it exists. */
  async #prepareDiskImage(name: string, dir: string, record: VolumeRecord): Promise<void> {
    const size = record.Size || this.#cfg.DefaultVolumeSize;
    const img = join(dir, "disk.img");
    try {
      const st = await stat(img);
      if (st.size !== size) {
        this.#log.warn(
          `The disk image "${img}" of volume "${name}" is ${st.size} bytes, not ${size}`,
          { volume: name },
        );
      }
      return;
    } catch (err) {
      if (this.#api.util.errno(err) !== "ENOENT") throw err;
    }
    const fh = await open(img, "wx", 0o644);
    try {
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
  }

  /** `cp -a` of a live directory; retried once when a file vanished during the copy. */
  async #copyTree(src: string, dest: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      await rm(dest, { recursive: true, force: true });
      await mkdir(dest, { mode: 0o755 });
      try {
        await this.#api.exec("cp", ["-a", "--reflink=auto", `${src}/.`, dest], {
          timeoutMs: LONG_COMMAND_TIMEOUT_MS,
        });
        return;
      } catch (err) {
        if (attempt > 1 || !/No such file or directory/.test(this.#api.errors.errorMessage(err))) {
          throw err;
        }
        this.#log.warn(`Copying "${src}" again: a file vanished during the copy`, {
          error: this.#api.errors.errorMessage(err),
        });
      }
    }
  }

  // ---- volumes -----------------------------------------------------------------------------

  async createVolume(id: string, opts: StringMap, ctx?: OperationContext): Promise<void> {
    const name = this.#validVolumeName(id);
    const o = this.#api.util.parseOptions(
      this.#schemas.createOptions,
      opts ?? {},
      `options of volume "${name}"`,
    );
    await this.#locks.run(name, async () => {
      if (await this.#records.read(name)) {
        throw new this.#api.errors.AlreadyExistsError(
          `Cannot create volume "${name}": volume already exists`,
        );
      }
      const leftover = await this.#readStateFile(name).catch(() => undefined);
      if (leftover) await this.#discardStale(name, leftover);
      else await rm(this.#stateFile(name), { force: true });
      await rm(this.#snapshotRoot(name), { recursive: true, force: true });

      let size = 0;
      if (o.PrepareForVM) size = o.Size || this.#cfg.DefaultVolumeSize;
      else if (o.Size) {
        this.#log.warn(`Size of volume "${name}" not applied: vfs sizes only --vm volumes`, {
          volume: name,
        });
      }
      const dir = this.#volumeDir(name);
      let created = false;
      if (o.BackupURL) {
        await this.#restore(name, { url: o.BackupURL, endpoint: o.EndpointURL, ctx });
        created = true;
      } else {
        created = await this.#makeVolumeDir(name);
      }
      const record = {
        Name: name,
        Size: size,
        Path: dir,
        MountPoint: "",
        PrepareForVM: o.PrepareForVM,
        CreatedTime: this.#api.util.now(),
        Snapshots: {},
      };
      try {
        await this.#records.write(name, record);
      } catch (err) {
        if (created) await rm(dir, { recursive: true, force: true });
        throw this.#api.errors.wrapError(err, `Cannot create volume "${name}"`);
      }
      this.#log.info(`Created volume "${name}"`, { volume: name, path: dir });
    });
  }

  /** Creates the volume directory; an existing one is reused. Resolves to true when created. */
  async #makeVolumeDir(name: string): Promise<boolean> {
    const dir = this.#volumeDir(name);
    try {
      await mkdir(dir, { mode: 0o755 });
    } catch (err) {
      if (this.#api.util.errno(err) !== "EEXIST") {
        throw this.#api.errors.wrapError(err, `Cannot create volume "${name}"`);
      }
      if (!(await stat(dir)).isDirectory()) {
        throw new this.#api.errors.ConflictError(
          `Cannot create volume "${name}": "${dir}" exists and is not a directory`,
        );
      }
      this.#log.info(`Reusing the existing directory "${dir}" for volume "${name}"`, {
        volume: name,
      });
      return false;
    }
    await chmod(dir, 0o755);
    return true;
  }

  /** Throws unless the volume path is free: missing, or an empty directory. */
  async #checkRestoreTarget(name: string, url: string): Promise<void> {
    const dir = this.#volumeDir(name);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (err) {
      if (this.#api.util.errno(err) === "ENOENT") return;
      throw new this.#api.errors.ConflictError(
        `Cannot restore backup "${url}" into volume "${name}": "${dir}" exists and is not a directory`,
      );
    }
    if (entries.length > 0) {
      throw new this.#api.errors.ConflictError(
        `Cannot restore backup "${url}" into volume "${name}": the directory "${dir}" exists and is not empty`,
      );
    }
  }

  /**
   * Restores a single-file backup as the volume directory: download, extract into a temporary
   * directory beside it, rename into place. On failure or cancel (`src.ctx.signal`) nothing is
   * left behind.
   */
  async #restore(
    name: string,
    src: { url: string; endpoint?: string; ctx?: OperationContext },
  ): Promise<void> {
    const { url, endpoint } = src;
    const signal = src.ctx?.signal;
    const what = `Cannot restore backup "${url}" into volume "${name}"`;
    const backupVolume = await this.#api.backup.getBackupVolume(url, { endpoint });
    if (backupVolume.driver !== DRIVER_NAME) {
      throw new this.#api.errors.InvalidArgumentError(
        `Cannot restore backup "${url}" into a vfs volume: it was made by driver "${backupVolume.driver}"`,
      );
    }
    await this.#checkRestoreTarget(name, url);
    const id = this.#api.util.randomId();
    const archive = join(this.#tmpDir, `restore-${name}-${id}.tar.gz`);
    const work = join(this.#cfg.Path, `.tmp-restore.${id}.${process.pid}@${hostname()}`);
    try {
      await this.#api.backup.restoreSingleFileBackup(url, archive, {
        endpoint,
        signal,
        progress: src.ctx?.progress,
      });
      await mkdir(work, { mode: 0o755 });
      await chmod(work, 0o755);
      try {
        // -x detects gzip itself; old Convoy archives are gzip'ed tars of `-C <dir> .`.
        await this.#api.exec("tar", ["--numeric-owner", "-xf", archive, "-C", work], {
          timeoutMs: LONG_COMMAND_TIMEOUT_MS,
          signal,
        });
      } catch (err) {
        throw this.#api.errors.wrapError(err, what);
      }
      if (signal?.aborted) throw new this.#api.errors.CancelledError(`${what}: cancelled`);
      await this.#checkRestoreTarget(name, url);
      await rmdir(this.#volumeDir(name)).catch(() => {});
      await rename(work, this.#volumeDir(name));
      this.#log.info(`Restored backup "${url}" into volume "${name}"`, { volume: name });
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw this.#api.errors.wrapError(err, what);
    } finally {
      await rm(archive, { force: true });
    }
  }

  async deleteVolume(id: string, opts: StringMap): Promise<void> {
    const name = this.#validVolumeName(id);
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.deleteVolume,
      opts ?? {},
      `options of volume "${name}"`,
    );
    await this.#locks.run(name, async () => {
      const record = await this.#records.must(name, "delete volume");
      const state = await this.#stateForWrite(name, record);
      if (state.MountPoint) {
        throw new this.#api.errors.ConflictError(
          `Cannot delete volume "${name}": volume is mounted at "${state.MountPoint}"`,
        );
      }
      // The record goes first: a crash afterwards leaves a directory without a record, which a
      // later create of the same name adopts, never a record without its data.
      try {
        await this.#records.remove(name);
      } catch (err) {
        throw this.#api.errors.wrapError(err, `Cannot delete volume "${name}"`);
      }
      const dir = this.#volumeDir(name);
      try {
        if (!o.ReferenceOnly) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        for (const [snap, s] of Object.entries(state.Snapshots)) {
          // Waits for a backup that is archiving this snapshot.
          await this.#locks.run(
            this.#snapshotLock(name, snap),
            () => rm(s.FilePath, { recursive: true, force: true }),
          );
        }
        await this.#removeSnapshotFiles(name, state);
        await rm(this.#stateFile(name), { force: true });
      } catch (err) {
        throw this.#api.errors.wrapError(
          err,
          `Cannot delete the data of volume "${name}" in "${dir}"`,
        );
      }
      this.#log.info(`Deleted volume "${name}"`, {
        volume: name,
        referenceOnly: o.ReferenceOnly,
      });
    });
  }

  async mountVolume(id: string, opts: StringMap): Promise<string> {
    const name = this.#validVolumeName(id);
    let wanted = this.#api.util.requestedMountPoint(opts, name);
    return await this.#locks.run(name, async () => {
      const record = await this.#records.must(name, "mount volume");
      const state = await this.#stateForWrite(name, record);
      const dir = await this.#mustDir(name, "mount volume");
      if (wanted === dir) wanted = "";
      if (record.PrepareForVM) await this.#prepareDiskImage(name, dir, record);

      const current = state.MountPoint;
      if (current) {
        if (wanted && wanted !== current) {
          throw new this.#api.errors.ConflictError(
            `Cannot mount volume "${name}" at "${wanted}": volume is already mounted at "${current}"`,
          );
        }
        if (current !== dir && !(await this.#api.util.mounts.isMountPoint(current))) {
          await this.#bind(name, current);
          this.#log.info(`Mounted volume "${name}" at "${current}" again`, { volume: name });
        }
        return current;
      }
      if (!wanted) {
        await this.#writeState(name, { ...state, MountPoint: dir });
        return dir;
      }
      await this.#api.util.ensureDir(wanted);
      if (await this.#api.util.mounts.isMountPoint(wanted)) {
        throw new this.#api.errors.ConflictError(
          `Cannot mount volume "${name}" at "${wanted}": "${wanted}" is already a mount point`,
        );
      }
      try {
        await this.#bind(name, wanted);
      } catch (err) {
        throw this.#api.errors.wrapError(err, `Cannot mount volume "${name}" at "${wanted}"`);
      }
      try {
        await this.#writeState(name, { ...state, MountPoint: wanted });
      } catch (err) {
        await this.#unbind(wanted, name).catch(() => {});
        throw this.#api.errors.wrapError(err, `Cannot mount volume "${name}" at "${wanted}"`);
      }
      this.#log.info(`Mounted volume "${name}" at "${wanted}"`, {
        volume: name,
        mountpoint: wanted,
      });
      return wanted;
    });
  }

  async umountVolume(id: string): Promise<void> {
    const name = this.#validVolumeName(id);
    await this.#locks.run(name, async () => {
      const record = await this.#records.read(name);
      const state = record
        ? await this.#stateForWrite(name, record)
        : await this.#readStateFile(name);
      if (!state) {
        throw new this.#api.errors.NotFoundError(
          `Cannot unmount volume "${name}": volume does not exist`,
        );
      }
      const mountPoint = state.MountPoint;
      if (!mountPoint) return;
      if (mountPoint !== this.#volumeDir(name)) {
        try {
          await this.#unbind(mountPoint, name);
        } catch (err) {
          throw this.#api.errors.wrapError(
            err,
            `Cannot unmount volume "${name}" from "${mountPoint}"`,
          );
        }
      }
      await this.#writeState(name, { ...state, MountPoint: "" });
      this.#log.info(`Unmounted volume "${name}"`, { volume: name, mountpoint: mountPoint });
    });
  }

  async mountPoint(id: string): Promise<string> {
    const name = this.#validVolumeName(id);
    const record = await this.#records.must(name, "find the mount point of volume");
    return (await this.#readState(name, record)).state.MountPoint;
  }

  #volumeInfo(name: string, record: VolumeRecord, state: VolumeState): StringMap {
    return {
      Path: this.#volumeDir(name),
      MountPoint: state.MountPoint,
      Size: String(record.Size),
      PrepareForVM: String(record.PrepareForVM),
      VolumeName: name,
      VolumeCreatedAt: record.CreatedTime,
    };
  }

  async getVolumeInfo(id: string): Promise<StringMap> {
    const name = this.#validVolumeName(id);
    const record = await this.#records.must(name, "inspect volume");
    const { state } = await this.#readState(name, record);
    return this.#volumeInfo(name, record, state);
  }

  async listVolume(_opts: StringMap): Promise<Record<string, StringMap>> {
    const out: Record<string, StringMap> = {};
    for (const { name, record } of await this.#records.list()) {
      let state: VolumeState;
      try {
        state = (await this.#readState(name, record)).state;
      } catch (err) {
        this.#log.warn(this.#api.errors.errorMessage(err), { volume: name });
        state = { Name: name, VolumeCreatedTime: "", MountPoint: "", Snapshots: {} };
      }
      out[name] = this.#volumeInfo(name, record, state);
    }
    return out;
  }

  // ---- snapshots ---------------------------------------------------------------------------

  #snapshotLock(volume: string, snapshot: string): string {
    return `${volume}\u0000snapshot\u0000${snapshot}`;
  }

  async createSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const what = `Cannot create snapshot "${snap}" of volume "${name}"`;
    await this.#locks.run(name, async () => {
      const record = await this.#records.must(name, `create snapshot "${snap}" of volume`);
      const state = await this.#stateForWrite(name, record);
      if (state.Snapshots[snap]) {
        throw new this.#api.errors.AlreadyExistsError(`${what}: snapshot already exists`);
      }
      const src = await this.#mustDir(name, `create snapshot "${snap}" of volume`);
      const parent = this.#snapshotRoot(name);
      const final = join(parent, snap);
      const work = join(parent, `.tmp-${snap}-${this.#api.util.randomId()}`);
      await this.#api.util.ensureDir(parent);
      // A directory without a state entry is left from a crash: it was never a snapshot.
      await rm(final, { recursive: true, force: true });
      try {
        await this.#copyTree(src, work);
        await this.#api.exec("sync", [], { timeoutMs: LONG_COMMAND_TIMEOUT_MS });
        await rename(work, final);
      } catch (err) {
        await rm(work, { recursive: true, force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      const entry: SnapshotState = {
        Name: snap,
        CreatedTime: this.#api.util.now(),
        FilePath: final,
      };
      try {
        await this.#writeState(name, {
          ...state,
          Snapshots: { ...state.Snapshots, [snap]: entry },
        });
      } catch (err) {
        await rm(final, { recursive: true, force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      this.#log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
      });
    });
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    await this.#locks.run(name, async () => {
      const record = await this.#records.read(name);
      const state = record
        ? await this.#stateForWrite(name, record)
        : await this.#readStateFile(name);
      const entry = state?.Snapshots[snap];
      if (!state || !entry) {
        throw new this.#api.errors.NotFoundError(
          `Cannot delete snapshot "${snap}" of volume "${name}": snapshot does not exist`,
        );
      }
      await this.#locks.run(this.#snapshotLock(name, snap), async () => {
        const rest = { ...state.Snapshots };
        delete rest[snap];
        await this.#writeState(name, { ...state, Snapshots: rest });
        await rm(entry.FilePath, { recursive: true, force: true });
      });
      this.#log.info(`Deleted snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
      });
    });
  }

  #snapshotInfo(volume: string, s: SnapshotState): StringMap {
    return {
      SnapshotName: s.Name,
      SnapshotCreatedAt: s.CreatedTime,
      VolumeUUID: volume,
      FilePath: s.FilePath,
    };
  }

  async #mustSnapshot(
    snap: string,
    name: string,
    what: string,
  ): Promise<{ record: VolumeRecord; snapshot: SnapshotState }> {
    const record = await this.#records.must(name, `${what} snapshot "${snap}" of volume`);
    const { state } = await this.#readState(name, record);
    const snapshot = state.Snapshots[snap];
    if (!snapshot) {
      throw new this.#api.errors.NotFoundError(
        `Cannot ${what} snapshot "${snap}" of volume "${name}": snapshot does not exist`,
      );
    }
    return { record, snapshot };
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const { snapshot } = await this.#mustSnapshot(snap, name, "inspect");
    return this.#snapshotInfo(name, snapshot);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumeName = opts?.VolumeName;
    const volumes = await this.#records.select(volumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { name, record } of volumes) {
      let state: VolumeState;
      try {
        state = (await this.#readState(name, record)).state;
      } catch (err) {
        if (volumeName) throw err;
        this.#log.warn(this.#api.errors.errorMessage(err), { volume: name });
        continue;
      }
      for (const s of Object.values(state.Snapshots)) out[s.Name] = this.#snapshotInfo(name, s);
    }
    return out;
  }

  // ---- backups -----------------------------------------------------------------------------

  async createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Promise<string> {
    const snap = this.#api.util.validateName(snapshotID, "snapshot");
    const name = this.#validVolumeName(volumeID);
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.backup,
      opts ?? {},
      "backup options",
    );
    const what = `Cannot back up snapshot "${snap}" of volume "${name}"`;
    const { record, snapshot } = await this.#mustSnapshot(snap, name, "back up");
    const archive = join(
      this.#tmpDir,
      `backup-${name}-${snap}-${this.#api.util.randomId()}.tar.gz`,
    );
    try {
      await this.#locks.run(this.#snapshotLock(name, snap), async () => {
        await this.#mustSnapshot(snap, name, "back up");
        const src = snapshot.FilePath;
        try {
          if ((await stat(src)).isFile()) {
            // An old Convoy snapshot is already the archive.
            await link(src, archive).catch(() => copyFile(src, archive));
          } else {
            await this.#api.exec("tar", ["--numeric-owner", "-czf", archive, "-C", src, "."], {
              timeoutMs: LONG_COMMAND_TIMEOUT_MS,
              signal: ctx?.signal,
            });
          }
        } catch (err) {
          throw this.#api.errors.wrapError(err, what);
        }
      });
      const url = await this.#api.backup.createSingleFileBackup(archive, {
        volume: { name, driver: DRIVER_NAME, size: 0, createdTime: record.CreatedTime },
        snapshot: { name: snap, createdTime: snapshot.CreatedTime },
        destURL,
        endpoint: o.EndpointURL,
        signal: ctx?.signal,
        progress: ctx?.progress,
      });
      this.#log.info(`Backed up snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        dest_url: destURL,
        backup_url: url,
      });
      return url;
    } finally {
      await rm(archive, { force: true });
    }
  }

  /** Deleting, inspecting and listing backups need nothing of this driver but its name. */
  get #queries() {
    return this.#api.backup.queries(DRIVER_NAME);
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

  convoyDriver(): ConvoyDriver {
    const cfg = this.#cfg;
    const driver = this.#api.util.convoyDriver(DRIVER_NAME, this, () => ({
      Root: cfg.Root,
      Path: cfg.Path,
      DefaultVolumeSize: String(cfg.DefaultVolumeSize),
    }));
    // Docker's Remove keeps the folder: other hosts may share vfs.path (Convoy v0.5.2).
    return { ...driver, capabilities: { dockerRemoveKeepsData: true } };
  }
}
