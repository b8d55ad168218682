import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { needsYoungGenCap } from "./young_gen.ts";

describe("needsYoungGenCap()", () => {
  const none = { env: {}, execArgv: [], node: true };
  it("needsYoungGenCap() asks for the cap when Node starts the daemon without one", () => {
    assert.equal(needsYoungGenCap(["--socket", "/s", "daemon", "--drivers", "vfs"], none), true);
    assert.equal(needsYoungGenCap(["list"], none), false);
  });
  it("needsYoungGenCap() accepts a cap from the command line or NODE_OPTIONS", () => {
    assert.equal(
      needsYoungGenCap(["daemon"], { ...none, execArgv: ["--max-semi-space-size=4"] }),
      false,
    );
    assert.equal(
      needsYoungGenCap(["daemon"], {
        ...none,
        env: { NODE_OPTIONS: "--enable-source-maps --max-semi-space-size=1" },
      }),
      false,
    );
    assert.equal(
      needsYoungGenCap(["daemon"], { ...none, env: { NODE_OPTIONS: "--enable-source-maps" } }),
      true,
    );
  });
  it("needsYoungGenCap() leaves other runtimes alone", () => {
    assert.equal(needsYoungGenCap(["daemon"], { ...none, node: false }), false);
    // This test runs under Deno, which takes the flag on its own command line.
    assert.equal(needsYoungGenCap(["daemon"], { env: {}, execArgv: [] }), false);
  });
});
