import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { generateName, isValidName, validateName } from "./names.ts";

describe("names", () => {
  it("isValidName() follows Convoy's rule plus a 255-character limit", () => {
    for (const ok of ["ubuntu14.04_v1", "vol.1_1-0", "ab", "A1", "x".repeat(255)]) {
      assert.equal(isValidName(ok), true, ok);
    }
    for (
      const bad of [
        "_09123a.",
        "123/456.a",
        "a",
        "",
        "vol ",
        "../etc",
        "a\nb",
        "x".repeat(256),
        "-ab",
        "a\u0000b",
      ]
    ) {
      assert.equal(isValidName(bad), false, JSON.stringify(bad));
    }
  });

  it("validateName() throws an InvalidArgument error quoting the name", () => {
    assert.throws(() => validateName("a/b", "volume"), (err: Error & { code?: string }) => {
      assert.equal(err.code, "InvalidArgument");
      assert.match(err.message, /Invalid volume name "a\/b"/);
      return true;
    });
  });

  it("generateName() makes Convoy's <prefix>-<16 hex of a UUIDv4> names that pass validation", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const n = generateName("volume");
      assert.match(n, /^volume-[0-9a-f]{12}4[0-9a-f]{3}$/);
      assert.equal(isValidName(n), true);
      seen.add(n);
    }
    assert.ok(seen.size > 45);
  });
});
