import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { createHash } from "node:crypto";
import {
  parseBackupRecord,
  parseVolumeRecord,
  recordChecksumProblem,
  RecordParseError,
  serializeBackupRecord,
  serializeVolumeRecord,
  withRecordChecksum,
} from "./records.ts";

const SUM = "0123456789abcdef".repeat(4);
const VOLUME_CFG = '{"Name":"vol1","Driver":"devicemapper","Size":2147483648,' +
  '"CreatedTime":"Mon Jan 02 15:04:05 -0700 2006","LastBackupName":"backup-0123456789ab4def"}';
const DELTA_CFG = '{"Name":"backup-0123456789ab4def","Driver":"","VolumeName":"vol1",' +
  '"SnapshotName":"snap1","SnapshotCreatedAt":"Mon Jan 02 15:04:05 -0700 2006",' +
  '"CreatedTime":"Mon Jan 02 15:05:05 -0700 2006",' +
  `"Blocks":[{"Offset":0,"BlockChecksum":"${SUM}"},{"Offset":2097152,"BlockChecksum":"${SUM}"}],` +
  '"SingleFile":{"FilePath":""}}';
const SINGLE_CFG = '{"Name":"backup-0123456789abcdef","Driver":"","VolumeName":"vol1",' +
  '"SnapshotName":"snap1","SnapshotCreatedAt":"Mon Jan 02 15:04:05 -0700 2006",' +
  '"CreatedTime":"Mon Jan 02 15:05:05 -0700 2006","SingleFile":{"FilePath":' +
  '"convoy-objectstore/volumes/vo/l1/vol1/BackupFiles/backup-0123456789abcdef.bak"}}';

describe("records", () => {
  it("withRecordChecksum() appends the SHA-256 of the record as written without it, and it survives a round trip", () => {
    const sum = createHash("sha256").update(DELTA_CFG).digest("hex");
    const text = serializeBackupRecord(withRecordChecksum(parseBackupRecord(DELTA_CFG, "t")));
    assert.equal(text, `${DELTA_CFG.slice(0, -1)},"RecordChecksum":"sha256:${sum}"}`);
    const back = parseBackupRecord(text, "t");
    assert.equal(recordChecksumProblem(back), undefined);
    assert.equal(serializeBackupRecord(withRecordChecksum(back)), text, "stable when rewritten");
    assert.equal(recordChecksumProblem(parseBackupRecord(DELTA_CFG, "t")), undefined, "Convoy's");
    const altered = parseBackupRecord(text.replace('"Offset":2097152', '"Offset":4194304'), "t");
    assert.match(recordChecksumProblem(altered) ?? "", /does not match its RecordChecksum/);
    const bogus = parseBackupRecord(text.replace(/"sha256:[0-9a-f]+"/, "7"), "t");
    assert.match(recordChecksumProblem(bogus) ?? "", /RecordChecksum is not a string/);
  });

  it("serializeVolumeRecord() reproduces Convoy's volume.cfg byte for byte", () => {
    assert.equal(serializeVolumeRecord(parseVolumeRecord(VOLUME_CFG, "t")), VOLUME_CFG);
  });

  it("serializeBackupRecord() reproduces delta and single-file records byte for byte", () => {
    assert.equal(serializeBackupRecord(parseBackupRecord(DELTA_CFG, "t")), DELTA_CFG);
    assert.equal(serializeBackupRecord(parseBackupRecord(SINGLE_CFG, "t")), SINGLE_CFG);
  });

  it("serializeBackupRecord() omits empty Blocks and always writes SingleFile", () => {
    const text = serializeBackupRecord({
      Name: "backup-1",
      Driver: "",
      VolumeName: "vol1",
      SnapshotName: "s1",
      SnapshotCreatedAt: "",
      CreatedTime: "",
      Blocks: [],
      SingleFile: { FilePath: "" },
    });
    assert.equal(
      text,
      '{"Name":"backup-1","Driver":"","VolumeName":"vol1","SnapshotName":"s1",' +
        '"SnapshotCreatedAt":"","CreatedTime":"","SingleFile":{"FilePath":""}}',
    );
    assert.equal(text.endsWith("\n"), false);
  });

  it("parseVolumeRecord() keeps unknown fields and writes them after the known ones", () => {
    const v = parseVolumeRecord(
      '{"Future":1,"Name":"vol1","Driver":"vfs","Size":0,"CreatedTime":"t","LastBackupName":""}',
      "t",
    );
    assert.equal(
      serializeVolumeRecord(v),
      '{"Name":"vol1","Driver":"vfs","Size":0,"CreatedTime":"t","LastBackupName":"","Future":1}',
    );
  });

  it("parseBackupRecord() reads Go zero values: missing or null fields", () => {
    const b = parseBackupRecord(
      '{"Name":"backup-1","VolumeName":"vol1","Blocks":null,"SingleFile":null,"Driver":null}',
      "t",
    );
    assert.deepEqual(b, {
      Name: "backup-1",
      Driver: "",
      VolumeName: "vol1",
      SnapshotName: "",
      SnapshotCreatedAt: "",
      CreatedTime: "",
      Blocks: [],
      SingleFile: { FilePath: "" },
    });
  });

  it("serializeVolumeRecord() escapes <, > and & as Go does", () => {
    const v = parseVolumeRecord('{"Name":"vol1","CreatedTime":"<&>"}', "t");
    assert.equal(
      serializeVolumeRecord(v),
      '{"Name":"vol1","Driver":"","Size":0,"CreatedTime":"\\u003c\\u0026\\u003e","LastBackupName":""}',
    );
  });

  it("parseVolumeRecord() and parseBackupRecord() reject garbage with RecordParseError", () => {
    assert.throws(() => parseVolumeRecord("{not json", "vfs:///x/volume.cfg"), {
      name: "RecordParseError",
      message: 'Cannot parse volume record "vfs:///x/volume.cfg": not valid JSON',
    });
    assert.throws(() => parseVolumeRecord('{"Size":"12"}', "x"), RecordParseError);
    assert.throws(
      () => parseBackupRecord('{"Name":"b1","VolumeName":"v1","Blocks":[{"Offset":0}]}', "x"),
      RecordParseError,
    );
  });
});
