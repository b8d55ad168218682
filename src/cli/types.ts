import type { DaemonFlags } from "../daemon/options.ts";

/** HTTP methods the Convoy REST API uses. */
export type HttpMethod = "GET" | "POST" | "DELETE";

/**
 * Sends one request to the daemon and resolves to the response body of a successful (< 400)
 * answer; rejects with a ConvoyError otherwise. `path` is the full wire path, e.g.
 * "/v1/volumes/create"; `body` is JSON-encoded when given.
 */
export type Transport = (method: HttpMethod, path: string, body?: unknown) => Promise<string>;

/** Where the CLI writes. Each call writes the text as given (no newline is added). */
export interface CliIO {
  stdout(text: string): void;
  stderr(text: string): void;
  /** True when stderr is a terminal: long operations then draw a progress bar there. */
  stderrIsTTY?: boolean;
  /** True when stdout is a terminal: a failure then writes only its line on stderr. */
  stdoutIsTTY?: boolean;
}

/** Everything the CLI touches outside itself; tests replace any of it. */
export interface CliDeps {
  io: CliIO;
  /** Environment variables (CONVOY_S3_ENDPOINT). */
  env: Record<string, string | undefined>;
  /** Builds the transport for a socket path (the real one speaks HTTP over a unix socket). */
  connect(socket: string): Transport;
  /** Runs the daemon until it stops (the real one is imported lazily from src/daemon). */
  runDaemon(flags: DaemonFlags): Promise<void>;
}

/** Options given before the sub-command. */
export interface GlobalOptions {
  socket: string;
  debug: boolean;
  verbose: boolean;
}
