/**
 * The service's volume operations: create (and restore, as a job), delete.
 * @module
 */
import {
  AlreadyExistsError,
  CancelledError,
  ConflictError,
  errorMessage,
  InvalidArgumentError,
} from "../api/errors.ts";
import type { SnapshotOperations, StringMap, VolumeOperations } from "../api/driver.ts";
import {
  OPT_BACKUP_URL,
  OPT_ENDPOINT_URL,
  OPT_PREPARE_FOR_VM,
  OPT_REFERENCE_ONLY,
  OPT_SIZE,
  OPT_VOLUME_CREATED_TIME,
  OPT_VOLUME_ID,
  OPT_VOLUME_IOPS,
  OPT_VOLUME_NAME,
  OPT_VOLUME_THROUGHPUT,
  OPT_VOLUME_TYPE,
} from "../api/options.ts";
import { validateName } from "../util/names.ts";
import type { CreateVolumeRequest } from "./service_base.ts";
import { unescapeBackupURL } from "../backup/url.ts";
import type { VolumeRecord } from "./state.ts";
import { ServiceResponses } from "./responses.ts";

/** Volume create and delete. */
export class ServiceVolumes extends ServiceResponses {
  // ---- volumes -------------------------------------------------------------------------------

  /**
   * Creates a volume (restoring a backup when `backupURL` is set); resolves to its name. A
   * restore is a job ("restore"): cancelled (CancelledError) or failed, it leaves no volume.
   */
  async createVolume(req: CreateVolumeRequest): Promise<string> {
    const name = req.name ? validateName(req.name, "volume") : this.uniqueName("volume");
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
      [OPT_BACKUP_URL]: req.backupURL ? unescapeBackupURL(req.backupURL) : "",
      [OPT_ENDPOINT_URL]: req.endpoint ?? "",
      [OPT_VOLUME_NAME]: name,
      [OPT_VOLUME_ID]: req.driverVolumeID ?? "",
      [OPT_VOLUME_TYPE]: req.type ?? "",
      [OPT_VOLUME_IOPS]: String(req.iops ?? 0),
      ...(req.throughput ? { [OPT_VOLUME_THROUGHPUT]: String(req.throughput) } : {}),
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
          await this.#adoptSnapshots(rec);
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

  /**
   * A device the driver adopted may bring its snapshots back (devicemapper after a
   * reference-only delete): the index takes them, as at start-up. Drivers without snapshots
   * have none.
   */
  async #adoptSnapshots(rec: VolumeRecord): Promise<void> {
    let sops: SnapshotOperations;
    try {
      sops = await this.snapshotOps(
        rec.Driver,
        `Cannot list the snapshots of volume "${rec.Name}"`,
      );
    } catch {
      return;
    }
    await this.syncSnapshots(rec, sops);
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
    const driver = await this.backupDriverOf(unescapeBackupURL(req.backupURL), req.endpoint, "")
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
        if (this.backingUp.has(s)) {
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
}
