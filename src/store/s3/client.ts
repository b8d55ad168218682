/**
 * S3 clients: @aws-sdk/client-s3 loaded on first use, and one client per configuration, shared
 * by every store opened with it (connection reuse). Clients never retry: stores are retried by
 * withRetry (../wrappers.ts) with the policy of ./retry.ts.
 * @module
 */
import type { S3Client } from "@aws-sdk/client-s3";
import process from "node:process";
import { fetchHandler } from "./reads.ts";

/** The SDK module. */
export type SDK = typeof import("@aws-sdk/client-s3");

/** Loads the SDK (once; later calls resolve to the same module). */
export function loadSdk(): Promise<SDK> {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
  return import("@aws-sdk/client-s3");
}

/** Static credentials, instead of the SDK's default chain. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** What makes clients different. */
export interface ClientConfig {
  region: string;
  /** A custom endpoint: requests then use path-style addressing. */
  endpoint?: string;
  credentials?: S3Credentials;
}

const clients = new Map<string, S3Client>();

/**
 * The shared client of `cfg`, created on first use; with `reads`, the client of GetObject,
 * over fetch() (see fetchHandler in ./reads.ts).
 */
export function clientFor(sdk: SDK, cfg: ClientConfig, reads = false): S3Client {
  const key = JSON.stringify([cfg.region, cfg.endpoint, cfg.credentials, reads]);
  let client = clients.get(key);
  if (!client) {
    client = new sdk.S3Client({
      region: cfg.region,
      ...(cfg.endpoint !== undefined ? { endpoint: cfg.endpoint, forcePathStyle: true } : {}),
      ...(cfg.credentials ? { credentials: cfg.credentials } : {}),
      followRegionRedirects: cfg.endpoint === undefined,
      maxAttempts: 1,
      requestChecksumCalculation: "WHEN_REQUIRED",
      responseChecksumValidation: "WHEN_REQUIRED",
      // Fail a connect after 10 s and a request whose socket idles for 2 min; both are retried.
      // Reads go over fetch(): see fetchHandler.
      requestHandler: reads ? fetchHandler : { connectionTimeout: 10_000, socketTimeout: 120_000 },
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
