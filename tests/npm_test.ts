/** The npm build on Node: tsc output runs the daemon and CLI, and loads .ts plugins (type-stripped). */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  canConnect,
  DENO,
  ok,
  REPO,
  run,
  servesBundledAndPluginDrivers,
  startDaemon,
  tempDir,
} from "./helpers.ts";

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
    const root = JSON.parse(await readFile(join(REPO, "package.json"), "utf8"));
    assert.deepEqual(pkg.engines, root.engines, "the package states the engines it was built for");
    node = ["node", join(out, "src", "bin.js")];
    // What `npm install` would put beside the package: its dependencies.
    await symlink(join(REPO, "node_modules"), join(out, "node_modules"));
  });
  after(async () => await cleanup());

  it("runs the daemon and CLI under node, with the vfs and loop drivers and .ts/.js plugins", async () => {
    assert.match(await ok(["--version"], { command: node }), /^Convoy version v/);
    // A node without zstd in node:zlib stores the loop volume's blocks with gzip.
    await servesBundledAndPluginDrivers(node, { dir, text: "on node" });
  });

  it("exports convoy/conformance: a plugin author's node --test runs the suite on a driver", async () => {
    const author = join(dir, "author");
    await mkdir(join(author, "node_modules"), { recursive: true });
    await symlink(join(dir, "pkg"), join(author, "node_modules", "convoy"));
    await writeFile(
      join(author, "vfs.test.mjs"),
      [
        `import { driverConformance, pluginInit } from "convoy/conformance";`,
        `import setup from ${
          JSON.stringify(pathToFileURL(join(dir, "pkg/plugins/vfs/mod.js")).href)
        };`,
        `driverConformance({ name: "vfs", init: pluginInit(setup, "vfs") });`,
      ].join("\n"),
    );
    const r = await run("node", ["--test", "--test-reporter=tap", join(author, "vfs.test.mjs")]);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /driver conformance: vfs/);
    assert.match(r.stdout, /# pass 11\n/);
    assert.match(r.stdout, /# fail 0\n/);
  });

  it("runs the daemon with V8's young generation capped, and stops it with its launcher", async () => {
    const root = join(dir, "root-cap");
    const cmdline = async (pid: number) =>
      (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    const daemonOf = async (launcher: number) => {
      const kids = (await readFile(`/proc/${launcher}/task/${launcher}/children`, "utf8")).trim();
      assert.match(kids, /^\d+$/, "the launcher runs one child: the daemon");
      return Number(kids);
    };
    const alive = (pid: number) => readFile(`/proc/${pid}/cmdline`).then(() => true, () => false);

    const d = await startDaemon({ root, command: node, args: ["--drivers", "vfs"] });
    const child = await daemonOf(d.proc.pid!);
    assert.ok((await cmdline(child)).includes("--max-semi-space-size=2"));
    assert.equal(await ok(["create", "c1"], { socket: d.socket, command: node }), "c1");
    assert.equal(await d.stop(), 0, "SIGTERM reaches the daemon, which exits cleanly");
    assert.equal(await alive(child), false);

    // A launcher killed outright: the daemon notices and shuts down as on SIGTERM.
    const d2 = await startDaemon({ root, command: node });
    const child2 = await daemonOf(d2.proc.pid!);
    await d2.kill9();
    const deadline = Date.now() + 15_000;
    while ((await alive(child2)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(await alive(child2), false, "the daemon outlived its launcher");
    assert.equal(await canConnect(d2.socket), false);
  });
});
