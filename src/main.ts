/**
 * Entry point of the `convoy` command: `main(argv)` runs the CLI and resolves to the exit code.
 *
 * @module
 */
import process from "node:process";
import { createSocketTransport } from "./cli/client.ts";
import { runCli } from "./cli/program.ts";
import type { CliDeps } from "./cli/types.ts";

function defaultDeps(): CliDeps {
  return {
    io: {
      stdout: (text) => void process.stdout.write(text),
      stderr: (text) => void process.stderr.write(text),
      stderrIsTTY: process.stderr.isTTY === true,
      stdoutIsTTY: process.stdout.isTTY === true,
    },
    env: process.env,
    connect: (socket) => createSocketTransport(socket),
    runDaemon: async (flags) => {
      // Loaded lazily so client commands do not pay for the daemon's start-up cost.
      const { runDaemon } = await import("./daemon/daemon.ts");
      await runDaemon(flags);
    },
  };
}

/**
 * Runs `convoy` with `argv` (without the runtime and script path) and resolves to the exit code:
 * 0 success, 1 failed operation, 2 usage error. `deps` replaces parts of the environment.
 * @example
 * ```ts ignore
 * process.exitCode = await main(["--socket", "/tmp/convoy.sock", "list"]);
 * ```
 */
export function main(argv: string[], deps: Partial<CliDeps> = {}): Promise<number> {
  return runCli(argv, { ...defaultDeps(), ...deps });
}
