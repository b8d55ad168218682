/**
 * The driver's saved configuration, `<root>/vfs.cfg` (Convoy's file and fields). The first
 * start validates `--driver-opts` and saves the result; later starts load the file, and an
 * option that disagrees with it is ignored with a warning naming the option.
 * @module
 */
import { join, resolve } from "node:path";
import type { Logger, PluginApi } from "../../mod.ts";
import {
  DEFAULT_VOLUME_SIZE,
  OPT_VFS_DEFAULT_VOLUME_SIZE,
  OPT_VFS_PATH,
  type Schemas,
} from "./options.ts";

/** The file name of the saved configuration inside the driver root. */
export const CONFIG_FILE = "vfs.cfg";

/** The saved configuration, with Convoy's field names. */
export interface VfsConfig {
  /** The driver root, `<daemon root>/vfs`. */
  Root: string;
  /** `vfs.path`: where the volume directories live (possibly on NFS). */
  Path: string;
  /** `<Path>/config`: the shared volume records. */
  ConfigPath: string;
  /** Bytes; the size of `--vm` volumes created without a size. */
  DefaultVolumeSize: number;
}

/** Loads `<root>/vfs.cfg`, or builds it from `config` and saves it on the first start. */
export async function loadOrCreateConfig(
  api: PluginApi,
  schemas: Schemas,
  opts: { root: string; config: Record<string, string>; log: Logger },
): Promise<VfsConfig> {
  const { root, config, log } = opts;
  const configAt = (path: string, defaultVolumeSize: number): VfsConfig => ({
    Root: root,
    Path: path,
    ConfigPath: join(path, "config"),
    DefaultVolumeSize: defaultVolumeSize,
  });
  return await api.util.loadDriverConfig({
    driver: "vfs",
    file: join(root, CONFIG_FILE),
    options: config,
    schema: schemas.driverConfig,
    savedSchema: schemas.savedConfig,
    create: (o) =>
      configAt(resolve(o[OPT_VFS_PATH] ?? join(root, "volumes")), o[OPT_VFS_DEFAULT_VOLUME_SIZE]),
    load: (saved) => {
      let defaultSize = savedSize(api, saved.DefaultVolumeSize);
      // Convoy's upgrade rule: a stored 0 becomes the default.
      const upgraded = defaultSize <= 0;
      if (upgraded) defaultSize = api.util.parseSize(DEFAULT_VOLUME_SIZE);
      const cfg = configAt(resolve(saved.Path), defaultSize);
      const moved = saved.Root !== root || saved.ConfigPath !== cfg.ConfigPath;
      return { config: cfg, save: upgraded || moved };
    },
    current: (cfg) => ({
      [OPT_VFS_PATH]: { uses: `"${cfg.Path}"`, same: (v) => resolve(v) === cfg.Path },
      [OPT_VFS_DEFAULT_VOLUME_SIZE]: {
        uses: `${cfg.DefaultVolumeSize} bytes`,
        same: (v) => {
          try {
            return api.util.parseSize(v) === cfg.DefaultVolumeSize;
          } catch {
            return false;
          }
        },
      },
    }),
    logFields: (cfg) => ({ path: cfg.Path, defaultVolumeSize: cfg.DefaultVolumeSize }),
    log,
  });
}

function savedSize(api: PluginApi, value: number | string | undefined): number {
  if (typeof value === "number") return Number.isSafeInteger(value) ? value : 0;
  if (!value) return 0;
  try {
    return api.util.parseSize(value);
  } catch {
    return 0;
  }
}
