/**
 * Builds the npm package for Node into dist/npm: tsc emits JavaScript and .d.ts files (relative
 * `.ts` imports rewritten to `.js`), then a package.json with the `convoy` bin and the
 * `convoy/plugin-api` types export and the `convoy/conformance` driver test suite.
 * `npm pack ./dist/npm` makes the tarball.
 */
import { spawnSync } from "node:child_process";
import { cp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

const root = import.meta.dirname ?? ".";
const outArg = process.argv.indexOf("--out");
const out = outArg > 0 ? process.argv[outArg + 1] : join(root, "dist", "npm");
await rm(out, { recursive: true, force: true });
const tsc = spawnSync(
  join(root, "node_modules", ".bin", "tsc"),
  ["-p", join(root, "tsconfig.build.json"), "--outDir", out],
  { stdio: "inherit" },
);
if (tsc.status !== 0) process.exit(tsc.status ?? 1);

const pkg = JSON.parse(await readFile(join(root, "package.json"), "utf8"));
const npmPkg = {
  name: pkg.name,
  version: pkg.version,
  description: pkg.description,
  license: pkg.license,
  type: "module",
  engines: pkg.engines,
  bin: { convoy: "./src/bin.js" },
  exports: {
    ".": { types: "./mod.d.ts", default: "./mod.js" },
    "./plugin-api": { types: "./mod.d.ts", default: "./mod.js" },
    "./conformance": { types: "./conformance.d.ts", default: "./conformance.js" },
  },
  types: "./mod.d.ts",
  dependencies: pkg.dependencies,
};
await writeFile(join(out, "package.json"), JSON.stringify(npmPkg, null, 2) + "\n");
await cp(join(root, "README.md"), join(out, "README.md"));
console.log(`built ${out} (npm pack ${out.startsWith("/") ? out : `./${out}`})`);
