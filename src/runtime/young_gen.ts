/**
 * The daemon's V8 young-generation cap under Node. The AWS SDK makes much short-lived garbage and
 * V8's default nursery grows to tens of MiB of RSS; `--max-semi-space-size=2` keeps a backup to
 * s3:// within its memory budget at the same speed (README, Performance). The flag only takes
 * effect when the process starts, so a Node daemon started without it runs itself again with it.
 * Deno forms get it from their command line (`deno task daemon`, `compile:deno`); Bun is not V8.
 * @module
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import process from "node:process";
import { deno, isBun } from "./deno.ts";

export const YOUNG_GEN_FLAG = "--max-semi-space-size=2";
/** Set in the environment of the daemon that runWithYoungGenCap() starts. */
const CHILD_MARK = "CONVOY_YOUNG_GEN_CHILD";
const SIGNALS = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"] as const;

/**
 * True when `argv` (without runtime and script) starts the daemon on Node (`node`, default: this
 * runtime is Node) without a young-generation cap in `execArgv` or `env.NODE_OPTIONS`. Any
 * `daemon` word counts: a client run again costs only its start-up.
 */
export function needsYoungGenCap(
  argv: readonly string[],
  opts: {
    env: Record<string, string | undefined>;
    execArgv: readonly string[];
    node?: boolean;
  },
): boolean {
  const node = opts.node ?? (deno === undefined && !isBun);
  if (!node || !argv.includes("daemon")) return false;
  const set = (a: string) => a.startsWith("--max-semi-space-size");
  return !opts.execArgv.some(set) && !(opts.env.NODE_OPTIONS ?? "").split(/\s+/).some(set);
}

/**
 * Runs this script again under Node with the cap, passing signals on; resolves to its exit code
 * (128 + signal number when a signal ended it). The child has a session of its own, so a
 * terminal's Ctrl-C reaches it once, through this process, not twice; it stops as on SIGTERM
 * when this process dies (followLauncher()).
 */
export function runWithYoungGenCap(argv: readonly string[]): Promise<number> {
  const child = spawn(
    process.execPath,
    [...process.execArgv, YOUNG_GEN_FLAG, process.argv[1], ...argv],
    {
      stdio: ["inherit", "inherit", "inherit", "ipc"],
      detached: true,
      env: { ...process.env, [CHILD_MARK]: "1" },
    },
  );
  const forward = (sig: NodeJS.Signals) => child.kill(sig);
  for (const sig of SIGNALS) process.on(sig, forward);
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      for (const sig of SIGNALS) process.off(sig, forward);
      resolve(code ?? 128 + (signal ? constants.signals[signal] ?? 0 : 0));
    });
  });
}

/** In a daemon started by runWithYoungGenCap(): stop as on SIGTERM once the launcher is gone. */
export function followLauncher(): void {
  if (process.env[CHILD_MARK] !== "1" || !process.channel) return;
  delete process.env[CHILD_MARK];
  process.once("disconnect", () => process.kill(process.pid, "SIGTERM"));
  process.channel.unref();
}
