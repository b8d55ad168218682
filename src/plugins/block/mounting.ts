/**
 * The block framework's mounts: mounting a volume's filesystem at its default or a given mount
 * point, and unmounting it, with the checks every block driver needs (a device mounted
 * elsewhere, a mount point taken by another device, a mount lost behind our back).
 * @module
 */
import { rmdir } from "node:fs/promises";
import * as errors from "../../api/errors.ts";
import type { Awaitable } from "../../api/driver.ts";
import type { BlockFilesystems, Logger, MountEntry, PluginMounts } from "../../api/plugin.ts";
import { ensureDir } from "../../util/fs.ts";

/** A volume's block device, as `BlockMountSpec.activate` returns it. */
export interface BlockDevice {
  /** The device node, mounted and shown in messages. */
  path: string;
  /** True when `entry` mounts this device. */
  isMountOf(entry: MountEntry): Awaitable<boolean>;
}

/** What `mountBlockVolume` needs. */
export interface BlockMountSpec {
  /** The recorded mount point; "" when the volume is not mounted. */
  current: string;
  /** The mount point asked for (`requestedMountPoint`), or "". */
  wanted: string;
  /** The mount point when none is recorded or asked for; its folder goes when its mount fails. */
  defaultMountPoint: string;
  /** The filesystem type to mount ("" lets mount detect it). */
  fs: string;
  /** Makes the device ready (attach, activate); a failure is wrapped with the mount's context. */
  activate(): Promise<BlockDevice>;
  /** Records the new mount point. */
  save(mountPoint: string): Promise<void>;
  log: Logger;
}

/** What `umountBlockVolume` needs. */
export interface BlockUmountSpec {
  /** The recorded mount point; "" when the volume is not mounted. */
  mountPoint: string;
  defaultMountPoint: string;
  /** True when the mount at the mount point is the volume's. */
  isMountOf(entry: MountEntry): Awaitable<boolean>;
  /** Records the volume as unmounted. */
  save(): Promise<void>;
  log: Logger;
}

/** Mount and unmount over the host's mount table and filesystems. */
export function createMounting(opts: { mounts: PluginMounts; filesystems: BlockFilesystems }) {
  const { mounts, filesystems: fs } = opts;

  /**
   * A block volume's mountVolume, after its record is read (under the volume's lock): a volume
   * mounted elsewhere, or a mount point taken, is a ConflictError; a mounted volume resolves to
   * its mount point (mounted again when gone); otherwise the device is mounted, `spec.save`
   * records the mount point (the mount is undone when it fails), and it resolves to the mount
   * point.
   */
  async function mountBlockVolume(name: string, spec: BlockMountSpec): Promise<string> {
    const { current, wanted, defaultMountPoint, log } = spec;
    const target = current || wanted || defaultMountPoint;
    const what = `Cannot mount volume "${name}" at "${wanted || target}"`;
    if (current && wanted && wanted !== current) {
      throw new errors.ConflictError(`${what}: volume is already mounted at "${current}"`);
    }
    let dev;
    try {
      dev = await spec.activate();
    } catch (err) {
      throw errors.wrapError(err, what);
    }
    const device = dev.path;
    await ensureDir(target);
    const canonical = await mounts.canonicalPath(target);
    const elsewhere = (await mounts.mountsOf(device)).filter(
      (p) => p !== canonical,
    );
    if (elsewhere.length) {
      throw new errors.ConflictError(
        `${what}: its device "${device}" is mounted at "${elsewhere[0]}"`,
      );
    }
    const entry = await mounts.mountAt(target);
    if (entry && !(await dev.isMountOf(entry))) {
      throw new errors.ConflictError(`${what}: "${target}" is already a mount point`);
    }
    if (!entry) {
      try {
        await fs.mount(device, target, { fs: spec.fs });
      } catch (err) {
        if (!current && target === defaultMountPoint) await rmdir(target).catch(() => {});
        throw errors.wrapError(err, what);
      }
    }
    if (current) {
      if (!entry) log.info(`Mounted volume "${name}" at "${current}" again`);
      return current;
    }
    try {
      await spec.save(target);
    } catch (err) {
      await fs.umount(target, { volume: name }).catch(() => {});
      throw errors.wrapError(err, what);
    }
    log.info(`Mounted volume "${name}" at "${target}"`, {
      volume: name,
      device,
      mountpoint: target,
    });
    return target;
  }

  /**
   * A block volume's umountVolume, after its record is read: nothing when no mount point is
   * recorded; else unmounts it when `spec.isMountOf` says it is the volume's (warns when not),
   * removes the default mount point's folder, and `spec.save`s the unmounted record.
   */
  async function umountBlockVolume(name: string, spec: BlockUmountSpec): Promise<void> {
    const { mountPoint, log } = spec;
    if (!mountPoint) return;
    try {
      const entry = await mounts.mountAt(mountPoint);
      if (entry) {
        if (await spec.isMountOf(entry)) await fs.umount(mountPoint, { volume: name });
        else {
          log.warn(
            `Not unmounting "${mountPoint}": it is a mount of "${entry.source}", not of volume "${name}"`,
            { volume: name },
          );
        }
      }
      if (mountPoint === spec.defaultMountPoint) await rmdir(mountPoint).catch(() => {});
      await spec.save();
    } catch (err) {
      throw errors.wrapError(err, `Cannot unmount volume "${name}" from "${mountPoint}"`);
    }
    log.info(`Unmounted volume "${name}"`, { volume: name, mountpoint: mountPoint });
  }

  return { mountBlockVolume, umountBlockVolume };
}
