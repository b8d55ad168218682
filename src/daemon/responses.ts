/**
 * Convoy's Go-shaped responses (VolumeResponse, SnapshotResponse, `convoy info` and `list`): the
 * maps the REST routes (rest.ts) and the Docker adapter answer with, keys sorted as Go writes them.
 * @module
 */
import { errorMessage } from "../api/errors.ts";
import type { StringMap } from "../api/driver.ts";
import { OPT_SNAPSHOT_CREATED_TIME, OPT_VOLUME_CREATED_TIME } from "../api/options.ts";
import type { VolumeRecord } from "./state.ts";

import { ServiceReconcile } from "./reconcile.ts";

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

/** `m` with its keys sorted, as Go's encoding/json writes maps (DriverInfo, Snapshots). */
export function sortedMap<T>(m: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.keys(m).sort().map((k) => [k, m[k]]));
}

/** Info and listing in Convoy's response shapes. */
export class ServiceResponses extends ServiceReconcile {
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
    const vols = this.readyVolumes();
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
}
