/**
 * The vfs driver's zod schemas: its `--driver-opts` keys, the per-call request options it reads,
 * and the JSON files it keeps (vfs.cfg, the shared volume records, the per-host state).
 * Schemas are built from the host's zod (`api.deps.z`), so the plugin needs no node_modules.
 * @module
 */
import type { PluginApi } from "../../mod.ts";

/** Driver option: the folder holding the volume directories (default `<root>/volumes`). */
export const OPT_VFS_PATH = "vfs.path";
/** Driver option: the size of `--vm` volumes created without `--size` (default 100G). */
export const OPT_VFS_DEFAULT_VOLUME_SIZE = "vfs.defaultvolumesize";
/** The default of `vfs.defaultvolumesize`. */
export const DEFAULT_VOLUME_SIZE = "100G";

/** Builds the schemas with the host's zod and option schemas. */
export function createSchemas(api: PluginApi) {
  const z = api.deps.z;

  const { flag, size } = api.util.schemas;

  /** `--driver-opts` on the first start; other drivers' keys pass through. */
  const driverConfig = z.looseObject({
    [OPT_VFS_PATH]: z.string().trim().min(1, "must not be empty").optional(),
    [OPT_VFS_DEFAULT_VOLUME_SIZE]: size.prefault(DEFAULT_VOLUME_SIZE).refine(
      (n) => n > 0,
      "must be greater than 0",
    ),
  });

  /** `<root>/vfs.cfg`, as Convoy writes it (DefaultVolumeSize in bytes; 0 means the default). */
  const savedConfig = z.looseObject({
    Root: z.string().optional(),
    Path: z.string().min(1),
    ConfigPath: z.string().optional(),
    DefaultVolumeSize: z.union([z.number(), z.string()]).optional(),
  });

  /** A snapshot entry of a Convoy volume record (legacy tarball snapshots). */
  const legacySnapshot = z.looseObject({
    Name: z.string().optional(),
    CreatedTime: z.string().optional(),
    FilePath: z.string().optional(),
  });

  /** `<vfs.path>/config/vfs_volume_<name>.json`, shared between hosts (Convoy's format). */
  const volumeRecord = z.looseObject({
    Name: z.string().optional(),
    Size: z.union([z.number(), z.string()]).optional().transform((v) => {
      const n = Number(v ?? 0);
      return Number.isSafeInteger(n) && n > 0 ? n : 0;
    }),
    Path: z.string().optional(),
    MountPoint: z.string().optional(),
    PrepareForVM: z.boolean().optional().default(false),
    CreatedTime: z.string().optional().default(""),
    Snapshots: z.record(z.string(), legacySnapshot).nullable().optional(),
  });

  /** One snapshot in the per-host state. */
  const snapshotState = z.object({
    Name: z.string(),
    CreatedTime: z.string(),
    FilePath: z.string(),
  });

  /** `<root>/state/<name>.json`: what only this host knows (mount point, snapshots). */
  const volumeState = z.looseObject({
    Name: z.string(),
    VolumeCreatedTime: z.string().default(""),
    MountPoint: z.string().default(""),
    Snapshots: z.record(z.string(), snapshotState).default({}),
  });

  /** Request options of createVolume. */
  const createOptions = api.util.schemas.createVolume.extend({ PrepareForVM: flag });

  return {
    driverConfig,
    savedConfig,
    volumeRecord,
    volumeState,
    createOptions,
  };
}

/** The schemas of one driver instance. */
export type Schemas = ReturnType<typeof createSchemas>;
/** A parsed shared volume record. */
export type VolumeRecord = ReturnType<Schemas["volumeRecord"]["parse"]>;
/** A parsed per-host volume state. */
export type VolumeState = ReturnType<Schemas["volumeState"]["parse"]>;
/** One snapshot of a per-host volume state. */
export type SnapshotState = VolumeState["Snapshots"][string];
