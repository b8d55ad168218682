/**
 * The core of the daemon's VolumeService: the enabled drivers, the persisted index, per-volume
 * locks and jobs, lookups of volumes and snapshots, and what the Docker adapter asks of it. The
 * operations are added one concern per file (responses.ts, service_volumes.ts, docker_mounts.ts,
 * service_snapshots.ts, service_backups.ts, reconcile.ts); service.ts is the whole service.
 * @module
 */
import {
  ConvoyError,
  InvalidArgumentError,
  NotFoundError,
  NotSupportedError,
} from "../api/errors.ts";
import type {
  BackupOperations,
  ConvoyDriver,
  SnapshotOperations,
  VolumeOperations,
} from "../api/driver.ts";
import type { HostBackupStoreApi } from "../backup/store_api.ts";
import type { StoreRegistry } from "../store/registry.ts";
import { Jobs } from "./jobs.ts";
import { generateName, validateName } from "../util/names.ts";
import type { Logger } from "../util/log.ts";
import type { DaemonConfig } from "./config.ts";
import { KeyedMutex } from "../util/keyed_mutex.ts";
import type { SnapshotRecord, State, VolumeRecord } from "./state.ts";

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
  /** MiB/s, for drivers that take it (ebs gp3). */
  throughput?: number;
  prepareForVM?: boolean;
  /** The client's ID for the restore job (see Jobs.start). */
  jobID?: string;
}

/** The scheme of a URL without ":", or "" when it does not parse. */
export function schemeOf(url: string): string {
  try {
    return new URL(url).protocol.replace(/:$/, "");
  } catch {
    return "";
  }
}

/** The service's state and lookups; see VolumeService (service.ts). */
export class ServiceBase {
  readonly drivers: Map<string, ConvoyDriver>;
  readonly state: State;
  readonly config: DaemonConfig;
  readonly backup: HostBackupStoreApi;
  /** The backup store schemes (the daemon's registry): other backup URLs name a driver. */
  readonly stores: Pick<StoreRegistry, "schemes">;
  readonly log: Logger;
  readonly locks = new KeyedMutex();
  readonly jobs: Jobs;
  /** Snapshots being backed up: they may not be deleted meanwhile. */
  readonly backingUp = new Map<string, number>();

  constructor(opts: {
    drivers: Map<string, ConvoyDriver>;
    state: State;
    config: DaemonConfig;
    backup: HostBackupStoreApi;
    stores: Pick<StoreRegistry, "schemes">;
    log: Logger;
    /** How long finished jobs stay listed (default KEEP_FINISHED_MS). */
    jobRetentionMs?: number;
  }) {
    this.drivers = opts.drivers;
    this.state = opts.state;
    this.config = opts.config;
    this.backup = opts.backup;
    this.stores = opts.stores;
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
    return await this.capability(driver, action, "snapshotOps", "snapshots");
  }

  async backupOps(driver: string, action: string): Promise<BackupOperations> {
    return await this.capability(driver, action, "backupOps", "backups");
  }

  async capability<K extends "snapshotOps" | "backupOps">(
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

  uniqueName(prefix: string): string {
    for (;;) {
      const name = generateName(prefix);
      if (!this.state.nameTaken(name)) return name;
    }
  }

  /** The driver that made a backup: from the store's volume record, or the URL scheme (ebs://). */
  async backupDriverOf(url: string, endpoint: string | undefined, action: string): Promise<string> {
    const scheme = schemeOf(url);
    if (scheme === "") throw new InvalidArgumentError(`${action}: invalid backup URL`);
    if (!this.isStoreURL(url)) return scheme;
    return (await this.backup.getBackupVolume(url, { endpoint })).driver;
  }
  /** True for a URL of a backup store (vfs://, s3://), which the daemon reads itself. */
  isStoreURL(url: string): boolean {
    return this.stores.schemes().includes(schemeOf(url));
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
    return [...this.state.volumes.values()].filter((v) => v.Status === "ready")
      .sort((a, b) => a.Name.localeCompare(b.Name));
  }

  /** True when Docker's Remove of volume `name` keeps its data (its driver declares it). */
  dockerRemoveKeepsData(name: string): boolean {
    const driver = this.state.volumes.get(name)?.Driver;
    return !!(driver && this.drivers.get(driver)?.capabilities?.dockerRemoveKeepsData);
  }
}
