import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { convoy, ok, startDaemon, tempDir } from "./helpers.ts";

/** A third-party driver as a user would write it: one file, `import type` only. */
const TS_PLUGIN = `
import type { ConvoyDriver, PluginApi, StringMap } from "convoy/plugin-api";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export default function setup(api: PluginApi): void {
  api.register("tsdemo", async (root: string, config: StringMap): Promise<ConvoyDriver> => {
    const vols = new Map<string, { created: string; mounted: boolean }>();
    const state = join(root, "state.json");
    const saved = await api.util.readJSON<Record<string, { created: string; mounted: boolean }>>(state);
    for (const [k, v] of Object.entries(saved ?? {})) vols.set(k, v);
    const save = () => api.util.writeJSON(state, Object.fromEntries(vols));
    const get = (id: string) => {
      const v = vols.get(id);
      if (!v) throw new api.errors.NotFoundError(\`Volume "\${id}" does not exist\`);
      return v;
    };
    const dir = (id: string) => join(root, "volumes", id);
    const volumeOps = {
      name: () => "tsdemo",
      async createVolume(id: string) {
        await mkdir(dir(id), { recursive: true });
        vols.set(id, { created: api.util.now(), mounted: false });
        await save();
      },
      async deleteVolume(id: string, opts: StringMap) {
        get(id);
        if (opts.ReferenceOnly !== "true") await rm(dir(id), { recursive: true, force: true });
        vols.delete(id);
        await save();
      },
      async mountVolume(id: string) {
        get(id).mounted = true;
        await save();
        return dir(id);
      },
      async umountVolume(id: string) {
        get(id).mounted = false;
        await save();
      },
      mountPoint: (id: string) => (get(id).mounted ? dir(id) : ""),
      getVolumeInfo: (id: string) => ({ VolumeName: id, VolumeCreatedAt: get(id).created, Greeting: config["tsdemo.greeting"] ?? "" }),
      listVolume: () => Object.fromEntries([...vols.keys()].map((k) => [k, { VolumeName: k }])),
    };
    await stat(root).catch(() => mkdir(root, { recursive: true }));
    return {
      name: () => "tsdemo",
      info: () => ({ Root: root }),
      volumeOps: () => volumeOps,
      snapshotOps: () => { throw new api.errors.NotSupportedError("tsdemo has no snapshots"); },
      backupOps: () => { throw new api.errors.NotSupportedError("tsdemo has no backups"); },
    };
  });
}
`;

/** The same kind of driver in plain JavaScript. */
const JS_PLUGIN = `
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
export default function setup(api) {
  api.register("jsdemo", async (root) => {
    const vols = new Map();
    const notSupported = () => { throw new api.errors.NotSupportedError("jsdemo: not supported"); };
    return {
      name: () => "jsdemo",
      info: () => ({ Root: root, ApiVersion: String(api.apiVersion) }),
      volumeOps: () => ({
        name: () => "jsdemo",
        createVolume: async (id) => { await mkdir(join(root, id), { recursive: true }); vols.set(id, api.util.now()); },
        deleteVolume: (id) => { vols.delete(id); },
        mountVolume: (id) => join(root, id),
        umountVolume: () => {},
        mountPoint: () => "",
        getVolumeInfo: (id) => {
          if (!vols.has(id)) throw new api.errors.NotFoundError("no volume " + id);
          return { VolumeName: id, VolumeCreatedAt: vols.get(id) };
        },
        listVolume: () => Object.fromEntries([...vols.keys()].map((k) => [k, { VolumeName: k }])),
      }),
      snapshotOps: notSupported,
      backupOps: notSupported,
    };
  });
}
`;

describe("third-party plugins", () => {
  it("loads a .ts and a .js plugin from --plugins and serves their volumes through the CLI", async () => {
    const { dir, cleanup } = await tempDir();
    const plugins = join(dir, "extra-plugins");
    await mkdir(plugins);
    await writeFile(join(plugins, "tsdemo.ts"), TS_PLUGIN);
    await writeFile(join(plugins, "jsdemo.js"), JS_PLUGIN);
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
