/**
 * The driver's saved configuration, `<root>/devicemapper.cfg`, with Convoy's fields. The first
 * start validates `--driver-opts` (the caller then creates the pool and saves the file); later
 * starts load the file, and an option that disagrees with it is ignored with a warning naming
 * the option.
 * @module
 */
import { join } from "node:path";
import type { Logger, PluginApi } from "../../mod.ts";
import {
  blockSizeProblem,
  DEFAULT_VOLUME_SIZE,
  FILESYSTEMS,
  OPT_DATA_DEVICE,
  OPT_DEFAULT_VOLUME_SIZE,
  OPT_FS,
  OPT_METADATA_DEVICE,
  OPT_THINPOOL_BLOCK_SIZE,
  OPT_THINPOOL_NAME,
  POOL_NAME_PATTERN,
  type Schemas,
  type VolumeRecord,
} from "./options.ts";

/** The file name of the saved configuration inside the driver root. */
export const CONFIG_FILE = "devicemapper.cfg";
/** The directory of pool devices. */
export const MAPPER_DIR = "/dev/mapper";

/** The saved configuration (Convoy's fields, in Convoy's order, plus Kept). */
export interface DmConfig {
  /** The driver root, `<daemon root>/devicemapper`. */
  Root: string;
  DataDevice: string;
  MetadataDevice: string;
  /** `/dev/mapper/<dm.thinpoolname>`. */
  ThinpoolDevice: string;
  /** Bytes of the data device when the pool was made; the pool table's length. */
  ThinpoolSize: number;
  /** In 512-byte sectors. */
  ThinpoolBlockSize: number;
  /** Bytes. */
  DefaultVolumeSize: number;
  /** The last thin device id handed out (volumes and snapshots both take ids). */
  LastDevID: number;
  Filesystem: "ext4" | "xfs";
  /**
   * Volumes deleted with ReferenceOnly: their records, thin devices and snapshots are kept
   * (never destroyed); creating a volume of the same name adopts them again.
   */
  Kept: Record<string, VolumeRecord>;
}

/** The validated `--driver-opts` of a first start. */
export interface FirstStartOptions {
  dataDevice: string;
  metadataDevice: string;
  poolName: string;
  blockSectors: number;
  defaultVolumeSize: number;
  filesystem: "ext4" | "xfs";
}

/** The pool's device-mapper name. */
export function poolName(cfg: DmConfig): string {
  return cfg.ThinpoolDevice.slice(cfg.ThinpoolDevice.lastIndexOf("/") + 1);
}

/**
 * Validates `--driver-opts` for a first start. A missing data or metadata device gives Convoy's
 * `data device or metadata device unspecified`, with the keys to set.
 */
export function parseFirstStart(
  api: PluginApi,
  schemas: Schemas,
  config: Record<string, string>,
): FirstStartOptions {
  const raw = config ?? {};
  if (!raw[OPT_DATA_DEVICE]?.trim() || !raw[OPT_METADATA_DEVICE]?.trim()) {
    throw new api.errors.InvalidArgumentError(
      `Cannot start the devicemapper driver: data device or metadata device unspecified ` +
        `(set --driver-opts ${OPT_DATA_DEVICE}=<block device> and ` +
        `--driver-opts ${OPT_METADATA_DEVICE}=<block device>)`,
    );
  }
  const o = api.util.parseOptions(schemas.driverConfig, raw, "devicemapper driver options");
  if (o[OPT_DATA_DEVICE] === o[OPT_METADATA_DEVICE]) {
    throw new api.errors.InvalidArgumentError(
      `Invalid devicemapper driver options: ${OPT_DATA_DEVICE} and ${OPT_METADATA_DEVICE} ` +
        `are the same device "${o[OPT_DATA_DEVICE]}"`,
    );
  }
  return {
    dataDevice: o[OPT_DATA_DEVICE],
    metadataDevice: o[OPT_METADATA_DEVICE],
    poolName: o[OPT_THINPOOL_NAME],
    blockSectors: o[OPT_THINPOOL_BLOCK_SIZE],
    defaultVolumeSize: o[OPT_DEFAULT_VOLUME_SIZE],
    filesystem: o[OPT_FS],
  };
}

/** Loads `<root>/devicemapper.cfg`; undefined on the first start. */
export async function loadConfig(
  api: PluginApi,
  schemas: Schemas,
  opts: { root: string; config: Record<string, string>; log: Logger },
): Promise<{ cfg: DmConfig; dirty: boolean } | undefined> {
  const { root, config, log } = opts;
  const file = join(root, CONFIG_FILE);
  let raw: unknown;
  try {
    raw = await api.util.readJSON(file);
  } catch (err) {
    throw new api.errors.InvalidArgumentError(
      `Cannot load devicemapper configuration "${file}": ${(err as Error).message}`,
      { cause: err },
    );
  }
  if (raw === undefined) return undefined;
  const saved = schemas.savedConfig.safeParse(raw);
  const problems = saved.success
    ? []
    : saved.error.issues.map((i) => `"${i.path.join(".")}": ${i.message}`);
  if (saved.success) {
    const bs = blockSizeProblem(saved.data.ThinpoolBlockSize);
    if (bs) problems.push(`"ThinpoolBlockSize": ${bs}`);
    const fs = saved.data.Filesystem;
    if (fs && !(FILESYSTEMS as readonly string[]).includes(fs)) {
      problems.push(`"Filesystem": must be one of ${FILESYSTEMS.join(", ")}, got "${fs}"`);
    }
    const pool = saved.data.ThinpoolDevice.slice(saved.data.ThinpoolDevice.lastIndexOf("/") + 1);
    if (!POOL_NAME_PATTERN.test(pool)) {
      problems.push(`"ThinpoolDevice": "${saved.data.ThinpoolDevice}" is not a pool device name`);
    }
  }
  if (!saved.success || problems.length) {
    throw new api.errors.InvalidArgumentError(
      `Cannot load devicemapper configuration "${file}": ${problems.join("; ")}`,
    );
  }
  const d = saved.data;
  let dirty = d.Root !== root;
  // Convoy's upgrade rules: an empty Filesystem is ext4; a zero default size is the default.
  let filesystem = d.Filesystem as DmConfig["Filesystem"] | "";
  if (!filesystem) {
    filesystem = "ext4";
    dirty = true;
  }
  let defaultSize = d.DefaultVolumeSize;
  if (defaultSize <= 0) {
    defaultSize = api.util.parseSize(DEFAULT_VOLUME_SIZE);
    dirty = true;
  }
  const cfg: DmConfig = {
    Root: root,
    DataDevice: d.DataDevice,
    MetadataDevice: d.MetadataDevice,
    ThinpoolDevice: d.ThinpoolDevice,
    ThinpoolSize: d.ThinpoolSize,
    ThinpoolBlockSize: d.ThinpoolBlockSize,
    DefaultVolumeSize: defaultSize,
    LastDevID: d.LastDevID,
    Filesystem: filesystem,
    Kept: d.Kept,
  };
  warnIgnoredOptions(api, { config, cfg, file, log });
  return { cfg, dirty };
}

/** Saves the configuration (atomically). */
export async function saveConfig(api: PluginApi, cfg: DmConfig): Promise<void> {
  await api.util.writeJSON(join(cfg.Root, CONFIG_FILE), {
    Root: cfg.Root,
    DataDevice: cfg.DataDevice,
    MetadataDevice: cfg.MetadataDevice,
    ThinpoolDevice: cfg.ThinpoolDevice,
    ThinpoolSize: cfg.ThinpoolSize,
    ThinpoolBlockSize: cfg.ThinpoolBlockSize,
    DefaultVolumeSize: cfg.DefaultVolumeSize,
    LastDevID: cfg.LastDevID,
    Filesystem: cfg.Filesystem,
    Kept: cfg.Kept,
  });
}

function warnIgnoredOptions(
  api: PluginApi,
  opts: { config: Record<string, string>; cfg: DmConfig; file: string; log: Logger },
): void {
  const { config, cfg, file, log } = opts;
  if (!config) return;
  const ignore = (key: string, uses: string) =>
    log.warn(
      `Ignoring --driver-opts ${key}=${JSON.stringify(config[key])}: ` +
        `the saved configuration in "${file}" uses ${uses}`,
      { option: key, file },
    );
  const sizeOf = (v: string): number | undefined => {
    try {
      return api.util.parseSize(v);
    } catch {
      return undefined;
    }
  };
  const data = config[OPT_DATA_DEVICE];
  if (data !== undefined && data.trim() !== cfg.DataDevice) {
    ignore(OPT_DATA_DEVICE, `"${cfg.DataDevice}"`);
  }
  const meta = config[OPT_METADATA_DEVICE];
  if (meta !== undefined && meta.trim() !== cfg.MetadataDevice) {
    ignore(OPT_METADATA_DEVICE, `"${cfg.MetadataDevice}"`);
  }
  const pool = config[OPT_THINPOOL_NAME];
  if (pool !== undefined && pool.trim() !== poolName(cfg)) {
    ignore(OPT_THINPOOL_NAME, `"${poolName(cfg)}"`);
  }
  const bs = config[OPT_THINPOOL_BLOCK_SIZE];
  if (bs !== undefined && sizeOf(bs) !== cfg.ThinpoolBlockSize) {
    ignore(OPT_THINPOOL_BLOCK_SIZE, `${cfg.ThinpoolBlockSize} sectors`);
  }
  const size = config[OPT_DEFAULT_VOLUME_SIZE];
  if (size !== undefined && sizeOf(size) !== cfg.DefaultVolumeSize) {
    ignore(OPT_DEFAULT_VOLUME_SIZE, `${cfg.DefaultVolumeSize} bytes`);
  }
  const fs = config[OPT_FS];
  if (fs !== undefined && fs.trim().toLowerCase() !== cfg.Filesystem) {
    ignore(OPT_FS, `"${cfg.Filesystem}"`);
  }
}
