import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../api/errors.ts";
import { decodeBackupURL, encodeBackupURL, normalizeDestURL, unescapeBackupURL } from "./url.ts";

const REF = { backup: "backup-0123456789abcdef", volume: "vol1", destURL: "vfs:///var/backups" };
const URL1 = "vfs:///var/backups?backup=backup-0123456789abcdef&volume=vol1";

describe("backup URL", () => {
  it("encodeBackupURL() appends backup first, then volume", () => {
    assert.equal(encodeBackupURL(REF), URL1);
    assert.equal(
      encodeBackupURL({ backup: "backup-1", volume: "ab", destURL: "s3://bucket@us-east-1/" }),
      "s3://bucket@us-east-1/?backup=backup-1&volume=ab",
    );
  });

  it("encodeBackupURL() rejects invalid names", () => {
    assert.throws(() => encodeBackupURL({ ...REF, volume: "a" }), InvalidArgumentError);
    assert.throws(() => encodeBackupURL({ ...REF, backup: "x&y" }), InvalidArgumentError);
  });

  it("decodeBackupURL() splits destination, backup and volume", () => {
    assert.deepEqual(decodeBackupURL(URL1), REF);
    assert.deepEqual(
      decodeBackupURL("vfs:///var/backups?volume=vol1&backup=backup-0123456789abcdef"),
      REF,
    );
    assert.deepEqual(decodeBackupURL("s3://b@r////path?backup=bk&volume=v1"), {
      backup: "bk",
      volume: "v1",
      destURL: "s3://b@r////path",
    });
  });

  it("decodeBackupURL() accepts \\u0026 and u0026 in place of &", () => {
    const escaped = "vfs:///var/backups?backup=backup-0123456789abcdef\\u0026volume=vol1";
    assert.equal(escaped.includes("\\u0026"), true);
    assert.deepEqual(decodeBackupURL(escaped), REF);
    assert.deepEqual(
      decodeBackupURL("vfs:///var/backups?backup=backup-0123456789abcdefu0026volume=vol1"),
      REF,
    );
  });

  it("unescapeBackupURL() replaces every separator but leaves names containing u0026", () => {
    assert.equal(
      unescapeBackupURL("vfs:///x?a=1\\u0026b=2\\u0026c=3u0026d=4"),
      "vfs:///x?a=1&b=2&c=3&d=4",
    );
    assert.equal(
      unescapeBackupURL("vfs:///x?backup=bu0026&volume=volu0026"),
      "vfs:///x?backup=bu0026&volume=volu0026",
    );
    assert.equal(unescapeBackupURL("vfs:///u0026x=1"), "vfs:///u0026x=1");
  });

  it("decodeBackupURL() rejects missing parts and invalid names", () => {
    const bad = [
      "vfs:///var/backups",
      "?backup=bk&volume=v1",
      "vfs:///x?volume=v1",
      "vfs:///x?backup=bk",
      "vfs:///x?backup=bk&volume=v",
      "vfs:///x?backup=../bk&volume=v1",
      "vfs:///x?backup=bk&volume=a%2Fb",
    ];
    for (const url of bad) assert.throws(() => decodeBackupURL(url), InvalidArgumentError, url);
    assert.throws(() => decodeBackupURL("vfs:///x?backup=bk&volume=v"), {
      message: 'Invalid backup URL "vfs:///x?backup=bk&volume=v": volume name "v" must be at ' +
        'least 2 characters of a-z, A-Z, 0-9, "_", "." or "-", starting with a letter or digit',
    });
  });

  it("decodeBackupURL() accepts legacy UUID names", () => {
    const u = "vfs:///b?backup=5f1c2b1e-6f0e-4c3a-9d7e-0a1b2c3d4e5f" +
      "&volume=a6b4c3f2-1e0d-4c9b-8a7f-6e5d4c3b2a19";
    assert.equal(decodeBackupURL(u).volume, "a6b4c3f2-1e0d-4c9b-8a7f-6e5d4c3b2a19");
  });

  it("normalizeDestURL() is re-exported for backup URLs", () => {
    assert.equal(normalizeDestURL("s3://b@r////path"), "s3://b@r/path");
  });
});
