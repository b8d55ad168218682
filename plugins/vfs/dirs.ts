/**
 * The vfs driver's work on volume directories: creating them, bind mounts, tree copies, and the
 * disk image of `--vm` (PrepareForVM) volumes.
 * @module
 */
import { chmod, mkdir, open, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Logger, PluginApi } from "../../mod.ts";
import type { VfsConfig } from "./config.ts";
import type { VfsLayout } from "./layout.ts";
import type { VolumeRecord } from "./options.ts";

/** Copying, archiving and extracting whole volumes may take long: no short command timeout. */
export const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** Volume directories on this host. */
export class VolumeDirs {
  #api: PluginApi;
  #cfg: VfsConfig;
  #layout: VfsLayout;
  #log: Logger;

  constructor(api: PluginApi, o: { cfg: VfsConfig; layout: VfsLayout; log: Logger }) {
    this.#api = api;
    this.#cfg = o.cfg;
    this.#layout = o.layout;
    this.#log = o.log;
  }

  /** Creates the volume directory; an existing one is reused. Resolves to true when created. */
  async makeVolumeDir(name: string): Promise<boolean> {
    const dir = this.#layout.volumeDir(name);
    try {
      await mkdir(dir, { mode: 0o755 });
    } catch (err) {
      if (this.#api.util.errno(err) !== "EEXIST") {
        throw this.#api.errors.wrapError(err, `Cannot create volume "${name}"`);
      }
      if (!(await stat(dir)).isDirectory()) {
        throw new this.#api.errors.ConflictError(
          `Cannot create volume "${name}": "${dir}" exists and is not a directory`,
        );
      }
      this.#log.info(`Reusing the existing directory "${dir}" for volume "${name}"`, {
        volume: name,
      });
      return false;
    }
    await chmod(dir, 0o755);
    return true;
  }

  /** The volume directory; a NotFoundError (`Cannot <what> "<name>": ...`) when it is missing. */
  async mustDir(name: string, what: string): Promise<string> {
    const dir = this.#layout.volumeDir(name);
    let ok = false;
    try {
      ok = (await stat(dir)).isDirectory();
    } catch {
      ok = false;
    }
    if (!ok) {
      throw new this.#api.errors.NotFoundError(
        `Cannot ${what} "${name}": the volume directory "${dir}" does not exist`,
      );
    }
    return dir;
  }

  /** Bind-mounts the volume directory at `mountPoint` (created if missing). */
  async bind(name: string, mountPoint: string): Promise<void> {
    await this.#api.util.ensureDir(mountPoint);
    await this.#api.exec("mount", ["--bind", this.#layout.volumeDir(name), mountPoint]);
  }

  /** Unmounts a bind mount; one not mounted is fine, a busy one is a ConflictError. */
  async unbind(mountPoint: string, volume: string): Promise<void> {
    if (!(await this.#api.util.mounts.isMountPoint(mountPoint))) return;
    await this.#api.util.filesystems.umount(mountPoint, { volume });
  }

  /** Creates `<dir>/disk.img`, sparse, of exactly the volume size, unless it exists. */
  async prepareDiskImage(name: string, dir: string, record: VolumeRecord): Promise<void> {
    const size = record.Size || this.#cfg.DefaultVolumeSize;
    const img = join(dir, "disk.img");
    try {
      const st = await stat(img);
      if (st.size !== size) {
        this.#log.warn(
          `The disk image "${img}" of volume "${name}" is ${st.size} bytes, not ${size}`,
          { volume: name },
        );
      }
      return;
    } catch (err) {
      if (this.#api.util.errno(err) !== "ENOENT") throw err;
    }
    const fh = await open(img, "wx", 0o644);
    try {
      await fh.truncate(size);
    } finally {
      await fh.close();
    }
  }

  /** `cp -a` of a live directory; retried once when a file vanished during the copy. */
  async copyTree(src: string, dest: string): Promise<void> {
    for (let attempt = 1;; attempt++) {
      await rm(dest, { recursive: true, force: true });
      await mkdir(dest, { mode: 0o755 });
      try {
        await this.#api.exec("cp", ["-a", "--reflink=auto", `${src}/.`, dest], {
          timeoutMs: LONG_COMMAND_TIMEOUT_MS,
        });
        return;
      } catch (err) {
        if (attempt > 1 || !/No such file or directory/.test(this.#api.errors.errorMessage(err))) {
          throw err;
        }
        this.#log.warn(`Copying "${src}" again: a file vanished during the copy`, {
          error: this.#api.errors.errorMessage(err),
        });
      }
    }
  }
}
