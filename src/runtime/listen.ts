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

const MAX_BODY = 16 * 1024 * 1024;

/** Resolves true when something accepts connections on the socket at `path`. */
export function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

function readBody(req: IncomingMessage): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    req.on("data", (c: Uint8Array) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new ConvoyError("InvalidArgument", "Request body is larger than 16 MiB"));
        req.destroy();
      } else chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/**
 * Serves `handler` on the unix socket `path` with mode 0660. The socket is bound under a temp
 * name and renamed into place, so clients never see a half-set-up socket. A stale socket of a
 * dead daemon is replaced; a live one is refused.
 */
export async function listenUnix(path: string, handler: Handler): Promise<UnixServer> {
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
  const server: Server = createServer((req, res) => {
    const send = (r: HttpResponse) => {
      const body = typeof r.body === "string" ? Buffer.from(r.body) : r.body;
      res.writeHead(r.status, {
        "Content-Type": r.contentType ?? "text/plain; charset=utf-8",
        "Content-Length": String(body.length),
      });
      res.end(body);
    };
    readBody(req)
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
      .then(send, (err) =>
        send({
          status: 500,
          body: JSON.stringify({ Error: (err as Error).message }),
          contentType: "application/json",
        }));
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
