import { createHash } from "node:crypto";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { BackendError, NotSupportedError } from "../api/errors.ts";
import { MemoryStore } from "../store/memory.ts";
import { openStore } from "../store/testing.ts";
import { STALE_TEMP_AGE_MS } from "../store/sweep.ts";
import type { ObjectStore } from "../store/types.ts";
import { silentLogger } from "../util/log.ts";
import { createSingleFileBackup, deleteSingleFileBackup } from "./singlefile.ts";

const VOLUME = {
  name: "vol1",
  driver: "vfs",
  size: 0,
  createdTime: "Mon Jan 02 15:04:05 -0700 2006",
};
const SNAPSHOT = { name: "snap1", createdTime: "Mon Jan 02 15:04:06 -0700 2006" };
const NOW = () => "Mon Jan 02 15:04:07 -0700 2006";
const enc = new TextEncoder();
const dec = new TextDecoder();

/** A MemoryStore that records writes and can fail writes whose key matches `failOn`. */
function recording(failOn?: RegExp): MemoryStore & { writes: string[] } {
  const store = new MemoryStore() as MemoryStore & { writes: string[] };
  store.writes = [];
  const write = store.write.bind(store);
  store.write = (key, body) => {
    store.writes.push(key);
    if (failOn?.test(key)) return Promise.reject(new BackendError(`Cannot write "${key}": boom`));
    return write(key, body);
  };
  return store;
}

async function withArchive(fn: (file: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-sf-"));
  try {
    await writeFile(join(dir, "snap.tar.gz"), "archive bytes");
    await fn(join(dir, "snap.tar.gz"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function backup(store: ObjectStore, file: string): Promise<string> {
  return createSingleFileBackup(store, file, {
    volume: VOLUME,
    snapshot: SNAPSHOT,
    log: silentLogger,
    now: NOW,
  });
}

describe("createSingleFileBackup()", () => {
  it("createSingleFileBackup() sweeps the volume's stale temp files and keeps fresh ones (vfs)", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-sf-sweep-"));
    try {
      const files = join(dir, "convoy-objectstore/volumes/vo/l1/vol1/BackupFiles");
      await mkdir(files, { recursive: true });
      await writeFile(join(files, ".backup-1.bak.tmp-0badf00d"), "killed upload");
      await writeFile(join(files, ".backup-2.bak.tmp-0123abcd"), "live upload");
      const old = (Date.now() - STALE_TEMP_AGE_MS - 60_000) / 1000;
      await utimes(join(files, ".backup-1.bak.tmp-0badf00d"), old, old);
      const store = await openStore(`vfs://${dir}`);
      await withArchive(async (file) => {
        const name = await backup(store, file);
        assert.deepEqual((await readdir(files)).sort(), [
          ".backup-2.bak.tmp-0123abcd",
          `${name}.bak`,
        ]);
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("createSingleFileBackup() writes the archive, then the backup record, then volume.cfg", async () => {
    await withArchive(async (file) => {
      const store = recording();
      const name = await backup(store, file);
      assert.match(name, /^backup-[0-9a-f]{16}$/);
      const dir = "convoy-objectstore/volumes/vo/l1/vol1";
      assert.deepEqual(store.writes, [
        `${dir}/BackupFiles/${name}.bak`,
        `${dir}/backups/backup_${name}.cfg`,
        `${dir}/volume.cfg`,
      ]);
      assert.equal(dec.decode(await store.read(`${dir}/BackupFiles/${name}.bak`)), "archive bytes");
      const bare = `{"Name":"${name}","Driver":"","VolumeName":"vol1","SnapshotName":"snap1",` +
        `"SnapshotCreatedAt":"${SNAPSHOT.createdTime}","CreatedTime":"${NOW()}",` +
        `"SingleFile":{"FilePath":"${dir}/BackupFiles/${name}.bak"}}`;
      const sum = createHash("sha256").update(bare).digest("hex");
      assert.equal(
        dec.decode(await store.read(`${dir}/backups/backup_${name}.cfg`)),
        `${bare.slice(0, -1)},"RecordChecksum":"sha256:${sum}"}`,
      );
      assert.equal(
        dec.decode(await store.read(`${dir}/volume.cfg`)),
        `{"Name":"vol1","Driver":"vfs","Size":0,"CreatedTime":"${VOLUME.createdTime}",` +
          `"LastBackupName":""}`,
      );
    });
  });

  it("createSingleFileBackup() refreshes volume.cfg but keeps LastBackupName and unknown fields", async () => {
    await withArchive(async (file) => {
      const store = new MemoryStore();
      const key = "convoy-objectstore/volumes/vo/l1/vol1/volume.cfg";
      await store.write(
        key,
        enc.encode(
          '{"Name":"vol1","Driver":"vfs","Size":5,"CreatedTime":"old","LastBackupName":"backup-1","X":true}',
        ),
      );
      await backup(store, file);
      assert.equal(
        dec.decode(await store.read(key)),
        `{"Name":"vol1","Driver":"vfs","Size":0,"CreatedTime":"${VOLUME.createdTime}",` +
          `"LastBackupName":"backup-1","X":true}`,
      );
    });
  });

  it("createSingleFileBackup() removes the archive when the backup record cannot be written", async () => {
    await withArchive(async (file) => {
      const store = recording(/backup_.*\.cfg$/);
      await assert.rejects(backup(store, file), BackendError);
      assert.deepEqual(store.keys(), []);
    });
  });

  it("createSingleFileBackup() removes archive and record when volume.cfg cannot be written", async () => {
    await withArchive(async (file) => {
      const store = recording(/volume\.cfg$/);
      await assert.rejects(backup(store, file), BackendError);
      assert.deepEqual(store.keys(), []);
    });
  });
});

describe("deleteSingleFileBackup()", () => {
  it("deleteSingleFileBackup() refuses a delta-block backup", async () => {
    const store = new MemoryStore();
    const sum = "ab".repeat(32);
    await store.write(
      "convoy-objectstore/volumes/vo/l1/vol1/backups/backup_backup-1.cfg",
      enc.encode(
        '{"Name":"backup-1","Driver":"","VolumeName":"vol1","SnapshotName":"s","SnapshotCreatedAt":"",' +
          `"CreatedTime":"","Blocks":[{"Offset":0,"BlockChecksum":"${sum}"}],"SingleFile":{"FilePath":""}}`,
      ),
    );
    await assert.rejects(
      deleteSingleFileBackup(store, { volume: "vol1", backup: "backup-1" }, { log: silentLogger }),
      NotSupportedError,
    );
    assert.equal(store.keys().length, 1);
  });

  it("deleteSingleFileBackup() refuses an archive path outside the volume folder", async () => {
    const store = new MemoryStore();
    const other = "convoy-objectstore/volumes/vo/l1/vol10/BackupFiles/backup-1.bak";
    await store.write(other, enc.encode("not mine"));
    await store.write(
      "convoy-objectstore/volumes/vo/l1/vol1/backups/backup_backup-1.cfg",
      enc.encode(`{"Name":"backup-1","VolumeName":"vol1","SingleFile":{"FilePath":"${other}"}}`),
    );
    await assert.rejects(
      deleteSingleFileBackup(store, { volume: "vol1", backup: "backup-1" }, { log: silentLogger }),
      BackendError,
    );
    assert.equal(dec.decode(await store.read(other)), "not mine");
  });
});
