/** The npm build on Node: tsc output runs the daemon and CLI, and loads .ts plugins (type-stripped). */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { spawn } from "node:child_process";
import { canConnect, DENO, REPO, run, tempDir } from "./helpers.ts";
import { JS_PLUGIN, TS_PLUGIN } from "./plugin_fixtures.ts";

describe("npm package on Node", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let bin: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-npm-"));
    const out = join(dir, "pkg");
    const r = await run(DENO, ["run", "-A", join(REPO, "build_npm.ts"), "--out", out]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const pkg = JSON.parse(await readFile(join(out, "package.json"), "utf8"));
    assert.equal(pkg.bin.convoy, "./src/bin.js");
    bin = join(out, "src", "bin.js");
    // What `npm install` would put beside the package: its dependencies.
    await symlink(join(REPO, "node_modules"), join(out, "node_modules"));
  });
  after(async () => await cleanup());

  it("runs the daemon and CLI under node, with the vfs driver and .ts/.js plugins", async () => {
    const node = (args: string[]) => run("node", [bin, ...args]);
    assert.match((await node(["--version"])).stdout, /^Convoy version v/);
    const plugins = join(dir, "plugins");
    await mkdir(plugins);
    await writeFile(join(plugins, "tsdemo.ts"), TS_PLUGIN);
    await writeFile(join(plugins, "jsdemo.js"), JS_PLUGIN);
    const socket = join(dir, "convoy.sock");
    const daemon = spawn("node", [
      bin,
      "--socket",
      socket,
      "daemon",
      "--root",
      join(dir, "root"),
      "--no-docker-spec",
      "--plugins",
      plugins,
      "--drivers",
      "vfs",
      "--drivers",
      "tsdemo",
      "--drivers",
      "jsdemo",
    ], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    daemon.stdout!.on("data", (c) => (out += c));
    daemon.stderr!.on("data", (c) => (out += c));
    const exited = new Promise((r) => daemon.on("exit", r));
    try {
      for (let i = 0; i < 150 && !(await canConnect(socket)); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(await canConnect(socket), out);
      const cli = async (...args: string[]) => {
        const r = await node(["--socket", socket, ...args]);
        assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
        return r.stdout.trim();
      };
      assert.equal(await cli("create", "t1", "--driver", "tsdemo"), "t1");
      assert.equal(await cli("create", "j1", "--driver", "jsdemo"), "j1");
      const mp = await cli("mount", await cli("create", "v1"));
      await writeFile(join(mp, "f"), "on node");
      await cli("snapshot", "create", "v1", "--name", "s1");
      const store = join(dir, "store");
      await mkdir(store);
      const url = await cli("backup", "create", "s1", "--dest", `vfs://${store}`);
      await cli("create", "v2", "--backup", url);
      assert.equal(await readFile(join(await cli("mount", "v2"), "f"), "utf8"), "on node");
      assert.deepEqual(Object.keys(JSON.parse(await cli("list"))).sort(), ["j1", "t1", "v1", "v2"]);
    } finally {
      process.kill(daemon.pid!, "SIGTERM");
      await exited;
    }
  });
});
