/**
 * The single place that maps errors to exit codes and to the one-line message on stderr.
 *
 * - 0: success, `--help`, `--version`
 * - 1: any failed operation (daemon error, unreachable daemon, invalid name, …)
 * - 2: usage errors (unknown command or option, missing argument, malformed flag value)
 *
 * @module
 */
import { CommanderError } from "@commander-js/extra-typings";
import { errorMessage } from "../api/errors.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** A command-line usage problem found outside commander's own parsing; exits 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/**
 * A failure whose details were already written to stderr (e.g. `delete` of several volumes).
 * With `stdoutJSON`, its message still goes to stdout as Convoy's `{"Error": ...}`.
 */
export class ReportedFailure extends Error {
  readonly stdoutJSON: boolean;
  constructor(message = "operation failed", opts: { stdoutJSON?: boolean } = {}) {
    super(message);
    this.name = "ReportedFailure";
    this.stdoutJSON = opts.stdoutJSON === true;
  }
}

/** The exit code for anything thrown while running the CLI. */
export function exitCodeFor(err: unknown): number {
  if (err instanceof CommanderError) return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  if (err instanceof UsageError) return EXIT_USAGE;
  return EXIT_FAILURE;
}

/** Collapses a (possibly multi-line) message into one line. */
export function oneLine(message: string): string {
  return message.trim().replace(/\s*[\r\n]+\s*/g, " ");
}

/**
 * Convoy's answer on stdout for a failed operation (exit 1), tab-indented as Convoy wrote it:
 * `{"Error": message}`; `undefined` for usage errors and failures already reported.
 */
export function errorJSON(err: unknown): string | undefined {
  if (exitCodeFor(err) !== EXIT_FAILURE) return undefined;
  if (err instanceof ReportedFailure && !err.stdoutJSON) return undefined;
  return JSON.stringify({ Error: oneLine(errorMessage(err)) || "unknown error" }, null, "\t");
}

/** The line written to stderr for a failure, or `undefined` when nothing must be written. */
export function errorLine(err: unknown): string | undefined {
  // Commander already wrote its message through configureOutput().outputError.
  if (err instanceof CommanderError || err instanceof ReportedFailure) return undefined;
  if (err instanceof UsageError) return `convoy: error: ${oneLine(err.message)}`;
  return `convoy: ${oneLine(errorMessage(err)) || "unknown error"}`;
}
