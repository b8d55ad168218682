import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../api/errors.ts";
import {
  backupConfigPath,
  blockPath,
  parseBackupConfigName,
  singleFilePath,
  volumeConfigPath,
  volumeDir,
} from "./layout.ts";

const SUM = "0123456789abcdef".repeat(4);

describe("layout", () => {
  it("volumeDir() shards a 4-character name without padding", () => {
    assert.equal(volumeDir("vol1"), "convoy-objectstore/volumes/vo/l1/vol1");
  });

  it("volumeDir() pads a 2-character name with '!' in every component", () => {
    assert.equal(volumeDir("ab"), "convoy-objectstore/volumes/ab/!!/ab!!");
  });

  it("volumeDir() pads a 3-character name", () => {
    assert.equal(volumeDir("abc"), "convoy-objectstore/volumes/ab/c!/abc!");
  });

  it("volumeDir() keeps a long name whole in the last component", () => {
    assert.equal(
      volumeDir("vol.1_1-0"),
      "convoy-objectstore/volumes/vo/l./vol.1_1-0",
    );
    assert.equal(
      volumeDir("a6b4c3f2-1e0d-4c9b-8a7f-6e5d4c3b2a19"),
      "convoy-objectstore/volumes/a6/b4/a6b4c3f2-1e0d-4c9b-8a7f-6e5d4c3b2a19",
    );
  });

  it("volumeDir() rejects names outside the name rule", () => {
    for (const bad of ["", "a", "a/b", "../x", "-ab", "a b", "ab..", "ab..x"]) {
      assert.throws(() => volumeDir(bad), InvalidArgumentError, bad);
    }
  });

  it("volumeConfigPath() is volume.cfg in the volume folder", () => {
    assert.equal(volumeConfigPath("vol1"), "convoy-objectstore/volumes/vo/l1/vol1/volume.cfg");
    assert.equal(volumeConfigPath("ab"), "convoy-objectstore/volumes/ab/!!/ab!!/volume.cfg");
  });

  it("backupConfigPath() is backups/backup_<name>.cfg", () => {
    assert.equal(
      backupConfigPath("vol1", "backup-0123456789ab4def"),
      "convoy-objectstore/volumes/vo/l1/vol1/backups/backup_backup-0123456789ab4def.cfg",
    );
  });

  it("blockPath() shards by the first two pairs of the checksum", () => {
    assert.equal(
      blockPath("vol1", SUM),
      `convoy-objectstore/volumes/vo/l1/vol1/blocks/01/23/${SUM}.blk`,
    );
    assert.throws(() => blockPath("vol1", "abcd"), InvalidArgumentError);
    assert.throws(() => blockPath("vol1", SUM.toUpperCase()), InvalidArgumentError);
  });

  it("singleFilePath() is BackupFiles/<backup>.bak", () => {
    assert.equal(
      singleFilePath("vol1", "backup-0123456789abcdef"),
      "convoy-objectstore/volumes/vo/l1/vol1/BackupFiles/backup-0123456789abcdef.bak",
    );
    assert.equal(
      singleFilePath("ab", "backup-0123456789abcdef"),
      "convoy-objectstore/volumes/ab/!!/ab!!/BackupFiles/backup-0123456789abcdef.bak",
    );
  });

  it("parseBackupConfigName() extracts the backup name from backup_<name>.cfg only", () => {
    assert.equal(parseBackupConfigName("backup_backup-0123.cfg"), "backup-0123");
    assert.equal(parseBackupConfigName("backup_.cfg"), undefined);
    assert.equal(parseBackupConfigName("volume.cfg"), undefined);
    assert.equal(parseBackupConfigName("backup_x.cfg.tmp"), undefined);
  });
});
