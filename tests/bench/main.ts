/**
 * `deno task bench`: backup and restore speed on a realistic loop volume, against restic on the
 * same data. Prints one JSON document. Needs root (loop devices, mounts); not a test.
 *
 * A 4 GiB loop volume on an xfs (reflink) filesystem gets about 2 GB of real files from /usr;
 * then: full backup to vfs://, full backup to the local S3 server, incremental backup after
 * rewriting about 1% of the data, restore into a new volume, restore of the S3 backup, verify of
 * the vfs:// and the S3 backup (each restore and verify in a daemon started for it, so its peak
 * RSS is its own); and restic backup and restore of the same snapshot image into a local
 * repository, restored onto the same xfs.
 *
 * The xfs stands in for a real disk: its image is attached with direct I/O, so it has no second
 * page cache. Every timed step starts with a cold page cache and runs CONVOY_BENCH_RUNS times
 * (default 5; each full backup into an empty store or repository); the median is reported. The
 * work folder (CONVOY_BENCH_DIR, default /var/tmp/convoy-bench) is removed at the end unless
 * CONVOY_BENCH_KEEP is set.
 */
import { lstat, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { join } from "node:path";
import { ok, run, startDaemon } from "../helpers.ts";
import { BENCH_ENV, must, startS3Server } from "./common.ts";
import { backupConfigPath, blockPath } from "../../src/backup/layout.ts";
import { decodeBackupURL } from "../../src/backup/url.ts";

const GB = 1e9;
const WORK = process.env.CONVOY_BENCH_DIR ?? "/var/tmp/convoy-bench";
const DATA_BYTES = Number(process.env.CONVOY_BENCH_DATA ?? 2e9);
const RUNS = Math.max(1, Number(process.env.CONVOY_BENCH_RUNS ?? 5));
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

async function duBytes(path: string): Promise<number> {
  return Number((await must("du", ["-sb", path])).split(/\s/)[0]);
}

/** Peak RSS of a process since the last reset, in bytes; reset clears it (Linux clear_refs 5). */
async function peakRss(pid: number, reset = false): Promise<number> {
  if (reset) await writeFile(`/proc/${pid}/clear_refs`, "5").catch(() => {});
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

/** Every timed step starts with a cold page cache, ours and restic's alike. */
async function dropCaches(): Promise<void> {
  await must("sync", []);
  await writeFile("/proc/sys/vm/drop_caches", "3");
}

/** The whole machine's CPU-seconds so far: busy (user, nice, system, irq, softirq) and iowait. */
async function cpuTimes(): Promise<{ busy: number; iowait: number }> {
  const f = (await readFile("/proc/stat", "utf8")).split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  const hz = 100; // USER_HZ, fixed on Linux for /proc/stat
  return { busy: (f[0] + f[1] + f[2] + f[5] + f[6]) / hz, iowait: f[4] / hz };
}

interface Timed<T> {
  seconds: number;
  value: T;
  /** CPU-seconds the whole machine spent busy and in iowait meanwhile (kernel I/O work too). */
  cpu: { busy: number; iowait: number };
}

async function timed<T>(fn: () => Promise<T>): Promise<Timed<T>> {
  await dropCaches();
  const c0 = await cpuTimes();
  const t0 = performance.now();
  const value = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const c1 = await cpuTimes();
  return { seconds, value, cpu: { busy: c1.busy - c0.busy, iowait: c1.iowait - c0.iowait } };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** Runs `fn(i)` RUNS times, each timed from a cold cache, with `prepare(i)` untimed before. */
async function repeated<T>(
  fn: (i: number) => Promise<T>,
  prepare?: (i: number) => Promise<void>,
): Promise<
  { seconds: number; runs: number[]; value: T; cpuBusySeconds: number; iowaitSeconds: number }
> {
  const runs: number[] = [];
  const busy: number[] = [];
  const iowait: number[] = [];
  let value!: T;
  for (let i = 0; i < RUNS; i++) {
    await prepare?.(i);
    const r = await timed(() => fn(i));
    runs.push(+r.seconds.toFixed(2));
    busy.push(r.cpu.busy);
    iowait.push(r.cpu.iowait);
    if (i === 0) value = r.value;
  }
  return {
    seconds: median(runs),
    runs,
    value,
    cpuBusySeconds: +median(busy).toFixed(2),
    iowaitSeconds: +median(iowait).toFixed(2),
  };
}

/** Top-level folders of /usr/share and /usr/lib, largest first, until about `bytes`. */
async function pickSources(bytes: number): Promise<{ paths: string[]; bytes: number }> {
  const candidates: { path: string; size: number }[] = [];
  for (const base of ["/usr/share", "/usr/lib"]) {
    for (const name of await readdir(base)) {
      const path = join(base, name);
      const st = await lstat(path);
      if (!st.isDirectory()) continue;
      candidates.push({ path, size: await duBytes(path) });
    }
  }
  candidates.sort((a, b) => b.size - a.size);
  const paths: string[] = [];
  let total = 0;
  for (const c of candidates) {
    if (total >= bytes) break;
    if (total + c.size > bytes * 1.15) continue;
    paths.push(c.path);
    total += c.size;
  }
  return { paths, bytes: total };
}

/** Regular files under `dir`, with sizes. */
async function files(dir: string): Promise<{ path: string; size: number }[]> {
  const out: { path: string; size: number }[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (!e.isFile()) continue;
    const path = join(e.parentPath, e.name);
    out.push({ path, size: (await stat(path)).size });
  }
  return out;
}

async function main() {
  if (process.getuid?.() !== 0) {
    throw new Error("the benchmark needs root (loop devices and mounts)");
  }
  await must("umount", ["-l", join(WORK, "xfs")]).catch(() => {});
  await rm(WORK, { recursive: true, force: true });
  await mkdir(join(WORK, "xfs"), { recursive: true });
  // Written once up front, like a disk: a sparse or merely fallocated backing file would charge
  // the first write into each region for its growth or for converting unwritten extents (a
  // restore into fresh space measured 17 s against 3 s into space written before).
  await must("dd", [
    "if=/dev/zero",
    `of=${join(WORK, "xfs.img")}`,
    "bs=16M",
    "count=1280",
    "oflag=direct",
    "status=none",
  ]);
  await must("mkfs.xfs", ["-q", "-m", "reflink=1", join(WORK, "xfs.img")]);
  const disk =
    (await must("losetup", ["--direct-io=on", "--find", "--show", join(WORK, "xfs.img")]))
      .trim();
  await must("mount", [disk, join(WORK, "xfs")]);
  const env = BENCH_ENV;
  const s3 = await startS3Server(join(WORK, "s3"));
  const endpoint = s3.endpoint;
  const startBenchDaemon = () =>
    startDaemon({
      root: join(WORK, "root"),
      args: ["--drivers", "loop", "--driver-opts", `loop.path=${join(WORK, "xfs", "volumes")}`],
      env,
    });
  let daemon = await startBenchDaemon();
  const socket = daemon.socket;
  let pid = daemon.proc.pid!;
  let daemonOutput = "";
  /** Stops the daemon and starts a new one on the same root and socket. */
  const restartDaemon = async () => {
    await daemon.stop();
    daemonOutput += daemon.output();
    daemon = await startBenchDaemon();
    pid = daemon.proc.pid!;
  };
  const cli = (...args: string[]) => ok(args, { socket, env });
  const results: Record<string, unknown> = {};
  try {
    log("creating a 4 GiB loop volume and copying files into it");
    await cli("create", "bench", "--driver", "loop", "--size", "4G");
    const mp = await cli("mount", "bench");
    const src = await pickSources(DATA_BYTES);
    for (const p of src.paths) await must("cp", ["-a", p, join(mp, p.replaceAll("/", "_"))]);
    await must("sync", []);
    const data = await duBytes(mp);
    log(`copied ${(data / GB).toFixed(2)} GB from ${src.paths.length} folders`);
    await cli("snapshot", "create", "bench", "--name", "s1");

    const step = async (
      name: string,
      opts: {
        run: (i: number) => Promise<string>;
        prepare?: (i: number) => Promise<void>;
        bytes: number;
        store?: () => Promise<number>;
        /** Run in a daemon started for this step: its peak RSS, not what earlier steps left. */
        fresh?: boolean;
      },
    ) => {
      if (opts.fresh) await restartDaemon();
      let peak = 0;
      let start = Infinity;
      const { seconds, runs, value, cpuBusySeconds, iowaitSeconds } = await repeated(async (i) => {
        start = Math.min(start, await peakRss(pid, true));
        const v = await opts.run(i);
        peak = Math.max(peak, await peakRss(pid));
        return v;
      }, opts.prepare);
      const r = {
        seconds: +seconds.toFixed(2),
        runs,
        MBps: +(opts.bytes / 1e6 / seconds).toFixed(1),
        peakRssMB: +(peak / 1e6).toFixed(0),
        // What the daemon held when the step began (kept from earlier steps).
        startRssMB: +(start / 1e6).toFixed(0),
        cpuBusySeconds,
        iowaitSeconds,
        ...(opts.store ? { storeMB: +((await opts.store()) / 1e6).toFixed(0) } : {}),
      };
      results[name] = r;
      log(`${name}: ${JSON.stringify(r)}`);
      return value;
    };

    // Every run of a full backup starts from an empty store; the first run's store is kept.
    const vfsStore = (i: number) => join(WORK, i === 0 ? "store" : `store-${i}`);
    await step("fullBackupVfs", {
      prepare: async (i) => {
        await rm(vfsStore(i), { recursive: true, force: true });
        await mkdir(vfsStore(i));
      },
      run: (i) => cli("backup", "create", "s1", "--dest", `vfs://${vfsStore(i)}`),
      bytes: data,
      store: () => duBytes(vfsStore(0)),
    });
    for (let i = 1; i < RUNS; i++) await rm(vfsStore(i), { recursive: true, force: true });
    const s3Backup = await step("fullBackupS3", {
      run: (i) =>
        cli(
          "backup",
          "--s3-endpoint",
          endpoint,
          "create",
          "s1",
          "--dest",
          `s3://bench@us-east-1/convoy-${i}`,
        ),
      bytes: data,
      store: async () => (await duBytes(join(WORK, "s3"))) / RUNS,
    });

    log("rewriting about 1% of the data");
    const all = await files(mp);
    let changed = 0;
    for (let i = 0; i < all.length && changed < data * 0.01; i += 37) {
      const f = all[i];
      if (f.size < 4096) continue;
      const buf = new Uint8Array(f.size);
      crypto.getRandomValues(buf.subarray(0, Math.min(65536, buf.length)));
      for (let o = 65536; o < buf.length; o += 65536) {
        buf.copyWithin(o, 0, Math.min(65536, buf.length - o));
      }
      await writeFile(f.path, buf);
      changed += f.size;
    }
    await must("sync", []);
    results.changedMB = +(changed / 1e6).toFixed(1);
    await cli("snapshot", "create", "bench", "--name", "s2");
    // Incremental against the first full backup; a repeat would find its blocks stored already.
    const incr = await (async () => {
      const t = await timed(() => cli("backup", "create", "s2", "--dest", `vfs://${vfsStore(0)}`));
      results.incrementalBackupVfs = {
        seconds: +t.seconds.toFixed(2),
        MBps: +(changed / 1e6 / t.seconds).toFixed(1),
        storeMB: +((await duBytes(vfsStore(0))) / 1e6).toFixed(0),
      };
      log(`incrementalBackupVfs: ${JSON.stringify(results.incrementalBackupVfs)}`);
      return t.value;
    })();
    await step("restoreVfs", {
      prepare: async (i) => {
        if (i > 0) await cli("delete", `restored-${i - 1}`);
      },
      run: (i) => cli("create", `restored-${i}`, "--driver", "loop", "--backup", incr),
      bytes: data,
      fresh: true,
    });
    // The I/O floor of a durable restore on this disk: the backup's block files read cold (cat,
    // 4 at a time) while dd writes as many bytes as the restore wrote (its image's allocated
    // size) with O_DIRECT and fsyncs them; no decoding, no verifying.
    const restoredImage = Object.values(
      JSON.parse(await cli("inspect", `restored-${RUNS - 1}`)).DriverInfo as Record<string, string>,
    ).find((v) => v.endsWith(".img"));
    if (restoredImage) {
      const written = Number(
        (await must("stat", ["-c", "%b %B", restoredImage])).split(" ")
          .reduce((a, b) => a * Number(b), 1),
      );
      const ref = decodeBackupURL(incr);
      const record = JSON.parse(
        await readFile(join(vfsStore(0), backupConfigPath(ref.volume, ref.backup)), "utf8"),
      ) as { Blocks: { BlockChecksum: string }[] };
      const blockFiles = [...new Set(record.Blocks.map((b) => b.BlockChecksum))]
        .map((c) => join(vfsStore(0), blockPath(ref.volume, c)));
      const listFile = join(WORK, "floor-blocks.txt");
      await writeFile(listFile, blockFiles.join("\0"));
      const floorFile = join(WORK, "xfs", "floor.img");
      const mib2 = Math.ceil(written / (2 << 20));
      const f = await repeated(
        () =>
          must("sh", [
            "-c",
            'xargs -0 -P4 -n64 cat < "$1" > /dev/null & ' +
            'dd if=/dev/zero of="$2" bs=2M count="$3" oflag=direct conv=fsync status=none; ' +
            "wait",
            "floor",
            listFile,
            floorFile,
            String(mib2),
          ]),
        () => rm(floorFile, { force: true }),
      );
      await rm(floorFile, { force: true });
      results.restoreIoFloor = {
        what:
          "cat of the backup's block files, meanwhile dd of the restored bytes, O_DIRECT then fsync",
        readMB: +((await Promise.all(blockFiles.map((b) => stat(b))))
          .reduce((a, st) => a + st.size, 0) / 1e6).toFixed(0),
        writtenMB: +((mib2 * (2 << 20)) / 1e6).toFixed(0),
        seconds: +f.seconds.toFixed(2),
        runs: f.runs,
        cpuBusySeconds: f.cpuBusySeconds,
        iowaitSeconds: f.iowaitSeconds,
      };
      log(`restoreIoFloor: ${JSON.stringify(results.restoreIoFloor)}`);
    }
    await cli("delete", `restored-${RUNS - 1}`);
    // The other restores and verifies, for their peak RSS (and speed); each in its own daemon.
    await step("restoreS3", {
      prepare: async (i) => {
        if (i > 0) await cli("delete", `restored-s3-${i - 1}`);
      },
      run: (i) =>
        cli(
          "create",
          `restored-s3-${i}`,
          "--driver",
          "loop",
          "--backup",
          s3Backup,
          "--s3-endpoint",
          endpoint,
        ),
      bytes: data,
      fresh: true,
    });
    await cli("delete", `restored-s3-${RUNS - 1}`);
    await step("verifyVfs", {
      run: () => cli("backup", "verify", incr),
      bytes: data,
      fresh: true,
    });
    await step("verifyS3", {
      run: () => cli("backup", "verify", s3Backup, "--s3-endpoint", endpoint),
      bytes: data,
      fresh: true,
    });

    const snapImage = Object.values(
      JSON.parse(await cli("snapshot", "inspect", "s1")).DriverInfo as Record<string, string>,
    )
      .find((v) => v.endsWith(".img"));
    const restic = await run("restic", ["version"]).catch(() => ({
      code: -1,
      stdout: "",
      stderr: "",
    }));
    if (restic.code === 0 && snapImage) {
      const repo = (i: number) => join(WORK, `restic-${i}`);
      const target = (i: number) => join(WORK, "xfs", `restic-restore-${i}`);
      const renv = (i: number) => ({ RESTIC_PASSWORD: "bench", RESTIC_REPOSITORY: repo(i) });
      const b = await repeated(
        (i) => must("restic", ["backup", "--quiet", snapImage], renv(i)),
        async (i) => {
          await rm(repo(i), { recursive: true, force: true });
          await must("restic", ["init"], renv(i));
        },
      );
      const clear = async (i: number) => {
        if (i > 0) await rm(target(i - 1), { recursive: true, force: true });
      };
      // restic does not fsync what it restores; ours does. Both ways are reported.
      const r = await repeated(
        (i) => must("restic", ["restore", "latest", "--target", target(i)], renv(0)),
        clear,
      );
      await rm(target(RUNS - 1), { recursive: true, force: true });
      const rs = await repeated(async (i) => {
        await must("restic", ["restore", "latest", "--target", target(i)], renv(0));
        return await must("sync", []);
      }, clear);
      await rm(target(RUNS - 1), { recursive: true, force: true });
      results.restic = {
        version: restic.stdout.trim(),
        backupSeconds: +b.seconds.toFixed(2),
        backupRuns: b.runs,
        restoreSeconds: +r.seconds.toFixed(2),
        restoreRuns: r.runs,
        restoreCpuBusySeconds: r.cpuBusySeconds,
        restoreAndSyncSeconds: +rs.seconds.toFixed(2),
        repoMB: +((await duBytes(repo(0))) / 1e6).toFixed(0),
      };
      const full = results.fullBackupVfs as { seconds: number };
      const rest = results.restoreVfs as { seconds: number };
      results.ratios = {
        resticBackupOverOurs: +(b.seconds / full.seconds).toFixed(2),
        resticRestoreOverOurs: +(r.seconds / rest.seconds).toFixed(2),
        resticRestoreAndSyncOverOurs: +(rs.seconds / rest.seconds).toFixed(2),
        // Under 2, no durable restore on this disk can be 2x faster than restic's.
        ...(results.restoreIoFloor
          ? {
            resticRestoreOverIoFloor: +(r.seconds /
              (results.restoreIoFloor as { seconds: number }).seconds).toFixed(2),
            oursOverIoFloor: +(rest.seconds /
              (results.restoreIoFloor as { seconds: number }).seconds).toFixed(2),
          }
          : {}),
      };
      // A restore takes at least its bare I/O, and at least its CPU work (the daemon's and the
      // kernel's, spread over every core); the target is half of restic's restore.
      const cores = cpus().length;
      const cpuFloor = (results.restoreVfs as { cpuBusySeconds: number }).cpuBusySeconds / cores;
      const ioFloor = (results.restoreIoFloor as { seconds: number } | undefined)?.seconds;
      results.restoreBounds = {
        halfResticRestoreSeconds: +(r.seconds / 2).toFixed(2),
        ioFloorSeconds: ioFloor ?? null, // null: no restored image to measure it against
        cpuFloorSeconds: +cpuFloor.toFixed(2),
        lowerBoundSeconds: +Math.max(ioFloor ?? 0, cpuFloor).toFixed(2),
      };
    } else {
      results.restic = { skipped: "restic is not installed (apt-get install restic)" };
    }
    const full = results.fullBackupVfs as { seconds: number };
    const inc = results.incrementalBackupVfs as { seconds: number };
    results.incrementalOverFull = +(inc.seconds / full.seconds).toFixed(3);
    results.volume = {
      sizeGiB: 4,
      dataGB: +(data / GB).toFixed(2),
      filesystem: "ext4 on loop, loop.path on xfs (reflink, on a direct-I/O loop device)",
      runs: RUNS,
    };
    results.machine = {
      cores: cpus().length,
      runtime: `deno ${process.versions.deno ?? ""}`,
    };
    await cli("umount", "bench");
    await cli("delete", "bench");
  } finally {
    await daemon.stop();
    s3.stop();
    const unmounted = (await run("umount", ["-R", join(WORK, "xfs")])).code === 0;
    for (const line of (await must("losetup", ["-a"])).split("\n")) {
      if (line.includes(WORK)) await run("losetup", ["-d", line.split(":")[0]]);
    }
    // Tens of GB (the xfs image, the stores, restic's repository): kept only when asked.
    if (unmounted && !process.env.CONVOY_BENCH_KEEP) {
      await rm(WORK, { recursive: true, force: true });
    }
  }
  for (const line of (daemonOutput + daemon.output()).split("\n")) {
    if (/backup completed|Compared snapshot|Restored delta/.test(line)) log(`daemon: ${line}`);
  }
  console.log(JSON.stringify(results, null, 2));
}

main().catch((err) => {
  console.error(`bench: ${(err as Error).message}`);
  process.exit(1);
});
