/**
 * The object store the backup engine sees. Keys are '/'-separated paths relative to the store
 * URL's path, without leading or trailing slash (see `checkKey`).
 * @module
 */
import { InvalidArgumentError } from "../api/errors.ts";

/** Options of `ObjectStore.write`. */
export interface WriteOptions {
  /** Byte length of a stream body, when known (lets remote stores avoid buffering). */
  size?: number;
  /**
   * The object need not be durable when write() resolves, only after the next `flush()`. Lets
   * filesystem stores sync many objects at once; readers still never see a partial object.
   */
  deferSync?: boolean;
}

/** A flat store of named objects (Convoy's ObjectStoreDriver, trimmed). */
export interface ObjectStore {
  /** The scheme of the store, e.g. "vfs". */
  readonly kind: string;
  /** The normalised destination URL, e.g. "vfs:///mnt/backups". */
  readonly url: string;
  /**
   * Resolves to the object's size, or to `undefined` only when the object does not exist.
   * Any other failure rejects with a BackendError carrying the cause.
   */
  stat(key: string): Promise<{ size: number } | undefined>;
  /**
   * The whole object; rejects with NotFoundError when it does not exist. The caller owns the
   * result: the store keeps no reference to its memory (the engine may detach it).
   */
  read(key: string): Promise<Uint8Array>;
  /** The object as a stream; rejects with NotFoundError when it does not exist. */
  readStream(key: string): Promise<ReadableStream<Uint8Array>>;
  /**
   * Creates or replaces the object. Readers see the old object or the new one, never a part;
   * when the write fails no partial object is left behind.
   */
  write(
    key: string,
    body: Uint8Array | ReadableStream<Uint8Array>,
    opts?: WriteOptions,
  ): Promise<void>;
  /**
   * Behaves like `ls`, not like `find`: the names directly under `prefix` (objects and
   * "subdirectories", each once, without trailing slash), sorted. `""` lists the root.
   * Resolves to `[]` when nothing exists under `prefix`.
   */
  list(prefix: string): Promise<string[]>;
  /**
   * Behaves like `rm -rf` on each key: removes the object `key` and everything under `key/`.
   * Only whole path segments match ("a/vol1" never touches "a/vol10"). Missing keys are fine.
   * Leaves no empty directories behind.
   */
  remove(...keys: string[]): Promise<void>;
  /**
   * Optional: deletes exactly these objects, without `remove`'s walk below each key. Stores
   * where that walk costs a request per key (S3) offer it for bulk deletes of known objects.
   */
  removeObjects?(...keys: string[]): Promise<void>;
  /** Optional: makes every object written with `deferSync` durable. Stores without it are always durable. */
  flush?(): Promise<void>;
  /**
   * Optional: removes the leftovers of interrupted writes under `prefix` (`""` = everywhere)
   * that nothing has written to for `olderThanMs` or longer (or that a writer known to be gone
   * left, where the store can tell), and resolves to what it removed
   * (or would remove, with `dryRun`). Stores whose writes leave nothing behind lack it. Call it
   * through `sweepStaleTemps` (sweep.ts).
   */
  sweepTemps?(prefix: string, opts: SweepOptions): Promise<string[]>;
}

/** Options of `ObjectStore.sweepTemps`. */
export interface SweepOptions {
  /** Leftovers idle for less than this are kept: they may belong to a live write. */
  olderThanMs: number;
  /** List what would be removed, remove nothing. */
  dryRun?: boolean;
  /**
   * Told each leftover removed (or found, with `dryRun`) and its size in bytes, as it goes; a
   * retried sweep may tell a key again.
   */
  onSwept?: (key: string, bytes: number) => void;
}

/** Options of `StoreFactory.open`. */
export interface OpenStoreOptions {
  /** A custom service endpoint (only for factories with `supportsEndpoint`). */
  endpoint?: string;
}

/** How to retry a store's transient failures (see withRetry in wrappers.ts). */
export interface RetryPolicy {
  /** Total tries per operation, first included (default 3). */
  attempts?: number;
  /** Delay before the first retry, doubled each time (default 200 ms); see `backoff`. */
  delayMs?: number;
  /** The wait before retry number `retry` (1 = the first) after `err`; replaces `delayMs`. */
  backoff?: (err: unknown, retry: number) => number;
}

/** Opens the stores of one URL scheme; registered in a StoreRegistry. */
export interface StoreFactory {
  /** The URL scheme without ":", e.g. "vfs". */
  readonly scheme: string;
  /** True when the store accepts a custom endpoint (s3-compatible services). */
  readonly supportsEndpoint: boolean;
  /**
   * How the daemon retries transient failures of opening and using these stores (see
   * withStoreWrappers); none: never retried.
   */
  readonly retry?: RetryPolicy;
  /**
   * Opens the store at `destURL`, checking it is reachable. Throws InvalidArgumentError for a
   * malformed URL, NotFoundError when the location does not exist.
   */
  open(destURL: string, opts: OpenStoreOptions): Promise<ObjectStore>;
}

const BAD_SEGMENT = /^\.{1,2}$/;

/**
 * Returns `key` without leading or trailing slashes, after checking it is a safe relative key:
 * no empty, "." or ".." segments, no backslash or NUL. `""` (the root) is allowed only with
 * `allowRoot`. Throws InvalidArgumentError.
 */
export function checkKey(key: string, opts: { allowRoot?: boolean } = {}): string {
  const k = key.replace(/^\/+/, "").replace(/\/+$/, "");
  if (k === "") {
    if (opts.allowRoot) return "";
    throw new InvalidArgumentError(`Invalid object key "${key}": key is empty`);
  }
  if (/[\\\0]/.test(k) || k.split("/").some((s) => s === "" || BAD_SEGMENT.test(s))) {
    throw new InvalidArgumentError(
      `Invalid object key "${key}": must be "/"-separated names without empty, "." or ".." parts`,
    );
  }
  return k;
}
