import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { S3StoreError } from "./errors.ts";
import { s3RetryPolicy } from "./retry.ts";

const failure = (kind: "throttled" | "server", retryAt?: number) =>
  new S3StoreError("x", { permanent: false, kind, retryAt });

describe("s3RetryPolicy()", () => {
  it("s3RetryPolicy() backs off from 100 ms, from 500 ms after throttling, doubling to a cap", () => {
    const p = s3RetryPolicy();
    assert.equal(p.attempts, 5);
    const range = (err: unknown, retry: number) => {
      const all = Array.from({ length: 200 }, () => p.backoff!(err, retry));
      return [Math.min(...all), Math.max(...all)];
    };
    const [lo1, hi1] = range(failure("server"), 1);
    assert.ok(lo1 >= 50 && hi1 <= 100, `${lo1}..${hi1}`);
    const [lo3, hi3] = range(failure("server"), 3);
    assert.ok(lo3 >= 200 && hi3 <= 400, `${lo3}..${hi3}`);
    const [tlo, thi] = range(failure("throttled"), 1);
    assert.ok(tlo >= 250 && thi <= 500, `${tlo}..${thi}`);
    const [, capped] = range(failure("throttled"), 20);
    assert.ok(capped <= 20_000 && capped >= 10_000, `${capped}`);
  });

  it("s3RetryPolicy() waits for a Retry-After time, but never longer than maxDelayMs", () => {
    const p = s3RetryPolicy({ maxDelayMs: 2000 });
    const wait = p.backoff!(failure("throttled", Date.now() + 1500), 1);
    assert.ok(wait >= 1400 && wait <= 1500, `${wait}`);
    assert.equal(p.backoff!(failure("throttled", Date.now() + 60_000), 1), 2000);
  });
});
