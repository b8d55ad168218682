import { join, resolve } from "node:path";
import { z } from "zod";
import { InvalidArgumentError } from "../api/errors.ts";
import { atomicWriteJSON, readJSONFile } from "../util/fs.ts";
import { parseDuration } from "../util/duration.ts";
import type { Logger } from "../util/log.ts";
import { type DaemonFlags, DEFAULT_CMD_TIMEOUT, DEFAULT_ROOT, DEFAULT_SOCKET } from "./options.ts";

/** convoy.cfg: Convoy's fields, plus the ones this daemon adds. */
export const DaemonConfig = z.looseObject({
  Root: z.string(),
  DriverList: z.array(z.string()).min(1),
  DefaultDriver: z.string(),
  /** `--mnt-ns`: the mount namespace file volumes are mounted in; "" for the daemon's own. */
  MountNamespaceFD: z.string().default(""),
  IgnoreDockerDelete: z.boolean().default(false),
  CreateOnDockerMount: z.boolean().default(false),
  CmdTimeout: z.string().default(DEFAULT_CMD_TIMEOUT),
  DriverOpts: z.record(z.string(), z.string()).default({}),
  Plugins: z.array(z.string()).default([]),
});
export type DaemonConfig = z.infer<typeof DaemonConfig>;

/** The daemon's settings after merging flags with convoy.cfg. */
export interface ResolvedConfig {
  config: DaemonConfig;
  socket: string;
  root: string;
  cmdTimeoutMs: number;
  log?: string;
  debug: boolean;
  dockerSpec: boolean;
}

/** Splits "key=value" entries on the first "="; throws on an entry without one or with an empty key. */
export function parseDriverOpts(entries: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of entries) {
    const i = e.indexOf("=");
    if (i <= 0) {
      throw new InvalidArgumentError(
        `Invalid --driver-opts ${JSON.stringify(e)}: expected key=value`,
      );
    }
    out[e.slice(0, i)] = e.slice(i + 1);
  }
  return out;
}

/**
 * Builds the configuration: flags on first start (saved to convoy.cfg), the saved file on later
 * starts. A flag that conflicts with the saved file is ignored with a warning naming it, unless
 * --ignore-config-file is given.
 */
export async function resolveConfig(flags: DaemonFlags, log: Logger): Promise<ResolvedConfig> {
  const root = flags.root ?? DEFAULT_ROOT;
  const driverOpts = parseDriverOpts(flags.driverOpts ?? []);
  const fromFlags: DaemonConfig = DaemonConfig.parse({
    Root: root,
    DriverList: flags.drivers?.length ? flags.drivers : ["vfs"],
    DefaultDriver: (flags.drivers?.length ? flags.drivers : ["vfs"])[0],
    MountNamespaceFD: flags.mntNs ? resolve(flags.mntNs) : "",
    IgnoreDockerDelete: flags.ignoreDockerDelete ?? false,
    CreateOnDockerMount: flags.createOnDockerMount ?? false,
    CmdTimeout: flags.cmdTimeout ?? DEFAULT_CMD_TIMEOUT,
    DriverOpts: driverOpts,
    Plugins: flags.plugins ?? [],
  });
  const path = join(root, "convoy.cfg");
  let config = fromFlags;
  const raw = flags.ignoreConfigFile ? undefined : await readJSONFile(path).catch((err) => {
    throw new InvalidArgumentError(`Cannot read ${path}: ${(err as Error).message}`);
  });
  if (raw !== undefined) {
    const parsed = DaemonConfig.safeParse(raw);
    if (!parsed.success) {
      throw new InvalidArgumentError(
        `Cannot load ${path}: ${
          parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
        }` +
          ` (fix it, or start with --ignore-config-file)`,
      );
    }
    config = { ...parsed.data, Root: root };
    // As Convoy does, a saved timeout that cannot be used is logged and 1m used (a flag's fails).
    if (!(durationMs(config.CmdTimeout) > 0)) {
      log.warn(
        `Ignoring CmdTimeout "${config.CmdTimeout}" in ${path}: not a positive duration; using ${DEFAULT_CMD_TIMEOUT}`,
      );
      config.CmdTimeout = DEFAULT_CMD_TIMEOUT;
    }
    const conflicts: string[] = [];
    if (flags.drivers?.length && flags.drivers.join(",") !== config.DriverList.join(",")) {
      conflicts.push(
        `--drivers ${flags.drivers.join(",")} (saved: ${config.DriverList.join(",")})`,
      );
    }
    for (const [k, v] of Object.entries(driverOpts)) {
      if (config.DriverOpts[k] !== v) {
        conflicts.push(`--driver-opts ${k}=${v} (saved: ${config.DriverOpts[k] ?? "unset"})`);
      }
    }
    const bools = [
      ["ignoreDockerDelete", "IgnoreDockerDelete", "--ignore-docker-delete"],
      ["createOnDockerMount", "CreateOnDockerMount", "--create-on-docker-mount"],
    ] as const;
    for (const [flag, key, name] of bools) {
      if (flags[flag] !== undefined && flags[flag] !== config[key]) {
        conflicts.push(`${name}=${flags[flag]} (saved: ${config[key]})`);
      }
    }
    if (flags.mntNs !== undefined && fromFlags.MountNamespaceFD !== config.MountNamespaceFD) {
      conflicts.push(
        `--mnt-ns ${flags.mntNs || '""'} (saved: ${config.MountNamespaceFD || "none"})`,
      );
    }
    if (flags.cmdTimeout !== undefined && flags.cmdTimeout !== config.CmdTimeout) {
      conflicts.push(`--cmd-timeout ${flags.cmdTimeout} (saved: ${config.CmdTimeout})`);
    }
    if (flags.plugins?.length && flags.plugins.join(",") !== config.Plugins.join(",")) {
      conflicts.push(
        `--plugins ${flags.plugins.join(",")} (saved: ${config.Plugins.join(",") || "none"})`,
      );
    }
    for (const c of conflicts) {
      log.warn(
        `Ignoring flag ${c}: ${path} is used; restart with --ignore-config-file to replace it`,
      );
    }
  }
  const cmdTimeoutMs = parseDuration(config.CmdTimeout);
  if (cmdTimeoutMs <= 0) {
    throw new InvalidArgumentError(
      `Invalid --cmd-timeout "${config.CmdTimeout}": must be positive`,
    );
  }
  if (!config.DriverList.includes(config.DefaultDriver)) {
    config.DefaultDriver = config.DriverList[0];
  }
  return {
    config,
    root,
    socket: flags.socket ?? DEFAULT_SOCKET,
    cmdTimeoutMs,
    log: flags.log,
    debug: flags.debug ?? false,
    dockerSpec: flags.dockerSpec ?? true,
  };
}

/** A duration in milliseconds, or NaN when it does not parse. */
function durationMs(text: string): number {
  try {
    return parseDuration(text);
  } catch {
    return NaN;
  }
}

/** Saves convoy.cfg atomically. */
export function saveConfig(config: DaemonConfig): Promise<void> {
  return atomicWriteJSON(join(config.Root, "convoy.cfg"), config);
}
