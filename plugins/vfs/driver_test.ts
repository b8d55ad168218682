import { describe, test } from "node:test";
import assert from "node:assert/strict";
import {
  chmod,
  chown,
  lstat,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { spawn } from "node:child_process";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type {
  BackupStoreApi,
  ConvoyDriver,
  Exec,
  InitFunc,
  Logger,
  VolumeOperations,
} from "../../mod.ts";
import {
  AlreadyExistsError,
  BackendError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
} from "../../mod.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { registeredInit } from "../../src/plugins/testing.ts";
import { createExec } from "../../src/runtime/exec.ts";
import { silentLogger } from "../../src/util/log.ts";
import { isMountPoint, parseMountPoints } from "../../src/util/mountinfo.ts";
import setup from "./mod.ts";

const exec = createExec({ timeoutMs: 60_000 });

/** A logger that keeps warnings and errors. */
function recordingLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const logger: Logger & { lines: string[] } = {
    lines,
    debug() {},
    info() {},
    warn: (m) => void lines.push(`warn: ${m}`),
    error: (m) => void lines.push(`error: ${m}`),
    child: () => logger,
  };
  return logger;
}

/** The vfs InitFunc, registered through the real plugin api. */
function vfsInit(
  opts: { log?: Logger; backup?: BackupStoreApi; exec?: Exec } = {},
): InitFunc {
  return registeredInit(setup, "vfs", { ...opts, exec: opts.exec ?? exec });
}

/** Unmounts everything mounted below `dir` (deepest first), then removes it. */
async function cleanup(dir: string): Promise<void> {
  const points = [...parseMountPoints(await readFile("/proc/self/mountinfo", "utf8"))]
    .filter((p) => p.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await exec("umount", [p]).catch(() => {});
  await rm(dir, { recursive: true, force: true });
}

/** Every file below `dir`, as paths relative to it. */
async function filesBelow(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

interface Env {
  dir: string;
  root: string;
  path: string;
  init(opts?: {
    config?: Record<string, string>;
    log?: Logger;
    root?: string;
    backup?: BackupStoreApi;
    exec?: Exec;
  }): Promise<ConvoyDriver>;
}

/** Runs `fn` with a fresh temp dir (removed afterwards) and a driver factory on it. */
async function withEnv(fn: (env: Env) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-vfs-"));
  const root = join(dir, "root", "vfs");
  const path = join(dir, "volumes");
  try {
    await fn({
      dir,
      root,
      path,
      init: (o = {}) =>
        vfsInit({ log: o.log, backup: o.backup, exec: o.exec })(
          o.root ?? root,
          o.config ?? { "vfs.path": path, "dm.datadev": "/dev/other-driver-option" },
        ),
    });
  } finally {
    await cleanup(dir);
  }
}

/** A new volume "vol1" bind-mounted at `<dir>/mnt/vol1`. */
async function bindMounted(env: Env): Promise<{ vols: VolumeOperations; mp: string }> {
  const vols = await (await env.init()).volumeOps();
  await vols.createVolume("vol1", {});
  const mp = join(env.dir, "mnt", "vol1");
  await vols.mountVolume("vol1", { MountPoint: mp });
  return { vols, mp };
}

async function mode(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

/** A recursive listing of a directory: path → type, mode and content (or link target). */
async function tree(dir: string, base = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(join(dir, base))).sort()) {
    const rel = join(base, name);
    const full = join(dir, rel);
    const st = await lstat(full);
    const m = (st.mode & 0o7777).toString(8);
    if (st.isSymbolicLink()) out[rel] = `link -> ${await readlink(full)}`;
    else if (st.isDirectory()) {
      out[rel] = `dir ${m}`;
      Object.assign(out, await tree(dir, rel));
    } else out[rel] = `file ${m} ${await readFile(full, "utf8")}`;
  }
  return out;
}

describe("vfs driver: volumes", () => {
  test("createVolume() makes a 0755 directory and a Convoy record on vfs.path", async () => {
    await withEnv(async ({ path, root, init }) => {
      const d = await init();
      assert.equal(d.name(), "vfs");
      const vols = await d.volumeOps();
      assert.equal(vols.name(), "vfs");
      await vols.createVolume("vol.1_1-0", {});
      const dir = join(path, "vol.1_1-0");
      assert.equal(await mode(dir), 0o755);
      assert.equal(await mode(path), 0o755);
      assert.equal(await mode(root), 0o755);

      const record = JSON.parse(
        await readFile(join(path, "config", "vfs_volume_vol.1_1-0.json"), "utf8"),
      );
      assert.deepEqual(Object.keys(record), [
        "Name",
        "Size",
        "Path",
        "MountPoint",
        "PrepareForVM",
        "CreatedTime",
        "Snapshots",
      ]);
      assert.equal(record.Name, "vol.1_1-0");
      assert.equal(record.Size, 0);
      assert.equal(record.Path, dir);
      assert.equal(record.PrepareForVM, false);

      const info = await vols.getVolumeInfo("vol.1_1-0");
      assert.deepEqual({ ...info, VolumeCreatedAt: "" }, {
        Path: dir,
        MountPoint: "",
        Size: "0",
        PrepareForVM: "false",
        VolumeName: "vol.1_1-0",
        VolumeCreatedAt: "",
      });
      assert.match(info.VolumeCreatedAt, /^\w{3} \w{3} \d\d \d\d:\d\d:\d\d [+-]\d{4} \d{4}$/);
      assert.deepEqual(Object.keys(await vols.listVolume({})), ["vol.1_1-0"]);

      assert.deepEqual(await d.info(), {
        Root: root,
        Path: path,
        DefaultVolumeSize: String(100 * 1024 ** 3),
      });
      const cfg = JSON.parse(await readFile(join(root, "vfs.cfg"), "utf8"));
      assert.deepEqual(cfg, {
        Root: root,
        Path: path,
        ConfigPath: join(path, "config"),
        DefaultVolumeSize: 100 * 1024 ** 3,
      });
    });
  });

  test("the default vfs.path is <root>/volumes", async () => {
    await withEnv(async ({ root, init }) => {
      const d = await init({ config: {} });
      assert.equal((await d.info()).Path, join(root, "volumes"));
      const vols = await d.volumeOps();
      await vols.createVolume("vol1", {});
      assert.ok((await stat(join(root, "volumes", "vol1"))).isDirectory());
    });
  });

  test("createVolume() refuses a name that exists", async () => {
    await withEnv(async ({ init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      await assert.rejects(async () => await vols.createVolume("vol1", {}), (err: Error) => {
        assert.ok(err instanceof AlreadyExistsError);
        assert.equal(err.message, 'Cannot create volume "vol1": volume already exists');
        return true;
      });
    });
  });

  test("createVolume() and the other operations reject bad names", async () => {
    await withEnv(async ({ path, init }) => {
      const d = await init();
      const vols = await d.volumeOps();
      for (const bad of ["a", "", "../escape", "-ab", "a b", "x/y", "a".repeat(256)]) {
        await assert.rejects(
          async () => await vols.createVolume(bad, {}),
          InvalidArgumentError,
          bad,
        );
        await assert.rejects(async () => await vols.getVolumeInfo(bad), InvalidArgumentError, bad);
      }
      const snaps = await d.snapshotOps();
      await vols.createVolume("vol1", {});
      await assert.rejects(
        async () => await snaps.createSnapshot("../s", "vol1"),
        InvalidArgumentError,
      );
      assert.deepEqual((await readdir(path)).sort(), ["config", "vol1"]);
    });
  });

  test("createVolume() rejects a bad PrepareForVM or Size option", async () => {
    await withEnv(async ({ init }) => {
      const vols = await (await init()).volumeOps();
      await assert.rejects(
        async () => await vols.createVolume("vol1", { PrepareForVM: "maybe" }),
        InvalidArgumentError,
      );
      await assert.rejects(
        async () => await vols.createVolume("vol1", { PrepareForVM: "true", Size: "ten" }),
        InvalidArgumentError,
      );
      await assert.rejects(async () => await vols.getVolumeInfo("vol1"), NotFoundError);
    });
  });

  test("createVolume() reuses an existing directory with its files", async () => {
    await withEnv(async ({ path, init }) => {
      const vols = await (await init()).volumeOps();
      await mkdir(join(path, "old"), { recursive: true });
      await writeFile(join(path, "old", "keep.txt"), "kept");
      await vols.createVolume("old", {});
      assert.equal(await readFile(join(path, "old", "keep.txt"), "utf8"), "kept");
    });
  });

  test("getVolumeInfo(), mountPoint() and deleteVolume() throw NotFoundError for an unknown volume", async () => {
    await withEnv(async ({ init }) => {
      const vols = await (await init()).volumeOps();
      await assert.rejects(async () => await vols.getVolumeInfo("nope"), (err: Error) => {
        assert.ok(err instanceof NotFoundError);
        assert.equal(err.message, 'Cannot inspect volume "nope": volume does not exist');
        return true;
      });
      await assert.rejects(async () => await vols.mountPoint("nope"), NotFoundError);
      await assert.rejects(async () => await vols.deleteVolume("nope", {}), NotFoundError);
      await assert.rejects(async () => await vols.mountVolume("nope", {}), NotFoundError);
      await assert.rejects(async () => await vols.umountVolume("nope"), NotFoundError);
    });
  });

  test("listVolume() skips bad records, logs them and lists the rest", async () => {
    await withEnv(async ({ path, init }) => {
      const log = recordingLogger();
      const vols = await (await init({ log })).volumeOps();
      await vols.createVolume("good1", {});
      await vols.createVolume("good2", {});
      const cfg = join(path, "config");
      await writeFile(join(cfg, "vfs_volume_broken.json"), "{not json");
      await writeFile(join(cfg, "vfs_volume_a.json"), "{}"); // a name Convoy never validated
      await writeFile(join(cfg, "vfs_volume_wrong.json"), '{"PrepareForVM":"maybe"}');
      await writeFile(join(cfg, "vfs_volume_good1.json.lock"), "");
      assert.deepEqual(Object.keys(await vols.listVolume({})).sort(), ["good1", "good2"]);
      assert.equal(log.lines.filter((l) => l.startsWith("warn: Skipping")).length, 3);
    });
  });

  test("deleteVolume() removes the directory, the record and the snapshots", async () => {
    await withEnv(async ({ path, root, init }) => {
      const d = await init();
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();
      await vols.createVolume("vol1", {});
      await writeFile(join(path, "vol1", "f"), "data");
      await snaps.createSnapshot("snap1", "vol1");
      await vols.deleteVolume("vol1", {});
      await assert.rejects(() => stat(join(path, "vol1")), { code: "ENOENT" });
      await assert.rejects(() => stat(join(root, "snapshots", "vol1")), { code: "ENOENT" });
      assert.deepEqual(await readdir(join(path, "config")), []);
      assert.deepEqual(await snaps.listSnapshot({}), {});
      assert.deepEqual(await vols.listVolume({}), {});
    });
  });

  test("deleteVolume() with ReferenceOnly keeps the data directory", async () => {
    await withEnv(async ({ path, init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      await writeFile(join(path, "vol1", "f"), "data");
      await vols.deleteVolume("vol1", { ReferenceOnly: "true" });
      assert.equal(await readFile(join(path, "vol1", "f"), "utf8"), "data");
      assert.deepEqual(await vols.listVolume({}), {});
      // Creating it again adopts the data.
      await vols.createVolume("vol1", {});
      assert.equal(await readFile(join(path, "vol1", "f"), "utf8"), "data");
    });
  });

  test("deleteVolume() is refused while the volume is mounted", async () => {
    await withEnv(async ({ dir, path, init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      const mp = await vols.mountVolume("vol1", {});
      assert.equal(mp, join(path, "vol1"));
      await assert.rejects(async () => await vols.deleteVolume("vol1", {}), (err: Error) => {
        assert.ok(err instanceof ConflictError);
        assert.equal(
          err.message,
          `Cannot delete volume "vol1": volume is mounted at "${join(path, "vol1")}"`,
        );
        return true;
      });
      await vols.umountVolume("vol1");
      const custom = join(dir, "mnt", "vol1");
      await vols.mountVolume("vol1", { MountPoint: custom });
      await assert.rejects(async () => await vols.deleteVolume("vol1", {}), ConflictError);
      await vols.umountVolume("vol1");
      await vols.deleteVolume("vol1", {});
    });
  });

  test("mountVolume() without a mount point returns the directory; umountVolume() clears it", async () => {
    await withEnv(async ({ path, init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      assert.equal(await vols.mountPoint("vol1"), "");
      const dir = join(path, "vol1");
      assert.equal(await vols.mountVolume("vol1", {}), dir);
      assert.equal(await vols.mountVolume("vol1", { MountPoint: "" }), dir);
      assert.equal(await vols.mountPoint("vol1"), dir);
      assert.equal((await vols.getVolumeInfo("vol1")).MountPoint, dir);
      await vols.umountVolume("vol1");
      assert.equal(await vols.mountPoint("vol1"), "");
      await vols.umountVolume("vol1"); // unmounting twice is harmless
      assert.equal(await isMountPoint(dir), false);
    });
  });

  test("mountVolume() at a custom mount point bind-mounts the directory; umountVolume() hides the files", async () => {
    await withEnv(async ({ dir, path, init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      await writeFile(join(path, "vol1", "hello.txt"), "hello");
      const mp = join(dir, "mnt", "vol1");
      assert.equal(await vols.mountVolume("vol1", { MountPoint: mp }), mp);
      assert.equal(await mode(mp), 0o755);
      assert.equal(await readFile(join(mp, "hello.txt"), "utf8"), "hello");
      assert.equal(await isMountPoint(mp), true);
      assert.equal(await vols.mountPoint("vol1"), mp);
      assert.equal((await vols.getVolumeInfo("vol1")).MountPoint, mp);

      // Writes through the mount land in the volume.
      await writeFile(join(mp, "via-mount.txt"), "x");
      assert.equal(await readFile(join(path, "vol1", "via-mount.txt"), "utf8"), "x");

      // Same place again: idempotent. No mount point: the current one.
      assert.equal(await vols.mountVolume("vol1", { MountPoint: mp + "/" }), mp);
      assert.equal(await vols.mountVolume("vol1", {}), mp);
      // A different place while mounted: refused.
      await assert.rejects(
        async () => await vols.mountVolume("vol1", { MountPoint: join(dir, "mnt", "other") }),
        (err: Error) => {
          assert.ok(err instanceof ConflictError);
          assert.match(err.message, /volume is already mounted at/);
          return true;
        },
      );
      // A sibling with a common prefix is not mistaken for a mount (Convoy's substring bug).
      assert.equal(await isMountPoint(mp + "0"), false);

      await vols.umountVolume("vol1");
      assert.equal(await isMountPoint(mp), false);
      await assert.rejects(() => stat(join(mp, "hello.txt")), { code: "ENOENT" });
      assert.equal(await vols.mountPoint("vol1"), "");
    });
  });

  test("mountVolume() rejects a relative mount point", async () => {
    await withEnv(async ({ init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      await assert.rejects(
        async () => await vols.mountVolume("vol1", { MountPoint: "rel/mnt" }),
        InvalidArgumentError,
      );
    });
  });

  test("umountVolume() succeeds when the bind mount is already gone", async () => {
    await withEnv(async (env) => {
      const { vols, mp } = await bindMounted(env);
      await exec("umount", [mp]);
      await vols.umountVolume("vol1");
      assert.equal(await vols.mountPoint("vol1"), "");
    });
  });

  test("umountVolume() of a busy bind mount is a Conflict and leaves it mounted and recorded", async () => {
    await withEnv(async (env) => {
      const { vols, mp } = await bindMounted(env);
      const holder = spawn("sleep", ["30"], { cwd: mp, stdio: "ignore" }); // keeps it busy
      try {
        await new Promise((r) => holder.once("spawn", r));
        await assert.rejects(async () => await vols.umountVolume("vol1"), (err: unknown) => {
          const e = err as Error & { code?: string };
          assert.equal(e.code, "Conflict");
          assert.match(
            e.message,
            /Cannot unmount volume "vol1" from ".*": the mount point is busy/,
          );
          return true;
        });
        assert.equal(await isMountPoint(mp), true);
        assert.equal(await vols.mountPoint("vol1"), mp);
      } finally {
        holder.kill("SIGKILL");
        await new Promise((r) => holder.once("exit", r));
      }
      await vols.umountVolume("vol1");
      assert.equal(await isMountPoint(mp), false);
    });
  });

  test("a new driver instance restores a recorded bind mount that was unmounted behind its back", async () => {
    await withEnv(async ({ dir, path, init }) => {
      const vols = await (await init()).volumeOps();
      await vols.createVolume("vol1", {});
      await vols.createVolume("vol10", {});
      await writeFile(join(path, "vol1", "f.txt"), "one");
      const mp = join(dir, "mnt", "vol1");
      const mp10 = join(dir, "mnt", "vol10");
      await vols.mountVolume("vol1", { MountPoint: mp });
      await vols.mountVolume("vol10", { MountPoint: mp10 });
      await exec("umount", [mp]); // as after a reboot; vol10 stays mounted

      const again = await (await init()).volumeOps();
      assert.equal(await isMountPoint(mp), true);
      assert.equal(await readFile(join(mp, "f.txt"), "utf8"), "one");
      assert.equal(await again.mountPoint("vol1"), mp);
      // vol10 was still mounted: not mounted a second time on top.
      const stacked = (await readFile("/proc/self/mountinfo", "utf8")).split("\n")
        .filter((l) => l.split(" ")[4] === mp10);
      assert.equal(stacked.length, 1);
      await again.umountVolume("vol1");
      await again.umountVolume("vol10");
    });
  });

  test("PrepareForVM volumes get a sparse disk.img of exactly Size bytes", async () => {
    await withEnv(async ({ path, init }) => {
      const vols = await (await init({
        config: { "vfs.path": path, "vfs.defaultvolumesize": "2M" },
      })).volumeOps();
      await vols.createVolume("vm1", { PrepareForVM: "true", Size: "10485760" });
      await vols.createVolume("vm2", { PrepareForVM: "true" });
      await vols.createVolume("plain", { Size: "10485760" });
      assert.equal((await vols.getVolumeInfo("vm1")).Size, "10485760");
      assert.equal((await vols.getVolumeInfo("vm1")).PrepareForVM, "true");
      assert.equal((await vols.getVolumeInfo("vm2")).Size, String(2 * 1024 * 1024));
      assert.equal((await vols.getVolumeInfo("plain")).Size, "0");

      await vols.mountVolume("vm1", {});
      await vols.mountVolume("vm2", {});
      await vols.mountVolume("plain", {});
      const img = await stat(join(path, "vm1", "disk.img"));
      assert.equal(img.size, 10485760);
      assert.ok(img.blocks * 512 < img.size, "disk.img is not sparse");
      assert.equal((await stat(join(path, "vm2", "disk.img"))).size, 2 * 1024 * 1024);
      await assert.rejects(() => stat(join(path, "plain", "disk.img")), { code: "ENOENT" });

      // An existing image is left alone.
      await vols.umountVolume("vm1");
      await writeFile(join(path, "vm1", "disk.img"), "tiny");
      await vols.mountVolume("vm1", {});
      assert.equal(await readFile(join(path, "vm1", "disk.img"), "utf8"), "tiny");
    });
  });

  test("volumes on a shared vfs.path are seen by a second host, but mount state stays per host", async () => {
    await withEnv(async ({ dir, path, init }) => {
      const a = await (await init()).volumeOps();
      const b = await (await init({ root: join(dir, "host-b", "vfs") })).volumeOps();
      await a.createVolume("shared1", {});
      assert.deepEqual(Object.keys(await b.listVolume({})), ["shared1"]);
      await a.mountVolume("shared1", {});
      assert.equal(await a.mountPoint("shared1"), join(path, "shared1"));
      assert.equal(await b.mountPoint("shared1"), "");
      await a.umountVolume("shared1");
    });
  });
});

describe("vfs driver: snapshots", () => {
  test("createSnapshot() keeps a copy that later writes do not change", async () => {
    await withEnv(async ({ path, root, init }) => {
      const d = await init();
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();
      assert.equal(snaps.name(), "vfs");
      await vols.createVolume("vol1", {});
      const dir = join(path, "vol1");
      await mkdir(join(dir, "sub"));
      await writeFile(join(dir, "sub", "a.txt"), "before");
      await symlink("sub/a.txt", join(dir, "link"));
      const before = await tree(dir);
      await snaps.createSnapshot("snap1", "vol1");

      await writeFile(join(dir, "sub", "a.txt"), "after");
      await writeFile(join(dir, "new.txt"), "new");
      await rm(join(dir, "link"));

      const info = await snaps.getSnapshotInfo("snap1", "vol1");
      assert.equal(info.FilePath, join(root, "snapshots", "vol1", "snap1"));
      assert.deepEqual(await tree(info.FilePath), before);
      assert.equal(info.SnapshotName, "snap1");
      assert.equal(info.VolumeUUID, "vol1");
      assert.match(info.SnapshotCreatedAt, /^\w{3} \w{3} \d\d /);
      assert.deepEqual(
        (await readdir(join(root, "snapshots", "vol1"))).filter((e) => e.startsWith(".")),
        [],
      );
    });
  });

  test("createSnapshot() copies again once when a file vanished during the copy", async () => {
    await withEnv(async ({ path, init }) => {
      let cpCalls = 0;
      let failures = 1;
      const flaky: Exec = async (cmd, args, opts) => {
        if (cmd === "cp") {
          cpCalls++;
          if (failures-- > 0) {
            // What cp reports when a file is deleted between readdir and open.
            await exec(cmd, args, opts);
            throw new BackendError(
              `Failed to execute "cp": exit code 1: cp: cannot stat '${path}/vol1/tmp.lock': No such file or directory`,
            );
          }
        }
        return await exec(cmd, args, opts);
      };
      const log = recordingLogger();
      const d = await init({ exec: flaky, log });
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();
      await vols.createVolume("vol1", {});
      await writeFile(join(path, "vol1", "f.txt"), "x");
      await snaps.createSnapshot("snap1", "vol1");
      assert.equal(cpCalls, 2);
      assert.match(log.lines[0], /^warn: Copying ".*vol1" again: a file vanished during the copy/);
      const info = await snaps.getSnapshotInfo("snap1", "vol1");
      assert.deepEqual(await tree(info.FilePath), await tree(join(path, "vol1")));

      // Two failures in a row: the snapshot fails and leaves nothing behind.
      failures = 2;
      await assert.rejects(
        async () => await snaps.createSnapshot("snap2", "vol1"),
        (err: Error) => {
          assert.ok(err instanceof BackendError);
          assert.match(err.message, /^Cannot create snapshot "snap2" of volume "vol1": /);
          return true;
        },
      );
      assert.deepEqual(Object.keys(await snaps.listSnapshot({})), ["snap1"]);
      assert.deepEqual(await readdir(dirname(info.FilePath)), ["snap1"]);
    });
  });

  test("snapshot operations list, inspect and delete, and refuse unknown names", async () => {
    await withEnv(async ({ init }) => {
      const d = await init();
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();
      await vols.createVolume("vol1", {});
      await vols.createVolume("vol2", {});
      await snaps.createSnapshot("s1", "vol1");
      await snaps.createSnapshot("s2", "vol1");
      await snaps.createSnapshot("s3", "vol2");
      await assert.rejects(
        async () => await snaps.createSnapshot("s1", "vol1"),
        AlreadyExistsError,
      );
      await assert.rejects(async () => await snaps.createSnapshot("s9", "nope"), NotFoundError);

      assert.deepEqual(Object.keys(await snaps.listSnapshot({ VolumeName: "vol1" })).sort(), [
        "s1",
        "s2",
      ]);
      assert.deepEqual(Object.keys(await snaps.listSnapshot({})).sort(), ["s1", "s2", "s3"]);
      await assert.rejects(
        async () => await snaps.listSnapshot({ VolumeName: "nope" }),
        NotFoundError,
      );
      await assert.rejects(async () => await snaps.getSnapshotInfo("s3", "vol1"), (err: Error) => {
        assert.ok(err instanceof NotFoundError);
        assert.equal(
          err.message,
          'Cannot inspect snapshot "s3" of volume "vol1": snapshot does not exist',
        );
        return true;
      });

      const path = (await snaps.getSnapshotInfo("s1", "vol1")).FilePath;
      await snaps.deleteSnapshot("s1", "vol1");
      await assert.rejects(() => stat(path), { code: "ENOENT" });
      await assert.rejects(async () => await snaps.getSnapshotInfo("s1", "vol1"), NotFoundError);
      await assert.rejects(async () => await snaps.deleteSnapshot("s1", "vol1"), NotFoundError);
      assert.deepEqual(Object.keys(await snaps.listSnapshot({})).sort(), ["s2", "s3"]);
    });
  });

  test("a new driver instance on the same root sees the volumes and snapshots", async () => {
    await withEnv(async ({ path, init }) => {
      const first = await init();
      await (await first.volumeOps()).createVolume("vol1", { PrepareForVM: "1", Size: "1M" });
      await (await first.snapshotOps()).createSnapshot("snap1", "vol1");
      const infoBefore = await (await first.volumeOps()).getVolumeInfo("vol1");

      const second = await init({ config: {} });
      assert.equal((await second.info()).Path, path);
      assert.deepEqual(await (await second.volumeOps()).getVolumeInfo("vol1"), infoBefore);
      assert.deepEqual(
        Object.keys(await (await second.snapshotOps()).listSnapshot({ VolumeName: "vol1" })),
        ["snap1"],
      );
    });
  });

  test("local state of a volume deleted and re-created on another host is discarded", async () => {
    await withEnv(async ({ dir, init }) => {
      const a = await init();
      const b = await init({ root: join(dir, "host-b", "vfs") });
      await (await a.volumeOps()).createVolume("vol1", {});
      await (await a.snapshotOps()).createSnapshot("snap1", "vol1");
      await (await b.volumeOps()).deleteVolume("vol1", {});
      // CreatedTime has one-second resolution.
      await new Promise((r) => setTimeout(r, 1100));
      await (await b.volumeOps()).createVolume("vol1", {});
      assert.deepEqual(await (await a.snapshotOps()).listSnapshot({ VolumeName: "vol1" }), {});
      await (await a.snapshotOps()).createSnapshot("snap1", "vol1");
    });
  });
});

describe("vfs driver: configuration", () => {
  test("a second init keeps the saved vfs.cfg and warns about each conflicting option", async () => {
    await withEnv(async ({ dir, path, root, init }) => {
      await init();
      const log = recordingLogger();
      const other = join(dir, "elsewhere");
      const d = await init({
        log,
        config: { "vfs.path": other, "vfs.defaultvolumesize": "5G" },
      });
      assert.equal((await d.info()).Path, path);
      assert.equal(
        log.lines[0],
        `warn: Ignoring --driver-opts vfs.path="${other}": the saved configuration in "${
          join(root, "vfs.cfg")
        }" uses "${path}"`,
      );
      assert.match(log.lines[1], /^warn: Ignoring --driver-opts vfs\.defaultvolumesize="5G"/);
      assert.equal(log.lines.length, 2);
      await assert.rejects(() => stat(other), { code: "ENOENT" });

      // The same options again: no warning.
      const quiet = recordingLogger();
      await init({ log: quiet, config: { "vfs.path": path + "/" } });
      assert.deepEqual(quiet.lines, []);
    });
  });

  test("the first init rejects a bad vfs.defaultvolumesize", async () => {
    await withEnv(async ({ path, init }) => {
      await assert.rejects(
        async () => await init({ config: { "vfs.path": path, "vfs.defaultvolumesize": "huge" } }),
        (err: Error) => {
          assert.ok(err instanceof InvalidArgumentError);
          assert.match(err.message, /"vfs\.defaultvolumesize"/);
          return true;
        },
      );
    });
  });

  test("an old Convoy volume record and snapshot tarball are adopted", async () => {
    await withEnv(async ({ path, root, init }) => {
      await init();
      // What Convoy v0.5.2 left: a record with the (shared) MountPoint and a local tarball.
      const dir = join(path, "legacy");
      await mkdir(dir);
      await writeFile(join(dir, "f.txt"), "old");
      const tarball = join(root, "snapshots", "legacy_snap1.tar.gz");
      await exec("tar", ["-czf", tarball, "-C", dir, "."]);
      await writeFile(
        join(path, "config", "vfs_volume_legacy.json"),
        JSON.stringify({
          Name: "legacy",
          Size: 0,
          Path: dir,
          MountPoint: dir,
          PrepareForVM: false,
          CreatedTime: "Mon Jan 02 15:04:05 +0000 2017",
          Snapshots: {
            snap1: {
              Name: "snap1",
              CreatedTime: "Mon Jan 02 16:04:05 +0000 2017",
              VolumeUUID: "legacy",
              FilePath: tarball,
            },
          },
        }) + "\n",
      );
      const d = await init();
      const info = await (await d.volumeOps()).getVolumeInfo("legacy");
      assert.equal(info.MountPoint, "");
      assert.equal(info.VolumeCreatedAt, "Mon Jan 02 15:04:05 +0000 2017");
      const snaps = await d.snapshotOps();
      assert.deepEqual(await snaps.getSnapshotInfo("snap1", "legacy"), {
        SnapshotName: "snap1",
        SnapshotCreatedAt: "Mon Jan 02 16:04:05 +0000 2017",
        VolumeUUID: "legacy",
        FilePath: tarball,
      });
      await snaps.createSnapshot("snap2", "legacy");
      assert.deepEqual(Object.keys(await snaps.listSnapshot({ VolumeName: "legacy" })).sort(), [
        "snap1",
        "snap2",
      ]);
      await (await d.volumeOps()).deleteVolume("legacy", {});
      await assert.rejects(() => stat(tarball), { code: "ENOENT" });
    });
  });
});

describe("vfs driver: backups", () => {
  /** A driver with the real backup store api and a vfs:// destination in the temp dir. */
  async function backupEnv(env: Env) {
    const backup = createBackupStoreApi({ log: silentLogger });
    const d = await env.init({ backup });
    const store = join(env.dir, "backupstore");
    await mkdir(store, { recursive: true });
    return {
      backup,
      dest: `vfs://${store}`,
      store,
      vols: await d.volumeOps(),
      snaps: await d.snapshotOps(),
      backups: await d.backupOps(),
    };
  }

  test("createBackup() then a restore into a new volume gives identical files", async () => {
    await withEnv(async (env) => {
      const { dest, vols, snaps, backups } = await backupEnv(env);
      assert.equal(backups.name(), "vfs");
      await vols.createVolume("vol1", {});
      const dir = join(env.path, "vol1");
      await mkdir(join(dir, "nested", "deeper"), { recursive: true });
      await writeFile(join(dir, "top.txt"), "top");
      await writeFile(join(dir, "nested", "deeper", "secret"), "s3cret");
      await chmod(join(dir, "nested", "deeper", "secret"), 0o600);
      await chmod(join(dir, "nested"), 0o750);
      await symlink("nested/deeper/secret", join(dir, "link"));
      await writeFile(join(dir, "owned"), "by 1234");
      await chown(join(dir, "owned"), 1234, 2345);
      const expected = await tree(dir);
      await snaps.createSnapshot("snap1", "vol1");
      await writeFile(join(dir, "after-snapshot.txt"), "not in the backup");

      const url = await backups.createBackup("snap1", "vol1", dest, {});
      assert.match(url, new RegExp(`^${dest}\\?backup=backup-[0-9a-f]+&volume=vol1$`));
      assert.deepEqual(await readdir(join(env.root, "tmp")), []);

      const info = await backups.getBackupInfo(url, {});
      assert.equal(info.DriverName, "vfs");
      assert.equal(info.VolumeName, "vol1");
      assert.equal(info.SnapshotName, "snap1");
      assert.equal(info.VolumeSize, "0");
      assert.equal(info.VolumeCreatedAt, (await vols.getVolumeInfo("vol1")).VolumeCreatedAt);
      assert.equal(
        info.SnapshotCreatedAt,
        (await snaps.getSnapshotInfo("snap1", "vol1")).SnapshotCreatedAt,
      );
      assert.deepEqual(Object.keys(await backups.listBackup(dest, {})), [url]);
      assert.deepEqual(Object.keys(await backups.listBackup(dest, { VolumeName: "vol1" })), [url]);

      // As Convoy's test: delete the original, then restore under a new name.
      await snaps.deleteSnapshot("snap1", "vol1");
      await vols.deleteVolume("vol1", {});
      await vols.createVolume("res-vol1", { BackupURL: url });
      const restored = join(env.path, "res-vol1");
      assert.deepEqual(await tree(restored), expected);
      const owned = await stat(join(restored, "owned"));
      assert.deepEqual([owned.uid, owned.gid], [1234, 2345]);
      assert.equal((await vols.getVolumeInfo("res-vol1")).Size, "0");
      assert.deepEqual(await readdir(join(env.root, "tmp")), []);
      assert.deepEqual((await readdir(env.path)).sort(), ["config", "res-vol1"]);

      await backups.deleteBackup(url, {});
      assert.deepEqual(await backups.listBackup(dest, {}), {});
      await assert.rejects(async () => await backups.getBackupInfo(url, {}), NotFoundError);
    });
  });

  test("createVolume() refuses a backup made by another driver", async () => {
    await withEnv(async (env) => {
      const { backup, dest, vols, backups } = await backupEnv(env);
      const archive = join(env.dir, "dm.img");
      await writeFile(archive, "not a vfs archive");
      const url = await backup.createSingleFileBackup(archive, {
        volume: { name: "dmvol", driver: "devicemapper", size: 1048576, createdTime: "x" },
        snapshot: { name: "dmsnap", createdTime: "y" },
        destURL: dest,
      });
      await assert.rejects(
        async () => await vols.createVolume("res1", { BackupURL: url }),
        (err: Error) => {
          assert.ok(err instanceof InvalidArgumentError);
          assert.equal(
            err.message,
            `Cannot restore backup "${url}" into a vfs volume: it was made by driver "devicemapper"`,
          );
          return true;
        },
      );
      assert.deepEqual(await vols.listVolume({}), {});
      assert.deepEqual(await readdir(env.path), ["config"]);
      // The vfs driver neither lists, inspects nor deletes it.
      assert.deepEqual(await backups.listBackup(dest, {}), {});
      await assert.rejects(async () => await backups.getBackupInfo(url, {}), InvalidArgumentError);
      await assert.rejects(async () => await backups.deleteBackup(url, {}), InvalidArgumentError);
      assert.equal((await backup.getBackupInfo(url)).DriverName, "devicemapper");
    });
  });

  test("a failed restore leaves no volume, record or temporary file", async () => {
    await withEnv(async (env) => {
      const { dest, store, vols, snaps, backups } = await backupEnv(env);
      await vols.createVolume("vol1", {});
      await writeFile(join(env.path, "vol1", "f.txt"), "data");
      await snaps.createSnapshot("snap1", "vol1");
      const url = await backups.createBackup("snap1", "vol1", dest, {});
      const bak = (await filesBelow(store)).filter((f) => f.endsWith(".bak"));
      assert.equal(bak.length, 1);
      await writeFile(join(store, bak[0]), "this is not a tar archive");

      await assert.rejects(
        async () => await vols.createVolume("res1", { BackupURL: url }),
        (err: Error) => {
          assert.ok(err instanceof BackendError);
          assert.match(err.message, /^Cannot restore backup ".*" into volume "res1": /);
          return true;
        },
      );
      await assert.rejects(async () => await vols.getVolumeInfo("res1"), NotFoundError);
      assert.deepEqual((await readdir(env.path)).sort(), ["config", "vol1"]);
      assert.deepEqual(await readdir(join(env.path, "config")), ["vfs_volume_vol1.json"]);
      assert.deepEqual(await readdir(join(env.root, "tmp")), []);

      // A backup URL that names nothing fails the same clean way.
      const missing = url.replace(/backup=backup-[0-9a-f]+/, "backup=backup-0000000000000000");
      await assert.rejects(
        async () => await vols.createVolume("res2", { BackupURL: missing }),
        NotFoundError,
      );
      assert.deepEqual((await readdir(env.path)).sort(), ["config", "vol1"]);
    });
  });

  test("a restore into an existing non-empty directory is refused and keeps its files", async () => {
    await withEnv(async (env) => {
      const { dest, vols, snaps, backups } = await backupEnv(env);
      await vols.createVolume("vol1", {});
      await snaps.createSnapshot("snap1", "vol1");
      const url = await backups.createBackup("snap1", "vol1", dest, {});
      await mkdir(join(env.path, "busy"));
      await writeFile(join(env.path, "busy", "mine.txt"), "mine");
      await assert.rejects(
        async () => await vols.createVolume("busy", { BackupURL: url }),
        ConflictError,
      );
      assert.equal(await readFile(join(env.path, "busy", "mine.txt"), "utf8"), "mine");
      // An empty directory is fine.
      await mkdir(join(env.path, "empty"));
      await vols.createVolume("empty", { BackupURL: url });
    });
  });

  test("createBackup() refuses an unknown snapshot or volume", async () => {
    await withEnv(async (env) => {
      const { dest, vols, backups } = await backupEnv(env);
      await vols.createVolume("vol1", {});
      await assert.rejects(
        async () => await backups.createBackup("nosnap", "vol1", dest, {}),
        (err: Error) => {
          assert.ok(err instanceof NotFoundError);
          assert.equal(
            err.message,
            'Cannot back up snapshot "nosnap" of volume "vol1": snapshot does not exist',
          );
          return true;
        },
      );
      await assert.rejects(
        async () => await backups.createBackup("nosnap", "novol", dest, {}),
        NotFoundError,
      );
    });
  });

  test("an old Convoy snapshot tarball is backed up as is and restores", async () => {
    await withEnv(async (env) => {
      const first = await backupEnv(env);
      await first.vols.createVolume("legacy", {});
      const dir = join(env.path, "legacy");
      await mkdir(join(dir, "sub"));
      await writeFile(join(dir, "sub", "f.txt"), "old data");
      const expected = await tree(dir);
      const tarball = join(env.root, "snapshots", "legacy_old1.tar.gz");
      await exec("tar", ["-czf", tarball, "-C", dir, "."]);
      const recordFile = join(env.path, "config", "vfs_volume_legacy.json");
      const record = JSON.parse(await readFile(recordFile, "utf8"));
      record.Snapshots = { old1: { Name: "old1", CreatedTime: "t", FilePath: tarball } };
      await writeFile(recordFile, JSON.stringify(record));

      const { dest, vols, backups } = await backupEnv(env);
      const url = await backups.createBackup("old1", "legacy", dest, {});
      await vols.createVolume("res-legacy", { BackupURL: url });
      assert.deepEqual(await tree(join(env.path, "res-legacy")), expected);
      assert.ok((await stat(tarball)).isFile(), "the snapshot tarball is kept");
    });
  });
});
