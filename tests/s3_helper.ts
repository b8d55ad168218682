/**
 * S3 for tests: a shared server from `CONVOY_TEST_S3_ENDPOINT` (CI starts one with
 * tests/s3_server.ts) or a fauxqs started in-process, and a fresh bucket on it.
 * @module
 */
import type { S3Client } from "@aws-sdk/client-s3";
import process from "node:process";
import { closeS3Clients } from "../src/store/s3/client.ts";
import { startS3Server } from "./s3_server.ts";

/** A fresh bucket on a local S3 server. */
export interface S3TestTarget {
  /** The server's base URL (use path-style addressing). */
  endpoint: string;
  /** An empty bucket created for this caller. */
  bucket: string;
  /** A path-style SDK client of the server, for looking behind a store's back. */
  client: S3Client;
  /** Creates one more empty bucket (deleted again by `close` on a shared server). */
  createBucket(): Promise<string>;
  /** Closes cached S3 clients, then deletes the bucket or stops the in-process server. */
  close(): Promise<void>;
}

/**
 * Sets dummy AWS credentials when none are configured, and disables the EC2 metadata lookup,
 * so the SDK's default chain never leaves the machine. fauxqs does not check signatures.
 */
export function useTestCredentials(): void {
  const env = process.env;
  if (!env.AWS_ACCESS_KEY_ID && !env.AWS_PROFILE) {
    env.AWS_ACCESS_KEY_ID = "convoy";
    env.AWS_SECRET_ACCESS_KEY = "convoy-secret";
  }
  env.AWS_EC2_METADATA_DISABLED = "true";
  env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
}

/**
 * Connects to `CONVOY_TEST_S3_ENDPOINT` or starts fauxqs on 127.0.0.1, and creates a bucket
 * named `<prefix>-<random>` there (S3 rules: 3 to 63 lowercase letters, digits and "-").
 */
export async function s3TestEndpoint(opts: { prefix?: string } = {}): Promise<S3TestTarget> {
  useTestCredentials();
  const shared = process.env.CONVOY_TEST_S3_ENDPOINT?.trim();
  const server = shared ? undefined : await startS3Server();
  const endpoint = shared || server!.endpoint;
  const newName = () => `${opts.prefix ?? "convoy-test"}-${crypto.randomUUID().slice(0, 8)}`;
  const bucket = newName();
  const sdk = await import("@aws-sdk/client-s3");
  const client = new sdk.S3Client({
    region: "us-east-1",
    endpoint,
    forcePathStyle: true,
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
  try {
    await client.send(new sdk.CreateBucketCommand({ Bucket: bucket }));
  } catch (err) {
    client.destroy();
    await server?.close();
    throw err;
  }
  const buckets = [bucket];
  return {
    endpoint,
    bucket,
    client,
    async createBucket() {
      const name = newName();
      await client.send(new sdk.CreateBucketCommand({ Bucket: name }));
      buckets.push(name);
      return name;
    },
    async close() {
      closeS3Clients();
      try {
        if (!server) { for (const b of buckets) await emptyAndDelete(sdk, client, b); }
      } finally {
        client.destroy();
        await server?.close();
      }
    },
  };
}

async function emptyAndDelete(
  sdk: typeof import("@aws-sdk/client-s3"),
  client: S3Client,
  bucket: string,
): Promise<void> {
  for (;;) {
    const page = await client.send(new sdk.ListObjectsV2Command({ Bucket: bucket }));
    const keys = (page.Contents ?? []).flatMap((o) => (o.Key ? [{ Key: o.Key }] : []));
    if (keys.length === 0) break;
    await client.send(
      new sdk.DeleteObjectsCommand({ Bucket: bucket, Delete: { Objects: keys, Quiet: true } }),
    );
  }
  await client.send(new sdk.DeleteBucketCommand({ Bucket: bucket }));
}
