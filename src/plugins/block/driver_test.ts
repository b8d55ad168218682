import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { copyFile, mkdir, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { BlockDeviceAdapter, PluginApi } from "../../../mod.ts";
import { createBackupStoreApi } from "../../backup/store_api.ts";
import { createExec } from "../../runtime/exec.ts";
import { silentLogger } from "../../util/log.ts";
import { registeredInit, withTempDir } from "../testing.ts";
import { type BlockDriver, isBlockDriver, NativeBackupRegistry } from "./driver.ts";

const exec = createExec({ timeoutMs: 120_000 });
const MiB = 1024 * 1024;
type Fields = { File: string };

/**
 * An adapter whose "devices" are regular files (mkfs and restores work on files; nothing is
 * mounted): snapshots are copies read through a range reader, no comparison ("unknown"), and a
 * native backup kind "fake://" kept in memory.
 */
function fileAdapter(api: PluginApi, calls: string[], opts: { scheme?: string } = {}) {
  const native = new Map<string, { file: string; size: number }>();
  return (name: string) =>
    api.registerBlockDevice(name, async ({ root }) => {
      const files = join(root, "files");
      await api.util.ensureDir(files);
      const { z } = api.deps;
      const adapter: BlockDeviceAdapter<Fields, Fields> = {
        capabilities: { defaultSize: 8 * MiB, dockerRemoveKeepsData: true },
        volumeFields: z.object({ File: z.string() }),
        snapshotFields: z.object({ File: z.string() }),
        async createDevice(req) {
          calls.push(`create ${req.name} ${req.restore?.native ? "native" : ""}`.trim());
          const file = join(files, `${req.name}.img`);
          if (req.restore?.native) {
            await copyFile(native.get(req.restore.url)!.file, file);
          } else {
            const fh = await open(file, "wx");
            await fh.truncate(req.size);
            await fh.close();
          }
          return { fields: { File: file }, size: req.size };
        },
        async removeDevice(vol) {
          await rm(vol.fields.File, { force: true });
        },
        activate: (vol) => {
          if (vol.name === "bad") {
            return Promise.reject(new api.errors.BackendError("the device did not attach"));
          }
          return Promise.resolve({ path: vol.fields.File });
        },
        async createSnapshot(vol, { name }) {
          const file = join(files, `${vol.name}@${name}.img`);
          await copyFile(vol.fields.File, file);
          return { fields: { File: file } };
        },
        async removeSnapshot(_vol, snap) {
          await rm(snap.fields.File, { force: true });
        },
        async openSnapshot(_vol, snap) {
          calls.push(`open ${snap.name}`);
          const fh = await open(snap.fields.File, "r");
          return {
            kind: "reader",
            read: async (offset, data) => {
              await api.util.readFull(fh, { buf: data, pos: offset });
            },
            close: async () => {
              calls.push(`close ${snap.name}`);
              await fh.close();
            },
          };
        },
        info: () => ({ Files: files }),
        nativeBackups: {
          schemes: [opts.scheme ?? "fake"],
          async create(vol, snap, dest) {
            const url = `${dest.url}/${vol.name}-${snap.name}`;
            const file = join(files, `native-${snap.name}.img`);
            await copyFile(snap.fields.File, file);
            native.set(url, { file, size: vol.size });
            return url;
          },
          size: (url) => Promise.resolve(native.get(url)!.size),
          open: (url) => {
            const n = native.get(url);
            if (!n) return Promise.reject(new api.errors.NotFoundError(`no backup "${url}"`));
            return Promise.resolve({
              size: n.size,
              mappings: [{ offset: 0, size: n.size }],
              source: { kind: "file", path: n.file },
            });
          },
          delete: (url) => Promise.resolve(void native.delete(url)),
          inspect: (url) => Promise.resolve({ BackupURL: url }),
          list: () =>
            Promise.resolve(
              Object.fromEntries([...native.keys()].map((u) => [u, { BackupURL: u }])),
            ),
        },
      };
      return adapter;
    });
}

describe("block framework", () => {
  it("backs up through a range reader, restores into a new volume, and serves a native backup kind", async () => {
    await withTempDir(async (dir) => {
      const calls: string[] = [];
      const backup = createBackupStoreApi({ log: silentLogger });
      const init = registeredInit((api) => fileAdapter(api, calls)("filedev"), "filedev", {
        exec,
        backup,
      });
      const d = await init(join(dir, "root"), {});
      assert.ok(isBlockDriver(d));
      assert.equal(d.capabilities?.dockerRemoveKeepsData, true);
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();
      const backups = await d.backupOps();

      await vols.createVolume("v1", {});
      const info = await vols.getVolumeInfo("v1");
      assert.equal(info.Size, String(8 * MiB));
      assert.equal(info.Filesystem, "ext4", "the host made a filesystem on the new device");
      // Data of our own at 4 MiB, past the filesystem's first blocks.
      const image = join(dir, "root", "state", "..", "files", "v1.img");
      const fh = await open(image, "r+");
      await fh.write(new Uint8Array(MiB).fill(9), 0, MiB, 4 * MiB);
      await fh.close();
      await snaps.createSnapshot("s1", "v1");

      const store = join(dir, "store");
      await mkdir(store);
      const url = await (d as BlockDriver).block.backUp("s1", "v1", {
        destURL: `vfs://${store}`,
      });
      assert.deepEqual(calls.filter((c) => /^(open|close)/.test(c)), ["open s1", "close s1"]);
      assert.equal((await backups.getBackupInfo(url, {})).DriverName, "filedev");

      await vols.createVolume("v2", { BackupURL: url });
      const restored = join(dir, "root", "files", "v2.img");
      assert.deepEqual(await readFile(restored), await readFile(image));
      assert.equal((await vols.getVolumeInfo("v2")).Filesystem, "ext4");

      // A destination of the adapter's own kind goes to nativeBackups.
      const nurl = await backups.createBackup("s1", "v1", "fake://region", {});
      assert.equal(nurl, "fake://region/v1-s1");
      assert.deepEqual(await backups.getBackupInfo(nurl, {}), { BackupURL: nurl });
      assert.deepEqual(Object.keys(await backups.listBackup("fake://region", {})), [nurl]);
      await vols.createVolume("v3", { BackupURL: nurl });
      assert.ok(calls.includes("create v3 native"));
      assert.deepEqual(await readFile(join(dir, "root", "files", "v3.img")), await readFile(image));
      await backups.deleteBackup(nurl, {});
      assert.deepEqual(await backups.listBackup("fake://region", {}), {});

      // Deleting a snapshot removes its copy; deleting the volumes leaves none.
      await snaps.deleteSnapshot("s1", "v1");
      await assert.rejects(stat(join(dir, "root", "files", "v1@s1.img")), { code: "ENOENT" });
      for (const v of ["v1", "v2", "v3"]) await vols.deleteVolume(v, {});
      assert.deepEqual(await vols.listVolume({}), {});
      await backups.deleteBackup(url, {});
    });
  });

  it("restores another block driver's native backup through its open(), and refuses one without", async () => {
    await withTempDir(async (dir) => {
      const backup = createBackupStoreApi({ log: silentLogger });
      const natives = new NativeBackupRegistry();
      const a = await registeredInit((api) => fileAdapter(api, [])("filea"), "filea", {
        exec,
        backup,
        natives,
      })(join(dir, "a"), {});
      const calls: string[] = [];
      const b = await registeredInit(
        (api) => fileAdapter(api, calls, { scheme: "other" })("fileb"),
        "fileb",
        { exec, backup, natives },
      )(join(dir, "b"), {});
      const av = await a.volumeOps();
      await av.createVolume("v1", {});
      const image = join(dir, "a", "files", "v1.img");
      const fh = await open(image, "r+");
      await fh.write(new Uint8Array(MiB).fill(7), 0, MiB, 5 * MiB);
      await fh.close();
      await (await a.snapshotOps()).createSnapshot("s1", "v1");
      const url = await (await a.backupOps()).createBackup("s1", "v1", "fake://r", {});

      const bv = await b.volumeOps();
      await bv.createVolume("w1", { BackupURL: url });
      assert.ok(calls.includes("create w1"), "not a native restore of fileb's own");
      assert.deepEqual(await readFile(join(dir, "b", "files", "w1.img")), await readFile(image));
      assert.equal((await bv.getVolumeInfo("w1")).Filesystem, "ext4");

      natives.add("nodev", ["noopen"], undefined);
      await assert.rejects(
        async () => await bv.createVolume("w2", { BackupURL: "noopen://r/x" }),
        /backups of driver "nodev" restore only into nodev volumes/,
      );
      await assert.rejects(
        async () => await bv.createVolume("w3", { BackupURL: "fake://r/none" }),
        { name: "NotFoundError", message: /no backup "fake:\/\/r\/none"/ },
      );
      assert.deepEqual(Object.keys(await bv.listVolume({})), ["w1"]);
      await a.shutdown?.();
      await assert.rejects(
        async () => await bv.createVolume("w4", { BackupURL: url }),
        /Invalid backup URL/,
        "a driver that stopped no longer serves its backups",
      );
    });
  });

  it("a create that fails after making the device removes it and leaves no record", async () => {
    await withTempDir(async (dir) => {
      const backup = createBackupStoreApi({ log: silentLogger });
      const init = registeredInit((api) => fileAdapter(api, [])("filedev"), "filedev", {
        exec,
        backup,
      });
      const d = await init(join(dir, "root"), {});
      const vols = await d.volumeOps();
      await assert.rejects(async () => await vols.createVolume("bad", {}), {
        name: "BackendError",
        message: 'Cannot create volume "bad": the device did not attach',
      });
      assert.deepEqual(await vols.listVolume({}), {});
      await assert.rejects(stat(join(dir, "root", "files", "bad.img")), { code: "ENOENT" });
    });
  });
  it("journaling hooks run around every record change; an adopted device brings back its identity and snapshots", async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, "root");
      /** What each hook saw: the call and whether the record held the object then. */
      const seen: string[] = [];
      const recordFile = (name: string) => join(root, `jdev_volume_${name}.json`);
      const recorded = async (name: string) => JSON.parse(await readFile(recordFile(name), "utf8"));
      const kept = new Set<string>();
      let starts: Array<{ volumes: string[]; snapshots: string[]; unreadable: string[] }> = [];
      const setup = (api: PluginApi) =>
        api.registerBlockDevice("jdev", async ({ root }) => {
          const { z } = api.deps;
          const files = join(root, "files");
          await api.util.ensureDir(files);
          const adapter: BlockDeviceAdapter<Fields, { Id: number }> = {
            capabilities: { defaultSize: 8 * MiB },
            records: { dir: ".", prefix: "jdev_volume_" },
            volumeFields: z.object({ File: z.string() }),
            snapshotFields: z.object({ Id: z.number() }),
            async createDevice(req) {
              const file = join(files, `${req.name}.img`);
              if (kept.has(req.name)) {
                kept.delete(req.name);
                return {
                  fields: { File: file },
                  size: 8 * MiB,
                  adopted: true,
                  previous: {
                    uuid: "kept-uuid",
                    createdTime: "Mon Jan 02 15:04:05 +0000 2006",
                    snapshots: [{
                      name: "old",
                      createdTime: "then",
                      size: 8 * MiB,
                      fields: { Id: 7 },
                    }],
                  },
                };
              }
              const fh = await open(file, "wx");
              await fh.truncate(req.size);
              await fh.close();
              return { fields: { File: file }, size: req.size };
            },
            async recorded(vol, snap) {
              const rec = await recorded(vol.name);
              seen.push(
                snap
                  ? `recorded ${vol.name}@${snap.name} ${snap.name in rec.Snapshots}`
                  : `recorded ${vol.name} ${rec.UUID === vol.uuid}`,
              );
            },
            async beforeRemove(vol, what) {
              const rec = await recorded(vol.name);
              const names = what.snapshots.map((s) => s.name).join(",");
              const held = what.snapshots.every((s) => s.name in rec.Snapshots);
              seen.push(
                `beforeRemove ${vol.name} volume=${what.volume} keep=${what.keepData} [${names}] ${held}`,
              );
            },
            async removeDevice(vol, { keepData }) {
              seen.push(`removeDevice ${vol.name} keep=${keepData}`);
              if (keepData) kept.add(vol.name);
              else await rm(vol.fields.File, { force: true });
            },
            activate: (vol) => Promise.resolve({ path: vol.fields.File }),
            createSnapshot: () => Promise.resolve({ fields: { Id: 1 } }),
            removeSnapshot(vol, snap, opts) {
              seen.push(`removeSnapshot ${vol.name}@${snap.name} keep=${opts?.keepData ?? false}`);
              if (snap.name === "stuck") {
                return Promise.reject(new api.errors.TimeoutError("dmsetup timed out"));
              }
              return Promise.resolve();
            },
            openSnapshot: () => Promise.reject(new Error("not used")),
            info: () => ({}),
            start(volumes, o) {
              starts.push({
                volumes: volumes.map((v) => v.name),
                snapshots: volumes.flatMap((v) => o.snapshots[v.name].map((s) => s.name)),
                unreadable: o.unreadable,
              });
              return Promise.resolve();
            },
          };
          return adapter;
        });
      const init = registeredInit(setup, "jdev", { exec });
      const d = await init(root, {});
      const vols = await d.volumeOps();
      const snaps = await d.snapshotOps();

      await vols.createVolume("v1", {});
      await snaps.createSnapshot("s1", "v1");
      await snaps.createSnapshot("s2", "v1");
      await snaps.deleteSnapshot("s1", "v1");
      assert.deepEqual(seen.splice(0), [
        "recorded v1 true",
        "recorded v1@s1 true",
        "recorded v1@s2 true",
        // Before the record drops the snapshot, which it still holds.
        "beforeRemove v1 volume=false keep=false [s1] true",
        "removeSnapshot v1@s1 keep=false",
      ]);
      // An adapter's typed error gets the operation's context.
      await snaps.createSnapshot("stuck", "v1");
      await assert.rejects(
        async () => await snaps.deleteSnapshot("stuck", "v1"),
        (e: unknown) =>
          e instanceof Error && e.constructor.name === "TimeoutError" &&
          e.message === 'Cannot delete snapshot "stuck" of volume "v1": dmsetup timed out',
      );
      seen.splice(0);
      const uuid = (await recorded("v1")).UUID;
      await vols.deleteVolume("v1", { ReferenceOnly: "true" });
      assert.deepEqual(seen.splice(0), [
        "beforeRemove v1 volume=true keep=true [s2] true",
        "removeSnapshot v1@s2 keep=true",
        "removeDevice v1 keep=true",
      ]);
      await assert.rejects(stat(recordFile("v1")), { code: "ENOENT" });
      // A mark in the kept device: an adopt must not format it.
      const image = join(root, "files", "v1.img");
      const fh = await open(image, "r+");
      await fh.write(new Uint8Array(4096).fill(7), 0, 4096, 4 * MiB);
      await fh.close();

      // The adopted device: the earlier identity and snapshots, no mkfs (the file has none).
      await vols.createVolume("v1", {});
      assert.deepEqual(seen.splice(0), ["recorded v1 true"]);
      const rec = await recorded("v1");
      assert.equal(rec.UUID, "kept-uuid");
      assert.notEqual(rec.UUID, uuid);
      assert.equal(rec.CreatedTime, "Mon Jan 02 15:04:05 +0000 2006");
      assert.deepEqual(Object.keys(rec.Snapshots), ["old"]);
      assert.equal(rec.Filesystem, "ext4", "detected, not made again");
      const mark = new Uint8Array(4096);
      const fh2 = await open(image, "r");
      await fh2.read(mark, 0, 4096, 4 * MiB);
      await fh2.close();
      assert.ok(mark.every((b) => b === 7), "the kept device's data is intact");
      assert.equal((await snaps.getSnapshotInfo("old", "v1")).Size, String(8 * MiB));

      // Convoy's shape: no UUID, no Device, Snapshots null and a snapshot without Size.
      await writeFile(
        recordFile("v2"),
        JSON.stringify({
          Name: "v2",
          Size: 8 * MiB,
          CreatedTime: "x",
          File: join(dir, "v2.img"),
          Snapshots: { a1: { Name: "a1", CreatedTime: "y", Id: 3 } },
        }),
      );
      const v2fh = await open(join(dir, "v2.img"), "w");
      await v2fh.truncate(8 * MiB);
      await v2fh.close();
      await writeFile(recordFile("bad"), "{not json");
      starts = [];
      const d2 = await init(root, {});
      assert.deepEqual(starts, [{
        volumes: ["v1", "v2"],
        snapshots: ["old", "a1"],
        unreadable: ["bad"],
      }]);
      const v2 = await recorded("v2");
      assert.match(v2.UUID, /^[0-9a-f-]{36}$/);
      assert.equal(v2.Device, join(dir, "v2.img"), "activated at start and recorded");
      assert.equal(
        (await (await d2.snapshotOps()).getSnapshotInfo("a1", "v2")).Size,
        String(8 * MiB),
      );
    });
  });
});
