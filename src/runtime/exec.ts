import { spawn } from "node:child_process";
import { BackendError, CancelledError, TimeoutError } from "../api/errors.ts";
import { deno } from "./deno.ts";

import type { Exec, ExecOptions, ExecResult } from "../api/host.ts";

export type { Exec, ExecOptions, ExecResult };

const decoder = new TextDecoder();

function describe(cmd: string, args: string[]): string {
  return [cmd, ...args].join(" ");
}

function failure(cmd: string, args: string[], code: number | null, stderr: string, stdout: string) {
  const out = (stderr.trim() || stdout.trim()).split("\n").slice(-3).join("; ");
  return new BackendError(
    `Failed to execute "${describe(cmd, args)}": exit code ${code}${out ? `: ${out}` : ""}`,
  );
}

/**
 * Creates the exec helper: runs `cmd` without a shell, resolves with its output when it exits 0,
 * and throws BackendError (non-zero exit, or not found), TimeoutError or CancelledError.
 * Uses Deno.Command on Deno and node:child_process elsewhere.
 */
export function createExec(defaults: { timeoutMs: number }): Exec {
  return async (cmd, args, opts = {}) => {
    const timeoutMs = opts.timeoutMs ?? defaults.timeoutMs;
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, timeoutMs);
    const onAbort = () => ctl.abort();
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const r = deno
        ? await runDeno(cmd, args, opts, ctl.signal)
        : await runNode(cmd, args, opts, ctl.signal);
      if (timedOut) {
        throw new TimeoutError(
          `Timeout executing "${describe(cmd, args)}" after ${Math.round(timeoutMs / 1000)}s`,
        );
      }
      if (opts.signal?.aborted) throw new CancelledError(`Cancelled "${describe(cmd, args)}"`);
      if (r.code !== 0) throw failure(cmd, args, r.code, r.stderr, r.stdout);
      return { stdout: r.stdout, stderr: r.stderr };
    } finally {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
    }
  };
}

interface RawResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function notFound(cmd: string, err: unknown): BackendError {
  return new BackendError(`Cannot execute "${cmd}": command not found`, { cause: err });
}

async function runDeno(
  cmd: string,
  args: string[],
  opts: ExecOptions,
  signal: AbortSignal,
): Promise<RawResult> {
  let child;
  try {
    child = new deno!.Command(cmd, {
      args,
      cwd: opts.cwd,
      env: opts.env,
      stdin: opts.input === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    if ((err as Error).name === "NotFound") throw notFound(cmd, err);
    throw new BackendError(`Cannot execute "${cmd}": ${(err as Error).message}`, { cause: err });
  }
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
  };
  signal.addEventListener("abort", kill, { once: true });
  try {
    if (opts.input !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(
        typeof opts.input === "string" ? new TextEncoder().encode(opts.input) : opts.input,
      )
        .catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
    };
  } finally {
    signal.removeEventListener("abort", kill);
  }
}

function runNode(
  cmd: string,
  args: string[],
  opts: ExecOptions,
  signal: AbortSignal,
): Promise<RawResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ? { ...process.env, ...opts.env } : undefined,
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      signal,
      killSignal: "SIGKILL",
    });
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    child.stdout!.on("data", (c: Uint8Array) => out.push(c));
    child.stderr!.on("data", (c: Uint8Array) => err.push(c));
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") reject(notFound(cmd, e));
      else if (e.name === "AbortError") { /* reported through close */ }
      else reject(new BackendError(`Cannot execute "${cmd}": ${e.message}`, { cause: e }));
    });
    child.on("close", (code) => {
      resolve({
        code,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: Buffer.concat(err).toString("utf8"),
      });
    });
    if (opts.input !== undefined) child.stdin!.end(opts.input);
  });
}
