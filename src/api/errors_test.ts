import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BackendError, NotFoundError, wrapError } from "./errors.ts";

describe("wrapError", () => {
  it("keeps a ConvoyError other than BackendError and prefixes anything else", () => {
    const missing = new NotFoundError("gone");
    assert.equal(wrapError(missing, "Cannot x"), missing);
    for (const cause of [new BackendError("mount failed"), new Error("EIO"), "text"]) {
      const err = wrapError(cause, "Cannot x");
      assert.ok(err instanceof BackendError);
      assert.match(err.message, /^Cannot x: (mount failed|EIO|text)$/);
      assert.equal(err.cause, cause);
    }
  });
});
