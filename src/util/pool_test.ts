import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { pool } from "./pool.ts";

const tick = () => new Promise((r) => setTimeout(r, 1));

describe("pool()", () => {
  it("pool() runs at most `concurrency` at once and every item once", async () => {
    let running = 0;
    let peak = 0;
    const seen: number[] = [];
    await pool([1, 2, 3, 4, 5, 6, 7], { concurrency: 3 }, async (n) => {
      peak = Math.max(peak, ++running);
      await tick();
      seen.push(n);
      running--;
    });
    assert.equal(peak, 3);
    assert.deepEqual(seen.sort(), [1, 2, 3, 4, 5, 6, 7]);
  });

  it("pool() starts no more after a failure, lets running ones finish, then rethrows it", async () => {
    const started: number[] = [];
    let finished = 0;
    await assert.rejects(
      pool([1, 2, 3, 4, 5, 6], { concurrency: 2 }, async (n) => {
        started.push(n);
        if (n === 1) throw new Error("item 1 failed");
        await tick();
        finished++;
      }),
      /item 1 failed/,
    );
    assert.deepEqual(started, [1, 2]);
    assert.equal(finished, 1);
  });

  it("pool() stops with CancelledError once the signal aborts", async () => {
    const ac = new AbortController();
    let ran = 0;
    await assert.rejects(
      pool([1, 2, 3, 4], { concurrency: 1, signal: ac.signal }, async () => {
        ran++;
        ac.abort();
        await tick();
      }),
      { name: "CancelledError" },
    );
    assert.equal(ran, 1);
  });
});
