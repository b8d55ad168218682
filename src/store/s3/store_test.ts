import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { Buffer } from "node:buffer";
import process from "node:process";
import { after, before, describe, it } from "node:test";
import { BackendError, InvalidArgumentError, NotFoundError } from "../../api/errors.ts";
import { s3TestEndpoint, type S3TestTarget, useTestCredentials } from "../../../tests/s3_helper.ts";
import { collectStream } from "../memory.ts";
import { runObjectStoreSuite } from "../suite.ts";
import { STALE_TEMP_AGE_MS, sweepStaleTemps } from "../sweep.ts";
import { openStore } from "../testing.ts";
import type { ObjectStore } from "../types.ts";
import { retrying, withRetry, withStoreWrappers } from "../wrappers.ts";
import { silentLogger } from "../../util/log.ts";
import { closeS3Clients } from "./client.ts";
import { S3StoreError } from "./errors.ts";
import { S3_PART_SIZE } from "./multipart.ts";
import { type S3RetryOptions, s3RetryPolicy } from "./retry.ts";
import { openS3Store, type S3Store, s3StoreFactory } from "./store.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();
const FAST_RETRY = { baseDelayMs: 1, throttleDelayMs: 1, maxDelayMs: 5 };

/** Opens `url` at `endpoint` as the daemon does: opening and every operation retried. */
async function openRetrying(
  url: string,
  endpoint: string,
  retry: S3RetryOptions = FAST_RETRY,
): Promise<ObjectStore> {
  const policy = s3RetryPolicy(retry);
  return withRetry(await retrying(() => openS3Store(url, { endpoint, retry }), policy), policy);
}

let s3: S3TestTarget;
before(async () => {
  s3 = await s3TestEndpoint({ prefix: "convoy-s3-test" });
});
after(async () => {
  await s3?.close();
});

/** Deletes everything a conformance test left in `store`. */
async function emptyStore(store: ObjectStore): Promise<void> {
  await store.remove(...await store.list(""));
}

runObjectStoreSuite({
  name: "S3Store (s3://bucket@region/some/path)",
  async create() {
    const url = `s3://${s3.bucket}@us-east-1/some/path-${crypto.randomUUID().slice(0, 8)}/`;
    const store = await openS3Store(url, { endpoint: s3.endpoint });
    return { store, cleanup: () => emptyStore(store) };
  },
});

runObjectStoreSuite({
  name: "S3Store (bucket root s3://bucket@region/)",
  async create() {
    const bucket = await s3.createBucket();
    const store = await openS3Store(`s3://${bucket}@us-east-1/`, { endpoint: s3.endpoint });
    return { store, cleanup: () => emptyStore(store) };
  },
});

/** Opens a store under a fresh prefix of the test bucket. */
function freshStore(opts: { partSize?: number } = {}): Promise<S3Store> {
  const url = `s3://${s3.bucket}@us-east-1/t-${crypto.randomUUID().slice(0, 8)}`;
  return openS3Store(url, { endpoint: s3.endpoint, ...opts });
}

/** `data` as a stream of `chunk`-byte copies. */
function streamOf(data: Uint8Array, chunk: number): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (at >= data.length) return c.close();
      c.enqueue(data.slice(at, at + chunk));
      at += chunk;
    },
  });
}

/** The ETag S3 reports for store key `key`. */
async function etag(store: S3Store, key: string): Promise<string> {
  const { HeadObjectCommand } = await import("@aws-sdk/client-s3");
  const out = await s3.client.send(
    new HeadObjectCommand({ Bucket: store.bucket, Key: `${store.prefix}/${key}` }),
  );
  return out.ETag ?? "";
}

async function forEachLimit<T>(items: T[], limit: number, fn: (x: T) => Promise<void>) {
  let i = 0;
  await Promise.all(Array.from({ length: limit }, async () => {
    while (i < items.length) await fn(items[i++]);
  }));
}

describe("S3Store against a local S3 server", () => {
  it("openS3Store() normalises the URL and keys go under its path", async () => {
    const store = await openS3Store(`s3://${s3.bucket}@us-east-1//norm/path/`, {
      endpoint: s3.endpoint,
    });
    assert.equal(store.url, `s3://${s3.bucket}@us-east-1/norm/path/`);
    assert.equal(store.prefix, "norm/path");
    assert.equal(store.kind, "s3");
    await store.write("a/b", enc.encode("x"));
    const root = await openS3Store(`s3://${s3.bucket}@us-east-1/`, { endpoint: s3.endpoint });
    assert.deepEqual(await root.list("norm/path/a"), ["b"]);
    await store.remove("a");
  });

  it("openStore() opens s3:// through the registry, with CONVOY_S3_ENDPOINT as default", async () => {
    const url = `s3://${s3.bucket}@us-east-1/reg`;
    assert.equal((await openStore(url, { endpoint: s3.endpoint })).kind, "s3");
    const old = process.env.CONVOY_S3_ENDPOINT;
    process.env.CONVOY_S3_ENDPOINT = s3.endpoint;
    try {
      const store = await openStore(`s3://${s3.bucket}/reg`);
      assert.equal(store.url, `s3://${s3.bucket}/reg`);
      assert.deepEqual(await store.list(""), []);
    } finally {
      if (old === undefined) delete process.env.CONVOY_S3_ENDPOINT;
      else process.env.CONVOY_S3_ENDPOINT = old;
    }
  });

  it("openS3Store() rejects a missing bucket with NotFoundError", async () => {
    await assert.rejects(
      openS3Store("s3://convoy-no-such-bucket@us-east-1/p", { endpoint: s3.endpoint }),
      {
        name: "NotFoundError",
        message:
          'Cannot open backup store "s3://convoy-no-such-bucket@us-east-1/p": bucket "convoy-no-such-bucket" does not exist',
      },
    );
  });

  it("openS3Store() rejects a malformed URL or endpoint with InvalidArgumentError", async () => {
    await assert.rejects(openS3Store("s3://b@r"), InvalidArgumentError);
    await assert.rejects(openS3Store("s3://bucket@r/p", { endpoint: "ftp://x" }), {
      name: "InvalidArgumentError",
      message:
        'Cannot open backup store "s3://bucket@r/p": endpoint "ftp://x" must be an http:// or https:// URL',
    });
  });

  it("list() paginates and remove() deletes in batches (1,205 objects)", async () => {
    const store = await freshStore();
    const names = Array.from({ length: 1205 }, (_, i) => `k${String(i).padStart(5, "0")}`);
    await forEachLimit(names, 16, (n) => store.write(`many/${n}`, enc.encode(n)));
    await store.write("many-sibling", enc.encode("s"));
    await store.write("many/sub/deep", enc.encode("d"));
    assert.deepEqual(await store.list("many"), [...names, "sub"]);
    await store.remove("many");
    assert.deepEqual(await store.list("many"), []);
    assert.deepEqual(await store.list(""), ["many-sibling"]);
    await store.remove("many-sibling");
  });

  it("remove() of vol1 never touches vol10 or vol1x (convoy's prefix-delete bug)", async () => {
    const store = await freshStore();
    const keys = [
      "volumes/vo/l1/vol1/volume.cfg",
      "volumes/vo/l1/vol1/blocks/ab/cd/abcd.blk",
      "volumes/vo/l1/vol10/volume.cfg",
      "volumes/vo/l1/vol10/blocks/ab/cd/abcd.blk",
      "volumes/vo/l1/vol1x",
      "volumes/vo/l1/vol1.cfg",
    ];
    for (const k of keys) await store.write(k, enc.encode(k));
    await store.remove("volumes/vo/l1/vol1");
    for (const k of keys.slice(0, 2)) assert.equal(await store.stat(k), undefined, k);
    for (const k of keys.slice(2)) assert.equal(dec.decode(await store.read(k)), k);
    assert.deepEqual(await store.list("volumes/vo/l1"), ["vol1.cfg", "vol10", "vol1x"]);
    await store.remove("volumes");
  });

  it("write() uses a multipart upload for 20 MiB and reads it back byte-equal", async () => {
    const store = await freshStore();
    const data = new Uint8Array(20 * 1024 * 1024 + 13);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, Math.min(i + 65536, data.length)));
    }
    await store.write("big/buffer", data);
    assert.deepEqual(await store.stat("big/buffer"), { size: data.length });
    assert.deepEqual(await store.read("big/buffer"), data);
    await store.write("big/stream", streamOf(data, 1_000_003));
    assert.deepEqual(await collectStream(await store.readStream("big/stream")), data);
    const exact = data.subarray(0, S3_PART_SIZE);
    await store.write("big/exact", streamOf(exact, 1 << 20));
    assert.deepEqual(await store.read("big/exact"), exact);
    // S3 multipart ETags end in "-<parts>": 20 MiB is 3 parts of 8 MiB; 8 MiB is one PutObject.
    assert.match(await etag(store, "big/buffer"), /-3"$/);
    assert.match(await etag(store, "big/stream"), /-3"$/);
    assert.doesNotMatch(await etag(store, "big/exact"), /-/);
    await store.remove("big");
  });

  it("write() of a stream with the wrong size fails and leaves no object", async () => {
    const store = await freshStore();
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode("12345"));
        c.close();
      },
    });
    await assert.rejects(store.write("sized", body, { size: 9 }), /body has 5 bytes, expected 9/);
    assert.equal(await store.stat("sized"), undefined);
  });

  it("write() aborts the multipart upload when the body stream fails", async () => {
    const store = await freshStore();
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(c) {
        if (sent >= 12 * 1024 * 1024) return c.error(new Error("disk on fire"));
        sent += 1024 * 1024;
        c.enqueue(new Uint8Array(1024 * 1024));
      },
    });
    await assert.rejects(store.write("broken", body), /disk on fire/);
    assert.equal(await store.stat("broken"), undefined);
    assert.deepEqual(await store.list(""), []);
  });
});

// -----------------------------------------------------------------------------------------------
// Failure modes, against a tiny scripted HTTP server on 127.0.0.1

interface FakeS3 {
  endpoint: string;
  /** "METHOD /path" of every request except the HeadBucket of open(). */
  requests: string[];
  close(): Promise<void>;
}

/** An HTTP server answering HeadBucket with 200 and everything else with `answer`. */
async function fakeS3(
  answer: (req: IncomingMessage, res: ServerResponse, n: number) => void,
): Promise<FakeS3> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      const path = new URL(req.url ?? "/", "http://x").pathname;
      if (req.method === "HEAD" && path.split("/").filter(Boolean).length === 1) {
        res.end();
        return;
      }
      requests.push(`${req.method} ${path}`);
      answer(req, res, requests.length);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    async close() {
      closeS3Clients();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function xmlError(res: ServerResponse, status: number, code: string, message: string) {
  res.writeHead(status, { "content-type": "application/xml" });
  res.end(
    `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message><RequestId>1</RequestId></Error>`,
  );
}

describe("S3Store failure handling", () => {
  before(() => useTestCredentials());

  it("stat() with wrong credentials (HTTP 403) rejects with BackendError, never undefined", async () => {
    const fake = await fakeS3((_req, res) => {
      xmlError(res, 403, "InvalidAccessKeyId", "The AWS Access Key Id does not exist.");
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint);
      const err = await store.stat("blocks/ab/cd/abcd.blk").then(
        (v) => assert.fail(`stat resolved to ${JSON.stringify(v)}`),
        (e: unknown) => e,
      );
      assert.ok(err instanceof BackendError);
      assert.match(
        err.message,
        /^Cannot stat "blocks\/ab\/cd\/abcd\.blk" in "s3:\/\/bucket@us-east-1\/p": access denied \(check credentials\)/,
      );
      assert.equal((err as S3StoreError).permanent, true);
      await assert.rejects(store.read("k"), (e: unknown) => {
        assert.ok(e instanceof BackendError && !(e instanceof NotFoundError));
        assert.match(e.message, /access denied \(check credentials\).*InvalidAccessKeyId/);
        return true;
      });
      await assert.rejects(store.list("x"), /access denied/);
      assert.deepEqual(fake.requests, [
        "HEAD /bucket/p/blocks/ab/cd/abcd.blk",
        "GET /bucket/p/k",
        "GET /bucket/",
      ]);
    } finally {
      await fake.close();
    }
  });

  it("openS3Store() says access is denied when HeadBucket answers 403", async () => {
    const server = createServer((req, res) => {
      req.resume();
      res.writeHead(403).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      await assert.rejects(
        openS3Store("s3://bucket@us-east-1/p", { endpoint: `http://127.0.0.1:${port}` }),
        (e: unknown) => {
          assert.ok(e instanceof S3StoreError);
          assert.match(
            e.message,
            /^Cannot open backup store "s3:\/\/bucket@us-east-1\/p": access denied \(check credentials\)/,
          );
          return true;
        },
      );
    } finally {
      closeS3Clients();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("requests are retried on 503 SlowDown and on a dropped connection", async () => {
    const fake = await fakeS3((req, res, n) => {
      if (n <= 2) return xmlError(res, 503, "SlowDown", "Please reduce your request rate.");
      if (n === 3) return req.socket.destroy();
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": "5" });
      res.end("hello");
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint);
      assert.equal(dec.decode(await store.read("obj")), "hello");
      assert.equal(fake.requests.length, 4);
    } finally {
      await fake.close();
    }
  });

  it("read() returns an object sent in many pieces as one buffer of its own", async () => {
    const data = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => (i * 7) % 251);
    const fake = await fakeS3((_req, res) => {
      res.writeHead(200, { "content-length": String(data.length) });
      for (let i = 0; i < data.length; i += 10_000) res.write(data.subarray(i, i + 10_000));
      res.end();
    });
    try {
      const store = await openS3Store("s3://bucket@us-east-1/p", { endpoint: fake.endpoint });
      const got = await store.read("big");
      assert.ok(Buffer.from(got).equals(Buffer.from(data)));
      assert.equal(got.byteOffset, 0);
      assert.equal(got.byteLength, got.buffer.byteLength);
    } finally {
      await fake.close();
    }
  });

  it("read() of a body cut short fails as a network error, retried", async () => {
    const fake = await fakeS3((_req, res, n) => {
      res.writeHead(200, { "content-length": "1000" });
      res.write("0123456789");
      if (n < 3) setTimeout(() => res.socket?.destroy(), 20);
      else res.end("x".repeat(990));
    });
    try {
      const store = await openS3Store("s3://bucket@us-east-1/p", {
        endpoint: fake.endpoint,
        retry: FAST_RETRY,
      });
      await assert.rejects(store.read("cut"), (e: unknown) => {
        assert.ok(e instanceof S3StoreError);
        assert.equal(e.permanent, false);
        assert.match(e.message, /^Cannot read "cut" in "s3:\/\/bucket@us-east-1\/p": /);
        return true;
      });
      assert.equal(fake.requests.length, 1); // a body failure is the caller's to retry
      assert.equal((await withRetry(store, { delayMs: 1 }).read("cut")).length, 1000);
    } finally {
      await fake.close();
    }
  });

  it("a 400 is not retried, and a 5xx is retried only up to the attempt limit", async () => {
    const fake = await fakeS3((req, res) => {
      if (req.url?.includes("bad")) return xmlError(res, 400, "InvalidArgument", "Bad argument.");
      xmlError(res, 500, "InternalError", "We encountered an internal error.");
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint, {
        ...FAST_RETRY,
        attempts: 3,
      });
      await assert.rejects(store.read("bad"), (e: unknown) => {
        assert.ok(e instanceof S3StoreError);
        assert.equal(e.status, 400);
        assert.equal(e.permanent, true);
        assert.match(
          e.message,
          /^Cannot read "bad" in "s3:\/\/bucket@us-east-1\/p": Bad argument\. \(InvalidArgument, HTTP 400\)$/,
        );
        return true;
      });
      assert.equal(fake.requests.length, 1);
      await assert.rejects(store.write("w", enc.encode("x")), (e: unknown) => {
        assert.ok(e instanceof S3StoreError);
        assert.equal(e.permanent, false);
        assert.match(e.message, /InternalError, HTTP 500/);
        return true;
      });
      assert.deepEqual(fake.requests.slice(1), [
        "PUT /bucket/p/w",
        "PUT /bucket/p/w",
        "PUT /bucket/p/w",
      ]);
    } finally {
      await fake.close();
    }
  });

  it("write() of a stream retries its own requests: withRetry cannot replay the body", async () => {
    const fake = await fakeS3((_req, res, n) => {
      if (n <= 2) return xmlError(res, 503, "SlowDown", "Please reduce your request rate.");
      res.writeHead(200, { etag: '"e"' });
      res.end();
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint);
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(enc.encode("hello"));
          c.close();
        },
      });
      await store.write("streamed", body);
      assert.deepEqual(fake.requests, [
        "PUT /bucket/p/streamed",
        "PUT /bucket/p/streamed",
        "PUT /bucket/p/streamed",
      ]);
    } finally {
      await fake.close();
    }
  });

  it("withStoreWrappers() retries opening: HeadBucket answering 503 twice", async () => {
    let heads = 0;
    const server = createServer((req, res) => {
      req.resume();
      if (++heads <= 2) return xmlError(res, 503, "SlowDown", "Please reduce your request rate.");
      res.end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const factory = withStoreWrappers(
        { ...s3StoreFactory, retry: s3RetryPolicy(FAST_RETRY) },
        { log: silentLogger },
      );
      const store = await factory.open("s3://bucket@us-east-1/p", {
        endpoint: `http://127.0.0.1:${port}`,
      });
      assert.equal(store.url, "s3://bucket@us-east-1/p");
      assert.equal(heads, 3);
    } finally {
      closeS3Clients();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("remove() reports per-key errors of DeleteObjects", async () => {
    const fake = await fakeS3((req, res) => {
      res.writeHead(200, { "content-type": "application/xml" });
      if (req.method === "GET") {
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bucket</Name><Prefix>p/x/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>`,
        );
      } else {
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><DeleteResult><Error><Key>p/x</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error></DeleteResult>`,
        );
      }
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint);
      await assert.rejects(store.remove("x"), {
        name: "S3StoreError",
        message:
          'Cannot remove "x" in "s3://bucket@us-east-1/p": access denied (check credentials): Access Denied (AccessDenied)',
      });
      assert.deepEqual(fake.requests, ["GET /bucket/", "POST /bucket/"]);
    } finally {
      await fake.close();
    }
  });
});

describe("S3Store.sweepTemps()", () => {
  before(() => useTestCredentials());

  it("sweepStaleTemps() aborts only multipart uploads idle for the safe age", async () => {
    const long = new Date(Date.now() - STALE_TEMP_AGE_MS - 60_000).toISOString();
    const now = new Date().toISOString();
    const upload = (key: string, id: string, at: string) =>
      `<Upload><Key>${key}</Key><UploadId>${id}</UploadId><Initiated>${at}</Initiated></Upload>`;
    const part = (at: string) =>
      `<Part><PartNumber>1</PartNumber><LastModified>${at}</LastModified><ETag>"e"</ETag><Size>5242880</Size></Part>`;
    const calls: string[] = [];
    const fake = await fakeS3((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      calls.push(`${req.method} ${url.pathname}?${url.searchParams}`);
      const id = url.searchParams.get("uploadId");
      if (req.method === "DELETE") {
        res.writeHead(204);
        res.end();
        return;
      }
      res.writeHead(200, { "content-type": "application/xml" });
      if (url.searchParams.has("uploads")) {
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult><Bucket>bucket</Bucket><IsTruncated>false</IsTruncated>${
            upload("p/v/a.bak", "idle", long) + upload("p/v/b.bak", "busy", long) +
            upload("p/v/c.bak", "new", now)
          }</ListMultipartUploadsResult>`,
        );
      } else {
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><ListPartsResult><Bucket>bucket</Bucket><UploadId>${id}</UploadId><IsTruncated>false</IsTruncated>${
            part(id === "busy" ? now : long)
          }</ListPartsResult>`,
        );
      }
    });
    try {
      const store = await openRetrying("s3://bucket@us-east-1/p", fake.endpoint);
      const sizes: [string, number][] = [];
      const onSwept = (key: string, bytes: number) => sizes.push([key, bytes]);
      assert.deepEqual(await sweepStaleTemps(store, { prefix: "v", dryRun: true, onSwept }), [
        "v/a.bak?uploadId=idle",
      ]);
      assert.deepEqual(sizes, [["v/a.bak?uploadId=idle", 5242880]], "the parts' size is told");
      assert.ok(!calls.some((c) => c.startsWith("DELETE")), "a dry run aborts nothing");
      calls.length = 0;
      assert.deepEqual(await sweepStaleTemps(store, { prefix: "v" }), ["v/a.bak?uploadId=idle"]);
      assert.deepEqual(calls, [ // the fresh upload "new" is not even looked at
        "GET /bucket/?prefix=p%2Fv%2F&uploads=",
        "GET /bucket/p/v/a.bak?uploadId=idle&x-id=ListParts",
        "DELETE /bucket/p/v/a.bak?uploadId=idle&x-id=AbortMultipartUpload",
        "GET /bucket/p/v/b.bak?uploadId=busy&x-id=ListParts",
      ]);
    } finally {
      await fake.close();
    }
  });
});
