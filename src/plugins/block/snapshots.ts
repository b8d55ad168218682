/**
 * The block framework's snapshots: taken by the adapter with the mounted filesystem frozen by the
 * host (fsfreeze), recorded in the volume's record, deleted unless a backup reads them.
 * @module
 */
import * as errors from "../../api/errors.ts";
import type { BlockSnapshot, BlockVolume } from "../../api/block.ts";
import type { StringMap } from "../../api/driver.ts";
import { validateName } from "../../util/names.ts";
import { rubyDate } from "../../util/time.ts";
import { inContext } from "./core.ts";
import { BlockVolumeOps } from "./volumes.ts";

/** Snapshot operations. */
export class BlockSnapshotOps extends BlockVolumeOps {
  // ---- snapshots ---------------------------------------------------------------------------

  async createSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = validateName(id, "snapshot");
    const name = validateName(volumeID, "volume");
    const what = `Cannot create snapshot "${snap}" of volume "${name}"`;
    await this.locks.run(name, async () => {
      const { vol, snaps } = await this.must(name, `create snapshot "${snap}" of volume`);
      if (snaps[snap]) throw new errors.AlreadyExistsError(`${what}: snapshot already exists`);
      const started = performance.now();
      let fields;
      try {
        const entry = vol.mountPoint ? await this.host.mounts.mountAt(vol.mountPoint) : undefined;
        const freeze = this.caps.freezeForSnapshot !== false && entry &&
            await this.isMountOf(vol, entry)
          ? vol.mountPoint
          : "";
        if (freeze) await this.host.exec("fsfreeze", ["--freeze", freeze]);
        try {
          ({ fields } = await this.adapter.createSnapshot(vol, { name: snap }));
        } finally {
          if (freeze) await this.thaw(freeze);
        }
      } catch (err) {
        throw inContext(err, what);
      }
      const s: BlockSnapshot = { name: snap, createdTime: rubyDate(), size: vol.size, fields };
      try {
        await this.write(vol, { ...snaps, [snap]: s });
      } catch (err) {
        await this.adapter.removeSnapshot(vol, s, { unrecorded: true }).catch((e) =>
          this.log.warn(
            `Cannot remove the unrecorded snapshot "${snap}" of volume "${name}": ${
              errors.errorMessage(e)
            }`,
            { volume: name, snapshot: snap },
          )
        );
        throw errors.wrapError(err, what);
      }
      await this.recorded(vol, s);
      this.log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        ms: Math.round(performance.now() - started),
      });
    });
  }

  /** `fsfreeze --unfreeze`, retried; an error that is left is thrown. */
  protected async thaw(mountPoint: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.host.exec("fsfreeze", ["--unfreeze", mountPoint]);
        return;
      } catch (err) {
        if (attempt >= 3) {
          this.log.error(
            `Cannot thaw the filesystem at "${mountPoint}": ${errors.errorMessage(err)}`,
            { mountpoint: mountPoint },
          );
          throw err;
        }
        await new Promise((r) => setTimeout(r, 100 * attempt));
      }
    }
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = validateName(id, "snapshot");
    const name = validateName(volumeID, "volume");
    const what = `Cannot delete snapshot "${snap}" of volume "${name}"`;
    await this.locks.run(name, async () => {
      const record = await this.records.read(name);
      if (!record?.Snapshots[snap]) {
        throw new errors.NotFoundError(`${what}: snapshot does not exist`);
      }
      if (this.inUse.inUse(name, snap)) {
        throw new errors.ConflictError(`${what}: snapshot is being backed up`);
      }
      try {
        const vol = this.volume(record);
        const snaps = this.snapshots(record);
        const s = snaps[snap];
        delete snaps[snap];
        await this.adapter.beforeRemove?.(vol, { snapshots: [s], volume: false, keepData: false });
        // The record first: a crash afterwards leaves data no record refers to, never a record
        // of a snapshot that is gone.
        await this.write(vol, snaps);
        await this.adapter.removeSnapshot(vol, s);
      } catch (err) {
        throw inContext(err, what);
      }
      this.log.info(`Deleted snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
      });
    });
  }

  protected snapshotInfo(vol: BlockVolume, s: BlockSnapshot): StringMap {
    return {
      SnapshotName: s.name,
      SnapshotCreatedAt: s.createdTime,
      VolumeUUID: vol.name,
      Size: String(s.size),
      ...this.adapter.snapshotInfo?.(vol, s),
    };
  }

  protected async mustSnapshot(snap: string, of: { volume: string; what: string }) {
    const found = await this.must(of.volume, `${of.what} snapshot "${snap}" of volume`);
    return { ...found, snap: this.snapshotOf(found.snaps, snap, of) };
  }

  /** Snapshot `snap` of a volume read before; NotFoundError when it has none of that name. */
  protected snapshotOf(
    snaps: Record<string, BlockSnapshot>,
    snap: string,
    of: { volume: string; what: string },
  ): BlockSnapshot {
    const s = snaps[snap];
    if (!s) {
      throw new errors.NotFoundError(
        `Cannot ${of.what} snapshot "${snap}" of volume "${of.volume}": snapshot does not exist`,
      );
    }
    return s;
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = validateName(id, "snapshot");
    const name = validateName(volumeID, "volume");
    const { vol, snap: s } = await this.mustSnapshot(snap, { volume: name, what: "inspect" });
    return this.snapshotInfo(vol, s);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumes = await this.records.select(opts?.VolumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { record } of volumes) {
      const vol = this.volume(record);
      for (const s of Object.values(this.snapshots(record))) {
        out[s.name] = this.snapshotInfo(vol, s);
      }
    }
    return out;
  }
}
