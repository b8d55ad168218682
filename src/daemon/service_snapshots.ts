/**
 * The service's snapshot operations: create, delete, inspect.
 * @module
 */
import { AlreadyExistsError, ConflictError } from "../api/errors.ts";
import type { StringMap } from "../api/driver.ts";
import { OPT_SNAPSHOT_CREATED_TIME } from "../api/options.ts";
import { validateName } from "../util/names.ts";
import { ServiceMounts } from "./docker_mounts.ts";
import { type SnapshotResponse, sortedMap } from "./responses.ts";

/** Snapshot create, delete and inspect. */
export class ServiceSnapshots extends ServiceMounts {
  // ---- snapshots -----------------------------------------------------------------------------

  async createSnapshot(volumeName: string, opts: { name?: string } = {}): Promise<string> {
    const name = opts.name ? validateName(opts.name, "snapshot") : this.uniqueName("snapshot");
    const action = `Cannot create snapshot "${name}" of volume "${volumeName}"`;
    this.volume(volumeName, action);
    return await this.locks.run(volumeName, async () => {
      const v = this.volume(volumeName, action);
      const sops = await this.snapshotOps(v.Driver, action);
      if (this.state.nameTaken(name)) {
        throw new AlreadyExistsError(
          `${action}: ${
            this.state.volumes.has(name) ? "a volume" : "a snapshot"
          } with that name exists`,
        );
      }
      const rec = this.state.newSnapshot({ Name: name, Status: "creating" });
      v.Snapshots[name] = rec;
      try {
        await this.state.save();
        await sops.createSnapshot(name, volumeName);
        const info = await sops.getSnapshotInfo(name, volumeName);
        rec.CreatedTime = info[OPT_SNAPSHOT_CREATED_TIME] ?? "";
        rec.Status = "ready";
        await this.state.save();
      } catch (err) {
        delete v.Snapshots[name];
        await this.state.save();
        throw err;
      }
      this.log.info("snapshot created", { volume: volumeName, snapshot: name });
      return name;
    });
  }

  async deleteSnapshot(name: string): Promise<void> {
    const action = `Cannot delete snapshot "${name}"`;
    const { volume } = this.snapshot(name, action);
    await this.locks.run(volume.Name, async () => {
      const { volume: v, snapshot: s } = this.snapshot(name, action);
      if (this.backingUp.has(name)) throw new ConflictError(`${action}: it is being backed up`);
      const sops = await this.snapshotOps(v.Driver, action);
      s.Status = "deleting";
      await this.state.save();
      try {
        await sops.deleteSnapshot(name, v.Name);
      } catch (err) {
        s.Status = "ready";
        await this.state.save();
        throw err;
      }
      delete v.Snapshots[name];
      await this.state.save();
    });
    this.log.info("snapshot deleted", { snapshot: name });
  }

  async inspectSnapshot(name: string): Promise<SnapshotResponse> {
    const action = `Cannot inspect snapshot "${name}"`;
    const { volume: v, snapshot: s } = this.snapshot(name, action);
    const sops = await this.snapshotOps(v.Driver, action);
    const info: StringMap = { ...await sops.getSnapshotInfo(name, v.Name), Driver: v.Driver };
    return {
      Name: name,
      VolumeName: v.Name,
      VolumeCreatedAt: v.CreatedTime,
      CreatedTime: info[OPT_SNAPSHOT_CREATED_TIME] || s.CreatedTime,
      DriverInfo: sortedMap(info),
    };
  }
}
