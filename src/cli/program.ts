/**
 * The `convoy` command tree and the function that runs it.
 *
 * Build it with {@linkcode buildProgram} and run it with {@linkcode runCli}; both take a
 * {@linkcode CliDeps}, so tests inject a fake transport and capture the output.
 *
 * @module
 */
import { Command } from "@commander-js/extra-typings";
import { DEFAULT_SOCKET } from "../daemon/options.ts";
import { VERSION } from "../version.ts";
import { addBackupCommands } from "./backup.ts";
import { addCompletionCommands, COMPLETION_COMMANDS } from "./completion.ts";
import { addDaemonCommand } from "./daemon.ts";
import { addJobCommands } from "./jobs.ts";
import { errorJSON, errorLine, EXIT_OK, exitCodeFor, oneLine } from "./exit.ts";
import { Session } from "./session.ts";
import { addSnapshotCommands } from "./snapshot.ts";
import type { CliDeps } from "./types.ts";
import { addVolumeCommands } from "./volume.ts";

/**
 * Builds the `convoy` program. Parsing errors are thrown (exitOverride) after commander has
 * written its message as one `convoy: error: …` line.
 */
export function buildProgram(deps: CliDeps) {
  const { io } = deps;
  const program = new Command("convoy")
    .description("Docker volume plugin with snapshots and incremental backups")
    .usage("[global options] <command> [options]")
    .option("-s, --socket <path>", "unix socket of the daemon", DEFAULT_SOCKET)
    .option("-d, --debug", "print requests and error stack traces to stderr")
    .option(
      "--verbose",
      "make create, mount, snapshot create and backup create answer with JSON",
    )
    .version(`Convoy version v${VERSION}`, "-v, --version", "print the version")
    .exitOverride()
    .showSuggestionAfterError(true)
    .configureOutput({
      writeOut: (text) => io.stdout(text),
      writeErr: (text) => io.stderr(text),
      outputError: (text) => io.stderr(`convoy: ${oneLine(text)}\n`),
    });

  const session = new Session(deps, () => {
    const o = program.opts();
    return { socket: o.socket, debug: o.debug === true, verbose: o.verbose === true };
  });
  addDaemonCommand(program, session);
  addVolumeCommands(program, session);
  addSnapshotCommands(program, session);
  addBackupCommands(program, session);
  addJobCommands(program, session);
  addCompletionCommands(program, session);
  return { program, session };
}

/**
 * Runs `convoy` with `argv` (the arguments after the program name) and resolves to the exit
 * code: 0 success, 1 failed operation, 2 usage error. Never throws.
 */
export async function runCli(argv: string[], deps: CliDeps): Promise<number> {
  const { program } = buildProgram(deps);
  // @bomb.sh/tab writes scripts and completions with console.log: route them to deps.io.
  const consoleLog = console.log;
  let command = "";
  program.hook("preAction", (_program, action) => {
    command = action.name();
    if (COMPLETION_COMMANDS.has(action.name())) {
      console.log = (...args: unknown[]) => deps.io.stdout(args.map(String).join(" ") + "\n");
    }
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return EXIT_OK;
  } catch (err) {
    const line = errorLine(err);
    if (line !== undefined) deps.io.stderr(line + "\n");
    // Scripts reading stdout get Convoy's {"Error": ...}; a terminal gets only the line, and
    // so does the daemon, whose stdout is its log.
    const json = deps.io.stdoutIsTTY || command === "daemon" ? undefined : errorJSON(err);
    if (json !== undefined) deps.io.stdout(json + "\n");
    const code = exitCodeFor(err);
    if (code === 1 && program.opts().debug && err instanceof Error && err.stack) {
      deps.io.stderr(err.stack + "\n");
    }
    return code;
  } finally {
    console.log = consoleLog;
  }
}
