/**
 * The driver's saved configuration, `<root>/devicemapper.cfg`, with Convoy's fields, loaded with
 * the host's `api.util.loadDriverConfig`. The first start validates `--driver-opts`, the caller
 * creates the pool, and the file is saved; later starts load the file, and an option that
 * disagrees with it is ignored with a warning naming the option.
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

/** The saved configuration (Convoy's fields, in Convoy's order, plus Kept and PendingDevIDs). */
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
  /**
   * The journal of thin ids in flight: an id is added in the same write that hands it out
   * (LastDevID) or before a delete removes the record that references it, and cleared once a
   * record references it or the pool no longer has it. At start-up, the ids no record (nor Kept)
   * references are deleted from the pool; no other id is ever deleted.
   */
  PendingDevIDs: number[];
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

/** What `loadOrCreateConfig` found. */
export interface LoadedDmConfig {
  cfg: DmConfig;
  /** True on the first start: `create` made the pool and the configuration was saved. */
  created: boolean;
  /** True when the loaded configuration was upgraded (moved root, Convoy's defaults): save it. */
  dirty: boolean;
}

/**
 * Loads `<root>/devicemapper.cfg`, or, on the first start, validates `--driver-opts` (see
 * parseFirstStart), has `create` make the pool and saves its result. Later starts leave the
 * saving of an upgraded configuration to the caller (`dirty`), once the pool is up.
 */
export async function loadOrCreateConfig(
  api: PluginApi,
  schemas: Schemas,
  opts: {
    root: string;
    config: Record<string, string>;
    log: Logger;
    create(options: FirstStartOptions): Promise<DmConfig>;
  },
): Promise<LoadedDmConfig> {
  const { root, config, log } = opts;
  const file = join(root, CONFIG_FILE);
  /** True until the file has been read: a failure meanwhile is reported as a bad file. */
  let reading = true;
  let created = false;
  let dirty = false;
  const sizeOf = (v: string): number | undefined => {
    try {
      return api.util.parseSize(v);
    } catch {
      return undefined;
    }
  };
  try {
    const cfg = await api.util.loadDriverConfig({
      driver: "devicemapper",
      file,
      options: config,
      // The options are validated by parseFirstStart, for Convoy's message on missing devices.
      schema: api.deps.z.custom<Record<string, string>>(),
      savedSchema: schemas.savedConfig,
      create: async (raw) => {
        reading = false;
        created = true;
        return await opts.create(parseFirstStart(api, schemas, raw));
      },
      load: (d) => {
        reading = false;
        const problems: string[] = [];
        const bs = blockSizeProblem(d.ThinpoolBlockSize);
        if (bs) problems.push(`"ThinpoolBlockSize": ${bs}`);
        if (d.Filesystem && !(FILESYSTEMS as readonly string[]).includes(d.Filesystem)) {
          problems.push(
            `"Filesystem": must be one of ${FILESYSTEMS.join(", ")}, got "${d.Filesystem}"`,
          );
        }
        const pool = d.ThinpoolDevice.slice(d.ThinpoolDevice.lastIndexOf("/") + 1);
        if (!POOL_NAME_PATTERN.test(pool)) {
          problems.push(`"ThinpoolDevice": "${d.ThinpoolDevice}" is not a pool device name`);
        }
        if (problems.length) {
          throw new api.errors.InvalidArgumentError(
            `Cannot load devicemapper configuration "${file}": ${problems.join("; ")}`,
          );
        }
        dirty = d.Root !== root;
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
          PendingDevIDs: d.PendingDevIDs,
        };
        // Saved by the caller after the pool has started (`dirty`).
        return { config: cfg, save: false };
      },
      current: (cfg) => ({
        [OPT_DATA_DEVICE]: {
          uses: `"${cfg.DataDevice}"`,
          same: (v) => v.trim() === cfg.DataDevice,
        },
        [OPT_METADATA_DEVICE]: {
          uses: `"${cfg.MetadataDevice}"`,
          same: (v) => v.trim() === cfg.MetadataDevice,
        },
        [OPT_THINPOOL_NAME]: {
          uses: `"${poolName(cfg)}"`,
          same: (v) => v.trim() === poolName(cfg),
        },
        [OPT_THINPOOL_BLOCK_SIZE]: {
          uses: `${cfg.ThinpoolBlockSize} sectors`,
          same: (v) => sizeOf(v) === cfg.ThinpoolBlockSize,
        },
        [OPT_DEFAULT_VOLUME_SIZE]: {
          uses: `${cfg.DefaultVolumeSize} bytes`,
          same: (v) => sizeOf(v) === cfg.DefaultVolumeSize,
        },
        [OPT_FS]: {
          uses: `"${cfg.Filesystem}"`,
          same: (v) => v.trim().toLowerCase() === cfg.Filesystem,
        },
      }),
      logFields: (cfg) => ({
        pool: poolName(cfg),
        dataDevice: cfg.DataDevice,
        metadataDevice: cfg.MetadataDevice,
        size: cfg.ThinpoolSize,
        blockSize: cfg.ThinpoolBlockSize * 512,
        defaultVolumeSize: cfg.DefaultVolumeSize,
        filesystem: cfg.Filesystem,
      }),
      log,
    });
    return { cfg, created, dirty };
  } catch (err) {
    // An unreadable file (not JSON, no access); a file that does not validate says so itself.
    if (reading && !(err instanceof api.errors.InvalidArgumentError)) {
      throw new api.errors.InvalidArgumentError(
        `Cannot load devicemapper configuration "${file}": ${(err as Error).message}`,
        { cause: err },
      );
    }
    throw err;
  }
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
    PendingDevIDs: cfg.PendingDevIDs,
  });
}

/**
 * The saved configuration of a running driver: read anywhere through `cfg`, changed only by
 * `update`, one change at a time, each saved before it is seen.
 */
export class SavedConfig {
  #api: PluginApi;
  #cfg: DmConfig;
  #lock;

  constructor(api: PluginApi, cfg: DmConfig) {
    this.#api = api;
    this.#cfg = cfg;
    this.#lock = api.util.createLock();
  }

  get cfg(): Readonly<DmConfig> {
    return this.#cfg;
  }

  /** The file it is saved in. */
  get file(): string {
    return join(this.#cfg.Root, CONFIG_FILE);
  }

  /**
   * Runs `fn` on a copy and saves it. A failed save throws and drops the change, unless
   * `keepOnFailure`: then the change stays in memory (the next save writes it).
   */
  async update<T>(fn: (cfg: DmConfig) => T, opts: { keepOnFailure?: boolean } = {}): Promise<T> {
    return await this.#lock.run("config", async () => {
      const next = structuredClone(this.#cfg);
      const out = fn(next);
      try {
        await saveConfig(this.#api, next);
      } catch (err) {
        if (!opts.keepOnFailure) throw err;
        this.#cfg = next;
        throw err;
      }
      this.#cfg = next;
      return out;
    });
  }
}
