// The AWS side of the ebs driver against a real EC2/EBS API server: moto_server (started here,
// or shared through CONVOY_TEST_MOTO_ENDPOINT). Snapshots whose blocks are read are written with
// the EBS direct APIs (StartSnapshot/PutSnapshotBlock), since moto keeps block data only for those.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as errors from "../../mod.ts";
import { awsSdkDeps } from "../../src/plugins/aws_deps.ts";
import {
  type MotoServer,
  runInstance,
  startFaultProxy,
  startMoto,
} from "../../tests/moto_helper.ts";
import { awsError, Ec2Cloud } from "./cloud.ts";
import { chooseDeviceName, deviceCandidates } from "./devices.ts";
import { blocksToRanges, EBS_BLOCK, EbsDirect } from "./direct.ts";
import { imdsEndpoint, readPlacement } from "./imds.ts";

let moto: MotoServer;
let cloud: Ec2Cloud;
let instanceId: string;

before(async () => {
  moto = await startMoto();
  cloud = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", {
    env: moto.env,
    waits: { initialDelayMs: 20, maxDelayMs: 200 },
  });
  instanceId = await runInstance(moto.env);
});

after(async () => {
  cloud?.close();
  await moto?.close();
});

async function putSnapshot(
  env: Record<string, string>,
  blocks: Map<number, Uint8Array>,
): Promise<string> {
  const sdk = await awsSdkDeps.ebs();
  const c = new sdk.EBSClient({
    region: "us-east-1",
    endpoint: env.AWS_ENDPOINT_URL,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
  });
  try {
    const s = await c.send(new sdk.StartSnapshotCommand({ VolumeSize: 1 }));
    for (const [i, data] of blocks) {
      await c.send(
        new sdk.PutSnapshotBlockCommand({
          SnapshotId: s.SnapshotId,
          BlockIndex: i,
          BlockData: data,
          DataLength: data.length,
          Checksum: createHash("sha256").update(data).digest("base64"),
          ChecksumAlgorithm: "SHA256",
        }),
      );
    }
    await c.send(
      new sdk.CompleteSnapshotCommand({
        SnapshotId: s.SnapshotId,
        ChangedBlocksCount: blocks.size,
      }),
    );
    return s.SnapshotId!;
  } finally {
    c.destroy();
  }
}

const block = (fill: number) => new Uint8Array(EBS_BLOCK).fill(fill);

describe("readPlacement()", () => {
  it("reads instance id, region and zone from the metadata service with an IMDSv2 token", async () => {
    const p = await readPlacement({}, { env: moto.env });
    assert.deepEqual(p, { instanceId: "i-fake", region: "us-east-1", zone: "us-east-1a" });
  });

  it("keeps the fields the options give and asks only for the others", async () => {
    const p = await readPlacement({ instanceId: instanceId }, { env: moto.env });
    assert.deepEqual(p, { instanceId, region: "us-east-1", zone: "us-east-1a" });
    const none = await readPlacement(
      { instanceId: "i-1", region: "eu-west-1", zone: "eu-west-1b" },
      { env: { AWS_EC2_METADATA_DISABLED: "true" } },
    );
    assert.equal(none.zone, "eu-west-1b");
  });

  it("says it is not on EC2 when the service is disabled or does not answer", async () => {
    await assert.rejects(
      readPlacement({}, { env: { AWS_EC2_METADATA_DISABLED: "true" } }),
      /Not running on an EC2 instance: .*disabled.*ebs\.instanceid, ebs\.region, ebs\.zone/,
    );
    await assert.rejects(
      readPlacement({}, {
        env: { AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://127.0.0.1:9" },
        timeoutMs: 300,
        attempts: 2,
      }),
      /Not running on an EC2 instance: metadata service http:\/\/127\.0\.0\.1:9/,
    );
  });

  it("follows the SDK's endpoint settings", () => {
    assert.equal(imdsEndpoint({}), "http://169.254.169.254");
    assert.equal(
      imdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE: "IPv6" }),
      "http://[fd00:ec2::254]",
    );
    assert.equal(imdsEndpoint({ AWS_EC2_METADATA_SERVICE_ENDPOINT: "http://x:1/" }), "http://x:1");
    assert.equal(imdsEndpoint({ AWS_EC2_METADATA_DISABLED: "true" }), undefined);
  });
});

describe("Ec2Cloud", () => {
  it("creates a tagged volume, attaches it at a free name, detaches and deletes it", async () => {
    const v = await cloud.createVolume(
      {
        zone: "us-east-1a",
        sizeGiB: 2,
        type: "gp3",
        iops: 4000,
        throughput: 250,
        tags: { Name: "db1" },
      },
      { prefix: 'Cannot create volume "db1"' },
    );
    assert.equal(v.state, "available");
    assert.equal(v.sizeGiB, 2);
    assert.equal(v.type, "gp3");
    assert.equal(v.tags.Name, "db1");
    const used = await cloud.attachedDeviceNames(instanceId, "x");
    assert.ok(used.includes("/dev/sda1"), `root device listed: ${used}`);
    const device = chooseDeviceName(used)!;
    assert.equal(device, "/dev/sdf");
    const attached = await cloud.attachVolume(v.id, { instanceId, device, prefix: "x" });
    assert.deepEqual(attached.attachments.map((a) => [a.instanceId, a.device, a.state]), [[
      instanceId,
      "/dev/sdf",
      "attached",
    ]]);
    const after = await cloud.attachedDeviceNames(instanceId, "x");
    assert.equal(chooseDeviceName(after), "/dev/sdg");
    await cloud.detachVolume(v.id, { instanceId, prefix: "x" });
    assert.equal((await cloud.volume(v.id, "x")).state, "available");
    await cloud.deleteVolume(v.id, "x");
    assert.equal(await cloud.findVolume(v.id, "x"), undefined);
  });

  it("honours encryption and a KMS key", async () => {
    const v = await cloud.createVolume(
      { zone: "us-east-1a", sizeGiB: 1, type: "gp2", encrypted: true, tags: {} },
      { prefix: "x" },
    );
    assert.equal(v.encrypted, true);
    await cloud.deleteVolume(v.id, "x");
  });

  it("reports AWS errors with their code, typed, and without credentials", async () => {
    const v = await cloud.createVolume({ zone: "us-east-1a", sizeGiB: 1, type: "gp3", tags: {} }, {
      prefix: "x",
    });
    const err = await cloud.attachVolume(v.id, {
      instanceId: "i-fake",
      device: "/dev/sdf",
      prefix: 'Cannot attach volume "db1"',
    }).catch((e) => e);
    assert.ok(err instanceof errors.NotFoundError, String(err));
    assert.match(err.message, /^Cannot attach volume "db1": InvalidInstanceID\.NotFound: /);
    assert.doesNotMatch(err.message, /AKIA|convoy-test-secret/);
    const bad = await cloud.createVolume(
      { zone: "us-east-1a", sizeGiB: 1, type: "io1", tags: {} },
      { prefix: 'Cannot create volume "v"' },
    ).catch((e) => e);
    assert.ok(bad instanceof errors.ConvoyError, String(bad));
    assert.match(bad.message, /^Cannot create volume "v": \w/);
    const missing = await cloud.volume("vol-0123456789abcdef0", 'Cannot inspect volume "v"').catch((
      e,
    ) => e);
    assert.ok(missing instanceof errors.NotFoundError);
    assert.match(missing.message, /InvalidVolume\.NotFound/);
    await cloud.deleteVolume(v.id, "x");
  });

  it("masks access key ids in error messages", () => {
    const e = Object.assign(new Error("key AKIAIOSFODNN7EXAMPLE is bad"), {
      name: "AuthFailure",
      $metadata: {},
    });
    const out = awsError(errors, e, "Cannot x");
    assert.equal(out.message, "Cannot x: AuthFailure: key <access key id> is bad");
  });

  it("ends a wait that never completes with a TimeoutError naming the last state", async () => {
    const quick = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", {
      env: moto.env,
      waits: { volumeMs: 300, initialDelayMs: 20, maxDelayMs: 50 },
    });
    const v = await quick.createVolume({ zone: "us-east-1a", sizeGiB: 1, type: "gp3", tags: {} }, {
      prefix: "x",
    });
    const t0 = Date.now();
    const err = await quick.waitVolume(v.id, {
      what: 'attach volume "db1"',
      prefix: "x",
      done: () => false,
    }).catch((e) => e);
    assert.ok(err instanceof errors.TimeoutError, String(err));
    assert.match(
      err.message,
      /^Cannot attach volume "db1": timed out after 0\.\d s \(\d+ checks\), last state "available"/,
    );
    assert.ok(Date.now() - t0 < 2000);
    await quick.deleteVolume(v.id, "x");
    quick.close();
  });

  it("retries throttled calls with backoff, and reports throttling that outlasts the attempts", async () => {
    const proxy = await startFaultProxy(moto.endpoint);
    const env = { ...moto.env, AWS_ENDPOINT_URL: proxy.endpoint };
    const c = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", { env, maxAttempts: 4 });
    try {
      const v = await c.createVolume({ zone: "us-east-1a", sizeGiB: 1, type: "gp3", tags: {} }, {
        prefix: "x",
      });
      proxy.failures.DescribeVolumes = { left: 2, status: 503, code: "RequestLimitExceeded" };
      proxy.seen.length = 0;
      assert.equal((await c.volume(v.id, "x")).id, v.id);
      assert.equal(proxy.seen.filter((a) => a === "DescribeVolumes").length, 3);
      proxy.failures.DescribeVolumes = { left: 10, status: 503, code: "RequestLimitExceeded" };
      const err = await c.volume(v.id, 'Cannot inspect volume "db1"').catch((e) => e);
      assert.ok(err instanceof errors.BackendError, String(err));
      assert.match(err.message, /^Cannot inspect volume "db1": RequestLimitExceeded: Injected/);
      proxy.failures.DescribeVolumes.left = 0;
      await c.deleteVolume(v.id, "x");
    } finally {
      c.close();
      await proxy.close();
    }
  });

  it("snapshots a volume with tags, waits for it, finds it by tag, copies and deletes it", async () => {
    const v = await cloud.createVolume({ zone: "us-east-1a", sizeGiB: 1, type: "gp3", tags: {} }, {
      prefix: "x",
    });
    const tag = crypto.randomUUID();
    const s = await cloud.createSnapshot(v.id, {
      description: "Convoy snapshot",
      tags: { ConvoyVolumeName: "db1", ConvoySnapshotName: tag },
      prefix: "x",
    });
    const done = await cloud.waitSnapshot(s.id, { prefix: "x" });
    assert.equal(done.state, "completed");
    assert.equal(done.volumeId, v.id);
    const found = await cloud.snapshotsTagged({ ConvoySnapshotName: tag }, "x");
    assert.deepEqual(found.map((x) => x.id), [s.id]);
    const west = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-west-2", { env: moto.env });
    const copy = await west.copySnapshot(s.id, {
      sourceRegion: "us-east-1",
      description: "copy",
      tags: { ConvoyCopyOf: s.id },
      prefix: "x",
    });
    assert.equal((await west.waitSnapshot(copy, { prefix: "x" })).state, "completed");
    await west.deleteSnapshot(copy, "x");
    assert.equal(await west.findSnapshot(copy, "x"), undefined);
    west.close();
    await cloud.deleteSnapshot(s.id, "x");
    assert.equal(await cloud.findSnapshot(s.id, "x"), undefined);
    await cloud.deleteVolume(v.id, "x");
  });
});

describe("devices", () => {
  it("chooses /dev/sdf../dev/sdp in order, counting xvd names and in-flight ones as taken", () => {
    assert.equal(chooseDeviceName(["/dev/sda1"]), "/dev/sdf");
    assert.equal(chooseDeviceName(["/dev/xvdf", "/dev/sdg"]), "/dev/sdh");
    const all = [..."fghijklmnop"].map((l) => `/dev/sd${l}`);
    assert.equal(chooseDeviceName(all), undefined);
  });

  it("looks for the NVMe by-id link of the volume first, then the names asked for", () => {
    assert.deepEqual(deviceCandidates("vol-0abc", "/dev/sdf"), [
      "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0abc",
      "/dev/sdf",
      "/dev/xvdf",
    ]);
  });
});

describe("EbsDirect", () => {
  it("lists, reads (checksums checked) and compares snapshot blocks", async () => {
    const d = new EbsDirect(await awsSdkDeps.ebs(), errors, "us-east-1", { env: moto.env });
    try {
      const first = await putSnapshot(
        moto.env,
        new Map([[0, block(1)], [3, block(3)], [4, block(4)]]),
      );
      // moto's ListChangedBlocks only walks the first snapshot's blocks, so the second holds
      // every index of the first (changed or not) and no new index.
      const second = await putSnapshot(
        moto.env,
        new Map([[0, block(1)], [3, block(9)], [4, block(4)]]),
      );
      const tokens = await d.snapshotBlocks(first, { prefix: "x" });
      assert.deepEqual([...tokens.keys()].sort(), [0, 3, 4]);
      const data = new Uint8Array(2 * 1024 * 1024);
      data.fill(0xff);
      await d.readRange(first, tokens, { offset: 0, data, prefix: "x" });
      assert.equal(data[0], 1);
      assert.equal(data[EBS_BLOCK], 0, "a block the snapshot does not hold reads as zeros");
      assert.equal(data[3 * EBS_BLOCK + 5], 3);
      const next = new Uint8Array(2 * 1024 * 1024);
      await d.readRange(first, tokens, { offset: 4 * EBS_BLOCK, data: next, prefix: "x" });
      assert.equal(next[0], 4);
      const changed = await d.changedBlocks(first, second, { prefix: "x" });
      assert.deepEqual([...changed.keys()], [3]);
      assert.deepEqual(blocksToRanges([4, 3, 7]), [
        { offset: 3 * EBS_BLOCK, size: 2 * EBS_BLOCK },
        { offset: 7 * EBS_BLOCK, size: EBS_BLOCK },
      ]);
      const err = await d.snapshotBlocks("snap-0000000000000000", { prefix: "Cannot read" }).catch((
        e,
      ) => e);
      assert.ok(err instanceof Error);
      assert.match(err.message, /^Cannot read: /);
    } finally {
      d.close();
    }
  });
});
