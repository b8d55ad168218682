import type { Command as PlainCommand } from "commander";
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import type { Complete } from "@bomb.sh/tab";
import tab from "@bomb.sh/tab/commander";
import { DEFAULT_SOCKET } from "../daemon/options.ts";
import type { Session } from "./session.ts";

/** The drivers bundled in every build: what `daemon --drivers` completes to. */
export const BUNDLED_DRIVERS = ["vfs", "loop", "devicemapper"] as const;

/** How long a completion waits for the daemon before it offers nothing. */
export const COMPLETION_TIMEOUT_MS = 1000;

/** Leads the bash script: tab's script calls bash-completion's helpers, which bash lacks. */
const BASH_COMPLETION_CHECK = `if ! declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
  echo "convoy: completion needs the bash-completion package (apt-get install bash-completion)" >&2
  return 1 2>/dev/null
fi
`;

/** What the running daemon reports, for completing names; empty when it does not answer. */
interface DaemonNames {
  /** Volume name → its driver. */
  volumes: Map<string, string>;
  /** Snapshot name → its volume. */
  snapshots: Map<string, string>;
  drivers: string[];
}

/** The value of `--socket`/`-s` among the words being completed, else the default socket. */
function socketOf(words: string[]): string {
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    if (w.startsWith("--socket=")) return w.slice("--socket=".length);
    if ((w === "--socket" || w === "-s") && i + 1 < words.length) return words[i + 1];
  }
  return DEFAULT_SOCKET;
}

/** Asks the daemon for its volumes, snapshots and drivers; silent and empty on any failure. */
async function askDaemon(s: Session, socket: string): Promise<DaemonNames> {
  const names: DaemonNames = { volumes: new Map(), snapshots: new Map(), drivers: [] };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timeout")), COMPLETION_TIMEOUT_MS);
  });
  try {
    const transport = s.deps.connect(socket);
    const [list, info] = await Promise.race([
      Promise.all([transport("GET", "/v1/volumes/list"), transport("GET", "/v1/info")]),
      timeout,
    ]);
    const volumes = JSON.parse(list) as Record<
      string,
      { Driver?: string; Snapshots?: Record<string, unknown> }
    >;
    for (const [name, v] of Object.entries(volumes)) {
      names.volumes.set(name, v.Driver ?? "");
      for (const snap of Object.keys(v.Snapshots ?? {})) names.snapshots.set(snap, name);
    }
    const general = (JSON.parse(info) as { General?: { DriverList?: unknown } }).General;
    if (Array.isArray(general?.DriverList)) names.drivers = general.DriverList.map(String);
  } catch {
    // No daemon, a slow one, or an old one: complete nothing rather than print an error.
  } finally {
    clearTimeout(timer);
  }
  return names;
}

/**
 * Adds `convoy completion bash|zsh|fish|powershell` (prints the script) and the hidden
 * `convoy complete -- <words>` (answers the script's completion requests). Call it after every
 * other command is defined: it snapshots the command tree. Volume, snapshot and driver names
 * come from the running daemon (the words' `--socket`, else the default one).
 */
export function addCompletionCommands(program: CommandUnknownOpts, s: Session): void {
  const root = tab(program as unknown as PlainCommand, { completionCommandName: "completion" });
  let names: DaemonNames = { volumes: new Map(), snapshots: new Map(), drivers: [] };
  program.commands.find((c) => c.name() === "complete")?.hook("preAction", async (_, action) => {
    names = await askDaemon(s, socketOf(action.args));
  });

  program.commands.find((c) => c.name() === "completion")?.hook("preAction", (_, action) => {
    if (action.args[0] === "bash") s.deps.io.stdout(BASH_COMPLETION_CHECK);
  });

  const volumes = (complete: Complete) => {
    for (const [name, driver] of names.volumes) complete(name, `${driver} volume`);
  };
  const snapshots = (complete: Complete) => {
    for (const [name, volume] of names.snapshots) complete(name, `snapshot of ${volume}`);
  };
  const setArgument = (command: string, handler: (complete: Complete) => void) => {
    const c = root.commands.get(command);
    for (const arg of c?.arguments.values() ?? []) arg.handler = handler;
  };
  for (const c of ["mount", "umount", "delete", "inspect", "snapshot create"]) {
    setArgument(c, volumes);
  }
  for (const c of ["snapshot delete", "snapshot inspect", "backup create"]) {
    setArgument(c, snapshots);
  }
  const volumeName = root.commands.get("backup list")?.options.get("volume-name");
  if (volumeName) volumeName.handler = volumes;
  const driver = root.commands.get("create")?.options.get("driver");
  if (driver) {
    driver.handler = (complete) => {
      for (const name of names.drivers) complete(name, `${name} driver`);
    };
  }
  const daemonDrivers = root.commands.get("daemon")?.options.get("drivers");
  if (daemonDrivers) {
    daemonDrivers.handler = (complete) => {
      for (const name of BUNDLED_DRIVERS) complete(name, `bundled ${name} driver`);
    };
  }
}

/** Sub-commands whose output goes through console.log (tab writes with it). */
export const COMPLETION_COMMANDS: ReadonlySet<string> = new Set(["completion", "complete"]);
