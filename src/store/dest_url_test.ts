import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../api/errors.ts";
import { normalizeDestURL, parseS3URL, parseVfsURL } from "./dest_url.ts";

describe("dest_url", () => {
  it("normalizeDestURL() keeps vfs:///path, with or without trailing slash", () => {
    assert.equal(
      normalizeDestURL("vfs:///tmp/convoy_test/Backup"),
      "vfs:///tmp/convoy_test/Backup",
    );
    assert.equal(normalizeDestURL("vfs:///mnt/backups/"), "vfs:///mnt/backups/");
    assert.deepEqual(parseVfsURL("vfs:///mnt/b%20x"), { path: "/mnt/b x", url: "vfs:///mnt/b x" });
  });

  it("normalizeDestURL() trims leading slashes of an s3 path", () => {
    assert.equal(normalizeDestURL("s3://bucket@us-east-1/"), "s3://bucket@us-east-1/");
    assert.equal(normalizeDestURL("s3://b@r////path"), "s3://b@r/path");
    assert.equal(
      normalizeDestURL("s3://bucket@region/test/volume/"),
      "s3://bucket@region/test/volume/",
    );
    assert.equal(normalizeDestURL("s3://bucket/path"), "s3://bucket/path");
  });

  it("parseS3URL() reads bucket@region and bucket-only forms", () => {
    assert.deepEqual(parseS3URL("s3://bkt@eu-west-1/a/b"), {
      bucket: "bkt",
      region: "eu-west-1",
      path: "a/b",
      url: "s3://bkt@eu-west-1/a/b",
    });
    assert.deepEqual(parseS3URL("s3://bkt//a"), { bucket: "bkt", path: "a", url: "s3://bkt/a" });
  });

  it("parseS3URL() rejects a URL without path or bucket", () => {
    for (const bad of ["s3://b@r", "s3://bucket", "s3:///path", "s3://@r/p"]) {
      assert.throws(() => parseS3URL(bad), InvalidArgumentError, bad);
    }
  });

  it("normalizeDestURL() rejects vfs URLs with a host, and other schemes", () => {
    assert.throws(() => normalizeDestURL("vfs://host/path"), {
      message: 'Invalid backup destination "vfs://host/path": must be vfs:///absolute/path',
    });
    assert.throws(() => normalizeDestURL("ftp://x"), {
      name: "InvalidArgumentError",
      message: 'Unsupported backup destination "ftp://x": scheme "ftp" is not supported',
    });
    assert.throws(() => normalizeDestURL(""), {
      message: "Invalid backup destination: URL is empty",
    });
    assert.throws(() => normalizeDestURL("/just/a/path"), InvalidArgumentError);
  });
});
