import type { CliDeps, GlobalOptions, HttpMethod, Transport } from "./types.ts";

/** Environment variable giving the default `--s3-endpoint` for s3:// URLs. */
export const S3_ENDPOINT_ENV = "CONVOY_S3_ENDPOINT";

/**
 * What a running command needs: the global options (read after parsing), the daemon transport
 * (created on first use) and the output streams.
 */
export class Session {
  readonly deps: CliDeps;
  #globals: () => GlobalOptions;
  #transport: Transport | undefined;

  constructor(deps: CliDeps, globals: () => GlobalOptions) {
    this.deps = deps;
    this.#globals = globals;
  }

  /** The options given before the sub-command. */
  get globals(): GlobalOptions {
    return this.#globals();
  }

  /** True with `--verbose`: ask the daemon for JSON instead of a bare string. */
  get verbose(): boolean {
    return this.globals.verbose;
  }

  /** Sends one request to the daemon; resolves to the body of a successful answer. */
  async call(method: HttpMethod, path: string, body?: unknown): Promise<string> {
    const { socket, debug } = this.globals;
    this.#transport ??= this.deps.connect(socket);
    if (debug) {
      this.debug(`${method} ${path}${body === undefined ? "" : " " + JSON.stringify(body)}`);
    }
    const out = await this.#transport(method, path, body);
    if (debug) this.debug(`${method} ${path} succeeded (${out.length} characters)`);
    return out;
  }

  /**
   * Prints a response body followed by a newline, as Convoy does; an empty body (umount, delete,
   * snapshot delete, backup delete) prints nothing, where Convoy printed an empty line.
   */
  print(body: string): void {
    if (body !== "") this.deps.io.stdout(body + "\n");
  }

  /** Writes one line to stderr. */
  warn(line: string): void {
    this.deps.io.stderr(line + "\n");
  }

  /** Writes a debug line to stderr when `--debug` is given. */
  debug(message: string): void {
    if (this.globals.debug) this.deps.io.stderr(`convoy: debug: ${message}\n`);
  }

  /**
   * The S3 endpoint to send with `url`: the explicit flag value if any, else
   * CONVOY_S3_ENDPOINT when `url` is an s3:// URL, else "".
   */
  endpointFor(url: string, explicit: string | undefined): string {
    if (explicit !== undefined) return explicit;
    const fromEnv = this.deps.env[S3_ENDPOINT_ENV];
    return fromEnv && /^s3:\/\//i.test(url) ? fromEnv : "";
  }
}
