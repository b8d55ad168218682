import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BLOCK_SIZE } from "./codec.ts";
import { codecWorkers, hashBlock, setCodecIdleMs } from "./codec_pool.ts";

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
});
