/**
 * Start-up and refresh: the index reconciled with what the drivers report (interrupted operations
 * settled, volumes adopted or forgotten), and mounts in use restored.
 * @module
 */
import { errorMessage, isErrorCode } from "../api/errors.ts";
import type {
  ConvoyDriver,
  SnapshotOperations,
  StringMap,
  VolumeOperations,
} from "../api/driver.ts";
import {
  OPT_SNAPSHOT_CREATED_TIME,
  OPT_VOLUME_CREATED_TIME,
  OPT_VOLUME_NAME,
} from "../api/options.ts";
import type { VolumeRecord } from "./state.ts";

import { ServiceBase } from "./service_base.ts";

/** Reconciling the index with the drivers. */
export class ServiceReconcile extends ServiceBase {
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
      Object.keys(v.Snapshots).some((s) => this.backingUp.has(s));
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
      await this.syncSnapshots(v, sops);
    }
  }

  /**
   * Makes the index's snapshots of volume `v` those its driver lists: gone ones leave, new ones
   * (e.g. kept with a device a create adopted) are added unless their name is taken. A failure
   * to list is logged.
   */
  protected async syncSnapshots(v: VolumeRecord, sops: SnapshotOperations): Promise<void> {
    let listed: Record<string, StringMap>;
    try {
      listed = await sops.listSnapshot({ [OPT_VOLUME_NAME]: v.Name });
    } catch (err) {
      this.log.error("cannot list snapshots", { volume: v.Name, error: errorMessage(err) });
      return;
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
