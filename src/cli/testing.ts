/**
 * Test helpers for the CLI: run `convoy` against a fake transport and capture everything.
 *
 * @module
 */
import type { DaemonFlags } from "../daemon/options.ts";
import { runCli } from "./program.ts";
import type { CliDeps, HttpMethod } from "./types.ts";

/** One request the fake transport received. */
export interface RecordedCall {
  socket: string;
  method: HttpMethod;
  path: string;
  body: unknown;
}

/** What {@linkcode runFake} saw. */
export interface FakeRun {
  code: number;
  stdout: string;
  stderr: string;
  calls: RecordedCall[];
  daemonFlags: DaemonFlags[];
}

/** Options of {@linkcode runFake}. */
export interface FakeOptions {
  /** Answers each request: a body string, or a thrown error. Default: "". */
  respond?: (call: RecordedCall) => string | Promise<string>;
  env?: Record<string, string | undefined>;
  runDaemon?: (flags: DaemonFlags) => Promise<void>;
  /** Whether stdout is a terminal (default: no, as in a script). */
  stdoutIsTTY?: boolean;
}

/** Runs the CLI with `argv` against a fake transport; never touches a socket. */
export async function runFake(argv: string[], opts: FakeOptions = {}): Promise<FakeRun> {
  const run: FakeRun = { code: -1, stdout: "", stderr: "", calls: [], daemonFlags: [] };
  const deps: CliDeps = {
    io: {
      stdout: (text) => void (run.stdout += text),
      stderr: (text) => void (run.stderr += text),
      stdoutIsTTY: opts.stdoutIsTTY,
    },
    env: opts.env ?? {},
    connect: (socket) => async (method, path, body) => {
      const call = { socket, method, path, body };
      run.calls.push(call);
      return await (opts.respond?.(call) ?? "");
    },
    runDaemon: async (flags) => {
      run.daemonFlags.push(flags);
      await opts.runDaemon?.(flags);
    },
  };
  run.code = await runCli(argv, deps);
  return run;
}
