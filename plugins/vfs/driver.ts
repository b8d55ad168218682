/**
 * The vfs driver: every volume is a directory under `vfs.path` (a local folder or a shared NFS
 * mount). Volume records stay in Convoy's place and format on that path, so other hosts and old
 * Convoy volumes are seen; what is per host (mount state, snapshots) stays under the driver
 * root.
 *
 * The parts, one concern each: layout.ts (the paths below), state.ts (the per-host state files),
 * dirs.ts (volume directories: bind mounts, copies, `--vm` disk images), snapshots.ts,
 * backups.ts (single-file backups and restores), startup.ts; this file: the volume operations and
 * the ConvoyDriver object.
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
import { rm } from "node:fs/promises";
import { resolve } from "node:path";
import type {
  ConvoyDriver,
  DriverMethods,
  KeyedLock,
  Logger,
  OperationContext,
  PluginApi,
  RecordStore,
  StringMap,
} from "../../mod.ts";
import { VfsBackups } from "./backups.ts";
import { loadOrCreateConfig, type VfsConfig } from "./config.ts";
import { VolumeDirs } from "./dirs.ts";
import { VfsLayout } from "./layout.ts";
import { createSchemas, type Schemas, type VolumeRecord, type VolumeState } from "./options.ts";
import { VfsSnapshots } from "./snapshots.ts";
import { startUp } from "./startup.ts";
import { VolumeStates } from "./state.ts";

/** The driver's name. */
export const DRIVER_NAME = "vfs";

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
  #layout: VfsLayout;
  #dirs: VolumeDirs;
  #states: VolumeStates;
  #snapshots: VfsSnapshots;
  #backups: VfsBackups;

  constructor(api: PluginApi, opts: { cfg: VfsConfig; schemas: Schemas; log: Logger }) {
    const { cfg, schemas, log } = opts;
    const locks = api.util.createLock();
    const records = api.util.createRecordStore({
      dir: cfg.ConfigPath,
      prefix: "vfs_volume_",
      schema: schemas.volumeRecord,
      kind: "volume",
      log,
    });
    const layout = new VfsLayout(cfg);
    const dirs = new VolumeDirs(api, { cfg, layout, log });
    const states = new VolumeStates(api, { schemas, layout, dirs, log });
    const snapshots = new VfsSnapshots(api, { layout, dirs, states, records, locks, log });
    this.#api = api;
    this.#cfg = cfg;
    this.#schemas = schemas;
    this.#log = log;
    this.#locks = locks;
    this.#records = records;
    this.#layout = layout;
    this.#dirs = dirs;
    this.#states = states;
    this.#snapshots = snapshots;
    this.#backups = new VfsBackups(api, { driver: DRIVER_NAME, layout, snapshots, locks, log });
  }

  /** Creates the folders, removes leftovers of interrupted operations, restores bind mounts. */
  async init(): Promise<void> {
    await startUp(this.#api, {
      cfg: this.#cfg,
      layout: this.#layout,
      dirs: this.#dirs,
      states: this.#states,
      records: this.#records,
      log: this.#log,
    });
  }

  // ---- volumes -----------------------------------------------------------------------------

  #validVolumeName(id: unknown): string {
    return this.#api.util.validateName(id, "volume");
  }

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
      const leftover = await this.#states.readFile(name).catch(() => undefined);
      if (leftover) await this.#states.discardStale(name, leftover);
      else await this.#states.remove(name);
      await rm(this.#layout.snapshotRoot(name), { recursive: true, force: true });

      let size = 0;
      if (o.PrepareForVM) size = o.Size || this.#cfg.DefaultVolumeSize;
      else if (o.Size) {
        this.#log.warn(`Size of volume "${name}" not applied: vfs sizes only --vm volumes`, {
          volume: name,
        });
      }
      const dir = this.#layout.volumeDir(name);
      let created = false;
      if (o.BackupURL) {
        await this.#backups.restore(name, { url: o.BackupURL, endpoint: o.EndpointURL, ctx });
        created = true;
      } else {
        created = await this.#dirs.makeVolumeDir(name);
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

  async deleteVolume(id: string, opts: StringMap): Promise<void> {
    const name = this.#validVolumeName(id);
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.deleteVolume,
      opts ?? {},
      `options of volume "${name}"`,
    );
    await this.#locks.run(name, async () => {
      const record = await this.#records.must(name, "delete volume");
      const state = await this.#states.forWrite(name, record);
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
      const dir = this.#layout.volumeDir(name);
      try {
        if (!o.ReferenceOnly) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
        await this.#snapshots.removeAll(name, state);
        await this.#states.remove(name);
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
      const state = await this.#states.forWrite(name, record);
      const dir = await this.#dirs.mustDir(name, "mount volume");
      if (wanted === dir) wanted = "";
      if (record.PrepareForVM) await this.#dirs.prepareDiskImage(name, dir, record);

      const current = state.MountPoint;
      if (current) {
        if (wanted && wanted !== current) {
          throw new this.#api.errors.ConflictError(
            `Cannot mount volume "${name}" at "${wanted}": volume is already mounted at "${current}"`,
          );
        }
        if (current !== dir && !(await this.#api.util.mounts.isMountPoint(current))) {
          await this.#dirs.bind(name, current);
          this.#log.info(`Mounted volume "${name}" at "${current}" again`, { volume: name });
        }
        return current;
      }
      if (!wanted) {
        await this.#states.write(name, { ...state, MountPoint: dir });
        return dir;
      }
      await this.#api.util.ensureDir(wanted);
      if (await this.#api.util.mounts.isMountPoint(wanted)) {
        throw new this.#api.errors.ConflictError(
          `Cannot mount volume "${name}" at "${wanted}": "${wanted}" is already a mount point`,
        );
      }
      try {
        await this.#dirs.bind(name, wanted);
      } catch (err) {
        throw this.#api.errors.wrapError(err, `Cannot mount volume "${name}" at "${wanted}"`);
      }
      try {
        await this.#states.write(name, { ...state, MountPoint: wanted });
      } catch (err) {
        await this.#dirs.unbind(wanted, name).catch(() => {});
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
        ? await this.#states.forWrite(name, record)
        : await this.#states.readFile(name);
      if (!state) {
        throw new this.#api.errors.NotFoundError(
          `Cannot unmount volume "${name}": volume does not exist`,
        );
      }
      const mountPoint = state.MountPoint;
      if (!mountPoint) return;
      if (mountPoint !== this.#layout.volumeDir(name)) {
        try {
          await this.#dirs.unbind(mountPoint, name);
        } catch (err) {
          throw this.#api.errors.wrapError(
            err,
            `Cannot unmount volume "${name}" from "${mountPoint}"`,
          );
        }
      }
      await this.#states.write(name, { ...state, MountPoint: "" });
      this.#log.info(`Unmounted volume "${name}"`, { volume: name, mountpoint: mountPoint });
    });
  }

  async mountPoint(id: string): Promise<string> {
    const name = this.#validVolumeName(id);
    const record = await this.#records.must(name, "find the mount point of volume");
    return (await this.#states.read(name, record)).state.MountPoint;
  }

  #volumeInfo(name: string, record: VolumeRecord, state: VolumeState): StringMap {
    return {
      Path: this.#layout.volumeDir(name),
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
    const { state } = await this.#states.read(name, record);
    return this.#volumeInfo(name, record, state);
  }

  async listVolume(_opts: StringMap): Promise<Record<string, StringMap>> {
    const out: Record<string, StringMap> = {};
    for (const { name, record } of await this.#records.list()) {
      let state: VolumeState;
      try {
        state = (await this.#states.read(name, record)).state;
      } catch (err) {
        this.#log.warn(this.#api.errors.errorMessage(err), { volume: name });
        state = { Name: name, VolumeCreatedTime: "", MountPoint: "", Snapshots: {} };
      }
      out[name] = this.#volumeInfo(name, record, state);
    }
    return out;
  }

  // ---- the ConvoyDriver object -------------------------------------------------------------

  convoyDriver(): ConvoyDriver {
    const cfg = this.#cfg;
    const [snapshots, backups] = [this.#snapshots, this.#backups];
    const methods: DriverMethods = {
      createVolume: (id, opts, ctx) => this.createVolume(id, opts, ctx),
      deleteVolume: (id, opts) => this.deleteVolume(id, opts),
      mountVolume: (id, opts) => this.mountVolume(id, opts),
      umountVolume: (id) => this.umountVolume(id),
      mountPoint: (id) => this.mountPoint(id),
      getVolumeInfo: (id) => this.getVolumeInfo(id),
      listVolume: (opts) => this.listVolume(opts),
      createSnapshot: (id, volumeID) => snapshots.createSnapshot(id, volumeID),
      deleteSnapshot: (id, volumeID) => snapshots.deleteSnapshot(id, volumeID),
      getSnapshotInfo: (id, volumeID) => snapshots.getSnapshotInfo(id, volumeID),
      listSnapshot: (opts) => snapshots.listSnapshot(opts),
      createBackup: (snapshotID, volumeID, destURL, opts, ctx) =>
        backups.createBackup(snapshotID, volumeID, destURL, opts, ctx),
      deleteBackup: (url, opts) => backups.deleteBackup(url, opts),
      getBackupInfo: (url, opts) => backups.getBackupInfo(url, opts),
      listBackup: (destURL, opts) => backups.listBackup(destURL, opts),
    };
    const driver = this.#api.util.convoyDriver(DRIVER_NAME, methods, () => ({
      Root: cfg.Root,
      Path: cfg.Path,
      DefaultVolumeSize: String(cfg.DefaultVolumeSize),
    }));
    // Docker's Remove keeps the folder: other hosts may share vfs.path (Convoy v0.5.2).
    return { ...driver, capabilities: { dockerRemoveKeepsData: true } };
  }
}
