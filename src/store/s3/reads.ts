/**
 * Memory-lean reads: GetObject over fetch(), and a body read into one buffer of its own. A
 * response body read through node:http leaves all its 64 KiB chunks (plus copies) to the
 * garbage collector, which frees them late: restores from S3 peaked ~110 MiB higher than from
 * vfs://. A fetch body's chunks belong to the reader, which copies each into the object's buffer
 * and frees it at once (readAll).
 * @module
 */
import { errorMessage } from "../../api/errors.ts";
import { FETCH_FAILED } from "./errors.ts";

/** How long a read may wait for its response, or for the next bytes of its body. */
export const READ_IDLE_MS = 120_000;

/** The SDK's HttpRequest, as much of it as fetchHandler uses. */
interface SdkHttpRequest {
  method: string;
  protocol: string;
  hostname: string;
  port?: number;
  path: string;
  query?: Record<string, string | string[] | null>;
  headers: Record<string, string>;
}

/** RFC 3986 escaping, as the SDK signs query strings. */
function escapeUri(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

function queryString(query: SdkHttpRequest["query"] = {}): string {
  const parts: string[] = [];
  for (const key of Object.keys(query).sort()) {
    const v = query[key];
    if (Array.isArray(v)) {
      for (const one of v) parts.push(`${escapeUri(key)}=${escapeUri(one)}`);
    } else {parts.push(
        typeof v === "string" ? `${escapeUri(key)}=${escapeUri(v)}` : escapeUri(key),
      );}
  }
  return parts.length > 0 ? `?${parts.join("&")}` : "";
}

/** A failed or stalled fetch() as a network error (retried; see FETCH_FAILED). */
export function fetchError(err: unknown): Error {
  return Object.assign(new Error(errorMessage(err)), { code: FETCH_FAILED, cause: err });
}

/** The SDK transport of the reads client: GetObject over fetch(), bodies as web streams. */
export const fetchHandler = {
  metadata: { handlerProtocol: "http/1.1" },
  async handle(request: SdkHttpRequest, opts: { abortSignal?: AbortSignal } = {}) {
    const headers = new Headers();
    for (const [k, v] of Object.entries(request.headers)) {
      if (k.toLowerCase() !== "host") headers.set(k, v); // fetch sets it from the URL
    }
    const port = request.port ? `:${request.port}` : "";
    const url = `${request.protocol}//${request.hostname}${port}${request.path}${
      queryString(request.query)
    }`;
    let res: Response;
    try {
      res = await fetch(url, { method: request.method, headers, signal: opts.abortSignal });
    } catch (err) {
      throw fetchError(opts.abortSignal?.reason ?? err);
    }
    const out: Record<string, string> = {};
    res.headers.forEach((v, k) => (out[k] = v));
    return {
      response: {
        statusCode: res.status,
        reason: res.statusText,
        headers: out,
        body: res.body ?? new ReadableStream({ start: (c) => c.close() }),
      },
    };
  },
  updateHttpClientConfig: () => {},
  httpHandlerConfigs: () => ({}),
  destroy: () => {},
};

/**
 * Reads `body` into one buffer of its own (of `size` bytes when the response said so). A byte
 * stream (fetch's) is read straight into that buffer, with no chunk allocated per read; any
 * other stream chunk by chunk, freeing each chunk that owns its memory once copied.
 */
export async function readAll(
  body: ReadableStream<Uint8Array>,
  opts: { size?: number; progress: () => void },
): Promise<Uint8Array> {
  let byob: ReadableStreamBYOBReader;
  try {
    byob = body.getReader({ mode: "byob" });
  } catch {
    return await readChunks(body, opts); // not a byte stream
  }
  let out = new Uint8Array(opts.size ?? 64 * 1024);
  let at = 0;
  try {
    for (;;) {
      if (at === out.length) {
        if (opts.size !== undefined) {
          const { done } = await byob.read(new Uint8Array(1));
          if (!done) throw new Error(`the body is longer than ${opts.size} bytes`);
          break;
        }
        const grown = new Uint8Array(out.length * 2);
        grown.set(out);
        out = grown;
      }
      // The view's buffer is transferred to the stream and comes back in `value`.
      const { value, done } = await byob.read(out.subarray(at));
      if (value) out = new Uint8Array(value.buffer);
      if (done) break;
      at += value!.length;
      opts.progress();
    }
  } catch (err) {
    await byob.cancel(err).catch(() => {}); // the connection is not left half-read
    throw err;
  }
  return checkedLength(out, at, opts.size);
}

/** readAll() of a stream that is not a byte stream. */
async function readChunks(
  body: ReadableStream<Uint8Array>,
  opts: { size?: number; progress: () => void },
): Promise<Uint8Array> {
  let out = new Uint8Array(opts.size ?? 0);
  let at = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      opts.progress();
      if (at + value.length > out.length) {
        const grown = new Uint8Array(Math.max(out.length * 2, at + value.length));
        grown.set(out.subarray(0, at));
        out = grown;
      }
      out.set(value, at);
      at += value.length;
      const ab = value.buffer as ArrayBuffer & { transfer?: (n: number) => unknown };
      if (value.byteOffset === 0 && value.byteLength === ab.byteLength) ab.transfer?.(0);
    }
  } catch (err) {
    await reader.cancel(err).catch(() => {});
    throw err;
  }
  return checkedLength(out, at, opts.size);
}

/** The first `at` bytes of `out`, which must be `size` bytes when a size was announced. */
function checkedLength(out: Uint8Array, at: number, size: number | undefined): Uint8Array {
  if (size !== undefined && at !== size) {
    throw new Error(`the body ended after ${at} of ${size} bytes`);
  }
  return at === out.length ? out : out.slice(0, at);
}
