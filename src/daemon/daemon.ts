import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ConvoyError, errorMessage, InvalidArgumentError } from "../api/errors.ts";
import type { ConvoyDriver } from "../api/driver.ts";
import { createBackupStoreApi } from "../backup/store_api.ts";
import { bundledPlugins } from "../plugins/bundled.ts";
import { createPluginApi } from "../plugins/host_api.ts";
import { NativeBackupRegistry } from "../plugins/block/driver.ts";
import { loadPlugins } from "../plugins/loader.ts";
import { builtinStoreRegistry } from "../store/registry.ts";
import { createExec } from "../runtime/exec.ts";
import {
  type HttpRequest,
  type HttpResponse,
  listenUnix,
  type UnixServer,
} from "../runtime/listen.ts";
import { parseDuration } from "../util/duration.ts";
import { createLogger, type Logger } from "../util/log.ts";
import { resolveConfig, saveConfig } from "./config.ts";
import { handleDocker, isDockerPath } from "./docker.ts";
import { claimDockerSpec, type DockerSpec } from "./docker_spec.ts";
import { checkMountNamespace, mountNamespace } from "./mount_namespace.ts";
import { codeOf, statusOf } from "./http_errors.ts";
import { json } from "./http.ts";
import { type DaemonFlags, JOB_RETENTION_ENV } from "./options.ts";
import { findRoute } from "./rest.ts";
import { VolumeService } from "./service.ts";
import { State } from "./state.ts";

/** A running daemon. */
export interface Daemon {
  service: VolumeService;
  socket: string;
  /** Stops serving, releases the root lock; volumes stay mounted. */
  stop(): Promise<void>;
}

/** Takes `<root>/lock`: refuses when a live daemon holds it, replaces a dead daemon's. */
async function lockRoot(root: string): Promise<() => Promise<void>> {
  const path = join(root, "lock");
  const old = Number((await readFile(path, "utf8").catch(() => "")).trim());
  if (old && old !== process.pid) {
    const cmdline = await readFile(`/proc/${old}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes("daemon")) {
      throw new ConvoyError(
        "Conflict",
        `Cannot lock root "${root}": another daemon is running (pid ${old})`,
      );
    }
  }
  await writeFile(path, `${process.pid}\n`, { mode: 0o644 });
  return () => rm(path, { force: true });
}

/** The daemon's request handler: Docker plugin paths, then Convoy's REST routes. */
export function createHandler(
  svc: VolumeService,
  log: Logger,
): (req: HttpRequest) => Promise<HttpResponse> {
  return async (req) => {
    if (!req.path.endsWith("/volumes/list")) {
      log.debug("request", { method: req.method, path: req.path });
    }
    if (isDockerPath(req.path)) return await handleDocker(svc, req);
    try {
      const ua = String(req.headers["user-agent"] ?? "");
      const m = /Convoy-Client\/(\S+)/.exec(ua);
      if (m && m[1] !== "1") {
        return json({ Error: `Client version ${m[1]} does not match server version 1` }, 404);
      }
      return await findRoute(req.method, req.path)(svc, req);
    } catch (err) {
      const status = statusOf(err);
      (status >= 500 ? log.error : log.debug)("request failed", {
        method: req.method,
        path: req.path,
        code: codeOf(err),
        error: errorMessage(err),
      });
      return json({ Error: errorMessage(err) }, status);
    }
  };
}

/** DaemonFlags.jobRetention in milliseconds; undefined for the default. */
function jobRetentionMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  try {
    return parseDuration(value);
  } catch (err) {
    throw new InvalidArgumentError(`Invalid ${JOB_RETENTION_ENV}: ${errorMessage(err)}`);
  }
}

/**
 * Starts the daemon: configuration, plugins, drivers, state reconciliation, then the socket.
 * Throws (and releases everything) when a named driver cannot be loaded or started.
 */
export async function startDaemon(flags: DaemonFlags): Promise<Daemon> {
  const retentionMs = jobRetentionMs(flags.jobRetention);
  const bootLog = createLogger({ level: flags.debug ? "debug" : "info", file: flags.log });
  const cfg = await resolveConfig(
    { ...flags, root: resolve(flags.root ?? "/var/lib/convoy") },
    bootLog,
  );
  const log = bootLog.child({ pkg: "daemon" });
  await mkdir(cfg.root, { recursive: true, mode: 0o755 });
  const unlock = await lockRoot(cfg.root);
  const drivers = new Map<string, ConvoyDriver>();
  let server: UnixServer | undefined;
  try {
    // Before anything is mounted: a spec naming another live plugin stops the start.
    const spec: DockerSpec | undefined = cfg.dockerSpec
      ? await claimDockerSpec({
        socket: cfg.socket,
        log,
        name: flags.dockerPluginName,
        dir: flags.dockerSpecDir,
        replace: flags.replaceDockerSpec,
      })
      : undefined;
    const exec = createExec({ timeoutMs: cfg.cmdTimeoutMs });
    const ns = mountNamespace(cfg.config.MountNamespaceFD, exec);
    if (ns.path) {
      await checkMountNamespace(ns, exec);
      log.info("volumes are mounted in another mount namespace", {
        mntNs: ns.path,
        mountinfo: typeof ns.mountInfo === "string" ? ns.mountInfo : "nsenter",
      });
    }
    const stores = builtinStoreRegistry({ log: log.child({ pkg: "store" }) });
    const backup = createBackupStoreApi({ log: log.child({ pkg: "backup" }), stores });
    const natives = new NativeBackupRegistry();
    const registry = await loadPlugins({
      bundled: bundledPlugins,
      folders: [join(cfg.root, "plugins"), ...cfg.config.Plugins.map((p) => resolve(p))],
      required: cfg.config.DriverList,
      makeApi: (register) =>
        createPluginApi({
          register,
          log: log.child({ pkg: "plugin" }),
          exec: ns.exec,
          mountInfo: ns.mountInfo,
          backup,
          natives,
        }),
      log,
    });
    for (const name of cfg.config.DriverList) {
      const entry = registry.get(name)!;
      try {
        const d = await entry.init(join(cfg.root, name), { ...cfg.config.DriverOpts });
        drivers.set(name, d);
        log.info("driver started", { driver: name, file: entry.source });
      } catch (err) {
        throw new ConvoyError(
          "InvalidArgument",
          `Cannot start driver "${name}" (${entry.source}): ${errorMessage(err)}`,
          { cause: err },
        );
      }
    }
    const state = new State(cfg.root);
    await state.load();
    const service = new VolumeService({
      drivers,
      state,
      config: cfg.config,
      backup,
      stores,
      log,
      jobRetentionMs: retentionMs,
    });
    await service.reconcile();
    await saveConfig(cfg.config);
    server = await listenUnix(cfg.socket, createHandler(service, log));
    await spec?.write();
    log.info("convoy daemon listening", {
      socket: cfg.socket,
      root: cfg.root,
      drivers: cfg.config.DriverList,
    });
    const srv = server;
    return {
      service,
      socket: cfg.socket,
      stop: async () => {
        await spec?.release();
        await srv.close();
        for (const d of drivers.values()) await Promise.resolve(d.shutdown?.()).catch(() => {});
        await unlock();
      },
    };
  } catch (err) {
    await server?.close();
    for (const d of drivers.values()) await Promise.resolve(d.shutdown?.()).catch(() => {});
    await unlock();
    throw err;
  }
}

/** `convoy daemon`: starts, then serves until SIGINT or SIGTERM. */
export async function runDaemon(flags: DaemonFlags): Promise<void> {
  const d = await startDaemon(flags);
  // A terminal's Ctrl-C reaches every process of the group, and launchers (npm, deno task) forward
  // it too: later signals while stopping are ignored rather than killing the daemon midway.
  let stopping = false;
  const onInt = () => stop("SIGINT");
  const onTerm = () => stop("SIGTERM");
  let done: () => void = () => {};
  const stopped = new Promise<void>((r) => (done = r));
  function stop(sig: string): void {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`Caught signal ${sig}: shutting down.\n`);
    d.stop().finally(done);
  }
  process.on("SIGINT", onInt);
  process.on("SIGTERM", onTerm);
  await stopped;
  process.off("SIGINT", onInt);
  process.off("SIGTERM", onTerm);
}
