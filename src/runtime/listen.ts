import { chmod, lstat, mkdir, rename, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { connect } from "node:net";
import { dirname, join } from "node:path";
import { ConvoyError } from "../api/errors.ts";

/** A request as the daemon's handler sees it; bodies are read on every method, GET included. */
export interface HttpRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: Record<string, string | string[] | undefined>;
  body: Uint8Array;
}

/** The handler's answer. */
export interface HttpResponse {
  status: number;
  body: string | Uint8Array;
  contentType?: string;
}

export type Handler = (req: HttpRequest) => Promise<HttpResponse>;

/** A server listening on a unix socket. */
export interface UnixServer {
  path: string;
  close(): Promise<void>;
}

/** The largest request body the daemon reads; a larger one is answered 413. */
export const MAX_BODY = 16 * 1024 * 1024;

/**
 * How long a client has to send a request's headers, and then its body: a request that has not
 * fully arrived by then is answered 408 and its connection closed. Handling the request (a backup
 * that takes minutes) is not limited.
 */
export const REQUEST_TIMEOUT_MS = 30_000;

/** Options of {@linkcode listenUnix}. */
export interface ListenOptions {
  /** See REQUEST_TIMEOUT_MS (tests shorten it). */
  requestTimeoutMs?: number;
}

/** Resolves true when something accepts connections on the socket at `path`. */
export function socketAlive(path: string): Promise<boolean> {
  return connectable({ path });
}

/**
 * Resolves true when something accepts a connection at `target` (a unix socket path, or a TCP
 * host and port) within `timeoutMs` (default: no limit).
 */
export function connectable(
  target: { path: string } | { host: string; port: number },
  timeoutMs?: number,
): Promise<boolean> {
  return new Promise((done) => {
    const s = connect(target);
    const finish = (alive: boolean) => {
      clearTimeout(timer);
      s.destroy();
      done(alive);
    };
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => finish(false), timeoutMs);
    s.once("connect", () => finish(true));
    s.once("error", () => finish(false));
  });
}

/** A request the server answers itself, without the handler: too large, or too slow to arrive. */
class RequestRefused extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * The request body. Past MAX_BODY, the rest is read and dropped (the client can then read the
 * answer) and the promise rejects with 413; a body that has not ended `timeoutMs` after the
 * headers rejects with 408 (or 413 if it was too large already).
 */
function readBody(req: IncomingMessage, timeoutMs: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    const tooLarge = () =>
      new RequestRefused(413, `Request body is larger than ${MAX_BODY / 1024 / 1024} MiB`);
    const timer = setTimeout(() => {
      reject(
        size > MAX_BODY ? tooLarge() : new RequestRefused(
          408,
          `Request did not arrive in ${timeoutMs / 1000} s: ${size} of ${
            req.headers["content-length"] ?? "?"
          } body bytes received`,
        ),
      );
    }, timeoutMs);
    req.on("data", (c: Uint8Array) => {
      size += c.length;
      if (size > MAX_BODY) chunks.length = 0;
      else chunks.push(c);
    });
    req.on("end", () => {
      clearTimeout(timer);
      if (size > MAX_BODY) reject(tooLarge());
      else resolve(Buffer.concat(chunks));
    });
    req.on("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    req.on("close", () => clearTimeout(timer));
  });
}

/**
 * Serves `handler` on the unix socket `path` with mode 0660. The socket is bound under a temp
 * name and renamed into place, so clients never see a half-set-up socket. A stale socket of a
 * dead daemon is replaced; a live one is refused.
 */
export async function listenUnix(
  path: string,
  handler: Handler,
  opts: ListenOptions = {},
): Promise<UnixServer> {
  const timeoutMs = opts.requestTimeoutMs ?? REQUEST_TIMEOUT_MS;
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const existing = await lstat(path).catch(() => undefined);
  if (existing) {
    if (!existing.isSocket()) {
      throw new ConvoyError(
        "Conflict",
        `Cannot listen on "${path}": a file that is not a socket is there`,
      );
    }
    if (await socketAlive(path)) {
      throw new ConvoyError("Conflict", `Cannot listen on "${path}": another daemon is running`);
    }
  }
  // Headers must arrive within the timeout (the runtime answers 408 without a body); the body
  // within the timeout after them (readBody, which answers 408 with JSON).
  const server: Server = createServer({
    headersTimeout: timeoutMs,
    requestTimeout: 0,
    connectionsCheckingInterval: Math.min(timeoutMs / 4, 5_000),
  }, (req, res) => {
    const send = (r: HttpResponse, close = false) => {
      if (res.headersSent || res.destroyed) return;
      const body = typeof r.body === "string" ? Buffer.from(r.body) : r.body;
      res.writeHead(r.status, {
        "Content-Type": r.contentType ?? "text/plain; charset=utf-8",
        "Content-Length": String(body.length),
        ...(close ? { Connection: "close" } : {}),
      });
      res.end(body);
    };
    const fail = (status: number, err: unknown, close = false) =>
      send({
        status,
        body: JSON.stringify({ Error: (err as Error).message }),
        contentType: "application/json",
      }, close);
    readBody(req, timeoutMs)
      .then((body) => {
        const url = new URL(req.url ?? "/", "http://convoy");
        return handler({
          method: req.method ?? "GET",
          path: url.pathname,
          query: url.searchParams,
          headers: req.headers,
          body,
        });
      })
      .then((r) => send(r), (err) => {
        if (err instanceof RequestRefused) fail(err.status, err, true);
        else fail(500, err);
      });
  });
  const tmp = join(dirname(path), `.${process.pid}-${Date.now()}.sock.tmp`);
  await rm(tmp, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(tmp, () => {
      server.off("error", reject);
      resolve();
    });
  });
  try {
    await chmod(tmp, 0o660);
    await rename(tmp, path);
  } catch (err) {
    server.close();
    await rm(tmp, { force: true });
    throw err;
  }
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections?.();
        rm(path, { force: true }).catch(() => {});
      }),
  };
}
