import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BackendError } from "../../api/errors.ts";
import { isTransient } from "../wrappers.ts";
import { classifyS3Error, S3StoreError, toS3StoreError } from "./errors.ts";

const e = (name: string, status?: number) =>
  Object.assign(new Error(name), { name, $metadata: { httpStatusCode: status } });

describe("classifyS3Error()", () => {
  it("classifyS3Error() tells missing objects from auth, throttling and client errors", () => {
    assert.equal(classifyS3Error(e("NotFound", 404)), "not-found");
    assert.equal(classifyS3Error(e("NoSuchKey", 404)), "not-found");
    assert.equal(classifyS3Error(e("NoSuchBucket", 404)), "no-bucket");
    assert.equal(classifyS3Error(e("Forbidden", 403)), "auth");
    assert.equal(classifyS3Error(e("SignatureDoesNotMatch", 403)), "auth");
    assert.equal(classifyS3Error(e("CredentialsProviderError")), "auth");
    assert.equal(classifyS3Error(e("SlowDown", 503)), "throttled");
    assert.equal(classifyS3Error(e("TooManyRequests", 429)), "throttled");
    assert.equal(classifyS3Error(e("InternalError", 500)), "server");
    assert.equal(classifyS3Error(e("NotImplemented", 501)), "client");
    assert.equal(classifyS3Error(e("InvalidArgument", 400)), "client");
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    assert.equal(classifyS3Error(reset), "network");
  });
});

describe("toS3StoreError()", () => {
  it("toS3StoreError() makes throttling, 5xx and resets transient, other 4xx permanent", () => {
    const what = 'Cannot read "k" in "s3://b/p"';
    const reset = Object.assign(new Error("socket hang up"), { code: "ECONNRESET" });
    for (const err of [e("SlowDown", 503), e("InternalError", 500), reset]) {
      const out = toS3StoreError(what, err, { bucket: "b" });
      assert.ok(out instanceof S3StoreError && out instanceof BackendError);
      assert.equal(isTransient(out), true, err.name);
    }
    for (const err of [e("InvalidArgument", 400), e("AccessDenied", 403)]) {
      assert.equal(isTransient(toS3StoreError(what, err, { bucket: "b" })), false, err.name);
    }
    assert.equal(
      toS3StoreError(what, e("NoSuchBucket", 404), { bucket: "b" }).message,
      `${what}: bucket "b" does not exist`,
    );
  });

  it("toS3StoreError() keeps the time a Retry-After header asks for", () => {
    const err = Object.assign(e("SlowDown", 503), {
      $response: { statusCode: 503, headers: { "retry-after": "3" } },
    });
    const out = toS3StoreError("x", err, { bucket: "b" }) as S3StoreError;
    assert.equal(out.kind, "throttled");
    assert.ok(out.retryAt !== undefined && Math.abs(out.retryAt - (Date.now() + 3000)) < 1000);
  });
});
