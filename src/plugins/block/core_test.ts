import { describe, it } from "node:test";
import assert from "node:assert/strict";
import * as errors from "../../api/errors.ts";
import { inContext } from "./core.ts";

describe("block framework core", () => {
  it("inContext() does not repeat the context an adapter's error already gives", () => {
    const what = 'Cannot create volume "db1" from backup "ebs://r/snap-1"';
    const own = new errors.BackendError('Cannot create volume "db1": Throttling: slow down');
    assert.equal(inContext(own, what), own);
    const typed = new errors.InvalidArgumentError('Cannot create volume "db1": bad type');
    assert.equal(inContext(typed, what), typed);
  });

  it("inContext() puts the context before other errors, keeping a typed error's class", () => {
    const what = 'Cannot create volume "db1"';
    const other = inContext(new errors.BackendError('Cannot execute "mkfs": exit 1'), what);
    assert.ok(other instanceof errors.BackendError);
    assert.equal(other.message, 'Cannot create volume "db1": Cannot execute "mkfs": exit 1');
    const near = inContext(new errors.BackendError('Cannot create volume "db10": x'), what);
    assert.equal((near as Error).message, `${what}: Cannot create volume "db10": x`);
    const bare = inContext(new errors.NotFoundError("no such volume"), what);
    assert.ok(bare instanceof errors.NotFoundError);
    assert.equal(bare.message, `${what}: no such volume`);
    const plain = inContext(new Error("EIO"), what);
    assert.ok(plain instanceof errors.BackendError);
    assert.equal(plain.message, `${what}: EIO`);
  });
});
