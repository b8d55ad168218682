/**
 * The ebs driver runs the driver conformance suite (src/testing/conformance.ts) against
 * moto_server (EC2 API, metadata service; shared through CONVOY_TEST_MOTO_ENDPOINT or started
 * here). moto attaches no disk: tests/ebs_fake_host.ts, a proxy in front of it, stands a loop
 * device in for each attached volume at the NVMe by-id path, so mkfs, mount and data are real.
 * The driver reaches moto through the proxy; moto's metadata instance (i-fake) is unknown to its
 * EC2, so the suite's config names an instance started here (ebs.instanceid).
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { PluginApi } from "../../mod.ts";
import { driverConformance, pluginInit } from "../../conformance.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { startFakeHost } from "../../tests/ebs_fake_host.ts";
import { type MotoServer, runInstance, startMoto } from "../../tests/moto_helper.ts";
import { createEbsAdapter } from "./adapter.ts";

const exec = createExec({ timeoutMs: 120_000 });
const dir = await mkdtemp(join(tmpdir(), "convoy-ebs-conformance-"));
let moto: MotoServer | undefined;
let host: Awaited<ReturnType<typeof startFakeHost>> | undefined;
let instanceId = "";
let env: Record<string, string> = {};

const setup = (api: PluginApi) =>
  api.registerBlockDevice("ebs", (ctx) =>
    createEbsAdapter(api, ctx, {
      env,
      maxAttempts: 2,
      waits: { initialDelayMs: 20, maxDelayMs: 200 },
      deviceTimeoutMs: 5000,
    }));

driverConformance({
  name: "ebs",
  init: pluginInit(setup, "ebs", { exec }),
  root: join(dir, "ebs"),
  size: String(1024 ** 3),
  config: () => ({ "ebs.instanceid": instanceId }),
  prepare: async () => {
    moto = await startMoto();
    host = await startFakeHost(moto.endpoint, { dir: join(dir, "host"), exec, env: moto.env });
    env = { ...moto.env, AWS_ENDPOINT_URL: host.endpoint };
    instanceId = await runInstance(moto.env);
  },
  cleanup: async () => {
    await host?.close();
    await moto?.close();
    await exec("rm", ["-rf", dir]);
  },
});
