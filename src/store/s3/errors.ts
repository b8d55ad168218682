/**
 * What a failed S3 call means to Convoy: the classification of SDK errors (throttling, 5xx,
 * network, access, missing objects...) and the typed error (S3StoreError) a store rejects with.
 * @module
 */
import { BackendError, ConvoyError, errorMessage } from "../../api/errors.ts";

/** A BackendError from S3, with the HTTP status and S3 error code when there was a response. */
export class S3StoreError extends BackendError {
  /** HTTP status of the failed request, when the service answered. */
  readonly status?: number;
  /** The S3 error code ("AccessDenied", "SlowDown", ...) or the SDK's error name. */
  readonly s3Code?: string;
  /** True when retrying cannot help (4xx other than throttling): withRetry gives up at once. */
  readonly permanent: boolean;
  /** What the failure means (see classifyS3Error), when known. */
  readonly kind?: S3ErrorKind;
  /** When the service asked to be retried (a Retry-After header), in epoch milliseconds. */
  readonly retryAt?: number;
  constructor(
    message: string,
    options: {
      cause?: unknown;
      status?: number;
      s3Code?: string;
      permanent: boolean;
      kind?: S3ErrorKind;
      retryAt?: number;
    },
  ) {
    super(message, { cause: options.cause });
    this.name = "S3StoreError";
    this.status = options.status;
    this.s3Code = options.s3Code;
    this.permanent = options.permanent;
    this.kind = options.kind;
    this.retryAt = options.retryAt;
  }
}

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
/** The code of a read whose fetch() failed or stalled (fetch gives no system error code). */
export const FETCH_FAILED = "EFETCH";
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
  FETCH_FAILED,
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

/** The fields of an SDK error (or of a system error inside one) that classification reads. */
export interface SdkErrorLike {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $response?: { statusCode?: number; headers?: Record<string, string> };
  cause?: unknown;
}

/** The HTTP status of a failed SDK call, when the service answered. */
export function statusOf(err: unknown): number | undefined {
  const e = err as SdkErrorLike | undefined;
  return e?.$metadata?.httpStatusCode ?? e?.$response?.statusCode;
}

/** Names that say nothing (HEAD responses have no body, so the SDK knows only the status). */
const VAGUE_CODES = new Set(["", "Error", "Unknown", "UnknownError"]);

/** The S3 error code or SDK error name of a failed call, unless it says nothing. */
export function codeOf(err: unknown): string | undefined {
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
export function describeError(err: unknown): string {
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
export function authReason(err: unknown): string {
  if (codeOf(err) === "CredentialsProviderError") {
    return `no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): ${
      errorMessage(err)
    }`;
  }
  return `access denied (check credentials): ${describeError(err)}`;
}

/** The time a Retry-After header of the failed call asks for (epoch ms), if any. */
function retryAtOf(err: unknown): number | undefined {
  const headers = (err as SdkErrorLike | undefined)?.$response?.headers ?? {};
  const value = Object.entries(headers).find(([k]) => k.toLowerCase() === "retry-after")?.[1];
  if (value === undefined || value.trim() === "") return undefined;
  const at = /^\d+$/.test(value.trim()) ? Date.now() + Number(value) * 1000 : Date.parse(value);
  return Number.isNaN(at) ? undefined : at;
}

/**
 * The S3StoreError for "`what` failed because of SDK error `err`" (`what: reason`), with the
 * status, code, kind and `permanent` of `err`. ConvoyErrors pass through unchanged.
 */
export function toS3StoreError(
  what: string,
  err: unknown,
  opts: { bucket: string },
): ConvoyError {
  if (err instanceof ConvoyError) return err;
  const kind = classifyS3Error(err);
  let reason: string;
  if (kind === "auth") reason = authReason(err);
  else if (kind === "no-bucket") reason = `bucket "${opts.bucket}" does not exist`;
  else reason = describeError(err);
  return s3StoreError(`${what}: ${reason}`, err);
}

/** An S3StoreError with `message`, and the status, code and kind of SDK error `err`. */
export function s3StoreError(message: string, err: unknown, cause: unknown = err): S3StoreError {
  return new S3StoreError(message, {
    cause,
    status: statusOf(err),
    s3Code: codeOf(err),
    permanent: !isRetryableS3Error(err),
    kind: classifyS3Error(err),
    retryAt: retryAtOf(err),
  });
}
