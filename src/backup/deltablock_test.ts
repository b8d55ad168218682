import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { execFileSync } from "node:child_process";
import { closeSync, constants, openSync, readdirSync, readFileSync, readlinkSync } from "node:fs";
import { spawn } from "node:child_process";
import {
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  utimes,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import type { DeltaBlockOperations, Mappings } from "../api/driver.ts";
import { MemoryStore } from "../store/memory.ts";
import { silentLogger } from "../util/log.ts";
import { BLOCK_SIZE } from "./codec.ts";
import {
  blockOffsets,
  createDeltaBackup,
  deleteDeltaBackup,
  mergeBlocks,
  restoreDeltaBackup,
  verifyDeltaBackup,
} from "./deltablock.ts";
import { loadBackupRecord } from "./catalog.ts";
import { collectGarbage } from "./gc.ts";
import { backupConfigPath, blockPath, volumeDir } from "./layout.ts";
import { leasesDir, takeLease } from "./leases.ts";
import { processStart, thisHolder } from "../util/holder.ts";
import { openStore } from "../store/testing.ts";
import type { ObjectStore } from "../store/types.ts";
import { STALE_TEMP_AGE_MS } from "../store/sweep.ts";
import { s3TestEndpoint } from "../../tests/s3_helper.ts";

const MiB = 1024 * 1024;

/**
 * A test double of a block driver (the engine's only input), over in-memory snapshot images.
 * compareSnapshot reports blocks whose bytes differ, and with no base every non-hole block.
 */
class FakeDisk implements DeltaBlockOperations {
  snaps = new Map<string, Uint8Array>();
  reads = 0;
  failAfter = Infinity;
  constructor(readonly size: number) {}
  snapshot(name: string, disk: Uint8Array) {
    this.snaps.set(name, disk.slice());
  }
  hasSnapshot(id: string) {
    return this.snaps.has(id);
  }
  compareSnapshot(id: string, base: string): Mappings | "unknown" {
    return this.ranges(id, base);
  }
  /** The blocks of `id` that differ from `base`; with no base, the non-zero ones. */
  ranges(id: string, base: string): Mappings {
    const a = this.snaps.get(id)!;
    const b = base ? this.snaps.get(base)! : undefined;
    const mappings = [];
    for (let off = 0; off < this.size; off += BLOCK_SIZE) {
      const x = a.subarray(off, off + BLOCK_SIZE);
      const y = b?.subarray(off, off + BLOCK_SIZE);
      const differs = y ? Buffer.compare(x, y) !== 0 : x.some((v) => v !== 0);
      if (differs) mappings.push({ offset: off, size: BLOCK_SIZE });
    }
    return { mappings, blockSize: BLOCK_SIZE };
  }
  openSnapshot() {}
  closeSnapshot(_id: string): void | Promise<void> {}
  readSnapshot(id: string, _vol: string, start: number, data: Uint8Array) {
    if (++this.reads > this.failAfter) throw new Error("disk vanished");
    data.set(this.snaps.get(id)!.subarray(start, start + data.length));
  }
}

/**
 * FakeDisk of a driver that cannot compare two snapshots: with a base its comparison is
 * "unknown". With none it reports the non-zero blocks, and `allocated` (zero, but not holes).
 */
class UnknownDisk extends FakeDisk {
  allocated = new Set<number>();
  /** The snapshot of every readSnapshot call. */
  readsOf: string[] = [];
  override compareSnapshot(id: string, base: string): Mappings | "unknown" {
    if (base) return "unknown";
    const { mappings } = this.ranges(id, "");
    for (const offset of this.allocated) mappings.push({ offset, size: BLOCK_SIZE });
    return { mappings, blockSize: BLOCK_SIZE };
  }
  override readSnapshot(id: string, vol: string, start: number, data: Uint8Array) {
    this.readsOf.push(id);
    super.readSnapshot(id, vol, start, data);
  }
}

/** FakeDisk whose snapshots are also image files, offered to the engine by snapshotFile(). */
class FileDisk extends FakeDisk {
  files = new Map<string, string>();
  openAtClose: number[] | undefined;
  constructor(size: number, readonly dir: string) {
    super(size);
  }
  async snapshotTo(name: string, image: Uint8Array) {
    const file = join(this.dir, `${name}.img`);
    await writeFile(file, image);
    this.files.set(name, file);
  }
  snapshotFile(id: string) {
    return this.files.get(id);
  }
  override closeSnapshot(id: string) {
    this.openAtClose = openFlags(this.files.get(id)!);
  }
}

/** The open flags of this process's descriptors on `path` (the codec workers' included). */
function openFlags(path: string): number[] {
  const flags: number[] = [];
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      if (readlinkSync(`/proc/self/fd/${fd}`) !== path) continue;
      const info = readFileSync(`/proc/self/fdinfo/${fd}`, "utf8");
      flags.push(parseInt(/flags:\s+([0-7]+)/.exec(info)?.[1] ?? "0", 8));
    } catch {
      // closed meanwhile
    }
  }
  return flags;
}

const O_DIRECT = 0o40000; // x86 and arm64 Linux

/** Whether `path` can be opened for direct I/O. */
function directIO(path: string): boolean {
  try {
    closeSync(openSync(path, constants.O_RDONLY | constants.O_DIRECT));
    return true;
  } catch {
    return false;
  }
}

function fill(disk: Uint8Array, block: number, seed: number) {
  const b = disk.subarray(block * BLOCK_SIZE, (block + 1) * BLOCK_SIZE);
  for (let i = 0; i < b.length; i += 4096) b[i] = (seed + i / 4096) % 251 + 1;
}

const volume = {
  name: "vol1",
  driver: "loop",
  size: 8 * BLOCK_SIZE,
  createdTime: "Mon Jan 02 15:04:05 +0000 2006",
  uuid: "u-1",
};

function backup(
  store: ObjectStore,
  disk: FakeDisk,
  snap: string,
  extra: Record<string, unknown> = {},
) {
  return createDeltaBackup(store, disk, {
    volume,
    snapshot: { name: snap, createdTime: "t" },
    destURL: store.url,
    log: silentLogger,
    ...extra,
  });
}

async function restore(store: ObjectStore, name: string, under = tmpdir()): Promise<Uint8Array> {
  const dir = await mkdtemp(join(under, "convoy-restore-"));
  try {
    const target = join(dir, "img");
    await writeFile(target, "");
    await restoreDeltaBackup(store, {
      volume: "vol1",
      backup: name,
      url: `u:${name}`,
      target,
      log: silentLogger,
    });
    return new Uint8Array(await readFile(target));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const blockKeys = (s: MemoryStore) => s.keys().filter((k) => k.endsWith(".blk"));

/** A backup's block map of vol1: block number to checksum. */
async function blockMap(store: ObjectStore, name: string): Promise<Map<number, string>> {
  const key = `convoy-objectstore/volumes/vo/l1/vol1/backups/backup_${name}.cfg`;
  const rec = JSON.parse(new TextDecoder().decode(await store.read(key))) as {
    Blocks: Array<{ Offset: number; BlockChecksum: string }>;
  };
  return new Map(rec.Blocks.map((b) => [b.Offset / BLOCK_SIZE, b.BlockChecksum]));
}

/** Every object key under `prefix`, walking the store's listing. */
async function allKeys(store: ObjectStore, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for (const name of await store.list(prefix)) {
    const key = prefix === "" ? name : `${prefix}/${name}`;
    if (await store.stat(key)) out.push(key);
    else out.push(...await allKeys(store, key));
  }
  return out.sort();
}

/** Files under `dir`, relative, sorted (temp files included). */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(dir.length + 1));
  }
  return out.sort();
}

/**
 * Backs up six blocks, then leaves the store as a killed first backup would (no records) with
 * its blocks damaged by `damage`, and backs up again: the new backup must pass verify.
 */
async function rerunOverDamagedBlocks(
  store: ObjectStore,
  damage: (blocks: string[]) => Promise<void>,
): Promise<void> {
  const disk = new FakeDisk(volume.size);
  const img = new Uint8Array(volume.size);
  for (let b = 0; b < 6; b++) fill(img, b, 5 * b + 3);
  disk.snapshot("s1", img);
  await backup(store, disk, "s1");
  const keys = await allKeys(store);
  await store.remove(...keys.filter((k) => k.endsWith(".cfg")));
  await damage(keys.filter((k) => k.endsWith(".blk")));
  const name = await backup(store, disk, "s1");
  const report = await verifyDeltaBackup(store, { volume: "vol1", backup: name, url: "u" });
  assert.deepEqual(report.problems, [], "the re-run backup reported success, so it must verify");
  assert.equal(report.checked, 6);
  assert.equal(report.bytes, 6 * BLOCK_SIZE, "every checked block's bytes are counted");
  assert.deepEqual(await restore(store, name), img);
}

/** `size` bytes that no codec can shrink. */
function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

describe("delta-block engine", () => {
  it("createDeltaBackup() stores each distinct non-zero block once and restores byte for byte", async () => {
    const store = new MemoryStore("full");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 1);
    fill(img, 3, 7);
    img.copyWithin(5 * BLOCK_SIZE, 3 * BLOCK_SIZE, 4 * BLOCK_SIZE); // block 5 = block 3
    disk.snapshot("s1", img);
    const name = await backup(store, disk, "s1");
    assert.equal(
      blockKeys(store).length,
      2,
      "blocks 3 and 5 are one object; zero blocks are not stored",
    );
    assert.deepEqual(await restore(store, name), img);
  });

  it("createDeltaBackup() reads only the blocks changed since the last backup and merges the map", async () => {
    const store = new MemoryStore("incr");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 6; b++) fill(img, b, b + 10);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    disk.reads = 0;
    fill(img, 2, 99);
    img.fill(0, 4 * BLOCK_SIZE, 5 * BLOCK_SIZE); // block 4 zeroed since s1
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    assert.equal(disk.reads, 2, "only blocks 2 and 4 are read");
    assert.deepEqual(
      await restore(store, second),
      img,
      "the zeroed block restores as zeros, not stale data",
    );
    const s1 = disk.snaps.get("s1")!;
    assert.deepEqual(await restore(store, first), s1);
  });

  it('createDeltaBackup() given "unknown" changes reads the snapshot once and stores only the blocks that differ', async () => {
    const store = new MemoryStore("unknown");
    const disk = new UnknownDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 7; b++) fill(img, b, b + 20);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    const s1Map = await blockMap(store, first);

    fill(img, 2, 77); // changed
    img.copyWithin(6 * BLOCK_SIZE, 0, BLOCK_SIZE); // block 6 now holds block 0's bytes
    img.fill(0, 4 * BLOCK_SIZE, 5 * BLOCK_SIZE); // zeroed, still allocated: reads as zeros
    img.fill(0, 5 * BLOCK_SIZE, 6 * BLOCK_SIZE); // trimmed: a hole, not reported at all
    disk.allocated.add(4 * BLOCK_SIZE);
    disk.snapshot("s2", img);
    const written: string[] = [];
    const statted: string[] = [];
    const { write, stat } = store;
    store.write = (key, ...rest) => (written.push(key), write.call(store, key, ...rest));
    store.stat = (key) => (statted.push(key), stat.call(store, key));
    disk.readsOf = [];
    const second = await backup(store, disk, "s2");
    store.write = write;
    store.stat = stat;

    assert.deepEqual(disk.readsOf, Array(6).fill("s2"), "blocks 0-4 and 6 of s2, once each");
    const blocksWritten = written.filter((k) => k.endsWith(".blk"));
    assert.equal(blocksWritten.length, 1, "only block 2 is compressed and stored");
    assert.deepEqual(statted.filter((k) => k.endsWith(".blk")), blocksWritten);
    const s2Map = await blockMap(store, second);
    assert.deepEqual([...s2Map.keys()], [0, 1, 2, 3, 6]);
    for (const b of [0, 1, 3]) assert.equal(s2Map.get(b), s1Map.get(b), `block ${b} carried`);
    assert.equal(s2Map.get(6), s1Map.get(0));
    assert.notEqual(s2Map.get(2), s1Map.get(2));
    assert.deepEqual(
      await restore(store, second),
      img,
      "zeroed and trimmed blocks restore as zeros",
    );
    assert.deepEqual(await restore(store, first), disk.snaps.get("s1"));
    const report = await verifyDeltaBackup(store, { volume: "vol1", backup: second, url: "u" });
    assert.deepEqual(report.problems, []);
    assert.equal(report.checked, 5);
  });

  it("createDeltaBackup() falls back to a full backup, never merging a stale map, when the base snapshot is gone", async () => {
    const store = new MemoryStore("fallback");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 1, 5);
    fill(img, 6, 6);
    disk.snapshot("s1", img);
    await backup(store, disk, "s1");
    disk.snaps.delete("s1");
    img.fill(0, 6 * BLOCK_SIZE, 7 * BLOCK_SIZE); // discarded: a hole now, so a full compare skips it
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    assert.deepEqual(await restore(store, second), img);
  });

  it("createDeltaBackup() does not build on a backup of another volume with the same name", async () => {
    const store = new MemoryStore("uuid");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 2, 3);
    disk.snapshot("s1", img);
    await backup(store, disk, "s1");
    const other = new Uint8Array(volume.size);
    fill(other, 5, 8);
    disk.snapshot("s2", other);
    const name = await createDeltaBackup(store, disk, {
      volume: { ...volume, uuid: "u-2" },
      snapshot: { name: "s2", createdTime: "t" },
      destURL: store.url,
      log: silentLogger,
    });
    assert.deepEqual(
      await restore(store, name),
      other,
      "block 2 of the other volume is not merged in",
    );
  });

  it("a backup that fails midway is never listed and leaves none of its blocks", async () => {
    const store = new MemoryStore("crash");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 8; b++) fill(img, b, b * 3 + 1);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    const before = blockKeys(store);
    fill(img, 1, 60);
    fill(img, 6, 61);
    fill(img, 7, 62);
    disk.snapshot("s2", img);
    disk.reads = 0;
    disk.failAfter = 2;
    await assert.rejects(backup(store, disk, "s2", { concurrency: 1 }), /disk vanished/);
    assert.deepEqual(
      store.keys().filter((k) => k.includes("/backups/")),
      [`convoy-objectstore/volumes/vo/l1/vol1/backups/backup_${first}.cfg`],
    );
    assert.deepEqual(
      blockKeys(store),
      before,
      "its 2 new blocks are gone, the first backup's kept",
    );
    assert.deepEqual(store.keys().filter((k) => k.includes("/leases/")), []);
    disk.failAfter = Infinity;
    const name = await backup(store, disk, "s2");
    assert.deepEqual(await restore(store, name), img);
    assert.deepEqual(await restore(store, first), disk.snaps.get("s1"));
  });

  it("a cancelled backup leaves none of its blocks", async () => {
    const store = new MemoryStore("cancel");
    const ac = new AbortController();
    const disk = new FakeDisk(volume.size);
    disk.readSnapshot = (id, vol, start, data) => {
      if (disk.reads === 4) ac.abort();
      return FakeDisk.prototype.readSnapshot.call(disk, id, vol, start, data);
    };
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 8; b++) fill(img, b, b * 7 + 2);
    disk.snapshot("s1", img);
    await assert.rejects(
      backup(store, disk, "s1", { concurrency: 1, signal: ac.signal }),
      (err: Error & { code?: string }) => err.code === "Cancelled",
    );
    assert.equal(disk.reads, 5, "it had uploaded blocks before the cancel");
    assert.deepEqual(store.keys(), [], "no block, record or lease is left");
  });

  it("a backup that fails writing volume.cfg removes its record, then the blocks no record references", async () => {
    const store = new MemoryStore("failed-late");
    const fail = { remove: false };
    const write = store.write.bind(store);
    const remove = store.remove.bind(store);
    store.write = (key: string, body: Uint8Array | ReadableStream<Uint8Array>) =>
      key.endsWith("volume.cfg") ? Promise.reject(new Error("disk full")) : write(key, body);
    store.remove = (...keys: string[]) =>
      fail.remove && keys.some((k) => k.includes("/backups/"))
        ? Promise.reject(new Error("store unreachable"))
        : remove(...keys);
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 3; b++) fill(img, b, b * 9 + 5);
    disk.snapshot("s1", img);
    await assert.rejects(backup(store, disk, "s1"), /disk full/);
    assert.deepEqual(store.keys(), [], "no record, block or lease is left");

    fail.remove = true; // the record cannot be removed: it stays, and so do its blocks
    await assert.rejects(backup(store, disk, "s1"), /disk full/);
    const records = store.keys().filter((k) => k.includes("/backups/"));
    assert.equal(records.length, 1);
    assert.equal(blockKeys(store).length, 3);
    const rec = JSON.parse(new TextDecoder().decode(await store.read(records[0])));
    assert.deepEqual(
      rec.Blocks.map((b: { BlockChecksum: string }) => b.BlockChecksum).sort(),
      blockKeys(store).map((k) => k.split("/").at(-1)!.slice(0, 64)).sort(),
      "the blocks the record references stay",
    );
  });

  it("a failed backup keeps its blocks while another backup of the volume holds a lease", async () => {
    const store = new MemoryStore("failed-concurrent");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 8; b++) fill(img, b, b * 5 + 4);
    disk.snapshot("s1", img);
    const other = await takeLease(store, "vol1", { kind: "backup", id: "other-host" });
    try {
      disk.failAfter = 3;
      await assert.rejects(backup(store, disk, "s1", { concurrency: 1 }), /disk vanished/);
      assert.equal(blockKeys(store).length, 3, "the other backup may have reused any of them");
    } finally {
      await other.release();
    }
  });

  it("a re-run backup checks the blocks a killed backup left and replaces damaged ones (vfs)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-damaged-"));
    try {
      const store = await openStore(`vfs://${dir}`);
      await rerunOverDamagedBlocks(store, async (blocks) => {
        const path = (key: string) => join(dir, key);
        await truncate(path(blocks[0]), 100);
        const flipped = await readFile(path(blocks[1]));
        for (let i = flipped.length >> 1; i < flipped.length; i += 97) flipped[i] ^= 0xff;
        await writeFile(path(blocks[1]), flipped);
        await writeFile(path(blocks[2]), "");
      });
      assert.deepEqual((await filesUnder(dir)).filter((f) => f.includes(".tmp-")), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("createDeltaBackup() sweeps the volume's stale temp files and keeps fresh ones (vfs)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-sweep-"));
    try {
      const store = await openStore(`vfs://${dir}`);
      const blocks = join(dir, "convoy-objectstore/volumes/vo/l1/vol1/blocks");
      const stale = join(blocks, "ab/cd", `.${"ab".repeat(32)}.blk.tmp-0badf00d`);
      const fresh = join(blocks, "12/34", `.${"12".repeat(32)}.blk.tmp-0123abcd`);
      for (const f of [stale, fresh]) {
        await mkdir(join(f, ".."), { recursive: true });
        await writeFile(f, "partial");
      }
      const old = (Date.now() - STALE_TEMP_AGE_MS - 60_000) / 1000;
      await utimes(stale, old, old);
      const disk = new FakeDisk(volume.size);
      const img = new Uint8Array(volume.size);
      fill(img, 2, 8);
      disk.snapshot("s1", img);
      await backup(store, disk, "s1");
      const temps = (await filesUnder(dir)).filter((f) => f.includes(".tmp-"));
      assert.deepEqual(temps, [fresh.slice(dir.length + 1)], "a live write's temp file stays");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a re-run backup replaces a damaged block that a completed backup's record references when it is empty", async () => {
    const store = new MemoryStore("empty-referenced");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 9);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    await store.write(blockKeys(store)[0], new Uint8Array()); // left by a killed PUT
    disk.snaps.delete("s1"); // a full backup, which finds the block in the store
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    const report = await verifyDeltaBackup(store, { volume: "vol1", backup: second, url: "u" });
    assert.deepEqual(report.problems, []);
    assert.deepEqual(await restore(store, first), img, "the older backup is repaired too");
  });

  it("deleteDeltaBackup() keeps blocks other backups use, and removes the volume's folder with the last backup", async () => {
    const store = new MemoryStore("gc");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 1);
    fill(img, 1, 2);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    fill(img, 1, 50);
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    assert.equal(blockKeys(store).length, 3);
    await deleteDeltaBackup(store, { volume: "vol1", backup: first, url: "u", log: silentLogger });
    assert.equal(blockKeys(store).length, 2, "the block only the first backup used is gone");
    assert.deepEqual(await restore(store, second), img);
    await deleteDeltaBackup(store, { volume: "vol1", backup: second, url: "u", log: silentLogger });
    assert.deepEqual(store.keys(), []);
  });

  it("deleteDeltaBackup() deletes no block while another backup of the volume holds a lease", async () => {
    const store = new MemoryStore("lease");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 1);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    fill(img, 0, 2);
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    const lease = await takeLease(store, "vol1", { kind: "backup", id: "other-host" });
    await deleteDeltaBackup(store, { volume: "vol1", backup: first, url: "u", log: silentLogger });
    assert.equal(
      blockKeys(store).length,
      2,
      "a concurrent backup may just have reused the old block",
    );
    await lease.release();
    assert.deepEqual(await restore(store, second), img);
  });

  it("restore and verify name the backup and block that is missing or corrupt", async () => {
    const store = new MemoryStore("verify");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (let b = 0; b < 4; b++) fill(img, b, b + 1);
    disk.snapshot("s1", img);
    const name = await backup(store, disk, "s1");
    const ok = await verifyDeltaBackup(store, { volume: "vol1", backup: name, url: "URL" });
    assert.deepEqual(ok.problems, []);
    assert.equal(ok.checked, 4);
    const [k1, k2] = blockKeys(store);
    await store.remove(k1);
    await store.write(k2, gzipSync(new Uint8Array(BLOCK_SIZE).fill(9)));
    const bad = await verifyDeltaBackup(store, { volume: "vol1", backup: name, url: "URL" });
    assert.equal(bad.problems.length, 2);
    assert.match(
      bad.problems.join("\n"),
      /Cannot verify backup "URL": block [0-9a-f]{64} at offset \d+ is missing/,
    );
    assert.match(bad.problems.join("\n"), /is corrupt \(checksum mismatch\)/);
    await assert.rejects(
      restore(store, name),
      /Cannot restore backup "u:backup-[0-9a-f]+": block [0-9a-f]{64} at offset \d+ is (missing|corrupt)/,
    );
    const sampled = await verifyDeltaBackup(store, {
      volume: "vol1",
      backup: name,
      url: "URL",
      sample: 0.25,
    });
    assert.equal(sampled.checked, 1);
  });

  it("restoreDeltaBackup() writes byte for byte with direct I/O and without (tmpfs), and never writes a corrupt block", async () => {
    const store = new MemoryStore("direct");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    for (const b of [0, 2, 3, 7]) fill(img, b, 11 * b + 1);
    disk.snapshot("s1", img);
    const name = await backup(store, disk, "s1");
    assert.deepEqual(await restore(store, name), img); // a disk filesystem: O_DIRECT writes
    const shm = await stat("/dev/shm").then((s) => s.isDirectory(), () => false);
    if (shm) assert.deepEqual(await restore(store, name, "/dev/shm"), img); // tmpfs: buffered

    // Block 3's file now decodes to other, valid data: it must fail and never reach the target.
    const rec = JSON.parse(
      new TextDecoder().decode(
        await store.read(
          store.keys().find((k) => k.endsWith(`backup_${name}.cfg`))!,
        ),
      ),
    ) as { Blocks: { Offset: number; BlockChecksum: string }[] };
    const sum3 = rec.Blocks.find((b) => b.Offset === 3 * BLOCK_SIZE)!.BlockChecksum;
    const key3 = blockKeys(store).find((k) => k.includes(sum3))!;
    await store.write(key3, gzipSync(img.subarray(0, BLOCK_SIZE)));
    const dir = await mkdtemp(join(tmpdir(), "convoy-restore-"));
    try {
      const target = join(dir, "img");
      await writeFile(target, "");
      await assert.rejects(
        restoreDeltaBackup(store, {
          volume: "vol1",
          backup: name,
          url: "URL",
          target,
          log: silentLogger,
          concurrency: 1,
        }),
        /Cannot restore backup "URL": block [0-9a-f]{64} at offset 6291456 is corrupt \(checksum mismatch\)/,
      );
      const got = await readFile(target);
      const at3 = got.subarray(3 * BLOCK_SIZE, 4 * BLOCK_SIZE);
      assert.ok(at3.every((v) => v === 0), "the corrupt block was not written");
      assert.deepEqual(new Uint8Array(got.subarray(0, BLOCK_SIZE)), img.subarray(0, BLOCK_SIZE));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("createDeltaBackup() reads a driver's snapshotFile() itself with direct I/O, and closes it before closeSnapshot()", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-source-"));
    try {
      // The volume ends 6000 bytes into block 7; its image file has bytes after that.
      const size = 7 * BLOCK_SIZE + 6000;
      const img = new Uint8Array(size);
      fill(img, 0, 3);
      fill(img, 4, 9);
      img.copyWithin(6 * BLOCK_SIZE, 4 * BLOCK_SIZE, 5 * BLOCK_SIZE); // a duplicate
      img.fill(0x5a, 7 * BLOCK_SIZE);
      const file = new Uint8Array(size + 2192).fill(0x77);
      file.set(img);
      const disk = new FileDisk(size, dir);
      disk.snapshot("s1", img);
      await disk.snapshotTo("s1", file);
      const flags: number[][] = [];
      const store = new MemoryStore("source");
      const opts = { volume: { ...volume, size }, concurrency: 1 }; // one block: buffers reused
      const name = await backup(store, disk, "s1", {
        ...opts,
        progress: () => void flags.push(openFlags(disk.files.get("s1")!)),
      });
      assert.equal(disk.reads, 0, "readSnapshot() was not called");
      assert.deepEqual(disk.openAtClose, [], "the workers closed the file before closeSnapshot()");
      // Direct I/O wherever this filesystem takes it (tmpfs does not).
      const direct = directIO(disk.files.get("s1")!);
      assert.ok(flags.flat().length > 0, "the workers held the file open while reading");
      assert.ok(
        flags.flat().every((f) => ((f & O_DIRECT) !== 0) === direct),
        `workers read with O_DIRECT: ${direct} (flags seen: ${JSON.stringify(flags)})`,
      );
      assert.equal(blockKeys(store).length, 3, "blocks 0, 4 (= 6) and the tail of 7");

      // The same backup through readSnapshot() has the same block map (the same checksums).
      const viaRead = new MemoryStore("read");
      const plain = new FakeDisk(size);
      plain.snapshot("s1", img);
      const other = await backup(viaRead, plain, "s1", opts);
      const map = async (st: MemoryStore, n: string) =>
        JSON.parse(
          new TextDecoder().decode(
            await st.read(st.keys().find((k) => k.endsWith(`backup_${n}.cfg`))!),
          ),
        ).Blocks;
      assert.deepEqual(await map(store, name), await map(viaRead, other));

      // A file that cannot be read fails the backup, named, and leaves no backup listed.
      disk.files.set("s2", join(dir, "missing.img"));
      disk.snapshot("s2", img);
      const failed = new MemoryStore("failed");
      await assert.rejects(
        backup(failed, disk, "s2", opts),
        new RegExp(`cannot read "${join(dir, "missing.img")}" at offset 0: ENOENT`),
      );
      assert.deepEqual(failed.keys().filter((k) => k.includes("backup_")), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("restores a store written by Convoy v0.5.2 (gzip blocks named by SHA-512) and writes that format on request", async () => {
    const store = new MemoryStore("convoy");
    const block = new Uint8Array(BLOCK_SIZE).map((_, i) => (i * 31) % 256);
    const sum = createHash("sha512").update(block).digest("hex").slice(0, 64);
    const enc = new TextEncoder();
    const dir = "convoy-objectstore/volumes/vo/l1/vol1";
    await store.write(
      `${dir}/blocks/${sum.slice(0, 2)}/${sum.slice(2, 4)}/${sum}.blk`,
      gzipSync(block),
    );
    await store.write(
      `${dir}/volume.cfg`,
      enc.encode(
        `{"Name":"vol1","Driver":"devicemapper","Size":${
          4 * MiB
        },"CreatedTime":"Mon Jan 02 15:04:05 -0700 2006","LastBackupName":"backup-0123456789ab4def"}`,
      ),
    );
    await store.write(
      `${dir}/backups/backup_backup-0123456789ab4def.cfg`,
      enc.encode(
        `{"Name":"backup-0123456789ab4def","Driver":"","VolumeName":"vol1","SnapshotName":"snap1","SnapshotCreatedAt":"x","CreatedTime":"y","Blocks":[{"Offset":${
          2 * MiB
        },"BlockChecksum":"${sum}"}],"SingleFile":{"FilePath":""}}`,
      ),
    );
    const restored = await restore(store, "backup-0123456789ab4def");
    assert.equal(restored.length, 4 * MiB);
    assert.deepEqual(restored.subarray(2 * MiB), block);
    assert.ok(restored.subarray(0, 2 * MiB).every((b) => b === 0));

    const gz = new MemoryStore("gzip");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 1, 4);
    disk.snapshot("s1", img);
    await backup(gz, disk, "s1", { compression: "gzip" });
    const [key] = blockKeys(gz);
    const raw = gunzipSync(await gz.read(key));
    assert.equal(
      createHash("sha512").update(raw).digest("hex").slice(0, 64),
      key.split("/").at(-1)!.slice(0, 64),
    );
    // The same through a snapshot file read by the workers (direct I/O): the same block.
    const files = await mkdtemp(join(tmpdir(), "convoy-source-"));
    try {
      const fileDisk = new FileDisk(volume.size, files);
      fileDisk.snapshot("s1", img);
      await fileDisk.snapshotTo("s1", img);
      const gz2 = new MemoryStore("gzip2");
      await backup(gz2, fileDisk, "s1", { compression: "gzip" });
      assert.equal(fileDisk.reads, 0);
      assert.deepEqual(blockKeys(gz2), [key]);
      assert.deepEqual(gunzipSync(await gz2.read(key)), raw);
    } finally {
      await rm(files, { recursive: true, force: true });
    }
  });

  it("blockOffsets() and mergeBlocks() align ranges to 2 MiB blocks and let new blocks win", () => {
    assert.deepEqual(
      blockOffsets([{ offset: 0, size: 3 * MiB }, { offset: 4 * MiB, size: 1 }], 100 * MiB),
      [0, 2 * MiB, 4 * MiB],
    );
    const a = "a".repeat(64);
    const b = "b".repeat(64);
    assert.deepEqual(
      mergeBlocks([{ Offset: 0, BlockChecksum: a }, { Offset: 2 * MiB, BlockChecksum: a }], [{
        Offset: 0,
        BlockChecksum: b,
      }], [2 * MiB]),
      [{ Offset: 0, BlockChecksum: b }],
    );
  });
});

describe("delta-block engine on a full filesystem", () => {
  it("a backup that fails with ENOSPC removes its blocks, and the next backup of another volume succeeds", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-enospc-"));
    try {
      try {
        execFileSync("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", dir], { stdio: "pipe" });
      } catch (err) {
        t.skip(`cannot mount a tmpfs: ${(err as Error).message}`);
        return;
      }
      try {
        const store = await openStore(`vfs://${dir}`);
        const big = { ...volume, name: "big1", size: 12 * BLOCK_SIZE, uuid: "u-big" };
        const disk = new FakeDisk(big.size);
        disk.snapshot("s1", randomBytes(big.size));
        await assert.rejects(
          backup(store, disk, "s1", { volume: big }),
          /no space left on device|ENOSPC/i,
        );
        assert.deepEqual(await filesUnder(dir), [], "no block, temp file or lease is left");
        const small = { ...volume, name: "small1", size: 4 * BLOCK_SIZE, uuid: "u-small" };
        const disk2 = new FakeDisk(small.size);
        const img = randomBytes(small.size);
        disk2.snapshot("s1", img);
        const name = await backup(store, disk2, "s1", { volume: small });
        const report = await verifyDeltaBackup(store, { volume: "small1", backup: name, url: "u" });
        assert.deepEqual(report.problems, []);
        assert.equal(report.checked, 4);
      } finally {
        execFileSync("umount", [dir]);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("delta-block engine on S3 (local S3 server)", () => {
  it("a re-run backup replaces the empty and truncated blocks a killed upload left (s3)", async () => {
    const s3 = await s3TestEndpoint({ prefix: "convoy-damaged" });
    try {
      const store = await openStore(`s3://${s3.bucket}@us-east-1/damaged`, {
        endpoint: s3.endpoint,
      });
      await rerunOverDamagedBlocks(store, async (blocks) => {
        await store.write(blocks[0], new Uint8Array());
        await store.write(blocks[1], (await store.read(blocks[1])).subarray(0, 50));
      });
    } finally {
      await s3.close();
    }
  });

  it("backs up, restores incrementally and garbage-collects through an s3:// store", async () => {
    const s3 = await s3TestEndpoint({ prefix: "convoy-delta" });
    try {
      const store: ObjectStore = await openStore(`s3://${s3.bucket}@us-east-1/deltas`, {
        endpoint: s3.endpoint,
      });
      const disk = new FakeDisk(volume.size);
      const img = new Uint8Array(volume.size);
      for (let b = 0; b < 5; b++) fill(img, b, b + 40);
      disk.snapshot("s1", img);
      const opts = { volume, destURL: store.url, log: silentLogger };
      const first = await createDeltaBackup(store, disk, {
        ...opts,
        snapshot: { name: "s1", createdTime: "t" },
      });
      fill(img, 3, 77);
      disk.snapshot("s2", img);
      disk.reads = 0;
      const second = await createDeltaBackup(store, disk, {
        ...opts,
        snapshot: { name: "s2", createdTime: "t" },
      });
      assert.equal(disk.reads, 1);
      const dir = await mkdtemp(join(tmpdir(), "convoy-s3-restore-"));
      try {
        const target = join(dir, "img");
        await writeFile(target, "");
        await restoreDeltaBackup(store, {
          volume: "vol1",
          backup: second,
          url: "u",
          target,
          log: silentLogger,
        });
        assert.deepEqual(new Uint8Array(await readFile(target)), img);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      await deleteDeltaBackup(store, {
        volume: "vol1",
        backup: first,
        url: "u",
        log: silentLogger,
      });
      assert.equal(
        (await verifyDeltaBackup(store, { volume: "vol1", backup: second, url: "u" })).problems
          .length,
        0,
      );
      const orphan = blockPath("vol1", "e".repeat(64));
      await store.write(orphan, gzipSync(new Uint8Array(10)));
      const dry = await collectGarbage(store, { dryRun: true, log: silentLogger });
      assert.equal(dry.Volumes.vol1.UnreferencedBlocks, 1);
      assert.ok(await store.stat(orphan), "a dry run removes nothing");
      const gc = await collectGarbage(store, { log: silentLogger });
      assert.equal(gc.Volumes.vol1.UnreferencedBlocks, 1);
      assert.equal(await store.stat(orphan), undefined);
      assert.equal(
        (await verifyDeltaBackup(store, { volume: "vol1", backup: second, url: "u" })).problems
          .length,
        0,
      );
      await deleteDeltaBackup(store, {
        volume: "vol1",
        backup: second,
        url: "u",
        log: silentLogger,
      });
      assert.deepEqual(await store.list(""), []);
    } finally {
      await s3.close();
    }
  });
});

describe("delta-block garbage collection", () => {
  /** Three backups of vol1, each with a block of its own (blocks 0, 1, 2 differ per backup). */
  async function threeBackups(store: ObjectStore): Promise<string[]> {
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    const names: string[] = [];
    for (const seed of [1, 2, 3]) {
      fill(img, 0, seed);
      disk.snapshot(`s${seed}`, img);
      names.push(
        await createDeltaBackup(store, disk, {
          volume,
          snapshot: { name: `s${seed}`, createdTime: "t" },
          destURL: store.url,
          log: silentLogger,
        }),
      );
    }
    return names;
  }

  /** The block checksums the backup record references. */
  async function refs(store: ObjectStore, name: string): Promise<string[]> {
    const rec = await loadBackupRecord(store, { volume: "vol1", backup: name });
    return rec!.Blocks.map((b) => b.BlockChecksum).sort();
  }

  /** An orphan block object (as a backup killed before its record leaves), keyed by `seed`. */
  async function orphan(store: ObjectStore, seed: string): Promise<string> {
    const sum = createHash("sha256").update(seed).digest("hex");
    await store.write(blockPath("vol1", sum), gzipSync(new Uint8Array(4096).fill(7)));
    return sum;
  }

  const sumsIn = (keys: string[]) =>
    keys.filter((k) => k.endsWith(".blk")).map((k) => k.replace(/^.*\/|\.blk$/g, "")).sort();

  it("deleteDeltaBackup() collects, on a later delete, the blocks a delete had to keep while a backup lease was held", async () => {
    const store = new MemoryStore("skipped");
    const [b1, b2, b3] = await threeBackups(store);
    const lease = await takeLease(store, "vol1", { kind: "backup", id: "running" });
    await deleteDeltaBackup(store, { volume: "vol1", backup: b1, url: "u", log: silentLogger });
    assert.equal(blockKeys(store).length, 3, "kept while the backup ran");
    await lease.release();
    await deleteDeltaBackup(store, { volume: "vol1", backup: b2, url: "u", log: silentLogger });
    assert.deepEqual(sumsIn(store.keys()), await refs(store, b3), "b1's block went too");
    assert.deepEqual(store.keys().filter((k) => k.includes("/leases/")), [], "no note left");
  });

  it("deleteDeltaBackup() collects the blocks of a killed backup at once: its lease names a process that is gone", async () => {
    const store = new MemoryStore("killed");
    const [b1, b2, b3] = await threeBackups(store);
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    await new Promise((res) => child.once("spawn", res));
    const me = await thisHolder();
    await store.write(
      `${leasesDir("vol1")}/backup-killed.json`,
      new TextEncoder().encode(JSON.stringify({
        Kind: "backup",
        ID: "killed",
        Host: me.host,
        Pid: child.pid,
        Expires: new Date(Date.now() + 300_000).toISOString(),
        Boot: me.boot,
        PidNS: me.pidNS,
        Start: await processStart(child.pid!),
      })),
    );
    await orphan(store, "uploaded by the killed backup");
    const exited = new Promise((res) => child.once("exit", res));
    child.kill("SIGKILL");
    await exited;
    await deleteDeltaBackup(store, { volume: "vol1", backup: b1, url: "u", log: silentLogger });
    const left = [...new Set([...(await refs(store, b2)), ...(await refs(store, b3))])].sort();
    assert.deepEqual(sumsIn(store.keys()), left, "only referenced blocks are left");
    assert.deepEqual(store.keys().filter((k) => k.includes("/leases/")), [], "dead lease removed");
  });

  it("collectGarbage() removes unreferenced blocks and stale temp files of a vfs store; a dry run removes nothing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-gc-"));
    try {
      const store = await openStore(`vfs://${dir}`);
      const [b1, b2] = await threeBackups(store);
      const kept = sumsIn(await filesUnder(dir));
      await orphan(store, "one");
      await orphan(store, "two");
      const blocksDir = join(dir, volumeDir("vol1"), "blocks");
      const temp = join(blocksDir, ".x.blk.tmp-0123abcd");
      await writeFile(temp, "half a block");
      const old = new Date(Date.now() - 2 * 3600_000);
      await utimes(temp, old, old);
      const fresh = join(blocksDir, ".y.blk.tmp-4567abcd");
      await writeFile(fresh, "a write in progress");

      const dry = await collectGarbage(store, { dryRun: true, log: silentLogger });
      assert.equal(dry.DryRun, true);
      assert.equal(dry.Volumes.vol1.UnreferencedBlocks, 2);
      assert.ok(dry.Volumes.vol1.UnreferencedBlockBytes > 0);
      assert.equal(dry.Volumes.vol1.StaleTemps, 1);
      assert.equal(dry.Volumes.vol1.StaleTempBytes, "half a block".length);
      assert.equal(
        sumsIn(await filesUnder(dir)).length,
        kept.length + 2,
        "dry run removed nothing",
      );
      await stat(temp);

      const real = await collectGarbage(store, { log: silentLogger });
      assert.equal(real.DryRun, false);
      assert.deepEqual(real.Volumes.vol1, dry.Volumes.vol1);
      assert.deepEqual(sumsIn(await filesUnder(dir)), kept);
      await assert.rejects(stat(temp), { code: "ENOENT" });
      await stat(fresh);
      for (const b of [b1, b2]) {
        const report = await verifyDeltaBackup(store, { volume: "vol1", backup: b, url: "u" });
        assert.deepEqual(report.problems, []);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("deleteDeltaBackup() and collectGarbage() keep every block while a remaining record cannot be read", async () => {
    const store = new MemoryStore("unreadable");
    const [b1, , b3] = await threeBackups(store);
    await store.write(backupConfigPath("vol1", b3), new TextEncoder().encode("{not json"));
    await deleteDeltaBackup(store, { volume: "vol1", backup: b1, url: "u", log: silentLogger });
    assert.equal(blockKeys(store).length, 3, "b1's block may be b3's: kept");
    const report = await collectGarbage(store, { log: silentLogger });
    assert.match(report.Volumes.vol1.Skipped ?? "", /blocks kept: .*not valid JSON/);
    assert.equal(blockKeys(store).length, 3);
  });

  it("collectGarbage() skips a volume while a backup of it runs, and says so", async () => {
    const store = new MemoryStore("gc-running");
    await threeBackups(store);
    await orphan(store, "orphan");
    const lease = await takeLease(store, "vol1", { kind: "backup", id: "running" });
    const report = await collectGarbage(store, { log: silentLogger });
    assert.match(
      report.Volumes.vol1.Skipped ?? "",
      /a backup of the volume is running: backup lease of host/,
    );
    assert.equal(blockKeys(store).length, 4);
    await lease.release();
    const again = await collectGarbage(store, { volume: "vol1", log: silentLogger });
    assert.equal(again.Volumes.vol1.UnreferencedBlocks, 1);
    assert.equal(blockKeys(store).length, 3);
    await assert.rejects(collectGarbage(store, { volume: "nope", log: silentLogger }), {
      name: "NotFoundError",
    });
  });

  it("createDeltaBackup() never builds an incremental backup on a record whose block map was altered", async () => {
    const store = new MemoryStore("altered-base");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 1);
    fill(img, 1, 2);
    disk.snapshot("s1", img);
    const first = await backup(store, disk, "s1");
    const key = backupConfigPath("vol1", first);
    const text = new TextDecoder().decode(await store.read(key));
    const [x, y] = await refs(store, first);
    await store.write(
      key,
      new TextEncoder().encode(text.replace(x, "X").replace(y, x).replace("X", y)),
    );
    fill(img, 2, 3);
    disk.snapshot("s2", img);
    const second = await backup(store, disk, "s2");
    const restored = Buffer.from(await restore(store, second));
    assert.ok(restored.equals(img), "a full backup, not the altered map");
  });

  it("verify and restore reject a record whose block map was altered (two checksums swapped); Convoy's records without a checksum still restore", async () => {
    const store = new MemoryStore("swapped");
    const disk = new FakeDisk(volume.size);
    const img = new Uint8Array(volume.size);
    fill(img, 0, 1);
    fill(img, 1, 2);
    disk.snapshot("s1", img);
    const name = await backup(store, disk, "s1");
    const key = backupConfigPath("vol1", name);
    const text = new TextDecoder().decode(await store.read(key));
    const [x, y] = await refs(store, name);
    const swapped = text.replace(x, "X").replace(y, x).replace("X", y);
    assert.notEqual(swapped, text);
    await store.write(key, new TextEncoder().encode(swapped));
    const corrupt = new RegExp(
      `backup record ".*backup_${name}\\.cfg" is corrupt: its content does not match its RecordChecksum`,
    );
    await assert.rejects(
      verifyDeltaBackup(store, { volume: "vol1", backup: name, url: "URL" }),
      corrupt,
    );
    await assert.rejects(restore(store, name), corrupt);
    // The same record as Convoy writes it (no RecordChecksum) is trusted as before.
    const convoy = JSON.parse(text);
    delete convoy.RecordChecksum;
    await store.write(key, new TextEncoder().encode(JSON.stringify(convoy)));
    assert.ok(Buffer.from(await restore(store, name)).equals(img));
  });
});
