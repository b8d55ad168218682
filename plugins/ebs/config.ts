/**
 * The ebs driver's options and saved configuration, `<root>/ebs.cfg` (Convoy's field names).
 * The first start validates `--driver-opts` and saves them; later starts load the file, and an
 * option that disagrees with it is ignored with a warning naming it.
 * @module
 */
import { join } from "node:path";
import type { Logger, PluginApi } from "../../mod.ts";

export const OPT_DEFAULT_VOLUME_SIZE = "ebs.defaultvolumesize";
export const OPT_DEFAULT_VOLUME_TYPE = "ebs.defaultvolumetype";
export const OPT_DEFAULT_KMS_KEY = "ebs.defaultkmskeyid";
export const OPT_DEFAULT_ENCRYPTED = "ebs.defaultencrypted";
export const OPT_DEFAULT_THROUGHPUT = "ebs.defaultthroughput";
export const OPT_FSFREEZE = "ebs.fsfreeze";
export const OPT_DELETE_SNAPSHOTS = "ebs.deletesnapshots";
export const OPT_COPY_SNAPSHOTS = "ebs.crossregioncopy";
export const OPT_INSTANCE_ID = "ebs.instanceid";
export const OPT_REGION = "ebs.region";
export const OPT_ZONE = "ebs.zone";

/** EBS volume types CreateVolume accepts. */
export const VOLUME_TYPES = ["gp3", "gp2", "io2", "io1", "st1", "sc1", "standard"] as const;
/** Types that take IOPS: required for io1/io2, optional for gp3. */
export const IOPS_REQUIRED = ["io1", "io2"];
export const IOPS_ALLOWED = ["io1", "io2", "gp3"];

export const GiB = 1024 ** 3;
export const CONFIG_FILE = "ebs.cfg";

/** The saved configuration. */
export interface EbsConfig {
  /** Bytes, a multiple of 1 GiB. */
  DefaultVolumeSize: number;
  DefaultVolumeType: string;
  DefaultKmsKeyID: string;
  DefaultEncrypted: boolean;
  /** MiB/s of new gp3 volumes; 0: EBS's default. */
  DefaultThroughput: number;
  /** Freeze a mounted filesystem around CreateSnapshot. */
  FSFreeze: boolean;
  /** `snapshot delete` also deletes the EBS snapshot (Convoy: only the reference). */
  DeleteSnapshots: boolean;
  /** Restoring an ebs:// backup of another region copies the snapshot (CopySnapshot). */
  CrossRegionCopy: boolean;
  /** Overrides of what the metadata service says; "" asks it. */
  InstanceID: string;
  Region: string;
  Zone: string;
}

/** Builds the schemas with the host's zod. */
export function createSchemas(api: PluginApi) {
  const z = api.deps.z;
  const { flag, size } = api.util.schemas;
  const blank = (v: unknown) => (typeof v === "string" && v.trim() === "" ? undefined : v);
  const volumeType = z.preprocess(
    (v) => (typeof v === "string" ? blank(v.trim().toLowerCase()) : v),
    z.enum(VOLUME_TYPES, { message: `must be one of ${VOLUME_TYPES.join(", ")}` }),
  );
  const text = z.string().trim().default("");
  const count = z.preprocess(
    blank,
    z.coerce.number().int("must be a whole number").nonnegative().default(0),
  );

  /** `--driver-opts` on the first start; other drivers' keys pass through. */
  const driverConfig = z.looseObject({
    [OPT_DEFAULT_VOLUME_SIZE]: size.prefault("4G").refine((n) => n > 0, "must be greater than 0"),
    [OPT_DEFAULT_VOLUME_TYPE]: volumeType.default("gp3"),
    [OPT_DEFAULT_KMS_KEY]: text,
    [OPT_DEFAULT_ENCRYPTED]: flag,
    [OPT_DEFAULT_THROUGHPUT]: count,
    [OPT_FSFREEZE]: flag,
    [OPT_DELETE_SNAPSHOTS]: flag,
    [OPT_COPY_SNAPSHOTS]: flag,
    [OPT_INSTANCE_ID]: text,
    [OPT_REGION]: text,
    [OPT_ZONE]: text,
  });

  const savedConfig = z.looseObject({
    DefaultVolumeSize: z.number().int().positive(),
    DefaultVolumeType: z.string().min(1),
    DefaultKmsKeyID: z.string().default(""),
    DefaultEncrypted: z.boolean().default(false),
    DefaultThroughput: z.number().int().nonnegative().default(0),
    FSFreeze: z.boolean().default(false),
    DeleteSnapshots: z.boolean().default(false),
    CrossRegionCopy: z.boolean().default(false),
    InstanceID: z.string().default(""),
    Region: z.string().default(""),
    Zone: z.string().default(""),
  });

  /** Per volume: createVolume's string map (Convoy's keys). */
  // The daemon passes "0" for an --iops not given, as Convoy did
  const unsetZero = (v: unknown) => (typeof v === "string" && /^\s*0?\s*$/.test(v) ? undefined : v);
  const volumeOptions = z.looseObject({
    VolumeType: z.preprocess(blank, volumeType.optional()),
    VolumeIOPS: z.preprocess(
      unsetZero,
      z.coerce.number().int("must be a whole number").positive().optional(),
    ),
    VolumeThroughput: z.preprocess(
      unsetZero,
      z.coerce.number().int("must be a whole number").positive().optional(),
    ),
    VolumeDriverID: z.preprocess(
      blank,
      z.string().trim().regex(/^vol-[0-9a-f]+$/, "must be an EBS volume id (vol-...)").optional(),
    ),
  });

  /** The adapter's fields of a volume record. */
  const volumeFields = z.object({
    EBSVolumeID: z.string(),
    AvailabilityZone: z.string(),
    VolumeType: z.string(),
    IOPS: z.number().int().nonnegative().default(0),
    Throughput: z.number().int().nonnegative().default(0),
    KmsKeyId: z.string().default(""),
    Encrypted: z.boolean().default(false),
    /** The name the volume was last attached at ("" when never). */
    DeviceName: z.string().default(""),
    /** "in-use" when this daemon attached it, else "available". */
    State: z.string().default("available"),
    /** EBS's CreateTime, Go RubyDate. */
    EBSCreatedTime: z.string().default(""),
  });

  /** The adapter's fields of a snapshot record. */
  const snapshotFields = z.object({
    EBSSnapshotID: z.string(),
    EBSVolumeID: z.string(),
    KmsKeyId: z.string().default(""),
  });

  return { driverConfig, savedConfig, volumeOptions, volumeFields, snapshotFields };
}

export type Schemas = ReturnType<typeof createSchemas>;
export type VolumeFields = ReturnType<Schemas["volumeFields"]["parse"]>;
export type SnapshotFields = ReturnType<Schemas["snapshotFields"]["parse"]>;
export type VolumeOptions = ReturnType<Schemas["volumeOptions"]["parse"]>;

/** Loads `<root>/ebs.cfg`, or builds it from `options` and saves it on the first start. */
export function loadOrCreateConfig(
  api: PluginApi,
  schemas: Schemas,
  opts: { root: string; options: Record<string, string>; log: Logger },
): Promise<EbsConfig> {
  const same = (a: string) => (v: string) => v.trim() === a;
  const flag = (b: boolean) => (v: string) => /^(1|true|yes|on|y|enabled)$/i.test(v.trim()) === b;
  return api.util.loadDriverConfig({
    driver: "ebs",
    file: join(opts.root, CONFIG_FILE),
    options: opts.options,
    schema: schemas.driverConfig,
    savedSchema: schemas.savedConfig,
    create: (o): EbsConfig => ({
      DefaultVolumeSize: Math.ceil(o[OPT_DEFAULT_VOLUME_SIZE] / GiB) * GiB,
      DefaultVolumeType: o[OPT_DEFAULT_VOLUME_TYPE],
      DefaultKmsKeyID: o[OPT_DEFAULT_KMS_KEY],
      DefaultEncrypted: o[OPT_DEFAULT_ENCRYPTED],
      DefaultThroughput: o[OPT_DEFAULT_THROUGHPUT],
      FSFreeze: o[OPT_FSFREEZE],
      DeleteSnapshots: o[OPT_DELETE_SNAPSHOTS],
      CrossRegionCopy: o[OPT_COPY_SNAPSHOTS],
      InstanceID: o[OPT_INSTANCE_ID],
      Region: o[OPT_REGION],
      Zone: o[OPT_ZONE],
    }),
    load: (saved) => ({ config: saved as EbsConfig, save: false }),
    current: (c) => ({
      [OPT_DEFAULT_VOLUME_SIZE]: {
        uses: `${c.DefaultVolumeSize} bytes`,
        same: (v) => {
          try {
            return Math.ceil(api.util.parseSize(v) / GiB) * GiB === c.DefaultVolumeSize;
          } catch {
            return false;
          }
        },
      },
      [OPT_DEFAULT_VOLUME_TYPE]: {
        uses: `"${c.DefaultVolumeType}"`,
        same: (v) => v.trim().toLowerCase() === c.DefaultVolumeType,
      },
      [OPT_DEFAULT_KMS_KEY]: { uses: `"${c.DefaultKmsKeyID}"`, same: same(c.DefaultKmsKeyID) },
      [OPT_DEFAULT_ENCRYPTED]: { uses: String(c.DefaultEncrypted), same: flag(c.DefaultEncrypted) },
      [OPT_DEFAULT_THROUGHPUT]: {
        uses: String(c.DefaultThroughput),
        same: (v) => Number(v || 0) === c.DefaultThroughput,
      },
      [OPT_FSFREEZE]: { uses: String(c.FSFreeze), same: flag(c.FSFreeze) },
      [OPT_DELETE_SNAPSHOTS]: { uses: String(c.DeleteSnapshots), same: flag(c.DeleteSnapshots) },
      [OPT_COPY_SNAPSHOTS]: { uses: String(c.CrossRegionCopy), same: flag(c.CrossRegionCopy) },
      [OPT_INSTANCE_ID]: { uses: `"${c.InstanceID}"`, same: same(c.InstanceID) },
      [OPT_REGION]: { uses: `"${c.Region}"`, same: same(c.Region) },
      [OPT_ZONE]: { uses: `"${c.Zone}"`, same: same(c.Zone) },
    }),
    logFields: (c) => ({ ...c }),
    log: opts.log,
  });
}
