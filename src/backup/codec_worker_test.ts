import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { describe, it } from "node:test";
import { Worker } from "node:worker_threads";
import { codecWorkerSource, type WorkerCall, type WorkerReply } from "./codec_worker.ts";

describe("codecWorkerSource()", () => {
  it("codecWorkerSource() runs from its text alone: hash, pack and check a block", async () => {
    const worker = new Worker(
      codecWorkerSource({ blockSize: 1 << 20, zstdLevel: 1, chunkSize: (1 << 20) + 65536 }),
      { eval: true },
    );
    const replies: WorkerReply[] = [];
    let wake = () => {};
    let failure: unknown;
    worker.on("message", (r: WorkerReply) => (replies.push(r), wake()));
    worker.on("error", (err: unknown) => (failure = err, wake()));
    const call = async (msg: WorkerCall, transfer: ArrayBuffer[] = []) => {
      worker.postMessage(msg, transfer);
      while (!replies.some((r) => r.id === msg.id)) {
        if (failure) throw failure; // e.g. the function used something outside itself
        await new Promise<void>((r) => (wake = r));
      }
      return replies.find((r) => r.id === msg.id)!;
    };
    try {
      const block = new Uint8Array(1 << 20).map((_, i) => (i * 31) % 251);
      const sum = createHash("sha256").update(block).digest("hex");
      const hashed = await call({ op: "hash", id: 1, buf: block.slice().buffer, algo: "sha256" });
      assert.equal(hashed.sum, sum);
      const out = new ArrayBuffer(2 << 20);
      const packed = await call({ op: "pack", id: 2, hold: 1, compression: "gzip", out }, [out]);
      assert.equal(packed.error, undefined);
      assert.equal(packed.buf?.byteLength, block.byteLength, "the block buffer comes back");
      const gz = new Uint8Array(packed.out!, 0, packed.len!).slice();
      assert.deepEqual([...gz.subarray(0, 2)], [0x1f, 0x8b], "a gzip member");
      const checked = await call({
        op: "check",
        id: 3,
        buf: gz.buffer,
        len: gz.length,
        size: block.length,
        algo: "sha256",
        own: false,
      }, [gz.buffer]);
      assert.deepEqual([checked.sum, checked.length], [sum, block.length]);
      const bad = await call({ op: "drop", id: 4, hold: 99 });
      assert.match(bad.error ?? "", /\S/, "a call that fails answers with an error");
    } finally {
      await worker.terminate();
    }
  });
});
