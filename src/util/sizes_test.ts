import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { parseSize } from "./sizes.ts";
import { parseDuration } from "./duration.ts";

describe("parseSize()", () => {
  it("parses bytes and K/M/G/T suffixes as powers of 1024, as Convoy", () => {
    assert.equal(parseSize("100k"), 102400);
    assert.equal(parseSize("100m"), 104857600);
    assert.equal(parseSize("100g"), 107374182400);
    assert.equal(parseSize("2G"), 2147483648);
    assert.equal(parseSize("1T"), 1024 ** 4);
    assert.equal(parseSize("1073741824"), 1073741824);
    assert.equal(parseSize(""), 0);
    assert.equal(parseSize("0k"), 0);
  });

  it("rejects negative, fractional and garbage sizes", () => {
    for (const bad of ["-5", "1.5g", "ten", "10 G", "10x", "99999999999999999999"]) {
      assert.throws(() => parseSize(bad), /Invalid size/, bad);
    }
  });
});

describe("parseDuration()", () => {
  it("parses Go-style durations and plain seconds", () => {
    assert.equal(parseDuration("1m"), 60_000);
    assert.equal(parseDuration("90s"), 90_000);
    assert.equal(parseDuration("2m30s"), 150_000);
    assert.equal(parseDuration("1h"), 3_600_000);
    assert.equal(parseDuration("45"), 45_000);
    assert.equal(parseDuration("500ms"), 500);
  });

  it("rejects anything else", () => {
    for (const bad of ["", "m", "1 m", "1d", "abc"]) {
      assert.throws(() => parseDuration(bad), /Invalid duration/);
    }
  });
});
