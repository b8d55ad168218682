/**
 * The vfs driver's per-host volume state, `<root>/state/<volume>.json`: the mount point and the
 * snapshots that only this host knows. A state file belongs to one incarnation of its volume
 * (`VolumeCreatedTime` = the shared record's `CreatedTime`); one left by an older volume of the
 * same name, deleted on another host sharing vfs.path, is stale and discarded with its bind
 * mount and snapshots. Without a state file, old Convoy snapshot tarballs are adopted.
 * @module
 */
import { rm, stat } from "node:fs/promises";
import type { Logger, PluginApi } from "../../mod.ts";
import type { VolumeDirs } from "./dirs.ts";
import type { VfsLayout } from "./layout.ts";
import type { Schemas, VolumeRecord, VolumeState } from "./options.ts";

/** Reads a state file with a stale-check result. */
export interface LoadedState {
  /** The state to use for this incarnation of the volume. */
  state: VolumeState;
  /** State left by an older volume of the same name (deleted on another host); to discard. */
  stale?: VolumeState;
}

/** Reads, checks and writes the per-host state files. */
export class VolumeStates {
  #api: PluginApi;
  #schemas: Schemas;
  #layout: VfsLayout;
  #dirs: VolumeDirs;
  #log: Logger;

  constructor(
    api: PluginApi,
    o: { schemas: Schemas; layout: VfsLayout; dirs: VolumeDirs; log: Logger },
  ) {
    this.#api = api;
    this.#schemas = o.schemas;
    this.#layout = o.layout;
    this.#dirs = o.dirs;
    this.#log = o.log;
  }

  /** The per-host state file as saved, or undefined. */
  async readFile(name: string): Promise<VolumeState | undefined> {
    const file = this.#layout.stateFile(name);
    let raw: unknown;
    try {
      raw = await this.#api.util.readJSON(file);
    } catch (err) {
      throw new this.#api.errors.BackendError(
        `Cannot read the state of volume "${name}": "${file}" is not valid JSON: ${
          this.#api.errors.errorMessage(err)
        }`,
        { cause: err },
      );
    }
    if (raw === undefined) return undefined;
    const r = this.#schemas.volumeState.safeParse(raw);
    if (!r.success) {
      throw new this.#api.errors.BackendError(
        `Cannot read the state of volume "${name}": "${file}" is not a valid state file`,
      );
    }
    return r.data;
  }

  /**
   * The per-host state of the volume `record` describes. Without a state file, old Convoy
   * snapshot tarballs of this host listed in the record are adopted.
   */
  async read(name: string, record: VolumeRecord): Promise<LoadedState> {
    const saved = await this.readFile(name);
    const fresh: VolumeState = {
      Name: name,
      VolumeCreatedTime: record.CreatedTime,
      MountPoint: "",
      Snapshots: {},
    };
    if (saved) {
      if (saved.VolumeCreatedTime === record.CreatedTime) return { state: saved };
      return { state: fresh, stale: saved };
    }
    for (const [snap, s] of Object.entries(record.Snapshots ?? {})) {
      const file = this.#layout.legacySnapshotFile(name, snap);
      if (s.FilePath !== file) continue;
      try {
        if (!(await stat(file)).isFile()) continue;
      } catch {
        continue;
      }
      fresh.Snapshots[snap] = { Name: snap, CreatedTime: s.CreatedTime ?? "", FilePath: file };
    }
    return { state: fresh };
  }

  /** The state for a changing operation: a stale state is discarded first. */
  async forWrite(name: string, record: VolumeRecord): Promise<VolumeState> {
    const { state, stale } = await this.read(name, record);
    if (stale) await this.discardStale(name, stale);
    return state;
  }

  /**
   * Drops the local state of an older volume with the same name (it was deleted, and perhaps
   * re-created, on another host sharing vfs.path): its bind mount and its snapshots.
   */
  async discardStale(name: string, stale: VolumeState): Promise<void> {
    this.#log.warn(
      `Discarding the local state of an older volume "${name}" (created ${
        JSON.stringify(stale.VolumeCreatedTime)
      }): the volume was deleted on another host`,
      { volume: name },
    );
    if (stale.MountPoint && stale.MountPoint !== this.#layout.volumeDir(name)) {
      await this.#dirs.unbind(stale.MountPoint, name).catch((err) =>
        this.#log.warn(
          `Cannot unmount "${stale.MountPoint}": ${this.#api.errors.errorMessage(err)}`,
          { volume: name },
        )
      );
    }
    await this.removeSnapshotFiles(name, stale);
    await this.remove(name);
  }

  /** Saves the state; one with neither a mount point nor snapshots removes the file. */
  async write(name: string, state: VolumeState): Promise<void> {
    if (!state.MountPoint && Object.keys(state.Snapshots).length === 0) {
      await this.remove(name);
      return;
    }
    await this.#api.util.writeJSON(this.#layout.stateFile(name), {
      Name: name,
      VolumeCreatedTime: state.VolumeCreatedTime,
      MountPoint: state.MountPoint,
      Snapshots: state.Snapshots,
    });
  }

  /** Removes the state file; a missing one is fine. */
  async remove(name: string): Promise<void> {
    await rm(this.#layout.stateFile(name), { force: true });
  }

  /** Removes the snapshots `state` lists and the volume's snapshot folder. */
  async removeSnapshotFiles(name: string, state: VolumeState): Promise<void> {
    for (const s of Object.values(state.Snapshots)) {
      await rm(s.FilePath, { recursive: true, force: true });
    }
    await rm(this.#layout.snapshotRoot(name), { recursive: true, force: true });
  }
}
