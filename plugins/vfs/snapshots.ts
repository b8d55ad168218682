/**
 * The vfs driver's snapshots: full copies of the volume directory (`cp --reflink=auto`, instant
 * where the filesystem shares extents) in `<root>/snapshots/<volume>/<snapshot>`, listed in the
 * per-host state. Old Convoy snapshot tarballs listed there are kept as they are.
 * @module
 */
import { rename, rm } from "node:fs/promises";
import { join } from "node:path";
import type { KeyedLock, Logger, PluginApi, RecordStore, StringMap } from "../../mod.ts";
import { LONG_COMMAND_TIMEOUT_MS, type VolumeDirs } from "./dirs.ts";
import type { VfsLayout } from "./layout.ts";
import type { SnapshotState, VolumeRecord, VolumeState } from "./options.ts";
import type { VolumeStates } from "./state.ts";

/** The lock key of one snapshot: held while a backup archives it or a delete removes it. */
export function snapshotLock(volume: string, snapshot: string): string {
  return `${volume}\u0000snapshot\u0000${snapshot}`;
}

/** Snapshot operations, under the volume's lock (`locks`, keyed by volume name). */
export class VfsSnapshots {
  #api: PluginApi;
  #layout: VfsLayout;
  #dirs: VolumeDirs;
  #states: VolumeStates;
  #records: RecordStore<VolumeRecord>;
  #locks: KeyedLock;
  #log: Logger;

  constructor(
    api: PluginApi,
    o: {
      layout: VfsLayout;
      dirs: VolumeDirs;
      states: VolumeStates;
      records: RecordStore<VolumeRecord>;
      locks: KeyedLock;
      log: Logger;
    },
  ) {
    this.#api = api;
    this.#layout = o.layout;
    this.#dirs = o.dirs;
    this.#states = o.states;
    this.#records = o.records;
    this.#locks = o.locks;
    this.#log = o.log;
  }

  async createSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#api.util.validateName(volumeID, "volume");
    const what = `Cannot create snapshot "${snap}" of volume "${name}"`;
    await this.#locks.run(name, async () => {
      const record = await this.#records.must(name, `create snapshot "${snap}" of volume`);
      const state = await this.#states.forWrite(name, record);
      if (state.Snapshots[snap]) {
        throw new this.#api.errors.AlreadyExistsError(`${what}: snapshot already exists`);
      }
      const src = await this.#dirs.mustDir(name, `create snapshot "${snap}" of volume`);
      const parent = this.#layout.snapshotRoot(name);
      const final = join(parent, snap);
      const work = join(parent, `.tmp-${snap}-${this.#api.util.randomId()}`);
      await this.#api.util.ensureDir(parent);
      // A directory without a state entry is left from a crash: it was never a snapshot.
      await rm(final, { recursive: true, force: true });
      try {
        await this.#dirs.copyTree(src, work);
        await this.#api.exec("sync", [], { timeoutMs: LONG_COMMAND_TIMEOUT_MS });
        await rename(work, final);
      } catch (err) {
        await rm(work, { recursive: true, force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      const entry: SnapshotState = {
        Name: snap,
        CreatedTime: this.#api.util.now(),
        FilePath: final,
      };
      try {
        await this.#states.write(name, {
          ...state,
          Snapshots: { ...state.Snapshots, [snap]: entry },
        });
      } catch (err) {
        await rm(final, { recursive: true, force: true });
        throw this.#api.errors.wrapError(err, what);
      }
      this.#log.info(`Created snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
      });
    });
  }

  async deleteSnapshot(id: string, volumeID: string): Promise<void> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#api.util.validateName(volumeID, "volume");
    await this.#locks.run(name, async () => {
      const record = await this.#records.read(name);
      const state = record
        ? await this.#states.forWrite(name, record)
        : await this.#states.readFile(name);
      const entry = state?.Snapshots[snap];
      if (!state || !entry) {
        throw new this.#api.errors.NotFoundError(
          `Cannot delete snapshot "${snap}" of volume "${name}": snapshot does not exist`,
        );
      }
      await this.#locks.run(snapshotLock(name, snap), async () => {
        const rest = { ...state.Snapshots };
        delete rest[snap];
        await this.#states.write(name, { ...state, Snapshots: rest });
        await rm(entry.FilePath, { recursive: true, force: true });
      });
      this.#log.info(`Deleted snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
      });
    });
  }

  /** Removes every snapshot of a deleted volume, each once no backup is archiving it. */
  async removeAll(name: string, state: VolumeState): Promise<void> {
    for (const [snap, s] of Object.entries(state.Snapshots)) {
      // Waits for a backup that is archiving this snapshot.
      await this.#locks.run(
        snapshotLock(name, snap),
        () => rm(s.FilePath, { recursive: true, force: true }),
      );
    }
    await this.#states.removeSnapshotFiles(name, state);
  }

  #snapshotInfo(volume: string, s: SnapshotState): StringMap {
    return {
      SnapshotName: s.Name,
      SnapshotCreatedAt: s.CreatedTime,
      VolumeUUID: volume,
      FilePath: s.FilePath,
    };
  }

  /**
   * The record of volume `name` and its snapshot `snap`; a NotFoundError
   * (`Cannot <what> snapshot ...`) when either is missing.
   */
  async mustSnapshot(
    snap: string,
    name: string,
    what: string,
  ): Promise<{ record: VolumeRecord; snapshot: SnapshotState }> {
    const record = await this.#records.must(name, `${what} snapshot "${snap}" of volume`);
    const { state } = await this.#states.read(name, record);
    const snapshot = state.Snapshots[snap];
    if (!snapshot) {
      throw new this.#api.errors.NotFoundError(
        `Cannot ${what} snapshot "${snap}" of volume "${name}": snapshot does not exist`,
      );
    }
    return { record, snapshot };
  }

  async getSnapshotInfo(id: string, volumeID: string): Promise<StringMap> {
    const snap = this.#api.util.validateName(id, "snapshot");
    const name = this.#api.util.validateName(volumeID, "volume");
    const { snapshot } = await this.mustSnapshot(snap, name, "inspect");
    return this.#snapshotInfo(name, snapshot);
  }

  async listSnapshot(opts: StringMap): Promise<Record<string, StringMap>> {
    const volumeName = opts?.VolumeName;
    const volumes = await this.#records.select(volumeName, "list the snapshots of volume");
    const out: Record<string, StringMap> = {};
    for (const { name, record } of volumes) {
      let state: VolumeState;
      try {
        state = (await this.#states.read(name, record)).state;
      } catch (err) {
        if (volumeName) throw err;
        this.#log.warn(this.#api.errors.errorMessage(err), { volume: name });
        continue;
      }
      for (const s of Object.values(state.Snapshots)) out[s.Name] = this.#snapshotInfo(name, s);
    }
    return out;
  }
}
