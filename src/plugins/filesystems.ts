/**
 * `api.util.filesystems`: making, finding, mounting and unmounting the filesystem on a block
 * device or image, the same way for every block driver (loop, devicemapper).
 * @module
 */
import { ConflictError, errorMessage } from "../api/errors.ts";
import type { BlockFilesystems } from "../api/plugin.ts";
import type { Exec } from "../runtime/exec.ts";
import { ensureDir } from "../util/fs.ts";

/** The filesystem helpers over `exec`. */
export function createFilesystems(exec: Exec): BlockFilesystems {
  return {
    async mkfs(target, fs, opts = {}) {
      const quiet = fs === "xfs" ? ["-q", "-f"] : ["-q", "-F"];
      const noDiscard = opts.discard === false ? (fs === "xfs" ? ["-K"] : ["-E", "nodiscard"]) : [];
      await exec(`mkfs.${fs}`, [...quiet, ...noDiscard, target], { timeoutMs: opts.timeoutMs });
    },

    async detect(target) {
      try {
        const { stdout } = await exec("blkid", ["-p", "-o", "value", "-s", "TYPE", target]);
        return stdout.trim();
      } catch {
        return "";
      }
    },

    async mount(device, mountPoint, opts = {}) {
      await ensureDir(mountPoint);
      const args: string[] = [];
      if (opts.fs) args.push("-t", opts.fs);
      // Snapshots and restores of an xfs volume carry its UUID; xfs refuses a second mount of it.
      if (opts.fs === "xfs") args.push("-o", "nouuid");
      await exec("mount", [...args, device, mountPoint]);
    },

    async umount(mountPoint, opts) {
      try {
        await exec("umount", [mountPoint]);
      } catch (err) {
        const why = errorMessage(err);
        if (/not mounted/i.test(why)) return;
        if (/busy/i.test(why)) {
          throw new ConflictError(
            `Cannot unmount volume "${opts.volume}" from "${mountPoint}": the mount point is busy`,
            { cause: err },
          );
        }
        throw err;
      }
    },
  };
}
