/**
 * The README blocks that CI walks as written (.ci/readme_walk.sh): each is there, and what they
 * name (the tarball, the version) matches package.json. The walk itself runs in .ci/run.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { REPO, run } from "./helpers.ts";

async function block(name: string): Promise<string[]> {
  const r = await run("bash", [join(REPO, ".ci", "readme_walk.sh"), "print", name]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.trimEnd().split("\n");
}

describe("README walk", () => {
  it("has a walked block for the set-up, quick start, Docker, binary and npm sections", async () => {
    for (const name of ["setup", "quickstart", "docker", "binary", "npm"]) {
      assert.ok((await block(name)).length >= 2, name);
    }
    const r = await run("bash", [join(REPO, ".ci", "readme_walk.sh"), "print", "nothing"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no block after <!-- walk: nothing -->/);
  });

  it("the set-up is two commands: the daemon, then the test suite, both through npm", async () => {
    const lines = await block("setup");
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^npm ci && npm run daemon\b/);
    assert.match(lines[1], /^npm ci && npm test\b/);
  });

  it("the npm section packs ./dist/npm and installs the tarball npm pack makes", async () => {
    const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8"));
    const lines = await block("npm");
    assert.ok(lines.some((l) => /^npm pack \.\/dist\/npm\b/.test(l)), lines.join("\n"));
    assert.ok(
      lines.some((l) => l.startsWith(`npm install -g ./${pkg.name}-${pkg.version}.tgz`)),
      lines.join("\n"),
    );
    for (const name of ["npm", "binary"]) {
      const version = (await block(name)).find((l) => l.includes("--version"));
      assert.match(version ?? "", new RegExp(`# Convoy version v${pkg.version}$`), name);
    }
  });
});
