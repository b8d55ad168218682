/**
 * The retry policy of S3 stores, applied by withRetry (../wrappers.ts): throttling (SlowDown,
 * HTTP 429), 5xx statuses and network errors are retried with exponential backoff and jitter;
 * other 4xx statuses never are (their S3StoreError is `permanent`).
 * @module
 */
import type { RetryPolicy } from "../types.ts";
import { S3StoreError } from "./errors.ts";

/** Retry policy of S3 stores (per operation). */
export interface S3RetryOptions {
  /** Total tries per operation, first included (default 5). */
  attempts?: number;
  /** Backoff base for 5xx and network errors, doubled per retry (default 100 ms). */
  baseDelayMs?: number;
  /** Backoff base for throttling (SlowDown, 429), doubled per retry (default 500 ms). */
  throttleDelayMs?: number;
  /** Longest wait before one retry (default 20 s). */
  maxDelayMs?: number;
}

/**
 * The RetryPolicy of `opts`: before retry n, waits between half and all of
 * `min(max, base * 2^(n-1))` (base: the throttling one after throttling), or until the time a
 * Retry-After header asked for, if later (but never more than `maxDelayMs`).
 */
export function s3RetryPolicy(opts: S3RetryOptions = {}): RetryPolicy {
  const base = opts.baseDelayMs ?? 100;
  const throttle = opts.throttleDelayMs ?? 500;
  const max = opts.maxDelayMs ?? 20_000;
  return {
    attempts: Math.max(1, opts.attempts ?? 5),
    backoff(err, retry) {
      const s3 = err instanceof S3StoreError ? err : undefined;
      const first = s3?.kind === "throttled" ? throttle : base;
      const cap = Math.min(max, first * 2 ** (retry - 1));
      let delay = cap / 2 + Math.random() * cap / 2;
      if (s3?.retryAt !== undefined) {
        delay = Math.max(delay, Math.min(max, s3.retryAt - Date.now()));
      }
      return Math.round(delay);
    },
  };
}
