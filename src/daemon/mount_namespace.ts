/**
 * `convoy daemon --mnt-ns PATH`: volumes are mounted in the mount namespace at PATH (e.g.
 * `/host/proc/1/ns/mnt`) rather than the daemon's own, for a daemon in a container. This module is
 * the one place that applies it; drivers see only its results through the plugin api:
 *
 * - `api.exec` runs the commands in NAMESPACED_COMMANDS as `nsenter --mount=PATH <cmd> ...`;
 *   every other command (mkfs, losetup, tar, gzip, cp, ...) runs in the daemon's namespace.
 * - `api.util.mounts` reads that namespace's mount table (mountInfoSource()).
 *
 * The daemon's own file calls (images, records, mkdir/rmdir of mount points) stay in its
 * namespace, so those paths must be the same in both (bind-mount /var/lib/convoy, and the
 * parents of `--mountpoint` targets, at the same path).
 * @module
 */
import { stat } from "node:fs/promises";
import { basename, posix, resolve } from "node:path";
import { errorMessage, InvalidArgumentError } from "../api/errors.ts";
import type { Exec } from "../runtime/exec.ts";
import { MOUNTINFO, type MountInfoSource, readMounts } from "../util/mountinfo.ts";

/**
 * Commands that act on mount points, run inside the namespace: Convoy's list (mount, umount,
 * mkdir, stat, truncate, mknod, rm) plus fsfreeze, which must reach the mounted filesystem.
 */
export const NAMESPACED_COMMANDS: ReadonlySet<string> = new Set([
  "mount",
  "umount",
  "mkdir",
  "stat",
  "truncate",
  "mknod",
  "rm",
  "fsfreeze",
]);

/**
 * The mountinfo file of the namespace at `nsPath` when the path has the form
 * `<prefix>/proc/<pid>/ns/mnt` (`<prefix>/proc/<pid>/mountinfo`); undefined for any other path.
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * assert.equal(mountInfoPathOf("/host/proc/1/ns/mnt"), "/host/proc/1/mountinfo");
 * assert.equal(mountInfoPathOf("/run/netns/x"), undefined);
 * ```
 */
export function mountInfoPathOf(nsPath: string): string | undefined {
  if (!nsPath) return undefined;
  const m = /^(.*\/proc\/(?:\d+|self))\/ns\/mnt$/.exec(posix.normalize(nsPath));
  return m ? `${m[1]}/mountinfo` : undefined;
}

/** `exec`, with the commands of NAMESPACED_COMMANDS (by base name) run in the namespace at `nsPath`. */
export function nsenterExec(exec: Exec, nsPath: string): Exec {
  return (cmd, args, opts = {}) => {
    if (!NAMESPACED_COMMANDS.has(basename(cmd))) return exec(cmd, args, opts);
    // Entering a mount namespace resets the working directory to its root: --wd sets it there.
    const { cwd, ...rest } = opts;
    const wd = cwd === undefined ? [] : [`--wd=${resolve(cwd)}`];
    return exec("nsenter", [`--mount=${nsPath}`, ...wd, cmd, ...args], rest);
  };
}

/**
 * The mount table of the namespace at `nsPath`: its mountinfo file (mountInfoPathOf), or else
 * the output of `nsenter --mount=PATH cat /proc/self/mountinfo`.
 */
export function mountInfoSource(nsPath: string, exec: Exec): MountInfoSource {
  const file = mountInfoPathOf(nsPath);
  if (file) return file;
  return async () =>
    (await exec("nsenter", [`--mount=${nsPath}`, "cat", "/proc/self/mountinfo"])).stdout;
}

/** What the plugin api is built from: the exec and the mount table of the volumes' namespace. */
export interface MountNamespace {
  /** `--mnt-ns`, or "" for the daemon's own namespace. */
  path: string;
  exec: Exec;
  mountInfo: MountInfoSource;
}

/** The exec and mount table for `nsPath`; for "" they are `exec` unchanged and this process's table. */
export function mountNamespace(nsPath: string, exec: Exec): MountNamespace {
  if (!nsPath) return { path: "", exec, mountInfo: MOUNTINFO };
  return {
    path: nsPath,
    exec: nsenterExec(exec, nsPath),
    mountInfo: mountInfoSource(nsPath, exec),
  };
}

/**
 * Convoy's start-up check of `--mnt-ns`: the path exists, `nsenter -V` runs, and
 * `nsenter --mount=PATH mount` works; then the namespace's mount table must be readable.
 * Throws InvalidArgumentError naming the path.
 */
export async function checkMountNamespace(ns: MountNamespace, exec: Exec): Promise<void> {
  if (!ns.path) return;
  const what = `Cannot start daemon: mount namespace "${ns.path}"`;
  try {
    await stat(ns.path);
  } catch (err) {
    const missing = (err as { code?: string }).code === "ENOENT";
    throw new InvalidArgumentError(
      missing ? `${what} does not exist` : `${what} is not accessible: ${errorMessage(err)}`,
      { cause: err },
    );
  }
  for (const args of [["-V"], [`--mount=${ns.path}`, "mount"]]) {
    try {
      await exec("nsenter", args);
    } catch (err) {
      throw new InvalidArgumentError(`${what} cannot be entered: ${errorMessage(err)}`, {
        cause: err,
      });
    }
  }
  try {
    await readMounts(ns.mountInfo);
  } catch (err) {
    const from = typeof ns.mountInfo === "string" ? ` "${ns.mountInfo}"` : "";
    throw new InvalidArgumentError(
      `${what}: cannot read its mount table${from}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}
