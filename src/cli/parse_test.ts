import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { InvalidArgumentError as CommanderArgumentError } from "@commander-js/extra-typings";
import {
  collect,
  driverOptArg,
  durationArg,
  iopsArg,
  normalizeBackupUrl,
  sizeArg,
  splitDriverOpt,
  unescapeAmpersands,
} from "./parse.ts";

describe("option parsers", () => {
  it("splitDriverOpt() splits on the first = only", () => {
    assert.deepEqual(splitDriverOpt("vfs.path=/a=b"), ["vfs.path", "/a=b"]);
    assert.deepEqual(splitDriverOpt("dm.thinpoolsize="), ["dm.thinpoolsize", ""]);
  });

  it("parseArgs() rejects --driver-opts without = or with an empty key", () => {
    assert.throws(() => splitDriverOpt("vfs.path"), CommanderArgumentError);
    assert.throws(() => splitDriverOpt("=x"), /the key is empty/);
    assert.throws(() => driverOptArg(" =x", undefined), CommanderArgumentError);
  });

  it("collect() and driverOptArg() accumulate repeated values", () => {
    assert.deepEqual(collect("b", collect("a", undefined)), ["a", "b"]);
    assert.deepEqual(driverOptArg("k=v", ["a=b"]), ["a=b", "k=v"]);
  });

  it("sizeArg() parses sizes and reports bad ones as usage errors", () => {
    assert.equal(sizeArg("100m"), 100 * 1024 ** 2);
    assert.equal(sizeArg("4096"), 4096);
    assert.throws(() => sizeArg("10x"), CommanderArgumentError);
    assert.throws(() => sizeArg("-3"), CommanderArgumentError);
  });

  it("iopsArg() accepts only non-negative integers", () => {
    assert.equal(iopsArg("300"), 300);
    for (const bad of ["", "abc", "1.5", "-1", "9".repeat(20)]) {
      assert.throws(() => iopsArg(bad), CommanderArgumentError, bad);
    }
  });

  it("durationArg() keeps a valid duration text", () => {
    assert.equal(durationArg("1m30s"), "1m30s");
    assert.throws(() => durationArg("soon"), CommanderArgumentError);
  });
});

describe("backup URL escaping", () => {
  const url = "s3://b@us-east-1/p?backup=backup-1&volume=v1";

  it("normalizeBackupUrl() accepts the \\u0026 and u0026 forms", () => {
    assert.equal(normalizeBackupUrl(url), url);
    assert.equal(normalizeBackupUrl(url.replace("&", "\\u0026")), url);
    assert.equal(normalizeBackupUrl(url.replace("&", "u0026")), url);
    assert.equal(normalizeBackupUrl("vfs:///b/volu0026x"), "vfs:///b/volu0026x");
  });

  it("unescapeAmpersands() replaces every escaped & but keeps escaped backslashes", () => {
    assert.equal(unescapeAmpersands("a\\u0026b\\u0026\\u0026c"), "a&b&&c");
    assert.equal(unescapeAmpersands('{"k": "x\\\\u0026"}'), '{"k": "x\\\\u0026"}');
    assert.equal(unescapeAmpersands('{"k": "x\\\\\\u0026"}'), '{"k": "x\\\\&"}');
    const json = JSON.stringify({ [url]: { BackupURL: url } }).replaceAll("&", "\\u0026");
    assert.deepEqual(JSON.parse(unescapeAmpersands(json)), { [url]: { BackupURL: url } });
  });
});
