import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { convoy, ok, startDaemon, tempDir } from "./helpers.ts";
import { writeDemoPlugins } from "./plugin_fixtures.ts";

describe("third-party plugins", () => {
  it("loads a .ts and a .js plugin from --plugins and serves their volumes through the CLI", async () => {
    const { dir, cleanup } = await tempDir();
    const plugins = await writeDemoPlugins(join(dir, "extra-plugins"));
    const root = join(dir, "root");
    const d = await startDaemon({
      root,
      args: [
        "--plugins",
        plugins,
        "--drivers",
        "vfs",
        "--drivers",
        "tsdemo",
        "--drivers",
        "jsdemo",
        "--driver-opts",
        "tsdemo.greeting=a=b",
      ],
    });
    const socket = d.socket;
    try {
      const info = JSON.parse(await ok(["info"], { socket }));
      assert.deepEqual(info.General.DriverList, ["vfs", "tsdemo", "jsdemo"]);
      assert.equal(info.tsdemo.Root, join(root, "tsdemo"));
      assert.equal(info.jsdemo.ApiVersion, "1");

      assert.equal(await ok(["create", "tsvol", "--driver", "tsdemo"], { socket }), "tsvol");
      assert.equal(await ok(["create", "jsvol", "--driver", "jsdemo"], { socket }), "jsvol");
      const list = JSON.parse(await ok(["list"], { socket }));
      assert.equal(list.tsvol.Driver, "tsdemo");
      assert.equal(list.jsvol.Driver, "jsdemo");
      assert.equal(
        list.tsvol.DriverInfo.Greeting,
        "a=b",
        "driver-opts split on the first '=' only",
      );
      const mp = await ok(["mount", "tsvol"], { socket });
      assert.equal(mp, join(root, "tsdemo", "volumes", "tsvol"));
      assert.ok((await stat(mp)).isDirectory());
      assert.equal(JSON.parse(await ok(["inspect", "tsvol"], { socket })).MountPoint, mp);

      const snap = await convoy(["snapshot", "create", "tsvol"], { socket });
      assert.equal(snap.code, 1);
      assert.match(snap.stderr, /driver "tsdemo" does not support snapshots/);

      await ok(["umount", "tsvol"], { socket });
      await ok(["delete", "tsvol", "jsvol"], { socket });
      assert.deepEqual(JSON.parse(await ok(["list"], { socket })), {});
    } finally {
      await d.stop();
      await cleanup();
    }
  });

  it("stops the daemon with a message naming the file when a driver in --drivers fails to load", async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const plugins = join(dir, "p");
      await mkdir(plugins);
      await writeFile(
        join(plugins, "broken.ts"),
        "export default function setup(api) { throw new Error('kaput'); }\n",
      );
      const d = await startDaemon({
        root: join(dir, "root"),
        args: ["--plugins", plugins, "--drivers", "broken"],
        waitForSocket: false,
      });
      assert.notEqual(await d.exited, 0);
      assert.match(d.output(), /Cannot load driver "broken"/);
      assert.match(d.output(), /broken\.ts failed to load: kaput/);

      const m = await startDaemon({
        root: join(dir, "root2"),
        args: ["--drivers", "nosuchdriver"],
        waitForSocket: false,
      });
      assert.notEqual(await m.exited, 0);
      assert.match(m.output(), /Cannot load driver "nosuchdriver"/);
    } finally {
      await cleanup();
    }
  });

  it("skips a broken plugin that no --drivers entry names, and rejects a second registration of a name", async () => {
    const { dir, cleanup } = await tempDir();
    const plugins = join(dir, "p");
    await mkdir(plugins);
    await writeFile(join(plugins, "broken.js"), "this is not javascript\n");
    await writeFile(
      join(plugins, "dupvfs.js"),
      "export default function setup(api) { api.register('vfs', async () => ({})); }\n",
    );
    const d = await startDaemon({ root: join(dir, "root"), args: ["--plugins", plugins] });
    try {
      assert.equal(await ok(["create", "vol1"], { socket: d.socket }), "vol1");
      assert.match(d.output(), /broken\.js/);
      assert.match(
        d.output(),
        /Cannot register driver \\?"vfs\\?" from .*dupvfs\.js: already registered by plugins\/vfs\/mod\.ts/,
      );
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});
