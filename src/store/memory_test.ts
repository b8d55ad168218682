import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../api/errors.ts";
import { MemoryStore, memoryStoreFactory } from "./memory.ts";
import { runObjectStoreSuite } from "./suite.ts";

runObjectStoreSuite({
  name: "MemoryStore",
  create: () => Promise.resolve({ store: new MemoryStore(), cleanup: () => Promise.resolve() }),
});

describe("memoryStoreFactory()", () => {
  it("memoryStoreFactory() opens the same store for the same mem:// name", async () => {
    const f = memoryStoreFactory();
    const a = await f.open("mem://one", {});
    const b = await f.open("mem://one", {});
    const c = await f.open("mem://two", {});
    assert.equal(a, b);
    assert.notEqual(a, c);
    assert.equal(a.url, "mem://one");
    assert.equal(a.kind, "mem");
  });

  it("memoryStoreFactory() rejects a mem:// URL with a path", async () => {
    await assert.rejects(memoryStoreFactory().open("mem://one/sub", {}), InvalidArgumentError);
  });
});
