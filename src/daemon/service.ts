import {
  AlreadyExistsError,
  CancelledError,
  ConflictError,
  ConvoyError,
  errorMessage,
  InvalidArgumentError,
  isErrorCode,
  NotFoundError,
  NotSupportedError,
} from "../api/errors.ts";
import type {
  BackupOperations,
  ConvoyDriver,
  SnapshotOperations,
  StringMap,
  VolumeOperations,
} from "../api/driver.ts";
import {
  OPT_BACKUP_URL,
  OPT_COMPRESSION,
  OPT_ENDPOINT_URL,
  OPT_MOUNT_POINT,
  OPT_PREPARE_FOR_VM,
  OPT_REFERENCE_ONLY,
  OPT_SIZE,
  OPT_SNAPSHOT_CREATED_TIME,
  OPT_VOLUME_CREATED_TIME,
  OPT_VOLUME_ID,
  OPT_VOLUME_IOPS,
  OPT_VOLUME_NAME,
  OPT_VOLUME_TYPE,
} from "../api/options.ts";
import type { BackupStoreApi, VerifyReport } from "../api/plugin.ts";
import { decodeBackupURL, unescapeBackupURL } from "../backup/url.ts";
import { Jobs } from "./jobs.ts";
import { isBlockDriver } from "../plugins/block/driver.ts";
import { generateName, validateName } from "../util/names.ts";
import type { Logger } from "../util/log.ts";
import type { DaemonConfig } from "./config.ts";
import { KeyedMutex } from "../util/keyed_mutex.ts";
import type { SnapshotRecord, State, VolumeRecord } from "./state.ts";

/** Convoy's VolumeResponse. */
export interface VolumeResponse {
  Name: string;
  Driver: string;
  MountPoint: string;
  CreatedTime: string;
  DriverInfo: StringMap;
  Snapshots: Record<string, SnapshotResponse>;
}

/** Convoy's SnapshotResponse; VolumeName and VolumeCreatedAt only on snapshot inspect. */
export interface SnapshotResponse {
  Name: string;
  VolumeName?: string;
  VolumeCreatedAt?: string;
  CreatedTime: string;
  DriverInfo: StringMap;
}

/** A create request, as REST or Docker delivers it. */
export interface CreateVolumeRequest {
  name?: string;
  driver?: string;
  size?: number;
  backupURL?: string;
  endpoint?: string;
  driverVolumeID?: string;
  type?: string;
  iops?: number;
  prepareForVM?: boolean;
  /** The client's ID for the restore job (see Jobs.start). */
  jobID?: string;
}

/** `m` with its keys sorted, as Go's encoding/json writes maps (DriverInfo, Snapshots). */
export function sortedMap<T>(m: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]]));
}

/** Replaces every escaped "&" Convoy's CLI printed (see unescapeBackupURL). */
export const unescapeURL = unescapeBackupURL;

const STORE_SCHEMES = new Set(["vfs", "s3", "mem"]);

function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.replace(/:$/, "");
  } catch {
    return "";
  }
}

/** Marks a Docker mount ID in VolumeRecord.MountIDs taken before Docker last activated the plugin. */
export const STALE_MOUNT_PREFIX = "stale:";

/** True for a stale Docker mount ID (see VolumeService.markDockerMountsStale). */
export function isStaleMount(id: string): boolean {
  return id.startsWith(STALE_MOUNT_PREFIX);
}

/** Distinct live Docker mount IDs of a volume: the containers using it now. */
export function liveMountIDs(v: VolumeRecord): string[] {
  return [...new Set(v.MountIDs.filter((id) => !isStaleMount(id)))];
}

/**
 * The daemon's volume, snapshot and backup operations over the enabled drivers. It keeps the
 * persisted index (State), takes a lock per volume, and never probes drivers to find a volume.
 */
export class VolumeService {
  readonly drivers: Map<string, ConvoyDriver>;
  readonly state: State;
  readonly config: DaemonConfig;
  readonly backup: BackupStoreApi;
  readonly log: Logger;
  readonly locks = new KeyedMutex();
  readonly jobs: Jobs;
  /** Snapshots being backed up: they may not be deleted meanwhile. */
  readonly #backingUp = new Map<string, number>();

  constructor(opts: {
    drivers: Map<string, ConvoyDriver>;
    state: State;
    config: DaemonConfig;
    backup: BackupStoreApi;
    log: Logger;
    /** How long finished jobs stay listed (default KEEP_FINISHED_MS). */
    jobRetentionMs?: number;
  }) {
    this.drivers = opts.drivers;
    this.state = opts.state;
    this.config = opts.config;
    this.backup = opts.backup;
    this.log = opts.log;
    this.jobs = new Jobs({ keepFinishedMs: opts.jobRetentionMs });
  }

  // ---- lookups -------------------------------------------------------------------------------

  driver(name: string, action: string): ConvoyDriver {
    const d = this.drivers.get(name);
    if (!d) {
      throw new InvalidArgumentError(
        `${action}: driver "${name}" is not enabled (enabled: ${
          [...this.drivers.keys()].join(", ")
        })`,
      );
    }
    return d;
  }

  async volumeOps(driver: string, action: string): Promise<VolumeOperations> {
    return await this.driver(driver, action).volumeOps();
  }

  async snapshotOps(driver: string, action: string): Promise<SnapshotOperations> {
    return await this.#capability(driver, action, "snapshotOps", "snapshots");
  }

  async backupOps(driver: string, action: string): Promise<BackupOperations> {
    return await this.#capability(driver, action, "backupOps", "backups");
  }

  async #capability<K extends "snapshotOps" | "backupOps">(
    driver: string,
    action: string,
    method: K,
    what: string,
  ): Promise<Awaited<ReturnType<ConvoyDriver[K]>>> {
    const d = this.driver(driver, action);
    try {
      return await d[method]() as Awaited<ReturnType<ConvoyDriver[K]>>;
    } catch (err) {
      if ((err as ConvoyError).code === "NotSupported") {
        throw new NotSupportedError(`${action}: driver "${driver}" does not support ${what}`);
      }
      throw err;
    }
  }

  /** The ready volume `name`; NotFoundError otherwise. */
  volume(name: string, action: string): VolumeRecord {
    validateName(name, "volume");
    const v = this.state.volumes.get(name);
    if (!v || v.Status !== "ready") {
      throw new NotFoundError(`${action}: volume "${name}" does not exist`);
    }
    return v;
  }

  /** The ready snapshot `name` and its volume; NotFoundError otherwise. */
  snapshot(name: string, action: string): { volume: VolumeRecord; snapshot: SnapshotRecord } {
    validateName(name, "snapshot");
    const v = this.state.volumeOfSnapshot(name);
    const s = v?.Snapshots[name];
    if (!v || !s || s.Status !== "ready") {
      throw new NotFoundError(`${action}: snapshot "${name}" does not exist`);
    }
    return { volume: v, snapshot: s };
  }

  // ---- what the Docker adapter asks ---------------------------------------------------------

  /** The daemon root. */
  get root(): string {
    return this.config.Root;
  }

  /** The Docker flags of the daemon's configuration. */
  get dockerOptions(): { ignoreDockerDelete: boolean; createOnDockerMount: boolean } {
    return {
      ignoreDockerDelete: !!this.config.IgnoreDockerDelete,
      createOnDockerMount: !!this.config.CreateOnDockerMount,
    };
  }

  /** The status of volume `name` in the index, or undefined when there is none. */
  volumeStatus(name: string): VolumeRecord["Status"] | undefined {
    return this.state.volumes.get(name)?.Status;
  }

  /** True when a volume or a snapshot has the name. */
  nameTaken(name: string): boolean {
    return this.state.nameTaken(name);
  }

  /** Resolves once every operation on volume `name` started before has finished. */
  async settled(name: string): Promise<void> {
    await this.locks.run(name, async () => {});
  }

  /** The ready volumes of the index. */
  readyVolumes(): VolumeRecord[] {
    return [...this.state.volumes.values()].filter((v) => v.Status === "ready");
  }

  /** True when Docker's Remove of volume `name` keeps its data (its driver declares it). */
  dockerRemoveKeepsData(name: string): boolean {
    const driver = this.state.volumes.get(name)?.Driver;
    return !!(driver && this.drivers.get(driver)?.capabilities?.dockerRemoveKeepsData);
  }

  // ---- info and listing ----------------------------------------------------------------------

  async info(): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = { General: this.config };
    for (const [name, d] of this.drivers) {
      try {
        out[name] = await d.info();
      } catch (err) {
        out[name] = { Error: errorMessage(err) };
      }
    }
    return out;
  }

  async #snapshotResponses(v: VolumeRecord): Promise<Record<string, SnapshotResponse>> {
    const out: Record<string, SnapshotResponse> = {};
    const ready = Object.values(v.Snapshots).filter((s) => s.Status === "ready");
    if (!ready.length) return out;
    const sops = await this.snapshotOps(v.Driver, `Cannot inspect volume "${v.Name}"`);
    for (const s of ready) {
      let info: StringMap;
      try {
        info = { ...await sops.getSnapshotInfo(s.Name, v.Name) };
      } catch (err) {
        info = { Error: errorMessage(err) };
      }
      info.Driver = v.Driver;
      out[s.Name] = {
        Name: s.Name,
        CreatedTime: info[OPT_SNAPSHOT_CREATED_TIME] || s.CreatedTime,
        DriverInfo: sortedMap(info),
      };
    }
    return sortedMap(out);
  }

  /** Convoy's VolumeResponse of a ready volume. */
  async volumeResponse(v: VolumeRecord): Promise<VolumeResponse> {
    const vops = await this.volumeOps(v.Driver, `Cannot inspect volume "${v.Name}"`);
    const info = { ...await vops.getVolumeInfo(v.Name) };
    info.Driver = v.Driver;
    return {
      Name: v.Name,
      Driver: v.Driver,
      MountPoint: await vops.mountPoint(v.Name),
      CreatedTime: info[OPT_VOLUME_CREATED_TIME] || v.CreatedTime,
      DriverInfo: sortedMap(info),
      Snapshots: await this.#snapshotResponses(v),
    };
  }

  async inspectVolume(name: string): Promise<VolumeResponse> {
    await this.refreshIfUnknown(name);
    return await this.volumeResponse(this.volume(name, `Cannot inspect volume "${name}"`));
  }

  /**
   * Every ready volume. One volume whose driver fails is still listed, with the error in its
   * DriverInfo; the list never stops at a failing driver. Takes no locks.
   */
  async listVolumes(opts: { driverInfo?: boolean } = {}): Promise<Record<string, unknown>> {
    await this.refreshVolumes();
    const out: Record<string, unknown> = {};
    const vols = [...this.state.volumes.values()].filter((v) => v.Status === "ready")
      .sort((a, b) => a.Name.localeCompare(b.Name));
    await Promise.all(vols.map(async (v) => {
      try {
        if (opts.driverInfo) {
          const vops = await this.volumeOps(v.Driver, `Cannot list volume "${v.Name}"`);
          out[v.Name] = sortedMap({ ...await vops.getVolumeInfo(v.Name), Driver: v.Driver });
        } else {
          out[v.Name] = await this.volumeResponse(v);
        }
      } catch (err) {
        this.log.warn("cannot get volume info", { volume: v.Name, error: errorMessage(err) });
        const info = { Driver: v.Driver, Error: errorMessage(err) };
        out[v.Name] = opts.driverInfo ? info : {
          Name: v.Name,
          Driver: v.Driver,
          MountPoint: v.MountPoint,
          CreatedTime: v.CreatedTime,
          DriverInfo: info,
          Snapshots: {},
        };
      }
    }));
    return sortedMap(out);
  }

  // ---- volumes -------------------------------------------------------------------------------

  #uniqueName(prefix: string): string {
    for (;;) {
      const name = generateName(prefix);
      if (!this.state.nameTaken(name)) return name;
    }
  }

  /**
   * Creates a volume (restoring a backup when `backupURL` is set); resolves to its name. A
   * restore is a job ("restore"): cancelled (CancelledError) or failed, it leaves no volume.
   */
  async createVolume(req: CreateVolumeRequest): Promise<string> {
    const name = req.name ? validateName(req.name, "volume") : this.#uniqueName("volume");
    const action = `Cannot create volume "${name}"`;
    const driverName = req.driver || await this.#restoreDriver(req) || this.config.DefaultDriver;
    const vops = await this.volumeOps(driverName, action);
    if (req.endpoint && !req.backupURL) {
      throw new InvalidArgumentError(`${action}: an endpoint can only be used with a backup URL`);
    }
    if (req.size !== undefined && (!Number.isSafeInteger(req.size) || req.size < 0)) {
      throw new InvalidArgumentError(`${action}: invalid size ${req.size}`);
    }
    if (this.state.volumes.has(name)) {
      throw new AlreadyExistsError(`${action}: volume already exists`);
    }
    if (this.state.nameTaken(name)) {
      throw new AlreadyExistsError(`${action}: a snapshot with that name exists`);
    }
    const rec = this.state.newVolume({ Name: name, Driver: driverName, Status: "creating" });
    this.state.volumes.set(name, rec);
    const opts: StringMap = {
      [OPT_SIZE]: String(req.size ?? 0),
      [OPT_BACKUP_URL]: req.backupURL ? unescapeURL(req.backupURL) : "",
      [OPT_ENDPOINT_URL]: req.endpoint ?? "",
      [OPT_VOLUME_NAME]: name,
      [OPT_VOLUME_ID]: req.driverVolumeID ?? "",
      [OPT_VOLUME_TYPE]: req.type ?? "",
      [OPT_VOLUME_IOPS]: String(req.iops ?? 0),
      [OPT_PREPARE_FOR_VM]: String(req.prepareForVM ?? false),
    };
    const job = req.backupURL
      ? this.jobs.start("restore", { volume: name, url: opts[OPT_BACKUP_URL], id: req.jobID })
      : undefined;
    try {
      await this.locks.run(name, async () => {
        await this.state.save();
        this.log.debug("create volume", { volume: name, driver: driverName });
        await vops.createVolume(name, opts, job && { signal: job.signal, progress: job.progress });
        try {
          // A cancel that came after the driver's last check still leaves no volume.
          if (job?.signal.aborted) throw new CancelledError(`${action}: cancelled`);
          const info = await vops.getVolumeInfo(name);
          rec.CreatedTime = info[OPT_VOLUME_CREATED_TIME] ?? "";
          rec.Status = "ready";
          await this.state.save();
        } catch (err) {
          if (job) await this.#discardRestored(name, vops);
          throw err;
        }
      });
    } catch (err) {
      if (this.state.volumes.get(name) === rec) this.state.volumes.delete(name);
      await this.state.save();
      job?.finish(err);
      if (job?.signal.aborted) throw new CancelledError(`${action}: cancelled`, { cause: err });
      throw err;
    }
    job?.finish();
    this.log.info("volume created", { volume: name, driver: driverName });
    return name;
  }

  /** Deletes the driver's volume of a restore that did not finish; a failure is logged. */
  async #discardRestored(name: string, vops: VolumeOperations): Promise<void> {
    try {
      await vops.deleteVolume(name, { [OPT_REFERENCE_ONLY]: "false" });
    } catch (err) {
      this.log.error("cannot delete the volume of an unfinished restore", {
        volume: name,
        error: errorMessage(err),
      });
    }
  }

  /**
   * Without --driver, a restore goes to the driver that made the backup when it is enabled
   * (a loop backup into loop, not into the default vfs).
   */
  async #restoreDriver(req: CreateVolumeRequest): Promise<string | undefined> {
    if (!req.backupURL) return undefined;
    // Any error here (bad URL, missing backup) is reported by the driver's restore instead.
    const driver = await this.#backupDriver(unescapeURL(req.backupURL), req.endpoint, "")
      .catch(() => undefined);
    return driver && this.drivers.has(driver) ? driver : undefined;
  }

  /** Deletes a volume and its snapshots; with `referenceOnly` the driver keeps the data. */
  async deleteVolume(name: string, opts: { referenceOnly?: boolean } = {}): Promise<void> {
    const action = `Cannot delete volume "${name}"`;
    this.volume(name, action);
    await this.locks.run(name, async () => {
      const v = this.volume(name, action);
      for (const s of Object.keys(v.Snapshots)) {
        if (this.#backingUp.has(s)) {
          throw new ConflictError(`${action}: snapshot "${s}" is being backed up`);
        }
      }
      if (v.MountIDs.length) {
        throw new ConflictError(`${action}: volume is in use by ${v.MountIDs.length} container(s)`);
      }
      const vops = await this.volumeOps(v.Driver, action);
      v.Status = "deleting";
      await this.state.save();
      try {
        await vops.deleteVolume(name, {
          [OPT_REFERENCE_ONLY]: String(opts.referenceOnly ?? false),
        });
      } catch (err) {
        v.Status = "ready";
        await this.state.save();
        throw err;
      }
      this.state.volumes.delete(name);
      await this.state.save();
    });
    this.log.info("volume deleted", { volume: name, referenceOnly: opts.referenceOnly ?? false });
  }

  /**
   * Mounts a volume and resolves to its mount point. With a Docker `mountID` the mount is
   * reference-counted: the first holder mounts, each later Mount with any ID (the same ID again
   * for `docker cp` on a running container) adds one reference and returns the same mount
   * point. A Mount whose ID is held only as stale (see markDockerMountsStale) replaces those
   * stale references with one live one: Docker re-established that mount after restarting.
   */
  async mountVolume(
    name: string,
    opts: { mountPoint?: string; mountID?: string } = {},
  ): Promise<string> {
    const action = `Cannot mount volume "${name}"`;
    this.volume(name, action);
    return await this.locks.run(name, async () => {
      const v = this.volume(name, action);
      const vops = await this.volumeOps(v.Driver, action);
      const current = await vops.mountPoint(name);
      let mp = current;
      if (!current || (opts.mountPoint && opts.mountPoint !== current)) {
        mp = await vops.mountVolume(
          name,
          opts.mountPoint ? { [OPT_MOUNT_POINT]: opts.mountPoint } : {},
        );
      }
      if (opts.mountID) {
        const stale = STALE_MOUNT_PREFIX + opts.mountID;
        v.MountIDs = v.MountIDs.filter((id) => id !== stale);
        v.MountIDs.push(opts.mountID);
      }
      v.MountPoint = mp;
      await this.state.save();
      return mp;
    });
  }

  /**
   * Unmounts a volume. With a Docker `mountID` one reference of that ID is released (or, when the
   * ID is held only as stale, all of its stale references); an unknown ID changes nothing. The
   * volume is unmounted when the last reference goes. Without an ID (CLI), a volume in use by
   * containers is refused.
   */
  async umountVolume(name: string, opts: { mountID?: string } = {}): Promise<void> {
    const action = `Cannot unmount volume "${name}"`;
    this.volume(name, action);
    await this.locks.run(name, async () => {
      const v = this.volume(name, action);
      if (opts.mountID !== undefined) {
        const i = v.MountIDs.indexOf(opts.mountID);
        const stale = STALE_MOUNT_PREFIX + opts.mountID;
        if (i >= 0) v.MountIDs.splice(i, 1);
        else if (v.MountIDs.includes(stale)) v.MountIDs = v.MountIDs.filter((id) => id !== stale);
        else return;
        if (v.MountIDs.length) {
          await this.state.save();
          return;
        }
      } else if (v.MountIDs.length) {
        throw new ConflictError(`${action}: volume is in use by ${v.MountIDs.length} container(s)`);
      }
      const vops = await this.volumeOps(v.Driver, action);
      if (await vops.mountPoint(name)) await vops.umountVolume(name);
      v.MountPoint = "";
      await this.state.save();
    });
  }

  /**
   * Docker (re)activated the plugin, so it (re)started: every mount ID held so far was taken by
   * an earlier Docker engine and becomes stale. A stale ID is not dropped (with live-restore its
   * container may still run): it is released by a Mount or Unmount of the same ID, or by
   * releaseStaleMounts when Docker removes the volume. Resolves to the number of stale IDs.
   */
  async markDockerMountsStale(): Promise<number> {
    let n = 0;
    for (const v of this.state.volumes.values()) {
      const ids = new Set(v.MountIDs.map((id) => isStaleMount(id) ? id : STALE_MOUNT_PREFIX + id));
      v.MountIDs = [...ids];
      n += ids.size;
    }
    if (n) await this.state.save();
    return n;
  }

  /**
   * Drops the stale mount IDs of a volume (Docker asks to remove it, so no container of the
   * running engine uses it) and unmounts it when nothing else holds it. Resolves to the number
   * of distinct live IDs that still hold it.
   */
  async releaseStaleMounts(name: string): Promise<number> {
    const action = `Cannot remove volume "${name}"`;
    this.volume(name, action);
    return await this.locks.run(name, async () => {
      const v = this.volume(name, action);
      const live = v.MountIDs.filter((id) => !isStaleMount(id));
      if (live.length === v.MountIDs.length) return new Set(live).size;
      this.log.info("releasing stale Docker mount IDs", {
        volume: name,
        stale: v.MountIDs.length - live.length,
      });
      v.MountIDs = live;
      if (!live.length) {
        const vops = await this.volumeOps(v.Driver, action);
        if (await vops.mountPoint(name)) await vops.umountVolume(name);
        v.MountPoint = "";
      }
      await this.state.save();
      return new Set(live).size;
    });
  }

  // ---- snapshots -----------------------------------------------------------------------------

  async createSnapshot(volumeName: string, opts: { name?: string } = {}): Promise<string> {
    const name = opts.name ? validateName(opts.name, "snapshot") : this.#uniqueName("snapshot");
    const action = `Cannot create snapshot "${name}" of volume "${volumeName}"`;
    this.volume(volumeName, action);
    return await this.locks.run(volumeName, async () => {
      const v = this.volume(volumeName, action);
      const sops = await this.snapshotOps(v.Driver, action);
      if (this.state.nameTaken(name)) {
        throw new AlreadyExistsError(
          `${action}: ${
            this.state.volumes.has(name) ? "a volume" : "a snapshot"
          } with that name exists`,
        );
      }
      const rec = this.state.newSnapshot({ Name: name, Status: "creating" });
      v.Snapshots[name] = rec;
      try {
        await this.state.save();
        await sops.createSnapshot(name, volumeName);
        const info = await sops.getSnapshotInfo(name, volumeName);
        rec.CreatedTime = info[OPT_SNAPSHOT_CREATED_TIME] ?? "";
        rec.Status = "ready";
        await this.state.save();
      } catch (err) {
        delete v.Snapshots[name];
        await this.state.save();
        throw err;
      }
      this.log.info("snapshot created", { volume: volumeName, snapshot: name });
      return name;
    });
  }

  async deleteSnapshot(name: string): Promise<void> {
    const action = `Cannot delete snapshot "${name}"`;
    const { volume } = this.snapshot(name, action);
    await this.locks.run(volume.Name, async () => {
      const { volume: v, snapshot: s } = this.snapshot(name, action);
      if (this.#backingUp.has(name)) throw new ConflictError(`${action}: it is being backed up`);
      const sops = await this.snapshotOps(v.Driver, action);
      s.Status = "deleting";
      await this.state.save();
      try {
        await sops.deleteSnapshot(name, v.Name);
      } catch (err) {
        s.Status = "ready";
        await this.state.save();
        throw err;
      }
      delete v.Snapshots[name];
      await this.state.save();
    });
    this.log.info("snapshot deleted", { snapshot: name });
  }

  async inspectSnapshot(name: string): Promise<SnapshotResponse> {
    const action = `Cannot inspect snapshot "${name}"`;
    const { volume: v, snapshot: s } = this.snapshot(name, action);
    const sops = await this.snapshotOps(v.Driver, action);
    const info: StringMap = { ...await sops.getSnapshotInfo(name, v.Name), Driver: v.Driver };
    return {
      Name: name,
      VolumeName: v.Name,
      VolumeCreatedAt: v.CreatedTime,
      CreatedTime: info[OPT_SNAPSHOT_CREATED_TIME] || s.CreatedTime,
      DriverInfo: sortedMap(info),
    };
  }

  // ---- backups -------------------------------------------------------------------------------

  /** Backs up a snapshot to `destURL`; resolves to the backup URL. The volume stays usable meanwhile. */
  async createBackup(
    snapshotName: string,
    opts: { destURL: string; endpoint?: string; compression?: string; jobID?: string },
  ): Promise<string> {
    const action = `Cannot back up snapshot "${snapshotName}"`;
    if (!opts.destURL) throw new InvalidArgumentError(`${action}: no destination URL given`);
    const { volume: v, snapshot: s } = this.snapshot(snapshotName, action);
    const bops = await this.backupOps(v.Driver, action);
    this.#backingUp.set(snapshotName, (this.#backingUp.get(snapshotName) ?? 0) + 1);
    const job = this.jobs.start("backup", {
      volume: v.Name,
      snapshot: snapshotName,
      url: unescapeURL(opts.destURL),
      id: opts.jobID,
    });
    try {
      const destURL = unescapeURL(opts.destURL);
      const d = this.driver(v.Driver, action);
      // Block drivers take the typed request; other drivers get Convoy's string map.
      const url = isBlockDriver(d)
        ? await d.block.backUp(snapshotName, v.Name, {
          destURL,
          endpoint: opts.endpoint || undefined,
          compression: opts.compression || undefined,
          signal: job.signal,
          progress: job.progress,
        })
        : await bops.createBackup(snapshotName, v.Name, destURL, {
          [OPT_VOLUME_NAME]: v.Name,
          [OPT_VOLUME_CREATED_TIME]: v.CreatedTime,
          [OPT_SNAPSHOT_CREATED_TIME]: s.CreatedTime,
          [OPT_ENDPOINT_URL]: opts.endpoint ?? "",
          [OPT_COMPRESSION]: opts.compression ?? "",
        }, { signal: job.signal, progress: job.progress });
      job.finish();
      this.log.info("backup created", { snapshot: snapshotName, url });
      return url;
    } catch (err) {
      job.finish(err);
      if (job.signal.aborted) throw new CancelledError(`${action}: cancelled`, { cause: err });
      throw err;
    } finally {
      const n = this.#backingUp.get(snapshotName)! - 1;
      if (n) this.#backingUp.set(snapshotName, n);
      else this.#backingUp.delete(snapshotName);
    }
  }

  /** Checks a backup's blocks (or a sample) without restoring it. */
  async verifyBackup(
    url: string,
    opts: { endpoint?: string; sample?: number; jobID?: string } = {},
  ): Promise<VerifyReport> {
    url = unescapeURL(url);
    let volume = "";
    try {
      volume = decodeBackupURL(url).volume;
    } catch {
      // verifyBackup reports the bad URL.
    }
    const job = this.jobs.start("verify", { volume, url, id: opts.jobID });
    try {
      const report = await this.backup.verifyBackup(url, {
        endpoint: opts.endpoint,
        sample: opts.sample,
        signal: job.signal,
        progress: job.progress,
      });
      job.finish();
      return report;
    } catch (err) {
      job.finish(err);
      throw err;
    }
  }

  /** The driver that made a backup: from the store's volume record, or the URL scheme (ebs://). */
  async #backupDriver(url: string, endpoint: string | undefined, action: string): Promise<string> {
    let scheme: string;
    try {
      scheme = new URL(url).protocol.replace(/:$/, "");
    } catch {
      throw new InvalidArgumentError(`${action}: invalid backup URL`);
    }
    if (!STORE_SCHEMES.has(scheme)) return scheme;
    return (await this.backup.getBackupVolume(url, { endpoint })).driver;
  }

  /**
   * Backups in a store (vfs://, s3://) are deleted and inspected by the daemon itself, once the
   * driver that made them is known to be enabled with backups; other URLs (a driver's own kind,
   * e.g. ebs://) go to that driver.
   */
  async deleteBackup(url: string, opts: { endpoint?: string } = {}): Promise<void> {
    url = unescapeURL(url);
    const action = `Cannot delete backup "${url}"`;
    const driver = await this.#backupDriver(url, opts.endpoint, action);
    const bops = await this.backupOps(driver, action);
    if (STORE_SCHEMES.has(schemeOf(url))) await this.backup.deleteBackup(url, opts);
    else await bops.deleteBackup(url, { [OPT_ENDPOINT_URL]: opts.endpoint ?? "" });
    this.log.info("backup deleted", { url });
  }

  async inspectBackup(url: string, opts: { endpoint?: string } = {}): Promise<StringMap> {
    url = unescapeURL(url);
    const action = `Cannot inspect backup "${url}"`;
    const driver = await this.#backupDriver(url, opts.endpoint, action);
    const bops = await this.backupOps(driver, action);
    if (STORE_SCHEMES.has(schemeOf(url))) return await this.backup.getBackupInfo(url, opts);
    return await bops.getBackupInfo(url, { [OPT_ENDPOINT_URL]: opts.endpoint ?? "" });
  }

  /** Backups in `destURL` from every driver that makes backups, keyed by URL. */
  async listBackups(
    destURL: string,
    opts: { volumeName?: string; endpoint?: string } = {},
  ): Promise<Record<string, StringMap>> {
    if (!destURL) throw new InvalidArgumentError("Cannot list backups: no destination URL given");
    if (opts.volumeName) validateName(opts.volumeName, "volume");
    destURL = unescapeURL(destURL);
    const inStore = STORE_SCHEMES.has(schemeOf(destURL));
    const out: Record<string, StringMap> = {};
    for (const [name, d] of this.drivers) {
      let bops: BackupOperations;
      try {
        bops = await d.backupOps();
      } catch (err) {
        if ((err as ConvoyError).code === "NotSupported") continue;
        throw err;
      }
      Object.assign(
        out,
        inStore
          ? await this.backup.listBackup(destURL, {
            driver: name,
            volumeName: opts.volumeName || undefined,
            endpoint: opts.endpoint || undefined,
          })
          : await bops.listBackup(destURL, {
            [OPT_VOLUME_NAME]: opts.volumeName ?? "",
            [OPT_ENDPOINT_URL]: opts.endpoint ?? "",
          }),
      );
      this.log.debug("backups listed", { driver: name });
    }
    return out;
  }

  // ---- start-up ------------------------------------------------------------------------------

  /**
   * Reconciles the index with the drivers after a start or a crash: records left "creating" or
   * "deleting" are settled by asking their own driver, volumes a driver reports that the index
   * lacks are adopted (unless the name is taken), and records a driver no longer has are dropped.
   */
  async reconcile(): Promise<void> {
    for (const [driverName, d] of this.drivers) {
      let listed: Record<string, StringMap>;
      try {
        listed = await (await d.volumeOps()).listVolume({});
      } catch (err) {
        this.log.error("cannot list volumes of driver; keeping its records", {
          driver: driverName,
          error: errorMessage(err),
        });
        continue;
      }
      for (const v of [...this.state.volumes.values()]) {
        if (v.Driver !== driverName) continue;
        if (!listed[v.Name]) {
          if (v.Status === "ready") {
            this.log.warn("volume is gone from its driver; forgetting it", {
              volume: v.Name,
              driver: driverName,
            });
          }
          this.state.volumes.delete(v.Name);
        } else if (v.Status !== "ready") {
          this.log.warn("settling interrupted operation", { volume: v.Name, was: v.Status });
          v.Status = "ready";
          v.CreatedTime ||= listed[v.Name][OPT_VOLUME_CREATED_TIME] ?? "";
        }
      }
      for (const [name, info] of Object.entries(listed)) this.#adopt(driverName, name, info);
      await this.#reconcileSnapshots(driverName, d);
    }
    await this.#remountInUse();
    await this.state.save();
  }

  /** Names a driver reports that could not be adopted, warned about once each. */
  readonly #notAdopted = new Set<string>();

  /** Indexes a volume its driver reports, unless the name is taken; true when it did. */
  #adopt(driverName: string, name: string, info: StringMap): boolean {
    if (this.state.volumes.has(name)) return false;
    if (this.state.nameTaken(name)) {
      const key = `${driverName}\u0000${name}`;
      if (!this.#notAdopted.has(key)) {
        this.#notAdopted.add(key);
        this.log.warn("volume name already used; not adopting", {
          volume: name,
          driver: driverName,
        });
      }
      return false;
    }
    this.state.volumes.set(name, {
      ...this.state.newVolume({ Name: name, Driver: driverName, Status: "ready" }),
      CreatedTime: info[OPT_VOLUME_CREATED_TIME] ?? "",
    });
    this.log.info("adopted volume", { volume: name, driver: driverName });
    return true;
  }

  #refreshing: Promise<void> | undefined;

  /**
   * Brings the index up to date with what the drivers report now, as Convoy did by reading the
   * drivers' records on every call: a volume another host made on a shared vfs.path is adopted,
   * and an idle volume whose driver no longer has it (deleted by another host) is forgotten. Only
   * ready volumes that no operation holds, mounts or backs up are forgotten, each under its lock
   * and once its driver says it does not exist. A driver that cannot list changes nothing.
   * Concurrent calls share one run.
   */
  refreshVolumes(): Promise<void> {
    this.#refreshing ??= this.#refresh().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  /** refreshVolumes() when `name` is not indexed: it may be another host's new volume. */
  async refreshIfUnknown(name: string): Promise<void> {
    if (!this.state.volumes.has(name)) await this.refreshVolumes();
  }

  async #refresh(): Promise<void> {
    let changed = false;
    for (const [driverName, d] of this.drivers) {
      let vops: VolumeOperations;
      let listed: Record<string, StringMap>;
      try {
        vops = await d.volumeOps();
        listed = await vops.listVolume({});
      } catch (err) {
        this.log.warn("cannot list volumes of driver", {
          driver: driverName,
          error: errorMessage(err),
        });
        continue;
      }
      for (const [name, info] of Object.entries(listed)) {
        if (this.locks.busy(name)) continue; // an operation on that name decides
        changed = this.#adopt(driverName, name, info) || changed;
      }
      const gone = [...this.state.volumes.values()].filter((v) =>
        v.Driver === driverName && v.Status === "ready" && !listed[v.Name] && !this.#inUse(v)
      );
      for (const { Name: name } of gone) {
        await this.locks.run(name, async () => {
          const v = this.state.volumes.get(name);
          if (!v || v.Status !== "ready" || this.#inUse(v)) return;
          try {
            await vops.getVolumeInfo(name);
            return; // listed late: it exists
          } catch (err) {
            if (!isErrorCode(err, "NotFound")) return;
          }
          this.state.volumes.delete(name);
          changed = true;
          this.log.info("volume is gone from its driver; forgot it", {
            volume: name,
            driver: driverName,
          });
        });
      }
    }
    if (changed) await this.state.save();
  }

  /** Mounted here, or one of its snapshots is being backed up. */
  #inUse(v: VolumeRecord): boolean {
    return v.MountIDs.length > 0 || v.MountPoint !== "" ||
      Object.keys(v.Snapshots).some((s) => this.#backingUp.has(s));
  }

  /**
   * Volumes Docker still holds (mount IDs, live or stale) stay mounted across a daemon restart;
   * one the driver no longer reports mounted (a reboot) is mounted again at its default place.
   */
  async #remountInUse(): Promise<void> {
    for (const v of this.state.volumes.values()) {
      if (v.Status !== "ready" || !v.MountIDs.length) continue;
      try {
        const vops = await this.volumeOps(v.Driver, `Cannot mount volume "${v.Name}"`);
        const mp = await vops.mountPoint(v.Name);
        if (mp) {
          v.MountPoint = mp;
          continue;
        }
        v.MountPoint = await vops.mountVolume(v.Name, {});
        this.log.warn("mounted again a volume Docker still uses", {
          volume: v.Name,
          mountPoint: v.MountPoint,
          mountIDs: v.MountIDs.length,
        });
      } catch (err) {
        this.log.error("cannot mount again a volume Docker still uses", {
          volume: v.Name,
          error: errorMessage(err),
        });
      }
    }
  }

  async #reconcileSnapshots(driverName: string, d: ConvoyDriver): Promise<void> {
    let sops: SnapshotOperations;
    try {
      sops = await d.snapshotOps();
    } catch {
      return;
    }
    for (const v of this.state.volumes.values()) {
      if (v.Driver !== driverName) continue;
      let listed: Record<string, StringMap>;
      try {
        listed = await sops.listSnapshot({ [OPT_VOLUME_NAME]: v.Name });
      } catch (err) {
        this.log.error("cannot list snapshots", { volume: v.Name, error: errorMessage(err) });
        continue;
      }
      for (const s of Object.values(v.Snapshots)) {
        if (!listed[s.Name]) delete v.Snapshots[s.Name];
        else if (s.Status !== "ready") {
          s.Status = "ready";
          s.CreatedTime ||= listed[s.Name][OPT_SNAPSHOT_CREATED_TIME] ?? "";
        }
      }
      for (const [name, info] of Object.entries(listed)) {
        if (v.Snapshots[name]) continue;
        if (this.state.nameTaken(name)) {
          this.log.warn("snapshot name already used; not adopting", {
            snapshot: name,
            volume: v.Name,
          });
          continue;
        }
        v.Snapshots[name] = {
          ...this.state.newSnapshot({ Name: name, Status: "ready" }),
          CreatedTime: info[OPT_SNAPSHOT_CREATED_TIME] ?? "",
        };
      }
    }
  }
}
