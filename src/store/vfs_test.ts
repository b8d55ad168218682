import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { InvalidArgumentError, NotFoundError } from "../api/errors.ts";
import { runObjectStoreSuite } from "./suite.ts";
import { STALE_TEMP_AGE_MS, sweepStaleTemps } from "./sweep.ts";
import { openVfsStore } from "./vfs.ts";
import { thisHolder } from "../util/holder.ts";

async function tempDir(): Promise<string> {
  return await mkdtemp(join(tmpdir(), "convoy-vfs-"));
}

runObjectStoreSuite({
  name: "VfsStore",
  async create() {
    const dir = await tempDir();
    const store = await openVfsStore(`vfs://${dir}`);
    return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
  },
});

describe("openVfsStore()", () => {
  it("openVfsStore() normalises the URL and keeps a trailing slash", async () => {
    const dir = await tempDir();
    try {
      assert.equal((await openVfsStore(`vfs://${dir}`)).url, `vfs://${dir}`);
      assert.equal((await openVfsStore(`vfs://${dir}/`)).url, `vfs://${dir}/`);
      assert.equal((await openVfsStore(`vfs://${dir}/`)).root, dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("openVfsStore() rejects a missing directory with NotFoundError", async () => {
    await assert.rejects(openVfsStore("vfs:///no/such/dir"), {
      name: "NotFoundError",
      message:
        'Cannot open backup store "vfs:///no/such/dir": directory "/no/such/dir" does not exist',
    });
  });

  it("openVfsStore() rejects a file and a URL with a host", async () => {
    const dir = await tempDir();
    try {
      await writeFile(join(dir, "f"), "x");
      await assert.rejects(openVfsStore(`vfs://${dir}/f`), InvalidArgumentError);
      await assert.rejects(openVfsStore(`vfs://host${dir}`), {
        name: "InvalidArgumentError",
        message: `Invalid backup destination "vfs://host${dir}": must be vfs:///absolute/path`,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("VfsStore", () => {
  it("VfsStore.write() creates directories with mode 0755 and files 0644 (umask 022)", async () => {
    const dir = await tempDir();
    const old = process.umask(0o022);
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await store.write("a/b/obj", new Uint8Array([1]));
      assert.equal((await stat(join(dir, "a"))).mode & 0o777, 0o755);
      assert.equal((await stat(join(dir, "a/b"))).mode & 0o777, 0o755);
      assert.equal((await stat(join(dir, "a/b/obj"))).mode & 0o777, 0o644);
    } finally {
      process.umask(old);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.write() leaves no temp file when the body stream fails", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await store.write("d/obj", new TextEncoder().encode("old"));
      const body = new ReadableStream<Uint8Array>({
        pull(c) {
          c.enqueue(new Uint8Array([1, 2, 3]));
          c.error(new Error("disk on fire"));
        },
      });
      await assert.rejects(store.write("d/obj", body), { name: "BackendError" });
      assert.deepEqual(await readdir(join(dir, "d")), ["obj"]);
      assert.equal(new TextDecoder().decode(await store.read("d/obj")), "old");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.write() with deferSync: objects read back at once, background batches and flush() leave no temp file", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      const blocks = Array.from({ length: 40 }, (_, i) => new Uint8Array(1 << 20).fill(i + 1));
      // 40 MiB: more than one background sync batch, and a tail left for flush().
      await Promise.all(
        blocks.map((b, i) => store.write(`blocks/b${i}.blk`, b, { deferSync: true })),
      );
      const back = await store.read("blocks/b7.blk");
      assert.equal(back.length, 1 << 20);
      assert.equal(back[12345], 8);
      await store.flush();
      await store.flush(); // nothing pending: resolves again
      const names = await readdir(join(dir, "blocks"));
      assert.equal(names.length, 40);
      assert.deepEqual(names.filter((n) => n.includes(".tmp-")), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.list() hides temp files of in-flight writes", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await mkdir(join(dir, "d"));
      await writeFile(join(dir, "d", ".obj.tmp-0123abcd"), "partial");
      await writeFile(join(dir, "d", "obj"), "x");
      assert.deepEqual(await store.list("d"), ["obj"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.write() names this process in its temp file; list() hides it, a sweep keeps it", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      let finish!: () => void;
      const wait = new Promise<void>((res) => finish = res);
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(new Uint8Array(10));
        },
        async pull(c) {
          await wait;
          c.close();
        },
      });
      const writing = store.write("d/obj", body);
      let names: string[] = [];
      while (names.length === 0) {
        await new Promise((res) => setTimeout(res, 5));
        names = await readdir(join(dir, "d")).catch(() => []);
      }
      const me = await thisHolder();
      assert.equal(names.length, 1);
      assert.ok(
        names[0].includes(`-${process.pid}-${me.start}-`),
        `"${names[0]}" names this process`,
      );
      assert.deepEqual(await store.list("d"), []);
      assert.deepEqual(await sweepStaleTemps(store), [], "a live writer's temp is kept");
      finish();
      await writing;
      assert.deepEqual(await store.list("d"), ["obj"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.remove() prunes empty parents but never the store root", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}/`);
      await store.write("convoy-objectstore/volumes/vo/l1/vol1/volume.cfg", new Uint8Array([1]));
      await store.remove("convoy-objectstore/volumes/vo/l1/vol1");
      assert.deepEqual(await readdir(dir), []);
      assert.ok((await stat(dir)).isDirectory());
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("sweepStaleTemps() removes temp files idle for the safe age, keeps fresh ones and objects", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await store.write("a/b/obj", new Uint8Array([1]));
      const old = (Date.now() - STALE_TEMP_AGE_MS - 60_000) / 1000;
      const temp = async (key: string, stale: boolean) => {
        const path = join(dir, ...key.split("/"));
        await mkdir(join(path, ".."), { recursive: true });
        await writeFile(path, "partial");
        if (stale) await utimes(path, old, old);
      };
      await temp("a/b/.obj.tmp-0123abcd", true); // killed mid-write
      await temp("a/.x.tmp-89abcdef", false); // a live write
      await temp("c/d/.y.tmp-00000000", true); // alone in its folder
      await temp("a/b/.obj.tmp-notahex!", true); // not a temp name
      const stale = ["a/b/.obj.tmp-0123abcd", "c/d/.y.tmp-00000000"];
      assert.deepEqual(await sweepStaleTemps(store, { dryRun: true }), stale);
      assert.deepEqual(await sweepStaleTemps(store, { prefix: "a" }), [stale[0]]);
      assert.deepEqual(await sweepStaleTemps(store), [stale[1]]);
      assert.deepEqual(await readdir(dir), ["a"], "the emptied folders are pruned");
      assert.deepEqual((await readdir(join(dir, "a"), { recursive: true })).sort(), [
        ".x.tmp-89abcdef",
        "b",
        "b/.obj.tmp-notahex!",
        "b/obj",
      ]);
      assert.deepEqual(await sweepStaleTemps(store, { olderThanMs: 0 }), ["a/.x.tmp-89abcdef"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("VfsStore.read() of a directory is NotFoundError", async () => {
    const dir = await tempDir();
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await mkdir(join(dir, "sub"));
      await assert.rejects(store.read("sub"), NotFoundError);
      await assert.rejects(store.readStream("sub"), NotFoundError);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
