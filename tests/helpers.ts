/**
 * Integration-test helpers: the real daemon and CLI as subprocesses, on a temporary root and
 * socket. Nothing here is a mock.
 */
import { type ChildProcess, spawn } from "node:child_process";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, readlink, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { socketAlive } from "../src/runtime/listen.ts";
import { type MountEntry, readMounts } from "../src/util/mountinfo.ts";
import { writeDemoPlugins } from "./plugin_fixtures.ts";

export const REPO = dirname(dirname(fileURLToPath(import.meta.url)));
const BIN = join(REPO, "src", "bin.ts");
/** The deno binary running the tests. */
export const DENO = process.execPath;

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion. */
export function run(
  cmd: string,
  args: string[],
  opts: { env?: Record<string, string>; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, NO_COLOR: "1", ...opts.env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr }));
    child.stdin.end(opts.input ?? "");
  });
}

/**
 * How to start `convoy`: deno run of src/bin.ts, unless a build (binary, node) is named; V8's
 * young generation capped as in `deno task daemon` (see README, Performance).
 */
export const DENO_CONVOY = [
  DENO,
  "run",
  "-A",
  "--quiet",
  "--v8-flags=--max-semi-space-size=2",
  BIN,
];

/** Runs the convoy CLI (`deno run -A src/bin.ts ...`). */
export function convoy(
  args: string[],
  opts: { socket?: string; env?: Record<string, string>; command?: string[] } = {},
): Promise<RunResult> {
  const pre = opts.socket ? ["--socket", opts.socket] : [];
  const [cmd, ...base] = opts.command ?? DENO_CONVOY;
  return run(cmd, [...base, ...pre, ...args], { env: opts.env });
}

/** Like convoy(), but throws with the CLI's stderr unless it exits 0; resolves to trimmed stdout. */
export async function ok(
  args: string[],
  opts: { socket?: string; env?: Record<string, string>; command?: string[] } = {},
): Promise<string> {
  const r = await convoy(args, opts);
  if (r.code !== 0) {
    throw new Error(`convoy ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r.stdout.trim();
}

/** Resolves true once something accepts connections on the socket. */
export const canConnect: (path: string) => Promise<boolean> = socketAlive;

/** A daemon subprocess. */
export interface TestDaemon {
  root: string;
  socket: string;
  proc: ChildProcess;
  /** stdout + stderr so far. */
  output(): string;
  /** SIGTERM and wait. */
  stop(): Promise<number | null>;
  /** SIGKILL and wait. */
  kill9(): Promise<void>;
  exited: Promise<number | null>;
}

/** Starts `convoy daemon` and waits until its socket answers (or the process exits). */
export async function startDaemon(opts: {
  root: string;
  socket?: string;
  args?: string[];
  env?: Record<string, string>;
  waitForSocket?: boolean;
  /** The convoy executable and its leading arguments (default: deno run src/bin.ts). */
  command?: string[];
}): Promise<TestDaemon> {
  const socket = opts.socket ?? join(opts.root, "convoy.sock");
  const [cmd, ...base] = opts.command ?? DENO_CONVOY;
  const proc = spawn(
    cmd,
    [
      ...base,
      "--socket",
      socket,
      "daemon",
      "--root",
      opts.root,
      "--no-docker-spec",
      ...(opts.args ?? []),
    ],
    { env: { ...process.env, NO_COLOR: "1", ...opts.env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let out = "";
  proc.stdout!.on("data", (c) => (out += c));
  proc.stderr!.on("data", (c) => (out += c));
  const exited = new Promise<number | null>((resolve) => proc.on("exit", (code) => resolve(code)));
  let done = false;
  exited.then(() => (done = true));
  const d: TestDaemon = {
    root: opts.root,
    socket,
    proc,
    output: () => out,
    exited,
    stop: async () => {
      // process.kill, not proc.kill: Deno's child wrapper reports a null code after proc.kill().
      if (!done) process.kill(proc.pid!, "SIGTERM");
      return await exited;
    },
    kill9: async () => {
      if (!done) proc.kill("SIGKILL");
      await exited;
    },
  };
  if (opts.waitForSocket === false) return d;
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (done) throw new Error(`daemon exited early (${await exited}): ${out}`);
    if (await canConnect(socket)) return d;
    await new Promise((r) => setTimeout(r, 100));
  }
  await d.kill9();
  throw new Error(`daemon did not listen on ${socket} in 30 s: ${out}`);
}

/** Mount points at or below `dir`, deepest first. */
export async function mountsUnder(dir: string): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  const points = info.split("\n").filter(Boolean).map((l) =>
    l.split(" ")[4].replace(/\\040/g, " ")
  );
  return points.filter((p) => p === dir || p.startsWith(dir + "/")).sort((a, b) =>
    b.length - a.length
  );
}

/** A process alone in a new mount namespace (`unshare --mount --propagation private sleep`). */
export interface MountNamespaceProcess {
  pid: number;
  /** `/proc/<pid>/ns/mnt`. */
  path: string;
  /** The mounts of the namespace, from `/proc/<pid>/mountinfo`. */
  mounts(): Promise<MountEntry[]>;
  /** Kills the process: the namespace and the mounts only it had go with it. */
  stop(): Promise<void>;
}

/**
 * Starts a process in a new mount namespace with private propagation: mounts made in it are not
 * seen in this process's namespace, nor the other way round. Resolves once it has its own.
 */
export async function startMountNamespace(): Promise<MountNamespaceProcess> {
  const proc = spawn("unshare", ["--mount", "--propagation", "private", "sleep", "600"], {
    stdio: "ignore",
  });
  let done = false;
  const exited = new Promise<void>((resolve) =>
    proc.on("exit", () => {
      done = true;
      resolve();
    })
  );
  const pid = proc.pid!;
  const path = `/proc/${pid}/ns/mnt`;
  const stop = async () => {
    if (!done) process.kill(pid, "SIGKILL");
    await exited;
  };
  const own = await readlink("/proc/self/ns/mnt");
  const deadline = Date.now() + 10_000;
  while ((await readlink(path).catch(() => own)) === own) {
    if (done || Date.now() > deadline) {
      await stop();
      throw new Error("unshare --mount did not make a new mount namespace");
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    pid,
    path,
    mounts: () => readMounts(`/proc/${pid}/mountinfo`),
    stop,
  };
}

/** A fresh temporary directory; cleanup unmounts whatever a failed test left mounted in it, then removes it. */
export async function tempDir(
  prefix = "convoy-test-",
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return {
    dir,
    cleanup: async () => {
      for (const mp of await mountsUnder(dir)) await run("umount", ["-l", mp]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One raw HTTP request over the daemon's socket; resolves to status and body text. */
export function rawRequest(
  socket: string,
  method: string,
  path: string,
  body = "",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: socket });
    let data = "";
    s.on("connect", () =>
      s.write(
        `${method} ${path} HTTP/1.1\r\nHost: convoy\r\nContent-Type: application/json\r\n` +
          `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      ));
    s.on("data", (c) => (data += c));
    s.on("error", reject);
    s.on("end", () => {
      const [head, ...rest] = data.split("\r\n\r\n");
      const status = Number(head.split(" ")[1]);
      let text = rest.join("\r\n\r\n");
      if (/transfer-encoding: chunked/i.test(head)) {
        let out = "";
        let i = 0;
        for (;;) {
          const nl = text.indexOf("\r\n", i);
          const n = parseInt(text.slice(i, nl), 16);
          if (!n) break;
          out += text.slice(nl + 2, nl + 2 + n);
          i = nl + 2 + n + 2;
        }
        text = out;
      }
      resolve({ status, body: text });
    });
  });
}

/**
 * What every distribution of convoy must do (the npm build on Node, the single binary): a daemon
 * run by `command` serves the bundled vfs and loop drivers and the demo .ts and .js plugins
 * loaded from disk, and vfs and loop volumes back up and restore through a vfs:// store (`text`
 * goes into the files). Works in `dir`.
 */
export async function servesBundledAndPluginDrivers(
  command: string[],
  opts: { dir: string; text: string },
): Promise<void> {
  const { dir, text } = opts;
  const plugins = await writeDemoPlugins(join(dir, "plugins"));
  const drivers = ["vfs", "tsdemo", "jsdemo", "loop"];
  const d = await startDaemon({
    root: join(dir, "root"),
    command,
    args: ["--plugins", plugins, ...drivers.flatMap((name) => ["--drivers", name])],
  });
  const cli = (...args: string[]) => ok(args, { socket: d.socket, command });
  try {
    assert.equal(await cli("create", "t1", "--driver", "tsdemo"), "t1");
    assert.equal(await cli("create", "j1", "--driver", "jsdemo"), "j1");
    const store = join(dir, "store");
    await mkdir(store);
    await backupRoundTrip(cli, { name: "v", store, text });
    // A block volume: the delta-block engine and its worker threads, with their direct I/O.
    await backupRoundTrip(cli, {
      name: "b",
      store,
      text: `blocks, ${text}`,
      create: ["--driver", "loop", "--size", "64M"],
    });
    await cli("umount", "b1");
    await cli("umount", "b2");
    await cli("delete", "b1", "b2");
    const list = JSON.parse(await cli("list"));
    assert.deepEqual(Object.keys(list).sort(), ["j1", "t1", "v1", "v2"]);
    assert.equal(list.t1.Driver, "tsdemo");
    assert.equal(list.j1.Driver, "jsdemo");
  } finally {
    await d.stop();
  }
}

/**
 * Through `cli`: writes `text` into a new volume `<name>1` (made with `create` extra args),
 * snapshots it as `<name>s1`, backs that up to `vfs://<store>`, restores the backup into a new
 * volume `<name>2` and asserts the file came back (and that create printed the name). Both
 * volumes stay mounted.
 */
export async function backupRoundTrip(
  cli: (...args: string[]) => Promise<string>,
  opts: { name: string; store: string; text: string; create?: string[] },
): Promise<void> {
  const { name, text } = opts;
  assert.equal(await cli("create", `${name}1`, ...(opts.create ?? [])), `${name}1`);
  await writeFile(join(await cli("mount", `${name}1`), "f"), text);
  await cli("snapshot", "create", `${name}1`, "--name", `${name}s1`);
  const url = await cli("backup", "create", `${name}s1`, "--dest", `vfs://${opts.store}`);
  await cli("create", `${name}2`, "--backup", url);
  assert.equal(await readFile(join(await cli("mount", `${name}2`), "f"), "utf8"), text);
}
