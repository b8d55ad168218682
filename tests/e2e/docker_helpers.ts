/**
 * Helpers of the Docker end-to-end tests: the `docker` CLI with a timeout, the engine gate, a
 * convoy daemon that Docker finds under a unique plugin name, and cleanup.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import {
  canConnect,
  REPO,
  type RunResult,
  startDaemon,
  tempDir,
  type TestDaemon,
} from "../helpers.ts";

/** The test image that .ci/docker_setup.sh imports. */
export const IMAGE = "convoy-test/busybox:latest";
/** Where .ci/docker_setup.sh keeps its engine. */
export const SETUP_DIR = process.env.CONVOY_DOCKER_DIR ?? "/tmp/convoy-docker";
/** Docker reads legacy plugin specs from here. */
export const SPEC_DIR = "/etc/docker/plugins";

/** The engine's own client first (the same API version as the Debian dockerd). */
const DOCKER_CLI = process.env.CONVOY_DOCKER_CLI ??
  (existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker");

/** DOCKER_HOST: the caller's, else the engine .ci/docker_setup.sh started, else Docker's default. */
export const DOCKER_HOST = process.env.DOCKER_HOST ||
  (existsSync(join(SETUP_DIR, "docker.sock")) ? `unix://${SETUP_DIR}/docker.sock` : "");

/** A short random hex id for names unique to this run. */
export function runId(): string {
  return randomBytes(4).toString("hex");
}

/** Runs a command with a timeout (SIGKILL); never hangs. */
export function runFor(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      env: { ...process.env, NO_COLOR: "1", ...opts.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (c) => (stdout += c));
    child.stderr.on("data", (c) => (stderr += c));
    const timeoutMs = opts.timeoutMs ?? 90_000;
    const timer = setTimeout(() => {
      stderr += `\n[killed after ${timeoutMs} ms]`;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (err) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: String(err) });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs the docker CLI against DOCKER_HOST. */
export function docker(args: string[], opts: { timeoutMs?: number } = {}): Promise<RunResult> {
  return runFor(DOCKER_CLI, args, {
    ...opts,
    env: DOCKER_HOST ? { DOCKER_HOST } : {},
  });
}

/**
 * Like docker(), but throws with stderr unless it exits 0; resolves to trimmed stdout.
 * CONVOY_E2E_TRACE=1 prints each command's duration.
 */
export async function dockerOk(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
  const t0 = performance.now();
  const r = await docker(args, opts);
  if (process.env.CONVOY_E2E_TRACE) {
    console.log(`${Math.round(performance.now() - t0)} ms: docker ${args.join(" ")}`);
  }
  if (r.code !== 0) {
    throw new Error(`docker ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
  }
  return r.stdout.trim();
}

/**
 * Why the Docker tests cannot run here, or undefined when they can: the engine must answer
 * `docker version`, the test image must exist, and we must be root (Docker reads specs in /etc).
 */
export async function dockerUnavailable(): Promise<string | undefined> {
  const setupSaid = (() => {
    try {
      return ` (.ci/docker_setup.sh said: ${
        readFileSync(join(SETUP_DIR, "unavailable"), "utf8").trim()
      })`;
    } catch {
      return "";
    }
  })();
  if (process.getuid?.() !== 0) return "not root";
  const info = await docker(["version", "--format", "{{.Server.Version}}"], { timeoutMs: 20_000 });
  if (info.code !== 0) {
    const why = (info.stderr.trim() || info.stdout.trim()).split("\n").filter(Boolean).at(-1);
    return `no Docker engine answers (${why ?? `exit ${info.code}`})${setupSaid}; ` +
      "start one with `bash .ci/docker_setup.sh`";
  }
  const image = await docker(["image", "inspect", IMAGE], { timeoutMs: 20_000 });
  if (image.code !== 0) {
    return `the test image ${IMAGE} is missing; run \`bash .ci/docker_setup.sh\``;
  }
  return undefined;
}

/** How the e2e tests run one driver. */
export interface DriverCase {
  /** Convoy driver name. */
  name: string;
  /** Extra `convoy daemon` flags. */
  daemonArgs: string[];
  /** A plugin folder to load through `--plugins` (a folder holding only a link to it). */
  pluginFolder?: string;
  /** Why this driver's tests are skipped, if they are. */
  skip?: string;
}

/** The daemon flags of a driver case for a daemon whose files live in `dir`. */
async function caseArgs(driver: DriverCase, dir: string): Promise<string[]> {
  if (!driver.pluginFolder) return driver.daemonArgs;
  const plugins = join(dir, "plugins");
  await mkdir(plugins, { recursive: true });
  await symlink(driver.pluginFolder, join(plugins, driver.name));
  return [...driver.daemonArgs, "--plugins", plugins];
}

/** The vfs case, and the loop case when plugins/loop/mod.ts exists and its driver starts. */
export async function driverCases(): Promise<DriverCase[]> {
  const vfs: DriverCase = { name: "vfs", daemonArgs: [] };
  const folder = join(REPO, "plugins", "loop");
  if (!existsSync(join(folder, "mod.ts"))) {
    return [vfs, { name: "loop", daemonArgs: [], skip: "plugins/loop/mod.ts does not exist yet" }];
  }
  const bundled = await readFile(join(REPO, "src", "plugins", "bundled.ts"), "utf8");
  const loop: DriverCase = {
    name: "loop",
    daemonArgs: ["--drivers", "loop", "--driver-opts", "loop.defaultvolumesize=64M"],
    // Not bundled yet: load it from a plugins folder.
    pluginFolder: bundled.includes("plugins/loop/") ? undefined : folder,
  };
  const { dir, cleanup } = await tempDir("convoy-e2e-loopprobe-");
  try {
    const d = await startDaemon({ root: join(dir, "root"), args: await caseArgs(loop, dir) })
      .catch((err: Error) => err);
    if (d instanceof Error) {
      loop.skip = `the loop driver does not start: ${d.message.split("\n").slice(0, 3).join(" ")}`;
    } else await d.stop();
  } finally {
    await cleanup();
  }
  return [vfs, loop];
}

/** A convoy daemon registered with Docker as plugin `plugin` through a spec file. */
export interface DockerConvoy {
  plugin: string;
  daemon: TestDaemon;
  root: string;
  dir: string;
  /** Stops and starts the daemon on the same root and socket. */
  restart(): Promise<void>;
  /** Removes this run's containers and volumes, stops the daemon, removes the spec and files. */
  cleanup(): Promise<void>;
}

/** Removes spec files of earlier runs (`cvt-*.spec`) whose daemon is gone; live ones stay. */
async function removeStaleSpecs(): Promise<void> {
  const files = await readdir(SPEC_DIR).catch(() => [] as string[]);
  for (const f of files.filter((f) => /^cvt-.*\.spec$/.test(f))) {
    const spec = join(SPEC_DIR, f);
    const url = (await readFile(spec, "utf8").catch(() => "")).trim();
    if (!url.startsWith("unix://") || !(await canConnect(url.slice("unix://".length)))) {
      await rm(spec, { force: true });
    }
  }
}

/** Starts convoy for Docker under a unique plugin name; `label` tags this run's containers. */
export async function startDockerConvoy(
  driver: DriverCase,
  opts: { label: string; args?: string[] },
): Promise<DockerConvoy> {
  await removeStaleSpecs();
  const plugin = `cvt-${driver.name}-${runId()}`;
  const { dir, cleanup } = await tempDir(`convoy-e2e-${driver.name}-`);
  const root = join(dir, "root");
  const spec = join(SPEC_DIR, `${plugin}.spec`);
  let daemon: TestDaemon;
  let args: string[];
  try {
    args = [...await caseArgs(driver, dir), ...(opts.args ?? [])];
    daemon = await startDaemon({ root, args });
    await mkdir(SPEC_DIR, { recursive: true });
    await writeFile(spec, `unix://${daemon.socket}\n`);
  } catch (err) {
    await cleanup();
    throw err;
  }
  const dc: DockerConvoy = {
    plugin,
    daemon,
    root,
    dir,
    restart: async () => {
      await dc.daemon.stop();
      dc.daemon = await startDaemon({ root, socket: dc.daemon.socket, args });
    },
    cleanup: async () => {
      try {
        const ids = (await docker(["ps", "-aq", "--filter", `label=${opts.label}`])).stdout
          .split("\n").filter(Boolean);
        if (ids.length) await docker(["rm", "-f", ...ids]);
        // Docker asks the driver to remove its volumes: it must be running for that.
        if (dc.daemon.proc.exitCode !== null || dc.daemon.proc.signalCode !== null) {
          dc.daemon = await startDaemon({ root, socket: dc.daemon.socket, args });
        }
        const vols = (await docker(["volume", "ls", "-q", "--filter", `driver=${plugin}`])).stdout
          .split("\n").filter(Boolean);
        if (vols.length) await docker(["volume", "rm", "-f", ...vols]);
      } finally {
        await dc.daemon.stop();
        await rm(spec, { force: true });
        await cleanup();
      }
    },
  };
  return dc;
}

/** `docker volume inspect` of one volume, parsed. */
export async function inspectVolume(name: string): Promise<{
  Name: string;
  Driver: string;
  Mountpoint: string;
  Options: Record<string, string> | null;
  Status?: Record<string, unknown>;
}> {
  return JSON.parse(await dockerOk(["volume", "inspect", name]))[0];
}

/** Mount points listed in this mount namespace. */
export async function mountPoints(): Promise<string[]> {
  const info = await readFile("/proc/self/mountinfo", "utf8");
  return info.split("\n").filter(Boolean).map((l) => l.split(" ")[4].replace(/\\040/g, " "));
}
