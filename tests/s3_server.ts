/**
 * A local S3 server for tests: fauxqs (an S3/SQS/SNS emulator) bound to loopback only.
 *
 * As a script (for CI, started in the background):
 *
 * ```sh
 * npx deno run -A tests/s3_server.ts --port 9000 --dir /tmp/convoy-s3
 * # prints "http://127.0.0.1:9000" on stdout once it listens; SIGINT/SIGTERM stop it
 * ```
 *
 * In-process (tests): `const s3 = await startS3Server(); ...; await s3.close();`
 *
 * fauxqs does not check signatures or credentials, limits a request body to 11 MiB (larger
 * objects need multipart uploads) and requires bucket names of at least 3 characters.
 * @module
 */
import process from "node:process";
import type { BuildAppOptions } from "fauxqs";

/** Options of startS3Server. */
export interface S3ServerOptions {
  /** TCP port; 0 (default) picks a free one. */
  port?: number;
  /** Listen address (default "127.0.0.1"). */
  host?: string;
  /** Keep objects as files under this directory instead of in memory. */
  dir?: string;
}

/** A running local S3 server. */
export interface S3Server {
  /** The base URL, e.g. "http://127.0.0.1:9000" (use with path-style addressing). */
  endpoint: string;
  /** Stops the server and closes its connections. */
  close(): Promise<void>;
}

interface FauxqsS3Store {
  persistence?: unknown;
}

/**
 * Starts fauxqs on `opts.host` (default loopback). With `opts.dir` S3 objects are stored as
 * files (fauxqs's file persistence), which keeps the server's memory low for big uploads.
 */
export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const fauxqs = await import("fauxqs");
  let stores: BuildAppOptions["stores"];
  let closePersistence = () => {};
  if (opts.dir) {
    // buildApp() has no storage option: wire fauxqs's own stores as startFauxqs() does. The
    // modules are not in the package's exports map, so import them beside its entry point.
    const base = import.meta.resolve("fauxqs");
    const [{ SqsStore }, { SnsStore }, { S3Store }, { FileS3Persistence }] = await Promise.all([
      import(new URL("./sqs/sqsStore.js", base).href),
      import(new URL("./sns/snsStore.js", base).href),
      import(new URL("./s3/s3Store.js", base).href),
      import(new URL("./s3/fileS3Persistence.js", base).href),
    ]);
    const persistence = new FileS3Persistence(opts.dir);
    const s3Store: FauxqsS3Store = new S3Store();
    persistence.loadS3(s3Store);
    s3Store.persistence = persistence;
    stores = { sqsStore: new SqsStore(), snsStore: new SnsStore(), s3Store } as typeof stores;
    closePersistence = () => persistence.close();
  }
  const app = fauxqs.buildApp({ logger: false, ...(stores ? { stores } : {}) });
  const host = opts.host ?? "127.0.0.1";
  try {
    await app.listen({ host, port: opts.port ?? 0 });
  } catch (err) {
    await app.close().catch(() => {});
    closePersistence();
    throw err;
  }
  const addr = app.server.address();
  if (addr === null || typeof addr === "string") {
    await app.close();
    closePersistence();
    throw new Error(`Cannot start S3 server: unexpected listen address ${JSON.stringify(addr)}`);
  }
  const shown = addr.family === "IPv6" || addr.address.includes(":")
    ? `[${addr.address}]`
    : addr.address;
  let closed: Promise<void> | undefined;
  return {
    endpoint: `http://${shown}:${addr.port}`,
    close() {
      closed ??= app.close().then(() => closePersistence());
      return closed;
    },
  };
}

function argValue(args: string[], name: string): string | undefined {
  const i = args.indexOf(name);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(name + "="));
  return eq?.slice(name.length + 1);
}

async function main(args: string[]): Promise<void> {
  if (args.includes("--help") || args.includes("-h")) {
    console.log("Usage: s3_server.ts [--port N] [--host ADDR] [--dir DIR]");
    return;
  }
  const portArg = argValue(args, "--port");
  const port = portArg === undefined ? 0 : Number(portArg);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`Invalid port "${portArg}": must be an integer from 0 to 65535`);
    process.exit(2);
  }
  const server = await startS3Server({
    port,
    host: argValue(args, "--host"),
    dir: argValue(args, "--dir"),
  });
  console.log(server.endpoint);
  const stop = () => {
    server.close().then(() => process.exit(0), (err) => {
      console.error(err);
      process.exit(1);
    });
  };
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}

if (import.meta.main) await main(process.argv.slice(2));
