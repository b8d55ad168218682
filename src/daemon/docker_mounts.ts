/**
 * Mounts and Docker's mount-ID bookkeeping: Docker's Mount and Unmount are reference-counted by
 * mount ID; IDs taken before Docker last activated the plugin are marked stale.
 * @module
 */
import { ConflictError } from "../api/errors.ts";
import { OPT_MOUNT_POINT } from "../api/options.ts";
import type { VolumeRecord } from "./state.ts";
import { ServiceVolumes } from "./service_volumes.ts";

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

/** Mount, unmount and the mount IDs of Docker's containers. */
export class ServiceMounts extends ServiceVolumes {
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
}
