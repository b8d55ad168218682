import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import zlib, { gzipSync } from "node:zlib";
import { BLOCK_SIZE } from "./codec.ts";
import {
  checkBlock,
  closeFile,
  codecWorkers,
  hashBlock,
  readSourceBlock,
  setCodecIdleMs,
  unpackBlockTo,
} from "./codec_pool.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("codec worker pool", () => {
  it("idle workers exit and come back on the next block; a held block keeps its worker", async () => {
    const old = setCodecIdleMs(100);
    try {
      const block = new Uint8Array(BLOCK_SIZE).fill(7);
      const h = await hashBlock(block, "sha256");
      assert.ok(codecWorkers() > 0);
      await sleep(400);
      assert.ok(codecWorkers() > 0, "a worker holding a hashed block stays");
      const back = await h.drop();
      assert.equal(back.byteLength, BLOCK_SIZE);
      let waited = 0;
      while (codecWorkers() > 0 && waited < 5000) await sleep((waited += 50, 50));
      assert.equal(codecWorkers(), 0, "idle workers exited");
      const again = await hashBlock(back, "sha256");
      assert.equal(again.checksum, h.checksum);
      await again.drop();
    } finally {
      setCodecIdleMs(old);
    }
  });

  it("checkBlock() reports a block's checksum and length, whatever its frame, and a longer block as longer", async () => {
    const zstd = (zlib as { zstdCompressSync?: (b: Uint8Array) => Uint8Array }).zstdCompressSync;
    const block = new Uint8Array(BLOCK_SIZE).map((_, i) => (i * 13 + (i >> 10)) % 251);
    const sum = createHash("sha256").update(block).digest("hex");
    const frames = [gzipSync(block), ...(zstd ? [zstd(block)] : [])];
    for (const packed of frames) {
      // Twice each: the pooled copy of a view, then a buffer of its own (handed over).
      const view = new Uint8Array(packed.length + 8).subarray(4, 4 + packed.length);
      view.set(packed);
      assert.deepEqual(await checkBlock(view, { algo: "sha256", size: BLOCK_SIZE }), {
        checksum: sum,
        length: BLOCK_SIZE,
      });
      assert.deepEqual(
        await checkBlock(new Uint8Array(packed), { algo: "sha256", size: BLOCK_SIZE }),
        { checksum: sum, length: BLOCK_SIZE },
      );
    }
    const longer = new Uint8Array(BLOCK_SIZE + 4096).fill(1);
    for (const packed of [gzipSync(longer), ...(zstd ? [zstd(longer)] : [])]) {
      const r = await checkBlock(packed, { algo: "sha256", size: BLOCK_SIZE });
      assert.ok(r.length > BLOCK_SIZE, `length ${r.length}`);
    }
    await assert.rejects(
      checkBlock(new Uint8Array([1, 2, 3, 4]), { algo: "sha256", size: BLOCK_SIZE }),
      /unknown block compression/,
    );
  });

  it("unpackBlockTo() writes only a block of the expected size and checksum, whatever its frame", async () => {
    const zstd = (zlib as { zstdCompressSync?: (b: Uint8Array) => Uint8Array }).zstdCompressSync;
    const dir = await mkdtemp(join(tmpdir(), "convoy-unpack-"));
    const target = join(dir, "img");
    try {
      await writeFile(target, new Uint8Array(5 * BLOCK_SIZE));
      const block = new Uint8Array(BLOCK_SIZE).map((_, i) => (i * 7 + (i >> 12)) % 251);
      const sum = createHash("sha256").update(block).digest("hex");
      const expect = { checksum: sum, size: BLOCK_SIZE };
      const put = (packed: Uint8Array, b: number) =>
        unpackBlockTo(packed, {
          algo: "sha256",
          expect,
          target: { path: target, offset: b * BLOCK_SIZE },
        }).then(String, () => "rejected");
      const good = /^(direct|buffered)$/;
      const refused = /^(false|rejected)$/;
      // zstd first: the first block of a target also finds the direct-I/O buffer alignment.
      const want = [4];
      if (zstd) {
        for (let b = 0; b < 3; b++) assert.match(await put(zstd(block), b), good);
        want.push(0, 1, 2);
        const long = new Uint8Array(BLOCK_SIZE + 1);
        long.set(block);
        const frame = zstd(block);
        const bad = frame.slice();
        bad[bad.length >> 1] ^= 0x55;
        bad[(bad.length >> 1) + 1] ^= 0x55;
        // Too long, truncated, damaged: none reaches the target, and good blocks still do after.
        assert.equal(await put(zstd(long), 3), "false");
        assert.match(await put(frame.slice(0, frame.length - 100), 3), refused);
        assert.match(await put(bad, 3), refused);
        assert.match(await put(zstd(block), 2), good);
      }
      assert.match(await put(gzipSync(block), 4), good); // Convoy's gzip blocks
      await closeFile(target);
      const got = await readFile(target);
      for (const b of want) {
        const at = got.subarray(b * BLOCK_SIZE, (b + 1) * BLOCK_SIZE);
        assert.ok(Buffer.from(block).equals(at), `block ${b} was written byte for byte`);
      }
      const at3 = got.subarray(3 * BLOCK_SIZE, 4 * BLOCK_SIZE);
      assert.ok(at3.every((v) => v === 0), "no bad block was written");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("readSourceBlock() reads through the page cache where direct I/O is refused (tmpfs)", async (t) => {
    const shm = await stat("/dev/shm").then((s) => s.isDirectory(), () => false);
    if (!shm) return t.skip("no /dev/shm");
    const dir = await mkdtemp(join("/dev/shm", "convoy-source-"));
    const file = join(dir, "img");
    try {
      const data = new Uint8Array(BLOCK_SIZE + 100).map((_, i) => (i * 13 + (i >> 10)) % 253);
      data.fill(0, 0, BLOCK_SIZE - 1); // block 0 is all zeros but its last byte
      data[BLOCK_SIZE - 1] = 1;
      await writeFile(file, data);
      const read = (offset: number, length: number) =>
        readSourceBlock({ path: file, offset, length }, {
          algo: "sha256",
          into: new Uint8Array(BLOCK_SIZE).fill(9),
        });
      const sum = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
      const first = await read(0, BLOCK_SIZE);
      assert.ok(!first.zero);
      assert.equal(first.hashed.checksum, sum(data.subarray(0, BLOCK_SIZE)));
      await first.hashed.drop();
      const tail = await read(BLOCK_SIZE, BLOCK_SIZE); // 100 bytes, then zeros past the end
      assert.ok(!tail.zero);
      const want = new Uint8Array(BLOCK_SIZE);
      want.set(data.subarray(BLOCK_SIZE));
      assert.equal(tail.hashed.checksum, sum(want));
      await tail.hashed.drop();
      const zero = await read(0, BLOCK_SIZE - 1);
      assert.ok(zero.zero, "the bytes before the last are zeros, and nothing else is read");
      assert.ok(
        zero.buffer.every((v) => v === 0),
        "the buffer is zero-filled after the bytes read",
      );
    } finally {
      await closeFile(file);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("readSourceBlock() reads data blocks with direct I/O after a worker first read a hole", async () => {
    // A direct read of a hole succeeds at any buffer alignment, so it cannot tell a worker the
    // alignment that data blocks need: the first 8 blocks are holes, the next 8 hold data.
    const dir = await mkdtemp(join("/var/tmp", "convoy-holes-"));
    const file = join(dir, "sparse.img");
    try {
      const fh = await (await import("node:fs/promises")).open(file, "w");
      await fh.truncate(16 * BLOCK_SIZE);
      for (let i = 8; i < 16; i++) {
        await fh.write(new Uint8Array(BLOCK_SIZE).fill(i), 0, BLOCK_SIZE, i * BLOCK_SIZE);
      }
      await fh.close();
      const results = await Promise.all(
        Array.from(
          { length: 16 },
          (_, i) =>
            readSourceBlock({ path: file, offset: i * BLOCK_SIZE, length: BLOCK_SIZE }, {
              algo: "sha256",
              into: new Uint8Array(BLOCK_SIZE),
            }).then(async (r) => {
              if (r.zero) return "zero";
              const sum = r.hashed.checksum;
              await r.hashed.drop();
              return sum;
            }),
        ),
      );
      for (let i = 0; i < 16; i++) {
        const want = i < 8
          ? "zero"
          : createHash("sha256").update(new Uint8Array(BLOCK_SIZE).fill(i)).digest("hex");
        assert.equal(results[i], want, `block ${i}`);
      }
    } finally {
      await closeFile(file);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
