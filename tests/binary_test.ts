/**
 * The single binary CI ships (`bun build --compile`): it runs the daemon and the CLI, and loads
 * third-party plugins (.ts and .js) from disk.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { REPO, run, servesBundledAndPluginDrivers, tempDir } from "./helpers.ts";

describe("single binary (bun build --compile)", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let bin: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-bin-"));
    bin = join(dir, "convoy");
    const r = await run(join(REPO, "node_modules", ".bin", "bun"), [
      "build",
      "--compile",
      "--minify",
      join(REPO, "src", "bin.ts"),
      "--outfile",
      bin,
    ]);
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => await cleanup());

  it("serves volumes from bundled drivers and from .ts and .js plugins on disk", async () => {
    assert.match((await run(bin, ["--version"])).stdout, /^Convoy version v\d+\.\d+\.\d+/);
    await servesBundledAndPluginDrivers([bin], { dir, text: "in the binary" });
  });
});
