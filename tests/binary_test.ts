/**
 * The single binary CI ships (`bun build --compile`): it runs the daemon and the CLI, and loads
 * third-party plugins (.ts and .js) from disk.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { backupRoundTrip, ok, REPO, run, startDaemon, tempDir } from "./helpers.ts";
import { writeDemoPlugins } from "./plugin_fixtures.ts";

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
    const plugins = await writeDemoPlugins(join(dir, "plugins"));
    const d = await startDaemon({
      root: join(dir, "root"),
      command: [bin],
      args: [
        "--plugins",
        plugins,
        "--drivers",
        "vfs",
        "--drivers",
        "tsdemo",
        "--drivers",
        "jsdemo",
        "--drivers",
        "loop",
      ],
    });
    const cli = (...args: string[]) => ok(args, { socket: d.socket, command: [bin] });
    try {
      assert.equal(await cli("create", "t1", "--driver", "tsdemo"), "t1");
      assert.equal(await cli("create", "j1", "--driver", "jsdemo"), "j1");
      const store = join(dir, "store");
      await mkdir(store);
      await backupRoundTrip(cli, { name: "v", store, text: "in the binary" });
      // A block volume: the delta-block engine and its worker threads inside the binary.
      await backupRoundTrip(cli, {
        name: "b",
        store,
        text: "blocks in the binary",
        create: ["--driver", "loop", "--size", "64M"],
      });
      await cli("umount", "b1");
      await cli("umount", "b2");
      await cli("delete", "b1", "b2");
      const list = JSON.parse(await cli("list"));
      assert.deepEqual(Object.keys(list).sort(), ["j1", "t1", "v1", "v2"]);
      assert.equal(list.t1.Driver, "tsdemo");
      assert.equal(list.j1.Driver, "jsdemo");
    } finally {
      await d.stop();
    }
  });
});
