/**
 * The devicemapper driver's zod schemas: its `--driver-opts` keys and the JSON files it keeps
 * (devicemapper.cfg and the per-volume records, in Convoy's formats); request options are the
 * host's `api.util.schemas`. Schemas are built from the host's zod (`api.deps.z`), so the
 * plugin needs no node_modules.
 * @module
 */
import type { PluginApi } from "../../mod.ts";
import { MAX_DEV_ID } from "./dm.ts";

/** Driver option: the block device holding the pool's data (required). */
export const OPT_DATA_DEVICE = "dm.datadev";
/** Driver option: the block device holding the pool's metadata (required). */
export const OPT_METADATA_DEVICE = "dm.metadatadev";
/** Driver option: the pool's device-mapper name (default `convoy-pool`). */
export const OPT_THINPOOL_NAME = "dm.thinpoolname";
/** Driver option: the pool's block size in 512-byte sectors (default 4096 = 2 MiB). */
export const OPT_THINPOOL_BLOCK_SIZE = "dm.thinpoolblocksize";
/** Driver option: the size of volumes created without `--size` (default 100G). */
export const OPT_DEFAULT_VOLUME_SIZE = "dm.defaultvolumesize";
/** Driver option: the filesystem made on new volumes, `ext4` (default) or `xfs`. */
export const OPT_FS = "dm.fs";

/** Every option key of this driver. */
export const DRIVER_OPTIONS = [
  OPT_DATA_DEVICE,
  OPT_METADATA_DEVICE,
  OPT_THINPOOL_NAME,
  OPT_THINPOOL_BLOCK_SIZE,
  OPT_DEFAULT_VOLUME_SIZE,
  OPT_FS,
] as const;

/** The default of `dm.thinpoolname`. */
export const DEFAULT_THINPOOL_NAME = "convoy-pool";
/** The default of `dm.thinpoolblocksize`, in sectors (2 MiB). */
export const DEFAULT_BLOCK_SECTORS = 4096;
/** The default of `dm.defaultvolumesize`. */
export const DEFAULT_VOLUME_SIZE = "100G";
/** The default of `dm.fs`. */
export const DEFAULT_FILESYSTEM = "ext4";
/** The filesystems the driver makes. */
export const FILESYSTEMS = ["ext4", "xfs"] as const;
/** dm-thin's limits on the pool block size, in sectors (64 KiB .. 1 GiB, multiples of 64 KiB). */
export const MIN_BLOCK_SECTORS = 128;
export const MAX_BLOCK_SECTORS = 2097152;
/** Pool names: what dmsetup accepts without mangling, short enough to prefix volume names. */
export const POOL_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.+-]{0,63}$/;

/** The message of a block size outside dm-thin's rules (Convoy's rule, with the unit named). */
export function blockSizeProblem(sectors: number): string | undefined {
  if (
    !Number.isSafeInteger(sectors) || sectors < MIN_BLOCK_SECTORS ||
    sectors > MAX_BLOCK_SECTORS || sectors % MIN_BLOCK_SECTORS !== 0
  ) {
    return `block size must be between ${MIN_BLOCK_SECTORS} and ${MAX_BLOCK_SECTORS} sectors ` +
      `(64 KiB to 1 GiB) and a multiple of ${MIN_BLOCK_SECTORS}, got ${sectors}`;
  }
  return undefined;
}

/** Builds the schemas with the host's zod and option schemas. */
export function createSchemas(api: PluginApi) {
  const z = api.deps.z;
  const blankToUndefined = (v: unknown) => (v === "" ? undefined : v);

  const { size } = api.util.schemas;

  const filesystem = z.preprocess(
    (v) => (typeof v === "string" ? blankToUndefined(v.trim().toLowerCase()) : v),
    z.enum(FILESYSTEMS).default(DEFAULT_FILESYSTEM),
  );

  const device = z.string().trim().min(1, "must not be empty").refine(
    (p) => p.startsWith("/"),
    "must be an absolute path of a block device",
  );

  /** `--driver-opts` on the first start; other drivers' keys pass through. */
  const driverConfig = z.looseObject({
    [OPT_DATA_DEVICE]: device,
    [OPT_METADATA_DEVICE]: device,
    [OPT_THINPOOL_NAME]: z.preprocess(
      blankToUndefined,
      z.string().trim().regex(
        POOL_NAME_PATTERN,
        'must be 1 to 64 characters of a-z, A-Z, 0-9, "_", ".", "+" or "-", ' +
          "starting with a letter or digit",
      ).default(DEFAULT_THINPOOL_NAME),
    ),
    [OPT_THINPOOL_BLOCK_SIZE]: size.prefault(String(DEFAULT_BLOCK_SECTORS)).superRefine(
      (n, ctx) => {
        const problem = blockSizeProblem(n);
        if (problem) ctx.addIssue({ code: "custom", message: problem });
      },
    ),
    [OPT_DEFAULT_VOLUME_SIZE]: size.prefault(DEFAULT_VOLUME_SIZE).refine(
      (n) => n > 0,
      "must be greater than 0",
    ),
    [OPT_FS]: filesystem,
  });

  /** One snapshot of a volume record (Convoy's fields). */
  const snapshotRecord = z.looseObject({
    Name: z.string(),
    CreatedTime: z.string().default(""),
    DevID: z.number().int().nonnegative(),
    Activated: z.boolean().default(false),
  });

  /**
   * `<root>/devicemapper_volume_<name>.json`: Convoy's fields, plus UUID (the volume's identity
   * in backup stores) and DeviceName (its device-mapper name; Convoy's records have none and
   * keep Convoy's name, the volume name).
   */
  const volumeRecord = z.looseObject({
    Name: z.string(),
    DevID: z.number().int().nonnegative(),
    Size: z.number().int().positive(),
    Base: z.string().default(""),
    MountPoint: z.string().default(""),
    CreatedTime: z.string().default(""),
    Snapshots: z.record(z.string(), snapshotRecord).nullable().default({}).transform((s) =>
      s ?? {}
    ),
    Filesystem: z.string().default(""),
    UUID: z.string().optional(),
    DeviceName: z.string().optional(),
  });

  /** `<root>/devicemapper.cfg` (Convoy's fields, plus Kept). */
  const savedConfig = z.looseObject({
    Root: z.string().optional(),
    DataDevice: z.string().min(1),
    MetadataDevice: z.string().min(1),
    ThinpoolDevice: z.string().min(1),
    ThinpoolSize: z.number().int().positive(),
    ThinpoolBlockSize: z.number().int().positive(),
    DefaultVolumeSize: z.number().int().nonnegative(),
    LastDevID: z.number().int().nonnegative().default(0),
    Filesystem: z.string().default(""),
    Kept: z.record(z.string(), volumeRecord).nullable().default({}).transform((k) => k ?? {}),
    // Missing in Convoy's files and in ours before the journal existed: nothing pending.
    PendingDevIDs: z.array(z.number().int().nonnegative().max(MAX_DEV_ID)).default([]),
  });

  return {
    driverConfig,
    savedConfig,
    volumeRecord,
    snapshotRecord,
  };
}

/** The schemas of one driver instance. */
export type Schemas = ReturnType<typeof createSchemas>;
/** A parsed volume record. */
export type VolumeRecord = ReturnType<Schemas["volumeRecord"]["parse"]>;
/** One snapshot of a volume record. */
export type SnapshotRecord = VolumeRecord["Snapshots"][string];
