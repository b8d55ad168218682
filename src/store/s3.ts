/**
 * `s3://bucket@region/path` and `s3://bucket/path`: a store in an S3 bucket (or an
 * S3-compatible service through a custom endpoint), with @aws-sdk/client-s3 loaded on first use.
 *
 * - Credentials come from the SDK's default chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`,
 *   `AWS_PROFILE` and ~/.aws, web identity, container and instance roles).
 * - The region is the URL's, else `AWS_REGION`, else "us-east-1".
 * - The endpoint is `open(url, { endpoint })`'s, else `CONVOY_S3_ENDPOINT`; with an endpoint,
 *   requests use path-style addressing (MinIO, Ceph RGW, fauxqs...).
 * - Requests that fail with throttling (SlowDown, HTTP 429), a 5xx status or a network error
 *   are retried with exponential backoff and jitter; other 4xx statuses never are. Every request
 *   body is an in-memory buffer, so a retried request sends the same bytes.
 * - `stat` resolves to `undefined` only on HTTP 404; access and credential failures reject with
 *   a BackendError saying so, and are marked `permanent` (withRetry does not retry them).
 * - Objects up to one part (8 MiB) are written with one PutObject; bigger or unsized bodies with
 *   a multipart upload (parts of 8 MiB or more, up to 4 in flight), aborted when anything fails.
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
  ConvoyError,
  errorMessage,
  InvalidArgumentError,
  NotFoundError,
} from "../api/errors.ts";
import { parseS3URL, type S3URL } from "./dest_url.ts";
import {
  checkKey,
  type ObjectStore,
  type OpenStoreOptions,
  type StoreFactory,
  type SweepOptions,
  type WriteOptions,
} from "./types.ts";

type SDK = typeof import("@aws-sdk/client-s3");

const MiB = 1024 * 1024;
/** The default part size, and the largest object written with a single PutObject. */
export const S3_PART_SIZE = 8 * MiB;
/** S3's smallest part (all parts but the last). */
const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part count per upload. */
const MAX_PARTS = 10_000;
/** S3's largest DeleteObjects request. */
const DELETE_BATCH = 1000;

/** Retry policy of the S3 client (per request). */
export interface S3RetryOptions {
  /** Total tries per request, first included (default 5). */
  attempts?: number;
  /** Backoff base for 5xx and network errors, doubled per retry (default 100 ms). */
  baseDelayMs?: number;
  /** Backoff base for throttling (SlowDown, 429), doubled per retry (default 500 ms). */
  throttleDelayMs?: number;
  /** Longest wait before one retry (default 20 s). */
  maxDelayMs?: number;
}

/** Options of openS3Store. */
export interface S3StoreOptions extends OpenStoreOptions {
  /** Static credentials instead of the SDK's default chain (tests, tools). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  retry?: S3RetryOptions;
  /** Part size of multipart uploads (default 8 MiB, at least 5 MiB). */
  partSize?: number;
  /** Parallel requests of one write (parts) or one remove (listings, deletes); default 4. */
  concurrency?: number;
}

/** A BackendError from S3, with the HTTP status and S3 error code when there was a response. */
export class S3StoreError extends BackendError {
  /** HTTP status of the failed request, when the service answered. */
  readonly status?: number;
  /** The S3 error code ("AccessDenied", "SlowDown", ...) or the SDK's error name. */
  readonly s3Code?: string;
  /** True when retrying cannot help (4xx other than throttling): withRetry gives up at once. */
  readonly permanent: boolean;
  constructor(
    message: string,
    options: { cause?: unknown; status?: number; s3Code?: string; permanent: boolean },
  ) {
    super(message, { cause: options.cause });
    this.name = "S3StoreError";
    this.status = options.status;
    this.s3Code = options.s3Code;
    this.permanent = options.permanent;
  }
}

// ---------------------------------------------------------------------------------------------
// Error classification

const THROTTLING_CODES = new Set([
  "SlowDown",
  "Throttling",
  "ThrottlingException",
  "ThrottledException",
  "RequestThrottled",
  "RequestThrottledException",
  "RequestLimitExceeded",
  "TooManyRequestsException",
  "BandwidthLimitExceeded",
  "ProvisionedThroughputExceededException",
]);
const AUTH_CODES = new Set([
  "AccessDenied",
  "AccessDeniedException",
  "AllAccessDisabled",
  "Forbidden",
  "InvalidAccessKeyId",
  "InvalidToken",
  "ExpiredToken",
  "TokenRefreshRequired",
  "SignatureDoesNotMatch",
  "InvalidSecurity",
  "AccountProblem",
  "RequestTimeTooSkewed",
  "CredentialsProviderError",
]);
const NOT_FOUND_CODES = new Set(["NotFound", "NoSuchKey"]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "UND_ERR_SOCKET",
]);
/** Error names of the SDK's transport for a request that timed out or broke mid-way. */
const NETWORK_NAMES = new Set(["TimeoutError", "RequestTimeout", "RequestTimeoutException"]);

/** What a failed S3 call means to Convoy. */
export type S3ErrorKind =
  | "not-found"
  | "no-bucket"
  | "auth"
  | "throttled"
  | "server"
  | "network"
  | "client";

interface SdkErrorLike {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $response?: { statusCode?: number; headers?: Record<string, string> };
  cause?: unknown;
}

function statusOf(err: unknown): number | undefined {
  const e = err as SdkErrorLike | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.$response?.statusCode;
}

/** Names that say nothing (HEAD responses have no body, so the SDK knows only the status). */
const VAGUE_CODES = new Set(["", "Error", "Unknown", "UnknownError"]);

function codeOf(err: unknown): string | undefined {
  const e = err as SdkErrorLike | undefined;
  const code = e?.Code ?? e?.name;
  return typeof code === "string" && !VAGUE_CODES.has(code) ? code : undefined;
}

/** The system error code of a network failure (ECONNRESET...), looking through `cause`s. */
function netCodeOf(err: unknown): string | undefined {
  for (
    let e = err as SdkErrorLike | undefined, i = 0;
    e && i < 5;
    e = e.cause as SdkErrorLike, i++
  ) {
    if (typeof e.code === "string" && NETWORK_CODES.has(e.code)) return e.code;
  }
  return undefined;
}

/** Classifies an error of an S3 call (see S3ErrorKind). */
export function classifyS3Error(err: unknown): S3ErrorKind {
  const status = statusOf(err);
  const code = codeOf(err);
  if (status === 429 || (code !== undefined && THROTTLING_CODES.has(code))) return "throttled";
  if (code === "NoSuchBucket") return "no-bucket";
  if (status === 404 || (code !== undefined && NOT_FOUND_CODES.has(code))) return "not-found";
  if (status === 401 || status === 403 || (code !== undefined && AUTH_CODES.has(code))) {
    return "auth";
  }
  if (status !== undefined && status >= 500 && status !== 501) return "server";
  // S3's 400 RequestTimeout: the connection idled while sending the body; a retry is expected.
  if (code !== undefined && NETWORK_NAMES.has(code)) return "network";
  if (status === undefined && netCodeOf(err) !== undefined) return "network";
  return "client";
}

/** True for the kinds worth retrying: throttling, 5xx, network. */
export function isRetryableS3Error(err: unknown): boolean {
  const kind = classifyS3Error(err);
  return kind === "throttled" || kind === "server" || kind === "network";
}

/** A short description of an SDK error: code, HTTP status, message. */
function describeError(err: unknown): string {
  const status = statusOf(err);
  const code = codeOf(err);
  const msg = errorMessage(err).trim();
  const head = [code, status !== undefined ? `HTTP ${status}` : undefined].filter(Boolean)
    .join(", ");
  if (head === "") return msg || "unknown error";
  if (msg === "" || msg === code || VAGUE_CODES.has(msg) || /^\d+$/.test(msg)) return head;
  return `${msg} (${head})`;
}

/** Why an access or credential failure happened, for an error message. */
function authReason(err: unknown): string {
  if (codeOf(err) === "CredentialsProviderError") {
    return `no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): ${
      errorMessage(err)
    }`;
  }
  return `access denied (check credentials): ${describeError(err)}`;
}

// ---------------------------------------------------------------------------------------------
// Retry strategy (a smithy RetryStrategyV2): retry only what isRetryableS3Error accepts

interface RetryToken {
  getRetryCount(): number;
  getRetryDelay(): number;
}

function retryStrategy(opts: S3RetryOptions = {}) {
  const attempts = Math.max(1, opts.attempts ?? 5);
  const base = opts.baseDelayMs ?? 100;
  const throttle = opts.throttleDelayMs ?? 500;
  const max = opts.maxDelayMs ?? 20_000;
  const token = (count: number, delay: number): RetryToken => ({
    getRetryCount: () => count,
    getRetryDelay: () => delay,
  });
  return {
    attempts,
    strategy: {
      acquireInitialRetryToken: (_scope: string) => Promise.resolve(token(0, 0)),
      refreshRetryTokenForRetry(
        previous: RetryToken,
        info: { error?: unknown; retryAfterHint?: Date },
      ): Promise<RetryToken> {
        const retries = previous.getRetryCount() + 1;
        if (retries >= attempts || !isRetryableS3Error(info.error)) {
          return Promise.reject(new Error("not retryable")); // the SDK rethrows the request error
        }
        const first = classifyS3Error(info.error) === "throttled" ? throttle : base;
        const cap = Math.min(max, first * 2 ** (retries - 1));
        let delay = cap / 2 + Math.random() * cap / 2;
        const hint = info.retryAfterHint?.getTime();
        if (hint !== undefined) delay = Math.max(delay, Math.min(max, hint - Date.now()));
        return Promise.resolve(token(retries, Math.round(delay)));
      },
      recordSuccess: (_token: RetryToken) => {},
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Clients: one per configuration, shared by every store opened with it (connection reuse)

const clients = new Map<string, S3Client>();

interface ClientConfig {
  region: string;
  endpoint?: string;
  credentials?: S3StoreOptions["credentials"];
  retry?: S3RetryOptions;
}

function clientFor(sdk: SDK, cfg: ClientConfig): S3Client {
  const key = JSON.stringify([cfg.region, cfg.endpoint, cfg.credentials, cfg.retry]);
  let client = clients.get(key);
  if (!client) {
    const { attempts, strategy } = retryStrategy(cfg.retry);
    client = new sdk.S3Client({
      region: cfg.region,
      ...(cfg.endpoint !== undefined ? { endpoint: cfg.endpoint, forcePathStyle: true } : {}),
      ...(cfg.credentials ? { credentials: cfg.credentials } : {}),
      followRegionRedirects: cfg.endpoint === undefined,
      maxAttempts: attempts,
      retryStrategy: strategy,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // Fail a connect after 10 s and a request whose socket idles for 2 min; both are retried.
      requestHandler: { connectionTimeout: 10_000, socketTimeout: 120_000 },
    });
    clients.set(key, client);
  }
  return client;
}

/** Closes every cached S3 client and its idle connections (tests, daemon shutdown). */
export function closeS3Clients(): void {
  for (const c of clients.values()) c.destroy();
  clients.clear();
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs `fn` over `items` with at most `limit` calls in flight; rejects with the first error. */
async function forEachLimit<T>(
  items: Iterable<T>,
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed = false;
  const worker = async () => {
    for (let n = it.next(); !n.done && !failed; n = it.next()) {
      try {
        await fn(n.value);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const results = await Promise.allSettled(Array.from({ length: Math.max(1, limit) }, worker));
  const bad = results.find((r) => r.status === "rejected");
  if (bad) throw (bad as PromiseRejectedResult).reason;
}

/** Reads a byte stream in parts of a requested size. */
class PartReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #left: Uint8Array | undefined;
  #ended = false;
  /** Bytes returned so far. */
  total = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Up to `size` bytes; fewer only at the end of the stream (`ended` is then true). */
  async read(size: number): Promise<{ data: Uint8Array; ended: boolean }> {
    let buf: Uint8Array | undefined; // allocated on the first byte: the end costs nothing
    let filled = 0;
    while (filled < size) {
      let chunk = this.#left;
      this.#left = undefined;
      if (!chunk) {
        if (this.#ended) break;
        const r = await this.#reader.read();
        if (r.done) {
          this.#ended = true;
          break;
        }
        chunk = r.value;
      }
      const n = Math.min(chunk.byteLength, size - filled);
      buf ??= new Uint8Array(size);
      buf.set(chunk.subarray(0, n), filled);
      filled += n;
      if (n < chunk.byteLength) this.#left = chunk.subarray(n);
    }
    this.total += filled;
    const data = !buf ? new Uint8Array() : filled === size ? buf : buf.subarray(0, filled);
    return { data, ended: this.#ended };
  }

  async cancel(reason: unknown): Promise<void> {
    await this.#reader.cancel(reason).catch(() => {});
  }
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
  readonly #partSize: number;
  readonly #concurrency: number;

  constructor(
    sdk: SDK,
    client: S3Client,
    opts: { url: S3URL; partSize?: number; concurrency?: number },
  ) {
    this.#sdk = sdk;
    this.#client = client;
    this.url = opts.url.url;
    this.bucket = opts.url.bucket;
    this.prefix = opts.url.path.replace(/^\/+/, "").replace(/\/+$/, "");
    this.#partSize = Math.max(MIN_PART_SIZE, opts.partSize ?? S3_PART_SIZE);
    this.#concurrency = Math.max(1, opts.concurrency ?? 4);
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
    if (err instanceof ConvoyError) return err;
    const kind = classifyS3Error(err);
    let reason: string;
    if (kind === "auth") reason = authReason(err);
    else if (kind === "no-bucket") reason = `bucket "${this.bucket}" does not exist`;
    else reason = describeError(err);
    return new S3StoreError(`${what}: ${reason}`, {
      cause: err,
      status: statusOf(err),
      s3Code: codeOf(err),
      permanent: !isRetryableS3Error(err),
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
      const out = await this.#client.send(
        new this.#sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.#key(k) }),
      );
      return { size: out.ContentLength ?? 0 };
    } catch (err) {
      if (classifyS3Error(err) === "not-found") return undefined;
      throw this.#fail("stat", k, err);
    }
  }

  async #get(op: string, k: string) {
    try {
      return await this.#client.send(
        new this.#sdk.GetObjectCommand({ Bucket: this.bucket, Key: this.#key(k) }),
      );
    } catch (err) {
      if (classifyS3Error(err) === "not-found") throw this.#missing(op, k, err);
      throw this.#fail(op, k, err);
    }
  }

  async read(key: string): Promise<Uint8Array> {
    const k = checkKey(key);
    const out = await this.#get("read", k);
    try {
      return out.Body ? plain(await out.Body.transformToByteArray()) : new Uint8Array();
    } catch (err) {
      throw this.#fail("read", k, err);
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
      const size = this.#partSizeFor(body.byteLength);
      let at = 0;
      const next = () => {
        const data = body.subarray(at, at + size);
        at += data.byteLength;
        return Promise.resolve(data);
      };
      return await this.#multipart(k, full, next, () => {});
    }
    const parts = new PartReader(body);
    try {
      const sized = opts.size !== undefined ? this.#partSizeFor(opts.size) : undefined;
      let n = 0;
      const partSize = () => sized ?? this.#partSize * (1 + Math.floor(n++ / 1000));
      const first = await parts.read(partSize());
      let second: { data: Uint8Array; ended: boolean } | undefined;
      if (!first.ended) second = await parts.read(partSize());
      if (first.ended || (second?.ended && second.data.byteLength === 0)) {
        this.#checkSize(k, opts.size, parts.total);
        return await this.#put(k, full, first.data);
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
      await this.#multipart(k, full, next, () => this.#checkSize(k, opts.size, parts.total));
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

  /** A part size that fits `size` bytes into at most MAX_PARTS parts, in whole MiB. */
  #partSizeFor(size: number): number {
    const needed = Math.ceil(Math.ceil(size / MAX_PARTS) / MiB) * MiB;
    return Math.max(this.#partSize, needed);
  }

  async #put(k: string, full: string, data: Uint8Array): Promise<void> {
    try {
      await this.#client.send(
        new this.#sdk.PutObjectCommand({
          Bucket: this.bucket,
          Key: full,
          Body: data,
          ContentLength: data.byteLength,
        }),
      );
    } catch (err) {
      throw this.#fail("write", k, err);
    }
  }

  /**
   * Uploads the parts `next()` returns (an empty one ends the object) with up to `concurrency`
   * in flight, then completes the upload after `beforeComplete()`; aborts it on any failure.
   */
  async #multipart(
    k: string,
    full: string,
    next: () => Promise<Uint8Array>,
    beforeComplete: () => void,
  ): Promise<void> {
    const Bucket = this.bucket;
    const sdk = this.#sdk;
    const client = this.#client;
    const inflight = new Set<Promise<void>>();
    let uploadId: string | undefined;
    try {
      const created = await client.send(
        new sdk.CreateMultipartUploadCommand({ Bucket, Key: full }),
      );
      uploadId = created.UploadId;
      if (!uploadId) throw new Error("CreateMultipartUpload returned no UploadId");
      const UploadId = uploadId;
      const done: { PartNumber: number; ETag: string }[] = [];
      let failure: { err: unknown } | undefined;
      for (let PartNumber = 1; !failure; PartNumber++) {
        const data = await next();
        if (data.byteLength === 0) break;
        if (PartNumber > MAX_PARTS) throw new Error(`object needs more than ${MAX_PARTS} parts`);
        const p: Promise<void> = client.send(
          new sdk.UploadPartCommand({
            Bucket,
            Key: full,
            UploadId,
            PartNumber,
            Body: data,
            ContentLength: data.byteLength,
          }),
        ).then((out) => {
          if (!out.ETag) throw new Error(`UploadPart ${PartNumber} returned no ETag`);
          done.push({ PartNumber, ETag: out.ETag });
        }).catch((err) => {
          failure ??= { err };
        }).finally(() => inflight.delete(p));
        inflight.add(p);
        if (inflight.size >= this.#concurrency) await Promise.race(inflight);
      }
      await Promise.all(inflight);
      if (failure) throw failure.err;
      beforeComplete();
      done.sort((a, b) => a.PartNumber - b.PartNumber);
      await client.send(
        new sdk.CompleteMultipartUploadCommand({
          Bucket,
          Key: full,
          UploadId,
          MultipartUpload: { Parts: done },
        }),
      );
    } catch (err) {
      await Promise.allSettled(inflight);
      if (uploadId !== undefined) {
        await client.send(
          new sdk.AbortMultipartUploadCommand({ Bucket, Key: full, UploadId: uploadId }),
        ).catch(() => {});
      }
      throw this.#fail("write", k, err);
    }
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
    await forEachLimit(checked, this.#concurrency, async (k) => {
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
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  const sdk: SDK = await import("@aws-sdk/client-s3");
  const client = clientFor(sdk, {
    region,
    endpoint,
    credentials: opts.credentials,
    retry: opts.retry,
  });
  const what = `Cannot open backup store "${destURL}"`;
  try {
    await client.send(new sdk.HeadBucketCommand({ Bucket: url.bucket }));
  } catch (err) {
    const kind = classifyS3Error(err);
    const cause = { cause: err };
    if (kind === "not-found" || kind === "no-bucket") {
      throw new NotFoundError(`${what}: bucket "${url.bucket}" does not exist`, cause);
    }
    const status = statusOf(err);
    const s3Code = codeOf(err);
    const permanent = !isRetryableS3Error(err);
    if (kind === "auth") {
      throw new S3StoreError(`${what}: ${authReason(err)}`, {
        ...cause,
        status,
        s3Code,
        permanent,
      });
    }
    if (status === 301) {
      const other = (err as SdkErrorLike).$response?.headers?.["x-amz-bucket-region"];
      const where = other ? ` "${other}"` : "";
      throw new S3StoreError(
        `${what}: bucket "${url.bucket}" is in another region${where}, not "${region}"`,
        { ...cause, status, s3Code, permanent },
      );
    }
    const at = endpoint !== undefined ? ` at "${endpoint}"` : "";
    const reason = kind === "network" ? `cannot reach S3${at}: ` : "";
    throw new S3StoreError(`${what}: ${reason}${describeError(err)}`, {
      ...cause,
      status,
      s3Code,
      permanent,
    });
  }
  return new S3Store(sdk, client, { url, partSize: opts.partSize, concurrency: opts.concurrency });
}

/** The factory of `s3://` stores (custom endpoints supported). */
export const s3StoreFactory: StoreFactory = {
  scheme: "s3",
  supportsEndpoint: true,
  open: (destURL, opts) => openS3Store(destURL, opts),
};
