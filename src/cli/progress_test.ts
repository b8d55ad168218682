import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { progressLine } from "./progress.ts";

describe("progressLine()", () => {
  it("shows blocks for a delta-block job and bytes for a single-file one", () => {
    const blocks = progressLine({ Done: 3, Total: 4, Bytes: 6 * 2 ** 20, Rate: 2e6 }, 8);
    assert.equal(blocks, "[######..] 75% 3/4 blocks 6.3 MB 2.0 MB/s");
    const bytes = progressLine({ Done: 5e6, Total: 2e7, Bytes: 5e6, Rate: 1e6 }, 8);
    assert.equal(bytes, "[##......] 25% 5.0 MB/20.0 MB 1.0 MB/s");
  });
});
