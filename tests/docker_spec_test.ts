/**
 * `convoy daemon` and the Docker plugin spec, through the real CLI: a spec naming another live
 * daemon stops the start with one line; a name of one's own or --replace-docker-spec gets past it.
 * Specs go to a temporary directory (CONVOY_DOCKER_SPEC_DIR), never /etc/docker/plugins.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  canConnect,
  convoy,
  DENO_CONVOY,
  startDaemon,
  tempDir,
  type TestDaemon,
} from "./helpers.ts";

describe("daemon and the Docker plugin spec", () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  let other: TestDaemon;
  let env: Record<string, string>;

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-spec-"));
    env = { CONVOY_DOCKER_SPEC_DIR: join(dir, "plugins") };
    other = await startDaemon({ root: join(dir, "other") });
  });
  after(async () => {
    await other.stop();
    await cleanup();
  });

  /** Starts `convoy daemon` with a spec, waits for its socket; resolves to a stop function. */
  async function startWithSpec(name: string, args: string[]) {
    const root = join(dir, name);
    const socket = join(root, "convoy.sock");
    const [cmd, ...base] = DENO_CONVOY;
    const proc = spawn(cmd, [...base, "--socket", socket, "daemon", "--root", root, ...args], {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let err = "";
    proc.stderr!.on("data", (c) => (err += c));
    const watchers: ((text: string) => void)[] = [];
    proc.stdout!.on("data", (c) => watchers.forEach((w) => w(String(c))));
    const exited = new Promise<number | null>((r) => proc.on("exit", (code) => r(code)));
    const deadline = Date.now() + 30_000;
    // The spec is written after the socket listens, before the "listening" line.
    while (!(await canConnect(socket)) || !err.includes("convoy daemon listening")) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill("SIGKILL");
        throw new Error(`daemon did not start: ${err}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return {
      socket,
      pid: proc.pid!,
      onStdout: (w: (text: string) => void) => watchers.push(w),
      stop: async () => {
        process.kill(proc.pid!, "SIGTERM");
        return await exited;
      },
    };
  }

  it("refuses to start when convoy.spec names another running daemon, in one line", async () => {
    const spec = join(dir, "plugins", "convoy.spec");
    await startWithSpec("first", []).then((d) => d.stop());
    await writeFile(spec, `unix://${other.socket}\n`);
    const root = join(dir, "second");
    const r = await convoy(["daemon", "--root", root], { socket: join(root, "s.sock"), env });
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 1, r.stderr);
    assert.ok(lines[0].includes(`"${spec}"`), lines[0]);
    assert.ok(lines[0].includes(`"unix://${other.socket}"`), lines[0]);
    assert.match(lines[0], /--replace-docker-spec/);
    assert.equal(await readFile(spec, "utf8"), `unix://${other.socket}\n`);
    assert.equal(await canConnect(join(root, "s.sock")), false);
  });

  it("writes NAME.spec for --docker-plugin-name and removes it on a clean stop", async () => {
    const d = await startWithSpec("named", ["--docker-plugin-name", "convoy-two"]);
    const spec = join(dir, "plugins", "convoy-two.spec");
    assert.equal(await readFile(spec, "utf8"), `unix://${d.socket}\n`);
    assert.equal(await d.stop(), 0);
    await assert.rejects(readFile(spec), { code: "ENOENT" });
  });

  it("stops cleanly when the signal comes again while it stops, as launchers forward it", async () => {
    // npm and deno task forward a terminal's SIGINT/SIGTERM to a daemon that got it already.
    const d = await startWithSpec("twice", ["--docker-plugin-name", "twice"]);
    const spec = join(dir, "plugins", "twice.spec");
    assert.equal(await readFile(spec, "utf8"), `unix://${d.socket}\n`);
    d.onStdout((text) => {
      if (text.includes("Caught signal")) process.kill(d.pid, "SIGTERM");
    });
    assert.equal(await d.stop(), 0);
    await assert.rejects(readFile(spec), { code: "ENOENT" });
  });

  it("takes over a running daemon's spec with --replace-docker-spec", async () => {
    const spec = join(dir, "plugins", "convoy.spec");
    await writeFile(spec, `unix://${other.socket}\n`);
    const d = await startWithSpec("third", ["--replace-docker-spec"]);
    assert.equal(await readFile(spec, "utf8"), `unix://${d.socket}\n`);
    assert.equal(await d.stop(), 0);
  });

  it("rejects a plugin name Docker would not accept as a usage error", async () => {
    const root = join(dir, "bad");
    const r = await convoy(["daemon", "--root", root, "--docker-plugin-name", "../etc"], { env });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /Invalid --docker-plugin-name "\.\.\/etc"/);
  });
});
