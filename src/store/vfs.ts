/**
 * `vfs:///abs/path`: a store in a local or mounted directory (NFS included; plain file
 * operations only). Objects are files, "subdirectories" are directories (mode 0755).
 * @module
 */
import { lstat, mkdir, open, readdir, readFile, rename, rm, rmdir, stat } from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import {
  BackendError,
  ConvoyError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
} from "../api/errors.ts";
import { BackgroundSync } from "../util/background_sync.ts";
import { fsyncDir } from "../util/fs.ts";
import { pool } from "../util/pool.ts";
import { parseVfsURL } from "./dest_url.ts";
import { TEMP_NAME, tempName, tempWriterGone } from "./temp_name.ts";
import {
  checkKey,
  type ObjectStore,
  type StoreFactory,
  type SweepOptions,
  type WriteOptions,
} from "./types.ts";

const CHUNK = 1 << 20;
/** Deferred syncs start in the background every this many bytes written (BackgroundSync). */
const SYNC_BATCH_BYTES = 32 * 1024 * 1024;
/** fsync calls in flight at once, in the background or in flush(). */
const SYNC_CONCURRENCY = 8;

function code(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}

function isMissing(err: unknown): boolean {
  const c = code(err);
  return c === "ENOENT" || c === "ENOTDIR";
}

/** A store rooted at an existing directory. Construct with `openVfsStore`. */
export class VfsStore implements ObjectStore {
  readonly kind = "vfs";
  readonly url: string;
  /** The root directory, absolute, without trailing slash. */
  readonly root: string;

  constructor(root: string, url: string) {
    this.root = resolve(root);
    this.url = url;
  }

  #path(key: string): string {
    return key === "" ? this.root : join(this.root, ...key.split("/"));
  }

  #fail(op: string, key: string, err: unknown): ConvoyError {
    if (err instanceof ConvoyError) return err;
    return new BackendError(`Cannot ${op} "${key}" in "${this.url}": ${errorMessage(err)}`, {
      cause: err,
    });
  }

  #missing(op: string, key: string, err?: unknown): NotFoundError {
    return new NotFoundError(`Cannot ${op} "${key}" in "${this.url}": object does not exist`, {
      cause: err,
    });
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    const k = checkKey(key);
    try {
      const st = await stat(this.#path(k));
      return st.isFile() ? { size: st.size } : undefined;
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw this.#fail("stat", k, err);
    }
  }

  async read(key: string): Promise<Uint8Array> {
    const k = checkKey(key);
    try {
      const b = await readFile(this.#path(k));
      return new Uint8Array(b.buffer, b.byteOffset, b.byteLength); // a view, not a copy
    } catch (err) {
      if (isMissing(err) || code(err) === "EISDIR") throw this.#missing("read", k, err);
      throw this.#fail("read", k, err);
    }
  }

  async readStream(key: string): Promise<ReadableStream<Uint8Array>> {
    const k = checkKey(key);
    let handle;
    try {
      handle = await open(this.#path(k), "r");
    } catch (err) {
      if (isMissing(err)) throw this.#missing("read", k, err);
      throw this.#fail("read", k, err);
    }
    try {
      if (!(await handle.stat()).isFile()) throw this.#missing("read", k);
    } catch (err) {
      await handle.close();
      throw this.#fail("read", k, err);
    }
    const fail = (err: unknown) => this.#fail("read", k, err);
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const buf = new Uint8Array(CHUNK);
          const { bytesRead } = await handle.read(buf, 0, CHUNK, null);
          if (bytesRead === 0) {
            await handle.close();
            controller.close();
          } else {
            controller.enqueue(buf.subarray(0, bytesRead));
          }
        } catch (err) {
          await handle.close().catch(() => {});
          controller.error(fail(err));
        }
      },
      async cancel() {
        await handle.close().catch(() => {});
      },
    });
  }

  /** Files written with deferSync and their folders, not yet being synced. */
  #unsynced = new Set<string>();
  /** Syncs the files written so far every SYNC_BATCH_BYTES, while writes go on. */
  #background = new BackgroundSync(SYNC_BATCH_BYTES, () => this.#takeUnsynced());

  async write(
    key: string,
    body: Uint8Array | ReadableStream<Uint8Array>,
    opts: WriteOptions = {},
  ): Promise<void> {
    const k = checkKey(key);
    const path = this.#path(k);
    const dir = dirname(path);
    const tmp = join(dir, await tempName(basename(path)));
    let written = 0;
    try {
      // A concurrent remove() may prune the fresh directory before the temp file exists.
      let fh;
      for (let attempt = 0; !fh; attempt++) {
        await mkdir(dir, { recursive: true, mode: 0o755 });
        try {
          fh = await open(tmp, "wx", 0o644);
        } catch (err) {
          if (code(err) !== "ENOENT" || attempt >= 3) throw err;
        }
      }
      try {
        if (body instanceof Uint8Array) {
          await fh.writeFile(body);
          written += body.length;
        } else {
          const reader = body.getReader();
          try {
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              await fh.write(value);
              written += value.length;
            }
          } catch (err) {
            await reader.cancel(err).catch(() => {});
            throw err;
          }
        }
        if (!opts.deferSync) await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, path);
    } catch (err) {
      await rm(tmp, { force: true }).catch(() => {});
      throw this.#fail("write", k, err);
    }
    if (opts.deferSync) {
      this.#unsynced.add(path);
      this.#unsynced.add(dir);
      this.#background.wrote(written);
    } else {
      await fsyncDir(dir);
    }
  }

  /** Starts syncing every file and folder written with deferSync so far. */
  #takeUnsynced(): Promise<void> {
    const paths = [...this.#unsynced];
    this.#unsynced.clear();
    return this.#syncPaths(paths);
  }

  async #syncPaths(paths: string[]): Promise<void> {
    await pool(paths, { concurrency: SYNC_CONCURRENCY }, async (p) => {
      try {
        const fh = await open(p, "r");
        try {
          await fh.sync();
        } finally {
          await fh.close();
        }
      } catch (err) {
        if (code(err) !== "ENOENT") throw this.#fail("flush", p, err);
      }
    });
  }

  async flush(): Promise<void> {
    const rest = this.#takeUnsynced();
    const results = await Promise.allSettled([this.#background.drain(), rest]);
    for (const r of results) if (r.status === "rejected") throw r.reason;
  }

  async list(prefix: string): Promise<string[]> {
    const k = checkKey(prefix, { allowRoot: true });
    try {
      const names = await readdir(this.#path(k));
      return names.filter((n) => !TEMP_NAME.test(n)).sort();
    } catch (err) {
      if (isMissing(err)) return [];
      throw this.#fail("list", k, err);
    }
  }

  async remove(...keys: string[]): Promise<void> {
    const checked = keys.map((key) => checkKey(key));
    for (const k of checked) {
      const path = this.#path(k);
      try {
        await rm(path, { recursive: true, force: true });
      } catch (err) {
        throw this.#fail("remove", k, err);
      }
      await this.#prune(dirname(path), k);
    }
  }

  /**
   * Removes the temp files of writes that never reached their rename (a killed process) under
   * `prefix`, walking every folder below it: at once when the name's writer is a process of this
   * host that is gone (temp_name.ts), else when unmodified for `olderThanMs`. A live write
   * modifies its temp file with every chunk it writes.
   */
  async sweepTemps(prefix: string, opts: SweepOptions): Promise<string[]> {
    const k = checkKey(prefix, { allowRoot: true });
    const cutoff = Date.now() - opts.olderThanMs;
    const out: string[] = [];
    const walk = async (key: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(this.#path(key), { withFileTypes: true });
      } catch (err) {
        if (isMissing(err)) return;
        throw this.#fail("sweep", key, err);
      }
      for (const e of entries) {
        const child = key === "" ? e.name : `${key}/${e.name}`;
        if (e.isDirectory()) {
          await walk(child);
          continue;
        }
        if (!e.isFile() || !TEMP_NAME.test(e.name)) continue;
        const path = this.#path(child);
        try {
          const st = await lstat(path);
          if (st.mtimeMs > cutoff && !(await tempWriterGone(e.name))) continue;
          if (!opts.dryRun) await rm(path, { force: true });
          opts.onSwept?.(child, st.size);
        } catch (err) {
          if (isMissing(err)) continue;
          throw this.#fail("sweep", child, err);
        }
        out.push(child);
        if (!opts.dryRun) await this.#prune(dirname(path), child);
      }
    };
    await walk(k);
    return out.sort();
  }

  /** Removes `dir` and its parents while empty, up to (not including) the root. */
  async #prune(dir: string, key: string): Promise<void> {
    while (dir !== this.root && dir.startsWith(this.root + sep)) {
      try {
        await rmdir(dir);
      } catch (err) {
        const c = code(err);
        if (c === "ENOTEMPTY" || c === "EEXIST" || c === "EBUSY") return;
        if (c !== "ENOENT") throw this.#fail("remove", key, err);
      }
      dir = dirname(dir);
    }
  }
}

/**
 * Opens `vfs:///abs/path`. Throws InvalidArgumentError when the URL has a host or a relative
 * path, NotFoundError when the directory does not exist.
 */
export async function openVfsStore(destURL: string): Promise<VfsStore> {
  const { path, url } = parseVfsURL(destURL);
  const what = `Cannot open backup store "${destURL}"`;
  try {
    const st = await stat(path);
    if (!st.isDirectory()) {
      throw new InvalidArgumentError(`${what}: "${path}" is not a directory`);
    }
    await readdir(path);
  } catch (err) {
    if (err instanceof ConvoyError) throw err;
    if (isMissing(err)) {
      throw new NotFoundError(`${what}: directory "${path}" does not exist`, { cause: err });
    }
    throw new BackendError(`${what}: ${errorMessage(err)}`, { cause: err });
  }
  return new VfsStore(path, url);
}

/** The factory of `vfs://` stores. */
export const vfsStoreFactory: StoreFactory = {
  scheme: "vfs",
  supportsEndpoint: false,
  open: (destURL) => openVfsStore(destURL),
};
