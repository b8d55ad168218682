import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { ConvoyError, errorMessage, InvalidArgumentError } from "../api/errors.ts";
import type { InitFunc } from "../api/driver.ts";
import type { PluginApi, PluginSetup } from "../api/plugin.ts";
import { deno, isBun } from "../runtime/deno.ts";
import type { Logger } from "../util/log.ts";
import type { BundledPlugin } from "./bundled.ts";
import { Registry } from "./registry.ts";

/** Options of loadPlugins. */
export interface LoadOptions {
  bundled: BundledPlugin[];
  /** Folders searched in order after the bundled plugins; missing folders are skipped. */
  folders: string[];
  /** Drivers that must load (the daemon's --drivers); a failure to provide one throws. */
  required: string[];
  /** Builds the api object for one plugin file, given its register function. */
  makeApi: (register: (name: string, init: InitFunc) => void) => PluginApi;
  log: Logger;
}

const PLUGIN_FILE = /\.(ts|js|mjs)$/;
const NOT_PLUGIN = /(_test\.ts|\.d\.ts|\.test\.[jt]s)$/;

/** Plugin entry files of one folder: single files, and sub-folders with mod.ts/mod.js/index.js. */
export async function findPluginFiles(folder: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(folder)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw err;
  }
  const files: string[] = [];
  for (const name of names) {
    if (name.startsWith(".")) continue;
    const path = join(folder, name);
    const st = await stat(path).catch(() => undefined);
    if (!st) continue;
    if (st.isDirectory()) {
      for (const entry of ["mod.ts", "mod.js", "mod.mjs", "index.ts", "index.js", "index.mjs"]) {
        if ((await stat(join(path, entry)).catch(() => undefined))?.isFile()) {
          files.push(join(path, entry));
          break;
        }
      }
    } else if (st.isFile() && PLUGIN_FILE.test(name) && !NOT_PLUGIN.test(name)) {
      files.push(path);
    }
  }
  return files;
}

/**
 * Imports one plugin file. Deno (not compiled) and Bun import TypeScript natively; Node and
 * deno-compiled binaries get the file with its types stripped, as a data: URL (stack.md §5).
 */
export async function importPlugin(
  file: string,
  opts: { forceDataUrl?: boolean } = {},
): Promise<Record<string, unknown>> {
  const standalone = deno?.build.standalone === true || opts.forceDataUrl === true;
  const nativeTs = (deno !== undefined && !standalone) || isBun;
  const url = pathToFileURL(file).href;
  if (!standalone && (nativeTs || !file.endsWith(".ts"))) return await import(url);
  let code = await readFile(file, "utf8");
  if (file.endsWith(".ts")) {
    const amaro = await import("amaro");
    const transformSync = amaro.transformSync ??
      (amaro as unknown as { default: typeof amaro }).default.transformSync;
    code = transformSync(code, { mode: "strip-only" }).code;
  }
  code += `\n//# sourceURL=${url}`;
  return await import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`);
}

function setupOf(mod: Record<string, unknown>, file: string): PluginSetup {
  const d = mod.default as unknown;
  if (typeof d === "function") return d as PluginSetup;
  if (d && typeof d === "object") {
    const { name, init } = d as { name?: unknown; init?: unknown };
    if (typeof name === "string" && typeof init === "function") {
      return (api) => api.register(name, init as InitFunc);
    }
  }
  throw new InvalidArgumentError(
    `${file} is not a Convoy plugin: its default export must be a setup(api) function`,
  );
}

/** The module specifier a runtime's "cannot resolve" error names (Deno, Node, Bun). */
const UNRESOLVED = [
  /Import "([^"]+)" not a dependency/,
  /Relative import path "([^"]+)" not prefixed/,
  /Cannot find (?:package|module) ['"]([^'"]+)['"]/,
  /Failed to resolve module specifier ['"]([^'"]+)['"]/,
];

/**
 * Why a plugin file could not be imported, in one line without terminal colours: an import of
 * a package becomes the plugin rule it breaks, instead of the runtime's advice (e.g. Deno's
 * "deno add npm:zod", which a plugin cannot follow).
 */
export function explainImportError(err: unknown): string {
  // deno-lint-ignore no-control-regex
  const plain = errorMessage(err).replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
  for (const re of UNRESOLVED) {
    const spec = re.exec(plain)?.[1];
    if (spec === undefined || /^(\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(spec)) continue;
    return `it imports "${spec}", but a plugin may import only node: built-ins and, with ` +
      `"import type", the plugin API types ("convoy/plugin-api"); everything else comes from ` +
      `the api object (zod is api.deps.z)`;
  }
  return plain.split("\n").filter((l) => !/^\s*hint:/.test(l)).join(" ").replace(/\s+/g, " ")
    .trim();
}

/** A plugin file that failed to load. */
interface Failure {
  file: string;
  error: string;
}

/**
 * Loads the bundled plugins, then each folder's plugin files, into a fresh Registry. A broken
 * plugin is logged and skipped unless it was meant to provide a required driver; a required
 * driver that nothing registered throws, naming the file that failed.
 */
export async function loadPlugins(opts: LoadOptions): Promise<Registry> {
  const registry = new Registry();
  const failures: Failure[] = [];
  const run = async (source: string, setup: () => Promise<PluginSetup>) => {
    try {
      const fn = await setup();
      const api = opts.makeApi((name, init) => registry.register(name, init, source));
      await fn(api);
      opts.log.debug("plugin loaded", { file: source });
    } catch (err) {
      failures.push({ file: source, error: errorMessage(err) });
      opts.log.warn("plugin failed to load, skipped", { file: source, error: errorMessage(err) });
    }
  };
  for (const b of opts.bundled) await run(b.source, () => Promise.resolve(b.setup));
  for (const folder of opts.folders) {
    for (const file of await findPluginFiles(resolve(folder))) {
      await run(file, async () => {
        let mod: Record<string, unknown>;
        try {
          mod = await importPlugin(file);
        } catch (err) {
          throw new InvalidArgumentError(explainImportError(err));
        }
        return setupOf(mod, file);
      });
    }
  }
  for (const name of opts.required) {
    if (registry.get(name)) continue;
    const likely = failures.filter((f) => pluginNameOf(f.file) === name);
    const shown = likely.length ? likely : failures;
    const detail = shown.length
      ? `; ${shown.map((f) => `${f.file} failed to load: ${f.error}`).join("; ")}`
      : `; no plugin registered it (searched the bundled plugins and ${
        opts.folders.map((f) => `"${f}"`).join(", ") || "no other folder"
      })`;
    throw new ConvoyError("InvalidArgument", `Cannot load driver "${name}"${detail}`);
  }
  return registry;
}

/** The driver name a plugin file most likely provides: its file or folder name. */
function pluginNameOf(file: string): string {
  const parts = file.split("/");
  const base = parts.at(-1)!.replace(PLUGIN_FILE, "");
  return ["mod", "index"].includes(base) ? parts.at(-2) ?? base : base;
}
