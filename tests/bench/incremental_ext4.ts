/**
 * A probe, not part of `deno task bench`: full and incremental backup times of a loop volume
 * whose `loop.path` is on a filesystem without reflinks (ext4), after a ~1% change. Prints one
 * JSON line. Needs root (loop devices, mounts, drop_caches).
 *
 * A CONVOY_PROBE_SIZE (default 2G) loop volume gets /usr/share and /usr/bin (about 1.1 GB); it is
 * snapshotted and backed up to vfs://; then 64 KiB are written into every 100th 2 MiB block of
 * its device (1% of the blocks), and it is snapshotted and backed up again. Each timed backup
 * starts with a cold page cache. The work dir (CONVOY_PROBE_DIR, default /var/tmp) must be on the
 * filesystem to measure.
 */
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { LogFields, Logger } from "../../mod.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { registeredInit } from "../../src/plugins/testing.ts";
import { createExec } from "../../src/runtime/exec.ts";
import setup from "../../plugins/loop/mod.ts";

const exec = createExec({ timeoutMs: 30 * 60_000 });
const BLOCK = 2 * 1024 * 1024;

/** Keeps the fields of every log line whose message is `msg`. */
function keeping(msg: string): Logger & { kept: LogFields[] } {
  const kept: LogFields[] = [];
  const make = (base: LogFields): Logger => {
    const line = (m: string, f?: LogFields) => void (m === msg && kept.push({ ...base, ...f }));
    return {
      debug: line,
      info: line,
      warn: line,
      error: line,
      child: (f) => make({ ...base, ...f }),
    };
  };
  return Object.assign(make({}), { kept });
}

/** This process's CPU time (every thread, user and system) in seconds. */
const cpuSeconds = (u: { user: number; system: number }) => +((u.user + u.system) / 1e6).toFixed(2);

/** Bytes this process read from and wrote to storage (/proc/self/io), since `since`. */
async function ioBytes(
  since = { read: 0, written: 0 },
): Promise<{ read: number; written: number }> {
  const text = await readFile("/proc/self/io", "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, "m").exec(text)?.[1]);
  return { read: field("read_bytes") - since.read, written: field("write_bytes") - since.written };
}

async function coldCache(): Promise<void> {
  await exec("sync", []);
  await writeFile("/proc/sys/vm/drop_caches", "3");
}

async function main() {
  const dir = await mkdtemp(join(process.env.CONVOY_PROBE_DIR ?? "/var/tmp", "convoy-probe-"));
  const fs = (await exec("stat", ["-f", "-c", "%T", dir])).stdout.trim();
  const storeLog = keeping("backup completed");
  const mounts: string[] = [];
  try {
    const backup = createBackupStoreApi({ log: storeLog });
    const init = registeredInit(setup, "loop", { exec, backup });
    const d = await init(join(dir, "loop"), {});
    const vols = await d.volumeOps();
    const snaps = await d.snapshotOps();
    const backups = await d.backupOps();
    const dest = `vfs://${join(dir, "store")}`;
    await mkdir(join(dir, "store"));
    await vols.createVolume("vol1", { Size: process.env.CONVOY_PROBE_SIZE ?? "2G" });
    const info = await vols.getVolumeInfo("vol1");
    const mp = await vols.mountVolume("vol1", {});
    mounts.push(mp);
    await exec("cp", ["-a", "/usr/share", "/usr/bin", mp]);
    await vols.umountVolume("vol1");
    mounts.pop();
    await snaps.createSnapshot("s1", "vol1");
    await coldCache();
    let t = performance.now();
    let cpu = process.cpuUsage();
    let io = await ioBytes();
    await backups.createBackup("s1", "vol1", dest, {});
    const fullSeconds = (performance.now() - t) / 1000;
    const fullCpu = cpuSeconds(process.cpuUsage(cpu));
    const fullIO = await ioBytes(io);

    const size = Number(info.Size);
    const fh = await open(info.Device, "r+");
    let changed = 0;
    try {
      const data = new Uint8Array(64 * 1024);
      for (let off = 7 * BLOCK; off < size; off += 100 * BLOCK, changed++) {
        crypto.getRandomValues(data);
        await fh.write(data, 0, data.length, off + 8192);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await snaps.createSnapshot("s2", "vol1");
    await coldCache();
    t = performance.now();
    cpu = process.cpuUsage();
    io = await ioBytes();
    await backups.createBackup("s2", "vol1", dest, {});
    const incrementalSeconds = (performance.now() - t) / 1000;
    const incrementalCpu = cpuSeconds(process.cpuUsage(cpu));
    const incrementalIO = await ioBytes(io);
    const [full, incr] = storeLog.kept;
    console.log(JSON.stringify({
      fs,
      volumeBytes: size,
      blocksChanged: changed,
      fullSeconds: +fullSeconds.toFixed(2),
      incrementalSeconds: +incrementalSeconds.toFixed(2),
      ratio: +(incrementalSeconds / fullSeconds).toFixed(3),
      fullCpuSeconds: fullCpu,
      incrementalCpuSeconds: incrementalCpu,
      fullIO,
      incrementalIO,
      full: { blocksRead: full?.blocksRead, bytesUploaded: full?.bytesUploaded },
      incremental: {
        compare: incr?.compare ?? "driver",
        compareSeconds: incr?.compareSeconds,
        blocksSeconds: incr?.blocksSeconds,
        blocksRead: incr?.blocksRead,
        blocksUploaded: incr?.blocksUploaded,
        bytesUploaded: incr?.bytesUploaded,
      },
    }));
    await snaps.deleteSnapshot("s1", "vol1");
    await snaps.deleteSnapshot("s2", "vol1");
    await vols.deleteVolume("vol1", {});
  } finally {
    for (const m of mounts) await exec("umount", [m]).catch(() => {});
    const loops = (await exec("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]))
      .stdout.split("\n").map((l) => l.trim().split(/\s+/)).filter((l) => l[1]?.startsWith(dir));
    for (const [dev] of loops) await exec("losetup", ["--detach", dev]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
