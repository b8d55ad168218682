import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BackgroundSync } from "./background_sync.ts";

describe("BackgroundSync", () => {
  it("runs sync once per `every` bytes, one run at a time, and drain() waits for it", async () => {
    let runs = 0;
    let release!: () => void;
    const bg = new BackgroundSync(100, () => {
      runs++;
      return new Promise<void>((r) => (release = r));
    });
    bg.wrote(60);
    assert.equal(runs, 0);
    bg.wrote(60); // 120 >= 100: a run starts
    assert.equal(runs, 1);
    bg.wrote(500); // a run is in progress: none starts
    assert.equal(runs, 1);
    let drained = false;
    const d = bg.drain().then(() => (drained = true));
    await new Promise((r) => setTimeout(r, 10));
    assert.equal(drained, false, "drain() waits for the run in progress");
    release();
    await d;
    bg.wrote(60); // drain() forgot the 500 bytes: below `every` again
    assert.equal(runs, 1);
  });

  it("drain() rejects once with the first failure", async () => {
    let n = 0;
    const bg = new BackgroundSync(1, () => Promise.reject(new Error(`sync ${++n} failed`)));
    bg.wrote(1);
    await assert.rejects(bg.drain(), /sync 1 failed/);
    await bg.drain(); // reported once
  });
});
