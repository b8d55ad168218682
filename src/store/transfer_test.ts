import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { CancelledError, NotFoundError } from "../api/errors.ts";
import { MemoryStore } from "./memory.ts";
import { downloadFile, uploadFile } from "./transfer.ts";

async function withTemp(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-xfer-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("transfer", () => {
  it("uploadFile() and downloadFile() round-trip a multi-chunk file with progress", async () => {
    await withTemp(async (dir) => {
      const data = new Uint8Array(2.5 * 1024 * 1024).map((_, i) => (i * 7) % 256);
      await writeFile(join(dir, "in"), data);
      const store = new MemoryStore();
      const seen: number[] = [];
      await uploadFile(store, "a/obj", { file: join(dir, "in"), onProgress: (b) => seen.push(b) });
      assert.deepEqual(seen, [1048576, 2097152, 2621440]);
      await downloadFile(store, "a/obj", { file: join(dir, "out") });
      assert.deepEqual(new Uint8Array(await readFile(join(dir, "out"))), data);
      assert.deepEqual((await readdir(dir)).sort(), ["in", "out"]);
    });
  });

  it("uploadFile() rejects a missing local file with NotFoundError and writes nothing", async () => {
    await withTemp(async (dir) => {
      const store = new MemoryStore();
      await assert.rejects(uploadFile(store, "k", { file: join(dir, "none") }), NotFoundError);
      assert.deepEqual(store.keys(), []);
    });
  });

  it("uploadFile() stops with CancelledError when the signal aborts", async () => {
    await withTemp(async (dir) => {
      await writeFile(join(dir, "in"), new Uint8Array(3 * 1024 * 1024));
      const store = new MemoryStore();
      const ac = new AbortController();
      const p = uploadFile(store, "k", {
        file: join(dir, "in"),
        signal: ac.signal,
        onProgress: () => ac.abort(),
      });
      await assert.rejects(p, CancelledError);
      assert.deepEqual(store.keys(), []);
    });
  });

  it("downloadFile() of a missing object is NotFoundError and leaves no file", async () => {
    await withTemp(async (dir) => {
      await assert.rejects(
        downloadFile(new MemoryStore(), "missing", { file: join(dir, "out") }),
        NotFoundError,
      );
      assert.deepEqual(await readdir(dir), []);
    });
  });
});
