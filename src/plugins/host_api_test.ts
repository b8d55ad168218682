import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BackupStoreApi } from "../api/plugin.ts";
import { createExec } from "../runtime/exec.ts";
import { silentLogger } from "../util/log.ts";
import { createPluginApi } from "./host_api.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-host-api-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const api = createPluginApi({
  register() {},
  log: silentLogger,
  exec: createExec({ timeoutMs: 10_000 }),
  backup: {} as BackupStoreApi,
});

describe("plugin api: util", () => {
  it("schemas parse flags and sizes", () => {
    const { flag, size } = api.util.schemas;
    assert.equal(flag.parse(""), false);
    assert.equal(flag.parse(undefined), false);
    assert.equal(flag.parse("yes"), true);
    assert.equal(size.parse("2K"), 2048);
    assert.equal(size.parse(""), 0);
    assert.equal(size.safeParse("2X").success, false);
  });

  it("ensureDir() makes the folder and its missing parents with mode 0755", async () => {
    await withDir(async (dir) => {
      await api.util.ensureDir(join(dir, "a", "b"));
      await api.util.ensureDir(join(dir, "a", "b"));
      assert.equal((await stat(join(dir, "a"))).mode & 0o777, 0o755);
      assert.equal((await stat(join(dir, "a", "b"))).mode & 0o777, 0o755);
    });
  });

  it("createLock() gives a new per-key lock; mounts reads this process's mountinfo", async () => {
    const a = api.util.createLock();
    assert.notEqual(a, api.util.createLock());
    assert.equal(await a.run("k", () => Promise.resolve(1)), 1);
    assert.equal(await api.util.mounts.isMountPoint("/"), true);
    assert.equal((await api.util.mounts.mountAt("/"))?.mountPoint, "/");
    assert.equal(await api.util.mounts.canonicalPath("/a/../b"), "/b");
    assert.deepEqual(api.util.mounts.parseMountInfo("1 0 8:1 / /x rw - ext4 /dev/sda1 rw"), [
      { mountPoint: "/x", fstype: "ext4", source: "/dev/sda1", device: "8:1" },
    ]);
    assert.deepEqual(await api.util.mounts.mountsOf(""), []);
  });

  it("mounts reads the table it is given (another namespace's), not this process's", async () => {
    const table = [
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw",
      "44 22 7:3 / /srv/vol1 rw - ext4 /dev/loop3 rw",
    ].join("\n");
    let reads = 0;
    const inNs = createPluginApi({
      register() {},
      log: silentLogger,
      exec: createExec({ timeoutMs: 10_000 }),
      mountInfo: () => {
        reads++;
        return Promise.resolve(table);
      },
      backup: {} as BackupStoreApi,
    });
    const { mounts } = inNs.util;
    assert.deepEqual((await mounts.list()).map((e) => e.mountPoint), ["/", "/srv/vol1"]);
    assert.equal((await mounts.mountAt("/srv/vol1"))?.source, "/dev/loop3");
    assert.equal(await mounts.isMountPoint("/srv/vol1"), true);
    assert.deepEqual(await mounts.mountsOf("/dev/loop3"), ["/srv/vol1"]);
    assert.equal(reads, 4);
    // This process's table has neither: it is not read.
    assert.equal(await api.util.mounts.isMountPoint("/srv/vol1"), false);
    assert.ok((await api.util.mounts.list()).some((e) => e.mountPoint === "/"));
  });
});
