/**
 * `deno task bench:memory`: the daemon's peak RSS for backups, restores and verifies of random
 * (incompressible) data, to vfs:// and to the local S3 server. Prints one JSON document. Needs
 * root (loop devices, mounts); not a test.
 *
 * A loop volume of CONVOY_MEM_VOLUME bytes (default 4 GiB) gets CONVOY_MEM_DATA bytes (default 2
 * GiB) of random data; one daemon then backs it up to vfs:// and to s3://, restores each backup
 * into a new volume and verifies each, every restore and verify in a daemon started for it (its
 * own peak, not what earlier steps left). Every step's peak RSS (VmHWM, reset before the step)
 * and its RSS when it began are reported, with its seconds.
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { mountsUnder, ok, run, startDaemon } from "../helpers.ts";
import { BENCH_ENV, must, startS3Server } from "./common.ts";

const MiB = 1024 * 1024;
const WORK = process.env.CONVOY_MEM_DIR ?? "/var/tmp/convoy-bench-memory";
const VOLUME = Number(process.env.CONVOY_MEM_VOLUME ?? 4 * 1024 * MiB);
const DATA = Number(process.env.CONVOY_MEM_DATA ?? 2 * 1024 * MiB);
const log = (msg: string) => process.stderr.write(`bench:memory: ${msg}\n`);

/** VmHWM and VmRSS of `pid`, in bytes; reset first clears the peak (Linux clear_refs 5). */
async function rss(pid: number, reset = false): Promise<{ peak: number; now: number }> {
  if (reset) await writeFile(`/proc/${pid}/clear_refs`, "5");
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
  return { peak: kb("VmHWM"), now: kb("VmRSS") };
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error("needs root (loop devices and mounts)");
  await rm(WORK, { recursive: true, force: true });
  await mkdir(join(WORK, "store"), { recursive: true });
  const env = BENCH_ENV;
  const s3 = await startS3Server(join(WORK, "s3"));
  const endpoint = s3.endpoint;
  const start = () =>
    startDaemon({
      root: join(WORK, "root"),
      args: ["--drivers", "loop", "--driver-opts", `loop.path=${join(WORK, "volumes")}`],
      env,
    });
  let daemon = await start();
  const cli = (...args: string[]) => ok(args, { socket: daemon.socket, env });
  const results: Record<string, unknown> = {};
  const step = async (
    name: string,
    fn: () => Promise<string>,
    fresh = false,
  ): Promise<string> => {
    if (fresh) {
      await daemon.stop();
      daemon = await start();
    }
    const pid = daemon.proc.pid!;
    const before = await rss(pid, true);
    const t0 = performance.now();
    const value = await fn();
    const seconds = (performance.now() - t0) / 1000;
    const end = await rss(pid);
    results[name] = {
      seconds: +seconds.toFixed(2),
      peakRssMiB: +(end.peak / MiB).toFixed(0),
      startRssMiB: +(before.now / MiB).toFixed(0),
    };
    log(`${name}: ${JSON.stringify(results[name])}`);
    return value;
  };
  try {
    log(`writing ${DATA / MiB} MiB of random data into a ${VOLUME / MiB} MiB loop volume`);
    await cli("create", "mem", "--driver", "loop", "--size", String(VOLUME));
    const mp = await cli("mount", "mem");
    await must("dd", [
      "if=/dev/urandom",
      `of=${join(mp, "random")}`,
      "bs=4M",
      `count=${Math.ceil(DATA / (4 * MiB))}`,
      "status=none",
    ]);
    await must("sync", []);
    await cli("snapshot", "create", "mem", "--name", "s1");
    const s3flag = ["--s3-endpoint", endpoint];
    const vfs = await step(
      "backupVfs",
      () => cli("backup", "create", "s1", "--dest", `vfs://${join(WORK, "store")}`),
    );
    const s3url = await step(
      "backupS3",
      () => cli("backup", ...s3flag, "create", "s1", "--dest", "s3://bench@us-east-1/convoy"),
    );
    await step("restoreVfs", () => cli("create", "r1", "--driver", "loop", "--backup", vfs), true);
    await cli("delete", "r1");
    await step(
      "restoreS3",
      () => cli("create", "r2", "--driver", "loop", "--backup", s3url, ...s3flag),
      true,
    );
    await cli("delete", "r2");
    await step("verifyVfs", () => cli("backup", "verify", vfs), true);
    await step("verifyS3", () => cli("backup", ...s3flag, "verify", s3url), true);
    results.volume = { sizeMiB: VOLUME / MiB, randomDataMiB: DATA / MiB, driver: "loop" };
    await cli("umount", "mem");
    await cli("delete", "mem");
  } finally {
    await daemon.stop();
    s3.stop();
    for (const mp of await mountsUnder(WORK)) await run("umount", [mp]);
    for (const line of (await must("losetup", ["-a"])).split("\n")) {
      if (line.includes(WORK)) await run("losetup", ["-d", line.split(":")[0]]);
    }
    await rm(WORK, { recursive: true, force: true });
  }
  console.log(JSON.stringify(results, null, 2));
}

main().catch((err) => {
  console.error(`bench:memory: ${(err as Error).message}`);
  process.exit(1);
});
