/**
 * The single binary CI ships (`bun build --compile`): it runs the daemon and the CLI, and loads
 * third-party plugins (.ts and .js) from disk.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ok, REPO, run, startDaemon, tempDir } from "./helpers.ts";
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
      assert.equal(await cli("create", "v1"), "v1");
      const mp = await cli("mount", "v1");
      await writeFile(join(mp, "f"), "in the binary");
      await cli("snapshot", "create", "v1", "--name", "s1");
      const store = join(dir, "store");
      await mkdir(store);
      const url = await cli("backup", "create", "s1", "--dest", `vfs://${store}`);
      await cli("create", "v2", "--backup", url);
      assert.equal(await readFile(join(await cli("mount", "v2"), "f"), "utf8"), "in the binary");
      // A block volume: the delta-block engine and its worker threads inside the binary.
      await cli("create", "b1", "--driver", "loop", "--size", "64M");
      await writeFile(join(await cli("mount", "b1"), "g"), "blocks in the binary");
      await cli("snapshot", "create", "b1", "--name", "bs1");
      const burl = await cli("backup", "create", "bs1", "--dest", `vfs://${store}`);
      await cli("create", "b2", "--backup", burl);
      assert.equal(
        await readFile(join(await cli("mount", "b2"), "g"), "utf8"),
        "blocks in the binary",
      );
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
