import { join } from "node:path";
import { z } from "zod";
import { atomicWriteJSON, readJSONFile } from "../util/fs.ts";

/** A record's life cycle: written "creating"/"deleting" before the driver call, so a crash mid-call is reconciled at start. */
export type RecordStatus = "creating" | "ready" | "deleting";

const SnapshotRecord = z.object({
  Name: z.string(),
  CreatedTime: z.string().default(""),
  Status: z.enum(["creating", "ready", "deleting"]).default("ready"),
});
export type SnapshotRecord = z.infer<typeof SnapshotRecord>;

const VolumeRecord = z.object({
  Name: z.string(),
  Driver: z.string(),
  CreatedTime: z.string().default(""),
  Status: z.enum(["creating", "ready", "deleting"]).default("ready"),
  /** Docker mount IDs holding the volume mounted (reference counting). */
  MountIDs: z.array(z.string()).default([]),
  MountPoint: z.string().default(""),
  Snapshots: z.record(z.string(), SnapshotRecord).default({}),
});
export type VolumeRecord = z.infer<typeof VolumeRecord>;

const StateFile = z.object({
  Version: z.literal(1),
  Volumes: z.record(z.string(), VolumeRecord),
});

/**
 * The daemon's persisted index: volume → driver, snapshots, mount state. Mutations change the
 * in-memory copy synchronously; `save()` resolves once a write containing them is on disk.
 * Writes are atomic (temp, fsync, rename) and coalesced.
 */
export class State {
  readonly path: string;
  volumes = new Map<string, VolumeRecord>();
  #writing: Promise<void> | undefined;
  #dirty = false;

  constructor(root: string) {
    this.path = join(root, "state.json");
  }

  /** Loads state.json; a missing file is an empty state. */
  async load(): Promise<void> {
    const raw = await readJSONFile(this.path);
    if (raw === undefined) return;
    const parsed = StateFile.parse(raw);
    this.volumes = new Map(Object.entries(parsed.Volumes));
  }

  /** The volume that owns snapshot `name`, if any. */
  volumeOfSnapshot(name: string): VolumeRecord | undefined {
    for (const v of this.volumes.values()) if (v.Snapshots[name]) return v;
    return undefined;
  }

  /** True when a volume or a snapshot is called `name` (they share one namespace). */
  nameTaken(name: string): boolean {
    return this.volumes.has(name) || this.volumeOfSnapshot(name) !== undefined;
  }

  newVolume(fields: { Name: string; Driver: string; Status: RecordStatus }): VolumeRecord {
    return VolumeRecord.parse(fields);
  }

  newSnapshot(fields: { Name: string; Status: RecordStatus }): SnapshotRecord {
    return SnapshotRecord.parse(fields);
  }

  /** Persists the current in-memory state; concurrent callers share writes. */
  async save(): Promise<void> {
    this.#dirty = true;
    while (this.#dirty) {
      if (this.#writing) {
        await this.#writing.catch(() => {});
        continue;
      }
      this.#dirty = false;
      const snapshot = { Version: 1, Volumes: Object.fromEntries(this.volumes) };
      this.#writing = atomicWriteJSON(this.path, snapshot).finally(() => {
        this.#writing = undefined;
      });
      await this.#writing;
      return;
    }
  }
}
