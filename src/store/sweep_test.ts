import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { silentLogger } from "../util/log.ts";
import { sweepQuietly } from "./sweep.ts";
import { openVfsStore } from "./vfs.ts";

/** Writes an old-form temp file (writer unknown) whose last write was two hours ago. */
async function staleTemp(dir: string, name: string): Promise<void> {
  const path = join(dir, `.${name}.tmp-0123abcd`);
  await writeFile(path, "partial");
  const then = new Date(Date.now() - 2 * 3600_000);
  await utimes(path, then, then);
}

describe("sweepQuietly()", () => {
  it("sweeps a folder of a store at most once per interval; other folders still sweep", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-sweep-"));
    try {
      const store = await openVfsStore(`vfs://${root}`);
      const dirA = join(root, "a");
      const dirB = join(root, "b");
      await mkdir(dirA);
      await mkdir(dirB);
      await writeFile(join(dirA, "kept.blk"), "block"); // folders left empty are pruned
      await writeFile(join(dirB, "kept.blk"), "block");
      await staleTemp(dirA, "one.blk");
      await sweepQuietly(store, { prefix: "a", log: silentLogger });
      assert.deepEqual(await readdir(dirA), ["kept.blk"], "the first sweep removes the stale temp");
      await staleTemp(dirA, "two.blk");
      await sweepQuietly(store, { prefix: "a", log: silentLogger });
      assert.equal(
        (await readdir(dirA)).length,
        2,
        "a second sweep of the folder soon after is skipped",
      );
      await staleTemp(dirB, "three.blk");
      await sweepQuietly(store, { prefix: "b", log: silentLogger });
      assert.deepEqual(await readdir(dirB), ["kept.blk"], "another folder is swept");
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
