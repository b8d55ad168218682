import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { KeyedMutex } from "./keyed_mutex.ts";

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("KeyedMutex", () => {
  it("run() serialises operations on one key", async () => {
    const m = new KeyedMutex();
    const order: string[] = [];
    await Promise.all([1, 2, 3].map((i) =>
      m.run("vol", async () => {
        order.push(`start${i}`);
        await tick();
        order.push(`end${i}`);
      })
    ));
    assert.deepEqual(order, ["start1", "end1", "start2", "end2", "start3", "end3"]);
    assert.equal(m.busy("vol"), false);
  });

  it("run() does not block other keys while one is held", async () => {
    const m = new KeyedMutex();
    let release!: () => void;
    const held = m.run("a", () => new Promise<void>((r) => (release = r)));
    const other = await m.run("b", () => Promise.resolve("b done"));
    assert.equal(other, "b done");
    assert.equal(m.busy("a"), true);
    release();
    await held;
  });

  it("run() releases the key when the operation throws", async () => {
    const m = new KeyedMutex();
    await assert.rejects(m.run("k", () => Promise.reject(new Error("boom"))), /boom/);
    assert.equal(await m.run("k", () => Promise.resolve(7)), 7);
  });

  it("run() serialises one key and lets other keys run", async () => {
    const lock = new KeyedMutex();
    const order: string[] = [];
    const slow = (tag: string, ms: number) => async () => {
      order.push(`${tag} start`);
      await new Promise((r) => setTimeout(r, ms));
      order.push(`${tag} end`);
    };
    await Promise.all([
      lock.run("a", slow("a1", 30)),
      lock.run("a", slow("a2", 1)),
      lock.run("b", slow("b1", 1)),
    ]);
    assert.deepEqual(order, ["a1 start", "b1 start", "b1 end", "a1 end", "a2 start", "a2 end"]);
  });
});
