import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { InvalidArgumentError, NotFoundError } from "../api/errors.ts";
import type { BackupStoreApi, BackupVolume } from "../api/plugin.ts";
import { openStore } from "../store/testing.ts";
import type { ObjectStore } from "../store/types.ts";
import type { LogFields, Logger } from "../util/log.ts";
import { createBackupStoreApi } from "./store_api.ts";

const VOL1: BackupVolume = {
  name: "vol1",
  driver: "vfs",
  size: 0,
  createdTime: "Mon Jan 02 15:04:05 -0700 2006",
};
const SNAP1 = { name: "snap1", createdTime: "Mon Jan 02 15:04:06 -0700 2006" };
const NOW = "Mon Jan 02 15:04:07 -0700 2006";

interface Ctx {
  /** The temp dir holding `store/` (the backup destination) and local files. */
  dir: string;
  dest: string;
  api: BackupStoreApi;
  /** Writes a local archive and returns its path. */
  archive(name: string, content: string): Promise<string>;
  warnings: string[];
}

function capturingLogger(warnings: string[]): Logger {
  const log: Logger = {
    debug() {},
    info() {},
    warn: (msg: string, fields?: LogFields) => warnings.push(`${msg} ${JSON.stringify(fields)}`),
    error: (msg: string) => warnings.push(msg),
    child: () => log,
  };
  return log;
}

async function withStore(
  fn: (ctx: Ctx) => Promise<void>,
  opts: { wrap?: (s: ObjectStore) => ObjectStore } = {},
): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-api-"));
  try {
    await mkdir(join(dir, "store"));
    await mkdir(join(dir, "local"));
    const warnings: string[] = [];
    const api = createBackupStoreApi({
      log: capturingLogger(warnings),
      now: () => NOW,
      stores: {
        open: async (url, o) => (opts.wrap ?? ((s) => s))(await openStore(url, o)),
      },
    });
    await fn({
      dir,
      dest: `vfs://${dir}/store`,
      api,
      warnings,
      async archive(name, content) {
        const p = join(dir, "local", name);
        await writeFile(p, content);
        return p;
      },
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every path under `root`, relative, directories with a trailing slash. */
async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) {
    const rel = join(e.parentPath ?? e.path, e.name).slice(root.length + 1);
    out.push(e.isDirectory() ? rel + "/" : rel);
  }
  return out.sort();
}

describe("createBackupStoreApi()", () => {
  it("createSingleFileBackup() then list, inspect, restore and delete leaves an empty store", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const file = await archive("snap1.tar.gz", "tarball of vol1");
      const url = await api.createSingleFileBackup(file, {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      const m = /^vfs:\/\/.*\/store\?backup=(backup-[0-9a-f]{16})&volume=vol1$/.exec(url);
      assert.ok(m, url);
      const backup = m[1];
      assert.equal(url, `${dest}?backup=${backup}&volume=vol1`);

      const info = {
        BackupName: backup,
        BackupURL: url,
        DriverName: "vfs",
        VolumeName: "vol1",
        VolumeSize: "0",
        VolumeCreatedAt: VOL1.createdTime,
        SnapshotName: "snap1",
        SnapshotCreatedAt: SNAP1.createdTime,
        CreatedTime: NOW,
      };
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), { [url]: info });
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs", volumeName: "vol1" }), {
        [url]: info,
      });
      assert.deepEqual(await api.listBackup(dest, { driver: "devicemapper" }), {});
      assert.deepEqual(await api.getBackupInfo(url), info);
      assert.deepEqual(await api.getBackupVolume(url), { ...VOL1, format: "single-file" });

      const target = join(dir, "local", "restored.tar.gz");
      await api.restoreSingleFileBackup(url, target);
      assert.equal(await readFile(target, "utf8"), "tarball of vol1");

      await api.deleteBackup(url);
      assert.deepEqual(await tree(join(dir, "store")), []);
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), {});
      await assert.rejects(api.getBackupInfo(url), NotFoundError);
      await assert.rejects(api.deleteBackup(url), NotFoundError);
    });
  });

  it("queries() deletes only the driver's own backups, inspects readable drivers' ones, lists its own", async () => {
    await withStore(async ({ dest, api, archive }) => {
      const url = await api.createSingleFileBackup(await archive("a.tar.gz", "x"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      const loop = api.queries("loop", { readable: ["vfs"] });
      const dm = api.queries("devicemapper");
      assert.deepEqual(Object.keys(await loop.listBackup(dest, {})), []);
      assert.equal((await loop.getBackupInfo(url, {})).DriverName, "vfs");
      await assert.rejects(async () => await dm.getBackupInfo(url, {}), {
        name: "InvalidArgumentError",
        message:
          `Cannot inspect backup "${url}" with the devicemapper driver: it was made by driver "vfs"`,
      });
      await assert.rejects(async () => await loop.deleteBackup(url, {}), {
        message: `Cannot delete backup "${url}" with the loop driver: it was made by driver "vfs"`,
      });
      const vfs = api.queries("vfs");
      assert.deepEqual(Object.keys(await vfs.listBackup(dest, { VolumeName: "vol1" })), [url]);
      await assert.rejects(
        async () => await vfs.listBackup(dest, { VolumeName: "../x" }),
        InvalidArgumentError,
      );
      await vfs.deleteBackup(url, {});
      assert.deepEqual(await vfs.listBackup(dest, {}), {});
    });
  });

  it("listBackup() and restoreSingleFileBackup() read a store written by Convoy v0.5.2", async () => {
    await withStore(async ({ dir, dest, api }) => {
      const vdir = join(dir, "store/convoy-objectstore/volumes/ab/!!/ab!!");
      const bak = "convoy-objectstore/volumes/ab/!!/ab!!/BackupFiles/backup-5d1e8f0a2b3c4d5e.bak";
      await mkdir(join(vdir, "backups"), { recursive: true });
      await mkdir(join(vdir, "BackupFiles"), { recursive: true });
      await writeFile(
        join(vdir, "volume.cfg"),
        '{"Name":"ab","Driver":"vfs","Size":0,"CreatedTime":"Tue Mar 01 10:00:00 +0000 2016",' +
          '"LastBackupName":""}',
      );
      await writeFile(
        join(vdir, "backups/backup_backup-5d1e8f0a2b3c4d5e.cfg"),
        '{"Name":"backup-5d1e8f0a2b3c4d5e","Driver":"","VolumeName":"ab","SnapshotName":' +
          '"snapshot-1a2b3c4d","SnapshotCreatedAt":"Tue Mar 01 10:01:00 +0000 2016",' +
          `"CreatedTime":"Tue Mar 01 10:02:00 +0000 2016","SingleFile":{"FilePath":"${bak}"}}`,
      );
      await writeFile(join(dir, "store", bak), "old convoy archive");

      const url = `${dest}?backup=backup-5d1e8f0a2b3c4d5e&volume=ab`;
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), {
        [url]: {
          BackupName: "backup-5d1e8f0a2b3c4d5e",
          BackupURL: url,
          DriverName: "vfs",
          VolumeName: "ab",
          VolumeSize: "0",
          VolumeCreatedAt: "Tue Mar 01 10:00:00 +0000 2016",
          SnapshotName: "snapshot-1a2b3c4d",
          SnapshotCreatedAt: "Tue Mar 01 10:01:00 +0000 2016",
          CreatedTime: "Tue Mar 01 10:02:00 +0000 2016",
        },
      });
      const target = join(dir, "local", "r.tar.gz");
      await api.restoreSingleFileBackup(url.replace("&", "\\u0026"), target);
      assert.equal(await readFile(target, "utf8"), "old convoy archive");
      assert.deepEqual(await api.getBackupVolume(url), {
        name: "ab",
        driver: "vfs",
        size: 0,
        createdTime: "Tue Mar 01 10:00:00 +0000 2016",
        format: "single-file",
      });
    });
  });

  it("restoreSingleFileBackup() and getBackupInfo() accept \\u0026 and u0026 URLs", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const url = await api.createSingleFileBackup(await archive("a", "A"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      const escaped = url.replace("&", "\\u0026");
      assert.notEqual(escaped, url);
      assert.equal((await api.getBackupInfo(escaped)).BackupURL, url);
      assert.equal((await api.getBackupInfo(url.replace("&", "u0026"))).BackupURL, url);
      await api.restoreSingleFileBackup(escaped, join(dir, "local", "r"));
      assert.equal(await readFile(join(dir, "local", "r"), "utf8"), "A");
      await api.deleteBackup(escaped);
      assert.deepEqual(await tree(join(dir, "store")), []);
    });
  });

  it("listBackup() of a named volume without backups fails with NotFoundError", async () => {
    await withStore(async ({ dest, api, archive }) => {
      await assert.rejects(api.listBackup(dest, { driver: "vfs", volumeName: "ab" }), {
        name: "NotFoundError",
        message: `Cannot list backups: volume "ab" has no backups in "${dest}"`,
      });
      await api.createSingleFileBackup(await archive("a", "A"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      await assert.rejects(
        api.listBackup(dest, { driver: "vfs", volumeName: "vol10" }),
        NotFoundError,
      );
      await assert.rejects(
        api.listBackup(dest, { driver: "vfs", volumeName: "a" }),
        InvalidArgumentError,
      );
    });
  });

  it("listBackup() of an empty store or a store without volumes/ is {}", async () => {
    await withStore(async ({ dir, dest, api }) => {
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), {});
      await mkdir(join(dir, "store/convoy-objectstore"));
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), {});
    });
  });

  it("deleteBackup() of one of two backups keeps the other restorable", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const opts = { volume: VOL1, snapshot: SNAP1, destURL: dest };
      const url1 = await api.createSingleFileBackup(await archive("1", "first"), opts);
      const url2 = await api.createSingleFileBackup(await archive("2", "second"), {
        ...opts,
        snapshot: { name: "snap2", createdTime: "t2" },
      });
      assert.deepEqual(
        Object.keys(await api.listBackup(dest, { driver: "vfs" })).sort(),
        [url1, url2].sort(),
      );
      await api.deleteBackup(url2);
      assert.deepEqual(Object.keys(await api.listBackup(dest, { driver: "vfs" })), [url1]);
      await api.restoreSingleFileBackup(url1, join(dir, "local", "r"));
      assert.equal(await readFile(join(dir, "local", "r"), "utf8"), "first");
      await assert.rejects(
        api.restoreSingleFileBackup(url2, join(dir, "local", "r2")),
        NotFoundError,
      );
      assert.deepEqual((await api.getBackupInfo(url1)).SnapshotName, "snap1");
    });
  });

  it("createSingleFileBackup() whose archive upload fails leaves no backup behind", async () => {
    const failing = (s: ObjectStore): ObjectStore => ({
      kind: s.kind,
      url: s.url,
      stat: (k) => s.stat(k),
      read: (k) => s.read(k),
      readStream: (k) => s.readStream(k),
      list: (p) => s.list(p),
      remove: (...k) => s.remove(...k),
      // The .bak upload dies mid-stream, after the real store created folders and a temp file.
      write: (k, body, o) =>
        k.endsWith(".bak")
          ? s.write(
            k,
            new ReadableStream({
              pull(c) {
                c.enqueue(new Uint8Array(10));
                c.error(new Error("disk full"));
              },
            }),
          )
          : s.write(k, body, o),
    });
    await withStore(async ({ dir, dest, api, archive }) => {
      await assert.rejects(
        api.createSingleFileBackup(await archive("a", "A"), {
          volume: VOL1,
          snapshot: SNAP1,
          destURL: dest,
        }),
        { name: "BackendError", message: /disk full/ },
      );
      assert.deepEqual(await api.listBackup(dest, { driver: "vfs" }), {});
      assert.deepEqual(await tree(join(dir, "store")), []);
    }, { wrap: failing });
  });

  it("createSingleFileBackup() of a missing local file fails and writes nothing", async () => {
    await withStore(async ({ dir, dest, api }) => {
      await assert.rejects(
        api.createSingleFileBackup(join(dir, "local", "none"), {
          volume: VOL1,
          snapshot: SNAP1,
          destURL: dest,
        }),
        NotFoundError,
      );
      assert.deepEqual(await tree(join(dir, "store")), []);
    });
  });

  it("listBackup() logs and skips a broken volume folder, and lists an unreadable backup record with an Error", async () => {
    await withStore(async ({ dir, dest, api, archive, warnings }) => {
      const url = await api.createSingleFileBackup(await archive("a", "A"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      const vols = join(dir, "store/convoy-objectstore/volumes");
      await mkdir(join(vols, "br/ok/broken"), { recursive: true });
      await writeFile(join(vols, "br/ok/broken/volume.cfg"), "{garbage");
      await mkdir(join(vols, "no/cf/nocfg/backups"), { recursive: true });
      await mkdir(join(vols, "vo/l1/vol1/backups"), { recursive: true });
      await writeFile(join(vols, "vo/l1/vol1/backups/backup_backup-bad.cfg"), "nope");
      await writeFile(join(vols, "vo/l1/vol1/backups/notes.txt"), "ignored");
      const listed = await api.listBackup(dest, { driver: "vfs" });
      const bad = `${dest}?backup=backup-bad&volume=vol1`;
      assert.deepEqual(Object.keys(listed).sort(), [url, bad].sort());
      assert.equal(listed[url].Error, undefined);
      assert.equal(listed[bad].BackupName, "backup-bad");
      assert.equal(listed[bad].VolumeName, "vol1");
      assert.match(
        listed[bad].Error,
        /Cannot parse backup record ".*backup_backup-bad\.cfg": not valid JSON/,
      );
      assert.equal(warnings.length, 3, warnings.join("\n"));
      assert.match(warnings.join("\n"), /unreadable volume\.cfg.*broken/);
      assert.match(warnings.join("\n"), /without volume\.cfg.*nocfg/);
      assert.match(warnings.join("\n"), /unreadable backup record.*backup-bad/);
    });
  });

  it("getBackupVolume() and getBackupInfo() fail with NotFoundError when a record is missing", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const missing = `${dest}?backup=backup-0000000000000000&volume=vol1`;
      await assert.rejects(api.getBackupVolume(missing), {
        name: "NotFoundError",
        message: `Cannot find backup "${missing}": backup record ` +
          `"convoy-objectstore/volumes/vo/l1/vol1/backups/backup_backup-0000000000000000.cfg" does not exist`,
      });
      const url = await api.createSingleFileBackup(await archive("a", "A"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      await rm(join(dir, "store/convoy-objectstore/volumes/vo/l1/vol1/volume.cfg"));
      await assert.rejects(api.getBackupVolume(url), {
        name: "NotFoundError",
        message: `Cannot find backup "${url}": volume record ` +
          `"convoy-objectstore/volumes/vo/l1/vol1/volume.cfg" does not exist`,
      });
      await assert.rejects(api.getBackupInfo(url), NotFoundError);
    });
  });

  it("restoreSingleFileBackup() fails with NotFoundError naming the backup when the archive is gone", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const url = await api.createSingleFileBackup(await archive("a", "A"), {
        volume: VOL1,
        snapshot: SNAP1,
        destURL: dest,
      });
      const name = new URL(url).searchParams.get("backup");
      await rm(join(dir, `store/convoy-objectstore/volumes/vo/l1/vol1/BackupFiles/${name}.bak`));
      await assert.rejects(api.restoreSingleFileBackup(url, join(dir, "local", "r")), {
        name: "NotFoundError",
        message: `Cannot restore backup "${url}": archive ` +
          `"convoy-objectstore/volumes/vo/l1/vol1/BackupFiles/${name}.bak" does not exist`,
      });
      assert.deepEqual(await readdir(join(dir, "local")), ["a"]);
    });
  });

  it("deleteBackup() of vol1's last backup leaves vol10 untouched", async () => {
    await withStore(async ({ dir, dest, api, archive }) => {
      const opts = { snapshot: SNAP1, destURL: dest };
      const url1 = await api.createSingleFileBackup(await archive("1", "one"), {
        ...opts,
        volume: VOL1,
      });
      const url10 = await api.createSingleFileBackup(await archive("10", "ten"), {
        ...opts,
        volume: { ...VOL1, name: "vol10" },
      });
      await api.deleteBackup(url1);
      assert.deepEqual(Object.keys(await api.listBackup(dest, { driver: "vfs" })), [url10]);
      assert.deepEqual(await readdir(join(dir, "store/convoy-objectstore/volumes/vo/l1")), [
        "vol10",
      ]);
    });
  });

  it("backup URLs with an endpoint or a bad destination are rejected", async () => {
    await withStore(async ({ dest, api }) => {
      await assert.rejects(
        api.listBackup(dest, { driver: "vfs", endpoint: "http://minio:9000" }),
        InvalidArgumentError,
      );
      await assert.rejects(api.getBackupInfo("ftp://x?backup=bk&volume=v1"), InvalidArgumentError);
      await assert.rejects(api.getBackupInfo(`${dest}?backup=bk`), InvalidArgumentError);
      await assert.rejects(api.listBackup("vfs:///no/such/dir", { driver: "vfs" }), NotFoundError);
    });
  });
});
