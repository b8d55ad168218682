/**
 * Helpers of the devicemapper tests: a gate on a real device-mapper thin pool, throw-away pools
 * on loop devices over sparse files, and cleanup that leaves nothing mounted or active.
 *
 * The tests that need a pool are skipped (with the reason in their names) where device-mapper
 * has no thin-pool target, e.g. on a host kernel without device-mapper; `.ci/dm_tests.sh` runs
 * them in a User-mode Linux (or QEMU) guest that has one.
 * @module
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { access, mkdtemp, open, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import type { BackupStoreApi, Exec, InitFunc, LogFields, Logger } from "../../mod.ts";
import { registeredInit } from "../../src/plugins/testing.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { readMounts } from "../../src/util/mountinfo.ts";
import setup from "../../plugins/devicemapper/mod.ts";
import type { BlockDriver } from "../../src/plugins/block/driver.ts";

export const exec: Exec = createExec({ timeoutMs: 120_000 });
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
export const BLOCK = 2 * MiB;

let probeDetail = "";

/** Why the thin-pool tests cannot run here, or undefined when they can. */
async function probeThinPool(): Promise<string | undefined> {
  if (process.platform !== "linux") return `not Linux (${process.platform})`;
  if (typeof process.getuid === "function" && process.getuid() !== 0) return "not running as root";
  try {
    const { stdout } = await exec("dmsetup", ["targets"], { timeoutMs: 10_000 });
    if (!/^thin-pool\s/m.test(stdout)) {
      return "device-mapper has no thin-pool target (dmsetup targets)";
    }
  } catch (err) {
    probeDetail = (err as Error).message;
    if (/command not found/i.test(probeDetail)) return "dmsetup is not installed";
    return 'no device-mapper in this kernel ("dmsetup targets" failed)';
  }
  for (const tool of ["losetup", "thin_delta", "thin_dump", "mkfs.ext4", "blkid"]) {
    try {
      await exec("sh", ["-c", `command -v ${tool}`]);
    } catch {
      return `${tool} is not installed`;
    }
  }
  return undefined;
}

/** Undefined when a real thin pool can be made here; otherwise why not. */
export const skipReason: string | undefined = await probeThinPool();
/** Options of a test that needs a thin pool: skipped, with the reason, where there is none. */
export const needsPool: { skip?: string } = skipReason
  ? { skip: `SKIPPED: ${skipReason}; .ci/dm_tests.sh runs it in a User-mode Linux or QEMU guest` }
  : {};
/** A suffix for suite names that tells why their tests are skipped. */
export const skipNote = skipReason ? ` [SKIPPED here: ${skipReason}]` : "";

if (skipReason) {
  console.log(
    `devicemapper thin-pool tests are SKIPPED here: ${skipReason}` +
      (probeDetail ? `\n  ${probeDetail}` : ""),
  );
}

export interface LogLine {
  level: string;
  msg: string;
  fields: LogFields;
}

/** A logger that keeps every line with its fields. */
export function recordingLogger(): Logger & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  const make = (base: LogFields): Logger => ({
    debug: (msg, f) => void lines.push({ level: "debug", msg, fields: { ...base, ...f } }),
    info: (msg, f) => void lines.push({ level: "info", msg, fields: { ...base, ...f } }),
    warn: (msg, f) => void lines.push({ level: "warn", msg, fields: { ...base, ...f } }),
    error: (msg, f) => void lines.push({ level: "error", msg, fields: { ...base, ...f } }),
    child: (f) => make({ ...base, ...f }),
  });
  return Object.assign(make({}), { lines });
}

/** The devicemapper InitFunc, registered through the real plugin api. */
export function dmInit(
  opts: { log?: Logger; backup?: BackupStoreApi; exec?: Exec } = {},
): InitFunc {
  return registeredInit(setup, "devicemapper", {
    log: opts.log ?? recordingLogger(),
    exec: opts.exec ?? exec,
    backup: opts.backup,
  });
}

/** An Exec that records every command line (and may rewrite or fail some). */
export function recordingExec(
  hook?: (
    cmd: string,
    args: string[],
  ) => { cmd: string; args: string[]; timeoutMs?: number } | Error | undefined,
): Exec & { calls: string[] } {
  const calls: string[] = [];
  const fn: Exec = async (cmd, args, opts) => {
    calls.push([cmd, ...args].join(" "));
    const h = hook?.(cmd, args);
    if (h instanceof Error) throw h;
    const o = h?.timeoutMs ? { ...opts, timeoutMs: h.timeoutMs } : opts;
    return await exec(h?.cmd ?? cmd, h?.args ?? args, o);
  };
  return Object.assign(fn, { calls });
}

/**
 * An Exec where the daemon "dies" at one command: the first command `at` matches (after running
 * it when `run` is true; a command that fails then throws as usual) never returns, nor does any
 * command after it, and `died` resolves with its command line. The driver's operation stays
 * pending forever: nothing it would do next happens, as when the process is killed there.
 */
export function dyingExec(
  at: (cmd: string, args: string[]) => boolean,
  opts: { run: boolean },
): Exec & { died: Promise<string> } {
  let dead = false;
  let report!: (line: string) => void;
  const died = new Promise<string>((r) => report = r);
  const forever = new Promise<never>(() => {});
  const fn: Exec = async (cmd, args, o) => {
    if (dead) return await forever;
    if (!at(cmd, args)) return await exec(cmd, args, o);
    if (opts.run) await exec(cmd, args, o);
    dead = true;
    report([cmd, ...args].join(" "));
    return await forever;
  };
  return Object.assign(fn, { died });
}

/** True for `dmsetup message <pool> 0 "<msg>..."`. */
export function isMessage(cmd: string, args: string[], msg: string): boolean {
  return cmd === "dmsetup" && args[0] === "message" && (args[3] ?? "").startsWith(msg);
}

/** The thin ids in a pool, ascending (thin_dump of a metadata snapshot reserved for the call). */
export async function thinIDs(env: { pool: string; meta: string }): Promise<number[]> {
  await exec("dmsetup", ["message", env.pool, "0", "reserve_metadata_snap"]);
  try {
    const { stdout } = await exec("thin_dump", ["-m", env.meta]);
    return [...stdout.matchAll(/<device dev_id="(\d+)"/g)].map((m) => Number(m[1]))
      .sort((a, b) => a - b);
  } finally {
    await exec("dmsetup", ["message", env.pool, "0", "release_metadata_snap"]);
  }
}

/** A temp folder on the fastest local filesystem (the guest's RAM in UML). */
async function tempBase(): Promise<string> {
  try {
    await access("/dev/shm");
    return "/dev/shm";
  } catch {
    return tmpdir();
  }
}

/** The live table of a device-mapper device, or undefined. */
export async function tableOf(name: string): Promise<string | undefined> {
  try {
    return (await exec("dmsetup", ["table", name])).stdout.trim();
  } catch {
    return undefined;
  }
}

/** Used data blocks and the held metadata root of a pool. */
export async function poolUsage(pool: string): Promise<{ used: number; held: string }> {
  const { stdout } = await exec("dmsetup", ["status", pool]);
  const f = stdout.trim().split(/\s+/);
  return { used: Number(f[5].split("/")[0]), held: f[6] };
}

/** Names of the device-mapper devices whose names start with `prefix`. */
export async function devicesWithPrefix(prefix: string): Promise<string[]> {
  const { stdout } = await exec("dmsetup", ["ls"]);
  return stdout.split("\n").map((l) => l.split("\t")[0].trim())
    .filter((n) => n.startsWith(prefix)).sort();
}

export async function mountsBelow(dir: string): Promise<string[]> {
  return (await readMounts())
    .map((e) => e.mountPoint)
    .filter((p) => p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
}

/** Writes `data` at `offset` of a file or device and flushes it. */
export async function writeAt(path: string, at: { offset: number; data: Uint8Array }) {
  const fh = await open(path, "r+");
  try {
    await fh.write(at.data, 0, at.data.length, at.offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** sha256 of the first `size` bytes of a file or device. */
export async function sha256Of(path: string, size: number): Promise<string> {
  const h = createHash("sha256");
  const fh = await open(path, "r");
  try {
    const buf = new Uint8Array(4 * MiB);
    for (let pos = 0; pos < size;) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, size - pos), pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return h.digest("hex");
}

/** `size` deterministic, non-zero bytes. */
export function pattern(seed: number, size = BLOCK): Uint8Array {
  const out = new Uint8Array(size);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = (x & 0xff) || 1;
  }
  return out;
}

/** Asserts that `fn` rejects with an error of `type` whose message matches. */
export async function rejectsWith(
  fn: () => unknown,
  want: { type: new (...a: never[]) => Error; message: string | RegExp },
): Promise<Error> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, "expected a rejection");
  assert.ok(
    caught instanceof want.type,
    `expected ${want.type.name}, got ${(caught as Error)?.name}: ${(caught as Error)?.message}`,
  );
  const msg = (caught as Error).message;
  if (typeof want.message === "string") assert.equal(msg, want.message);
  else assert.match(msg, want.message);
  return caught as Error;
}

/** A throw-away thin pool on loop devices over sparse files, and a driver factory on it. */
export interface PoolEnv {
  dir: string;
  /** The driver root, `<dir>/root/devicemapper`. */
  root: string;
  pool: string;
  data: string;
  meta: string;
  /** The driver options of the first start. */
  config: Record<string, string>;
  log: Logger & { lines: LogLine[] };
  init(opts?: {
    config?: Record<string, string>;
    log?: Logger;
    backup?: BackupStoreApi;
    exec?: Exec;
  }): Promise<BlockDriver>;
  /** The device-mapper name of a volume. */
  device(volume: string): string;
}

let poolCounter = 0;

/**
 * Runs `fn` with a fresh temp dir, data and metadata loop devices and a unique pool name.
 * Everything is thawed, unmounted, removed and detached afterwards, even on failure.
 */
export async function withPool(
  opts: { blockSectors?: number; dataSize?: number; fs?: string; defaultSize?: string },
  fn: (env: PoolEnv) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(await tempBase(), "convoy-dm-"));
  const pool = `ct${process.pid % 10000}x${++poolCounter}`;
  const loops: string[] = [];
  const log = recordingLogger();
  try {
    const files = { data: join(dir, "data.img"), meta: join(dir, "meta.img") };
    for (const [file, size] of [[files.data, opts.dataSize ?? 4 * GiB], [files.meta, 32 * MiB]]) {
      const fh = await open(file as string, "w");
      await fh.truncate(size as number);
      await fh.close();
    }
    const attach = async (file: string) => {
      const dev = (await exec("losetup", ["--find", "--show", file])).stdout.trim();
      loops.push(dev);
      return dev;
    };
    const data = await attach(files.data);
    const meta = await attach(files.meta);
    const root = join(dir, "root", "devicemapper");
    const config: Record<string, string> = {
      "dm.datadev": data,
      "dm.metadatadev": meta,
      "dm.thinpoolname": pool,
      "dm.defaultvolumesize": opts.defaultSize ?? "64M",
      "vfs.path": "/another/driver/option",
    };
    if (opts.blockSectors) config["dm.thinpoolblocksize"] = String(opts.blockSectors);
    if (opts.fs) config["dm.fs"] = opts.fs;
    await fn({
      dir,
      root,
      pool,
      data,
      meta,
      config,
      log,
      init: async (o = {}) =>
        await dmInit({ log: o.log ?? log, backup: o.backup, exec: o.exec })(
          root,
          o.config ?? config,
        ) as BlockDriver,
      device: (volume) => `convoy-${pool}-${volume}`,
    });
  } finally {
    await cleanup({ dir, pool, loops });
  }
}

/** Loop devices whose backing file is below `dir`. */
export async function loopsUnder(dir: string): Promise<string[]> {
  const { stdout } = await exec("losetup", [
    "--list",
    "--noheadings",
    "--output",
    "NAME,BACK-FILE",
  ]);
  return stdout.split("\n").map((l) => l.trim()).filter(Boolean).map((l) => {
    const i = l.indexOf(" ");
    return { dev: l.slice(0, i), file: l.slice(i).trim() };
  }).filter((e) => e.file.startsWith(dir + "/")).map((e) => e.dev);
}

/** Unmounts below `dir`, removes the pool's devices and the pool, detaches `loops`, removes `dir`. */
export async function cleanup(t: { dir: string; pool: string; loops: string[] }): Promise<void> {
  const quiet = async (cmd: string, args: string[]) => await exec(cmd, args).catch(() => {});
  for (let pass = 0; pass < 3; pass++) {
    for (const p of await mountsBelow(t.dir)) {
      await quiet("fsfreeze", ["--unfreeze", p]);
      await quiet("umount", [p]);
    }
  }
  const ours = await devicesWithPrefix(`convoy-${t.pool}-`).catch(() => [] as string[]);
  for (const name of [...ours, t.pool]) {
    await quiet("dmsetup", ["resume", name]);
    await quiet("dmsetup", ["remove", "--retry", name]);
  }
  for (const dev of [...await loopsUnder(t.dir), ...t.loops]) {
    await quiet("losetup", ["--detach", dev]);
  }
  await rm(t.dir, { recursive: true, force: true });
}
