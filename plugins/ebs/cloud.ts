/**
 * The EC2 side of the ebs driver: volumes, attachments and snapshots through the AWS SDK (reached
 * through `api.deps.aws`), with bounded exponential waits and the SDK's standard retry strategy
 * (throttling and 5xx retried with backoff). Errors are the API's typed errors with the AWS code:
 * `Cannot attach volume "db1" (vol-1): VolumeInUse: ...`; no credential appears in any of them.
 * @module
 */
import type { Ec2Sdk, PluginApi } from "../../mod.ts";
import type { Env } from "./imds.ts";
import { type Check, waitFor } from "./waiter.ts";

type EC2Client = InstanceType<Ec2Sdk["EC2Client"]>;
type Errors = PluginApi["errors"];

/** An EBS volume, as the driver uses it. */
export interface EbsVolume {
  id: string;
  zone: string;
  /** GiB. */
  sizeGiB: number;
  type: string;
  iops?: number;
  throughput?: number;
  state: string;
  encrypted: boolean;
  kmsKeyId: string;
  snapshotId: string;
  createTime?: Date;
  attachments: Array<{ instanceId: string; device: string; state: string }>;
  tags: Record<string, string>;
}

/** An EBS snapshot, as the driver uses it. */
export interface EbsSnapshot {
  id: string;
  volumeId: string;
  state: string;
  progress: string;
  /** GiB. */
  sizeGiB: number;
  startTime?: Date;
  encrypted: boolean;
  kmsKeyId: string;
  description: string;
  tags: Record<string, string>;
}

/** How long each kind of wait may take, in ms. */
export interface WaitLimits {
  /** A volume becoming available, attached or detached (default 5 min). */
  volumeMs: number;
  /** A snapshot completing, also a copied one (default 2 h: snapshots of large volumes are slow). */
  snapshotMs: number;
  /** The first delay between checks (default 250 ms), doubled up to `maxDelayMs`. */
  initialDelayMs: number;
  /** Default 5 s for volumes; snapshots wait up to 6 times this between checks. */
  maxDelayMs: number;
}

/** Connection settings; the SDK's own (AWS_ENDPOINT_URL, credentials chain) apply to the rest. */
export interface CloudOptions {
  /** The SDK's attempts per call (default 8): throttling and 5xx are retried with backoff. */
  maxAttempts?: number;
  /** Settings to use instead of `process.env` (tests): endpoint, region and key pair. */
  env?: Env;
  waits?: Partial<WaitLimits>;
}

export const DEFAULT_WAITS: WaitLimits = {
  volumeMs: 5 * 60_000,
  snapshotMs: 2 * 3600_000,
  initialDelayMs: 250,
  maxDelayMs: 5000,
};

/** What a CreateVolume call asks for. */
export interface NewVolume {
  zone: string;
  sizeGiB: number;
  type: string;
  iops?: number;
  throughput?: number;
  encrypted?: boolean;
  kmsKeyId?: string;
  snapshotId?: string;
  tags: Record<string, string>;
}

const ACCESS_KEY = /\b(?:AKIA|ASIA)[A-Z0-9]{16}\b/g;

/** The SDK client settings of `env` when given (tests), else none (the SDK reads process.env). */
export function sdkSettings(service: "EC2" | "EBS", env: Env | undefined) {
  if (!env) return {};
  const endpoint = env[`AWS_ENDPOINT_URL_${service}`] ?? env.AWS_ENDPOINT_URL;
  const id = env.AWS_ACCESS_KEY_ID, secret = env.AWS_SECRET_ACCESS_KEY;
  return {
    ...(endpoint ? { endpoint } : {}),
    ...(id && secret
      ? {
        credentials: {
          accessKeyId: id,
          secretAccessKey: secret,
          ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
        },
      }
      : {}),
  };
}

/**
 * A typed error for a failed AWS call: NotFoundError for `*.NotFound`, ConflictError for a
 * volume in use or in the wrong state, InvalidArgumentError for bad parameters, BackendError for
 * the rest (throttling that outlasted the retries, access denied, network); the message is
 * `<prefix>: <AWS code>: <AWS message>` (access key ids masked).
 */
export function awsError(errors: Errors, err: unknown, prefix: string): Error {
  if (err instanceof errors.ConvoyError) return err;
  const e = err as { name?: string; Code?: string; message?: string; $metadata?: unknown };
  const code = e?.Code ?? e?.name ?? "Error";
  const raw = err instanceof Error ? err.message : String(err);
  const message = raw.replace(ACCESS_KEY, "<access key id>");
  const isAws = typeof e === "object" && e !== null && "$metadata" in e;
  const text = isAws ? `${prefix}: ${code}: ${message}` : `${prefix}: ${message}`;
  if (!isAws) {
    if (e?.name === "AbortError") return new errors.CancelledError(text, { cause: err });
    return new errors.BackendError(text, { cause: err });
  }
  if (/NotFound$|^NoSuch|ResourceNotFound/.test(code)) {
    return new errors.NotFoundError(text, { cause: err });
  }
  if (/^(VolumeInUse|IncorrectState|IncorrectInstanceState|ConflictException)$/.test(code)) {
    return new errors.ConflictError(text, { cause: err });
  }
  if (/^(InvalidParameter.*|MissingParameter|ValidationException|InvalidZone\..*)$/.test(code)) {
    return new errors.InvalidArgumentError(text, { cause: err });
  }
  return new errors.BackendError(text, { cause: err });
}

function tagMap(tags: Array<{ Key?: string; Value?: string }> | undefined) {
  const out: Record<string, string> = {};
  for (const t of tags ?? []) if (t.Key !== undefined) out[t.Key] = t.Value ?? "";
  return out;
}

function tagList(tags: Record<string, string>) {
  return Object.entries(tags).map(([Key, Value]) => ({ Key, Value }));
}

/** TagSpecifications for `type`; none for no tags (EC2 refuses an empty one). */
function tagSpec(type: "volume" | "snapshot", tags: Record<string, string>) {
  const list = tagList(tags);
  return list.length ? { TagSpecifications: [{ ResourceType: type, Tags: list }] } : {};
}

/** EC2 calls of one account, in the daemon's region (and others, for copies and deletes). */
export class Ec2Cloud {
  readonly region: string;
  #sdk: Ec2Sdk;
  #errors: Errors;
  #opts: CloudOptions;
  #clients = new Map<string, EC2Client>();
  readonly waits: WaitLimits;

  constructor(sdk: Ec2Sdk, errors: Errors, region: string, opts: CloudOptions = {}) {
    this.#sdk = sdk;
    this.#errors = errors;
    this.region = region;
    this.#opts = opts;
    this.waits = { ...DEFAULT_WAITS, ...opts.waits };
  }

  /** The client of `region` (default the daemon's), made once. */
  client(region = this.region): EC2Client {
    let c = this.#clients.get(region);
    if (!c) {
      c = new this.#sdk.EC2Client({
        region,
        ...sdkSettings("EC2", this.#opts.env),
        maxAttempts: this.#opts.maxAttempts ?? 8,
        retryMode: "standard",
        requestHandler: { connectionTimeout: 10_000, requestTimeout: 60_000 },
      });
      this.#clients.set(region, c);
    }
    return c;
  }

  /** Closes every client's connections. */
  close(): void {
    for (const c of this.#clients.values()) c.destroy();
    this.#clients.clear();
  }

  async #call<T>(prefix: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw awsError(this.#errors, err, prefix);
    }
  }

  #toVolume(v: {
    VolumeId?: string;
    AvailabilityZone?: string;
    Size?: number;
    VolumeType?: string;
    Iops?: number;
    Throughput?: number;
    State?: string;
    Encrypted?: boolean;
    KmsKeyId?: string;
    SnapshotId?: string;
    CreateTime?: Date;
    Attachments?: Array<{ InstanceId?: string; Device?: string; State?: string }>;
    Tags?: Array<{ Key?: string; Value?: string }>;
  }): EbsVolume {
    return {
      id: v.VolumeId ?? "",
      zone: v.AvailabilityZone ?? "",
      sizeGiB: v.Size ?? 0,
      type: v.VolumeType ?? "",
      iops: v.Iops,
      throughput: v.Throughput,
      state: v.State ?? "",
      encrypted: v.Encrypted ?? false,
      kmsKeyId: v.KmsKeyId ?? "",
      snapshotId: v.SnapshotId ?? "",
      createTime: v.CreateTime,
      attachments: (v.Attachments ?? []).map((a) => ({
        instanceId: a.InstanceId ?? "",
        device: a.Device ?? "",
        state: a.State ?? "",
      })),
      tags: tagMap(v.Tags),
    };
  }

  #toSnapshot(s: {
    SnapshotId?: string;
    VolumeId?: string;
    State?: string;
    Progress?: string;
    VolumeSize?: number;
    StartTime?: Date;
    Encrypted?: boolean;
    KmsKeyId?: string;
    Description?: string;
    Tags?: Array<{ Key?: string; Value?: string }>;
  }): EbsSnapshot {
    return {
      id: s.SnapshotId ?? "",
      volumeId: s.VolumeId ?? "",
      state: s.State ?? "",
      progress: s.Progress ?? "",
      sizeGiB: s.VolumeSize ?? 0,
      startTime: s.StartTime,
      encrypted: s.Encrypted ?? false,
      kmsKeyId: s.KmsKeyId ?? "",
      description: s.Description ?? "",
      tags: tagMap(s.Tags),
    };
  }

  /** The volume, or undefined when EC2 does not know it. One DescribeVolumes call. */
  async findVolume(id: string, prefix: string): Promise<EbsVolume | undefined> {
    try {
      const out = await this.client().send(
        new this.#sdk.DescribeVolumesCommand({ VolumeIds: [id] }),
      );
      const v = out.Volumes?.[0];
      return v ? this.#toVolume(v) : undefined;
    } catch (err) {
      const e = awsError(this.#errors, err, prefix);
      if (e instanceof this.#errors.NotFoundError) return undefined;
      throw e;
    }
  }

  /** The volume; NotFoundError `<prefix>: InvalidVolume.NotFound: ...` when EC2 does not know it. */
  async volume(id: string, prefix: string): Promise<EbsVolume> {
    const v = await this.findVolume(id, prefix);
    if (!v) {
      throw new this.#errors.NotFoundError(
        `${prefix}: InvalidVolume.NotFound: the volume '${id}' does not exist`,
      );
    }
    return v;
  }

  /** Every device name this instance's volumes are attached (or attaching) at. */
  async attachedDeviceNames(instanceId: string, prefix: string): Promise<string[]> {
    const names: string[] = [];
    let token: string | undefined;
    do {
      const out = await this.#call(prefix, () =>
        this.client().send(
          new this.#sdk.DescribeVolumesCommand({
            Filters: [{ Name: "attachment.instance-id", Values: [instanceId] }],
            NextToken: token,
          }),
        ));
      for (const v of out.Volumes ?? []) {
        for (const a of v.Attachments ?? []) {
          if (a.InstanceId === instanceId && a.Device) names.push(a.Device);
        }
      }
      token = out.NextToken;
    } while (token);
    const inst = await this.#call(
      prefix,
      () =>
        this.client().send(new this.#sdk.DescribeInstancesCommand({ InstanceIds: [instanceId] })),
    );
    for (const r of inst.Reservations ?? []) {
      for (const i of r.Instances ?? []) {
        for (const m of i.BlockDeviceMappings ?? []) if (m.DeviceName) names.push(m.DeviceName);
      }
    }
    return names;
  }

  /**
   * CreateVolume, tagged at creation, then a wait for "available". A volume that does not become
   * available (an error state, a timeout) is deleted again before the error is thrown.
   */
  async createVolume(req: NewVolume, opts: { prefix: string; signal?: AbortSignal }) {
    const created = await this.#call(opts.prefix, () =>
      this.client().send(
        new this.#sdk.CreateVolumeCommand({
          AvailabilityZone: req.zone,
          Size: req.sizeGiB,
          VolumeType: req.type as "gp3",
          ...(req.iops !== undefined ? { Iops: req.iops } : {}),
          ...(req.throughput !== undefined ? { Throughput: req.throughput } : {}),
          ...(req.encrypted || req.kmsKeyId ? { Encrypted: true } : {}),
          ...(req.kmsKeyId ? { KmsKeyId: req.kmsKeyId } : {}),
          ...(req.snapshotId ? { SnapshotId: req.snapshotId } : {}),
          ...tagSpec("volume", req.tags),
        }),
        { abortSignal: opts.signal },
      ));
    const id = created.VolumeId!;
    try {
      return await this.waitVolume(id, {
        what: `${opts.prefix.replace(/^Cannot /, "")} (${id}): wait for "available"`,
        prefix: opts.prefix,
        signal: opts.signal,
        done: (v) => v.state === "available",
        failed: (v) => v.state === "error" || v.state === "deleted",
      });
    } catch (err) {
      await this.deleteVolume(id, opts.prefix).catch(() => {});
      throw err;
    }
  }

  /** Waits until `done(volume)`; `failed(volume)` ends the wait with a BackendError at once. */
  waitVolume(id: string, w: {
    what: string;
    prefix: string;
    signal?: AbortSignal;
    done: (v: EbsVolume) => boolean;
    failed?: (v: EbsVolume) => boolean;
  }): Promise<EbsVolume> {
    return waitFor(async (): Promise<Check<EbsVolume>> => {
      const v = await this.findVolume(id, w.prefix);
      // A new volume may not be visible yet (EC2 is eventually consistent)
      if (!v) return { done: false, state: "not found" };
      if (w.failed?.(v)) {
        throw new this.#errors.BackendError(`${w.prefix}: volume ${id} is in state "${v.state}"`);
      }
      if (w.done(v)) return { done: true, value: v };
      const a = v.attachments[0];
      return { done: false, state: a ? `${v.state}, ${a.state}` : v.state };
    }, {
      what: w.what,
      timeoutMs: this.waits.volumeMs,
      initialDelayMs: this.waits.initialDelayMs,
      maxDelayMs: this.waits.maxDelayMs,
      signal: w.signal,
      timeout: (m) => new this.#errors.TimeoutError(m),
    });
  }

  deleteVolume(id: string, prefix: string): Promise<void> {
    return this.#call(prefix, async () => {
      await this.client().send(new this.#sdk.DeleteVolumeCommand({ VolumeId: id }));
    });
  }

  /** AttachVolume, then a wait until the attachment to `instanceId` is "attached". */
  async attachVolume(
    id: string,
    at: { instanceId: string; device: string; prefix: string; signal?: AbortSignal },
  ): Promise<EbsVolume> {
    await this.#call(at.prefix, () =>
      this.client().send(
        new this.#sdk.AttachVolumeCommand({
          VolumeId: id,
          InstanceId: at.instanceId,
          Device: at.device,
        }),
      ));
    return await this.waitVolume(id, {
      what: `${at.prefix.replace(/^Cannot /, "")} (${id}): wait for the attachment at ${at.device}`,
      prefix: at.prefix,
      signal: at.signal,
      done: (v) =>
        v.attachments.some((a) => a.instanceId === at.instanceId && a.state === "attached"),
      failed: (v) => v.state === "error" || v.state === "deleted",
    });
  }

  /** DetachVolume from `instanceId`, then a wait until the volume is "available". */
  async detachVolume(
    id: string,
    from: { instanceId: string; prefix: string; force?: boolean; signal?: AbortSignal },
  ): Promise<void> {
    await this.#call(from.prefix, () =>
      this.client().send(
        new this.#sdk.DetachVolumeCommand({
          VolumeId: id,
          InstanceId: from.instanceId,
          ...(from.force ? { Force: true } : {}),
        }),
      ));
    await this.waitVolume(id, {
      what: `${from.prefix.replace(/^Cannot /, "")} (${id}): wait for the detach`,
      prefix: from.prefix,
      signal: from.signal,
      done: (v) =>
        v.state === "available" || !v.attachments.some((a) => a.instanceId === from.instanceId),
    });
  }

  createTags(ids: string[], tags: Record<string, string>, prefix: string): Promise<void> {
    return this.#call(prefix, async () => {
      await this.client().send(
        new this.#sdk.CreateTagsCommand({ Resources: ids, Tags: tagList(tags) }),
      );
    });
  }

  /** CreateSnapshot tagged at creation; resolves at once to the new snapshot (maybe pending). */
  async createSnapshot(
    volumeId: string,
    req: { description: string; tags: Record<string, string>; prefix: string },
  ): Promise<EbsSnapshot> {
    const s = await this.#call(req.prefix, () =>
      this.client().send(
        new this.#sdk.CreateSnapshotCommand({
          VolumeId: volumeId,
          Description: req.description,
          ...tagSpec("snapshot", req.tags),
        }),
      ));
    return this.#toSnapshot(s);
  }

  /** The snapshot, or undefined when EC2 does not know it. One DescribeSnapshots call. */
  async findSnapshot(id: string, prefix: string, region = this.region) {
    try {
      const out = await this.client(region).send(
        new this.#sdk.DescribeSnapshotsCommand({ SnapshotIds: [id] }),
      );
      const s = out.Snapshots?.[0];
      return s ? this.#toSnapshot(s) : undefined;
    } catch (err) {
      const e = awsError(this.#errors, err, prefix);
      if (e instanceof this.#errors.NotFoundError) return undefined;
      throw e;
    }
  }

  /** The snapshot; NotFoundError `<prefix>: InvalidSnapshot.NotFound: ...` when unknown. */
  async snapshot(id: string, prefix: string, region = this.region): Promise<EbsSnapshot> {
    const s = await this.findSnapshot(id, prefix, region);
    if (!s) {
      throw new this.#errors.NotFoundError(
        `${prefix}: InvalidSnapshot.NotFound: the snapshot '${id}' does not exist`,
      );
    }
    return s;
  }

  /** Snapshots with every tag of `tags` (paginated DescribeSnapshots of the account's own). */
  async snapshotsTagged(tags: Record<string, string>, prefix: string): Promise<EbsSnapshot[]> {
    const out: EbsSnapshot[] = [];
    let token: string | undefined;
    do {
      const page = await this.#call(prefix, () =>
        this.client().send(
          new this.#sdk.DescribeSnapshotsCommand({
            OwnerIds: ["self"],
            Filters: Object.entries(tags).map(([k, v]) => ({ Name: `tag:${k}`, Values: [v] })),
            NextToken: token,
          }),
        ));
      for (const s of page.Snapshots ?? []) out.push(this.#toSnapshot(s));
      token = page.NextToken;
    } while (token);
    return out;
  }

  /** Waits until the snapshot is "completed"; an "error" state ends the wait at once. */
  waitSnapshot(
    id: string,
    w: { prefix: string; region?: string; signal?: AbortSignal },
  ): Promise<EbsSnapshot> {
    return waitFor(async (): Promise<Check<EbsSnapshot>> => {
      const s = await this.findSnapshot(id, w.prefix, w.region);
      if (!s) return { done: false, state: "not found" };
      if (s.state === "error") {
        throw new this.#errors.BackendError(`${w.prefix}: snapshot ${id} is in state "error"`);
      }
      if (s.state === "completed") return { done: true, value: s };
      return { done: false, state: `${s.state} ${s.progress}`.trim() };
    }, {
      what: `${w.prefix.replace(/^Cannot /, "")}: wait for snapshot ${id} to complete`,
      timeoutMs: this.waits.snapshotMs,
      initialDelayMs: this.waits.initialDelayMs,
      maxDelayMs: this.waits.maxDelayMs * 6,
      signal: w.signal,
      timeout: (m) => new this.#errors.TimeoutError(m),
    });
  }

  deleteSnapshot(id: string, prefix: string, region = this.region): Promise<void> {
    return this.#call(prefix, async () => {
      await this.client(region).send(new this.#sdk.DeleteSnapshotCommand({ SnapshotId: id }));
    });
  }

  /** CopySnapshot from `sourceRegion` into this region; resolves to the new snapshot's id. */
  async copySnapshot(
    sourceId: string,
    from: {
      sourceRegion: string;
      description: string;
      tags: Record<string, string>;
      prefix: string;
    },
  ): Promise<string> {
    const out = await this.#call(from.prefix, () =>
      this.client().send(
        new this.#sdk.CopySnapshotCommand({
          SourceRegion: from.sourceRegion,
          SourceSnapshotId: sourceId,
          Description: from.description,
          ...tagSpec("snapshot", from.tags),
        }),
      ));
    return out.SnapshotId!;
  }
}
