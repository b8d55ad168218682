import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, open, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { BackendError, ConflictError, TimeoutError } from "../../api/errors.ts";
import type { BlockFilesystems, MountEntry, PluginMounts } from "../../api/plugin.ts";
import { errno, readFull } from "../../util/fs.ts";
import { createMounting } from "./mounting.ts";
import { recordingLogger, withTempDir } from "../testing.ts";

/** A mount table in memory, and filesystems that mount into it; `calls` lists what ran. */
function fakeHost(entries: MountEntry[] = []) {
  const calls: string[] = [];
  const mounts: PluginMounts = {
    list: () => Promise.resolve([...entries]),
    mountAt: (path) => Promise.resolve(entries.findLast((e) => e.mountPoint === path)),
    mountsOf: (device) =>
      Promise.resolve(entries.filter((e) => e.source === device).map((e) => e.mountPoint)),
    isMountPoint: (path) => Promise.resolve(entries.some((e) => e.mountPoint === path)),
    canonicalPath: (path) => Promise.resolve(path),
    parseMountInfo: () => [],
  };
  const filesystems: BlockFilesystems = {
    mkfs: () => Promise.reject(new Error("not used")),
    detect: () => Promise.resolve(""),
    mount(device, mountPoint, opts) {
      calls.push(`mount ${device} ${mountPoint} ${opts?.fs ?? ""}`);
      entries.push({ mountPoint, source: device, fstype: opts?.fs ?? "" });
      return Promise.resolve();
    },
    umount(mountPoint) {
      calls.push(`umount ${mountPoint}`);
      const i = entries.findIndex((e) => e.mountPoint === mountPoint);
      if (i >= 0) entries.splice(i, 1);
      return Promise.resolve();
    },
  };
  return { calls, entries, mounts, filesystems };
}

describe("block framework: mounts", () => {
  it("errno() and readFull() (zeros past the end of the file)", async () => {
    assert.equal(errno(Object.assign(new Error("x"), { code: "ENOENT" })), "ENOENT");
    assert.equal(errno(new Error("x")), undefined);
    assert.equal(errno(null), undefined);
    await withTempDir(async (dir) => {
      await writeFile(join(dir, "f"), "abcdef");
      const fh = await open(join(dir, "f"), "r");
      try {
        const buf = new Uint8Array(4).fill(9);
        assert.equal(await readFull(fh, { buf, pos: 4 }), 2);
        assert.deepEqual([...buf], [101, 102, 0, 0]);
        assert.equal(await readFull(fh, { buf, pos: 0 }), 4);
        assert.equal(new TextDecoder().decode(buf), "abcd");
      } finally {
        await fh.close();
      }
    });
  });

  it("mountBlockVolume() mounts at the default mount point, records it, and undoes the mount when recording fails", async () => {
    await withTempDir(async (dir) => {
      const host = fakeHost();
      const { mountBlockVolume } = createMounting(host);
      const log = recordingLogger();
      const saved: string[] = [];
      const spec = {
        current: "",
        wanted: "",
        defaultMountPoint: join(dir, "v1"),
        fs: "ext4",
        activate: () =>
          Promise.resolve({
            path: "/dev/loop7",
            isMountOf: (e: MountEntry) => e.source === "/dev/loop7",
          }),
        save: (mp: string) => Promise.resolve(void saved.push(mp)),
        log,
      };
      assert.equal(await mountBlockVolume("v1", spec), join(dir, "v1"));
      assert.ok((await stat(join(dir, "v1"))).isDirectory());
      assert.deepEqual(host.calls, [`mount /dev/loop7 ${join(dir, "v1")} ext4`]);
      assert.deepEqual(saved, [join(dir, "v1")]);
      assert.deepEqual(log.lines.at(-1), ["info", `Mounted volume "v1" at "${join(dir, "v1")}"`, {
        volume: "v1",
        device: "/dev/loop7",
        mountpoint: join(dir, "v1"),
      }]);

      // Mounted: the recorded mount point, nothing mounted again; another one is a conflict.
      const mounted = { ...spec, current: join(dir, "v1") };
      assert.equal(await mountBlockVolume("v1", mounted), join(dir, "v1"));
      assert.equal(host.calls.length, 1);
      await assert.rejects(
        mountBlockVolume("v1", { ...mounted, wanted: join(dir, "other") }),
        (e) =>
          e instanceof ConflictError &&
          e.message ===
            `Cannot mount volume "v1" at "${join(dir, "other")}": volume is already mounted at "${
              join(dir, "v1")
            }"`,
      );

      // The device mounted elsewhere, or the mount point taken by another device: conflicts.
      await assert.rejects(
        mountBlockVolume("v1", { ...spec, wanted: join(dir, "x") }),
        (e) =>
          e instanceof ConflictError &&
          e.message.endsWith(`its device "/dev/loop7" is mounted at "${join(dir, "v1")}"`),
      );
      await assert.rejects(
        mountBlockVolume("v2", {
          ...spec,
          defaultMountPoint: join(dir, "v1"),
          activate: () =>
            Promise.resolve({
              path: "/dev/loop8",
              isMountOf: (e: MountEntry) => e.source === "/dev/loop8",
            }),
        }),
        (e) => e instanceof ConflictError && e.message.endsWith("is already a mount point"),
      );

      // A failed save unmounts again and is wrapped with the mount's context.
      host.entries.length = 0;
      await assert.rejects(
        mountBlockVolume("v1", { ...spec, save: () => Promise.reject(new Error("disk full")) }),
        (e) =>
          e instanceof BackendError &&
          e.message === `Cannot mount volume "v1" at "${join(dir, "v1")}": disk full`,
      );
      assert.deepEqual(host.calls.slice(-1), [`umount ${join(dir, "v1")}`]);
      assert.equal(host.entries.length, 0);
    });
  });

  it("mountBlockVolume() asks the device whether a mount is its own; activation failures get the mount's context", async () => {
    await withTempDir(async (dir) => {
      const mp = join(dir, "v1");
      const host = fakeHost([{ mountPoint: mp, source: "/dev/dm-3", fstype: "xfs" }]);
      const { mountBlockVolume } = createMounting(host);
      const spec = {
        current: "",
        wanted: mp,
        defaultMountPoint: join(dir, "default"),
        fs: "xfs",
        activate: () =>
          Promise.resolve({
            path: "/dev/mapper/v1",
            isMountOf: (e: MountEntry) => e.source === "/dev/dm-3",
          }),
        save: () => Promise.resolve(),
        log: recordingLogger(),
      };
      // /dev/dm-3 is /dev/mapper/v1: mounted already, so only recorded.
      assert.equal(await mountBlockVolume("v1", spec), mp);
      assert.deepEqual(host.calls, []);
      const timeout = new TimeoutError("dmsetup timed out");
      await assert.rejects(
        mountBlockVolume("v1", { ...spec, activate: () => Promise.reject(timeout) }),
        (e) => e === timeout,
      );
      await assert.rejects(
        mountBlockVolume("v1", { ...spec, activate: () => Promise.reject(new Error("no pool")) }),
        (e) =>
          e instanceof BackendError &&
          e.message === `Cannot mount volume "v1" at "${mp}": no pool`,
      );
    });
  });

  it("umountBlockVolume() unmounts only the volume's own mount, removes the default folder and records it", async () => {
    await withTempDir(async (dir) => {
      const mp = join(dir, "v1");
      const host = fakeHost([{ mountPoint: mp, source: "/dev/loop9", fstype: "ext4" }]);
      const { umountBlockVolume } = createMounting(host);
      const log = recordingLogger();
      let saves = 0;
      const spec = {
        mountPoint: mp,
        defaultMountPoint: mp,
        isMountOf: (e: MountEntry) => e.source === "/dev/loop7",
        save: () => Promise.resolve(void saves++),
        log,
      };
      await mkdir(mp);
      await umountBlockVolume("v1", { ...spec, mountPoint: "" });
      assert.equal(saves, 0);

      await umountBlockVolume("v1", spec);
      assert.deepEqual(host.calls, []);
      assert.deepEqual(log.lines[0], [
        "warn",
        `Not unmounting "${mp}": it is a mount of "/dev/loop9", not of volume "v1"`,
        { volume: "v1" },
      ]);
      assert.equal(saves, 1);

      await assert.rejects(stat(mp), { code: "ENOENT" });
      host.entries[0].source = "/dev/loop7";
      await umountBlockVolume("v1", spec);
      assert.deepEqual(host.calls, [`umount ${mp}`]);
      assert.equal(saves, 2);
      assert.deepEqual(log.lines.at(-1), ["info", 'Unmounted volume "v1"', {
        volume: "v1",
        mountpoint: mp,
      }]);

      await assert.rejects(
        umountBlockVolume("v1", { ...spec, save: () => Promise.reject(new Error("disk full")) }),
        { message: `Cannot unmount volume "v1" from "${mp}": disk full` },
      );
    });
  });
});
