import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { UseCounter } from "./use_counter.ts";

describe("UseCounter", () => {
  it("use() holds a key until every holder has released it, once each", () => {
    const c = new UseCounter();
    const a = c.use("vol\u0000snap");
    const b = c.use("vol\u0000snap");
    assert.equal(c.inUse("vol\u0000snap"), true);
    a();
    a(); // a second release of the same hold changes nothing
    assert.equal(c.inUse("vol\u0000snap"), true);
    b();
    assert.equal(c.inUse("vol\u0000snap"), false);
    assert.equal(c.inUse("other"), false);
  });

  it("use() keys of several parts: (volume, snapshot) pairs are distinct keys", () => {
    const c = new UseCounter();
    const release = c.use("vol1", "snap1");
    assert.equal(c.inUse("vol1", "snap1"), true);
    assert.equal(c.inUse("vol1", "snap2"), false);
    assert.equal(c.inUse("vol1"), false);
    assert.equal(c.inUse("vol1snap1"), false);
    release();
    assert.equal(c.inUse("vol1", "snap1"), false);
  });
});
