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
  const file = join(root, CONFIG_FILE);
  const raw = await api.util.readJSON(file);
  if (raw === undefined) {
    const parsed = api.util.parseOptions(schemas.driverConfig, config ?? {}, "vfs driver options");
    const path = resolve(parsed[OPT_VFS_PATH] ?? join(root, "volumes"));
    const cfg: VfsConfig = {
      Root: root,
      Path: path,
      ConfigPath: join(path, "config"),
      DefaultVolumeSize: parsed[OPT_VFS_DEFAULT_VOLUME_SIZE],
    };
    await api.util.writeJSON(file, cfg);
    log.info("Saved vfs configuration", { file, path, defaultVolumeSize: cfg.DefaultVolumeSize });
    return cfg;
  }

  const saved = schemas.savedConfig.safeParse(raw);
  if (!saved.success) {
    const problems = saved.error.issues.map((i) => `"${i.path.join(".")}": ${i.message}`);
    throw new api.errors.InvalidArgumentError(
      `Cannot load vfs configuration "${file}": ${problems.join("; ")}`,
    );
  }
  const path = resolve(saved.data.Path);
  let defaultSize = savedSize(api, saved.data.DefaultVolumeSize);
  let dirty = false;
  if (defaultSize <= 0) {
    // Convoy's upgrade rule: a stored 0 becomes the default.
    defaultSize = api.util.parseSize(DEFAULT_VOLUME_SIZE);
    dirty = true;
  }
  const cfg: VfsConfig = {
    Root: root,
    Path: path,
    ConfigPath: join(path, "config"),
    DefaultVolumeSize: defaultSize,
  };
  if (saved.data.Root !== root || saved.data.ConfigPath !== cfg.ConfigPath) dirty = true;
  warnIgnoredOptions(api, { config, cfg, file, log });
  if (dirty) await api.util.writeJSON(file, cfg);
  return cfg;
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

function warnIgnoredOptions(
  api: PluginApi,
  opts: { config: Record<string, string>; cfg: VfsConfig; file: string; log: Logger },
): void {
  const { config, cfg, file, log } = opts;
  const wantPath = config?.[OPT_VFS_PATH];
  if (wantPath !== undefined && resolve(wantPath) !== cfg.Path) {
    log.warn(
      `Ignoring --driver-opts ${OPT_VFS_PATH}=${JSON.stringify(wantPath)}: ` +
        `the saved configuration in "${file}" uses "${cfg.Path}"`,
      { option: OPT_VFS_PATH, file },
    );
  }
  const wantSize = config?.[OPT_VFS_DEFAULT_VOLUME_SIZE];
  if (wantSize !== undefined) {
    let bytes: number | undefined;
    try {
      bytes = api.util.parseSize(wantSize);
    } catch {
      bytes = undefined;
    }
    if (bytes !== cfg.DefaultVolumeSize) {
      log.warn(
        `Ignoring --driver-opts ${OPT_VFS_DEFAULT_VOLUME_SIZE}=${JSON.stringify(wantSize)}: ` +
          `the saved configuration in "${file}" uses ${cfg.DefaultVolumeSize} bytes`,
        { option: OPT_VFS_DEFAULT_VOLUME_SIZE, file },
      );
    }
  }
}
