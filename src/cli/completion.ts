import type { Command as PlainCommand } from "commander";
import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import tab from "@bomb.sh/tab/commander";

/** Driver names offered when completing `--driver` and `--drivers`. */
export const DRIVER_NAMES = ["vfs", "loop", "devicemapper", "ebs"] as const;

/**
 * Adds `convoy completion bash|zsh|fish|powershell` (prints the script) and the hidden
 * `convoy complete -- <words>` (answers the script's completion requests). Call it after every
 * other command is defined: it snapshots the command tree.
 */
export function addCompletionCommands(program: CommandUnknownOpts): void {
  const root = tab(program as unknown as PlainCommand, { completionCommandName: "completion" });
  const drivers = root.commands.get("create")?.options.get("driver");
  const daemonDrivers = root.commands.get("daemon")?.options.get("drivers");
  for (const option of [drivers, daemonDrivers]) {
    if (option) {
      option.handler = (complete) => {
        for (const name of DRIVER_NAMES) complete(name, `${name} driver`);
      };
    }
  }
}

/** Sub-commands whose output goes through console.log (tab writes with it). */
export const COMPLETION_COMMANDS: ReadonlySet<string> = new Set(["completion", "complete"]);
