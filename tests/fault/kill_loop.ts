/**
 * `deno task faults`: nothing is lost under kill -9. Needs root (loop devices, mounts); long, so
 * not part of `deno test`.
 *
 * A loop volume gets random, zero and repeated data. For each destination (vfs://, s3:// on the
 * local S3 server or `CONVOY_TEST_S3_ENDPOINT`) and each round: the random data is rewritten and
 * snapshotted, `backup create` starts, and the daemon is killed with SIGKILL at a point spread
 * over the rounds (the lease appearing; k new block objects in the store, or for vfs k blocks done
 * in the daemon's job; all blocks done; the backup record appearing). Then the daemon restarts on the same root, the backup runs again, is
 * verified and restored, and the restored image's sha256 is compared with the snapshot's. Every
 * fourth round also deletes the oldest backup and kills the daemon during the delete. At the end
 * `convoy backup gc DEST` runs when the CLI has it, every listed backup is verified, and the store
 * is read directly for temporary objects, blocks no backup references, missing blocks and leases.
 *
 * ```sh
 * sudo node_modules/deno/deno task faults --rounds 5 --dest both --size 256
 * ```
 *
 * Prints one JSON document on stdout (progress on stderr); exits 1 when anything was lost or left.
 * @module
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import process from "node:process";
import { parseArgs } from "node:util";
import { z } from "zod";
import type { S3Client } from "@aws-sdk/client-s3";
import { volumeDir } from "../../src/backup/layout.ts";
import { DENO_CONVOY, rawRequest, run, startDaemon, tempDir, type TestDaemon } from "../helpers.ts";
import { useTestCredentials } from "../s3_helper.ts";
import { type S3Server, startS3Server } from "../s3_server.ts";

const MiB = 1024 * 1024;
const BLOCK = 2 * MiB;
const VOLUME = "fsrc";
const log = (msg: string) => process.stderr.write(`faults: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const OptionsSchema = z.object({
  rounds: z.coerce.number().int().min(1).max(1000),
  dest: z.enum(["vfs", "s3", "both"]),
  size: z.coerce.number().int().min(64).max(8192),
});
type Options = z.output<typeof OptionsSchema>;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      rounds: { type: "string", default: "20" },
      dest: { type: "string", default: "both" },
      size: { type: "string", default: "256" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log("Usage: kill_loop.ts [--rounds N] [--dest vfs|s3|both] [--size MiB]");
    process.exit(0);
  }
  const res = OptionsSchema.safeParse(values);
  if (!res.success) {
    const i = res.error.issues[0];
    console.error(`Invalid option --${i.path.join(".")}: ${i.message}`);
    process.exit(2);
  }
  return res.data;
}

// ---------------------------------------------------------------------------------------------
// CLI runs with a timeout

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
  seconds: number;
  timedOut: boolean;
}

/** Runs the convoy CLI; SIGKILLs it after `timeoutMs`. */
function cli(
  socket: string,
  args: string[],
  opts: { env?: Record<string, string>; timeoutMs?: number; started?: (p: ChildProcess) => void } =
    {},
): Promise<CliResult> {
  const [cmd, ...base] = DENO_CONVOY;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, [...base, "--socket", socket, ...args], {
      env: { ...process.env, NO_COLOR: "1", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    opts.started?.(child);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, opts.timeoutMs ?? 300_000);
    child.stdout!.on("data", (c) => (stdout += c));
    child.stderr!.on("data", (c) => (stderr += c));
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({
        code: code ?? -1,
        stdout: stdout.trim(),
        stderr: stderr.trim(),
        seconds: +((performance.now() - t0) / 1000).toFixed(2),
        timedOut,
      });
    });
  });
}

async function must(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
}

// ---------------------------------------------------------------------------------------------
// Reading a store directly

/** A backup store seen from outside the daemon. Keys are relative to the store URL's path. */
interface StoreView {
  kind: "vfs" | "s3";
  /** The destination URL given to convoy. */
  url: string;
  /** Every object key under `prefix` (a folder, no trailing slash), temporary files included. */
  keys(prefix: string): Promise<string[]>;
  read(key: string): Promise<string>;
  /** Multipart uploads begun and never completed or aborted; null when the server cannot tell. */
  incompleteUploads(): Promise<number | null>;
}

function vfsView(root: string): StoreView {
  const walk = async (dir: string, rel: string, out: string[]) => {
    let entries;
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
      throw err;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(dir, e.name), r, out);
      else out.push(r);
    }
  };
  return {
    kind: "vfs",
    url: `vfs://${root}`,
    async keys(prefix) {
      const out: string[] = [];
      await walk(join(root, prefix), prefix, out);
      return out;
    },
    read: (key) => readFile(join(root, key), "utf8"),
    incompleteUploads: () => Promise.resolve(0),
  };
}

async function s3View(
  client: S3Client,
  opts: { bucket: string; path: string },
): Promise<StoreView> {
  const sdk = await import("@aws-sdk/client-s3");
  const { bucket, path } = opts;
  return {
    kind: "s3",
    url: `s3://${bucket}@us-east-1/${path}`,
    async keys(prefix) {
      const out: string[] = [];
      let token: string | undefined;
      do {
        const page = await client.send(
          new sdk.ListObjectsV2Command({
            Bucket: bucket,
            Prefix: `${path}/${prefix}/`,
            ContinuationToken: token,
          }),
        );
        for (const o of page.Contents ?? []) if (o.Key) out.push(o.Key.slice(path.length + 1));
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
      return out;
    },
    async read(key) {
      const r = await client.send(
        new sdk.GetObjectCommand({ Bucket: bucket, Key: `${path}/${key}` }),
      );
      return await r.Body!.transformToString();
    },
    async incompleteUploads() {
      try {
        const r = await client.send(
          new sdk.ListMultipartUploadsCommand({ Bucket: bucket, Prefix: `${path}/` }),
        );
        // fauxqs answers GET ?uploads with a ListBucketResult: no Bucket element.
        return r.Bucket === bucket ? (r.Uploads ?? []).length : null;
      } catch {
        return null;
      }
    },
  };
}

const TEMP = /\.tmp-/;
const BLOCK_KEY = /\/blocks\/[0-9a-f]{2}\/[0-9a-f]{2}\/([0-9a-f]{64})\.blk$/;
const RECORD_KEY = /\/backups\/backup_[^/]+\.cfg$/;

/** What one poll of a volume's folder shows, for kill triggers. */
interface VolumeState {
  blocks: number;
  records: Set<string>;
  leases: number;
  tempRecords: number;
}

/** The folders a trigger needs to see: listing only those keeps a poll cheap. */
type Scope = "blocks" | "backups" | "leases";

async function volumeState(
  store: StoreView,
  opts: { volume: string; scope: Scope },
): Promise<VolumeState> {
  const s: VolumeState = { blocks: 0, records: new Set(), leases: 0, tempRecords: 0 };
  for (const k of await store.keys(`${volumeDir(opts.volume)}/${opts.scope}`)) {
    const base = k.slice(k.lastIndexOf("/") + 1);
    if (TEMP.test(base)) {
      if (base.startsWith(".backup_")) s.tempRecords++;
    } else if (BLOCK_KEY.test(k)) s.blocks++;
    else if (RECORD_KEY.test(k)) s.records.add(k);
    else if (k.includes("/leases/")) s.leases++;
  }
  return s;
}

/** The whole store's leftovers and damage, read directly. */
interface StoreAnalysis {
  backups: number;
  blocks: number;
  tempObjects: number;
  unreferencedBlocks: number;
  missingBlocks: number;
  leases: number;
  unreadableRecords: number;
  otherObjects: number;
  incompleteUploads: number | null;
  /** The first 20 temporary objects' keys, to tell what left them. */
  tempKeys: string[];
}

async function analyse(store: StoreView): Promise<StoreAnalysis> {
  const a: StoreAnalysis = {
    backups: 0,
    blocks: 0,
    tempObjects: 0,
    unreferencedBlocks: 0,
    missingBlocks: 0,
    leases: 0,
    unreadableRecords: 0,
    otherObjects: 0,
    incompleteUploads: await store.incompleteUploads(),
    tempKeys: [],
  };
  const byVolume = new Map<string, string[]>();
  for (const k of await store.keys("convoy-objectstore")) {
    const dir = k.split("/").slice(0, 5).join("/");
    byVolume.set(dir, [...(byVolume.get(dir) ?? []), k]);
  }
  for (const keys of byVolume.values()) {
    const present = new Set<string>();
    const referenced = new Set<string>();
    for (const k of keys) {
      const base = k.slice(k.lastIndexOf("/") + 1);
      const block = BLOCK_KEY.exec(k);
      if (TEMP.test(base)) {
        if (a.tempObjects++ < 20) a.tempKeys.push(k);
      } else if (block) present.add(block[1]);
      else if (k.includes("/leases/")) a.leases++;
      else if (RECORD_KEY.test(k)) {
        a.backups++;
        try {
          const rec = JSON.parse(await store.read(k)) as { Blocks?: { BlockChecksum: string }[] };
          for (const b of rec.Blocks ?? []) referenced.add(b.BlockChecksum);
        } catch {
          a.unreadableRecords++;
        }
      } else if (!k.endsWith("/volume.cfg")) a.otherObjects++;
    }
    a.blocks += present.size;
    for (const b of present) if (!referenced.has(b)) a.unreferencedBlocks++;
    for (const b of referenced) if (!present.has(b)) a.missingBlocks++;
  }
  return a;
}

// ---------------------------------------------------------------------------------------------
// The volume

/** sha256 of a whole image, and the sha256 of each non-zero 2 MiB block. */
async function imageHashes(path: string): Promise<{ sha256: string; blocks: Set<string> }> {
  const whole = createHash("sha256");
  const blocks = new Set<string>();
  const zero = Buffer.alloc(BLOCK);
  const buf = Buffer.alloc(BLOCK);
  const fh = await open(path, "r");
  try {
    for (;;) {
      let n = 0;
      while (n < BLOCK) {
        const { bytesRead } = await fh.read(buf, n, BLOCK - n, null);
        if (bytesRead === 0) break;
        n += bytesRead;
      }
      if (n === 0) break;
      const chunk = buf.subarray(0, n);
      whole.update(chunk);
      if (!chunk.equals(zero.subarray(0, n))) {
        blocks.add(createHash("sha256").update(chunk).digest("hex"));
      }
      if (n < BLOCK) break;
    }
  } finally {
    await fh.close();
  }
  return { sha256: whole.digest("hex"), blocks };
}

/** Rewrites `file` in place with `mib` MiB from /dev/urandom. */
async function writeRandom(file: string, mib: number): Promise<void> {
  await must("dd", [
    "if=/dev/urandom",
    `of=${file}`,
    "bs=1M",
    `count=${mib}`,
    "conv=notrunc,fsync",
    "status=none",
  ]);
}

async function fillVolume(mp: string, sizeMiB: number): Promise<void> {
  await writeRandom(join(mp, "random.bin"), Math.floor(sizeMiB / 4));
  await must("dd", [
    "if=/dev/zero",
    `of=${join(mp, "zeros.bin")}`,
    "bs=1M",
    `count=${Math.floor(sizeMiB / 4)}`,
    "conv=fsync",
    "status=none",
  ]);
  const pattern = randomBytes(MiB); // the same MiB over and over: deduplicated blocks
  const fh = await open(join(mp, "repeated.bin"), "w");
  try {
    for (let i = 0; i < Math.floor(sizeMiB / 8); i++) await fh.write(pattern);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Rounds

type Trigger =
  | { at: "lease" }
  | { at: "blocks"; k: number; expected: number }
  /** Every block read and stored (the job's Done reached Total): the flush and record writes. */
  | { at: "all-blocks"; expected: number }
  | { at: "record" };

function describe(t: Trigger): string {
  switch (t.at) {
    case "blocks":
      return `blocks:${t.k}/${t.expected}`;
    case "all-blocks":
      return `all-blocks:${t.expected}`;
    default:
      return t.at;
  }
}

/** Kill points spread over the rounds: start, k blocks in, all blocks stored, record written. */
function triggerFor(round: number, rounds: number, expected: number): Trigger {
  if (round === 0) return { at: "lease" };
  if (round === rounds - 1) return { at: "record" };
  if (round === rounds - 2 && rounds >= 3) return { at: "all-blocks", expected };
  const k = Math.round((round / (rounds - 1)) * expected);
  return { at: "blocks", k: Math.min(Math.max(k, 1), Math.max(1, expected - 1)), expected };
}

/**
 * True once a running job of the daemon has done `atLeast` blocks (default: all of them). A backup
 * counts a block done once its object is written, so this is "k blocks stored" without a listing.
 */
async function jobDone(socket: string, atLeast?: number): Promise<boolean> {
  const r = await rawRequest(socket, "GET", "/v1/jobs");
  if (r.status !== 200) return false;
  const jobs = JSON.parse(r.body) as { State: string; Done: number; Total: number }[];
  return jobs.some((j) =>
    j.State === "running" && j.Total > 0 && j.Done >= Math.min(atLeast ?? j.Total, j.Total)
  );
}

/** The poll of a trigger: resolves true once the daemon is to be killed. */
async function checkFor(
  h: Harness,
  opts: { store: StoreView; trigger: Trigger },
): Promise<{ check: () => Promise<boolean>; pollMs: number }> {
  const { store, trigger: t } = opts;
  const vfs = store.kind === "vfs";
  if (t.at === "all-blocks") return { check: () => jobDone(h.socket), pollMs: 2 };
  // Walking a vfs store's growing block tree every few ms is too slow to catch the last blocks.
  if (t.at === "blocks" && vfs) return { check: () => jobDone(h.socket, t.k), pollMs: 2 };
  // One readdir or one small list for leases and records; a walk of the block tree is dearer.
  const scope: Scope = t.at === "lease" ? "leases" : t.at === "record" ? "backups" : "blocks";
  const pollMs = scope === "blocks" ? 40 : (vfs ? 1 : 5);
  const before = await volumeState(store, { volume: VOLUME, scope });
  const fired = (s: VolumeState) => {
    switch (t.at) {
      case "lease":
        return s.leases > before.leases;
      case "blocks":
        return s.blocks - before.blocks >= t.k;
      case "record":
        return s.tempRecords > 0 || [...s.records].some((r) => !before.records.has(r));
    }
  };
  return { check: async () => fired(await volumeState(store, { volume: VOLUME, scope })), pollMs };
}

interface RoundResult {
  dest: string;
  round: number;
  killAt: string;
  /** False when the command finished before the kill point was reached. */
  killed: boolean;
  firstExit: number;
  /** From the start of the first run to the kill (or its end). */
  firstSeconds: number;
  rerunExit: number;
  rerunSeconds: number;
  rerunError?: string;
  verify: "ok" | "rejected" | "failed" | "skipped";
  verifyError?: string;
  restore: "match" | "mismatch" | "failed" | "skipped";
  restoreError?: string;
  delete?: {
    killAt: string;
    killed: boolean;
    firstExit: number;
    /** A re-run after the kill: "gone" when the record had already been removed. */
    rerun: "ok" | "gone" | "failed" | "skipped";
    rerunError?: string;
  };
  leftovers: StoreAnalysis;
}

interface Harness {
  dir: string;
  root: string;
  socket: string;
  daemon: TestDaemon;
  env: Record<string, string>;
}

async function startConvoy(h: Harness): Promise<void> {
  h.daemon = await startDaemon({ root: h.root, socket: h.socket, args: ["--drivers", "loop"] });
}

/** Runs the CLI and throws unless it exits 0; trimmed stdout. */
async function ok(h: Harness, args: string[], timeoutMs?: number): Promise<string> {
  const r = await cli(h.socket, args, { env: h.env, timeoutMs });
  if (r.code !== 0) {
    throw new Error(`convoy ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
  }
  return r.stdout;
}

/**
 * Runs `args`, calls `check` every `pollMs` and SIGKILLs the daemon `delayMs` after it first
 * resolves true; restarts it. Resolves to the command's exit code and whether the kill came first.
 */
async function killDuring(
  h: Harness,
  opts: {
    args: string[];
    check: () => Promise<boolean>;
    pollMs: number;
    delayMs?: number;
  },
): Promise<{ killed: boolean; exit: number; seconds: number }> {
  const t0 = performance.now();
  let finished = false;
  const cmd = cli(h.socket, opts.args, { env: h.env, timeoutMs: 600_000 }).finally(() =>
    finished = true
  );
  let killed = false;
  while (!finished) {
    // A listing racing a rename or delete, or a request to a busy daemon, may fail: poll again.
    const ready = await opts.check().catch(() => false);
    if (ready && !finished) {
      if (opts.delayMs) await sleep(opts.delayMs);
      if (!finished) {
        await h.daemon.kill9();
        killed = true;
      }
      break;
    }
    await sleep(opts.pollMs);
  }
  const seconds = +((performance.now() - t0) / 1000).toFixed(2);
  const r = await cmd;
  if (killed) await startConvoy(h);
  return { killed, exit: r.code, seconds };
}

const snapshotImage = (h: Harness, snap: string) =>
  join(h.root, "loop", "snapshots", VOLUME, `${snap}.img`);

/** Restores `url` into a new volume and compares its image with `sha256`; removes the volume. */
async function restoreMatches(
  h: Harness,
  opts: { url: string; name: string; sha256: string },
): Promise<{ restore: RoundResult["restore"]; restoreError?: string }> {
  const r = await cli(h.socket, ["create", opts.name, "--backup", opts.url], { env: h.env });
  if (r.code !== 0) return { restore: "failed", restoreError: r.stderr };
  try {
    const info = JSON.parse(await ok(h, ["inspect", opts.name])) as {
      DriverInfo?: { Path?: string };
    };
    const path = info.DriverInfo?.Path;
    if (!path) return { restore: "failed", restoreError: "inspect reports no DriverInfo.Path" };
    const got = await imageHashes(path);
    return { restore: got.sha256 === opts.sha256 ? "match" : "mismatch" };
  } finally {
    await cli(h.socket, ["delete", opts.name], { env: h.env });
  }
}

async function verify(
  h: Harness,
  url: string,
): Promise<{ verify: RoundResult["verify"]; verifyError?: string }> {
  const r = await cli(h.socket, ["backup", "verify", url], { env: h.env });
  if (r.code === 0) return { verify: "ok" };
  return {
    verify: /is damaged/.test(r.stderr) ? "rejected" : "failed",
    verifyError: r.stderr.split("\n")[0],
  };
}

/**
 * The volume's backups in `dest`, oldest first. A CLI that lists records it cannot read (with an
 * `Error`) exits 1 but still prints the list: those are counted in `unreadable`.
 */
async function listBackups(
  h: Harness,
  dest: string,
): Promise<{ urls: string[]; unreadable: string[] }> {
  const args = ["backup", "list", dest, "--volume-name", VOLUME];
  const r = await cli(h.socket, args, { env: h.env });
  let list: Record<string, { CreatedTime?: string; Error?: string }>;
  try {
    list = JSON.parse(r.stdout);
  } catch {
    throw new Error(`convoy ${args.join(" ")} exited ${r.code}: ${r.stderr || r.stdout}`);
  }
  const entries = Object.entries(list);
  return {
    urls: entries.filter(([, b]) => !b.Error)
      .sort((a, b) => Date.parse(a[1].CreatedTime ?? "") - Date.parse(b[1].CreatedTime ?? ""))
      .map(([url]) => url),
    unreadable: entries.filter(([, b]) => b.Error).map(([url]) => url),
  };
}

async function runDestination(
  h: Harness,
  opts: { store: StoreView; rounds: number; mp: string; sizeMiB: number },
): Promise<RoundResult[]> {
  const { store } = opts;
  const dest = store.url;
  const results: RoundResult[] = [];
  const stored = new Set<string>(); // block hashes of every snapshot backed up here
  const snaps: string[] = [];
  for (let round = 0; round < opts.rounds; round++) {
    await writeRandom(join(opts.mp, "random.bin"), Math.floor(opts.sizeMiB / 4));
    await must("sync", []);
    const snap = `${store.kind}${round}`;
    await ok(h, ["snapshot", "create", VOLUME, "--name", snap]);
    snaps.push(snap);
    const image = await imageHashes(snapshotImage(h, snap));
    const expected = [...image.blocks].filter((b) => !stored.has(b)).length;
    const trigger = triggerFor(round, opts.rounds, expected);
    const args = ["backup", "create", snap, "--dest", dest];
    const first = await killDuring(h, { args, ...await checkFor(h, { store, trigger }) });
    const rerun = await cli(h.socket, args, { env: h.env, timeoutMs: 600_000 });
    for (const b of image.blocks) stored.add(b);
    const res: RoundResult = {
      dest: store.kind,
      round,
      killAt: describe(trigger),
      killed: first.killed,
      firstExit: first.exit,
      firstSeconds: first.seconds,
      rerunExit: rerun.code,
      rerunSeconds: rerun.seconds,
      ...(rerun.code !== 0 ? { rerunError: rerun.stderr.split("\n")[0] } : {}),
      verify: "skipped",
      restore: "skipped",
      leftovers: undefined as unknown as StoreAnalysis,
    };
    if (rerun.code === 0) {
      const url = rerun.stdout;
      Object.assign(res, await verify(h, url));
      Object.assign(
        res,
        await restoreMatches(h, { url, name: `r${store.kind}${round}`, sha256: image.sha256 }),
      );
    }
    if (round % 4 === 2) {
      const nth = Math.floor(round / 4) + (store.kind === "s3" ? 1 : 0);
      res.delete = await killDuringDelete(h, { store, nth });
    }
    // Keep the newest two snapshots: the next backup builds on the last one.
    while (snaps.length > 2) await ok(h, ["snapshot", "delete", snaps.shift()!]);
    res.leftovers = await analyse(store);
    results.push(res);
    log(JSON.stringify(res));
  }
  for (const s of snaps) await ok(h, ["snapshot", "delete", s]);
  return results;
}

const DELETE_DELAYS_MS = [0, 30, 10, 100];

/**
 * Deletes the oldest backup, killing the daemon a delay (the `nth` of DELETE_DELAYS_MS) after its
 * record is gone; re-runs the delete.
 */
async function killDuringDelete(
  h: Harness,
  opts: { store: StoreView; nth: number },
): Promise<RoundResult["delete"]> {
  const { urls } = await listBackups(h, opts.store.url);
  if (urls.length < 2) return undefined;
  const url = urls[0];
  const before = await volumeState(opts.store, { volume: VOLUME, scope: "backups" });
  const delayMs = DELETE_DELAYS_MS[opts.nth % DELETE_DELAYS_MS.length];
  const gone = async () => {
    const s = await volumeState(opts.store, { volume: VOLUME, scope: "backups" });
    return s.records.size < before.records.size;
  };
  const first = await killDuring(h, {
    args: ["backup", "delete", url],
    check: gone,
    pollMs: opts.store.kind === "vfs" ? 1 : 5,
    delayMs,
  });
  const res: NonNullable<RoundResult["delete"]> = {
    killAt: `record-gone+${delayMs}ms`,
    killed: first.killed,
    firstExit: first.exit,
    rerun: "skipped",
  };
  if (!first.killed) return res;
  const rerun = await cli(h.socket, ["backup", "delete", url], { env: h.env });
  res.rerun = rerun.code === 0 ? "ok" : /does not exist/.test(rerun.stderr) ? "gone" : "failed";
  if (rerun.code !== 0) res.rerunError = rerun.stderr.split("\n")[0];
  return res;
}

/** `convoy backup gc DEST` when this CLI has it: its JSON, or why it failed. */
async function gc(h: Harness, dest: string): Promise<unknown> {
  const help = await cli(h.socket, ["backup", "gc", "--help"], { env: h.env });
  if (help.code !== 0 || !/^Usage: convoy backup gc/m.test(help.stdout)) return "unavailable";
  const r = await cli(h.socket, ["backup", "gc", dest], { env: h.env, timeoutMs: 600_000 });
  if (r.code !== 0) return { error: r.stderr.split("\n")[0], exit: r.code };
  try {
    return JSON.parse(r.stdout);
  } catch {
    return { output: r.stdout };
  }
}

interface DestSummary {
  rounds: number;
  killed: number;
  rerunFailures: number;
  /** Rounds where a backup took over a minute (waiting on a lease a killed daemon left). */
  stalls: number;
  roundVerifyRejected: number;
  roundVerifyFailed: number;
  restoreMismatches: number;
  restoreFailures: number;
  deleteRounds: number;
  deletesKilled: number;
  deleteRerunFailures: number;
  gc: unknown;
  finalBackups: number;
  verifyRejected: number;
  verifyFailed: number;
  tempObjectsAfterGc: number;
  unreferencedBlocksAfterGc: number;
  missingBlocksAfterGc: number;
  leasesAfterGc: number;
  incompleteUploadsAfterGc: number | null;
  store: StoreAnalysis;
  details: RoundResult[];
}

async function finish(h: Harness, store: StoreView, details: RoundResult[]): Promise<DestSummary> {
  const gcResult = await gc(h, store.url);
  let verifyRejected = 0;
  let verifyFailed = 0;
  const { urls, unreadable } = await listBackups(h, store.url);
  verifyRejected += unreadable.length;
  for (const url of unreadable) log(`backup list cannot read ${url}`);
  for (const url of urls) {
    const v = await verify(h, url);
    if (v.verify === "rejected") verifyRejected++;
    if (v.verify === "failed") verifyFailed++;
    if (v.verify !== "ok") log(`final verify of ${url}: ${v.verify}: ${v.verifyError}`);
  }
  const a = await analyse(store);
  const deletes = details.flatMap((d) => (d.delete ? [d.delete] : []));
  return {
    rounds: details.length,
    killed: details.filter((d) => d.killed).length,
    rerunFailures: details.filter((d) => d.rerunExit !== 0).length,
    stalls: details.filter((d) => d.firstSeconds > 60 || d.rerunSeconds > 60).length,
    roundVerifyRejected: details.filter((d) => d.verify === "rejected").length,
    roundVerifyFailed: details.filter((d) => d.verify === "failed").length,
    restoreMismatches: details.filter((d) => d.restore === "mismatch").length,
    restoreFailures: details.filter((d) => d.restore === "failed").length,
    deleteRounds: deletes.length,
    deletesKilled: deletes.filter((d) => d.killed).length,
    deleteRerunFailures: deletes.filter((d) => d.rerun === "failed").length,
    gc: gcResult,
    finalBackups: urls.length + unreadable.length,
    verifyRejected,
    verifyFailed,
    tempObjectsAfterGc: a.tempObjects,
    unreferencedBlocksAfterGc: a.unreferencedBlocks,
    missingBlocksAfterGc: a.missingBlocks,
    leasesAfterGc: a.leases,
    incompleteUploadsAfterGc: a.incompleteUploads,
    store: a,
    details,
  };
}

// ---------------------------------------------------------------------------------------------
// Set-up and clean-up

async function detachLoops(dir: string): Promise<void> {
  const out = await run("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]);
  for (const line of out.stdout.split("\n")) {
    const [dev, file] = line.trim().split(/\s+/, 2);
    if (dev && file?.startsWith(dir + "/")) await run("losetup", ["-d", dev]);
  }
}

async function main(): Promise<number> {
  const opts = parseOptions(process.argv.slice(2));
  if (process.getuid?.() !== 0) {
    console.error("kill_loop.ts needs root: loop devices and mounts");
    return 2;
  }
  useTestCredentials();
  const { dir, cleanup } = await tempDir("convoy-faults-");
  let s3Server: S3Server | undefined;
  let s3Client: S3Client | undefined;
  const h: Harness = {
    dir,
    root: join(dir, "root"),
    socket: join(dir, "convoy.sock"),
    daemon: undefined as unknown as TestDaemon,
    env: {},
  };
  const summary: Record<string, unknown> = {};
  const t0 = performance.now();
  try {
    const dests = opts.dest === "both" ? ["vfs", "s3"] as const : [opts.dest];
    const stores: StoreView[] = [];
    for (const kind of dests) {
      if (kind === "vfs") {
        const path = join(dir, "store");
        await mkdir(path);
        stores.push(vfsView(path));
        continue;
      }
      let endpoint = process.env.CONVOY_TEST_S3_ENDPOINT?.trim();
      if (!endpoint) {
        await mkdir(join(dir, "s3"));
        s3Server = await startS3Server({ dir: join(dir, "s3") });
        endpoint = s3Server.endpoint;
      }
      const sdk = await import("@aws-sdk/client-s3");
      s3Client = new sdk.S3Client({
        region: "us-east-1",
        endpoint,
        forcePathStyle: true,
        requestChecksumCalculation: "WHEN_REQUIRED",
        responseChecksumValidation: "WHEN_REQUIRED",
      });
      const bucket = `convoy-faults-${crypto.randomUUID().slice(0, 8)}`;
      await s3Client.send(new sdk.CreateBucketCommand({ Bucket: bucket }));
      h.env.CONVOY_S3_ENDPOINT = endpoint;
      stores.push(await s3View(s3Client, { bucket, path: "faults" }));
    }

    await startConvoy(h);
    await ok(h, ["create", VOLUME, "--size", `${opts.size}M`]);
    const mp = await ok(h, ["mount", VOLUME]);
    await fillVolume(mp, opts.size);
    log(`volume ${VOLUME} (${opts.size} MiB) filled; ${opts.rounds} rounds per destination`);

    const totals = {
      rounds: 0,
      rerunFailures: 0,
      verifyRejected: 0,
      restoreMismatches: 0,
      tempObjectsAfterGc: 0,
      unreferencedBlocksAfterGc: 0,
    };
    for (const store of stores) {
      log(`destination ${store.url}`);
      const details = await runDestination(h, {
        store,
        rounds: opts.rounds,
        mp,
        sizeMiB: opts.size,
      });
      const s = await finish(h, store, details);
      summary[store.kind] = s;
      totals.rounds += s.rounds;
      totals.rerunFailures += s.rerunFailures;
      totals.verifyRejected += s.verifyRejected + s.roundVerifyRejected;
      totals.restoreMismatches += s.restoreMismatches + s.restoreFailures;
      totals.tempObjectsAfterGc += s.tempObjectsAfterGc;
      totals.unreferencedBlocksAfterGc += s.unreferencedBlocksAfterGc;
    }
    const perDest = Object.values(summary) as DestSummary[];
    const doc = {
      ...totals,
      missingBlocksAfterGc: perDest.reduce((n, s) => n + s.missingBlocksAfterGc, 0),
      leasesAfterGc: perDest.reduce((n, s) => n + s.leasesAfterGc, 0),
      stalls: perDest.reduce((n, s) => n + s.stalls, 0),
      seconds: Math.round((performance.now() - t0) / 1000),
      options: opts,
      ...summary,
    };
    console.log(JSON.stringify(doc, null, 2));
    const bad = totals.rerunFailures + totals.verifyRejected + totals.restoreMismatches +
      totals.tempObjectsAfterGc + totals.unreferencedBlocksAfterGc + doc.missingBlocksAfterGc;
    return bad > 0 ? 1 : 0;
  } finally {
    log("cleaning up");
    if (h.daemon) {
      await cli(h.socket, ["umount", VOLUME], { env: h.env }).catch(() => {});
      await cli(h.socket, ["delete", VOLUME], { env: h.env }).catch(() => {});
      await h.daemon.stop();
    }
    await detachLoops(dir);
    await cleanup();
    await detachLoops(dir);
    s3Client?.destroy();
    await s3Server?.close();
  }
}

if (import.meta.main) process.exit(await main());
