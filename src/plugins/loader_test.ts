import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPluginApi } from "./host_api.ts";
import { findPluginFiles, importPlugin, loadPlugins } from "./loader.ts";
import { createExec } from "../runtime/exec.ts";
import { silentLogger } from "../util/log.ts";
import type { BackupStoreApi } from "../api/plugin.ts";
import type { InitFunc } from "../api/driver.ts";

const PLUGIN = `import type { PluginApi } from "convoy/plugin-api";
interface Box { n: number }
export default function setup(api: PluginApi): void {
  const b: Box = { n: 1 };
  api.register("demo" + b.n, async () => ({ name: () => "demo1" }) as never);
}
`;

const noBackup = {} as BackupStoreApi;
const makeApi = (register: (n: string, i: InitFunc) => void) =>
  createPluginApi({
    register,
    log: silentLogger,
    exec: createExec({ timeoutMs: 1000 }),
    backup: noBackup,
  });

describe("plugin loader", () => {
  it("findPluginFiles() finds single files and folders with mod.ts, skipping tests and types", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-plugins-"));
    try {
      await writeFile(join(dir, "a.ts"), PLUGIN);
      await writeFile(join(dir, "b.js"), "export default () => {}");
      await writeFile(join(dir, "a_test.ts"), "");
      await writeFile(join(dir, "types.d.ts"), "");
      await writeFile(join(dir, "README.md"), "");
      await mkdir(join(dir, "folder"));
      await writeFile(join(dir, "folder", "mod.ts"), PLUGIN);
      assert.deepEqual(
        (await findPluginFiles(dir)).map((f) => f.slice(dir.length + 1)),
        ["a.ts", "b.js", "folder/mod.ts"],
      );
      assert.deepEqual(await findPluginFiles(join(dir, "missing")), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("importPlugin() loads a TypeScript plugin through the stripped data: URL path of compiled binaries", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-plugins-"));
    try {
      await writeFile(join(dir, "demo.ts"), PLUGIN);
      const mod = await importPlugin(join(dir, "demo.ts"), { forceDataUrl: true });
      const names: string[] = [];
      await (mod.default as (api: unknown) => void)(makeApi((n) => names.push(n)));
      assert.deepEqual(names, ["demo1"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("loadPlugins() names the failing file when a required driver does not load", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-plugins-"));
    try {
      await writeFile(join(dir, "bad.ts"), "export default 42;\n");
      await assert.rejects(
        loadPlugins({ bundled: [], folders: [dir], required: ["bad"], makeApi, log: silentLogger }),
        /Cannot load driver "bad"; .*bad\.ts failed to load: .*default export must be a setup\(api\) function/,
      );
      const reg = await loadPlugins({
        bundled: [],
        folders: [dir],
        required: [],
        makeApi,
        log: silentLogger,
      });
      assert.deepEqual(reg.names(), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
