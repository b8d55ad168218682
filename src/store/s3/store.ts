/**
 * `s3://bucket@region/path` and `s3://bucket/path`: a store in an S3 bucket (or an
 * S3-compatible service through a custom endpoint), with @aws-sdk/client-s3 loaded on first use.
 *
 * - Credentials come from the SDK's default chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
 *   `AWS_PROFILE` and ~/.aws, web identity, container and instance roles).
 * - The region is the URL's, else `AWS_REGION`, else "us-east-1".
 * - The endpoint is `open(url, { endpoint })`'s, else `CONVOY_S3_ENDPOINT`; with an endpoint,
 *   requests use path-style addressing (MinIO, Ceph RGW, fauxqs...).
 * - Failures reject with an S3StoreError (./errors.ts) that says whether retrying can help;
 *   the factory's retry policy (./retry.ts) is applied by withRetry (../wrappers.ts), which the
 *   daemon wraps every store in. Only the requests of a write with a stream body, which no
 *   wrapper can replay, are retried here, one by one with the same policy.
 * - `stat` resolves to `undefined` only on HTTP 404; access and credential failures reject with
 *   a BackendError saying so, and are marked `permanent` (withRetry does not retry them).
 * - Objects up to one part (8 MiB) are written with one PutObject; bigger or unsized bodies with
 *   a multipart upload (./multipart.ts).
 * - `list` and `remove` paginate; `remove("a/vol1")` deletes "a/vol1" and "a/vol1/..." only,
 *   never "a/vol10", in DeleteObjects batches of at most 1000 keys.
 * - `sweepTemps` aborts the multipart uploads (under the prefix) that a killed writer never
 *   completed or aborted, once idle for the given age (newest part, else start).
 * @module
 */
import type { S3Client } from "@aws-sdk/client-s3";
import process from "node:process";
import {
  BackendError,
  type ConvoyError,
  InvalidArgumentError,
  NotFoundError,
} from "../../api/errors.ts";
import { parseS3URL, type S3URL } from "../dest_url.ts";
import {
  checkKey,
  type ObjectStore,
  type OpenStoreOptions,
  type RetryPolicy,
  type StoreFactory,
  type SweepOptions,
  type WriteOptions,
} from "../types.ts";
import { retrying } from "../wrappers.ts";
import { clientFor, loadSdk, type S3Credentials, type SDK } from "./client.ts";
import {
  authReason,
  classifyS3Error,
  describeError,
  isRetryableS3Error,
  S3StoreError,
  s3StoreError,
  type SdkErrorLike,
  statusOf,
  toS3StoreError,
} from "./errors.ts";
import {
  MIN_PART_SIZE,
  multipartUpload,
  PartReader,
  partSizeFor,
  S3_PART_SIZE,
} from "./multipart.ts";
import { fetchError, READ_IDLE_MS, readAll } from "./reads.ts";
import { type S3RetryOptions, s3RetryPolicy } from "./retry.ts";
import { pool } from "../../util/pool.ts";

/** S3's largest DeleteObjects request. */
const DELETE_BATCH = 1000;

/** Options of openS3Store. */
export interface S3StoreOptions extends OpenStoreOptions {
  /** Static credentials instead of the SDK's default chain (tests, tools). */
  credentials?: S3Credentials;
  /** The retry policy of requests of streamed writes (see S3RetryOptions; default 5 tries). */
  retry?: S3RetryOptions;
  /** Part size of multipart uploads (default 8 MiB, at least 5 MiB). */
  partSize?: number;
  /** Parallel requests of one write (parts) or one remove (listings, deletes); default 4. */
  concurrency?: number;
}

/** A plain Uint8Array view (not a Buffer) of `bytes`. */
function plain(bytes: Uint8Array): Uint8Array {
  return bytes.constructor === Uint8Array
    ? bytes
    : new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

// ---------------------------------------------------------------------------------------------
// The store

/** A store under one bucket and key prefix. Construct with `openS3Store`. */
export class S3Store implements ObjectStore {
  readonly kind = "s3";
  readonly url: string;
  readonly bucket: string;
  /** The key prefix of every object, without leading or trailing slash ("" = bucket root). */
  readonly prefix: string;
  readonly #sdk: SDK;
  readonly #client: S3Client;
  readonly #reader: S3Client;
  readonly #partSize: number;
  readonly #concurrency: number;
  readonly #retry: RetryPolicy;

  constructor(
    sdk: SDK,
    client: S3Client,
    opts: {
      url: S3URL;
      partSize?: number;
      concurrency?: number;
      retry?: RetryPolicy;
      reader?: S3Client;
    },
  ) {
    this.#sdk = sdk;
    this.#client = client;
    this.#reader = opts.reader ?? client;
    this.url = opts.url.url;
    this.bucket = opts.url.bucket;
    this.prefix = opts.url.path.replace(/^\/+/, "").replace(/\/+$/, "");
    this.#partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? S3_PART_SIZE);
    this.#concurrency = Math.max(1, opts.concurrency ?? 4);
    this.#retry = opts.retry ?? s3RetryPolicy();
  }

  /** The bucket key of store key `k` ("" = the prefix itself). */
  #key(k: string): string {
    if (this.prefix === "") return k;
    return k === "" ? this.prefix : `${this.prefix}/${k}`;
  }

  /** The listing prefix of everything under store key `k` (ends with "/", or "" at the root). */
  #dir(k: string): string {
    const full = this.#key(k);
    return full === "" ? "" : full + "/";
  }

  #fail(op: string, key: string, err: unknown): ConvoyError {
    return this.#error(`Cannot ${op} "${key}" in "${this.url}"`, err);
  }

  /** `what` failed because of SDK error `err`; ConvoyErrors pass through unchanged. */
  #error(what: string, err: unknown): ConvoyError {
    return toS3StoreError(what, err, { bucket: this.bucket });
  }

  #missing(op: string, key: string, err?: unknown): NotFoundError {
    return new NotFoundError(`Cannot ${op} "${key}" in "${this.url}": object does not exist`, {
      cause: err,
    });
  }

  async stat(key: string): Promise<{ size: number } | undefined> {
    const k = checkKey(key);
    try {
      const out = await this.#client.send(
        new this.#sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.#key(k) }),
      );
      return { size: out.ContentLength ?? 0 };
    } catch (err) {
      if (classifyS3Error(err) === "not-found") return undefined;
      throw this.#fail("stat", k, err);
    }
  }

  async #get(op: string, k: string, via: { client?: S3Client; signal?: AbortSignal } = {}) {
    try {
      return await (via.client ?? this.#client).send(
        new this.#sdk.GetObjectCommand({ Bucket: this.bucket, Key: this.#key(k) }),
        { abortSignal: via.signal },
      );
    } catch (err) {
      if (classifyS3Error(err) === "not-found") throw this.#missing(op, k, err);
      throw this.#fail(op, k, err);
    }
  }

  /**
   * The object's bytes, in one buffer of its own (the caller may transfer or free it). Read over
   * the reads client (./reads.ts): each chunk is copied into place and freed at once, so the
   * memory a read leaves behind is that buffer alone.
   */
  async read(key: string): Promise<Uint8Array> {
    const k = checkKey(key);
    const stall = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const idle = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => stall.abort(new Error(`no data for ${READ_IDLE_MS / 1000} s`)),
        READ_IDLE_MS,
      );
    };
    idle();
    try {
      const out = await this.#get("read", k, { client: this.#reader, signal: stall.signal });
      const body = out.Body as ReadableStream<Uint8Array> | undefined;
      if (!body) return new Uint8Array();
      try {
        return await readAll(body, { size: out.ContentLength, progress: idle });
      } catch (err) {
        throw fetchError(stall.signal.reason ?? err);
      }
    } catch (err) {
      throw this.#fail("read", k, err);
    } finally {
      clearTimeout(timer);
    }
  }

  async readStream(key: string): Promise<ReadableStream<Uint8Array>> {
    const k = checkKey(key);
    const out = await this.#get("read", k);
    if (!out.Body) return new ReadableStream({ start: (c) => c.close() });
    const reader = (out.Body.transformToWebStream() as ReadableStream<Uint8Array>).getReader();
    const fail = (err: unknown) => this.#fail("read", k, err);
    return new ReadableStream<Uint8Array>({
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) controller.close();
          else if (value.byteLength > 0) controller.enqueue(plain(value));
        } catch (err) {
          controller.error(fail(err));
        }
      },
      async cancel(reason) {
        await reader.cancel(reason).catch(() => {});
      },
    }, { highWaterMark: 0 });
  }

  async write(
    key: string,
    body: Uint8Array | ReadableStream<Uint8Array>,
    opts: WriteOptions = {},
  ): Promise<void> {
    const k = checkKey(key);
    const full = this.#key(k);
    if (body instanceof Uint8Array) {
      if (body.byteLength <= this.#partSize) return await this.#put(k, full, body);
      const size = partSizeFor(body.byteLength, this.#partSize);
      let at = 0;
      const next = () => {
        const data = body.subarray(at, at + size);
        at += data.byteLength;
        return Promise.resolve(data);
      };
      try {
        return await multipartUpload(this.#target(full, (fn) => fn()), next, () => {});
      } catch (err) {
        throw this.#fail("write", k, err);
      }
    }
    const parts = new PartReader(body);
    try {
      const sized = opts.size !== undefined ? partSizeFor(opts.size, this.#partSize) : undefined;
      let n = 0;
      const partSize = () => sized ?? this.#partSize * (1 + Math.floor(n++ / 1000));
      const first = await parts.read(partSize());
      let second: { data: Uint8Array; ended: boolean } | undefined;
      if (!first.ended) second = await parts.read(partSize());
      // The body cannot be replayed: each request is retried here (see the module doc).
      const request = <T>(fn: () => Promise<T>) =>
        retrying(
          () => fn().catch((err) => Promise.reject(this.#fail("write", k, err))),
          this.#retry,
        );
      if (first.ended || (second?.ended && second.data.byteLength === 0)) {
        this.#checkSize(k, opts.size, parts.total);
        return await this.#put(k, full, first.data, request);
      }
      const queue = [first.data, second!.data];
      let ended = second!.ended;
      const next = async () => {
        const data = queue.shift();
        if (data) return data;
        if (ended) return new Uint8Array();
        const r = await parts.read(partSize());
        ended = r.ended;
        return r.data;
      };
      const target = this.#target(full, request);
      await multipartUpload(target, next, () => this.#checkSize(k, opts.size, parts.total));
    } catch (err) {
      await parts.cancel(err);
      throw this.#fail("write", k, err);
    }
  }

  #checkSize(k: string, expected: number | undefined, got: number): void {
    if (expected !== undefined && expected !== got) {
      throw new BackendError(
        `Cannot write "${k}" in "${this.url}": body has ${got} bytes, expected ${expected}`,
      );
    }
  }

  async #put(
    k: string,
    full: string,
    data: Uint8Array,
    request: <T>(fn: () => Promise<T>) => Promise<T> = (fn) => fn(),
  ): Promise<void> {
    try {
      await request(() =>
        this.#client.send(
          new this.#sdk.PutObjectCommand({
            Bucket: this.bucket,
            Key: full,
            Body: data,
            ContentLength: data.byteLength,
          }),
        )
      );
    } catch (err) {
      throw this.#fail("write", k, err);
    }
  }

  /** The multipart upload of bucket key `full`, its requests run through `request`. */
  #target(full: string, request: <T>(fn: () => Promise<T>) => Promise<T>) {
    return {
      sdk: this.#sdk,
      client: this.#client,
      bucket: this.bucket,
      key: full,
      concurrency: this.#concurrency,
      request,
    };
  }

  /** Every page of ListObjectsV2 under `prefix` (paginated), with or without delimiter. */
  async *#pages(prefix: string, delimiter?: string) {
    let token: string | undefined;
    do {
      const out = await this.#client.send(
        new this.#sdk.ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: prefix,
          ...(delimiter !== undefined ? { Delimiter: delimiter } : {}),
          ...(token !== undefined ? { ContinuationToken: token } : {}),
        }),
      );
      yield out;
      if (out.IsTruncated && !out.NextContinuationToken) {
        throw new Error("ListObjectsV2 is truncated but returned no continuation token");
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  async list(prefix: string): Promise<string[]> {
    const k = checkKey(prefix, { allowRoot: true });
    const dir = this.#dir(k);
    const names = new Set<string>();
    try {
      for await (const page of this.#pages(dir, "/")) {
        for (const o of page.Contents ?? []) {
          const name = o.Key?.slice(dir.length);
          if (name) names.add(name);
        }
        for (const p of page.CommonPrefixes ?? []) {
          const name = p.Prefix?.slice(dir.length).replace(/\/$/, "");
          if (name) names.add(name);
        }
      }
    } catch (err) {
      throw this.#fail("list", k, err);
    }
    return [...names].sort();
  }

  async remove(...keys: string[]): Promise<void> {
    const checked = [...new Set(keys.map((key) => checkKey(key)))];
    if (checked.length === 0) return;
    const pending: string[] = [];
    const flush = async (all: boolean) => {
      while (pending.length >= DELETE_BATCH || (all && pending.length > 0)) {
        await this.#deleteBatch(pending.splice(0, DELETE_BATCH));
      }
    };
    await pool(checked, { concurrency: this.#concurrency }, async (k) => {
      pending.push(this.#key(k));
      try {
        // The trailing "/" keeps "vol1" from matching "vol10".
        for await (const page of this.#pages(this.#dir(k))) {
          for (const o of page.Contents ?? []) if (o.Key) pending.push(o.Key);
          await flush(false);
        }
      } catch (err) {
        throw this.#fail("remove", k, err);
      }
    });
    await flush(true);
  }

  /**
   * Aborts the incomplete multipart uploads under `prefix` whose newest part (or, without
   * parts, whose start) is at least `olderThanMs` old; resolves to `<key>?uploadId=<id>` of each.
   */
  async sweepTemps(prefix: string, opts: SweepOptions): Promise<string[]> {
    const k = checkKey(prefix, { allowRoot: true });
    const Bucket = this.bucket;
    const sdk = this.#sdk;
    const cutoff = Date.now() - opts.olderThanMs;
    const out: string[] = [];
    const old = (d: Date | undefined) => d !== undefined && d.getTime() <= cutoff;
    try {
      let KeyMarker: string | undefined;
      let UploadIdMarker: string | undefined;
      do {
        const page = await this.#client.send(
          new sdk.ListMultipartUploadsCommand({
            Bucket,
            Prefix: this.#dir(k),
            ...(KeyMarker !== undefined ? { KeyMarker, UploadIdMarker } : {}),
          }),
        );
        for (const u of page.Uploads ?? []) {
          if (!u.Key || !u.UploadId || !old(u.Initiated)) continue;
          const parts = await this.#client.send(
            new sdk.ListPartsCommand({ Bucket, Key: u.Key, UploadId: u.UploadId }),
          ).catch((err) => {
            if (classifyS3Error(err) === "not-found") return undefined; // finished meanwhile
            throw err;
          });
          if (!parts) continue;
          // One page (1000 parts) suffices: parts are written in order, 4 in flight at most.
          if ((parts.Parts ?? []).some((p) => !old(p.LastModified))) continue;
          if (!opts.dryRun) {
            await this.#client.send(
              new sdk.AbortMultipartUploadCommand({ Bucket, Key: u.Key, UploadId: u.UploadId }),
            ).catch((err) => {
              if (classifyS3Error(err) !== "not-found") throw err; // completed or aborted meanwhile
            });
          }
          const key = `${u.Key.slice(this.#dir("").length)}?uploadId=${u.UploadId}`;
          out.push(key);
          opts.onSwept?.(key, (parts.Parts ?? []).reduce((n, p) => n + (p.Size ?? 0), 0));
        }
        KeyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
        UploadIdMarker = page.NextUploadIdMarker;
      } while (KeyMarker !== undefined);
    } catch (err) {
      throw this.#fail("sweep", k, err);
    }
    return out.sort();
  }

  /** Deletes exactly these objects (no prefix walk), in DeleteObjects batches of 1000. */
  async removeObjects(...keys: string[]): Promise<void> {
    const all = [...new Set(keys.map((key) => this.#key(checkKey(key))))];
    for (let i = 0; i < all.length; i += DELETE_BATCH) {
      await this.#deleteBatch(all.slice(i, i + DELETE_BATCH));
    }
  }

  async #deleteBatch(batch: string[]): Promise<void> {
    const rel = (key: string) => key.slice(this.#dir("").length);
    const what = batch.length === 1
      ? `Cannot remove "${rel(batch[0])}" in "${this.url}"`
      : `Cannot remove "${rel(batch[0])}" and ${batch.length - 1} more objects in "${this.url}"`;
    let out;
    try {
      out = await this.#client.send(
        new this.#sdk.DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
    } catch (err) {
      throw this.#error(what, err);
    }
    const errors = out.Errors ?? [];
    if (errors.length > 0) {
      // Per-key failures come back in a 200 response: report the first, count the rest.
      const e = errors[0];
      const asError = Object.assign(new Error(e.Message ?? ""), { name: e.Code ?? "UnknownError" });
      const more = errors.length > 1 ? ` (and ${errors.length - 1} other objects)` : "";
      const err = this.#error(`Cannot remove "${rel(e.Key ?? "")}" in "${this.url}"`, asError);
      throw new S3StoreError(`${err.message}${more}`, {
        cause: errors,
        s3Code: e.Code,
        permanent: !isRetryableS3Error(asError),
        kind: classifyS3Error(asError),
      });
    }
  }
}

function envValue(name: string): string | undefined {
  const v = process.env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

function checkEndpoint(destURL: string, endpoint: string): string {
  let u: URL | undefined;
  try {
    u = new URL(endpoint);
  } catch {
    u = undefined;
  }
  if (!u || (u.protocol !== "http:" && u.protocol !== "https:")) {
    throw new InvalidArgumentError(
      `Cannot open backup store "${destURL}": endpoint "${endpoint}" must be an http:// or https:// URL`,
    );
  }
  return endpoint.replace(/\/+$/, "");
}

/**
 * Opens `s3://bucket@region/path` or `s3://bucket/path`, checking the bucket with HeadBucket.
 * Throws InvalidArgumentError for a malformed URL or endpoint, NotFoundError when the bucket
 * does not exist, an S3StoreError (a BackendError) when access is denied or S3 is unreachable.
 */
export async function openS3Store(destURL: string, opts: S3StoreOptions = {}): Promise<S3Store> {
  const url = parseS3URL(destURL);
  const rawEndpoint = opts.endpoint || envValue("CONVOY_S3_ENDPOINT");
  const endpoint = rawEndpoint !== undefined ? checkEndpoint(destURL, rawEndpoint) : undefined;
  const region = url.region ?? envValue("AWS_REGION") ?? "us-east-1";
  const sdk = await loadSdk();
  const cfg = { region, endpoint, credentials: opts.credentials };
  const client = clientFor(sdk, cfg);
  const what = `Cannot open backup store "${destURL}"`;
  try {
    await client.send(new sdk.HeadBucketCommand({ Bucket: url.bucket }));
  } catch (err) {
    const kind = classifyS3Error(err);
    if (kind === "not-found" || kind === "no-bucket") {
      throw new NotFoundError(`${what}: bucket "${url.bucket}" does not exist`, { cause: err });
    }
    if (kind === "auth") throw s3StoreError(`${what}: ${authReason(err)}`, err);
    if (statusOf(err) === 301) {
      const other = (err as SdkErrorLike).$response?.headers?.["x-amz-bucket-region"];
      const where = other ? ` "${other}"` : "";
      throw s3StoreError(
        `${what}: bucket "${url.bucket}" is in another region${where}, not "${region}"`,
        err,
      );
    }
    const at = endpoint !== undefined ? ` at "${endpoint}"` : "";
    const reason = kind === "network" ? `cannot reach S3${at}: ` : "";
    throw s3StoreError(`${what}: ${reason}${describeError(err)}`, err);
  }
  return new S3Store(sdk, client, {
    url,
    partSize: opts.partSize,
    concurrency: opts.concurrency,
    retry: s3RetryPolicy(opts.retry),
    reader: clientFor(sdk, cfg, true),
  });
}

/**
 * The factory of `s3://` stores (custom endpoints supported), with the default retry policy
 * (see s3RetryPolicy) for withStoreWrappers.
 */
export const s3StoreFactory: StoreFactory = {
  scheme: "s3",
  supportsEndpoint: true,
  retry: s3RetryPolicy(),
  open: (destURL, opts) => openS3Store(destURL, opts),
};
