/**
 * The driver's saved configuration, `<root>/loop.cfg`. The first start validates
 * `--driver-opts` and saves the result; later starts load the file, and an option that
 * disagrees with it is ignored with a warning naming the option.
 * @module
 */
import { mkdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Logger, PluginApi } from "../../mod.ts";
import {
  OPT_LOOP_DEFAULT_VOLUME_SIZE,
  OPT_LOOP_DIRECT_IO,
  OPT_LOOP_FS,
  OPT_LOOP_PATH,
  type Schemas,
} from "./options.ts";

/** The file name of the saved configuration inside the driver root. */
export const CONFIG_FILE = "loop.cfg";

/** The saved configuration. */
export interface LoopConfig {
  /** The driver root, `<daemon root>/loop`. */
  Root: string;
  /** `loop.path`: where the volume images live. */
  Path: string;
  /**
   * Where snapshot images live: `<root>/snapshots`, or `<loop.path>/snapshots` when loop.path
   * is another filesystem than the root (a reflink copy cannot cross filesystems).
   */
  SnapshotPath: string;
  /** Bytes (a multiple of 2 MiB); the size of volumes created without a size. */
  DefaultVolumeSize: number;
  /** `loop.fs`: the filesystem made on new volumes. */
  Filesystem: "ext4" | "xfs";
  /** `loop.directio`: attach with `--direct-io=on`. */
  DirectIO: boolean;
}

/** Volume sizes are rounded up to a multiple of this (the backup block size). */
export const SIZE_ALIGNMENT = 2 * 1024 * 1024;

/** `bytes` rounded up to a multiple of 2 MiB. */
export function roundSize(bytes: number): number {
  return Math.ceil(bytes / SIZE_ALIGNMENT) * SIZE_ALIGNMENT;
}

async function snapshotPathFor(root: string, path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: 0o755 });
  const [r, p] = await Promise.all([stat(root), stat(path)]);
  return r.dev === p.dev ? join(root, "snapshots") : join(path, "snapshots");
}

/** Loads `<root>/loop.cfg`, or builds it from `config` and saves it on the first start. */
export async function loadOrCreateConfig(
  api: PluginApi,
  schemas: Schemas,
  opts: { root: string; config: Record<string, string>; log: Logger },
): Promise<LoopConfig> {
  const { root, config, log } = opts;
  return await api.util.loadDriverConfig({
    driver: "loop",
    file: join(root, CONFIG_FILE),
    options: config,
    schema: schemas.driverConfig,
    savedSchema: schemas.savedConfig,
    create: async (o): Promise<LoopConfig> => {
      const path = resolve(o[OPT_LOOP_PATH] ?? join(root, "volumes"));
      return {
        Root: root,
        Path: path,
        SnapshotPath: await snapshotPathFor(root, path),
        DefaultVolumeSize: roundSize(o[OPT_LOOP_DEFAULT_VOLUME_SIZE]),
        Filesystem: o[OPT_LOOP_FS],
        DirectIO: o[OPT_LOOP_DIRECT_IO],
      };
    },
    load: async (saved) => {
      const path = resolve(saved.Path);
      const cfg: LoopConfig = {
        Root: root,
        Path: path,
        SnapshotPath: resolve(saved.SnapshotPath ?? await snapshotPathFor(root, path)),
        DefaultVolumeSize: roundSize(saved.DefaultVolumeSize),
        Filesystem: saved.Filesystem,
        DirectIO: saved.DirectIO,
      };
      return { config: cfg, save: saved.Root !== root || saved.SnapshotPath === undefined };
    },
    current: (cfg) => ({
      [OPT_LOOP_PATH]: { uses: `"${cfg.Path}"`, same: (v) => resolve(v) === cfg.Path },
      [OPT_LOOP_DEFAULT_VOLUME_SIZE]: {
        uses: `${cfg.DefaultVolumeSize} bytes`,
        same: (v) => {
          try {
            return roundSize(api.util.parseSize(v)) === cfg.DefaultVolumeSize;
          } catch {
            return false;
          }
        },
      },
      [OPT_LOOP_FS]: {
        uses: `"${cfg.Filesystem}"`,
        same: (v) => v.trim().toLowerCase() === cfg.Filesystem,
      },
      [OPT_LOOP_DIRECT_IO]: {
        uses: String(cfg.DirectIO),
        same: (v) => /^(1|true|yes|on|y|enabled)$/i.test(v.trim()) === cfg.DirectIO,
      },
    }),
    logFields: (cfg) => ({
      path: cfg.Path,
      snapshotPath: cfg.SnapshotPath,
      defaultVolumeSize: cfg.DefaultVolumeSize,
      filesystem: cfg.Filesystem,
      directIO: cfg.DirectIO,
    }),
    log,
  });
}
