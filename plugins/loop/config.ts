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
  const file = join(root, CONFIG_FILE);
  const raw = await api.util.readJSON(file);
  if (raw === undefined) {
    const parsed = api.util.parseOptions(schemas.driverConfig, config ?? {}, "loop driver options");
    const path = resolve(parsed[OPT_LOOP_PATH] ?? join(root, "volumes"));
    const cfg: LoopConfig = {
      Root: root,
      Path: path,
      SnapshotPath: await snapshotPathFor(root, path),
      DefaultVolumeSize: roundSize(parsed[OPT_LOOP_DEFAULT_VOLUME_SIZE]),
      Filesystem: parsed[OPT_LOOP_FS],
      DirectIO: parsed[OPT_LOOP_DIRECT_IO],
    };
    await api.util.writeJSON(file, cfg);
    log.info("Saved loop configuration", {
      file,
      path,
      snapshotPath: cfg.SnapshotPath,
      defaultVolumeSize: cfg.DefaultVolumeSize,
      filesystem: cfg.Filesystem,
      directIO: cfg.DirectIO,
    });
    return cfg;
  }

  const saved = schemas.savedConfig.safeParse(raw);
  if (!saved.success) {
    const problems = saved.error.issues.map((i) => `"${i.path.join(".")}": ${i.message}`);
    throw new api.errors.InvalidArgumentError(
      `Cannot load loop configuration "${file}": ${problems.join("; ")}`,
    );
  }
  const path = resolve(saved.data.Path);
  const cfg: LoopConfig = {
    Root: root,
    Path: path,
    SnapshotPath: resolve(saved.data.SnapshotPath ?? await snapshotPathFor(root, path)),
    DefaultVolumeSize: roundSize(saved.data.DefaultVolumeSize),
    Filesystem: saved.data.Filesystem,
    DirectIO: saved.data.DirectIO,
  };
  warnIgnoredOptions(api, { config, cfg, file, log });
  if (saved.data.Root !== root || saved.data.SnapshotPath === undefined) {
    await api.util.writeJSON(file, cfg);
  }
  return cfg;
}

function warnIgnoredOptions(
  api: PluginApi,
  opts: { config: Record<string, string>; cfg: LoopConfig; file: string; log: Logger },
): void {
  const { config, cfg, file, log } = opts;
  const ignore = (key: string, uses: string) =>
    log.warn(
      `Ignoring --driver-opts ${key}=${JSON.stringify(config[key])}: ` +
        `the saved configuration in "${file}" uses ${uses}`,
      { option: key, file },
    );
  if (!config) return;
  const wantPath = config[OPT_LOOP_PATH];
  if (wantPath !== undefined && resolve(wantPath) !== cfg.Path) {
    ignore(OPT_LOOP_PATH, `"${cfg.Path}"`);
  }
  const wantSize = config[OPT_LOOP_DEFAULT_VOLUME_SIZE];
  if (wantSize !== undefined) {
    let bytes: number | undefined;
    try {
      bytes = api.util.parseSize(wantSize);
    } catch {
      bytes = undefined;
    }
    if (bytes === undefined || roundSize(bytes) !== cfg.DefaultVolumeSize) {
      ignore(OPT_LOOP_DEFAULT_VOLUME_SIZE, `${cfg.DefaultVolumeSize} bytes`);
    }
  }
  const wantFs = config[OPT_LOOP_FS];
  if (wantFs !== undefined && wantFs.trim().toLowerCase() !== cfg.Filesystem) {
    ignore(OPT_LOOP_FS, `"${cfg.Filesystem}"`);
  }
  const wantDirect = config[OPT_LOOP_DIRECT_IO];
  if (wantDirect !== undefined) {
    const on = /^(1|true|yes|on|y|enabled)$/i.test(wantDirect.trim());
    if (on !== cfg.DirectIO) ignore(OPT_LOOP_DIRECT_IO, String(cfg.DirectIO));
  }
}
