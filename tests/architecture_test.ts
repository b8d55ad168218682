/**
 * Keeps the shape of the code (README "Architecture"): drivers import only the plugin API's
 * types and node: built-ins; the folders of src/ import each other one way, down the layers
 * below; no new import cycle between files. Test files (`*_test.ts`) are not checked.
 *
 * Today's exceptions are listed in KNOWN_VIOLATIONS, which must match exactly: a new violation
 * fails, and so does a listed one that is gone (remove it from the list, which only shrinks).
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * The layers, bottom first. A file may import files of its own layer's folder and of lower
 * layers, never of a higher one or of another folder in its own layer. A layer names src/
 * folders (`src/<name>/`), top-level files of src/ (`<name>.ts`), `drivers` (plugins/*) and the
 * repository's entry modules (mod.ts is api; conformance.ts is testing).
 */
export const LAYERS: string[][] = [
  ["api", "version"], //      src/api: the driver contract, plugin API types, errors (+ mod.ts)
  ["util", "runtime"], //     helpers without Convoy concepts; the runtime seam (exec, listen)
  ["store"], //               object stores (vfs, s3, memory)
  ["backup"], //              backup engine, records, layout
  ["drivers"], //             plugins/*: the bundled drivers (only through mod.ts)
  ["plugins"], //             the host side of plugins: loader, registry, the `api` object
  ["daemon"], //              service, REST and Docker handlers
  ["testing"], //             the conformance suite (+ conformance.ts)
  ["cli"], //                 commander program, client
  ["main"], //                src/main.ts
  ["bin"], //                 src/bin.ts
];

/**
 * Violations that exist today, each `layer: <from> -> <to>` (an import against the layers),
 * `driver: <from> -> <to>` (a driver importing more than mod.ts types and node:) or
 * `cycle: <file> <file> ...` (files that import each other, sorted). Issue 15 removes them.
 */
export const KNOWN_VIOLATIONS: string[] = [];

/** The layer (group name) of a repository file, or undefined for files the rules ignore. */
export function layerOf(file: string): string | undefined {
  if (file === "mod.ts") return "api";
  if (file === "conformance.ts") return "testing";
  if (file.startsWith("plugins/")) return "drivers";
  const m = /^src\/(?:([^/]+)\/|([^/]+)\.ts$)/.exec(file);
  return m ? (m[1] ?? m[2]) : undefined;
}

function rankOf(layer: string): number {
  const i = LAYERS.findIndex((g) => g.includes(layer));
  if (i < 0) throw new Error(`layer "${layer}" is not in LAYERS (tests/architecture_test.ts)`);
  return i;
}

/** One import of a file: the specifier, and whether only types are imported. */
export interface Import {
  spec: string;
  typeOnly: boolean;
}

/** The imports and re-exports of a module's source (comments ignored). */
export function importsOf(source: string): Import[] {
  const code = source.replace(/\/\*[\s\S]*?\*\//g, "").replace(/^\s*\/\/.*$/gm, "");
  const out: Import[] = [];
  const re =
    /(?:^|[;\n])\s*(import|export)\s+(type\s+)?(?:[\w*{}\s,$]*?\s+from\s+)?["']([^"']+)["']|\bimport\(\s*["']([^"']+)["']\s*\)/g;
  for (const m of code.matchAll(re)) {
    if (m[4]) out.push({ spec: m[4], typeOnly: false });
    else out.push({ spec: m[3], typeOnly: m[2] !== undefined });
  }
  return out;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(join(REPO, dir), { withFileTypes: true })) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory()) out.push(...await filesUnder(path));
    else if (e.name.endsWith(".ts") && !e.name.endsWith("_test.ts")) out.push(path);
  }
  return out;
}

/** Every checked file with its imports, relative ones resolved to repository paths. */
export async function importGraph(
  files?: string[],
): Promise<Map<string, Array<Import & { file?: string }>>> {
  const list = files ??
    ["mod.ts", "conformance.ts", ...await filesUnder("src"), ...await filesUnder("plugins")];
  const graph = new Map<string, Array<Import & { file?: string }>>();
  for (const file of list.sort()) {
    const imports = importsOf(await readFile(join(REPO, file), "utf8"));
    graph.set(
      file,
      imports.map((i) =>
        i.spec.startsWith(".")
          ? { ...i, file: relative(REPO, resolve(REPO, dirname(file), i.spec)) }
          : i
      ),
    );
  }
  return graph;
}

/** The layer and driver rules' violations of a graph. */
export function ruleViolations(graph: Map<string, Array<Import & { file?: string }>>): string[] {
  const out: string[] = [];
  for (const [from, imports] of graph) {
    const fromLayer = layerOf(from);
    if (!fromLayer) continue;
    for (const imp of imports) {
      if (fromLayer === "drivers") {
        const own = from.split("/").slice(0, 2).join("/") + "/";
        const ok = imp.spec.startsWith("node:") ||
          (imp.file === "mod.ts" && imp.typeOnly) ||
          (imp.file !== undefined && imp.file.startsWith(own));
        if (!ok) out.push(`driver: ${from} -> ${imp.file ?? imp.spec}`);
        continue;
      }
      if (!imp.file) continue; // packages and node: built-ins
      const toLayer = layerOf(imp.file);
      if (!toLayer || toLayer === fromLayer) continue;
      // src/plugins/bundled.ts lists the bundled drivers by their mod.ts: allowed, one way.
      if (rankOf(toLayer) >= rankOf(fromLayer)) out.push(`layer: ${from} -> ${imp.file}`);
    }
  }
  return [...new Set(out)].sort();
}

/** Import cycles between files (strongly connected components of more than one file). */
export function cycles(graph: Map<string, Array<{ file?: string }>>): string[] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const { file: w } of graph.get(v) ?? []) {
      if (!w || !graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1) out.push(`cycle: ${scc.sort().join(" ")}`);
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return out.sort();
}

/** Asserts that `found` is exactly KNOWN_VIOLATIONS (of the given kind), with what differs. */
function assertExactly(found: string[], kinds: string[]): void {
  const known = KNOWN_VIOLATIONS.filter((v) => kinds.some((k) => v.startsWith(k + ":")));
  const added = found.filter((v) => !known.includes(v));
  const gone = known.filter((v) => !found.includes(v));
  assert.ok(
    added.length === 0 && gone.length === 0,
    [
      added.length ? `new violations (fix them):\n  ${added.join("\n  ")}` : "",
      gone.length
        ? `fixed violations (remove them from KNOWN_VIOLATIONS in tests/architecture_test.ts):\n  ${
          gone.join("\n  ")
        }`
        : "",
    ].filter(Boolean).join("\n"),
  );
}

describe("architecture", () => {
  it("drivers import only mod.ts types and node: built-ins; src/ imports down the layers", async () => {
    assertExactly(ruleViolations(await importGraph()), ["layer", "driver"]);
  });

  it("no import cycle between files beyond the known ones", async () => {
    assertExactly(cycles(await importGraph()), ["cycle"]);
  });

  it("cycles() finds each strongly connected group of files once, sorted", () => {
    const g = (edges: Record<string, string[]>) =>
      new Map(Object.entries(edges).map(([k, v]) => [k, v.map((file) => ({ file }))]));
    assert.deepEqual(cycles(g({ a: ["b"], b: ["c"], c: ["a"], d: ["a"] })), ["cycle: a b c"]);
    assert.deepEqual(cycles(g({ a: ["b"], b: [], c: ["d"], d: ["c"] })), ["cycle: c d"]);
    assert.deepEqual(cycles(g({ a: ["b"], b: ["c"], c: [] })), []);
  });

  it("ruleViolations() flags an upward import and a driver importing the host", () => {
    const graph = new Map([
      ["src/util/x.ts", [{ spec: "../daemon/y.ts", typeOnly: true, file: "src/daemon/y.ts" }]],
      ["src/daemon/y.ts", [{ spec: "../util/x.ts", typeOnly: false, file: "src/util/x.ts" }]],
      ["plugins/d/a.ts", [
        { spec: "../../mod.ts", typeOnly: false, file: "mod.ts" },
        { spec: "../../src/util/x.ts", typeOnly: true, file: "src/util/x.ts" },
        { spec: "./b.ts", typeOnly: false, file: "plugins/d/b.ts" },
        { spec: "node:fs", typeOnly: false },
        { spec: "zod", typeOnly: false },
      ]],
    ]);
    assert.deepEqual(ruleViolations(graph), [
      "driver: plugins/d/a.ts -> mod.ts",
      "driver: plugins/d/a.ts -> src/util/x.ts",
      "driver: plugins/d/a.ts -> zod",
      "layer: src/util/x.ts -> src/daemon/y.ts",
    ]);
  });

  it("importsOf() finds static, type-only, re-exported and dynamic imports, not comments", () => {
    const src = [
      `// import { x } from "./commented.ts";`,
      `/* import "./block.ts"; */`,
      `import type { A } from "../../mod.ts";`,
      `import {\n  b,\n  type C,\n} from "./b.ts";`,
      `export * from "./c.ts";`,
      `export type * from "./d.ts";`,
      `import "./side.ts";`,
      `const m = await import("./dyn.ts");`,
    ].join("\n");
    assert.deepEqual(importsOf(src), [
      { spec: "../../mod.ts", typeOnly: true },
      { spec: "./b.ts", typeOnly: false },
      { spec: "./c.ts", typeOnly: false },
      { spec: "./d.ts", typeOnly: true },
      { spec: "./side.ts", typeOnly: false },
      { spec: "./dyn.ts", typeOnly: false },
    ]);
  });
});
