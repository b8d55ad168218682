/** The npm build on Node: tsc output runs the daemon and CLI, and loads .ts plugins (type-stripped). */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, symlink } from "node:fs/promises";
import { join } from "node:path";
import { backupRoundTrip, DENO, ok, REPO, run, startDaemon, tempDir } from "./helpers.ts";
import { writeDemoPlugins } from "./plugin_fixtures.ts";

describe("npm package on Node", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let node: string[];

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-npm-"));
    const out = join(dir, "pkg");
    const r = await run(DENO, ["run", "-A", join(REPO, "build_npm.ts"), "--out", out]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const pkg = JSON.parse(await readFile(join(out, "package.json"), "utf8"));
    assert.equal(pkg.bin.convoy, "./src/bin.js");
    node = ["node", join(out, "src", "bin.js")];
    // What `npm install` would put beside the package: its dependencies.
    await symlink(join(REPO, "node_modules"), join(out, "node_modules"));
  });
  after(async () => await cleanup());

  it("runs the daemon and CLI under node, with the vfs and loop drivers and .ts/.js plugins", async () => {
    assert.match(await ok(["--version"], { command: node }), /^Convoy version v/);
    const plugins = await writeDemoPlugins(join(dir, "plugins"));
    const d = await startDaemon({
      root: join(dir, "root"),
      command: node,
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
    const cli = (...args: string[]) => ok(args, { socket: d.socket, command: node });
    try {
      assert.equal(await cli("create", "t1", "--driver", "tsdemo"), "t1");
      assert.equal(await cli("create", "j1", "--driver", "jsdemo"), "j1");
      const store = join(dir, "store");
      await mkdir(store);
      await backupRoundTrip(cli, { name: "v", store, text: "on node" });
      // A block volume: the delta-block engine on Node (gzip blocks: Node 20 has no zstd), its
      // worker threads and their direct-I/O restore writes.
      await backupRoundTrip(cli, {
        name: "b",
        store,
        text: "blocks on node",
        create: ["--driver", "loop", "--size", "64M"],
      });
      await cli("umount", "b1");
      await cli("umount", "b2");
      await cli("delete", "b1", "b2");
      assert.deepEqual(Object.keys(JSON.parse(await cli("list"))).sort(), ["j1", "t1", "v1", "v2"]);
    } finally {
      await d.stop();
    }
  });
});
