/**
 * Cross-driver restores between devicemapper and loop: both back up raw block images of a
 * filesystem in the same delta-block format, so each restores the other's backups.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, open, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DeltaBlockOperations } from "../../mod.ts";
import { InvalidArgumentError } from "../../mod.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { registeredInit } from "../../src/plugins/testing.ts";
import loopSetup from "../../plugins/loop/mod.ts";
import {
  BLOCK,
  exec,
  MiB,
  needsPool,
  pattern,
  recordingLogger,
  rejectsWith,
  sha256Of,
  skipNote,
  withPool,
  writeAt,
} from "./helpers.ts";

describe(`devicemapper and loop backups restore into each other${skipNote}`, needsPool, () => {
  it("a devicemapper backup restores into a loop volume, and a loop backup into a devicemapper volume", async () => {
    await withPool({}, async (env) => {
      const backup = createBackupStoreApi({ log: recordingLogger() });
      const store = join(env.dir, "store");
      await mkdir(store);
      const dest = `vfs://${store}`;
      const dm = await env.init({ backup });
      const dmVols = await dm.volumeOps();
      const dmBackups = await dm.backupOps();

      const loopInit = registeredInit(loopSetup, "loop", { log: recordingLogger(), exec, backup });
      const loop = await loopInit(join(env.dir, "root", "loop"), {});
      const loopVols = await loop.volumeOps();

      // devicemapper → loop
      await dmVols.createVolume("dmvol", { Size: "32M" });
      let mp = await dmVols.mountVolume("dmvol", {});
      await writeFile(join(mp, "from-dm.txt"), "thin pool data");
      await dmVols.umountVolume("dmvol");
      const dmDevice = (await dmVols.getVolumeInfo("dmvol")).Device;
      const dmSum = await sha256Of(dmDevice, 32 * MiB);
      await (await dm.snapshotOps()).createSnapshot("s1", "dmvol");
      const dmURL = await dmBackups.createBackup("s1", "dmvol", dest, {});
      await loopVols.createVolume("fromdm", { BackupURL: dmURL });
      const li = await loopVols.getVolumeInfo("fromdm");
      assert.equal(li.Size, String(32 * MiB));
      assert.equal(await sha256Of(li.Path, 32 * MiB), dmSum);
      mp = await loopVols.mountVolume("fromdm", {});
      assert.equal(await readFile(join(mp, "from-dm.txt"), "utf8"), "thin pool data");
      await loopVols.umountVolume("fromdm");

      // loop → devicemapper
      await loopVols.createVolume("lvol", { Size: "32M" });
      mp = await loopVols.mountVolume("lvol", {});
      await writeFile(join(mp, "from-loop.txt"), "image file data");
      await loopVols.umountVolume("lvol");
      const image = (await loopVols.getVolumeInfo("lvol")).Path;
      const loopSum = await sha256Of(image, (await stat(image)).size);
      await (await loop.snapshotOps()).createSnapshot("s1", "lvol");
      const loopURL = await (await loop.backupOps()).createBackup("s1", "lvol", dest, {});
      await dmVols.createVolume("fromloop", { BackupURL: loopURL });
      const di = await dmVols.getVolumeInfo("fromloop");
      assert.equal(di.Size, String(32 * MiB));
      assert.equal(di.Filesystem, "ext4");
      assert.equal(await sha256Of(di.Device, 32 * MiB), loopSum);
      mp = await dmVols.mountVolume("fromloop", {});
      assert.equal(await readFile(join(mp, "from-loop.txt"), "utf8"), "image file data");
      await dmVols.umountVolume("fromloop");

      // Inspecting a loop backup works; listing and deleting are for devicemapper's own.
      assert.equal((await dmBackups.getBackupInfo(loopURL, {})).DriverName, "loop");
      assert.deepEqual(Object.keys(await dmBackups.listBackup(dest, {})), [dmURL]);
      await rejectsWith(() => dmBackups.deleteBackup(loopURL, {}), {
        type: InvalidArgumentError,
        message: `Cannot delete backup "${loopURL}" with the devicemapper driver: it was made ` +
          `by driver "loop"`,
      });
    });
  });

  it("a loop-format backup made by hand from a plain image file restores into a devicemapper volume", async () => {
    await withPool({}, async (env) => {
      const backup = createBackupStoreApi({ log: recordingLogger() });
      const store = join(env.dir, "store");
      await mkdir(store);
      // A 16 MiB image with data in blocks 1 and 6 (of 8).
      const image = join(env.dir, "plain.img");
      await writeFile(image, new Uint8Array(0));
      await exec("truncate", ["-s", "16M", image]);
      await writeAt(image, { offset: BLOCK, data: pattern(1, BLOCK) });
      await writeAt(image, { offset: 6 * BLOCK + 512, data: pattern(2, 1000) });
      const fh = await open(image, "r");
      const ops: DeltaBlockOperations = {
        hasSnapshot: () => false,
        compareSnapshot: () => ({
          mappings: [{ offset: BLOCK, size: BLOCK }, { offset: 6 * BLOCK, size: BLOCK }],
          blockSize: BLOCK,
        }),
        openSnapshot: () => {},
        readSnapshot: async (_id, _vol, start, data) => {
          data.fill(0);
          await fh.read(data, 0, data.length, start);
        },
        closeSnapshot: () => {},
      };
      let url: string;
      try {
        url = await backup.createDeltaBackup(ops, {
          volume: { name: "plain", driver: "loop", size: 16 * MiB, createdTime: "then" },
          snapshot: { name: "snap", createdTime: "then" },
          destURL: `vfs://${store}`,
        });
      } finally {
        await fh.close();
      }
      const vols = await (await env.init({ backup })).volumeOps();
      await vols.createVolume("plain", { BackupURL: url });
      const info = await vols.getVolumeInfo("plain");
      assert.equal(info.Size, String(16 * MiB));
      assert.equal(info.Filesystem, "");
      assert.equal(await sha256Of(info.Device, 16 * MiB), await sha256Of(image, 16 * MiB));
    });
  });
});
