/**
 * The vfs driver's start-up: creates its folders, removes the leftovers of operations a killed
 * daemon left unfinished, and re-creates the bind mounts a reboot took away.
 * @module
 */
import { lstat, readdir, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { Logger, PluginApi, RecordStore } from "../../mod.ts";
import type { VfsConfig } from "./config.ts";
import type { VolumeDirs } from "./dirs.ts";
import { RESTORE_DIR, type VfsLayout } from "./layout.ts";
import type { VolumeRecord } from "./options.ts";
import type { VolumeStates } from "./state.ts";

/** What start-up works on: the parts of one driver instance. */
export interface StartUpParts {
  cfg: VfsConfig;
  layout: VfsLayout;
  dirs: VolumeDirs;
  states: VolumeStates;
  records: RecordStore<VolumeRecord>;
  log: Logger;
}

/** Creates the folders, removes leftovers of interrupted operations, restores bind mounts. */
export async function startUp(api: PluginApi, p: StartUpParts): Promise<void> {
  const { cfg, layout } = p;
  for (const dir of [cfg.Path, cfg.ConfigPath, layout.stateDir, layout.snapshotsDir]) {
    await api.util.ensureDir(dir);
  }
  await rm(layout.tmpDir, { recursive: true, force: true });
  await api.util.ensureDir(layout.tmpDir);
  await cleanLeftovers(api, p);
  await restoreMounts(api, p);
}

async function cleanLeftovers(api: PluginApi, p: StartUpParts): Promise<void> {
  const { cfg, layout, log } = p;
  // Unfinished snapshot copies (local; one daemon per root).
  for (const vol of await readdir(layout.snapshotsDir)) {
    const dir = join(layout.snapshotsDir, vol);
    if (!(await lstat(dir)).isDirectory()) continue;
    for (const entry of await readdir(dir)) {
      if (!entry.startsWith(".tmp-")) continue;
      log.info("Removing an unfinished snapshot copy", { path: join(dir, entry) });
      await rm(join(dir, entry), { recursive: true, force: true });
    }
  }
  // Unfinished restores of this host whose daemon is gone (vfs.path may be shared).
  const host = hostname();
  for (const entry of await readdir(cfg.Path)) {
    const m = RESTORE_DIR.exec(entry);
    if (!m || m[2] !== host || processAlive(api, Number(m[1]))) continue;
    log.info("Removing an unfinished restore", { path: join(cfg.Path, entry) });
    await rm(join(cfg.Path, entry), { recursive: true, force: true });
  }
}

/** Re-creates recorded bind mounts that are gone (after a reboot); failures are only logged. */
async function restoreMounts(api: PluginApi, p: StartUpParts): Promise<void> {
  const { layout, dirs, states, records, log } = p;
  for (const file of await readdir(layout.stateDir)) {
    if (file.startsWith(".") || !file.endsWith(".json")) continue;
    const name = file.slice(0, -".json".length);
    let mountPoint = "";
    try {
      const record = await records.read(name);
      if (!record) {
        log.warn(`Skipping the local state of volume "${name}": volume no longer exists`, {
          volume: name,
        });
        continue;
      }
      const { state, stale } = await states.read(name, record);
      if (stale) {
        await states.discardStale(name, stale);
        continue;
      }
      mountPoint = state.MountPoint;
      if (!mountPoint || mountPoint === layout.volumeDir(name)) continue;
      if (await api.util.mounts.isMountPoint(mountPoint)) continue;
      await dirs.bind(name, mountPoint);
      log.info(`Restored the mount of volume "${name}" at "${mountPoint}"`, {
        volume: name,
        mountpoint: mountPoint,
      });
    } catch (err) {
      log.error(
        `Cannot restore the mount of volume "${name}"${mountPoint ? ` at "${mountPoint}"` : ""}: ${
          api.errors.errorMessage(err)
        }`,
        { volume: name },
      );
    }
  }
}

/** True when process `pid` runs (this process counts as gone: its restores are leftovers). */
function processAlive(api: PluginApi, pid: number): boolean {
  if (pid === process.pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return api.util.errno(err) === "EPERM";
  }
}
