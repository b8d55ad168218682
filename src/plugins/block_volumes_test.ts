import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, open, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { BackendError, ConflictError, NotFoundError, TimeoutError } from "../api/errors.ts";
import type {
  BackupStoreApi,
  BlockFilesystems,
  DeltaBackupOptions,
  MountEntry,
  PluginMounts,
} from "../api/plugin.ts";
import type { DeltaBlockOperations } from "../api/driver.ts";
import { KeyedMutex } from "../util/keyed_mutex.ts";
import { UseCounter } from "../util/use_counter.ts";
import {
  createBlockVolumeHelpers,
  deleteSnapshot,
  errno,
  mustSnapshot,
  randomId,
  readFull,
} from "./block_volumes.ts";
import { createRecordStore } from "./driver_util.ts";
import { recordingLogger, withTempDir } from "./testing.ts";

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

const noBackup = {} as BackupStoreApi;

/** Volume records in `dir`: a Name and `fields`. */
function volumeRecords<F extends z.ZodRawShape>(dir: string, fields: F) {
  return createRecordStore({
    dir,
    prefix: "",
    schema: z.object({ Name: z.string(), ...fields }),
    nameField: "Name",
    kind: "volume",
    log: recordingLogger(),
  });
}

describe("plugin api: block volume helpers", () => {
  it("errno(), randomId() and readFull() (zeros past the end of the file)", async () => {
    assert.equal(errno(Object.assign(new Error("x"), { code: "ENOENT" })), "ENOENT");
    assert.equal(errno(new Error("x")), undefined);
    assert.equal(errno(null), undefined);
    assert.match(randomId(), /^[0-9a-f]{12}$/);
    assert.notEqual(randomId(), randomId());
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

  it("mustSnapshot() gives the record and its snapshot; NotFoundError names what is missing", async () => {
    await withTempDir(async (dir) => {
      const records = volumeRecords(dir, {
        Snapshots: z.record(z.string(), z.object({ Name: z.string() })),
      });
      await records.write("v1", { Name: "v1", Snapshots: { s1: { Name: "s1" } } });
      const found = await mustSnapshot(records, "s1", { volume: "v1", what: "inspect" });
      assert.equal(found.record.Name, "v1");
      assert.deepEqual(found.snapshot, { Name: "s1" });
      await assert.rejects(
        mustSnapshot(records, "s2", { volume: "v1", what: "inspect" }),
        (e) =>
          e instanceof NotFoundError &&
          e.message === 'Cannot inspect snapshot "s2" of volume "v1": snapshot does not exist',
      );
      await assert.rejects(
        mustSnapshot(records, "s1", { volume: "v2", what: "back up" }),
        (e) =>
          e instanceof NotFoundError &&
          e.message === 'Cannot back up snapshot "s1" of volume "v2": volume does not exist',
      );
    });
  });

  it("mountBlockVolume() mounts at the default mount point, records it, and undoes the mount when recording fails", async () => {
    await withTempDir(async (dir) => {
      const host = fakeHost();
      const { mountBlockVolume } = createBlockVolumeHelpers({ ...host, backup: noBackup });
      const log = recordingLogger();
      const saved: string[] = [];
      const spec = {
        current: "",
        wanted: "",
        defaultMountPoint: join(dir, "v1"),
        fs: "ext4",
        activate: () => Promise.resolve({ path: "/dev/loop7" }),
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
          activate: () => Promise.resolve({ path: "/dev/loop8" }),
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

  it("mountBlockVolume() asks the device which mounts are its own, and uses the driver's wrap", async () => {
    await withTempDir(async (dir) => {
      const mp = join(dir, "v1");
      const host = fakeHost([{ mountPoint: mp, source: "/dev/dm-3", fstype: "xfs" }]);
      const { mountBlockVolume } = createBlockVolumeHelpers({ ...host, backup: noBackup });
      const spec = {
        current: "",
        wanted: mp,
        defaultMountPoint: join(dir, "default"),
        fs: "xfs",
        activate: () =>
          Promise.resolve({
            path: "/dev/mapper/v1",
            mountsOf: () => Promise.resolve([mp]),
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
        mountBlockVolume("v1", {
          ...spec,
          activate: () => Promise.reject(timeout),
          wrap: (err, prefix) => new Error(`${prefix}: ${(err as Error).message}`),
        }),
        { message: `Cannot mount volume "v1" at "${mp}": dmsetup timed out` },
      );
      await assert.rejects(
        mountBlockVolume("v1", { ...spec, activate: () => Promise.reject(timeout) }),
        (e) => e === timeout,
      );
    });
  });

  it("umountBlockVolume() unmounts only the volume's own mount, removes the default folder and records it", async () => {
    await withTempDir(async (dir) => {
      const mp = join(dir, "v1");
      const host = fakeHost([{ mountPoint: mp, source: "/dev/loop9", fstype: "ext4" }]);
      const { umountBlockVolume } = createBlockVolumeHelpers({ ...host, backup: noBackup });
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

  it("backUpSnapshot() pins the snapshot, closes the session before releasing it, and wraps a failure", async () => {
    await withTempDir(async (dir) => {
      const records = volumeRecords(dir, {
        Size: z.number(),
        CreatedTime: z.string(),
        UUID: z.string().optional(),
        Snapshots: z.record(z.string(), z.object({ CreatedTime: z.string() })),
      });
      await records.write("v1", {
        Name: "v1",
        Size: 4096,
        CreatedTime: "t0",
        UUID: "u1",
        Snapshots: { s1: { CreatedTime: "t1" } },
      });
      const events: string[] = [];
      const inUse = new UseCounter();
      const store: { fail?: Error } = {};
      const backup = {
        createDeltaBackup(_ops: DeltaBlockOperations, opts: DeltaBackupOptions) {
          events.push(`backup ${JSON.stringify(opts)} pinned=${inUse.inUse("v1", "s1")}`);
          return store.fail ? Promise.reject(store.fail) : Promise.resolve("vfs:///b?backup=1");
        },
      } as unknown as BackupStoreApi;
      const { backUpSnapshot } = createBlockVolumeHelpers({ ...fakeHost(), backup });
      const log = recordingLogger();
      const spec = {
        driver: "loop",
        records,
        locks: new KeyedMutex(),
        inUse,
        session: () => ({
          ops: {} as DeltaBlockOperations,
          close: () => Promise.resolve(void events.push(`close pinned=${inUse.inUse("v1", "s1")}`)),
        }),
        log,
      };
      const req = {
        snapshotID: "s1",
        volumeID: "v1",
        destURL: "vfs:///b",
        opts: { Compression: "zstd" },
      };
      assert.equal(await backUpSnapshot(req, spec), "vfs:///b?backup=1");
      assert.deepEqual(events, [
        "backup " + JSON.stringify({
          volume: { name: "v1", driver: "loop", size: 4096, createdTime: "t0", uuid: "u1" },
          snapshot: { name: "s1", createdTime: "t1" },
          destURL: "vfs:///b",
          compression: "zstd",
        }) + " pinned=true",
        "close pinned=true",
      ]);
      assert.equal(inUse.inUse("v1", "s1"), false);
      assert.deepEqual(log.lines.at(-1), ["info", 'Backed up snapshot "s1" of volume "v1"', {
        volume: "v1",
        snapshot: "s1",
        dest_url: "vfs:///b",
        backup_url: "vfs:///b?backup=1",
      }]);

      store.fail = new Error("store unreachable");
      await assert.rejects(
        backUpSnapshot(req, spec),
        (e) =>
          e instanceof BackendError &&
          e.message === 'Cannot back up snapshot "s1" of volume "v1": store unreachable',
      );
      assert.equal(events.at(-1), "close pinned=true");
      assert.equal(inUse.inUse("v1", "s1"), false);
      await assert.rejects(
        backUpSnapshot({ ...req, snapshotID: "s9" }, spec),
        { message: 'Cannot back up snapshot "s9" of volume "v1": snapshot does not exist' },
      );
    });
  });

  it("deleteSnapshot() refuses a missing or pinned snapshot, removes it under the lock and logs it", async () => {
    await withTempDir(async (dir) => {
      const records = volumeRecords(dir, {
        Snapshots: z.record(z.string(), z.object({ DevID: z.number() })),
      });
      await records.write("v1", { Name: "v1", Snapshots: { s1: { DevID: 3 }, s2: { DevID: 4 } } });
      const inUse = new UseCounter();
      const log = recordingLogger();
      const removed: unknown[] = [];
      const spec = {
        records,
        locks: new KeyedMutex(),
        inUse,
        log,
        remove: async (found: { volume: string; snap: string; unrecorded: unknown }) => {
          removed.push([found.volume, found.snap]);
          await records.write("v1", found.unrecorded);
        },
        logFields: (s: { DevID: number }) => ({ devID: s.DevID }),
      };
      await assert.rejects(
        deleteSnapshot({ id: "s9", volumeID: "v1" }, spec),
        (e) =>
          e instanceof NotFoundError &&
          e.message === 'Cannot delete snapshot "s9" of volume "v1": snapshot does not exist',
      );
      await assert.rejects(
        deleteSnapshot({ id: "s1", volumeID: "v2" }, spec),
        { message: 'Cannot delete snapshot "s1" of volume "v2": snapshot does not exist' },
      );
      const release = inUse.use("v1", "s1");
      await assert.rejects(
        deleteSnapshot({ id: "s1", volumeID: "v1" }, spec),
        (e) =>
          e instanceof ConflictError &&
          e.message === 'Cannot delete snapshot "s1" of volume "v1": snapshot is being backed up',
      );
      release();
      await deleteSnapshot({ id: "s1", volumeID: "v1" }, spec);
      assert.deepEqual(removed, [["v1", "s1"]]);
      assert.deepEqual((await records.read("v1"))?.Snapshots, { s2: { DevID: 4 } });
      assert.deepEqual(log.lines.at(-1), ["info", 'Deleted snapshot "s1" of volume "v1"', {
        volume: "v1",
        snapshot: "s1",
        devID: 3,
      }]);
      await assert.rejects(
        deleteSnapshot({ id: "s2", volumeID: "v1" }, {
          ...spec,
          remove: () => Promise.reject(new Error("pool busy")),
        }),
        (e) =>
          e instanceof BackendError &&
          e.message === 'Cannot delete snapshot "s2" of volume "v1": pool busy',
      );
    });
  });
});
