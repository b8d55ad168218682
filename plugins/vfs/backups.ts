/**
 * The vfs driver's backups: single-file backups (Convoy's layout), each a gzip'ed tar of one
 * snapshot, made and read by the host's backup API. A restore extracts one as a new volume
 * directory. Deleting, inspecting and listing backups is the host's alone.
 * @module
 */
import { chmod, copyFile, link, mkdir, readdir, rename, rm, rmdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { KeyedLock, Logger, OperationContext, PluginApi, StringMap } from "../../mod.ts";
import { LONG_COMMAND_TIMEOUT_MS } from "./dirs.ts";
import type { VfsLayout } from "./layout.ts";
import { snapshotLock, type VfsSnapshots } from "./snapshots.ts";

/** Backup operations, and the restore that creates a volume from a backup. */
export class VfsBackups {
  #api: PluginApi;
  #driver: string;
  #layout: VfsLayout;
  #snapshots: VfsSnapshots;
  #locks: KeyedLock;
  #log: Logger;

  /** `driver` is the driver's name, recorded in backups and required of restored ones. */
  constructor(
    api: PluginApi,
    o: {
      driver: string;
      layout: VfsLayout;
      snapshots: VfsSnapshots;
      locks: KeyedLock;
      log: Logger;
    },
  ) {
    this.#api = api;
    this.#driver = o.driver;
    this.#layout = o.layout;
    this.#snapshots = o.snapshots;
    this.#locks = o.locks;
    this.#log = o.log;
  }

  async createBackup(
    snapshotID: string,
    volumeID: string,
    destURL: string,
    opts: StringMap,
    ctx?: OperationContext,
  ): Promise<string> {
    const snap = this.#api.util.validateName(snapshotID, "snapshot");
    const name = this.#api.util.validateName(volumeID, "volume");
    const o = this.#api.util.parseOptions(
      this.#api.util.schemas.backup,
      opts ?? {},
      "backup options",
    );
    const what = `Cannot back up snapshot "${snap}" of volume "${name}"`;
    const { record, snapshot } = await this.#snapshots.mustSnapshot(snap, name, "back up");
    const archive = join(
      this.#layout.tmpDir,
      `backup-${name}-${snap}-${this.#api.util.randomId()}.tar.gz`,
    );
    try {
      await this.#locks.run(snapshotLock(name, snap), async () => {
        await this.#snapshots.mustSnapshot(snap, name, "back up");
        const src = snapshot.FilePath;
        try {
          if ((await stat(src)).isFile()) {
            // An old Convoy snapshot is already the archive.
            await link(src, archive).catch(() => copyFile(src, archive));
          } else {
            await this.#api.exec("tar", ["--numeric-owner", "-czf", archive, "-C", src, "."], {
              timeoutMs: LONG_COMMAND_TIMEOUT_MS,
              signal: ctx?.signal,
            });
          }
        } catch (err) {
          throw this.#api.errors.wrapError(err, what);
        }
      });
      const url = await this.#api.backup.createSingleFileBackup(archive, {
        volume: { name, driver: this.#driver, size: 0, createdTime: record.CreatedTime },
        snapshot: { name: snap, createdTime: snapshot.CreatedTime },
        destURL,
        endpoint: o.EndpointURL,
        signal: ctx?.signal,
        progress: ctx?.progress,
      });
      this.#log.info(`Backed up snapshot "${snap}" of volume "${name}"`, {
        volume: name,
        snapshot: snap,
        dest_url: destURL,
        backup_url: url,
      });
      return url;
    } finally {
      await rm(archive, { force: true });
    }
  }

  /** Deleting, inspecting and listing backups need nothing of this driver but its name. */
  get #queries() {
    return this.#api.backup.queries(this.#driver);
  }

  async deleteBackup(url: string, opts?: StringMap): Promise<void> {
    await this.#queries.deleteBackup(url, opts ?? {});
  }

  async getBackupInfo(url: string, opts?: StringMap): Promise<StringMap> {
    return await this.#queries.getBackupInfo(url, opts ?? {});
  }

  async listBackup(destURL: string, opts: StringMap): Promise<Record<string, StringMap>> {
    return await this.#queries.listBackup(destURL, opts ?? {});
  }

  /** Throws unless the volume path is free: missing, or an empty directory. */
  async #checkRestoreTarget(name: string, url: string): Promise<void> {
    const dir = this.#layout.volumeDir(name);
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (err) {
      if (this.#api.util.errno(err) === "ENOENT") return;
      throw new this.#api.errors.ConflictError(
        `Cannot restore backup "${url}" into volume "${name}": "${dir}" exists and is not a directory`,
      );
    }
    if (entries.length > 0) {
      throw new this.#api.errors.ConflictError(
        `Cannot restore backup "${url}" into volume "${name}": the directory "${dir}" exists and is not empty`,
      );
    }
  }

  /**
   * Restores a single-file backup as the volume directory: download, extract into a temporary
   * directory beside it, rename into place. On failure or cancel (`src.ctx.signal`) nothing is
   * left behind.
   */
  async restore(
    name: string,
    src: { url: string; endpoint?: string; ctx?: OperationContext },
  ): Promise<void> {
    const { url, endpoint } = src;
    const signal = src.ctx?.signal;
    const what = `Cannot restore backup "${url}" into volume "${name}"`;
    const backupVolume = await this.#api.backup.getBackupVolume(url, { endpoint });
    if (backupVolume.driver !== this.#driver) {
      throw new this.#api.errors.InvalidArgumentError(
        `Cannot restore backup "${url}" into a vfs volume: it was made by driver "${backupVolume.driver}"`,
      );
    }
    await this.#checkRestoreTarget(name, url);
    const id = this.#api.util.randomId();
    const archive = join(this.#layout.tmpDir, `restore-${name}-${id}.tar.gz`);
    const work = this.#layout.restoreDir(id);
    try {
      await this.#api.backup.restoreSingleFileBackup(url, archive, {
        endpoint,
        signal,
        progress: src.ctx?.progress,
      });
      await mkdir(work, { mode: 0o755 });
      await chmod(work, 0o755);
      try {
        // -x detects gzip itself; old Convoy archives are gzip'ed tars of `-C <dir> .`.
        await this.#api.exec("tar", ["--numeric-owner", "-xf", archive, "-C", work], {
          timeoutMs: LONG_COMMAND_TIMEOUT_MS,
          signal,
        });
      } catch (err) {
        throw this.#api.errors.wrapError(err, what);
      }
      if (signal?.aborted) throw new this.#api.errors.CancelledError(`${what}: cancelled`);
      await this.#checkRestoreTarget(name, url);
      await rmdir(this.#layout.volumeDir(name)).catch(() => {});
      await rename(work, this.#layout.volumeDir(name));
      this.#log.info(`Restored backup "${url}" into volume "${name}"`, { volume: name });
    } catch (err) {
      await rm(work, { recursive: true, force: true });
      throw this.#api.errors.wrapError(err, what);
    } finally {
      await rm(archive, { force: true });
    }
  }
}
