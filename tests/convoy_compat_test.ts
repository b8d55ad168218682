/**
 * Backups written by Convoy v0.5.2 restore here, and ours are in the format it reads: the store
 * below is laid out byte for byte as Convoy's vfs driver and objectstore package write it.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ok, run, startDaemon, tempDir } from "./helpers.ts";

describe("Convoy v0.5.2 compatibility", () => {
  it("restores a vfs backup written by Convoy v0.5.2, and writes records in its format", async () => {
    const { dir, cleanup } = await tempDir();
    const d = await startDaemon({ root: join(dir, "root") });
    const socket = d.socket;
    try {
      // What Convoy's vfs driver does: tar cf of `-C <path> .`, gzip, upload as BackupFiles/<backup>.bak.
      const src = join(dir, "src");
      await mkdir(join(src, "sub"), { recursive: true });
      await writeFile(join(src, "a.txt"), "from old convoy\n");
      await writeFile(join(src, "sub", "b.bin"), new Uint8Array(5000).map((_, i) => i % 256));
      const store = join(dir, "store");
      const vdir = join(store, "convoy-objectstore", "volumes", "ol", "dv", "oldvol");
      await mkdir(join(vdir, "BackupFiles"), { recursive: true });
      await mkdir(join(vdir, "backups"), { recursive: true });
      assert.equal((await run("tar", ["cf", join(dir, "snap.tar"), "-C", src, "."])).code, 0);
      assert.equal((await run("gzip", [join(dir, "snap.tar")])).code, 0);
      await writeFile(
        join(vdir, "BackupFiles", "backup-0123456789ab4def.bak"),
        await readFile(join(dir, "snap.tar.gz")),
      );
      await writeFile(
        join(vdir, "volume.cfg"),
        `{"Name":"oldvol","Driver":"vfs","Size":0,"CreatedTime":"Mon Jan 02 15:04:05 -0700 2006","LastBackupName":""}`,
      );
      await writeFile(
        join(vdir, "backups", "backup_backup-0123456789ab4def.cfg"),
        `{"Name":"backup-0123456789ab4def","Driver":"","VolumeName":"oldvol","SnapshotName":"snapshot-1",` +
          `"SnapshotCreatedAt":"Mon Jan 02 15:04:06 -0700 2006","CreatedTime":"Mon Jan 02 15:04:07 -0700 2006",` +
          `"SingleFile":{"FilePath":"convoy-objectstore/volumes/ol/dv/oldvol/BackupFiles/backup-0123456789ab4def.bak"}}`,
      );
      const url = `vfs://${store}?backup=backup-0123456789ab4def&volume=oldvol`;

      const list = JSON.parse(await ok(["backup", "list", `vfs://${store}`], { socket }));
      assert.deepEqual(list[url], {
        BackupName: "backup-0123456789ab4def",
        BackupURL: url,
        DriverName: "vfs",
        VolumeName: "oldvol",
        VolumeSize: "0",
        VolumeCreatedAt: "Mon Jan 02 15:04:05 -0700 2006",
        SnapshotName: "snapshot-1",
        SnapshotCreatedAt: "Mon Jan 02 15:04:06 -0700 2006",
        CreatedTime: "Mon Jan 02 15:04:07 -0700 2006",
      });
      // Old Convoy printed the URL with "\u0026"; users paste that form back.
      await ok(["create", "newvol", "--backup", url.replace("&", "\\u0026")], { socket });
      const mp = await ok(["mount", "newvol"], { socket });
      assert.equal(await readFile(join(mp, "a.txt"), "utf8"), "from old convoy\n");
      assert.deepEqual(
        await readFile(join(mp, "sub", "b.bin")),
        await readFile(join(src, "sub", "b.bin")),
      );

      // Ours, in the other direction: records in Convoy's field order, an archive `tar xzf` reads.
      await ok(["snapshot", "create", "newvol", "--name", "s2"], { socket });
      const ours = await ok(["backup", "create", "s2", "--dest", `vfs://${store}`], { socket });
      const id = new URL(ours).searchParams.get("backup")!;
      const nvdir = join(store, "convoy-objectstore", "volumes", "ne", "wv", "newvol");
      const vcfg = await readFile(join(nvdir, "volume.cfg"), "utf8");
      assert.match(
        vcfg,
        /^\{"Name":"newvol","Driver":"vfs","Size":0,"CreatedTime":"[^"]+","LastBackupName":""/,
      );
      const bcfg = JSON.parse(await readFile(join(nvdir, "backups", `backup_${id}.cfg`), "utf8"));
      assert.deepEqual(Object.keys(bcfg).slice(0, 7), [
        "Name",
        "Driver",
        "VolumeName",
        "SnapshotName",
        "SnapshotCreatedAt",
        "CreatedTime",
        "SingleFile",
      ]);
      assert.equal(
        bcfg.SingleFile.FilePath,
        `convoy-objectstore/volumes/ne/wv/newvol/BackupFiles/${id}.bak`,
      );
      const out = join(dir, "extracted");
      await mkdir(out);
      assert.equal(
        (await run("tar", ["xzf", join(store, bcfg.SingleFile.FilePath), "-C", out])).code,
        0,
      );
      assert.equal(await readFile(join(out, "a.txt"), "utf8"), "from old convoy\n");
      assert.deepEqual((await readdir(out)).sort(), ["a.txt", "sub"]);
      await ok(["umount", "newvol"], { socket });
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});
