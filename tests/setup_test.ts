/**
 * The README's set-up: `npm run daemon` and `npm test` go through tools/root.sh, which runs them
 * as root directly or through sudo; package.json states the Node versions its dependencies need.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { chmod, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { REPO, run, tempDir } from "./helpers.ts";

const ROOT_SH = join(REPO, "tools", "root.sh");

/** The X.Y.Z of a `>=X[.Y[.Z]]` range; throws on other forms, so a new form is looked at. */
function minimum(range: string): number[] {
  const m = /^>=\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?$/.exec(range.trim());
  if (!m) throw new Error(`engines.node ${JSON.stringify(range)} is not of the form >=X.Y.Z`);
  return [Number(m[1]), Number(m[2] ?? 0), Number(m[3] ?? 0)];
}

function atLeast(a: number[], b: number[]): boolean {
  for (let i = 0; i < 3; i++) if (a[i] !== b[i]) return a[i] > b[i];
  return true;
}

describe("set-up", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let fakeSudo: string;
  let noSudo: string;
  let setpriv: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-setup-"));
    await chmod(dir, 0o755);
    // A sudo that only reports how it was called, and a PATH with sh and id but no sudo.
    fakeSudo = join(dir, "sudo-bin");
    await mkdir(fakeSudo, { mode: 0o755 });
    await writeFile(join(fakeSudo, "sudo"), '#!/bin/sh\necho "sudo $*"\n', { mode: 0o755 });
    setpriv = (await run("sh", ["-c", "command -v setpriv"])).stdout.trim();
    noSudo = join(dir, "no-sudo-bin");
    await mkdir(noSudo, { mode: 0o755 });
    for (const tool of ["sh", "id"]) {
      const found = (await run("sh", ["-c", `command -v ${tool}`])).stdout.trim();
      await symlink(found, join(noSudo, tool));
    }
  });
  after(async () => await cleanup());

  /** Runs tools/root.sh as uid/gid 65534 (nobody) with the given PATH. */
  function asNobody(path: string, args: string[]) {
    return run(setpriv, [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "/bin/sh",
      ROOT_SH,
      ...args,
    ], { env: { PATH: path } });
  }

  it("tools/root.sh runs the command itself as root, without sudo", async () => {
    const r = await run("sh", [ROOT_SH, "id", "-u"], {
      env: { PATH: `${fakeSudo}:${process.env.PATH}` },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "0\n");
  });

  it("tools/root.sh goes through sudo, keeping the environment, for another user", async () => {
    const r = await asNobody(`${fakeSudo}:/usr/bin:/bin`, ["deno", "task", "daemon"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "sudo --preserve-env -- deno task daemon\n");
  });

  it("tools/root.sh says what to do, exit 1, for another user without sudo", async () => {
    const r = await asNobody(noSudo, ["deno", "task", "daemon"]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, "");
    assert.equal(
      r.stderr,
      "convoy: this needs root (it mounts): run it as root, or install sudo\n",
    );
  });

  it("npm run daemon and npm test go through tools/root.sh", async () => {
    const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8"));
    for (const script of ["daemon", "test"]) {
      assert.match(pkg.scripts[script], /^sh tools\/root\.sh /, script);
    }
  });

  it("engines.node asks for at least what every runtime dependency in the lock file needs", async () => {
    const pkg = JSON.parse(await readFile(join(REPO, "package.json"), "utf8"));
    const ours = minimum(pkg.engines.node);
    const lock: {
      packages: Record<string, { dev?: boolean; engines?: { node?: string } }>;
    } = JSON.parse(await readFile(join(REPO, "package-lock.json"), "utf8"));
    const needs: string[] = [];
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === "" || entry.dev || !entry.engines?.node) continue;
      if (!atLeast(ours, minimum(entry.engines.node))) {
        needs.push(`${path.replace(/^.*node_modules\//, "")} (${entry.engines.node})`);
      }
    }
    assert.deepEqual(needs, [], `engines.node ${pkg.engines.node} is below what these need`);
  });
});
