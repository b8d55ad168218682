import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createPluginApi } from "./host_api.ts";
import { explainImportError, findPluginFiles, importPlugin, loadPlugins } from "./loader.ts";
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

  it("loadPlugins() explains a plugin that imports a package, without colours or runtime hints", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-plugins-"));
    try {
      await writeFile(
        join(dir, "zodder.ts"),
        'import { z } from "zod";\nexport default (api: any) => api.register("zodder", () => z);\n',
      );
      const err = await loadPlugins({
        bundled: [],
        folders: [dir],
        required: ["zodder"],
        makeApi,
        log: silentLogger,
      }).then(() => undefined, (e: Error) => e);
      assert.ok(err instanceof Error);
      assert.equal(
        err.message,
        `Cannot load driver "zodder"; ${
          join(dir, "zodder.ts")
        } failed to load: it imports "zod", ` +
          `but a plugin may import only node: built-ins and, with "import type", the plugin API ` +
          `types ("convoy/plugin-api"); everything else comes from the api object (zod is api.deps.z)`,
      );
      assert.ok(!err.message.includes("\x1b"), "no terminal escapes");
      assert.doesNotMatch(err.message, /deno add|hint/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("explainImportError() names the package from Node's and Bun's errors and strips colours", () => {
    for (
      const message of [
        "Cannot find package 'left-pad' imported from /etc/convoy/plugins/a.js",
        'Cannot find module "left-pad" from "/etc/convoy/plugins/a.js"',
        'Failed to resolve module specifier "left-pad" from "data:text/javascript;base64,AA"',
        'Import "left-pad" not a dependency\n  \x1b[0m\x1b[36mhint:\x1b[0m try `deno add npm:left-pad`',
      ]
    ) {
      assert.match(explainImportError(new Error(message)), /^it imports "left-pad", but a plugin/);
    }
    assert.equal(
      explainImportError(new Error('Module not found "file:///p/x.ts".\n  \x1b[36mhint:\x1b[0m x')),
      'Module not found "file:///p/x.ts".',
    );
    assert.equal(
      explainImportError(new Error("Cannot find module './helper.js' from '/p/a.js'")),
      "Cannot find module './helper.js' from '/p/a.js'",
    );
  });
});
