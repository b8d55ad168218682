/**
 * The loop driver runs the driver conformance suite (src/testing/conformance.ts) on real loop
 * devices, with ext4 images in the suite's temp root.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { driverConformance, pluginInit } from "../../conformance.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { parseMountInfo } from "../../src/util/mountinfo.ts";
import setup from "./mod.ts";

const exec = createExec({ timeoutMs: 120_000 });
const dir = await mkdtemp(join(tmpdir(), "convoy-loop-conformance-"));

/** Unmounts and detaches whatever a failed test left below `dir`, then removes it. */
async function cleanup(): Promise<void> {
  const mounts = parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"))
    .map((e) => e.mountPoint).filter((p) => p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
  for (const p of mounts) await exec("umount", [p]).catch(() => {});
  const { stdout } = await exec("losetup", [
    "--list",
    "--noheadings",
    "--output",
    "NAME,BACK-FILE",
  ]);
  for (const line of stdout.split("\n")) {
    const [dev, file] = line.trim().split(/\s+/);
    if (file?.startsWith(dir + "/")) await exec("losetup", ["--detach", dev]).catch(() => {});
  }
  await rm(dir, { recursive: true, force: true });
}

driverConformance({
  name: "loop",
  init: pluginInit(setup, "loop", { exec }),
  root: join(dir, "loop"),
  size: String(64 * 1024 * 1024),
  cleanup,
});
