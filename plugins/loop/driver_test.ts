import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { Buffer } from "node:buffer";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type {
  BackupStoreApi,
  Exec,
  InitFunc,
  LogFields,
  Logger,
  Mappings,
  SnapshotOperations,
  VolumeOperations,
} from "../../mod.ts";
import {
  AlreadyExistsError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
} from "../../mod.ts";
import { backupConfigPath } from "../../src/backup/layout.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { decodeBackupURL } from "../../src/backup/url.ts";
import { registeredInit } from "../../src/plugins/testing.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { mountAt, parseMountInfo } from "../../src/util/mountinfo.ts";
import setup from "./mod.ts";
import type { CompareStats } from "./driver.ts";
import type { BlockDriver as LoopConvoyDriver } from "../../src/plugins/block/driver.ts";
import { blockMap, blocksToMappings, diffBlockMaps, parseFilefrag } from "./extents.ts";

const exec = createExec({ timeoutMs: 120_000 });
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const BLOCK = 2 * MiB;

// ---- helpers ---------------------------------------------------------------------------------

interface LogLine {
  level: string;
  msg: string;
  fields: LogFields;
}

/** A logger that keeps every line with its fields. */
function recordingLogger(): Logger & { lines: LogLine[] } {
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

/** The stats of every compareSnapshot logged so far. */
function compares(log: { lines: LogLine[] }): CompareStats[] {
  return log.lines.filter((l) => l.msg.startsWith("Compared snapshot")).map((l) =>
    l.fields as unknown as CompareStats
  );
}

/** A comparison's ranges; fails on "unknown". */
function known(r: Mappings | "unknown"): Mappings {
  assert.notEqual(r, "unknown");
  return r as Mappings;
}

/** The loop InitFunc, registered through the real plugin api. */
function loopInit(opts: { log?: Logger; backup?: BackupStoreApi; exec?: Exec } = {}): InitFunc {
  return registeredInit(setup, "loop", { ...opts, exec: opts.exec ?? exec });
}

/** Loop devices whose backing file is below `dir`. */
async function loopsUnder(dir: string): Promise<string[]> {
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

/** The loop devices `image` is attached to. */
async function devicesOf(image: string): Promise<string[]> {
  const { stdout } = await exec("losetup", [
    "--list",
    "--noheadings",
    "--output",
    "NAME",
    "--associated",
    image,
  ]);
  return stdout.split("\n").map((l) => l.trim()).filter(Boolean);
}

async function mountsBelow(dir: string): Promise<string[]> {
  return parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"))
    .map((e) => e.mountPoint)
    .filter((p) => p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
}

/** Thaws and unmounts everything below `dir`, detaches its loop devices, then removes it. */
async function cleanup(dir: string): Promise<void> {
  for (let pass = 0; pass < 4; pass++) {
    const mounts = await mountsBelow(dir);
    for (const p of mounts) {
      await exec("fsfreeze", ["--unfreeze", p]).catch(() => {});
      await exec("umount", [p]).catch(() => {});
    }
    const loops = await loopsUnder(dir);
    for (const dev of loops) await exec("losetup", ["--detach", dev]).catch(() => {});
    if (!mounts.length && !loops.length) break;
  }
  await rm(dir, { recursive: true, force: true });
}

interface Env {
  dir: string;
  /** The driver root, `<dir>/root/loop`. */
  root: string;
  /** loop.path. */
  path: string;
  log: Logger & { lines: LogLine[] };
  init(opts?: {
    config?: Record<string, string>;
    log?: Logger;
    backup?: BackupStoreApi;
    exec?: Exec;
  }): Promise<LoopConvoyDriver>;
}

/**
 * Runs `fn` with a fresh temp dir and a driver factory on it. With `xfs`, loop.path is on an
 * xfs filesystem with reflinks (a loop-mounted image in the temp dir); otherwise on the root
 * filesystem. Everything is unmounted, detached and removed afterwards, even on failure.
 */
async function withEnv(
  opts: { xfs?: boolean },
  fn: (env: Env) => Promise<void>,
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-loop-"));
  const root = join(dir, "root", "loop");
  let path = join(root, "volumes");
  const log = recordingLogger();
  try {
    if (opts.xfs) {
      const img = join(dir, "xfs.img");
      const fh = await open(img, "w");
      await fh.truncate(16 * GiB);
      await fh.close();
      await exec("mkfs.xfs", ["-q", "-m", "reflink=1", img]);
      await mkdir(join(dir, "xfs"));
      await exec("mount", ["-o", "loop", img, join(dir, "xfs")]);
      path = join(dir, "xfs", "volumes");
    }
    const defaults: Record<string, string> = opts.xfs ? { "loop.path": path } : {};
    await fn({
      dir,
      root,
      path,
      log,
      init: async (o = {}) =>
        await loopInit({ log: o.log ?? log, backup: o.backup, exec: o.exec })(
          root,
          o.config ?? { ...defaults, "vfs.path": "/other/driver/option" },
        ) as LoopConvoyDriver,
    });
  } finally {
    await cleanup(dir);
  }
}

async function ops(d: LoopConvoyDriver): Promise<{
  vols: VolumeOperations;
  snaps: SnapshotOperations;
}> {
  return { vols: await d.volumeOps(), snaps: await d.snapshotOps() };
}

/** `size` deterministic, non-zero bytes. */
function pattern(seed: number, size = BLOCK): Uint8Array {
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

/** Writes `data` at `offset` of a file or block device and syncs it. */
async function writeAt(target: string, at: { offset: number; data: Uint8Array }): Promise<void> {
  const { offset, data } = at;
  const fh = await open(target, "r+");
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function readAt(file: string, at: { offset: number; length: number }): Promise<Uint8Array> {
  const { offset, length } = at;
  const fh = await open(file, "r");
  try {
    const buf = new Uint8Array(length);
    const { bytesRead } = await fh.read(buf, 0, length, offset);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** True when two files hold the same bytes. */
async function sameBytes(a: string, b: string): Promise<boolean> {
  const [sa, sb] = [await stat(a), await stat(b)];
  if (sa.size !== sb.size) return false;
  const [fa, fb] = [await open(a, "r"), await open(b, "r")];
  try {
    const ba = new Uint8Array(8 * MiB);
    const bb = new Uint8Array(8 * MiB);
    for (let pos = 0; pos < sa.size; pos += ba.length) {
      const ra = await fa.read(ba, 0, ba.length, pos);
      const rb = await fb.read(bb, 0, bb.length, pos);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (Buffer.compare(ba.subarray(0, ra.bytesRead), bb.subarray(0, rb.bytesRead)) !== 0) {
        return false;
      }
    }
    return true;
  } finally {
    await fa.close();
    await fb.close();
  }
}

async function fsType(file: string): Promise<string> {
  return (await exec("blkid", ["-p", "-o", "value", "-s", "TYPE", file])).stdout.trim();
}

/** Allocated bytes of a file. */
async function allocated(file: string): Promise<number> {
  return (await stat(file)).blocks * 512;
}

/** Mounts a (snapshot or volume) image read-only at `mp` for a look; undo with the result. */
async function peek(image: string, mp: string): Promise<() => Promise<void>> {
  const dev = (await exec("losetup", ["--find", "--show", "--read-only", image])).stdout.trim();
  await mkdir(mp, { recursive: true });
  const fs = await fsType(image);
  const o = fs === "xfs" ? "ro,norecovery,nouuid" : "ro,noload";
  await exec("mount", ["-o", o, dev, mp]);
  return async () => {
    await exec("umount", [mp]);
    await exec("losetup", ["--detach", dev]);
  };
}

async function rejectsWith(
  fn: () => unknown,
  expected: { type: new (...args: never[]) => Error; message: string | RegExp },
): Promise<void> {
  const { type, message } = expected;
  await assert.rejects(async () => await fn(), (err: Error) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${err.name}: ${err.message}`);
    if (typeof message === "string") assert.equal(err.message, message);
    else assert.match(err.message, message);
    return true;
  });
}

// ---- pure parts --------------------------------------------------------------------------------

describe("loop driver: extent maps", () => {
  const FILEFRAG = `Filesystem type is: 58465342
File size of b is 67108864 (131072 blocks of 512 bytes)
 ext:     logical_offset:        physical_offset: length:   expected: flags:
   0:     8192..   10239:        192..      2239:   2048:       8192: shared
   1:    10240..   10247:       8384..      8391:      8:       2240:
   2:    10248..   14335:       2248..      6335:   4088:       8392: shared
   3:    20480..   24575:      10000..     14095:   4096:             unwritten
   4:    40960..   43007:       6336..      8383:   2048:             last,shared,eof
b: 3 extents found
`;

  it("parseFilefrag() reads offsets in bytes and the flags", () => {
    assert.deepEqual(parseFilefrag(FILEFRAG), [
      { logical: 8192 * 512, physical: 192 * 512, length: 2048 * 512, flags: ["shared"] },
      { logical: 10240 * 512, physical: 8384 * 512, length: 8 * 512, flags: [] },
      { logical: 10248 * 512, physical: 2248 * 512, length: 4088 * 512, flags: ["shared"] },
      { logical: 20480 * 512, physical: 10000 * 512, length: 4096 * 512, flags: ["unwritten"] },
      {
        logical: 40960 * 512,
        physical: 6336 * 512,
        length: 2048 * 512,
        flags: ["last", "shared", "eof"],
      },
    ]);
    assert.equal(parseFilefrag("filefrag: Operation not supported\n"), undefined);
  });

  it("blockMap() cuts extents into 2 MiB blocks and treats unwritten extents as holes", () => {
    const map = blockMap(parseFilefrag(FILEFRAG)!, { size: 64 * MiB });
    // 4 MiB..7 MiB: blocks 2 and 3; 10 MiB (unwritten) is a hole; 20 MiB..21 MiB: block 10.
    assert.deepEqual([...map.keys()].sort((a, b) => a - b), [2, 3, 10]);
    assert.equal(
      map.get(2),
      `${4 * MiB}+${192 * 512}+${MiB},${5 * MiB}+${8384 * 512}+4096,` +
        `${5 * MiB + 4096}+${2248 * 512}+${MiB - 4096}`,
    );
    assert.equal(map.get(3), `${6 * MiB}+${2248 * 512 + MiB - 4096}+${MiB}`);
    assert.equal(map.get(10), `${20 * MiB}+${6336 * 512}+${MiB}`);
    // Physically contiguous extents merge, so two files that split them differently compare equal.
    const split = blockMap([
      { logical: 0, physical: 4096, length: 4096, flags: [] },
      { logical: 4096, physical: 8192, length: 4096, flags: ["shared"] },
    ], { size: 64 * MiB });
    assert.deepEqual([...split], [[0, "0+4096+8192"]]);
    // Extents past the end of the file and delalloc extents.
    const odd = blockMap([
      { logical: 60 * MiB, physical: 0, length: 8 * MiB, flags: ["unknown_loc", "delalloc"] },
    ], { size: 62 * MiB });
    assert.deepEqual([...odd], [[30, "?"]]);
  });

  it("diffBlockMaps() keeps blocks whose extents differ or exist on one side only", () => {
    const a = new Map([[1, "x"], [2, "y"], [5, "z"], [7, "?"]]);
    const b = new Map([[1, "x"], [2, "Y"], [6, "w"], [7, "?"]]);
    assert.deepEqual(diffBlockMaps(a, b), { differ: [2, 5, 6, 7], shared: 1 });
    assert.deepEqual(blocksToMappings([2, 5, 6, 7, 9]), [
      { offset: 2 * BLOCK, size: BLOCK },
      { offset: 5 * BLOCK, size: 3 * BLOCK },
      { offset: 9 * BLOCK, size: BLOCK },
    ]);
  });
});

// ---- volumes -----------------------------------------------------------------------------------

describe("loop driver: volumes", () => {
  it("createVolume() makes a sparse ext4 image of the size rounded up to 2 MiB, attached to a loop device", async () => {
    await withEnv({}, async ({ root, path, init }) => {
      const d = await init();
      assert.equal(d.name(), "loop");
      const { vols } = await ops(d);
      assert.equal(vols.name(), "loop");
      await vols.createVolume("vol1", { Size: "65M", VolumeName: "vol1", PrepareForVM: "false" });
      const image = join(path, "vol1.img");
      assert.equal((await stat(image)).size, 66 * MiB);
      assert.ok(await allocated(image) < 8 * MiB, `allocated ${await allocated(image)} bytes`);
      assert.equal(await fsType(image), "ext4");

      const info = await vols.getVolumeInfo("vol1");
      assert.deepEqual(await devicesOf(image), [info.Device]);
      assert.match(info.Device, /^\/dev\/loop\d+$/);
      assert.deepEqual({ ...info, Device: "", VolumeCreatedAt: "" }, {
        Device: "",
        Size: String(66 * MiB),
        Filesystem: "ext4",
        MountPoint: "",
        VolumeName: "vol1",
        VolumeCreatedAt: "",
        Path: image,
      });
      assert.match(info.VolumeCreatedAt, /^\w{3} \w{3} \d\d \d\d:\d\d:\d\d [+-]\d{4} \d{4}$/);
      assert.deepEqual(await vols.listVolume({}), { vol1: info });
      assert.equal(await vols.mountPoint("vol1"), "");

      const record = JSON.parse(await readFile(join(root, "state", "vol1.json"), "utf8"));
      assert.deepEqual(Object.keys(record), [
        "Name",
        "UUID",
        "Size",
        "Filesystem",
        "CreatedTime",
        "Path",
        "Device",
        "MountPoint",
        "Snapshots",
      ]);
      assert.match(record.UUID, /^[0-9a-f-]{36}$/);

      assert.deepEqual(await d.info(), {
        Root: root,
        Path: path,
        SnapshotPath: join(root, "snapshots"),
        DefaultVolumeSize: String(10 * GiB),
        Filesystem: "ext4",
        DirectIO: "false",
        Reflink: "false",
      });
      assert.deepEqual(JSON.parse(await readFile(join(root, "loop.cfg"), "utf8")), {
        Root: root,
        Path: path,
        SnapshotPath: join(root, "snapshots"),
        DefaultVolumeSize: 10 * GiB,
        Filesystem: "ext4",
        DirectIO: false,
      });
      // Nothing but the image is left in loop.path.
      assert.deepEqual(await readdir(path), ["vol1.img"]);

      await rejectsWith(() => vols.createVolume("vol1", {}), {
        type: AlreadyExistsError,
        message: 'Cannot create volume "vol1": volume already exists',
      });
      await rejectsWith(() => vols.createVolume("vol2", { Size: "lots" }), {
        type: InvalidArgumentError,
        message: /^Invalid options of volume "vol2": "Size": Invalid size "lots"/,
      });
      await rejectsWith(() => vols.getVolumeInfo("nope"), {
        type: NotFoundError,
        message: 'Cannot inspect volume "nope": volume does not exist',
      });
    });
  });

  it("createVolume() refuses a size the filesystem cannot hold as bad input and leaves no file", async () => {
    await withEnv({}, async ({ path, init }) => {
      const { vols } = await ops(await init());
      await rejectsWith(() => vols.createVolume("huge", { Size: "1000T" }), {
        type: InvalidArgumentError,
        message:
          `Cannot create volume "huge": size 1000T exceeds what the filesystem at "${path}" allows`,
      });
      assert.deepEqual(await readdir(path), []);
      assert.deepEqual(await vols.listVolume({}), {});
    });
  });

  it("createVolume() without a size uses loop.defaultvolumesize (10G by default) and loop.fs", async () => {
    await withEnv({}, async ({ path, init, root, dir }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("big", { Size: "0" });
      const image = join(path, "big.img");
      assert.equal((await stat(image)).size, 10 * GiB);
      assert.ok(await allocated(image) < 256 * MiB, `allocated ${await allocated(image)} bytes`);
      await vols.deleteVolume("big", {});

      // A second root configured for xfs and a 301M default (rounded up to 302M).
      const root2 = join(dir, "root2", "loop");
      const d2 = await loopInit()(root2, { "loop.fs": "XFS", "loop.defaultvolumesize": "301M" });
      const v2 = await d2.volumeOps();
      await v2.createVolume("x1", { Size: "" });
      const info = await v2.getVolumeInfo("x1");
      assert.equal(info.Size, String(302 * MiB));
      assert.equal(info.Filesystem, "xfs");
      assert.equal(await fsType(join(root2, "volumes", "x1.img")), "xfs");
      assert.equal((await d2.info()).Filesystem, "xfs");
      // It mounts, and a second xfs with the same UUID would too (nouuid).
      const mp = await v2.mountVolume("x1", {});
      await writeFile(join(mp, "hello"), "xfs");
      await v2.umountVolume("x1");
      await v2.deleteVolume("x1", {});
      assert.notEqual(root, root2);
    });
  });

  it("loop.directio=true attaches with direct I/O", async () => {
    await withEnv({}, async ({ init }) => {
      const d = await init({ config: { "loop.directio": "yes" } });
      assert.equal((await d.info()).DirectIO, "true");
      const vols = await d.volumeOps();
      await vols.createVolume("dio", { Size: "16M" });
      const dev = (await vols.getVolumeInfo("dio")).Device;
      const { stdout } = await exec("losetup", ["--list", "--noheadings", "--output", "DIO", dev]);
      assert.equal(stdout.trim(), "1");
      const mp = await vols.mountVolume("dio", {});
      await writeFile(join(mp, "direct"), pattern(1, 64 * 1024));
      await vols.umountVolume("dio");
    });
  });

  it("mountVolume() mounts at <root>/mounts/<name>; the data survives umount and mount", async () => {
    await withEnv({}, async ({ root, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("vol1", { Size: "64M" });
      const dev = (await vols.getVolumeInfo("vol1")).Device;
      const mp = await vols.mountVolume("vol1", {});
      assert.equal(mp, join(root, "mounts", "vol1"));
      assert.equal((await mountAt(mp))?.source, dev);
      assert.equal(await vols.mountPoint("vol1"), mp);
      assert.equal((await vols.getVolumeInfo("vol1")).MountPoint, mp);
      await writeFile(join(mp, "data.txt"), "hello loop");
      // Mounting again answers the same mount point.
      assert.equal(await vols.mountVolume("vol1", {}), mp);
      await vols.umountVolume("vol1");
      assert.equal(await mountAt(mp), undefined);
      await assert.rejects(stat(mp), { code: "ENOENT" });
      assert.equal(await vols.mountPoint("vol1"), "");
      await vols.umountVolume("vol1"); // unmounting twice is fine

      const again = await vols.mountVolume("vol1", {});
      assert.equal(await readFile(join(again, "data.txt"), "utf8"), "hello loop");
      await vols.umountVolume("vol1");
      await rejectsWith(() => vols.mountVolume("nope", {}), {
        type: NotFoundError,
        message: 'Cannot mount volume "nope": volume does not exist',
      });
    });
  });

  it("mountVolume() at a given mount point; exact paths, not prefixes, decide what is mounted", async () => {
    await withEnv({}, async ({ dir, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("vol1", { Size: "16M" });
      await vols.createVolume("vol10", { Size: "16M" });
      const mp1 = join(dir, "mnt", "vol1");
      const mp10 = join(dir, "mnt", "vol10");
      assert.equal(await vols.mountVolume("vol10", { MountPoint: mp10 }), mp10);
      // "/mnt/vol1" is a prefix of "/mnt/vol10" and is not a mount point.
      assert.equal(await mountAt(mp1), undefined);
      assert.equal(await vols.mountVolume("vol1", { MountPoint: mp1 }), mp1);
      await writeFile(join(mp1, "one"), "1");
      await vols.umountVolume("vol1");
      await assert.rejects(stat(join(mp1, "one")), { code: "ENOENT" });
      assert.equal((await mountAt(mp10))?.source, (await vols.getVolumeInfo("vol10")).Device);

      await rejectsWith(() => vols.mountVolume("vol10", { MountPoint: mp1 }), {
        type: ConflictError,
        message: `Cannot mount volume "vol10" at "${mp1}": volume is already mounted at "${mp10}"`,
      });
      await rejectsWith(() => vols.mountVolume("vol1", { MountPoint: mp10 }), {
        type: ConflictError,
        message: `Cannot mount volume "vol1" at "${mp10}": "${mp10}" is already a mount point`,
      });
      await rejectsWith(() => vols.mountVolume("vol1", { MountPoint: "relative/dir" }), {
        type: InvalidArgumentError,
        message:
          'Cannot mount volume "vol1" at "relative/dir": the mount point must be an absolute path',
      });
      assert.equal(await vols.mountPoint("vol1"), "");
      await vols.umountVolume("vol10");
      // A custom mount point is the user's folder: it stays.
      assert.ok((await stat(mp10)).isDirectory());
    });
  });

  it("deleteVolume() refuses while mounted, then detaches and removes the image and its snapshots", async () => {
    await withEnv({}, async ({ root, path, init }) => {
      const { vols, snaps } = await ops(await init());
      await vols.createVolume("db1", { Size: "16M" });
      const mp = await vols.mountVolume("db1", {});
      await snaps.createSnapshot("s1", "db1");
      await rejectsWith(() => vols.deleteVolume("db1", {}), {
        type: ConflictError,
        message: `Cannot delete volume "db1": volume is mounted at "${mp}"`,
      });
      await vols.umountVolume("db1");

      const image = join(path, "db1.img");
      await vols.deleteVolume("db1", {});
      assert.deepEqual(await devicesOf(image), []);
      await assert.rejects(stat(image), { code: "ENOENT" });
      assert.deepEqual(await readdir(join(root, "snapshots")), []);
      assert.deepEqual(await readdir(join(root, "state")), []);
      assert.deepEqual(await vols.listVolume({}), {});
      await rejectsWith(() => vols.deleteVolume("db1", {}), {
        type: NotFoundError,
        message: 'Cannot delete volume "db1": volume does not exist',
      });
    });
  });

  it("deleteVolume() refuses while the device is mounted behind the driver's back", async () => {
    await withEnv({}, async ({ dir, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("v1", { Size: "16M" });
      const dev = (await vols.getVolumeInfo("v1")).Device;
      const mp = join(dir, "by-hand");
      await mkdir(mp);
      await exec("mount", [dev, mp]);
      await rejectsWith(() => vols.deleteVolume("v1", {}), {
        type: ConflictError,
        message: `Cannot delete volume "v1": its device "${dev}" is mounted at "${mp}"`,
      });
      await exec("umount", [mp]);
      await vols.deleteVolume("v1", {});
    });
  });

  it("deleteVolume() with ReferenceOnly keeps the image; creating the name again adopts it", async () => {
    await withEnv({}, async ({ path, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("keep", { Size: "16M" });
      const mp = await vols.mountVolume("keep", {});
      await writeFile(join(mp, "precious"), "data");
      await vols.umountVolume("keep");
      const image = join(path, "keep.img");
      await vols.deleteVolume("keep", { ReferenceOnly: "true" });
      assert.deepEqual(await devicesOf(image), []);
      assert.equal((await stat(image)).size, 16 * MiB);
      assert.deepEqual(await vols.listVolume({}), {});

      // A restart keeps it too.
      const { vols: vols2 } = await ops(await init());
      assert.equal((await stat(image)).size, 16 * MiB);
      await rejectsWith(() => vols2.createVolume("keep", { Size: "32M" }), {
        type: InvalidArgumentError,
        message:
          `Cannot create volume "keep": the image "${image}" kept from an earlier volume is ${
            16 * MiB
          } bytes, not ${32 * MiB}`,
      });
      await vols2.createVolume("keep", {});
      assert.equal((await vols2.getVolumeInfo("keep")).Size, String(16 * MiB));
      const mp2 = await vols2.mountVolume("keep", {});
      assert.equal(await readFile(join(mp2, "precious"), "utf8"), "data");
      await vols2.umountVolume("keep");
      await vols2.deleteVolume("keep", { ReferenceOnly: "false" });
      await assert.rejects(stat(image), { code: "ENOENT" });
    });
  });

  it("listVolume() skips a bad record and lists the rest", async () => {
    await withEnv({}, async ({ root, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("good", { Size: "8M" });
      await writeFile(join(root, "state", "broken.json"), "{not json");
      await writeFile(join(root, "state", "bad name!.json"), "{}");
      await writeFile(join(root, "state", "other.json"), JSON.stringify({ Name: "other" }));
      assert.deepEqual(Object.keys(await vols.listVolume({})), ["good"]);
      await rejectsWith(() => vols.getVolumeInfo("broken"), {
        type: Error,
        message: /^Cannot read volume "broken": ".*broken\.json" is not a valid volume record/,
      });
    });
  });
});

// ---- snapshots ---------------------------------------------------------------------------------

describe("loop driver: snapshots", () => {
  it("createSnapshot() copies the image; writes after the snapshot are not in it", async () => {
    await withEnv({}, async ({ root, dir, init }) => {
      const calls: string[] = [];
      const recordingExec: Exec = (cmd, args, opts) => {
        calls.push([cmd, ...args].join(" "));
        return exec(cmd, args, opts);
      };
      const { vols, snaps } = await ops(await init({ exec: recordingExec }));
      await vols.createVolume("vol1", { Size: "32M" });
      const mp = await vols.mountVolume("vol1", {});
      await writeFile(join(mp, "a.txt"), "before");
      calls.length = 0;
      await snaps.createSnapshot("s1", "vol1");
      await writeFile(join(mp, "a.txt"), "after");
      await writeFile(join(mp, "b.txt"), "new");

      const file = join(root, "snapshots", "vol1", "s1.img");
      const info = await snaps.getSnapshotInfo("s1", "vol1");
      assert.deepEqual({ ...info, SnapshotCreatedAt: "" }, {
        SnapshotName: "s1",
        SnapshotCreatedAt: "",
        VolumeUUID: "vol1",
        Size: String(32 * MiB),
        FilePath: file,
      });
      assert.equal((await stat(file)).size, 32 * MiB);
      // Sparse: about what the volume's image holds, not its size.
      assert.ok(await allocated(file) < 8 * MiB, `allocated ${await allocated(file)} bytes`);
      assert.deepEqual(Object.keys(await snaps.listSnapshot({})), ["s1"]);
      assert.deepEqual(Object.keys(await snaps.listSnapshot({ VolumeName: "vol1" })), ["s1"]);
      // The filesystem was frozen for the copy and thawed after it.
      assert.deepEqual(calls.filter((c) => /^(fsfreeze|cp) /.test(c)).map((c) => c.split(" ")[1]), [
        "--freeze",
        "--sparse=always",
        "--unfreeze",
      ]);

      const undo = await peek(file, join(dir, "peek"));
      try {
        assert.equal(await readFile(join(dir, "peek", "a.txt"), "utf8"), "before");
        await assert.rejects(stat(join(dir, "peek", "b.txt")), { code: "ENOENT" });
      } finally {
        await undo();
      }

      await rejectsWith(() => snaps.createSnapshot("s1", "vol1"), {
        type: AlreadyExistsError,
        message: 'Cannot create snapshot "s1" of volume "vol1": snapshot already exists',
      });
      await rejectsWith(() => snaps.createSnapshot("s2", "nope"), {
        type: NotFoundError,
        message: 'Cannot create snapshot "s2" of volume "nope": volume does not exist',
      });
      await snaps.deleteSnapshot("s1", "vol1");
      await assert.rejects(stat(file), { code: "ENOENT" });
      assert.deepEqual(await snaps.listSnapshot({}), {});
      await rejectsWith(() => snaps.deleteSnapshot("s1", "vol1"), {
        type: NotFoundError,
        message: 'Cannot delete snapshot "s1" of volume "vol1": snapshot does not exist',
      });
      await rejectsWith(() => snaps.getSnapshotInfo("s1", "vol1"), {
        type: NotFoundError,
        message: 'Cannot inspect snapshot "s1" of volume "vol1": snapshot does not exist',
      });
      await vols.umountVolume("vol1");
      assert.deepEqual(await readdir(join(root, "snapshots", "vol1")), []);
    });
  });

  it("createSnapshot() thaws the filesystem even when the copy fails", async () => {
    await withEnv({}, async ({ root, init }) => {
      const calls: string[] = [];
      const failingExec: Exec = (cmd, args, opts) => {
        calls.push([cmd, ...args].join(" "));
        if (cmd === "cp" && args.some((a) => a.includes("/snapshots/vol1/.tmp-s1-"))) {
          return Promise.reject(new Error("cp: error writing: No space left on device"));
        }
        return exec(cmd, args, opts);
      };
      const { vols, snaps } = await ops(await init({ exec: failingExec }));
      await vols.createVolume("vol1", { Size: "16M" });
      const mp = await vols.mountVolume("vol1", {});
      await rejectsWith(() => snaps.createSnapshot("s1", "vol1"), {
        type: Error,
        message:
          'Cannot create snapshot "s1" of volume "vol1": cp: error writing: No space left on device',
      });
      assert.deepEqual(calls.filter((c) => c.startsWith("fsfreeze")), [
        `fsfreeze --freeze ${mp}`,
        `fsfreeze --unfreeze ${mp}`,
      ]);
      // Not frozen: a write completes, and a second thaw is refused by the kernel.
      await writeFile(join(mp, "still-writable"), "yes");
      await assert.rejects(exec("fsfreeze", ["--unfreeze", mp]));
      assert.deepEqual(await readdir(join(root, "snapshots", "vol1")), []);
      assert.deepEqual(await snaps.listSnapshot({}), {});
      await vols.umountVolume("vol1");
    });
  });

  it("deleteVolume() removes the snapshots; a restart removes unfinished copies and orphans", async () => {
    await withEnv({}, async ({ root, path, init }) => {
      const { vols, snaps } = await ops(await init());
      await vols.createVolume("v1", { Size: "8M" });
      await snaps.createSnapshot("s1", "v1");
      await snaps.createSnapshot("s2", "v1");
      await writeFile(join(root, "snapshots", "v1", ".tmp-s3-0123456789ab.img"), "partial");
      await mkdir(join(root, "snapshots", "ghost"));
      await writeFile(join(root, "snapshots", "ghost", "s.img"), "orphan");
      await writeFile(join(path, ".tmp-v2-0123456789ab.img"), "unfinished create");
      await writeFile(join(path, "kept.img"), "kept by a reference-only delete");

      const d2 = await init();
      assert.deepEqual((await readdir(join(root, "snapshots"))).sort(), ["v1"]);
      assert.deepEqual((await readdir(join(root, "snapshots", "v1"))).sort(), ["s1.img", "s2.img"]);
      assert.deepEqual((await readdir(path)).sort(), ["kept.img", "v1.img"]);
      assert.deepEqual(Object.keys(await (await d2.snapshotOps()).listSnapshot({})).sort(), [
        "s1",
        "s2",
      ]);
      await (await d2.volumeOps()).deleteVolume("v1", {});
      assert.deepEqual(await readdir(join(root, "snapshots")), []);
      assert.deepEqual(await readdir(path), ["kept.img"]);
      void vols;
      void snaps;
    });
  });
});

// ---- delta-block operations --------------------------------------------------------------------

/** Writes known blocks to a volume's device (unmounted): the test's own "changes". */
async function writeBlocks(device: string, blocks: Array<[number, Uint8Array]>): Promise<void> {
  for (const [offset, data] of blocks) await writeAt(device, { offset, data });
}

for (const xfs of [true, false]) {
  const fsName = xfs ? "an xfs loop.path with reflinks" : "an ext4 loop.path (no reflinks)";
  describe(`loop driver: compareSnapshot() on ${fsName}`, () => {
    it("compareSnapshot() reports only the blocks written since the base snapshot", async () => {
      await withEnv({ xfs }, async ({ init, log, path, root }) => {
        const d = await init();
        assert.equal((await d.info()).Reflink, String(xfs));
        // Snapshots stay on loop.path's filesystem, where reflinks work.
        assert.equal(
          (await d.info()).SnapshotPath,
          xfs ? join(path, "snapshots") : join(root, "snapshots"),
        );
        const { vols, snaps } = await ops(d);
        await vols.createVolume("vol1", { Size: "64M" });
        const dev = (await vols.getVolumeInfo("vol1")).Device;
        await writeBlocks(dev, [[5 * BLOCK, pattern(5)], [20 * BLOCK, pattern(20)]]);
        await snaps.createSnapshot("s1", "vol1");

        // Block 3 whole, blocks 10-11 straddled, 4 KiB inside block 20, block 5 rewritten
        // with the bytes it already holds, and the last block's last 4 KiB.
        await writeBlocks(dev, [
          [3 * BLOCK, pattern(3)],
          [10 * BLOCK + MiB, pattern(10)],
          [20 * BLOCK + 4096, pattern(21, 4096)],
          [5 * BLOCK, pattern(5)],
          [64 * MiB - 4096, pattern(31, 4096)],
        ]);
        await snaps.createSnapshot("s2", "vol1");

        const { ops: delta, close } = d.block.deltaOps();
        try {
          const r = await delta.compareSnapshot("s2", "s1", "vol1");
          const stats = compares(log).at(-1)!;
          // The extent maps alone decide, or the engine does.
          if (xfs) {
            assert.equal(stats.method, "extents");
            assert.ok(stats.shared > 0);
            // A rewrite with the same bytes is a new extent: block 5 is reported (the engine
            // deduplicates it).
            assert.deepEqual(known(r), {
              blockSize: BLOCK,
              mappings: [
                { offset: 3 * BLOCK, size: BLOCK },
                { offset: 5 * BLOCK, size: BLOCK },
                { offset: 10 * BLOCK, size: 2 * BLOCK },
                { offset: 20 * BLOCK, size: BLOCK },
                { offset: 31 * BLOCK, size: BLOCK },
              ],
            });
            // The reverse direction reports the same blocks.
            const back = await delta.compareSnapshot("s1", "s2", "vol1");
            assert.deepEqual(known(back).mappings, known(r).mappings);
          } else {
            // Without reflinks only reading both images could tell: the engine compares the
            // snapshot with the last backup's block map instead.
            assert.equal(r, "unknown");
            assert.equal(stats.method, "unknown");
          }
          // The same snapshot has no differences with itself as base... it is a full compare.
          const self = await delta.compareSnapshot("s2", "s2", "vol1");
          assert.deepEqual(self, await delta.compareSnapshot("s2", "", "vol1"));
          await rejectsWith(() => delta.compareSnapshot("s2", "nope", "vol1"), {
            type: NotFoundError,
            message: 'Cannot compare snapshot "nope" of volume "vol1": snapshot does not exist',
          });
        } finally {
          await close();
        }
      });
    });

    it("compareSnapshot() with no base reports every block holding data and skips holes", async () => {
      await withEnv({ xfs }, async ({ init }) => {
        const d = await init();
        const { vols, snaps } = await ops(d);
        await vols.createVolume("vol1", { Size: "64M" });
        const dev = (await vols.getVolumeInfo("vol1")).Device;
        await writeBlocks(dev, [[17 * BLOCK, pattern(17)], [18 * BLOCK + 8192, pattern(2, 512)]]);
        await snaps.createSnapshot("s1", "vol1");
        const file = (await snaps.getSnapshotInfo("s1", "vol1")).FilePath;
        const { ops: delta, close } = d.block.deltaOps();
        try {
          const { mappings } = known(await delta.compareSnapshot("s1", "", "vol1"));
          assert.ok(mappings.length > 0);
          let covered = 0;
          let prevEnd = -1;
          for (const m of mappings) {
            assert.equal(m.offset % BLOCK, 0);
            assert.equal(m.size % BLOCK, 0);
            assert.ok(m.offset > prevEnd, "ranges are sorted and merged");
            prevEnd = m.offset + m.size;
            covered += m.size;
          }
          assert.ok(covered < 64 * MiB / 2, `covered ${covered} bytes`);
          const inRange = (b: number) =>
            mappings.some((m) => b * BLOCK >= m.offset && b * BLOCK < m.offset + m.size);
          assert.ok(inRange(17) && inRange(18));
          // Every block left out reads as zeros.
          for (let b = 0; b < 32; b++) {
            if (inRange(b)) continue;
            const bytes = await readAt(file, { offset: b * BLOCK, length: BLOCK });
            assert.ok(bytes.every((x) => x === 0), `block ${b} is not a hole`);
          }
        } finally {
          await close();
        }
      });
    });
  });
}

describe("loop driver: reading snapshots", () => {
  it("readSnapshot() reads the snapshot's bytes; a read past the end is zero-filled", async () => {
    await withEnv({}, async ({ init }) => {
      const d = await init();
      const { vols, snaps } = await ops(d);
      await vols.createVolume("vol1", { Size: "8M" });
      const dev = (await vols.getVolumeInfo("vol1")).Device;
      await writeBlocks(dev, [[BLOCK, pattern(1)], [8 * MiB - BLOCK, pattern(3)]]);
      await snaps.createSnapshot("s1", "vol1");
      await writeBlocks(dev, [[BLOCK, pattern(99)]]);

      const { ops: delta, close } = d.block.deltaOps();
      try {
        assert.equal(await delta.hasSnapshot("s1", "vol1"), true);
        assert.equal(await delta.hasSnapshot("s9", "vol1"), false);
        assert.equal(await delta.hasSnapshot("s1", "other"), false);
        await delta.openSnapshot("s1", "vol1");
        const buf = new Uint8Array(BLOCK);
        await delta.readSnapshot("s1", "vol1", BLOCK, buf);
        assert.deepEqual(buf, pattern(1));
        // 1 MiB before the end: the second half is past EOF.
        buf.fill(7);
        await delta.readSnapshot("s1", "vol1", 8 * MiB - MiB, buf);
        assert.deepEqual(buf.subarray(0, MiB), pattern(3).subarray(MiB));
        assert.ok(buf.subarray(MiB).every((x) => x === 0));
        await delta.closeSnapshot("s1", "vol1");
        // Reading without open opens the file on demand.
        await delta.readSnapshot("s1", "vol1", 0, buf);
        await delta.closeSnapshot("s1", "vol1");
        await rejectsWith(() => delta.openSnapshot("s9", "vol1"), {
          type: NotFoundError,
          message: 'Cannot read snapshot "s9" of volume "vol1": snapshot does not exist',
        });
      } finally {
        await close();
      }
    });
  });
});

// ---- restart -----------------------------------------------------------------------------------

describe("loop driver: restart", () => {
  it("a new driver on the same root re-attaches images and re-mounts recorded mounts", async () => {
    await withEnv({}, async ({ dir, path, init }) => {
      const { vols } = await ops(await init());
      await vols.createVolume("va", { Size: "16M" });
      await vols.createVolume("vb", { Size: "16M" });
      await vols.createVolume("vc", { Size: "16M" });
      const mpA = await vols.mountVolume("va", {});
      const mpB = join(dir, "custom", "vb");
      await vols.mountVolume("vb", { MountPoint: mpB });
      await writeFile(join(mpA, "f"), "A");
      await writeFile(join(mpB, "f"), "B");

      // A second driver while everything is attached: no second attachment.
      const again = await ops(await init());
      for (const v of ["va", "vb", "vc"]) {
        assert.equal((await devicesOf(join(path, `${v}.img`))).length, 1, v);
      }
      assert.equal(await again.vols.mountPoint("vb"), mpB);

      // A reboot, as far as the driver can tell: unmounted and detached behind its back.
      for (const mp of [mpA, mpB]) await exec("umount", [mp]);
      for (const v of ["va", "vb", "vc"]) {
        for (const dev of await devicesOf(join(path, `${v}.img`))) {
          await exec("losetup", ["--detach", dev]);
        }
      }
      const { vols: v3 } = await ops(await init());
      for (const v of ["va", "vb", "vc"]) {
        const devs = await devicesOf(join(path, `${v}.img`));
        assert.equal(devs.length, 1, v);
        assert.equal((await v3.getVolumeInfo(v)).Device, devs[0]);
      }
      assert.equal((await mountAt(mpA))?.source, (await v3.getVolumeInfo("va")).Device);
      assert.equal((await mountAt(mpB))?.source, (await v3.getVolumeInfo("vb")).Device);
      assert.equal(await readFile(join(mpA, "f"), "utf8"), "A");
      assert.equal(await readFile(join(mpB, "f"), "utf8"), "B");
      assert.equal(await v3.mountPoint("vc"), "");
      await v3.umountVolume("va");
      await v3.umountVolume("vb");
    });
  });

  it("loop.cfg is saved on the first start; later starts keep it and warn about other options", async () => {
    await withEnv({}, async ({ dir, root, init }) => {
      const log = recordingLogger();
      const other = join(dir, "elsewhere");
      await init({ config: { "loop.defaultvolumesize": "1G", "loop.fs": "ext4" } });
      await init({
        log,
        config: {
          "loop.path": other,
          "loop.defaultvolumesize": "2G",
          "loop.fs": "xfs",
          "loop.directio": "true",
        },
      });
      const file = join(root, "loop.cfg");
      assert.deepEqual(log.lines.filter((l) => l.level === "warn").map((l) => l.msg), [
        `Ignoring --driver-opts loop.path=${JSON.stringify(other)}: ` +
        `the saved configuration in "${file}" uses "${join(root, "volumes")}"`,
        `Ignoring --driver-opts loop.defaultvolumesize="2G": the saved configuration in "${file}" uses ${GiB} bytes`,
        `Ignoring --driver-opts loop.fs="xfs": the saved configuration in "${file}" uses "ext4"`,
        `Ignoring --driver-opts loop.directio="true": the saved configuration in "${file}" uses false`,
      ]);
      assert.equal(JSON.parse(await readFile(file, "utf8")).DefaultVolumeSize, GiB);

      const root2 = join(dir, "bad", "loop");
      await rejectsWith(
        () => loopInit()(root2, { "loop.fs": "btrfs", "loop.defaultvolumesize": "0" }),
        {
          type: InvalidArgumentError,
          message:
            /^Invalid loop driver options: "loop\.defaultvolumesize": must be greater than 0; "loop\.fs": /,
        },
      );
      await writeFile(join(root, "loop.cfg"), JSON.stringify({ Path: "/x" }));
      await rejectsWith(() => init(), {
        type: InvalidArgumentError,
        message: /^Cannot load loop configuration ".*loop\.cfg": "DefaultVolumeSize": /,
      });
    });
  });
});

// ---- backups -----------------------------------------------------------------------------------

describe("loop driver: backups", () => {
  /** A driver with the real backup store api and a vfs:// destination in the temp dir. */
  async function backupEnv(env: Env, opts: { wrap?: (b: BackupStoreApi) => BackupStoreApi } = {}) {
    const storeLog = recordingLogger();
    const real = createBackupStoreApi({ log: storeLog });
    const backup = opts.wrap ? opts.wrap(real) : real;
    const d = await env.init({ backup });
    const store = join(env.dir, "backupstore");
    await mkdir(store, { recursive: true });
    return {
      d,
      backup,
      storeLog,
      dest: `vfs://${store}`,
      store,
      vols: await d.volumeOps(),
      snaps: await d.snapshotOps(),
      backups: await d.backupOps(),
    };
  }

  /** The engine's "backup completed" fields, newest last. */
  function completed(log: { lines: LogLine[] }): LogFields[] {
    return log.lines.filter((l) => l.msg === "backup completed").map((l) => l.fields);
  }

  it("createBackup() backs up incrementally; restoring gives each snapshot's bytes back", async () => {
    await withEnv({ xfs: true }, async (env) => {
      const { dest, vols, snaps, backups, storeLog } = await backupEnv(env);
      assert.equal(backups.name(), "loop");
      await vols.createVolume("vol1", { Size: "64M" });
      let mp = await vols.mountVolume("vol1", {});
      await writeFile(join(mp, "one.txt"), "first version");
      await vols.umountVolume("vol1");
      await snaps.createSnapshot("s1", "vol1");
      const url1 = await backups.createBackup("s1", "vol1", dest, {});
      assert.match(url1, new RegExp(`^${dest}\\?backup=backup-[0-9a-f]+&volume=vol1$`));

      mp = await vols.mountVolume("vol1", {});
      await writeFile(join(mp, "one.txt"), "second version");
      await writeFile(join(mp, "two.bin"), pattern(2, 3 * MiB));
      // Snapshot while mounted: frozen for the copy.
      await snaps.createSnapshot("s2", "vol1");
      await vols.umountVolume("vol1");
      const url2 = await backups.createBackup("s2", "vol1", dest, {});

      // The second backup compared extent maps with s1 and read only what changed.
      const [full, incr] = compares(env.log).slice(-2);
      assert.equal(full.method, "full");
      assert.equal(incr.method, "extents");
      const [c1, c2] = completed(storeLog).slice(-2);
      assert.equal(c1.mode, "full");
      assert.equal(c2.mode, "incremental");
      assert.equal(c2.blocksRead, incr.changed);
      assert.ok(incr.changed < 16, `incremental read ${incr.changed} blocks`);

      const info = await backups.getBackupInfo(url2, {});
      assert.equal(info.DriverName, "loop");
      assert.equal(info.VolumeName, "vol1");
      assert.equal(info.SnapshotName, "s2");
      assert.equal(info.VolumeSize, String(64 * MiB));
      assert.equal(info.VolumeCreatedAt, (await vols.getVolumeInfo("vol1")).VolumeCreatedAt);
      assert.deepEqual(Object.keys(await backups.listBackup(dest, {})).sort(), [url1, url2].sort());
      assert.deepEqual(
        Object.keys(await backups.listBackup(dest, { VolumeName: "vol1" })).sort(),
        [url1, url2].sort(),
      );

      for (
        const [url, snap, text] of [[url2, "s2", "second version"], [url1, "s1", "first version"]]
      ) {
        const res = `res-${snap}`;
        await vols.createVolume(res, { BackupURL: url, Size: String(64 * MiB) });
        const resInfo = await vols.getVolumeInfo(res);
        assert.equal(resInfo.Size, String(64 * MiB));
        assert.equal(resInfo.Filesystem, "ext4");
        assert.deepEqual(await devicesOf(resInfo.Path), [resInfo.Device]);
        const snapFile = (await snaps.getSnapshotInfo(snap, "vol1")).FilePath;
        assert.ok(await sameBytes(resInfo.Path, snapFile), `${res} differs from ${snap}`);
        const rmp = await vols.mountVolume(res, {});
        assert.equal(await readFile(join(rmp, "one.txt"), "utf8"), text);
        await vols.umountVolume(res);
      }
      assert.deepEqual((await readdir(env.path)).filter((f) => f.startsWith(".tmp-")), []);

      await rejectsWith(() => vols.createVolume("res3", { BackupURL: url2, Size: "32M" }), {
        type: InvalidArgumentError,
        message:
          `Cannot create volume "res3" from backup "${url2}": size must match the backup's size ${
            64 * MiB
          }`,
      });
      await rejectsWith(() => vols.createVolume("res-s1", { BackupURL: url2 }), {
        type: AlreadyExistsError,
        message: 'Cannot create volume "res-s1": volume already exists',
      });

      await backups.deleteBackup(url1, {});
      await backups.deleteBackup(url2, {});
      assert.deepEqual(await backups.listBackup(dest, {}), {});
      await rejectsWith(() => backups.getBackupInfo(url2, {}), {
        type: NotFoundError,
        message: /^Cannot find backup/,
      });
    });
  });

  it("a devicemapper backup restores into a loop volume (both are raw filesystem images)", async () => {
    await withEnv({}, async (env) => {
      const { d, backup, dest, vols, snaps, backups } = await backupEnv(env);
      await vols.createVolume("dmvol", { Size: "32M" });
      const mp = await vols.mountVolume("dmvol", {});
      await writeFile(join(mp, "from-dm"), "thin pool data");
      await vols.umountVolume("dmvol");
      await snaps.createSnapshot("dmsnap", "dmvol");
      // What the devicemapper driver would store: same format, another driver name.
      const { ops: delta, close } = d.block.deltaOps();
      let url: string;
      try {
        url = await backup.createDeltaBackup(delta, {
          volume: { name: "dmvol", driver: "devicemapper", size: 32 * MiB, createdTime: "then" },
          snapshot: { name: "dmsnap", createdTime: "then" },
          destURL: dest,
        });
      } finally {
        await close();
      }
      assert.equal((await backups.getBackupInfo(url, {})).DriverName, "devicemapper");
      assert.deepEqual(await backups.listBackup(dest, {}), {});
      await rejectsWith(() => backups.deleteBackup(url, {}), {
        type: InvalidArgumentError,
        message:
          `Cannot delete backup "${url}" with the loop driver: it was made by driver "devicemapper"`,
      });

      await vols.createVolume("fromdm", { BackupURL: url });
      const info = await vols.getVolumeInfo("fromdm");
      assert.equal(info.Size, String(32 * MiB));
      assert.equal(info.Filesystem, "ext4");
      const rmp = await vols.mountVolume("fromdm", {});
      assert.equal(await readFile(join(rmp, "from-dm"), "utf8"), "thin pool data");
      await vols.umountVolume("fromdm");
      // A restored volume gets its own identity: its backups never merge with dmvol's.
      const recA = JSON.parse(await readFile(join(env.root, "state", "dmvol.json"), "utf8"));
      const recB = JSON.parse(await readFile(join(env.root, "state", "fromdm.json"), "utf8"));
      assert.notEqual(recA.UUID, recB.UUID);
    });
  });

  it("createVolume() refuses a file-level backup and a size other than the backup's", async () => {
    await withEnv({}, async (env) => {
      const { backup, dest, vols, snaps, backups } = await backupEnv(env);
      const archive = join(env.dir, "archive.tar.gz");
      await writeFile(archive, "not a block image");
      const vfsURL = await backup.createSingleFileBackup(archive, {
        volume: { name: "files", driver: "vfs", size: 0, createdTime: "x" },
        snapshot: { name: "snap", createdTime: "y" },
        destURL: dest,
      });
      await rejectsWith(() => vols.createVolume("res1", { BackupURL: vfsURL }), {
        type: InvalidArgumentError,
        message:
          `Cannot create volume "res1" from backup "${vfsURL}": it was made by driver "vfs" as ` +
          `a file-level backup; only block backups restore into loop volumes`,
      });
      await vols.createVolume("src", { Size: "32M" });
      await snaps.createSnapshot("srcsnap", "src");
      const blockURL = await backups.createBackup("srcsnap", "src", dest, {});
      await rejectsWith(() => vols.createVolume("res2", { BackupURL: blockURL, Size: "16M" }), {
        type: InvalidArgumentError,
        message:
          `Cannot create volume "res2" from backup "${blockURL}": size must match the backup's size ${
            32 * MiB
          }`,
      });
      assert.deepEqual(Object.keys(await vols.listVolume({})), ["src"]);
      assert.deepEqual(await readdir(env.path), ["src.img"]);
      await snaps.deleteSnapshot("srcsnap", "src");
      await vols.deleteVolume("src", {});
    });
  });

  it("a failed restore leaves no image, record or loop device behind", async () => {
    await withEnv({}, async (env) => {
      let failRestore = false;
      const { dest, store, vols, snaps, backups } = await backupEnv(env, {
        wrap: (real) => ({
          ...real,
          restoreDeltaBackup: async (url, target, o) => {
            if (!failRestore) return await real.restoreDeltaBackup(url, target, o);
            await writeAt(target, { offset: 0, data: pattern(1, 4096) });
            throw new Error("connection reset by peer");
          },
        }),
      });
      await vols.createVolume("vol1", { Size: "16M" });
      await snaps.createSnapshot("s1", "vol1");
      const url = await backups.createBackup("s1", "vol1", dest, {});

      const leftovers = async () => ({
        images: (await readdir(env.path)).sort(),
        records: (await readdir(join(env.root, "state"))).sort(),
        loops: (await loopsUnder(env.dir)).length,
      });
      const before = await leftovers();
      assert.deepEqual(before.images, ["vol1.img"]);

      failRestore = true;
      await rejectsWith(() => vols.createVolume("res1", { BackupURL: url }), {
        type: Error,
        message: `Cannot create volume "res1" from backup "${url}": connection reset by peer`,
      });
      assert.deepEqual(await leftovers(), before);

      // A corrupt block fails the checksum check the same clean way.
      failRestore = false;
      const blocks = (await readdir(join(store), { recursive: true }))
        .map(String).filter((f) => f.endsWith(".blk"));
      assert.ok(blocks.length > 0);
      for (const b of blocks) await writeFile(join(store, b), "garbage");
      await rejectsWith(() => vols.createVolume("res1", { BackupURL: url }), {
        type: Error,
        message: new RegExp(`^Cannot create volume "res1" from backup ".*": .*corrupt`),
      });
      assert.deepEqual(await leftovers(), before);
      assert.deepEqual(await vols.listVolume({}), { vol1: await vols.getVolumeInfo("vol1") });
    });
  });

  it("a snapshot being backed up cannot be deleted; a cancelled backup releases it", async () => {
    await withEnv({}, async (env) => {
      const { dest, vols, snaps, backups } = await backupEnv(env);
      await vols.createVolume("vol1", { Size: "16M" });
      const dev = (await vols.getVolumeInfo("vol1")).Device;
      await writeBlocks(dev, [0, 1, 2, 3, 4, 5, 6, 7].map((b) => [b * BLOCK, pattern(b + 1)]));
      await snaps.createSnapshot("s1", "vol1");
      const ctl = new AbortController();
      let refused: unknown;
      await assert.rejects(
        async () =>
          await backups.createBackup("s1", "vol1", dest, {}, {
            signal: ctl.signal,
            progress: () => {
              if (refused) return;
              refused = Promise.resolve(snaps.deleteSnapshot("s1", "vol1")).then(
                () => "deleted",
                (err: Error) => err,
              );
              ctl.abort();
            },
          }),
        (err: Error) => err.name === "CancelledError",
      );
      const err = await refused as Error;
      assert.ok(err instanceof ConflictError, String(err));
      assert.equal(
        err.message,
        'Cannot delete snapshot "s1" of volume "vol1": snapshot is being backed up',
      );
      await snaps.deleteSnapshot("s1", "vol1");
      await vols.deleteVolume("vol1", {});
    });
  });

  it("an incremental on an ext4 loop.path reads the snapshot once and stores only the changed blocks", async () => {
    await withEnv({}, async (env) => {
      const { d, dest, store, backup, vols, snaps, backups, storeLog } = await backupEnv(env);
      assert.equal((await d.info()).Reflink, "false");
      await vols.createVolume("vol1", { Size: "64M" });
      const dev = (await vols.getVolumeInfo("vol1")).Device;
      const image = (await vols.getVolumeInfo("vol1")).Path;
      await writeBlocks(dev, [3, 4, 5, 6, 20].map((b) => [b * BLOCK, pattern(b)]));
      await snaps.createSnapshot("s1", "vol1");
      const url1 = await backups.createBackup("s1", "vol1", dest, {});

      // Block 4 rewritten in part, block 5 written with zeros, block 6 discarded (a hole in the
      // image now: not allocated in s2, while the first backup's map holds it).
      await writeBlocks(dev, [[4 * BLOCK + 4096, pattern(44, 4096)], [
        5 * BLOCK,
        new Uint8Array(BLOCK),
      ]]);
      await exec("blkdiscard", ["--offset", String(6 * BLOCK), "--length", String(BLOCK), dev]);
      assert.ok((await readAt(image, { offset: 6 * BLOCK, length: BLOCK })).every((x) => x === 0));
      await snaps.createSnapshot("s2", "vol1");
      const s2 = (await snaps.getSnapshotInfo("s2", "vol1")).FilePath;
      const frag = await exec("filefrag", ["-s", "-v", "-b512", s2]);
      const allocated = blockMap(parseFilefrag(frag.stdout)!, { size: 64 * MiB });
      assert.ok(allocated.has(4) && !allocated.has(6), "block 6 is a hole in s2");
      const url2 = await backups.createBackup("s2", "vol1", dest, {});

      const [unknown, all] = compares(env.log).slice(-2);
      assert.equal(unknown.method, "unknown");
      assert.equal(all.method, "full");
      const c = completed(storeLog).at(-1)!;
      assert.equal(c.mode, "incremental");
      assert.equal(c.compare, "checksums");
      assert.equal(c.blocksRead, all.changed, "each allocated block of s2 is read once");
      assert.equal(c.blocksUploaded, 1, "only block 4 is stored");
      /** A backup's block map, block number to checksum, from its record in the store. */
      const map = async (url: string) => {
        const ref = decodeBackupURL(url);
        const file = join(store, backupConfigPath(ref.volume, ref.backup));
        const rec = JSON.parse(await readFile(file, "utf8")) as {
          Blocks: Array<{ Offset: number; BlockChecksum: string }>;
        };
        return new Map(rec.Blocks.map((b) => [b.Offset / BLOCK, b.BlockChecksum]));
      };
      const [m1, m2] = [await map(url1), await map(url2)];
      for (const b of [3, 20]) assert.equal(m2.get(b), m1.get(b), `block ${b} carried over`);
      assert.notEqual(m2.get(4), m1.get(4));
      assert.ok(m1.has(5) && m1.has(6));
      assert.ok(!m2.has(5) && !m2.has(6), "the zeroed and the discarded block restore as zeros");

      for (const [url, snap] of [[url1, "s1"], [url2, "s2"]]) {
        assert.deepEqual((await backup.verifyBackup(url)).problems, []);
        const res = `res-${snap}`;
        await vols.createVolume(res, { BackupURL: url });
        const file = (await snaps.getSnapshotInfo(snap, "vol1")).FilePath;
        assert.ok(await sameBytes((await vols.getVolumeInfo(res)).Path, file), `${res} differs`);
      }
      assert.ok(await sameBytes(s2, (await vols.getVolumeInfo("res-s2")).Path));
    });
  });

  for (const xfs of [true, false]) {
    const where = xfs ? "a reflink (xfs) loop.path" : "an ext4 loop.path";
    it(`a 10G volume on ${where}: a 1% change backs up 1% of the blocks`, async () => {
      await withEnv({ xfs }, async (env) => {
        const { dest, vols, snaps, backups, storeLog } = await backupEnv(env);
        await vols.createVolume("big", {});
        const info = await vols.getVolumeInfo("big");
        assert.equal(info.Size, String(10 * GiB));
        const mp = await vols.mountVolume("big", {});
        await writeFile(join(mp, "file"), pattern(7, 8 * MiB));
        let t = performance.now();
        await snaps.createSnapshot("s0", "big");
        const mountedMs = performance.now() - t;
        await vols.umountVolume("big");
        await snaps.createSnapshot("s1", "big");
        await backups.createBackup("s1", "big", dest, {});

        // 1% of the blocks: 4 KiB into each of 51 of the 5120 blocks, spread over the volume.
        const blocks = Array.from({ length: 51 }, (_, i) => 7 + i * 100);
        await writeBlocks(info.Device, blocks.map((b) => [b * BLOCK + 8192, pattern(b, 4096)]));
        t = performance.now();
        await snaps.createSnapshot("s2", "big");
        const snapshotMs = performance.now() - t;
        t = performance.now();
        await backups.createBackup("s2", "big", dest, {});
        const backupMs = performance.now() - t;

        // Only the changed blocks are stored. With reflinks, only they are read; without, the
        // driver answers "unknown" and the engine reads s2's allocated blocks once (never s1).
        const c = completed(storeLog).at(-1)!;
        assert.equal(c.mode, "incremental");
        assert.equal(c.blocksUploaded, blocks.length);
        assert.equal(Number(c.blocksChanged) - Number(c.blocksUnchanged), blocks.length);
        const stats = compares(env.log).at(xfs ? -1 : -2)!;
        assert.equal(stats.method, xfs ? "extents" : "unknown");
        if (xfs) {
          assert.equal(stats.changed, blocks.length);
          assert.equal(c.blocksRead, blocks.length);
        } else {
          const all = compares(env.log).at(-1)!;
          assert.equal(all.method, "full");
          assert.equal(c.compare, "checksums");
          assert.equal(c.blocksRead, all.changed);
          assert.ok(all.changed < 5120 / 4, `read ${all.changed} blocks, not the holes`);
        }
        console.log(
          `10G loop volume on ${where}: snapshot ${snapshotMs.toFixed(0)} ms ` +
            `(mounted, with fsfreeze: ${mountedMs.toFixed(0)} ms); incremental backup of ` +
            `${blocks.length}/5120 blocks ${backupMs.toFixed(0)} ms, compare ${stats.ms} ms`,
        );
        if (xfs) {
          assert.ok(snapshotMs < 1000, `snapshot took ${snapshotMs} ms`);
          assert.ok(mountedMs < 1000, `snapshot took ${mountedMs} ms`);
        }
      });
    });
  }
});
