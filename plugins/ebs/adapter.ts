/**
 * The ebs device adapter: a volume's device is an EBS volume attached to this instance, its
 * snapshots are EBS snapshots, and its native backups are those snapshots (`ebs://region/snap-id`).
 * Backups to vfs:// and s3:// read the EBS snapshot through the EBS direct APIs (no volume is
 * attached for it), an incremental one only the blocks ListChangedBlocks reports.
 * @module
 */
import type {
  ActiveDevice,
  BlockDeviceAdapter,
  BlockDeviceContext,
  BlockSnapshot,
  BlockVolume,
  ChangedRanges,
  CreatedDevice,
  CreateDeviceRequest,
  PluginApi,
  SnapshotSource,
  StringMap,
} from "../../mod.ts";
import process from "node:process";
import { type CloudOptions, type EbsSnapshot, type EbsVolume, Ec2Cloud } from "./cloud.ts";
import {
  createSchemas,
  type EbsConfig,
  GiB,
  IOPS_ALLOWED,
  IOPS_REQUIRED,
  loadOrCreateConfig,
  OPT_COPY_SNAPSHOTS,
  type SnapshotFields,
  type VolumeFields,
  type VolumeOptions,
} from "./config.ts";
import { chooseDeviceName, findDevice } from "./devices.ts";
import { blocksToRanges, EBS_BLOCK, EbsDirect } from "./direct.ts";
import { type Env, type Placement, readPlacement } from "./imds.ts";

/** Convoy's block size of delta-block backups. */
const BACKUP_BLOCK = 2 * 1024 * 1024;

/** Test and tuning knobs that are not user options. */
export interface EbsDeps extends CloudOptions {
  /** How long to wait for an attached volume's device node (default 2 min). */
  deviceTimeoutMs?: number;
}

type Volume = BlockVolume<VolumeFields>;
type Snapshot = BlockSnapshot<SnapshotFields>;

/** `ebs://<region>/<snap-id>`, parsed. */
export function parseEbsURL(url: string): { region: string; snapshotId: string } | undefined {
  const m = /^ebs:\/\/([a-z0-9-]+)\/(snap-[0-9a-z]+)\/?$/.exec(url.trim());
  return m ? { region: m[1], snapshotId: m[2] } : undefined;
}

/** The ebs adapter of one daemon. */
export async function createEbsAdapter(
  api: PluginApi,
  ctx: BlockDeviceContext,
  deps: EbsDeps = {},
): Promise<BlockDeviceAdapter<VolumeFields, SnapshotFields, VolumeOptions>> {
  const { errors } = api;
  const log = ctx.log;
  const schemas = createSchemas(api);
  /** Go's RubyDate of an AWS time (UTC), as Convoy prints EBS times; "" without one. */
  const rubyDate = (d: Date | undefined) => d ? api.util.formatTime(d, { utc: true }) : "";
  const config: EbsConfig = await loadOrCreateConfig(api, schemas, {
    root: ctx.root,
    options: ctx.options,
    log,
  });
  const env: Env = deps.env ?? process.env;
  let placement: Placement;
  try {
    placement = await readPlacement({
      instanceId: config.InstanceID,
      region: config.Region || env.AWS_REGION || env.AWS_DEFAULT_REGION || "",
      zone: config.Zone,
    }, { env });
  } catch (err) {
    throw new errors.InvalidArgumentError(
      `Cannot start the ebs driver: ${errors.errorMessage(err)}`,
    );
  }
  const { instanceId, region, zone } = placement;
  const cloud = new Ec2Cloud(await api.deps.aws.ec2(), errors, region, deps);
  const ebsSdk = await api.deps.aws.ebs();
  const directs = new Map<string, EbsDirect>();
  const direct = (r = region) => {
    let d = directs.get(r);
    if (!d) directs.set(r, d = new EbsDirect(ebsSdk, errors, r, deps));
    return d;
  };
  /** Device names of attaches in flight in this daemon. */
  const inFlight = new Set<string>();
  const deviceTimeoutMs = deps.deviceTimeoutMs ?? 120_000;
  log.info("ebs driver ready", { instanceId, region, zone });

  function checkType(type: string, iops: number | undefined, what: string) {
    if (IOPS_REQUIRED.includes(type) && iops === undefined) {
      throw new errors.InvalidArgumentError(`${what}: volume type "${type}" needs --iops`);
    }
    if (iops !== undefined && !IOPS_ALLOWED.includes(type)) {
      throw new errors.InvalidArgumentError(
        `${what}: volume type "${type}" takes no --iops (only ${IOPS_ALLOWED.join(", ")} do)`,
      );
    }
  }

  /** ConflictError when `v` is attached to an instance other than this one. */
  function refuseAttachedElsewhere(v: EbsVolume, what: string): void {
    const other = v.attachments.find((a) => a.instanceId !== instanceId);
    if (other) {
      throw new errors.ConflictError(
        `${what}: EBS volume ${v.id} is attached to instance ${other.instanceId} at ${other.device}`,
      );
    }
  }

  function fieldsOf(v: EbsVolume, deviceName = ""): VolumeFields {
    const attached = v.attachments.find((a) => a.instanceId === instanceId);
    return {
      EBSVolumeID: v.id,
      AvailabilityZone: v.zone,
      VolumeType: v.type,
      IOPS: v.iops ?? 0,
      Throughput: v.throughput ?? 0,
      KmsKeyId: v.kmsKeyId,
      Encrypted: v.encrypted,
      DeviceName: attached?.device ?? deviceName,
      State: v.state,
      EBSCreatedTime: rubyDate(v.createTime),
    };
  }

  async function snapshotForRestore(url: string, what: string, signal?: AbortSignal) {
    const parsed = parseEbsURL(url);
    if (!parsed) {
      throw new errors.InvalidArgumentError(
        `${what}: "${url}" is not an EBS backup URL (ebs://<region>/snap-<id>)`,
      );
    }
    let id = parsed.snapshotId;
    if (parsed.region !== region) {
      if (!config.CrossRegionCopy) {
        throw new errors.InvalidArgumentError(
          `${what}: snapshot ${id} is in region "${parsed.region}", this instance in "${region}"; ` +
            `a copy is needed (start the daemon with --driver-opts ${OPT_COPY_SNAPSHOTS}=true to copy it)`,
        );
      }
      await cloud.waitSnapshot(id, { prefix: what, region: parsed.region, signal });
      id = await cloud.copySnapshot(id, {
        sourceRegion: parsed.region,
        description: `Convoy copy of ${url}`,
        tags: { ConvoyCopyOf: url },
        prefix: what,
      });
      log.info("Copied EBS snapshot", { from: url, snapshot: id, region });
    }
    return await cloud.waitSnapshot(id, { prefix: what, signal });
  }

  async function createDevice(
    req: CreateDeviceRequest<VolumeOptions>,
  ): Promise<CreatedDevice<VolumeFields, SnapshotFields>> {
    const what = `Cannot create volume "${req.name}"`;
    const o = req.options ?? {};
    const tags = { Name: req.name, ConvoyVolumeName: req.name };
    if (o.VolumeDriverID) {
      if (req.restore) {
        throw new errors.InvalidArgumentError(`${what}: --id and --backup cannot be combined`);
      }
      const v = await cloud.volume(o.VolumeDriverID, what);
      if (v.zone !== zone) {
        throw new errors.InvalidArgumentError(
          `${what}: EBS volume ${v.id} is in zone "${v.zone}", this instance in "${zone}"`,
        );
      }
      refuseAttachedElsewhere(v, what);
      await cloud.createTags([v.id], tags, what).catch((err) =>
        log.warn("Cannot tag adopted EBS volume", { volume: v.id, error: errors.errorMessage(err) })
      );
      return { fields: fieldsOf(v), size: v.sizeGiB * GiB, adopted: true };
    }
    const type = o.VolumeType ?? config.DefaultVolumeType;
    checkType(type, o.VolumeIOPS, what);
    if (o.VolumeThroughput !== undefined && type !== "gp3") {
      throw new errors.InvalidArgumentError(
        `${what}: volume type "${type}" takes no --throughput (only gp3 does)`,
      );
    }
    let sizeGiB = Math.max(1, Math.ceil(req.size / GiB));
    let snapshotId: string | undefined;
    if (req.restore?.native) {
      const snap = await snapshotForRestore(req.restore.url, what, req.signal);
      if (req.sizeRequested && sizeGiB < snap.sizeGiB) {
        throw new errors.InvalidArgumentError(
          `${what}: --size ${req.size} is smaller than the snapshot (${snap.sizeGiB} GiB)`,
        );
      }
      if (!req.sizeRequested) sizeGiB = snap.sizeGiB;
      snapshotId = snap.id;
    }
    const throughput = o.VolumeThroughput ??
      (type === "gp3" && config.DefaultThroughput ? config.DefaultThroughput : undefined);
    const v = await cloud.createVolume({
      zone,
      sizeGiB,
      type,
      iops: o.VolumeIOPS,
      throughput,
      encrypted: config.DefaultEncrypted,
      kmsKeyId: snapshotId ? undefined : config.DefaultKmsKeyID || undefined,
      snapshotId,
      tags,
    }, { prefix: what, signal: req.signal });
    log.info("Created EBS volume", { volume: req.name, ebsVolume: v.id, sizeGiB, type });
    return { fields: fieldsOf(v), size: v.sizeGiB * GiB };
  }

  async function activate(volume: Volume): Promise<ActiveDevice<VolumeFields>> {
    const what = `Cannot attach volume "${volume.name}"`;
    const id = volume.fields.EBSVolumeID;
    let v = await cloud.volume(id, what);
    refuseAttachedElsewhere(v, what);
    let mine = v.attachments.find((a) => a.instanceId === instanceId);
    if (!mine) {
      const used = await cloud.attachedDeviceNames(instanceId, what);
      const device = chooseDeviceName([...used, ...inFlight]);
      if (!device) {
        throw new errors.ConflictError(
          `${what}: every device name /dev/sdf../dev/sdp of instance ${instanceId} is in use`,
        );
      }
      inFlight.add(device);
      try {
        v = await cloud.attachVolume(id, { instanceId, device, prefix: what });
      } finally {
        inFlight.delete(device);
      }
      mine = v.attachments.find((a) => a.instanceId === instanceId)!;
      log.info("Attached EBS volume", { volume: volume.name, ebsVolume: id, device });
    } else if (mine.state !== "attached") {
      v = await cloud.waitVolume(id, {
        what: `${what.replace(/^Cannot /, "")} (${id}): wait for the attachment`,
        prefix: what,
        done: (x) =>
          x.attachments.some((a) => a.instanceId === instanceId && a.state === "attached"),
      });
    }
    let path: string;
    try {
      path = await findDevice(id, {
        deviceName: mine.device,
        what: what.replace(/^Cannot /, ""),
        timeoutMs: deviceTimeoutMs,
        timeout: (m) => new errors.TimeoutError(m),
      });
    } catch (err) {
      // No device to hand over: do not leave the volume attached for nothing
      await cloud.detachVolume(id, { instanceId, prefix: what }).catch((e) =>
        log.warn("Cannot detach EBS volume after a failed attach", {
          ebsVolume: id,
          error: errors.errorMessage(e),
        })
      );
      throw err;
    }
    return { path, fields: fieldsOf(v, mine.device) };
  }

  async function deactivate(volume: Volume): Promise<void> {
    const what = `Cannot detach volume "${volume.name}"`;
    const id = volume.fields.EBSVolumeID;
    const v = await cloud.findVolume(id, what);
    if (!v || !v.attachments.some((a) => a.instanceId === instanceId)) return;
    await cloud.detachVolume(id, { instanceId, prefix: what });
    log.info("Detached EBS volume", { volume: volume.name, ebsVolume: id });
  }

  async function removeDevice(volume: Volume, opts: { keepData: boolean }): Promise<void> {
    const what = `Cannot delete volume "${volume.name}"`;
    const id = volume.fields.EBSVolumeID;
    const v = await cloud.findVolume(id, what);
    if (!v) return;
    // deactivated before, normally; a volume still attached here is detached first
    if (v.attachments.some((a) => a.instanceId === instanceId)) {
      await cloud.detachVolume(id, { instanceId, prefix: what });
    }
    if (opts.keepData) return;
    await cloud.deleteVolume(id, what);
    log.info("Deleted EBS volume", { volume: volume.name, ebsVolume: id });
  }

  async function readyBlocks(
    snapshot: Snapshot,
    prefix: string,
    signal?: AbortSignal,
  ) {
    await cloud.waitSnapshot(snapshot.fields.EBSSnapshotID, { prefix, signal });
    return await direct().snapshotBlocks(snapshot.fields.EBSSnapshotID, { prefix, signal });
  }

  /** 2 MiB-aligned ranges covering the 512 KiB EBS blocks `indices`. */
  function toBackupRanges(indices: Iterable<number>): ChangedRanges {
    const per = BACKUP_BLOCK / EBS_BLOCK;
    const blocks = [...new Set([...indices].map((i) => Math.floor(i / per)))].sort((a, b) => a - b);
    const mappings: Array<{ offset: number; size: number }> = [];
    for (const b of blocks) {
      const last = mappings[mappings.length - 1];
      if (last && last.offset + last.size === b * BACKUP_BLOCK) last.size += BACKUP_BLOCK;
      else mappings.push({ offset: b * BACKUP_BLOCK, size: BACKUP_BLOCK });
    }
    return { mappings, blockSize: BACKUP_BLOCK };
  }

  function backupInfo(s: EbsSnapshot, url: string): StringMap {
    return {
      BackupName: s.id,
      BackupURL: url,
      CreatedTime: rubyDate(s.startTime),
      DriverName: "ebs",
      SnapshotCreatedAt: rubyDate(s.startTime),
      SnapshotName: s.tags.ConvoySnapshotName ?? "",
      VolumeCreatedAt: "",
      VolumeName: s.tags.ConvoyVolumeName ?? "",
      VolumeSize: String(s.sizeGiB * GiB),
    };
  }

  /**
   * For methods the host calls as a step of another operation (attach within create or mount,
   * a snapshot read within a backup, a restore into another driver's volume): the AWS part only,
   * so messages read `Cannot create volume "db1": <AWS code>: <message>`, not the step's own
   * `Cannot attach volume "db1": ` too. (An error naming the host's own operation and object is
   * kept as it is by the host.)
   */
  function bare<A extends unknown[], R>(fn: (...a: A) => Promise<R>): (...a: A) => Promise<R> {
    return async (...a: A) => {
      try {
        return await fn(...a);
      } catch (err) {
        const m = err instanceof errors.BackendError && /^Cannot .*?": (.*)$/s.exec(err.message);
        if (m) throw new errors.BackendError(m[1], { cause: err });
        throw err;
      }
    };
  }

  return {
    capabilities: {
      freezeForSnapshot: config.FSFreeze,
      dockerRemoveKeepsData: true,
      filesystem: "ext4",
      discardOnMkfs: false,
      sizeAlignment: GiB,
      defaultSize: config.DefaultVolumeSize,
    },
    volumeFields: schemas.volumeFields,
    snapshotFields: schemas.snapshotFields,
    volumeOptions: schemas.volumeOptions,
    createDevice,
    removeDevice,
    activate: bare(activate),
    deactivate: bare(deactivate),

    async createSnapshot(volume, snapshot) {
      const what = `Cannot create snapshot "${snapshot.name}" of volume "${volume.name}"`;
      // As Convoy: flush a mounted filesystem's dirty data to the disk first (a frozen one is
      // flushed by the freeze). EBS snapshots are crash-consistent at the call.
      if (volume.mountPoint && !config.FSFreeze) await ctx.exec("sync", []);
      const s = await cloud.createSnapshot(volume.fields.EBSVolumeID, {
        description: "Convoy snapshot",
        tags: {
          Name: snapshot.name,
          ConvoyVolumeName: volume.name,
          ConvoySnapshotName: snapshot.name,
        },
        prefix: what,
      });
      log.info("Created EBS snapshot", {
        volume: volume.name,
        snapshot: snapshot.name,
        ebsSnapshot: s.id,
      });
      return {
        fields: {
          EBSSnapshotID: s.id,
          EBSVolumeID: volume.fields.EBSVolumeID,
          KmsKeyId: s.kmsKeyId,
        },
      };
    },

    removeSnapshot: bare(async function removeSnapshot(volume, snapshot, opts) {
      // Convoy: only the reference goes; a snapshot never recorded has no reference to keep
      if (!config.DeleteSnapshots && !opts?.unrecorded) return;
      const what = `Cannot delete snapshot "${snapshot.name}" of volume "${volume.name}"`;
      const s = await cloud.findSnapshot(snapshot.fields.EBSSnapshotID, what);
      if (!s) return;
      if (s.tags.ConvoyBackup === "true") {
        log.info("Keeping EBS snapshot: it is a backup", { ebsSnapshot: s.id });
        return;
      }
      await cloud.deleteSnapshot(s.id, what);
    }),

    openSnapshot: bare(async function openSnapshot(volume, snapshot, c): Promise<SnapshotSource> {
      const prefix = `Cannot read snapshot "${snapshot.name}" of volume "${volume.name}"`;
      const tokens = await readyBlocks(snapshot, prefix, c?.signal);
      const id = snapshot.fields.EBSSnapshotID;
      return {
        kind: "reader",
        read: (offset, data, rc) =>
          direct().readRange(id, tokens, { offset, data, prefix, signal: rc?.signal ?? c?.signal }),
      };
    }),

    compareSnapshots: bare(
      async function compareSnapshots(volume, snapshot, base, c): Promise<ChangedRanges> {
        const prefix = `Cannot compare snapshot "${snapshot.name}" of volume "${volume.name}"`;
        const id = snapshot.fields.EBSSnapshotID;
        if (!base || base.fields.EBSVolumeID !== snapshot.fields.EBSVolumeID) {
          const tokens = await readyBlocks(snapshot, prefix, c?.signal);
          return toBackupRanges(tokens.keys());
        }
        await cloud.waitSnapshot(base.fields.EBSSnapshotID, { prefix, signal: c?.signal });
        await cloud.waitSnapshot(id, { prefix, signal: c?.signal });
        const changed = await direct().changedBlocks(base.fields.EBSSnapshotID, id, {
          prefix,
          signal: c?.signal,
        });
        return toBackupRanges(changed.keys());
      },
    ),

    info: () => ({
      DefaultVolumeSize: String(config.DefaultVolumeSize),
      DefaultVolumeType: config.DefaultVolumeType,
      DefaultKmsKey: config.DefaultKmsKeyID,
      DefaultEncrypted: String(config.DefaultEncrypted),
      InstanceID: instanceId,
      Region: region,
      AvailiablityZone: zone,
    }),

    volumeInfo: (volume) => ({
      EBSVolumeID: volume.fields.EBSVolumeID,
      KmsKeyId: volume.fields.KmsKeyId,
      AvailiablityZone: volume.fields.AvailabilityZone,
      State: volume.fields.State,
      Type: volume.fields.VolumeType,
      IOPS: String(volume.fields.IOPS),
      Throughput: String(volume.fields.Throughput),
      Encrypted: String(volume.fields.Encrypted),
    }),

    snapshotInfo: (_volume, snapshot) => ({
      EBSSnapshotID: snapshot.fields.EBSSnapshotID,
      EBSVolumeID: snapshot.fields.EBSVolumeID,
      KmsKeyId: snapshot.fields.KmsKeyId,
    }),

    shutdown() {
      cloud.close();
      for (const d of directs.values()) d.close();
      return Promise.resolve();
    },

    nativeBackups: {
      schemes: ["ebs"],
      async create(volume, snapshot, dest) {
        const what = `Cannot back up snapshot "${snapshot.name}" of volume "${volume.name}"`;
        const s = await cloud.waitSnapshot(snapshot.fields.EBSSnapshotID, {
          prefix: what,
          signal: dest.ctx?.signal,
        });
        await cloud.createTags([s.id], { ConvoyBackup: "true" }, what);
        return `ebs://${region}/${s.id}`;
      },
      async size(url) {
        const p = parseEbsURL(url);
        const what = `Cannot restore backup "${url}"`;
        if (!p) {
          throw new errors.InvalidArgumentError(`${what}: not an ebs://<region>/snap-<id> URL`);
        }
        return (await cloud.snapshot(p.snapshotId, what, p.region)).sizeGiB * GiB;
      },
      // Another block driver's restore reads the snapshot through the EBS direct APIs of its
      // region (no volume, no copy): the blocks ListSnapshotBlocks reports, the rest is zeros.
      open: bare(async function open(url, c) {
        const p = parseEbsURL(url);
        const what = `Cannot restore backup "${url}"`;
        if (!p) {
          throw new errors.InvalidArgumentError(`${what}: not an ebs://<region>/snap-<id> URL`);
        }
        const s = await cloud.waitSnapshot(p.snapshotId, {
          prefix: what,
          region: p.region,
          signal: c?.signal,
        });
        const reader = direct(p.region);
        const tokens = await reader.snapshotBlocks(s.id, { prefix: what, signal: c?.signal });
        return {
          size: s.sizeGiB * GiB,
          mappings: blocksToRanges(tokens.keys()),
          source: {
            kind: "reader",
            read: (offset, data, rc) =>
              reader.readRange(s.id, tokens, {
                offset,
                data,
                prefix: what,
                signal: rc?.signal ?? c?.signal,
              }),
          },
        };
      }),
      async delete(url) {
        const p = parseEbsURL(url);
        const what = `Cannot delete backup "${url}"`;
        if (!p) {
          throw new errors.InvalidArgumentError(`${what}: not an ebs://<region>/snap-<id> URL`);
        }
        await cloud.deleteSnapshot(p.snapshotId, what, p.region);
      },
      async inspect(url) {
        const p = parseEbsURL(url);
        const what = `Cannot inspect backup "${url}"`;
        if (!p) {
          throw new errors.InvalidArgumentError(`${what}: not an ebs://<region>/snap-<id> URL`);
        }
        const s = await cloud.snapshot(p.snapshotId, what, p.region);
        return {
          ...backupInfo(s, url),
          Region: p.region,
          EBSSnapshotID: s.id,
          EBSVolumeID: s.volumeId,
          KmsKeyId: s.kmsKeyId,
          StartTime: rubyDate(s.startTime),
          Size: String(s.sizeGiB * GiB),
          State: s.state,
        };
      },
      async list(destURL, opts) {
        const r = /^ebs:\/\/([a-z0-9-]+)/.exec(destURL)?.[1] ?? region;
        const what = `Cannot list backups in "${destURL}"`;
        const tags: Record<string, string> = { ConvoyBackup: "true" };
        if (opts.volumeName) tags.ConvoyVolumeName = opts.volumeName;
        const out: Record<string, StringMap> = {};
        const c = r === region ? cloud : new Ec2Cloud(await api.deps.aws.ec2(), errors, r, deps);
        try {
          for (const s of await c.snapshotsTagged(tags, what)) {
            const url = `ebs://${r}/${s.id}`;
            out[url] = backupInfo(s, url);
          }
        } finally {
          if (c !== cloud) c.close();
        }
        return out;
      },
    },
  };
}
