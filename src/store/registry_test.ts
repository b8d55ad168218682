import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../api/errors.ts";
import { MemoryStore } from "./memory.ts";
import { builtinStoreRegistry, createStoreRegistry } from "./registry.ts";
import { silentLogger } from "../util/log.ts";
import { openStore } from "./testing.ts";
import type { StoreFactory } from "./types.ts";

describe("openStore()", () => {
  it("openStore() opens vfs:// by scheme", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-reg-"));
    try {
      const store = await openStore(`vfs://${dir}/`);
      assert.equal(store.kind, "vfs");
      assert.equal(store.url, `vfs://${dir}/`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("openStore() gives the same mem:// store for the same name", async () => {
    const a = await openStore("mem://registry-test");
    await a.write("k", new Uint8Array([1]));
    const b = await openStore("mem://registry-test");
    assert.deepEqual(await b.list(""), ["k"]);
  });

  it("openStore() rejects an unknown scheme, an empty URL and a non-URL", async () => {
    await assert.rejects(openStore("ftp://x"), {
      name: "InvalidArgumentError",
      message: 'Unsupported backup destination "ftp://x": scheme "ftp" is not supported',
    });
    await assert.rejects(openStore(""), InvalidArgumentError);
    await assert.rejects(openStore("not a url"), InvalidArgumentError);
  });

  it("openStore() rejects an endpoint for a scheme that does not support it", async () => {
    await assert.rejects(openStore("vfs:///tmp", { endpoint: "http://x" }), {
      name: "InvalidArgumentError",
      message:
        'Cannot use endpoint "http://x" with "vfs:///tmp": only s3:// supports custom endpoints',
    });
  });
});

describe("builtinStoreRegistry()", () => {
  it("builtinStoreRegistry() has vfs:// and s3:// only: mem:// is registered by tests", async () => {
    const reg = builtinStoreRegistry({ log: silentLogger });
    assert.deepEqual(reg.schemes(), ["s3", "vfs"]);
    await assert.rejects(reg.open("mem://x"), {
      message: 'Unsupported backup destination "mem://x": scheme "mem" is not supported',
    });
  });
});

describe("createStoreRegistry()", () => {
  const fake = (scheme: string, supportsEndpoint: boolean, seen: unknown[] = []): StoreFactory => ({
    scheme,
    supportsEndpoint,
    open(destURL, opts) {
      seen.push({ destURL, opts });
      return Promise.resolve(new MemoryStore(scheme));
    },
  });

  it("createStoreRegistry() passes the endpoint to a factory that supports it", async () => {
    const seen: unknown[] = [];
    const reg = createStoreRegistry([fake("s3", true, seen), fake("vfs", false)]);
    await reg.open("s3://b@r/p", { endpoint: "http://minio:9000" });
    await reg.open("s3://b@r/p", { endpoint: "" });
    assert.deepEqual(seen, [
      { destURL: "s3://b@r/p", opts: { endpoint: "http://minio:9000" } },
      { destURL: "s3://b@r/p", opts: {} },
    ]);
    await assert.rejects(reg.open("vfs:///x", { endpoint: "http://x" }), {
      message:
        'Cannot use endpoint "http://x" with "vfs:///x": only s3:// supports custom endpoints',
    });
    assert.deepEqual(reg.schemes(), ["s3", "vfs"]);
  });

  it("createStoreRegistry() refuses a second factory for a scheme", () => {
    const reg = createStoreRegistry([fake("vfs", false)]);
    assert.throws(() => reg.register(fake("vfs", false)), /already registered/);
  });
});
