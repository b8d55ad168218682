/**
 * Local file <-> object helpers, built on `ObjectStore.write` / `readStream` so every store gets
 * them for free.
 * @module
 */
import { open, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  BackendError,
  CancelledError,
  ConvoyError,
  errorMessage,
  NotFoundError,
} from "../api/errors.ts";
import { fsyncDir } from "../util/fs.ts";
import type { ObjectStore } from "./types.ts";

const CHUNK = 1 << 20;

/** Options of uploadFile and downloadFile. */
export interface TransferOptions {
  /** The local file to read (upload) or create (download). */
  file: string;
  signal?: AbortSignal;
  /** Called after each chunk with the bytes moved so far and the total when known. */
  onProgress?: (bytes: number, total: number) => void;
}

function cancelled(what: string): CancelledError {
  return new CancelledError(`Cannot ${what}: operation was cancelled`);
}

/**
 * Streams local `opts.file` into object `key`. Rejects with NotFoundError when the file does not
 * exist, CancelledError when `opts.signal` aborts; the object is then not created.
 */
export async function uploadFile(
  store: ObjectStore,
  key: string,
  opts: TransferOptions,
): Promise<void> {
  const what = `upload "${opts.file}" to "${key}" in "${store.url}"`;
  if (opts.signal?.aborted) throw cancelled(what);
  let fh;
  try {
    fh = await open(opts.file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new NotFoundError(`Cannot ${what}: file does not exist`, { cause: err });
    }
    throw new BackendError(`Cannot ${what}: ${errorMessage(err)}`, { cause: err });
  }
  const handle = fh;
  let closed = false;
  const close = async () => {
    if (!closed) {
      closed = true;
      await handle.close();
    }
  };
  try {
    const size = (await handle.stat()).size;
    let done = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(controller) {
        if (opts.signal?.aborted) {
          controller.error(cancelled(what));
          return;
        }
        const buf = new Uint8Array(CHUNK);
        const { bytesRead } = await handle.read(buf, 0, CHUNK, null);
        if (bytesRead === 0) {
          controller.close();
          return;
        }
        done += bytesRead;
        controller.enqueue(buf.subarray(0, bytesRead));
        opts.onProgress?.(done, size);
      },
    }, { highWaterMark: 0 });
    await store.write(key, body, { size });
  } finally {
    await close();
  }
}

/**
 * Streams object `key` into local `opts.file`, through a temp file beside it and a rename, so
 * the target is complete or untouched. Rejects with NotFoundError when the object does not exist.
 */
export async function downloadFile(
  store: ObjectStore,
  key: string,
  opts: TransferOptions,
): Promise<void> {
  const what = `download "${key}" from "${store.url}" to "${opts.file}"`;
  if (opts.signal?.aborted) throw cancelled(what);
  const total = (await store.stat(key))?.size ?? -1;
  const stream = await store.readStream(key);
  const dir = dirname(opts.file);
  const tmp = join(dir, `.${basename(opts.file)}.tmp-${crypto.randomUUID().slice(0, 8)}`);
  const reader = stream.getReader();
  let ok = false;
  try {
    const fh = await open(tmp, "w", 0o644);
    try {
      let done = 0;
      for (;;) {
        if (opts.signal?.aborted) throw cancelled(what);
        const { value, done: end } = await reader.read();
        if (end) break;
        await fh.write(value);
        done += value.byteLength;
        opts.onProgress?.(done, total);
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, opts.file);
    ok = true;
    await fsyncDir(dir);
  } catch (err) {
    if (err instanceof ConvoyError) throw err;
    throw new BackendError(`Cannot ${what}: ${errorMessage(err)}`, { cause: err });
  } finally {
    if (!ok) {
      await reader.cancel().catch(() => {});
      await rm(tmp, { force: true }).catch(() => {});
    }
  }
}
