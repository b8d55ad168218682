/**
 * A minimal HTTP/1.1 client over a unix socket, built on `node:net`.
 *
 * Convoy sends JSON bodies on GET requests (inspect, list), which Deno's `node:http` client
 * cannot do, so the request is written by hand and the response parsed here. Supports
 * Content-Length, chunked transfer-encoding and read-until-close bodies.
 *
 * @module
 */
import { connect } from "node:net";
import { Buffer } from "node:buffer";
import {
  BackendError,
  ConflictError,
  ConvoyError,
  InvalidArgumentError,
  NotFoundError,
} from "../api/errors.ts";
import type { HttpMethod, Transport } from "./types.ts";

/** How long to wait for the socket connection (Convoy: 10 s). There is no overall timeout. */
export const CONNECT_TIMEOUT_MS = 10_000;
/** Convoy's client identifies itself with this; the daemon checks the version after "/". */
export const USER_AGENT = "Convoy-Client/1";

/** A parsed HTTP response. Header names are lower case. */
export interface HttpResponse {
  status: number;
  statusText: string;
  headers: Record<string, string>;
  body: string;
}

/** One request for {@linkcode sendRequest}. */
export interface SendOptions {
  method: HttpMethod;
  /** Full request target, e.g. "/v1/volumes/list?driver=1". */
  path: string;
  /** Request body, already encoded (JSON). */
  body?: string;
  /** Connect timeout in milliseconds (default {@linkcode CONNECT_TIMEOUT_MS}). */
  connectTimeoutMs?: number;
}

const CONNECT_REASONS: Record<string, string> = {
  ENOENT: "no such socket",
  ECONNREFUSED: "connection refused",
  EACCES: "permission denied",
  EPERM: "permission denied",
  ENOTSOCK: "not a socket",
  ENOTDIR: "no such socket",
};

function unavailable(socketPath: string, reason: string, cause?: unknown): ConvoyError {
  return new ConvoyError(
    "Unavailable",
    `cannot connect to convoy daemon at ${socketPath}: ${reason} (is "convoy daemon" running?)`,
    { cause },
  );
}

/** Encodes the request head and body as Convoy's client does. */
export function encodeRequest(req: SendOptions): Buffer {
  const body = Buffer.from(req.body ?? "", "utf8");
  const head = `${req.method} ${req.path} HTTP/1.1\r\n` +
    `Host: convoy\r\n` +
    `User-Agent: ${USER_AGENT}\r\n` +
    `Content-Type: application/json\r\n` +
    `Content-Length: ${body.length}\r\n` +
    `Connection: close\r\n\r\n`;
  return Buffer.concat([Buffer.from(head, "latin1"), body]);
}

interface ChunkedResult {
  body: Buffer;
  done: boolean;
}

function decodeChunked(buf: Buffer, start: number, ended: boolean): ChunkedResult {
  const parts: Buffer[] = [];
  let pos = start;
  for (;;) {
    const lineEnd = buf.indexOf("\r\n", pos, "latin1");
    if (lineEnd < 0) return { body: Buffer.concat(parts), done: false };
    const sizeText = buf.subarray(pos, lineEnd).toString("latin1").split(";")[0].trim();
    if (!/^[0-9a-fA-F]+$/.test(sizeText)) {
      throw new BackendError(`Malformed chunked response from convoy daemon: bad chunk size`);
    }
    const size = parseInt(sizeText, 16);
    pos = lineEnd + 2;
    if (size === 0) {
      // Trailers (usually none) end with an empty line.
      const done = buf.subarray(pos, pos + 2).toString("latin1") === "\r\n" ||
        buf.indexOf("\r\n\r\n", pos, "latin1") >= 0 || ended;
      return { body: Buffer.concat(parts), done };
    }
    if (buf.length < pos + size + 2) return { body: Buffer.concat(parts), done: false };
    parts.push(buf.subarray(pos, pos + size));
    pos += size + 2;
  }
}

/**
 * Parses the bytes received so far. Resolves to `undefined` while the response is incomplete;
 * with `ended` (the peer closed the connection) an incomplete response is an error.
 */
export function parseResponse(buf: Buffer, ended: boolean): HttpResponse | undefined {
  let offset = 0;
  for (;;) {
    const headEnd = buf.indexOf("\r\n\r\n", offset, "latin1");
    if (headEnd < 0) {
      if (!ended) return undefined;
      throw new ConvoyError(
        "Unavailable",
        buf.length === offset
          ? "convoy daemon closed the connection without answering"
          : "convoy daemon closed the connection in the middle of the response headers",
      );
    }
    const [statusLine, ...lines] = buf.subarray(offset, headEnd).toString("latin1").split("\r\n");
    const m = /^HTTP\/\d(?:\.\d)? (\d{3})(?: (.*))?$/.exec(statusLine);
    if (!m) {
      throw new BackendError(
        `Malformed response from convoy daemon: ${JSON.stringify(statusLine.slice(0, 80))}`,
      );
    }
    const status = Number(m[1]);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon <= 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    }
    const bodyStart = headEnd + 4;
    if (status >= 100 && status < 200) {
      offset = bodyStart; // interim response (100 Continue): the real one follows
      continue;
    }
    const done = (body: Buffer): HttpResponse => ({
      status,
      statusText: m[2] ?? "",
      headers,
      body: body.toString("utf8"),
    });
    if (status === 204 || status === 304) return done(Buffer.alloc(0));
    if (/\bchunked\b/i.test(headers["transfer-encoding"] ?? "")) {
      const r = decodeChunked(buf, bodyStart, ended);
      if (r.done) return done(r.body);
    } else if (headers["content-length"] !== undefined) {
      const length = Number(headers["content-length"]);
      if (!Number.isSafeInteger(length) || length < 0) {
        throw new BackendError(
          `Malformed response from convoy daemon: bad Content-Length ${
            JSON.stringify(headers["content-length"])
          }`,
        );
      }
      if (buf.length >= bodyStart + length) {
        return done(buf.subarray(bodyStart, bodyStart + length));
      }
    } else if (ended) {
      return done(buf.subarray(bodyStart));
    }
    if (!ended) return undefined;
    throw new ConvoyError(
      "Unavailable",
      "convoy daemon closed the connection before the full response was received",
    );
  }
}

/**
 * Sends one request over the unix socket at `socketPath` and resolves to the parsed response,
 * whatever its status. Connection problems reject with a ConvoyError of code "Unavailable".
 */
export function sendRequest(socketPath: string, req: SendOptions): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let connected = false;
    let settled = false;
    const socket = connect({ path: socketPath });
    const timeoutMs = req.connectTimeoutMs ?? CONNECT_TIMEOUT_MS;
    const timer = setTimeout(() => {
      finish(undefined, unavailable(socketPath, `timed out after ${timeoutMs / 1000}s`));
    }, timeoutMs);

    function finish(res: HttpResponse | undefined, err?: unknown): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      if (res) resolve(res);
      else reject(err);
    }

    function tryParse(ended: boolean): boolean {
      try {
        const res = parseResponse(Buffer.concat(chunks, received), ended);
        if (res) finish(res);
        return res !== undefined;
      } catch (err) {
        finish(undefined, err);
        return true;
      }
    }

    socket.on("connect", () => {
      connected = true;
      clearTimeout(timer);
      socket.write(encodeRequest(req));
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      tryParse(false);
    });
    socket.on("end", () => tryParse(true));
    socket.on("close", () => {
      if (!settled) tryParse(true);
    });
    socket.on("error", (err: Error & { code?: string }) => {
      if (settled) return;
      if (!connected) {
        const reason = CONNECT_REASONS[err.code ?? ""] ?? err.message;
        finish(undefined, unavailable(socketPath, reason, err));
        return;
      }
      // The daemon may have answered and closed before reading all of our request.
      if (received > 0 && tryParse(true)) return;
      finish(
        undefined,
        new ConvoyError(
          "Unavailable",
          `lost connection to convoy daemon at ${socketPath}: ${err.message}`,
          { cause: err },
        ),
      );
    });
  });
}

/** The error message of a failed response: `{"Error": "..."}` JSON or Convoy's plain text. */
export function responseErrorMessage(res: HttpResponse): string {
  const text = res.body.trim();
  if (text.startsWith("{")) {
    try {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object") {
        const rec = parsed as Record<string, unknown>;
        const msg = rec.Error ?? rec.error ?? rec.message;
        if (typeof msg === "string" && msg !== "") return msg;
      }
    } catch {
      // Not JSON: use the text.
    }
  }
  if (text !== "") return text;
  return `convoy daemon answered HTTP ${res.status}${
    res.statusText ? " " + res.statusText : ""
  } without a message (incompatible version?)`;
}

/** Turns a failed response (status >= 400) into the matching ConvoyError. */
export function responseError(res: HttpResponse): ConvoyError {
  const msg = responseErrorMessage(res);
  switch (res.status) {
    case 400:
      return new InvalidArgumentError(msg);
    case 404:
      return new NotFoundError(msg);
    case 409:
      return new ConflictError(msg);
    default:
      return new BackendError(msg);
  }
}

/** Options of {@linkcode createSocketTransport}. */
export interface SocketTransportOptions {
  connectTimeoutMs?: number;
}

/**
 * The real transport: JSON requests over HTTP on the unix socket at `socketPath`.
 * @example
 * ```ts ignore
 * const request = createSocketTransport("/var/run/convoy/convoy.sock");
 * console.log(await request("GET", "/v1/info"));
 * ```
 */
export function createSocketTransport(
  socketPath: string,
  opts: SocketTransportOptions = {},
): Transport {
  return async (method, path, body) => {
    const res = await sendRequest(socketPath, {
      method,
      path,
      body: body === undefined ? undefined : JSON.stringify(body),
      connectTimeoutMs: opts.connectTimeoutMs,
    });
    if (res.status >= 400) throw responseError(res);
    return res.body;
  };
}
