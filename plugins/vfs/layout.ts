/**
 * The vfs driver's paths: every file and folder of the on-disk layout (see driver.ts) is named
 * here.
 * @module
 */
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { VfsConfig } from "./config.ts";

/** A restore in progress in vfs.path: `.tmp-restore.<id>.<pid>@<host>` (pid, host captured). */
export const RESTORE_DIR = /^\.tmp-restore\.[0-9a-f]+\.([0-9]+)@(.+)$/;

/** The paths of one driver instance. */
export class VfsLayout {
  #cfg: VfsConfig;

  constructor(cfg: VfsConfig) {
    this.#cfg = cfg;
  }

  /** `<vfs.path>/<volume>`: the volume data. */
  volumeDir(name: string): string {
    return join(this.#cfg.Path, name);
  }
  /** `<vfs.path>/.tmp-restore.<id>.<pid>@<host>`: a restore in progress of this process. */
  restoreDir(id: string): string {
    return join(this.#cfg.Path, `.tmp-restore.${id}.${process.pid}@${hostname()}`);
  }
  /** `<root>/state`: the per-host state files. */
  get stateDir(): string {
    return join(this.#cfg.Root, "state");
  }
  stateFile(name: string): string {
    return join(this.stateDir, `${name}.json`);
  }
  /** `<root>/snapshots`: snapshot copies, and old Convoy snapshot tarballs. */
  get snapshotsDir(): string {
    return join(this.#cfg.Root, "snapshots");
  }
  /** `<root>/snapshots/<volume>`: the volume's snapshot copies. */
  snapshotRoot(volume: string): string {
    return join(this.snapshotsDir, volume);
  }
  legacySnapshotFile(volume: string, snapshot: string): string {
    return join(this.snapshotsDir, `${volume}_${snapshot}.tar.gz`);
  }
  /** `<root>/tmp`: backup and restore archives while in use. */
  get tmpDir(): string {
    return join(this.#cfg.Root, "tmp");
  }
}
