// The ebs driver through the host's block framework, against moto_server (EC2 API, metadata
// service) and loop devices. moto attaches no disk: tests/ebs_fake_host.ts, a proxy in front of
// moto, stands a loop device in for each attached volume at the path a Nitro instance shows
// (/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id>), and copies its image on
// CreateSnapshot so a volume made from the snapshot holds its data. moto's metadata instance
// (i-fake) is unknown to its EC2, so the tests start an instance and pass ebs.instanceid.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import * as errors from "../../mod.ts";
import type { PluginApi, VolumeOperations } from "../../mod.ts";
import { awsSdkDeps } from "../../src/plugins/aws_deps.ts";
import { type BlockDriver, NativeBackupRegistry } from "../../src/plugins/block/driver.ts";
import { registeredInit, withTempDir } from "../../src/plugins/testing.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { silentLogger } from "../../src/util/log.ts";
import loopSetup from "../loop/mod.ts";
import { s3TestEndpoint } from "../../tests/s3_helper.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { startFakeHost } from "../../tests/ebs_fake_host.ts";
import { type MotoServer, runInstance, startMoto } from "../../tests/moto_helper.ts";
import { createEbsAdapter } from "./adapter.ts";
import { Ec2Cloud } from "./cloud.ts";

const exec = createExec({ timeoutMs: 120_000 });
let moto: MotoServer;
let host: Awaited<ReturnType<typeof startFakeHost>>;
let instanceId: string;
let env: Record<string, string>;
let tmp: string;
let cloud: Ec2Cloud;

before(async () => {
  moto = await startMoto();
  tmp = (await exec("mktemp", ["-d", "/tmp/convoy-ebs-XXXXXX"])).stdout.trim();
  host = await startFakeHost(moto.endpoint, { dir: join(tmp, "host"), exec, env: moto.env });
  env = { ...moto.env, AWS_ENDPOINT_URL: host.endpoint };
  instanceId = await runInstance(moto.env);
  cloud = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", { env });
});

after(async () => {
  cloud?.close();
  await host?.close();
  await moto?.close();
  if (tmp) await exec("rm", ["-rf", tmp]);
});

const backup = createBackupStoreApi({ log: silentLogger });

async function start(root: string, opts: Record<string, string> = {}) {
  return await startWith(root, opts, {});
}

async function startWith(
  root: string,
  opts: Record<string, string>,
  deps: { deviceTimeoutMs?: number; natives?: NativeBackupRegistry },
) {
  const setup = (api: PluginApi) =>
    api.registerBlockDevice("ebs", (ctx) =>
      createEbsAdapter(api, ctx, {
        env,
        maxAttempts: 2,
        waits: { initialDelayMs: 20, maxDelayMs: 200 },
        deviceTimeoutMs: deps.deviceTimeoutMs ?? 5000,
      }));
  const init = registeredInit(setup, "ebs", { exec, backup, natives: deps.natives });
  return await init(root, { "ebs.instanceid": instanceId, ...opts }) as BlockDriver;
}

/** True when `path` can be written within 3 s (a frozen filesystem blocks writes). */
async function writable(path: string): Promise<boolean> {
  try {
    await exec("timeout", ["3", "sh", "-c", `echo x > '${path}' && sync '${path}'`]);
    return true;
  } catch {
    return false;
  }
}

describe("ebs driver", () => {
  it("reports Convoy's info fields, the metadata service's placement and gp3 by default", async () => {
    await withTempDir(async (root) => {
      const d = await start(root);
      const info = await d.info();
      assert.equal(info.InstanceID, instanceId);
      assert.equal(info.Region, "us-east-1");
      assert.equal(info.AvailiablityZone, "us-east-1a");
      assert.equal(info.DefaultVolumeType, "gp3");
      assert.equal(info.DefaultVolumeSize, String(4 * 1024 ** 3));
      await d.shutdown?.();
    });
  });

  it("creates, mounts, snapshots (frozen, then thawed), backs up to ebs:// and restores, keeps the EBS volume on --reference and adopts it with --id", async () => {
    await withTempDir(async (root) => {
      const d = await start(root, { "ebs.fsfreeze": "true", "ebs.defaultvolumesize": "1G" });
      const v: VolumeOperations = await d.volumeOps();
      try {
        await v.createVolume("e1", { VolumeType: "gp3" });
        const info = await v.getVolumeInfo("e1");
        const volId = info.EBSVolumeID;
        assert.match(volId, /^vol-/);
        assert.equal(info.Type, "gp3");
        assert.equal(info.AvailiablityZone, "us-east-1a");
        const tagged = await cloud.volume(volId, "x");
        assert.equal(tagged.tags.Name, "e1");
        assert.equal(tagged.sizeGiB, 1);

        const mp = await v.mountVolume("e1", {});
        await writeFile(join(mp, "hello.txt"), "hello ebs");
        const s = await d.snapshotOps();
        await s.createSnapshot("s1", "e1");
        assert.ok(await writable(join(mp, "after.txt")), "thawed after the snapshot");
        const snapInfo = await s.getSnapshotInfo("s1", "e1");
        assert.match(snapInfo.EBSSnapshotID, /^snap-/);
        assert.equal(snapInfo.EBSVolumeID, volId);

        // a failed CreateSnapshot leaves the filesystem thawed
        host.failures.CreateSnapshot = { left: 1, status: 403, code: "UnauthorizedOperation" };
        const failed = await Promise.resolve(s.createSnapshot("s2", "e1")).catch((e) => e);
        assert.match(
          String(failed),
          /^BackendError: Cannot create snapshot "s2" of volume "e1": UnauthorizedOperation: Injected/,
        );
        assert.ok(await writable(join(mp, "after2.txt")), "thawed after a failed snapshot");

        const url = await d.block.backUp("s1", "e1", { destURL: "ebs://" });
        assert.equal(url, `ebs://us-east-1/${snapInfo.EBSSnapshotID}`);
        const b = await d.backupOps();
        const binfo = await b.getBackupInfo(url);
        // (EC2 names another EBSVolumeID: the fake host wrote the snapshot with StartSnapshot)
        assert.equal(binfo.EBSSnapshotID, snapInfo.EBSSnapshotID);
        assert.equal(binfo.State, "completed");
        assert.equal(binfo.VolumeName, "e1");
        const listed = await b.listBackup("ebs://us-east-1", { VolumeName: "e1" });
        assert.deepEqual(Object.keys(listed), [url]);

        await v.createVolume("e2", { BackupURL: url });
        const mp2 = await v.mountVolume("e2", {});
        assert.equal(await readFile(join(mp2, "hello.txt"), "utf8"), "hello ebs");
        const e2 = await v.getVolumeInfo("e2");
        assert.equal((await cloud.volume(e2.EBSVolumeID, "x")).snapshotId, snapInfo.EBSSnapshotID);

        // list and inspect ask AWS nothing
        host.seen.length = 0;
        await v.listVolume({});
        await v.getVolumeInfo("e1");
        await s.listSnapshot({});
        await s.getSnapshotInfo("s1", "e1");
        assert.deepEqual(host.seen, []);

        // snapshot delete removes only the reference (Convoy), unless ebs.deletesnapshots
        await s.createSnapshot("s3", "e1");
        const s3id = (await s.getSnapshotInfo("s3", "e1")).EBSSnapshotID;
        await s.deleteSnapshot("s3", "e1");
        assert.equal((await cloud.snapshot(s3id, "x")).id, s3id, "EBS snapshot kept");
        await cloud.deleteSnapshot(s3id, "x");

        // delete refuses while mounted
        await assert.rejects(Promise.resolve(v.deleteVolume("e1", {})), errors.ConflictError);
        await v.umountVolume("e1");
        await v.deleteVolume("e1", { ReferenceOnly: "true" });
        assert.equal((await cloud.volume(volId, "x")).state, "available", "kept by --reference");
        assert.equal(host.attached(volId), false, "detached by the delete");

        await v.createVolume("e3", { VolumeDriverID: volId });
        const mp3 = await v.mountVolume("e3", {});
        assert.equal(
          await readFile(join(mp3, "hello.txt"), "utf8"),
          "hello ebs",
          "adopted, no mkfs",
        );

        for (const name of ["e2", "e3"]) {
          const id = (await v.getVolumeInfo(name)).EBSVolumeID;
          await v.umountVolume(name);
          await v.deleteVolume(name, {});
          assert.equal(await cloud.findVolume(id, "x"), undefined, `${name} deleted`);
        }
        await b.deleteBackup(url);
        assert.equal(await cloud.findSnapshot(snapInfo.EBSSnapshotID, "x"), undefined);
      } finally {
        for (const name of ["e1", "e2", "e3"]) {
          await Promise.resolve(v.umountVolume(name)).catch(() => {});
        }
        await d.shutdown?.();
      }
    });
  });

  it("refuses to adopt a volume attached to another instance, and bad types and IOPS", async () => {
    await withTempDir(async (root) => {
      const d = await start(root);
      const v = await d.volumeOps();
      const other = await runInstance(moto.env);
      const vol = await cloud.createVolume({
        zone: "us-east-1a",
        sizeGiB: 1,
        type: "gp3",
        tags: {},
      }, {
        prefix: "x",
      });
      await cloud.attachVolume(vol.id, { instanceId: other, device: "/dev/sdf", prefix: "x" });
      const err = await Promise.resolve(v.createVolume("a1", { VolumeDriverID: vol.id })).catch((
        e,
      ) => e);
      assert.ok(err instanceof errors.ConflictError, String(err));
      assert.match(err.message, new RegExp(`attached to instance ${other}`));
      await assert.rejects(
        Promise.resolve(v.createVolume("a2", { VolumeType: "io2" })),
        /volume type "io2" needs --iops/,
      );
      await assert.rejects(
        Promise.resolve(v.createVolume("a3", { VolumeType: "gp2", VolumeIOPS: "100" })),
        /takes no --iops/,
      );
      await assert.rejects(
        Promise.resolve(v.createVolume("a4", { VolumeType: "floppy" })),
        /VolumeType/,
      );
      await assert.rejects(
        Promise.resolve(v.createVolume("a7", { VolumeType: "gp2", VolumeThroughput: "250" })),
        /volume type "gp2" takes no --throughput \(only gp3 does\)/,
      );
      await v.createVolume("t1", { VolumeType: "gp3", VolumeThroughput: "250" });
      const t1 = await v.getVolumeInfo("t1");
      assert.equal(t1.Throughput, "250");
      assert.equal(
        (await cloud.volume(t1.EBSVolumeID, "x")).throughput,
        250,
        "CreateVolume got it",
      );
      await v.deleteVolume("t1", {});
      host.failures.CreateVolume = { left: 1, status: 400, code: "InvalidParameterValue" };
      const aws = await Promise.resolve(v.createVolume("a5", {})).catch((e) => e);
      assert.ok(aws instanceof errors.InvalidArgumentError, String(aws));
      assert.equal(
        aws.message,
        'Cannot create volume "a5": InvalidParameterValue: Injected InvalidParameterValue',
      );
      host.failures.CreateVolume = { left: 1, status: 400, code: "UnauthorizedOperation" };
      const denied = await Promise.resolve(v.createVolume("a6", {})).catch((e) => e);
      assert.equal(
        denied.message,
        'Cannot create volume "a6": UnauthorizedOperation: Injected UnauthorizedOperation',
      );
      assert.doesNotMatch(denied.message, /AKIA|convoy-test-secret/);
      assert.deepEqual(Object.keys(await v.listVolume({})), []);
      await cloud.detachVolume(vol.id, { instanceId: other, prefix: "x" });
      await cloud.deleteVolume(vol.id, "x");
      await d.shutdown?.();
    });
  });

  it("backs up to vfs:// through the EBS direct APIs, incrementally by changed blocks, and restores into ebs and loop", async () => {
    await withTempDir(async (root) => {
      const store = join(root, "store");
      await mkdir(store);
      const d = await start(join(root, "ebs"), { "ebs.defaultvolumesize": "1G" });
      const v = await d.volumeOps();
      const s = await d.snapshotOps();
      const loop = await registeredInit(loopSetup, "loop", { exec, backup })(join(root, "loop"), {
        "loop.defaultvolumesize": "64M",
      });
      const lv = await loop.volumeOps();
      const reads = () =>
        host.seen.filter((x) => /^GET \/snapshots\/[^/]+\/blocks\/\d+$/.test(x)).length;
      const big = randomBytes(4 * 1024 * 1024);
      try {
        await v.createVolume("d1", {});
        const mp = await v.mountVolume("d1", {});
        await writeFile(join(mp, "big.bin"), big);
        await s.createSnapshot("d1s1", "d1");
        const r0 = reads();
        const url1 = await d.block.backUp("d1s1", "d1", { destURL: `vfs://${store}` });
        const full = reads() - r0;
        assert.ok(full >= 8, `the full backup read the snapshot's blocks (${full})`);
        await writeFile(join(mp, "small.txt"), "changed");
        await s.createSnapshot("d1s2", "d1");
        const r1 = reads();
        host.seen.length = 0;
        const url2 = await d.block.backUp("d1s2", "d1", { destURL: `vfs://${store}` });
        const incremental = reads();
        assert.ok(
          host.seen.some((x) => x.endsWith("/changedblocks")),
          "the incremental asked ListChangedBlocks",
        );
        assert.ok(incremental < full / 2, `incremental read ${incremental} blocks, full ${full}`);
        assert.notEqual(url1, url2);
        void r1;

        await v.createVolume("d2", { BackupURL: url2 });
        const mp2 = await v.mountVolume("d2", {});
        assert.deepEqual(await readFile(join(mp2, "big.bin")), big);
        assert.equal(await readFile(join(mp2, "small.txt"), "utf8"), "changed");

        await lv.createVolume("l1", { BackupURL: url2 });
        const lmp = await lv.mountVolume("l1", {});
        assert.deepEqual(await readFile(join(lmp, "big.bin")), big);
        assert.equal(await readFile(join(lmp, "small.txt"), "utf8"), "changed");
        const listed = await (await d.backupOps()).listBackup(`vfs://${store}`, {});
        assert.ok(Object.keys(listed).every((u) => u.startsWith("vfs://")), "no EBS snapshots");
      } finally {
        for (const n of ["d1", "d2"]) await Promise.resolve(v.umountVolume(n)).catch(() => {});
        await Promise.resolve(lv.umountVolume("l1")).catch(() => {});
        for (const n of ["d1", "d2"]) await Promise.resolve(v.deleteVolume(n, {})).catch(() => {});
        await Promise.resolve(lv.deleteVolume("l1", {})).catch(() => {});
        await d.shutdown?.();
        await loop.shutdown?.();
      }
    });
  });

  it("backs up to s3:// through the EBS direct APIs and restores into a new ebs volume", async () => {
    const s3 = await s3TestEndpoint({ prefix: "convoy-ebs" });
    await withTempDir(async (root) => {
      const d = await start(root);
      const v = await d.volumeOps();
      const dest = `s3://${s3.bucket}@us-east-1/ebs`;
      try {
        await v.createVolume("s3a", {});
        const mp = await v.mountVolume("s3a", {});
        await writeFile(join(mp, "s3.txt"), "through s3");
        await (await d.snapshotOps()).createSnapshot("s3s", "s3a");
        const url = await d.block.backUp("s3s", "s3a", { destURL: dest, endpoint: s3.endpoint });
        assert.match(url, /^s3:\/\//);
        await v.createVolume("s3b", { BackupURL: url, EndpointURL: s3.endpoint });
        const mp2 = await v.mountVolume("s3b", {});
        assert.equal(await readFile(join(mp2, "s3.txt"), "utf8"), "through s3");
        await (await d.backupOps()).deleteBackup(url, { EndpointURL: s3.endpoint });
      } finally {
        for (const n of ["s3a", "s3b"]) {
          await Promise.resolve(v.umountVolume(n)).catch(() => {});
          await Promise.resolve(v.deleteVolume(n, {})).catch(() => {});
        }
        await d.shutdown?.();
      }
    });
    await s3.close();
  });

  it("restores an ebs:// backup of another region only with ebs.crossregioncopy, by CopySnapshot", async () => {
    // Made straight on moto (not through the fake host, which writes us-east-1 snapshots)
    const west = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-west-2", { env: moto.env });
    const wv = await west.createVolume({ zone: "us-west-2a", sizeGiB: 1, type: "gp3", tags: {} }, {
      prefix: "x",
    });
    const ws = await west.createSnapshot(wv.id, { description: "w", tags: {}, prefix: "x" });
    const url = `ebs://us-west-2/${ws.id}`;
    await withTempDir(async (root) => {
      const d = await start(join(root, "a"));
      const err = await Promise.resolve(
        (await d.volumeOps()).createVolume("w1", { BackupURL: url }),
      )
        .catch((e) => e);
      assert.ok(err instanceof errors.InvalidArgumentError, String(err));
      assert.match(
        err.message,
        /in region "us-west-2", this instance in "us-east-1".*ebs\.crossregioncopy=true/,
      );
      await d.shutdown?.();
      const c = await start(join(root, "b"), { "ebs.crossregioncopy": "true" });
      const v = await c.volumeOps();
      await v.createVolume("w2", { BackupURL: url });
      const id = (await v.getVolumeInfo("w2")).EBSVolumeID;
      const made = await cloud.volume(id, "x");
      assert.notEqual(made.snapshotId, ws.id);
      const copy = await cloud.snapshot(made.snapshotId, "x");
      assert.equal(copy.tags.ConvoyCopyOf, url);
      await v.deleteVolume("w2", {});
      await c.shutdown?.();
    });
    await west.deleteSnapshot(ws.id, "x");
    await west.deleteVolume(wv.id, "x");
    west.close();
  });

  it("gives up on a device that never shows, with a TimeoutError, and leaves the adopted volume detached", async () => {
    // Made straight on moto: the fake host attaches no loop device for it
    const direct = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", { env: moto.env });
    const vol = await direct.createVolume(
      { zone: "us-east-1a", sizeGiB: 1, type: "gp3", tags: {} },
      {
        prefix: "x",
      },
    );
    await withTempDir(async (root) => {
      const d = await startWith(root, {}, { deviceTimeoutMs: 500 });
      const v = await d.volumeOps();
      const err = await Promise.resolve(v.createVolume("nd", { VolumeDriverID: vol.id })).catch((
        e,
      ) => e);
      assert.ok(err instanceof errors.TimeoutError, String(err));
      assert.match(
        err.message,
        new RegExp(
          `find the device of ${vol.id} .*nvme-Amazon_Elastic_Block_Store_${
            vol.id.replace("-", "")
          }`,
        ),
      );
      assert.deepEqual(Object.keys(await v.listVolume({})), []);
      const after = await direct.volume(vol.id, "x");
      assert.equal(after.state, "available", "detached again, kept (adopted)");
      await d.shutdown?.();
    });
    await direct.deleteVolume(vol.id, "x");
    direct.close();
  });

  it("with ebs.deletesnapshots, snapshot delete removes the EBS snapshot unless it is an ebs:// backup", async () => {
    await withTempDir(async (root) => {
      const d = await start(root, { "ebs.deletesnapshots": "true" });
      const v = await d.volumeOps();
      const s = await d.snapshotOps();
      try {
        await v.createVolume("ds", {});
        await s.createSnapshot("dsa", "ds");
        await s.createSnapshot("dsb", "ds");
        const a = (await s.getSnapshotInfo("dsa", "ds")).EBSSnapshotID;
        const b = (await s.getSnapshotInfo("dsb", "ds")).EBSSnapshotID;
        const url = await d.block.backUp("dsb", "ds", { destURL: "ebs://" });
        await s.deleteSnapshot("dsa", "ds");
        assert.equal(await cloud.findSnapshot(a, "x"), undefined, "deleted");
        await s.deleteSnapshot("dsb", "ds");
        assert.equal((await cloud.snapshot(b, "x")).id, b, "kept: it is a backup");
        await (await d.backupOps()).deleteBackup(url);
        assert.equal(await cloud.findSnapshot(b, "x"), undefined);
      } finally {
        await Promise.resolve(v.deleteVolume("ds", {})).catch(() => {});
        await d.shutdown?.();
      }
    });
  });

  it("deletes the EBS snapshot of a snapshot create whose record could not be written", async () => {
    await withTempDir(async (root) => {
      const d = await start(root);
      const v = await d.volumeOps();
      const s = await d.snapshotOps();
      const tagged = (snap: string) =>
        cloud.snapshotsTagged({ ConvoyVolumeName: "or1", ConvoySnapshotName: snap }, "x");
      try {
        await v.createVolume("or1", {});
        await s.createSnapshot("kept", "or1");
        assert.equal((await tagged("kept")).length, 1, "a recorded snapshot is found by its tags");
        // The record cannot be replaced once EC2 has answered CreateSnapshot (a folder in its way)
        const record = join(root, "state", "or1.json");
        const saved = await readFile(record);
        host.after.CreateSnapshot = async () => {
          await rm(record);
          await mkdir(record);
        };
        const err = await Promise.resolve(s.createSnapshot("orph", "or1")).catch((e) => e);
        assert.match(String(err), /Cannot create snapshot "orph" of volume "or1"/);
        await rm(record, { recursive: true });
        await writeFile(record, saved);
        assert.deepEqual(await tagged("orph"), [], "the unrecorded EBS snapshot is deleted");
        assert.equal((await tagged("kept")).length, 1);
        assert.deepEqual(Object.keys(await s.listSnapshot({ VolumeName: "or1" })), ["kept"]);
      } finally {
        for (const x of await tagged("kept").catch(() => [])) await cloud.deleteSnapshot(x.id, "x");
        await Promise.resolve(v.deleteVolume("or1", {})).catch(() => {});
        await d.shutdown?.();
      }
    });
  });

  it("attaches volumes created at once at different device names, and refuses one attached elsewhere since", async () => {
    await withTempDir(async (root) => {
      const d = await start(root);
      const v = await d.volumeOps();
      const names = ["p1", "p2", "p3"];
      try {
        await Promise.all(names.map((n) => v.createVolume(n, {})));
        const devices = await Promise.all(names.map(async (n) => {
          const id = (await v.getVolumeInfo(n)).EBSVolumeID;
          return (await cloud.volume(id, "x")).attachments[0].device;
        }));
        assert.equal(new Set(devices).size, 3, `distinct names: ${devices}`);
        for (const dev of devices) assert.match(dev, /^\/dev\/sd[f-p]$/);

        // p1 is taken over by another instance behind the daemon's back
        const id = (await v.getVolumeInfo("p1")).EBSVolumeID;
        const other = await runInstance(moto.env);
        await cloud.detachVolume(id, { instanceId, prefix: "x" });
        await cloud.attachVolume(id, { instanceId: other, device: "/dev/sdf", prefix: "x" });
        const err = await Promise.resolve(v.mountVolume("p1", {})).catch((e) => e);
        assert.ok(err instanceof errors.ConflictError, String(err));
        assert.match(err.message, new RegExp(`attached to instance ${other}`));
        await cloud.detachVolume(id, { instanceId: other, prefix: "x" });
      } finally {
        for (const n of names) await Promise.resolve(v.deleteVolume(n, {})).catch(() => {});
        await d.shutdown?.();
      }
    });
  });

  it("restores an ebs:// backup into a loop volume through the EBS direct APIs, holes left sparse", async () => {
    await withTempDir(async (root) => {
      const natives = new NativeBackupRegistry();
      const d = await startWith(join(root, "ebs"), { "ebs.defaultvolumesize": "1G" }, { natives });
      const v = await d.volumeOps();
      const loop = await registeredInit(loopSetup, "loop", { exec, backup, natives })(
        join(root, "loop"),
        { "loop.defaultvolumesize": "32M" },
      );
      const lv = await loop.volumeOps();
      const data = randomBytes(3 * 1024 * 1024 + 12345);
      try {
        await v.createVolume("n1", {});
        const mp = await v.mountVolume("n1", {});
        await writeFile(join(mp, "data.bin"), data);
        await (await d.snapshotOps()).createSnapshot("n1s", "n1");
        const url = await d.block.backUp("n1s", "n1", { destURL: "ebs://" });
        const snapId = url.split("/").pop()!;

        host.seen.length = 0;
        await lv.createVolume("ln1", { BackupURL: url });
        assert.ok(host.seen.includes(`GET /snapshots/${snapId}/blocks`), "ListSnapshotBlocks");
        assert.ok(host.seen.some((x) => x.startsWith(`GET /snapshots/${snapId}/blocks/`)));
        const info = await lv.getVolumeInfo("ln1");
        assert.equal(info.Size, String(1024 ** 3), "sized from the snapshot's VolumeSize");

        // Byte for byte the snapshot (the fake host keeps its image; beyond it, zeros)
        const image = await readFile(join(tmp, "host", `${snapId}.img`));
        const fh = await open(info.Device, "r");
        try {
          const got = new Uint8Array(image.length + 4 * 1024 * 1024);
          await fh.read(got, 0, got.length, 0);
          assert.ok(image.equals(got.subarray(0, image.length)), "same bytes");
          assert.ok(got.subarray(image.length).every((b) => b === 0), "zeros past the data");
        } finally {
          await fh.close();
        }
        const st = await stat(join(root, "loop", "volumes", "ln1.img"));
        assert.ok(st.blocks * 512 < image.length, `zero blocks not written (${st.blocks * 512})`);

        const lmp = await lv.mountVolume("ln1", {});
        assert.deepEqual(await readFile(join(lmp, "data.bin")), data);

        // a size that differs from the snapshot's is refused, and nothing is left
        await assert.rejects(
          Promise.resolve(lv.createVolume("ln2", { BackupURL: url, Size: "64M" })),
          /size must match the backup's size 1073741824/,
        );
        assert.deepEqual(Object.keys(await lv.listVolume({})), ["ln1"]);
        await (await d.backupOps()).deleteBackup(url);
      } finally {
        await Promise.resolve(lv.umountVolume("ln1")).catch(() => {});
        await Promise.resolve(lv.deleteVolume("ln1", {})).catch(() => {});
        await Promise.resolve(v.umountVolume("n1")).catch(() => {});
        await Promise.resolve(v.deleteVolume("n1", {})).catch(() => {});
        await d.shutdown?.();
        await loop.shutdown?.();
      }
    });
  });

  it("restores a loop volume's backup into an ebs volume", async () => {
    await withTempDir(async (root) => {
      const store = join(root, "store");
      await mkdir(store);
      const loop = await registeredInit(loopSetup, "loop", { exec, backup })(join(root, "loop"), {
        "loop.defaultvolumesize": "32M",
      });
      const lv = await loop.volumeOps();
      const d = await start(join(root, "ebs"));
      const v = await d.volumeOps();
      try {
        await lv.createVolume("lsrc", {});
        await writeFile(join(await lv.mountVolume("lsrc", {}), "from-loop.txt"), "loop data");
        await (await loop.snapshotOps()).createSnapshot("lsnap", "lsrc");
        const url = await (await loop.backupOps()).createBackup(
          "lsnap",
          "lsrc",
          `vfs://${store}`,
          {},
        );
        await v.createVolume("fromloop", { BackupURL: url });
        const mp = await v.mountVolume("fromloop", {});
        assert.equal(await readFile(join(mp, "from-loop.txt"), "utf8"), "loop data");
      } finally {
        await Promise.resolve(v.umountVolume("fromloop")).catch(() => {});
        await Promise.resolve(v.deleteVolume("fromloop", {})).catch(() => {});
        await Promise.resolve(lv.umountVolume("lsrc")).catch(() => {});
        await Promise.resolve(lv.deleteVolume("lsrc", {})).catch(() => {});
        await d.shutdown?.();
        await loop.shutdown?.();
      }
    });
  });
});
