/**
 * The block framework's volumes: create (a new device, mkfs, or a restore of any block backup or
 * of another block driver's native backup), delete, mount and unmount, info.
 * @module
 */
import * as errors from "../../api/errors.ts";
import type { BlockVolume, NativeBackupReader } from "../../api/block.ts";
import type { OperationContext, StringMap } from "../../api/driver.ts";
import { optionSchemas } from "../../util/option_schemas.ts";
import { validateName } from "../../util/names.ts";
import { rubyDate } from "../../util/time.ts";
import { parseOptions, requestedMountPoint } from "../driver_util.ts";
import { BlockCore, fsync, inContext, LONG_COMMAND_TIMEOUT_MS, schemeOf } from "./core.ts";
import { copyNativeBackup } from "./native.ts";

/** Volume operations. */
export class BlockVolumeOps extends BlockCore {
  // ---- volumes -----------------------------------------------------------------------------

  async createVolume(id: string, opts: StringMap, ctx?: OperationContext): Promise<void> {
    const name = validateName(id, "volume");
    const raw = opts ?? {};
    const o = parseOptions(optionSchemas.createVolume, raw, `options of volume "${name}"`);
    const options = this.adapter.volumeOptions
      ? parseOptions(this.adapter.volumeOptions, raw, `options of volume "${name}"`)
      : undefined;
    await this.locks.run(name, async () => {
      if (await this.records.read(name)) {
        throw new errors.AlreadyExistsError(
          `Cannot create volume "${name}": volume already exists`,
        );
      }
      const url = o.BackupURL || "";
      const what = url
        ? `Cannot create volume "${name}" from backup "${url}"`
        : `Cannot create volume "${name}"`;
      const endpoint = o.EndpointURL || undefined;
      const native = !!url && !!this.native(url);
      const requested = o.Size || 0;
      let size: number;
      let reader: NativeBackupReader | undefined;
      try {
        if (url && !native) reader = await this.openForeign(url, { ctx, what });
        size = url
          ? await this.backupSize(url, { native, reader, endpoint, requested, what })
          : this.size(name, requested);
      } catch (err) {
        await reader?.source.close?.().catch(() => {});
        throw inContext(err, what);
      }
      try {
        await this.create(name, {
          size,
          requested: !!requested,
          options,
          restore: url ? { url, native, endpoint, reader } : undefined,
          ctx,
          what,
        });
      } finally {
        await reader?.source.close?.().catch(() => {});
      }
    });
  }

  /**
   * Opens `url` when it is another block driver's native backup (see NativeBackups.open);
   * undefined for a backup in a store.
   */
  protected async openForeign(
    url: string,
    o: { ctx?: OperationContext; what: string },
  ): Promise<NativeBackupReader | undefined> {
    const owner = this.host.natives?.get(schemeOf(url));
    if (!owner) return undefined;
    if (!owner.open) {
      throw new errors.InvalidArgumentError(
        `${o.what}: backups of driver "${owner.driver}" restore only into ${owner.driver} volumes`,
      );
    }
    return await owner.open(url, { ...o.ctx, log: this.log });
  }

  /** The size of a new volume: the request rounded to the adapter's alignment, or its default. */
  protected size(name: string, requested: number): number {
    const align = this.caps.sizeAlignment ?? 1;
    if (!requested) {
      const d = this.caps.defaultSize;
      if (!d) throw new errors.InvalidArgumentError(`no size given and driver has no default size`);
      return Math.ceil(d / align) * align;
    }
    const size = Math.ceil(requested / align) * align;
    if (size !== requested) {
      this.log.warn(`Size of volume "${name}" rounded up from ${requested} to ${size} bytes`, {
        volume: name,
      });
    }
    return size;
  }

  /** The size of the volume a backup restores; only block backups restore into block volumes. */
  protected async backupSize(
    url: string,
    o: {
      native: boolean;
      reader?: NativeBackupReader;
      endpoint?: string;
      requested: number;
      what: string;
    },
  ): Promise<number> {
    let size: number;
    if (o.native) size = await this.adapter.nativeBackups!.size(url);
    else if (o.reader) size = o.reader.size;
    else {
      const bv = await this.host.backup.getBackupVolume(url, { endpoint: o.endpoint });
      if (bv.format !== "delta-block") {
        throw new errors.InvalidArgumentError(
          `${o.what}: it was made by driver "${bv.driver}" as a file-level backup; only block ` +
            `backups restore into ${this.name} volumes`,
        );
      }
      size = bv.size;
    }
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new errors.InvalidArgumentError(`${o.what}: the backup's volume has no size`);
    }
    if (o.requested && o.requested !== size) {
      throw new errors.InvalidArgumentError(
        `${o.what}: size must match the backup's size ${size}`,
      );
    }
    return size;
  }

  /**
   * Makes the device, fills it (mkfs, or the backup's blocks), activates it and writes the record
   * last. A failed or cancelled create leaves nothing behind (an adopted device's data is kept).
   */
  protected async create(
    name: string,
    c: {
      size: number;
      requested: boolean;
      options: unknown;
      restore?: { url: string; native: boolean; endpoint?: string; reader?: NativeBackupReader };
      ctx?: OperationContext;
      what: string;
    },
  ): Promise<void> {
    const { restore, ctx, what } = c;
    const signal = ctx?.signal;
    const fsType = this.caps.filesystem ?? "ext4";
    const created = await this.adapter.createDevice({
      name,
      size: c.size,
      sizeRequested: c.requested,
      options: c.options,
      restore: restore && { url: restore.url, native: restore.native },
      signal,
    }).catch((err) => {
      throw inContext(err, what);
    });
    const previous = created.adopted ? created.previous : undefined;
    let vol: BlockVolume = {
      name,
      uuid: previous?.uuid || crypto.randomUUID(),
      size: created.size,
      filesystem: "",
      createdTime: previous?.createdTime || rubyDate(),
      device: "",
      mountPoint: "",
      fields: created.fields,
    };
    const fs = this.host.filesystems;
    /** Fills `target` (the staging file or the device); resolves to its filesystem. */
    const fill = async (target: string, fresh: boolean): Promise<string> => {
      if (restore && !restore.native) {
        if (restore.reader) await copyNativeBackup(restore.reader, target, ctx);
        else {
          await this.host.backup.restoreDeltaBackup(restore.url, target, {
            endpoint: restore.endpoint,
            signal,
            progress: ctx?.progress,
          });
        }
        await fsync(target);
        if (signal?.aborted) throw new errors.CancelledError(`${what}: cancelled`);
        return await fs.detect(target);
      }
      const found = fresh ? "" : await fs.detect(target);
      // A device kept with its snapshots is never formatted: "" lets mount detect it.
      if (found || restore || previous) return found;
      await fs.mkfs(target, fsType, {
        discard: this.caps.discardOnMkfs ?? true,
        timeoutMs: LONG_COMMAND_TIMEOUT_MS,
      });
      return fsType;
    };
    try {
      let filesystem: string;
      if (created.staging) {
        filesystem = await fill(created.staging.path, true);
        const fields = await created.staging.commit();
        if (fields) vol = { ...vol, fields };
        vol = await this.activateNew(vol);
      } else {
        vol = await this.activateNew(vol);
        filesystem = await fill(vol.device, !created.adopted && !restore);
      }
      if (!filesystem && restore) {
        this.log.warn(`No filesystem recognised in the restored volume "${name}"`, {
          volume: name,
          url: restore.url,
        });
      }
      if (created.adopted) {
        this.log.info(`Adopting the device of an earlier volume "${name}"`, {
          volume: name,
          size: vol.size,
          filesystem,
        });
      }
      vol = { ...vol, filesystem };
      await this.write(
        vol,
        Object.fromEntries((previous?.snapshots ?? []).map((s) => [s.name, s])),
      );
    } catch (err) {
      await this.records.remove(name).catch(() => {});
      await created.staging?.discard().catch(() => {});
      try {
        if (vol.device) await this.adapter.deactivate?.(vol);
        await this.adapter.removeDevice(vol, { keepData: !!created.adopted });
      } catch (e) {
        this.log.warn(
          `Cannot remove the device of volume "${name}": ${errors.errorMessage(e)}`,
          { volume: name },
        );
      }
      throw inContext(err, what);
    }
    await this.recorded(vol);
    this.log.info(`Created volume "${name}"`, {
      volume: name,
      device: vol.device,
      size: vol.size,
      filesystem: vol.filesystem,
    });
    if (restore) {
      this.log.info(`Restored backup "${restore.url}" into volume "${name}"`, {
        volume: name,
        size: vol.size,
      });
    }
  }

  protected async activateNew(vol: BlockVolume): Promise<BlockVolume> {
    const dev = await this.adapter.activate(vol);
    return { ...vol, device: dev.path, fields: dev.fields ?? vol.fields };
  }

  async deleteVolume(id: string, opts: StringMap): Promise<void> {
    const name = validateName(id, "volume");
    const o = parseOptions(optionSchemas.deleteVolume, opts ?? {}, `options of volume "${name}"`);
    const what = `Cannot delete volume "${name}"`;
    await this.locks.run(name, async () => {
      const { vol, snaps } = await this.must(name, "delete volume");
      if (vol.mountPoint) {
        throw new errors.ConflictError(`${what}: volume is mounted at "${vol.mountPoint}"`);
      }
      for (const snap of Object.keys(snaps)) {
        if (this.inUse.inUse(name, snap)) {
          throw new errors.ConflictError(`${what}: its snapshot "${snap}" is being backed up`);
        }
      }
      try {
        if (vol.device) {
          const mounts = await this.host.mounts.mountsOf(vol.device);
          if (mounts.length) {
            throw new errors.ConflictError(
              `${what}: its device "${vol.device}" is mounted at "${mounts[0]}"`,
            );
          }
        }
        const keepData = o.ReferenceOnly;
        await this.adapter.beforeRemove?.(vol, {
          snapshots: Object.values(snaps),
          volume: true,
          keepData,
        });
        await this.adapter.deactivate?.(vol);
        // The record goes first: a crash afterwards leaves devices without a record, which the
        // adapter's start (snapshots) or the next create of the name (the device) takes care of.
        await this.records.remove(name);
        for (const s of Object.values(snaps)) {
          await this.adapter.removeSnapshot(vol, s, { keepData });
        }
        await this.adapter.removeDevice(vol, { keepData });
      } catch (err) {
        throw inContext(err, what);
      }
      this.log.info(`Deleted volume "${name}"${o.ReferenceOnly ? ", kept its data" : ""}`, {
        volume: name,
        referenceOnly: o.ReferenceOnly,
      });
    });
  }

  async mountVolume(id: string, opts: StringMap): Promise<string> {
    const name = validateName(id, "volume");
    const wanted = requestedMountPoint(opts, name);
    return await this.locks.run(name, async () => {
      const { vol, snaps } = await this.must(name, "mount volume");
      let active = vol;
      return await this.mounting.mountBlockVolume(name, {
        current: vol.mountPoint,
        wanted,
        defaultMountPoint: this.defaultMountPoint(name),
        fs: vol.filesystem,
        activate: async () => {
          active = await this.activate(vol, snaps);
          return {
            path: active.device,
            isMountOf: (entry) => this.isMountOf(active, entry),
          };
        },
        save: (mountPoint) => this.write({ ...active, mountPoint }, snaps),
        log: this.log,
      });
    });
  }

  async umountVolume(id: string): Promise<void> {
    const name = validateName(id, "volume");
    await this.locks.run(name, async () => {
      const { vol, snaps } = await this.must(name, "unmount volume");
      await this.mounting.umountBlockVolume(name, {
        mountPoint: vol.mountPoint,
        defaultMountPoint: this.defaultMountPoint(name),
        isMountOf: async (entry) => !vol.device || await this.isMountOf(vol, entry),
        save: () => this.write({ ...vol, mountPoint: "" }, snaps),
        log: this.log,
      });
    });
  }

  async mountPoint(id: string): Promise<string> {
    const name = validateName(id, "volume");
    return (await this.records.must(name, "find the mount point of volume")).MountPoint;
  }

  protected volumeInfo(vol: BlockVolume): StringMap {
    return {
      Device: vol.device,
      Size: String(vol.size),
      Filesystem: vol.filesystem,
      MountPoint: vol.mountPoint,
      VolumeName: vol.name,
      VolumeCreatedAt: vol.createdTime,
      ...this.adapter.volumeInfo?.(vol),
    };
  }

  async getVolumeInfo(id: string): Promise<StringMap> {
    const name = validateName(id, "volume");
    return this.volumeInfo((await this.must(name, "inspect volume")).vol);
  }

  async listVolume(_opts: StringMap): Promise<Record<string, StringMap>> {
    const out: Record<string, StringMap> = {};
    for (const { name, record } of await this.records.list()) {
      try {
        out[name] = this.volumeInfo(this.volume(record));
      } catch (err) {
        this.log.warn(errors.errorMessage(err), { volume: name });
      }
    }
    return out;
  }
}
