/**
 * The block framework's backups: the delta-block engine runs over the adapter's snapshot source
 * (a file, a device or a range reader) and comparison; a destination of the adapter's own kind
 * goes to its nativeBackups.
 * @module
 */
import { type FileHandle, open } from "node:fs/promises";
import type { SnapshotSource } from "../../api/block.ts";
import type {
  DeltaBlockOperations,
  Mappings,
  OperationContext,
  StringMap,
  UnknownChanges,
} from "../../api/driver.ts";
import { optionSchemas } from "../../util/option_schemas.ts";
import { validateName } from "../../util/names.ts";
import { parseOptions } from "../driver_util.ts";
import { readFull } from "../../util/fs.ts";
import { BLOCK_SIZE } from "../../backup/codec.ts";
import { type BlockBackupRequest, inContext } from "./core.ts";
import { BlockSnapshotOps } from "./snapshots.ts";

/** Backup operations. */
export class BlockBackupOps extends BlockSnapshotOps {
  // ---- backups -----------------------------------------------------------------------------

  /**
   * The DeltaBlockOperations of one backup over the adapter: snapshot sources opened once and
   * closed by close(), comparisons given the recorded base snapshot.
   */
  protected deltaSession(ctx?: OperationContext) {
    const sources = new Map<string, Promise<SnapshotSource>>();
    const key = (id: string, volumeID: string) => `${volumeID}\u0000${id}`;
    const handles = new Map<string, Promise<FileHandle>>();
    const source = (id: string, volumeID: string) => {
      let s = sources.get(key(id, volumeID));
      if (!s) {
        s = this.mustSnapshot(id, { volume: volumeID, what: "read" }).then(({ vol, snap }) =>
          this.adapter.openSnapshot(vol, snap, { ...ctx, log: this.log })
        );
        s.catch(() => sources.delete(key(id, volumeID)));
        sources.set(key(id, volumeID), s);
      }
      return s;
    };
    const closeOne = async (k: string) => {
      const fh = handles.get(k);
      handles.delete(k);
      if (fh) await (await fh.catch(() => undefined))?.close();
      const s = sources.get(k);
      sources.delete(k);
      if (s) await (await s.catch(() => undefined))?.close?.();
    };
    const ops: DeltaBlockOperations = {
      hasSnapshot: async (id, volumeID) => {
        const rec = await this.records.read(validateName(volumeID, "volume"));
        return !!rec?.Snapshots[id];
      },
      compareSnapshot: async (id, compareID, volumeID) => {
        return await this.compare(id, { base: compareID, volume: volumeID, ctx });
      },
      openSnapshot: async (id, volumeID) => {
        await source(id, volumeID);
      },
      snapshotFile: async (id, volumeID) => {
        const s = await source(id, volumeID);
        return s.kind === "reader" ? undefined : s.path;
      },
      readSnapshot: async (id, volumeID, start, data) => {
        const s = await source(id, volumeID);
        if (s.kind === "reader") return await s.read(start, data, { signal: ctx?.signal });
        const k = key(id, volumeID);
        let fh = handles.get(k);
        if (!fh) {
          fh = open(s.path, "r");
          handles.set(k, fh);
        }
        await readFull(await fh, { buf: data, pos: start });
      },
      closeSnapshot: async (id, volumeID) => {
        await closeOne(key(id, volumeID));
      },
    };
    return {
      ops,
      close: async () => {
        for (const k of [...sources.keys(), ...handles.keys()]) await closeOne(k);
      },
    };
  }

  /**
   * The ranges of snapshot `snap` that differ from snapshot `base` (every range with data when
   * `base` is "" or `snap`). "unknown" with a base goes to the engine, which then compares each
   * block's checksum with the previous backup's; without a base it means every block.
   */
  async compare(
    snap: string,
    opts: { base: string; volume: string; ctx?: OperationContext },
  ): Promise<Mappings | UnknownChanges> {
    // One read of the record serves the snapshot and its base.
    const of = { volume: opts.volume, what: "compare" };
    const { vol, snaps, snap: s } = await this.mustSnapshot(snap, of);
    const base = opts.base && opts.base !== snap
      ? this.snapshotOf(snaps, opts.base, of)
      : undefined;
    const release = base ? this.inUse.use(vol.name, base.name) : () => {};
    try {
      const r = this.adapter.compareSnapshots
        ? await this.adapter.compareSnapshots(vol, s, base, { ...opts.ctx, log: this.log })
        : "unknown";
      if (r !== "unknown" || base) return r;
      return { mappings: [{ offset: 0, size: s.size }], blockSize: BLOCK_SIZE };
    } finally {
      release();
    }
  }

  /** See BlockDriver.block.backUp. */
  async backUp(snapshotID: string, volumeID: string, req: BlockBackupRequest): Promise<string> {
    const snap = validateName(snapshotID, "snapshot");
    const name = validateName(volumeID, "volume");
    const what = `Cannot back up snapshot "${snap}" of volume "${name}"`;
    const { destURL } = req;
    // The volume lock is held only to pin the snapshot, not for the whole upload.
    const { vol, snap: s, release } = await this.locks.run(name, async () => {
      const found = await this.mustSnapshot(snap, { volume: name, what: "back up" });
      return { ...found, release: this.inUse.use(name, snap) };
    });
    const session = this.deltaSession(req);
    try {
      const nb = this.native(destURL);
      const url = nb
        ? await nb.create(vol, s, { url: destURL, ctx: { ...req, log: this.log } })
        : await this.host.backup.createDeltaBackup(session.ops, {
          volume: {
            name,
            driver: this.name,
            size: vol.size,
            createdTime: vol.createdTime,
            uuid: vol.uuid,
          },
          snapshot: { name: snap, createdTime: s.createdTime },
          destURL,
          endpoint: req.endpoint || undefined,
          compression: req.compression || undefined,
          signal: req.signal,
          progress: req.progress,
        });
      this.log.info(`Backed up snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        dest_url: destURL,
        backup_url: url,
      });
      return url;
    } catch (err) {
      throw inContext(err, what);
    } finally {
      await session.close();
      release();
    }
  }

  async createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Promise<string> {
    const o = parseOptions(optionSchemas.backup, opts ?? {}, "backup options");
    return await this.backUp(snapshotID, volumeID, {
      destURL,
      endpoint: o.EndpointURL,
      compression: o.Compression,
      ...ctx,
    });
  }

  /** Any block backup may be inspected by any block driver; delete and list keep to this one's. */
  protected get queries() {
    return this.host.backup.queries(this.name, { blocks: true });
  }

  async deleteBackup(url: string, opts?: StringMap): Promise<void> {
    const nb = this.native(url);
    if (nb) return await nb.delete(url);
    await this.queries.deleteBackup(url, opts ?? {});
  }

  async getBackupInfo(url: string, opts?: StringMap): Promise<StringMap> {
    const nb = this.native(url);
    if (nb) return await nb.inspect(url);
    return await this.queries.getBackupInfo(url, opts ?? {});
  }

  async listBackup(destURL: string, opts: StringMap): Promise<Record<string, StringMap>> {
    const nb = this.native(destURL);
    if (nb) return await nb.list(destURL, { volumeName: opts?.VolumeName || undefined });
    return await this.queries.listBackup(destURL, opts ?? {});
  }
}
