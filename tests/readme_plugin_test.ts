/**
 * The README's plugin example is a working driver: this test takes the exact code block marked
 * `<!-- plugin-example: ... -->` from README.md, type-checks it against mod.ts, loads it into a
 * real daemon and drives every volume operation through the CLI.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { driverConformance, pluginInit } from "../conformance.ts";
import type { PluginSetup } from "../mod.ts";
import { importPlugin } from "../src/plugins/loader.ts";
import { convoy, DENO, ok, REPO, run, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";

/** The ```ts block that follows the README's `<!-- <marker>: ... -->` marker. */
async function readmeExample(marker: string): Promise<string> {
  const readme = await readFile(join(REPO, "README.md"), "utf8");
  const at = readme.indexOf(`<!-- ${marker}:`);
  assert.ok(at >= 0, `README.md has no <!-- ${marker}: --> marker`);
  const m = /```ts\n([\s\S]*?)```\n/.exec(readme.slice(at));
  assert.ok(m, `no \`\`\`ts block after the ${marker} marker`);
  return m[1];
}

/** Type-checks the plugin file `file` against mod.ts, imported as "convoy/plugin-api". */
async function assertTypeChecks(dir: string, file: string): Promise<void> {
  const importMap = join(dir, "import_map.json");
  const modUrl = pathToFileURL(join(REPO, "mod.ts")).href;
  await writeFile(importMap, JSON.stringify({ imports: { "convoy/plugin-api": modUrl } }));
  const r = await run(DENO, [
    "check",
    "--quiet",
    "--config",
    join(REPO, "deno.json"),
    "--import-map",
    importMap,
    file,
  ]);
  assert.equal(r.code, 0, r.stderr);
}

/** Convoy's time format, as api.util.now() writes it: "Mon Dec 07 15:49:30 +0000 2026". */
const CONVOY_TIME = /^[A-Z][a-z]{2} [A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2} [+-]\d{4} \d{4}$/;

describe("the README's plugin example", () => {
  let d: TestDaemon;
  let dir: string;
  let cleanup: () => Promise<void>;
  let plugins: string;
  const cli = (args: string[]) => convoy(args, { socket: d.socket });
  const okc = (args: string[]) => ok(args, { socket: d.socket });

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-readme-plugin-"));
    plugins = join(dir, "plugins");
    await mkdir(plugins);
    await writeFile(join(plugins, "mydriver.ts"), await readmeExample("plugin-example"));
    d = await startDaemon({
      root: join(dir, "root"),
      args: ["--plugins", plugins, "--drivers", "vfs", "--drivers", "mydriver"],
    });
  });
  after(async () => {
    await d?.stop();
    await cleanup();
  });

  it("type-checks against the plugin API (mod.ts)", async () => {
    await assertTypeChecks(dir, join(plugins, "mydriver.ts"));
  });

  it("is loaded by the daemon and listed by convoy info", async () => {
    const info = JSON.parse(await okc(["info"]));
    assert.deepEqual(info.General.DriverList, ["vfs", "mydriver"]);
    assert.equal(info.mydriver.Path, join(d.root, "mydriver", "volumes"));
  });

  it("creates, inspects, lists, mounts, unmounts and deletes a volume", async () => {
    assert.equal(await okc(["create", "rv1", "--driver", "mydriver"]), "rv1");
    const inspected = JSON.parse(await okc(["inspect", "rv1"]));
    assert.equal(inspected.Driver, "mydriver");
    assert.match(inspected.CreatedTime, CONVOY_TIME);
    assert.equal(inspected.MountPoint, "");
    const path = join(d.root, "mydriver", "volumes", "rv1");
    assert.deepEqual(inspected.DriverInfo, {
      Driver: "mydriver",
      MountPoint: "",
      Path: path,
      VolumeCreatedAt: inspected.CreatedTime,
      VolumeName: "rv1",
    });

    const listed = JSON.parse(await okc(["list"]));
    assert.deepEqual(Object.keys(listed), ["rv1"]);
    assert.equal(listed.rv1.CreatedTime, inspected.CreatedTime);

    assert.equal(await okc(["mount", "rv1"]), path);
    assert.ok((await stat(path)).isDirectory());
    await writeFile(join(path, "f"), "data");
    assert.equal(JSON.parse(await okc(["inspect", "rv1"])).MountPoint, path);

    const mountAt = await cli(["mount", "rv1", "--mountpoint", join(dir, "elsewhere")]);
    assert.equal(mountAt.code, 1);
    assert.match(mountAt.stderr, /mydriver cannot mount at --mountpoint/);

    const busy = await cli(["delete", "rv1"]);
    assert.equal(busy.code, 1, "a mounted volume is not deleted");
    assert.equal(await readFile(join(path, "f"), "utf8"), "data");

    assert.equal(await okc(["umount", "rv1"]), "");
    assert.equal(JSON.parse(await okc(["inspect", "rv1"])).MountPoint, "");
    assert.equal(await okc(["delete", "rv1"]), "");
    await assert.rejects(stat(path), { code: "ENOENT" });
    assert.equal((await cli(["inspect", "rv1"])).code, 1);
    assert.deepEqual(JSON.parse(await okc(["list"])), {});
  });

  it("keeps its volumes across a daemon restart; delete --reference keeps the data", async () => {
    await okc(["create", "rv2", "--driver", "mydriver"]);
    const created = JSON.parse(await okc(["inspect", "rv2"])).CreatedTime;
    await d.stop();
    d = await startDaemon({
      root: d.root,
      args: ["--plugins", plugins, "--drivers", "vfs", "--drivers", "mydriver"],
    });
    assert.equal(JSON.parse(await okc(["inspect", "rv2"])).CreatedTime, created);
    await okc(["delete", "--reference", "rv2"]);
    assert.ok((await stat(join(d.root, "mydriver", "volumes", "rv2"))).isDirectory());
  });
});

describe("the README's block device adapter example", () => {
  let d: TestDaemon;
  let dir: string;
  let cleanup: () => Promise<void>;
  let plugins: string;
  const okc = (args: string[]) => ok(args, { socket: d.socket });

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-readme-adapter-"));
    plugins = join(dir, "plugins");
    await mkdir(plugins);
    await writeFile(join(plugins, "sparsedev.ts"), await readmeExample("block-adapter-example"));
    d = await startDaemon({
      root: join(dir, "root"),
      args: ["--plugins", plugins, "--drivers", "vfs", "--drivers", "sparsedev"],
    });
  });
  after(async () => {
    await d?.stop();
    await cleanup();
  });

  it("type-checks against the plugin API (mod.ts)", async () => {
    await assertTypeChecks(dir, join(plugins, "sparsedev.ts"));
  });

  it("makes block volumes: mkfs, mount, snapshot, backup, restore into a new volume, delete", async () => {
    const info = JSON.parse(await okc(["info"]));
    assert.equal(info.sparsedev.Path, join(d.root, "sparsedev", "files"));
    assert.equal(await okc(["create", "b1", "--driver", "sparsedev", "--size", "64M"]), "b1");
    const inspected = JSON.parse(await okc(["inspect", "b1"]));
    assert.equal(inspected.DriverInfo.Filesystem, "ext4");
    assert.equal(inspected.DriverInfo.Size, String(64 * 1024 * 1024));
    assert.equal(inspected.DriverInfo.File, join(d.root, "sparsedev", "files", "b1.img"));
    assert.match(inspected.DriverInfo.Device, /^\/dev\/loop\d+$/);

    const mp = await okc(["mount", "b1"]);
    assert.equal(mp, join(d.root, "sparsedev", "mounts", "b1"));
    await writeFile(join(mp, "hello.txt"), "block adapter data");
    await okc(["snapshot", "create", "b1", "--name", "s1"]);
    const store = join(dir, "backups");
    await mkdir(store);
    const url = await okc(["backup", "create", "s1", "--dest", `vfs://${store}`]);
    assert.match(url, /^vfs:\/\/.*\?backup=backup-[0-9a-f]+&volume=b1$/);
    const backup = JSON.parse(await okc(["backup", "inspect", url]));
    assert.equal(backup.DriverName, "sparsedev");

    assert.equal(await okc(["create", "b2", "--backup", url, "--driver", "sparsedev"]), "b2");
    const mp2 = await okc(["mount", "b2"]);
    assert.equal(await readFile(join(mp2, "hello.txt"), "utf8"), "block adapter data");

    for (const v of ["b1", "b2"]) await okc(["umount", v]);
    await okc(["snapshot", "delete", "s1"]);
    await okc(["delete", "b1", "b2"]);
    await assert.rejects(stat(join(d.root, "sparsedev", "files", "b1.img")), { code: "ENOENT" });
    await assert.rejects(stat(join(d.root, "sparsedev", "files", "b1@s1.img")), {
      code: "ENOENT",
    });
    assert.deepEqual(JSON.parse(await okc(["list"])), {});
    await okc(["backup", "delete", url]);
  });
});

// The README's plugin example passes the driver conformance suite, as the README shows a plugin
// author how to run it: the example has no snapshots, no backups and no --mountpoint.
const exampleDir = await mkdtemp(join(tmpdir(), "convoy-readme-conformance-"));
await writeFile(join(exampleDir, "mydriver.ts"), await readmeExample("plugin-example"));
const example = await importPlugin(join(exampleDir, "mydriver.ts"), { forceDataUrl: true });
driverConformance({
  name: "mydriver",
  init: pluginInit(example.default as PluginSetup, "mydriver"),
  capabilities: { snapshots: false, backups: false, customMountPoint: false },
  cleanup: () => rm(exampleDir, { recursive: true, force: true }),
});
