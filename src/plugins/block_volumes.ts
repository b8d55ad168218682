/**
 * Host helpers that the block drivers (loop, devicemapper) reach through `api.util`: mounting and
 * unmounting a volume's filesystem, finding a recorded snapshot, running a delta-block backup,
 * and the small file helpers they share.
 * @module
 */
import { rmdir } from "node:fs/promises";
import * as errors from "../api/errors.ts";
import { ensureDir } from "../util/fs.ts";
import type {
  BackedUpRecord,
  BackupStoreApi,
  BlockFilesystems,
  BlockMountSpec,
  BlockUmountSpec,
  PluginMounts,
  ReadableFile,
  RecordStore,
  SnapshotBackupRequest,
  SnapshotBackupSpec,
  SnapshotDeleteSpec,
  SnapshotRecords,
} from "../api/plugin.ts";
import { randomHex, validateName } from "../util/names.ts";
import { optionSchemas } from "../util/option_schemas.ts";
import { parseOptions } from "./driver_util.ts";

/** `api.util.errno`: the `code` of a Node error ("ENOENT"), or undefined. */
export function errno(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}

/** `api.util.randomId`: 12 random hex digits, for the names of temporary files. */
export function randomId(): string {
  return randomHex(12);
}

/**
 * `api.util.readFull`: fills `at.buf` from byte `at.pos` of `fh`; what lies past the end of the
 * file reads as zeros. Resolves to the bytes read.
 */
export async function readFull(
  fh: ReadableFile,
  at: { buf: Uint8Array; pos: number },
): Promise<number> {
  const { buf, pos } = at;
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  if (off < buf.length) buf.fill(0, off);
  return off;
}

/** `api.util.mustSnapshot`: see PluginUtil.mustSnapshot. */
export async function mustSnapshot<T extends SnapshotRecords>(
  records: RecordStore<T>,
  snap: string,
  of: { volume: string; what: string },
): Promise<{ record: T; snapshot: T["Snapshots"][string] }> {
  const { volume: name, what } = of;
  const record = await records.must(name, `${what} snapshot "${snap}" of volume`);
  const snapshot = record.Snapshots[snap];
  if (!snapshot) {
    throw new errors.NotFoundError(
      `Cannot ${what} snapshot "${snap}" of volume "${name}": snapshot does not exist`,
    );
  }
  return { record, snapshot: snapshot as T["Snapshots"][string] };
}

/** `api.util.deleteSnapshot`: see PluginUtil.deleteSnapshot. */
export async function deleteSnapshot<T extends SnapshotRecords>(
  req: { id: string; volumeID: string },
  spec: SnapshotDeleteSpec<T>,
): Promise<void> {
  const snap = validateName(req.id, "snapshot");
  const name = validateName(req.volumeID, "volume");
  const what = `Cannot delete snapshot "${snap}" of volume "${name}"`;
  await spec.locks.run(name, async () => {
    const record = await spec.records.read(name);
    const snapshot = record?.Snapshots[snap] as T["Snapshots"][string] | undefined;
    if (!record || !snapshot) throw new errors.NotFoundError(`${what}: snapshot does not exist`);
    if (spec.inUse.inUse(name, snap)) {
      throw new errors.ConflictError(`${what}: snapshot is being backed up`);
    }
    const rest = { ...record.Snapshots };
    delete rest[snap];
    try {
      const unrecorded = { ...record, Snapshots: rest };
      await spec.remove({ volume: name, snap, record, snapshot, unrecorded });
    } catch (err) {
      throw (spec.wrap ?? errors.wrapError)(err, what);
    }
    spec.log.info(`Deleted snapshot "${snap}" of volume "${name}"`, {
      volume: name,
      snapshot: snap,
      ...spec.logFields?.(snapshot),
    });
  });
}

/** The block-volume helpers of `api.util`, over the host's mount table, filesystems and store. */
export function createBlockVolumeHelpers(opts: {
  mounts: PluginMounts;
  filesystems: BlockFilesystems;
  backup: BackupStoreApi;
}) {
  const { mounts, filesystems: fs, backup } = opts;

  /** `api.util.mountBlockVolume`: see PluginUtil.mountBlockVolume. */
  async function mountBlockVolume(name: string, spec: BlockMountSpec): Promise<string> {
    const { current, wanted, defaultMountPoint, log } = spec;
    const wrap = spec.wrap ?? errors.wrapError;
    const target = current || wanted || defaultMountPoint;
    const what = `Cannot mount volume "${name}" at "${wanted || target}"`;
    if (current && wanted && wanted !== current) {
      throw new errors.ConflictError(`${what}: volume is already mounted at "${current}"`);
    }
    let dev;
    try {
      dev = await spec.activate();
    } catch (err) {
      throw wrap(err, what);
    }
    const device = dev.path;
    await ensureDir(target);
    const canonical = await mounts.canonicalPath(target);
    const elsewhere = (await (dev.mountsOf ? dev.mountsOf() : mounts.mountsOf(device))).filter(
      (p) => p !== canonical,
    );
    if (elsewhere.length) {
      throw new errors.ConflictError(
        `${what}: its device "${device}" is mounted at "${elsewhere[0]}"`,
      );
    }
    const entry = await mounts.mountAt(target);
    if (entry && !(dev.isMountOf ? await dev.isMountOf(entry) : entry.source === device)) {
      throw new errors.ConflictError(`${what}: "${target}" is already a mount point`);
    }
    if (!entry) {
      try {
        await fs.mount(device, target, { fs: spec.fs });
      } catch (err) {
        if (!current && target === defaultMountPoint) await rmdir(target).catch(() => {});
        throw wrap(err, what);
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
      throw wrap(err, what);
    }
    log.info(`Mounted volume "${name}" at "${target}"`, {
      volume: name,
      device,
      mountpoint: target,
    });
    return target;
  }

  /** `api.util.umountBlockVolume`: see PluginUtil.umountBlockVolume. */
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
      throw (spec.wrap ?? errors.wrapError)(
        err,
        `Cannot unmount volume "${name}" from "${mountPoint}"`,
      );
    }
    log.info(`Unmounted volume "${name}"`, { volume: name, mountpoint: mountPoint });
  }

  /** `api.util.backUpSnapshot`: see PluginUtil.backUpSnapshot. */
  async function backUpSnapshot<T extends BackedUpRecord>(
    req: SnapshotBackupRequest,
    spec: SnapshotBackupSpec<T>,
  ): Promise<string> {
    const { destURL, ctx } = req;
    const snap = validateName(req.snapshotID, "snapshot");
    const name = validateName(req.volumeID, "volume");
    const o = parseOptions(optionSchemas.backup, req.opts ?? {}, "backup options");
    const what = `Cannot back up snapshot "${snap}" of volume "${name}"`;
    // The volume lock is held only to pin the snapshot, not for the whole upload.
    const { record, snapshot, release } = await spec.locks.run(name, async () => {
      const found = await mustSnapshot(spec.records, snap, { volume: name, what: "back up" });
      return { ...found, release: spec.inUse.use(name, snap) };
    });
    const session = spec.session(ctx);
    try {
      const url = await backup.createDeltaBackup(session.ops, {
        volume: {
          name,
          driver: spec.driver,
          size: record.Size,
          createdTime: record.CreatedTime,
          uuid: record.UUID,
        },
        snapshot: { name: snap, createdTime: snapshot.CreatedTime },
        destURL,
        endpoint: o.EndpointURL || undefined,
        compression: o.Compression || undefined,
        signal: ctx?.signal,
        progress: ctx?.progress,
      });
      spec.log.info(`Backed up snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        dest_url: destURL,
        backup_url: url,
      });
      return url;
    } catch (err) {
      throw (spec.wrap ?? errors.wrapError)(err, what);
    } finally {
      await session.close();
      release();
    }
  }

  return { mountBlockVolume, umountBlockVolume, backUpSnapshot };
}
