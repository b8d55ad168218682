// The ebs driver in a real daemon, configured only through the AWS SDK's standard settings
// (AWS_ENDPOINT_URL, AWS_EC2_METADATA_SERVICE_ENDPOINT, AWS_REGION, a key pair): moto_server
// answers EC2 and the metadata service; tests/ebs_fake_host.ts, a proxy in front of it, stands a
// loop device in for each attached volume (moto attaches no disk) at the NVMe by-id path. moto's
// metadata instance (i-fake) is unknown to its EC2, so the daemon gets ebs.instanceid.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import * as errors from "../mod.ts";
import { Ec2Cloud } from "../plugins/ebs/cloud.ts";
import { awsSdkDeps } from "../src/plugins/aws_deps.ts";
import { createExec } from "../src/runtime/exec.ts";
import { startFakeHost } from "./ebs_fake_host.ts";
import { ok, rawRequest, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";
import { type MotoServer, runInstance, startMoto } from "./moto_helper.ts";

const exec = createExec({ timeoutMs: 60_000 });
let moto: MotoServer;
let host: Awaited<ReturnType<typeof startFakeHost>>;
let tmp: { dir: string; cleanup: () => Promise<void> };
let cloud: Ec2Cloud;
let instanceId: string;
let sdkEnv: Record<string, string>;

before(async () => {
  moto = await startMoto();
  tmp = await tempDir("convoy-ebs-daemon-");
  host = await startFakeHost(moto.endpoint, { dir: join(tmp.dir, "host"), exec, env: moto.env });
  instanceId = await runInstance(moto.env);
  sdkEnv = { ...moto.env, AWS_ENDPOINT_URL: host.endpoint, AWS_EC2_METADATA_DISABLED: "" };
  cloud = new Ec2Cloud(await awsSdkDeps.ec2(), errors, "us-east-1", { env: sdkEnv });
});

after(async () => {
  cloud?.close();
  await host?.close();
  await moto?.close();
  await tmp?.cleanup();
});

function daemon(root: string): Promise<TestDaemon> {
  return startDaemon({
    root,
    env: sdkEnv,
    args: [
      "--drivers",
      "ebs",
      "--drivers",
      "loop",
      "--driver-opts",
      `ebs.instanceid=${instanceId}`,
      "--driver-opts",
      "ebs.defaultvolumesize=1G",
    ],
  });
}

describe("ebs driver in the daemon", () => {
  it("serves the CLI and Docker with the SDK's standard settings, and keeps mounts across a restart", async () => {
    const root = join(tmp.dir, "root");
    let d = await daemon(root);
    const cli = (...args: string[]) => ok(args, { socket: d.socket });
    try {
      const info = JSON.parse(await cli("info"));
      assert.equal(info.ebs.InstanceID, instanceId);
      assert.equal(info.ebs.AvailiablityZone, "us-east-1a", "zone from the metadata service");

      assert.equal(
        await cli("create", "c1", "--size", "1G", "--type", "gp3", "--throughput", "200"),
        "c1",
      );
      const c1 = JSON.parse(await cli("inspect", "c1"));
      const volId = c1.DriverInfo.EBSVolumeID;
      assert.match(volId, /^vol-/);
      assert.equal(c1.DriverInfo.Type, "gp3");
      assert.equal(c1.DriverInfo.Throughput, "200");
      assert.equal((await cloud.volume(volId, "x")).throughput, 200, "CreateVolume got it");
      const mp = await cli("mount", "c1");
      await writeFile(join(mp, "data.txt"), "kept across restarts");
      await cli("snapshot", "create", "c1", "--name", "cs1");
      const url = await cli("backup", "create", "cs1", "--dest", "ebs://");
      assert.match(url, /^ebs:\/\/us-east-1\/snap-[0-9a-f]+$/);

      // the EBS snapshot restores into a loop volume, read through the EBS direct APIs
      assert.equal(await cli("create", "l1", "--driver", "loop", "--backup", url), "l1");
      const l1 = JSON.parse(await cli("inspect", "l1"));
      assert.equal(l1.Driver, "loop");
      assert.equal(l1.DriverInfo.Size, String(1024 ** 3), "the snapshot's VolumeSize");
      const lmp = await cli("mount", "l1");
      assert.equal(await readFile(join(lmp, "data.txt"), "utf8"), "kept across restarts");
      await cli("umount", "l1");
      await cli("delete", "l1");

      // Docker: -o driver=ebs -o size= -o type=; Remove keeps the EBS volume
      const create = await rawRequest(
        d.socket,
        "POST",
        "/VolumeDriver.Create",
        JSON.stringify({
          Name: "dk1",
          Opts: { driver: "ebs", size: "2G", type: "gp3", throughput: "250" },
        }),
      );
      assert.equal(JSON.parse(create.body).Err, "", create.body);
      const dk1 = JSON.parse(await cli("inspect", "dk1")).DriverInfo;
      assert.equal(dk1.Type, "gp3");
      assert.equal((await cloud.volume(dk1.EBSVolumeID, "x")).sizeGiB, 2);
      assert.equal((await cloud.volume(dk1.EBSVolumeID, "x")).throughput, 250, "-o throughput");
      const rm = await rawRequest(
        d.socket,
        "POST",
        "/VolumeDriver.Remove",
        JSON.stringify({ Name: "dk1" }),
      );
      assert.equal(JSON.parse(rm.body).Err, "", rm.body);
      const kept = await cloud.volume(dk1.EBSVolumeID, "x");
      assert.equal(kept.state, "available", "Docker's Remove detached and kept the EBS volume");

      // restart with c1 mounted
      assert.equal(await d.stop(), 0);
      d = await daemon(root);
      const again = JSON.parse(await cli("inspect", "c1"));
      assert.equal(again.DriverInfo.EBSVolumeID, volId);
      assert.equal(
        await readFile(join(again.MountPoint || mp, "data.txt"), "utf8"),
        "kept across restarts",
      );
      assert.ok(Object.keys(JSON.parse(await cli("list"))).includes("c1"));

      await cli("umount", "c1");
      await cli("delete", "c1");
      assert.equal(await cloud.findVolume(volId, "x"), undefined);
      await cli("backup", "delete", url);
      await cloud.deleteVolume(dk1.EBSVolumeID, "x");
    } finally {
      const out = d.output();
      await d.stop();
      assert.doesNotMatch(out, /convoy-test-secret-never-shown/, "no secret in the daemon's log");
    }
  });
});
