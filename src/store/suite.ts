/**
 * The conformance suite every ObjectStore runs (`runObjectStoreSuite`), with node:test.
 * @module
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError, NotFoundError } from "../api/errors.ts";
import { collectStream } from "./memory.ts";
import type { ObjectStore } from "./types.ts";

/** Options of runObjectStoreSuite. */
export interface ObjectStoreSuiteOptions {
  /** Names the describe block, e.g. "VfsStore". */
  name: string;
  /** A fresh, empty store per test, and a function removing whatever it left behind. */
  create: () => Promise<{ store: ObjectStore; cleanup: () => Promise<void> }>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

function streamOf(...chunks: string[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const s of chunks) c.enqueue(enc.encode(s));
      c.close();
    },
  });
}

/** Registers the ObjectStore conformance tests for one implementation. */
export function runObjectStoreSuite(opts: ObjectStoreSuiteOptions): void {
  const test = (name: string, fn: (store: ObjectStore) => Promise<void>) =>
    it(name, async () => {
      const { store, cleanup } = await opts.create();
      try {
        await fn(store);
      } finally {
        await cleanup();
      }
    });

  describe(`${opts.name} conformance`, () => {
    test("stat() resolves to undefined for a missing object", async (store) => {
      assert.equal(await store.stat("a/b/missing"), undefined);
      assert.equal(await store.stat("missing"), undefined);
    });

    test("stat() resolves to undefined for a prefix that is not an object", async (store) => {
      await store.write("dir/obj", enc.encode("x"));
      assert.equal(await store.stat("dir"), undefined);
    });

    test("write() then read() round-trips bytes, and stat() reports the size", async (store) => {
      const data = new Uint8Array(300_000).map((_, i) => i % 251);
      await store.write("a/b/c.bin", data);
      assert.deepEqual(await store.read("a/b/c.bin"), data);
      assert.deepEqual(await store.stat("a/b/c.bin"), { size: 300_000 });
    });

    test("write() accepts a stream body", async (store) => {
      await store.write("s/obj", streamOf("hello ", "stream ", "world"), { size: 18 });
      assert.equal(dec.decode(await store.read("s/obj")), "hello stream world");
    });

    test("write() stores an empty object", async (store) => {
      await store.write("empty", new Uint8Array());
      assert.deepEqual(await store.stat("empty"), { size: 0 });
      assert.equal((await store.read("empty")).byteLength, 0);
    });

    test("write() does not alias the caller's buffer", async (store) => {
      const data = enc.encode("abc");
      await store.write("k", data);
      data[0] = 0x7a;
      assert.equal(dec.decode(await store.read("k")), "abc");
    });

    test("readStream() streams the object", async (store) => {
      const data = new Uint8Array(3 * 1024 * 1024 + 7).map((_, i) => i % 253);
      await store.write("big/obj", data);
      assert.deepEqual(await collectStream(await store.readStream("big/obj")), data);
    });

    test("write() replaces an existing object, shorter or longer", async (store) => {
      await store.write("o", enc.encode("a long first version"));
      await store.write("o", enc.encode("short"));
      assert.equal(dec.decode(await store.read("o")), "short");
      await store.write("o", streamOf("longer ", "again"));
      assert.equal(dec.decode(await store.read("o")), "longer again");
      assert.deepEqual(await store.list(""), ["o"]);
    });

    test("read() and readStream() reject with NotFoundError for a missing object", async (store) => {
      await assert.rejects(store.read("no/such/key"), NotFoundError);
      await assert.rejects(store.readStream("no/such/key"), NotFoundError);
      await store.write("dir/obj", enc.encode("x"));
      await assert.rejects(store.read("dir"), NotFoundError);
    });

    test("list() behaves like ls: direct children once, sorted, no trailing slash", async (store) => {
      await store.write("v/a/1", enc.encode("1"));
      await store.write("v/a/2", enc.encode("2"));
      await store.write("v/b/deep/x", enc.encode("x"));
      await store.write("v/c", enc.encode("c"));
      await store.write("w", enc.encode("w"));
      assert.deepEqual(await store.list("v"), ["a", "b", "c"]);
      assert.deepEqual(await store.list("v/"), ["a", "b", "c"]);
      assert.deepEqual(await store.list("v/b"), ["deep"]);
      assert.deepEqual(await store.list(""), ["v", "w"]);
    });

    test("list() resolves to [] for a missing prefix", async (store) => {
      assert.deepEqual(await store.list("nothing/here"), []);
      await store.write("file", enc.encode("x"));
      assert.deepEqual(await store.list("file/below"), []);
    });

    test("list() does not match a sibling sharing a string prefix", async (store) => {
      await store.write("vo/l1/vol1/volume.cfg", enc.encode("1"));
      await store.write("vo/l1/vol10/volume.cfg", enc.encode("10"));
      assert.deepEqual(await store.list("vo/l1/vol1"), ["volume.cfg"]);
    });

    test("remove() deletes an object", async (store) => {
      await store.write("d/x", enc.encode("x"));
      await store.write("d/y", enc.encode("y"));
      await store.remove("d/x");
      assert.equal(await store.stat("d/x"), undefined);
      assert.deepEqual(await store.list("d"), ["y"]);
    });

    test("remove() of a prefix deletes everything below it but not vol10", async (store) => {
      await store.write("volumes/vo/l1/vol1/volume.cfg", enc.encode("1"));
      await store.write("volumes/vo/l1/vol1/backups/backup_a.cfg", enc.encode("a"));
      await store.write("volumes/vo/l1/vol1/blocks/ab/cd/abcd.blk", enc.encode("b"));
      await store.write("volumes/vo/l1/vol10/volume.cfg", enc.encode("10"));
      await store.write("volumes/vo/l1/vol1x", enc.encode("x"));
      await store.remove("volumes/vo/l1/vol1");
      assert.deepEqual(await store.list("volumes/vo/l1"), ["vol10", "vol1x"]);
      assert.deepEqual(await store.list("volumes/vo/l1/vol1"), []);
      assert.equal(dec.decode(await store.read("volumes/vo/l1/vol10/volume.cfg")), "10");
      assert.equal(dec.decode(await store.read("volumes/vo/l1/vol1x")), "x");
    });

    test("remove() accepts several keys and ignores missing ones", async (store) => {
      await store.write("k/1", enc.encode("1"));
      await store.write("k/2", enc.encode("2"));
      await store.write("k/3", enc.encode("3"));
      await store.remove("k/1", "missing/key", "k/3", "k/1");
      assert.deepEqual(await store.list("k"), ["2"]);
      await store.remove();
    });

    test("remove() leaves no empty parent behind", async (store) => {
      await store.write("p/q/r/obj", enc.encode("x"));
      await store.write("keep", enc.encode("k"));
      await store.remove("p/q/r/obj");
      assert.deepEqual(await store.list("p/q"), []);
      assert.deepEqual(await store.list(""), ["keep"]);
    });

    test("keys with empty, '.' or '..' segments are rejected", async (store) => {
      for (const bad of ["../x", "a/../b", "a//b", "./a", ""]) {
        await assert.rejects(store.write(bad, enc.encode("x")), InvalidArgumentError, bad);
      }
      await assert.rejects(store.read("a/.."), InvalidArgumentError);
      await assert.rejects(store.stat(".."), InvalidArgumentError);
      await assert.rejects(store.list("../up"), InvalidArgumentError);
      await assert.rejects(store.remove(""), InvalidArgumentError);
      await assert.rejects(store.remove("/"), InvalidArgumentError);
    });
  });
}
