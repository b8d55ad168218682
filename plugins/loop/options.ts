/**
 * The loop driver's zod schemas: its `--driver-opts` keys and loop.cfg (the host's block framework
 * keeps the volume records; request options are the host's `api.util.schemas`). Schemas are
 * built from the host's zod (`api.deps.z`), so the plugin needs no node_modules.
 * @module
 */
import type { PluginApi } from "../../mod.ts";

/** Driver option: the folder holding the volume images (default `<root>/volumes`). */
export const OPT_LOOP_PATH = "loop.path";
/** Driver option: the size of volumes created without `--size` (default 10G). */
export const OPT_LOOP_DEFAULT_VOLUME_SIZE = "loop.defaultvolumesize";
/** Driver option: the filesystem made on new volumes, `ext4` (default) or `xfs`. */
export const OPT_LOOP_FS = "loop.fs";
/** Driver option: attach loop devices with `--direct-io=on` (default false). */
export const OPT_LOOP_DIRECT_IO = "loop.directio";

/** The default of `loop.defaultvolumesize`. */
export const DEFAULT_VOLUME_SIZE = "10G";
/** The default of `loop.fs`. */
export const DEFAULT_FILESYSTEM = "ext4";
/** The filesystems the driver makes. */
export const FILESYSTEMS = ["ext4", "xfs"] as const;

/** Builds the schemas with the host's zod and option schemas. */
export function createSchemas(api: PluginApi) {
  const z = api.deps.z;
  const blankToUndefined = (v: unknown) => (v === "" ? undefined : v);

  const { flag, size } = api.util.schemas;

  const filesystem = z.preprocess(
    (v) => (typeof v === "string" ? blankToUndefined(v.trim().toLowerCase()) : v),
    z.enum(FILESYSTEMS).default(DEFAULT_FILESYSTEM),
  );

  /** `--driver-opts` on the first start; other drivers' keys pass through. */
  const driverConfig = z.looseObject({
    [OPT_LOOP_PATH]: z.string().trim().min(1, "must not be empty").optional(),
    [OPT_LOOP_DEFAULT_VOLUME_SIZE]: size.prefault(DEFAULT_VOLUME_SIZE).refine(
      (n) => n > 0,
      "must be greater than 0",
    ),
    [OPT_LOOP_FS]: filesystem,
    [OPT_LOOP_DIRECT_IO]: flag,
  });

  /** `<root>/loop.cfg`. */
  const savedConfig = z.looseObject({
    Root: z.string().optional(),
    Path: z.string().min(1),
    SnapshotPath: z.string().min(1).optional(),
    DefaultVolumeSize: z.number().int().positive(),
    Filesystem: z.enum(FILESYSTEMS),
    DirectIO: z.boolean().optional().default(false),
  });

  return { driverConfig, savedConfig };
}

/** The schemas of one driver instance. */
export type Schemas = ReturnType<typeof createSchemas>;
