/**
 * Restores as jobs (progress, `jobs cancel`, Ctrl-C), what a cancelled or failed restore leaves
 * (nothing), Ctrl-C of a piped `backup create`, and how long finished jobs stay listed. Real
 * daemon, CLI, loop devices and vfs:// stores.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, open, readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  convoy,
  DENO_CONVOY,
  ok,
  rawRequest,
  run,
  type RunResult,
  startDaemon,
  tempDir,
  type TestDaemon,
} from "./helpers.ts";

interface Job {
  ID: string;
  Kind: string;
  Volume: string;
  Snapshot: string;
  URL: string;
  State: string;
  Done: number;
  Total: number;
  Bytes: number;
  Error: string;
}

async function jobs(socket: string): Promise<Job[]> {
  return JSON.parse(await ok(["jobs"], { socket })) as Job[];
}

/** Polls `convoy jobs` until `pred` finds a job; fails after 60 s. */
async function waitForJob(socket: string, pred: (j: Job) => boolean, what: string): Promise<Job> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const j = JSON.parse((await rawRequest(socket, "GET", "/v1/jobs")).body) as Job[];
    const found = j.find(pred);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`no job ${what} within 60 s`);
}

/** A running restore of `volume` that has written some blocks (or bytes) already. */
function restoring(socket: string, volume: string): Promise<Job> {
  return waitForJob(
    socket,
    (j) => j.Kind === "restore" && j.Volume === volume && j.Done > 0,
    `restoring "${volume}"`,
  );
}

/** Every file and folder under `dir`. */
async function tree(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    out.push(join(e.parentPath, e.name).slice(dir.length + 1) + (e.isDirectory() ? "/" : ""));
  }
  return out.sort();
}

/** `losetup -a` lines of the loop devices attached to files under `dir`. */
async function loopDevicesUnder(dir: string): Promise<string[]> {
  const r = await run("losetup", ["-a"]);
  return r.stdout.split("\n").filter((l) => l.includes(`(${dir}/`)).sort();
}

/**
 * Writes `bytes` of random data to `path`, no two 4 MiB alike; with `period` each 4 MiB repeats
 * its first `period` bytes (gzip, whose window is 32 KiB, then compresses it fast).
 */
async function writeRandom(path: string, bytes: number, period = 65536): Promise<void> {
  const fh = await open(path, "w");
  try {
    const chunk = new Uint8Array(4 * 1024 * 1024);
    for (let done = 0; done < bytes; done += chunk.length) {
      for (let o = 0; o < chunk.length; o += period) {
        if (o === 0 || period === 65536) crypto.getRandomValues(chunk.subarray(o, o + 65536));
        else chunk.copyWithin(o, 0, period);
      }
      await fh.write(chunk);
    }
  } finally {
    await fh.close();
  }
}

/** Starts the CLI with stdin, stdout and stderr piped (not a terminal). */
function startCli(socket: string, args: string[]) {
  const [cmd, ...base] = DENO_CONVOY;
  const child = spawn(cmd, [...base, "--socket", socket, ...args], {
    env: { ...process.env, NO_COLOR: "1" },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c) => (stdout += c));
  child.stderr.on("data", (c) => (stderr += c));
  const done = new Promise<RunResult>((resolve) =>
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }))
  );
  return { child, done };
}

describe("restores are jobs (loop driver)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let d: TestDaemon;
  let socket: string;
  let root: string;
  let store: string;
  let url: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir());
    root = join(dir, "root");
    d = await startDaemon({ root, args: ["--drivers", "loop", "--drivers", "vfs"] });
    socket = d.socket;
    store = join(dir, "store");
    await mkdir(store);
    await ok(["create", "src", "--size", "1G"], { socket });
    const mp = await ok(["mount", "src"], { socket });
    await writeRandom(join(mp, "data"), 768 * 1024 * 1024);
    await ok(["umount", "src"], { socket });
    await ok(["snapshot", "create", "src", "--name", "srcsnap"], { socket });
    url = await ok(["backup", "create", "srcsnap", "--dest", `vfs://${store}`], { socket });
  });
  after(async () => {
    await d.stop(); // volumes stay attached: detach their loop devices
    for (const line of await loopDevicesUnder(dir)) {
      await run("losetup", ["-d", line.split(":")[0]]);
    }
    await cleanup();
  });

  /** Asserts the daemon root holds what it held before (no image, record, temp file, device). */
  async function assertNothingLeft(volume: string, before: { files: string[]; loops: string[] }) {
    const inspect = await convoy(["inspect", volume], { socket });
    assert.equal(inspect.code, 1);
    assert.match(inspect.stderr, /does not exist/);
    assert.ok(!Object.keys(JSON.parse(await ok(["list"], { socket }))).includes(volume));
    assert.deepEqual(await tree(root), before.files, "no image, record or temp file is left");
    assert.deepEqual(await loopDevicesUnder(dir), before.loops, "no loop device is left");
  }

  async function snapshotOfRoot() {
    return { files: await tree(root), loops: await loopDevicesUnder(dir) };
  }

  it("a restore is listed with its progress, and `jobs cancel` leaves no volume, image or device", async () => {
    const was = await snapshotOfRoot();
    const body = JSON.stringify({ Name: "r1", BackupURL: url, JobID: "job-restore-1" });
    const running = rawRequest(socket, "POST", "/v1/volumes/create", body);
    const job = await restoring(socket, "r1");
    assert.equal(job.ID, "job-restore-1", "the client's job ID");
    assert.equal(job.State, "running");
    assert.equal(job.URL, url);
    assert.ok(job.Total >= 384, `at least 768 MiB of 2 MiB blocks: ${job.Total}`);
    assert.ok(job.Bytes >= job.Done * 2 * 1024 * 1024);
    await ok(["jobs", "cancel", job.ID], { socket });
    const res = await running;
    assert.equal(res.status, 499, res.body);
    assert.match(JSON.parse(res.body).Error, /Cannot create volume "r1": cancelled/);
    const listed = (await jobs(socket)).find((j) => j.ID === job.ID);
    assert.equal(listed?.State, "cancelled");
    await assertNothingLeft("r1", was);
  });

  it("Ctrl-C (SIGINT) of `convoy create --backup` cancels the restore and leaves nothing", async () => {
    const was = await snapshotOfRoot();
    const cli = startCli(socket, ["create", "r2", "--backup", url]);
    const job = await restoring(socket, "r2");
    process.kill(cli.child.pid!, "SIGINT"); // not child.kill(): Deno then reports no exit code
    const r = await cli.done;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /cancelled/);
    assert.equal((await jobs(socket)).find((j) => j.ID === job.ID)?.State, "cancelled");
    await assertNothingLeft("r2", was);
  });

  it("a restore that meets a corrupt block fails as a job and leaves nothing", async () => {
    const blocks: string[] = [];
    for (const f of await tree(store)) if (f.endsWith(".blk")) blocks.push(join(store, f));
    assert.ok(blocks.length > 100);
    const victim = blocks[Math.floor(blocks.length / 2)];
    const fh = await open(victim, "r+");
    try {
      const { size } = await fh.stat();
      await fh.write(new Uint8Array(64).fill(0x5a), 0, 64, Math.floor(size / 2));
    } finally {
      await fh.close();
    }
    const was = await snapshotOfRoot();
    const r = await convoy(["create", "r3", "--backup", url], { socket });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /Cannot create volume "r3"/);
    const job = (await jobs(socket)).find((j) => j.Kind === "restore" && j.Volume === "r3");
    assert.equal(job?.State, "failed");
    assert.match(job.Error, /block|checksum|corrupt/i);
    await assertNothingLeft("r3", was);
  });

  it("a piped `backup create` interrupted by SIGINT cancels the backup; none is listed", async () => {
    const store2 = join(dir, "store2");
    await mkdir(store2);
    const cli = startCli(socket, ["backup", "create", "srcsnap", "--dest", `vfs://${store2}`]);
    const job = await waitForJob(
      socket,
      (j) => j.Kind === "backup" && j.State === "running" && j.Done > 0,
      "backing up to store2",
    );
    process.kill(cli.child.pid!, "SIGINT"); // not child.kill(): Deno then reports no exit code
    const r = await cli.done;
    assert.equal(r.code, 1, `exit ${r.code}: ${r.stderr}`);
    assert.match(r.stderr, /cancelled/);
    assert.equal((await jobs(socket)).find((j) => j.ID === job.ID)?.State, "cancelled");
    assert.deepEqual(JSON.parse(await ok(["backup", "list", `vfs://${store2}`], { socket })), {});
  });
});

describe("Docker's create with -o backup= is a job", () => {
  it("is listed while it runs and `jobs cancel` leaves no volume", async () => {
    const { dir, cleanup } = await tempDir();
    const root = join(dir, "root");
    const d = await startDaemon({ root });
    const socket = d.socket;
    try {
      const store = join(dir, "store");
      await mkdir(store);
      await ok(["create", "src"], { socket });
      const path = JSON.parse(await ok(["inspect", "src"], { socket })).DriverInfo.Path;
      for (let i = 0; i < 4; i++) await writeRandom(join(path, `f${i}`), 128 << 20, 16384);
      await ok(["snapshot", "create", "src", "--name", "srcsnap"], { socket });
      const url = await ok(["backup", "create", "srcsnap", "--dest", `vfs://${store}`], { socket });
      const files = await tree(root);

      const running = rawRequest(
        socket,
        "POST",
        "/VolumeDriver.Create",
        JSON.stringify({ Name: "dk1", Opts: { backup: url } }),
      );
      const job = await waitForJob(
        socket,
        (j) => j.Kind === "restore" && j.Volume === "dk1" && j.State === "running",
        `restoring "dk1"`,
      );
      await ok(["jobs", "cancel", job.ID], { socket });
      const res = await running;
      assert.match(JSON.parse(res.body).Err, /cancelled/);
      assert.equal((await jobs(socket)).find((j) => j.ID === job.ID)?.State, "cancelled");
      assert.equal((await convoy(["inspect", "dk1"], { socket })).code, 1);
      assert.deepEqual(await tree(root), files, "no folder or archive is left");
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});

describe("finished jobs", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let d: TestDaemon;
  let socket: string;
  let url: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir());
    d = await startDaemon({ root: join(dir, "root"), env: { CONVOY_JOB_RETENTION: "2s" } });
    socket = d.socket;
    const store = join(dir, "store");
    await mkdir(store);
    await ok(["create", "v1"], { socket });
    const path = JSON.parse(await ok(["inspect", "v1"], { socket })).DriverInfo.Path;
    await writeFile(join(path, "f"), "hello");
    await ok(["snapshot", "create", "v1", "--name", "s1"], { socket });
    url = await ok(["backup", "create", "s1", "--dest", `vfs://${store}`], { socket });
  });
  after(async () => {
    await d.stop();
    await cleanup();
  });

  it("a verify job names the backup's volume", async () => {
    await ok(["backup", "verify", url], { socket });
    const verify = (await jobs(socket)).find((j) => j.Kind === "verify");
    assert.equal(verify?.Volume, "v1");
    assert.equal(verify?.URL, url);
    assert.equal(verify?.State, "done");
  });

  it("leave `convoy jobs` once the retention period has passed", async () => {
    await ok(["create", "v2", "--backup", url], { socket });
    const restore = (await jobs(socket)).find((j) => j.Kind === "restore");
    assert.equal(restore?.Volume, "v2");
    assert.equal(restore?.State, "done");
    assert.ok(restore.Total > 0 && restore.Done === restore.Total, JSON.stringify(restore));
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual(await jobs(socket), []);
  });
});
