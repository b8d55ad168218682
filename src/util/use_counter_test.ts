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
});
