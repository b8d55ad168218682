/**
 * The EC2 instance metadata service (IMDSv2: a session token from PUT /latest/api/token, then GETs
 * carrying it), found through the AWS SDK's documented settings:
 * `AWS_EC2_METADATA_SERVICE_ENDPOINT` (a URL), else `AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE`
 * (`IPv4`: http://169.254.169.254, `IPv6`: http://[fd00:ec2::254]); `AWS_EC2_METADATA_DISABLED=true`
 * turns it off. IMDSv1 (no token) is used only when the token call is refused with 403, 404 or
 * 405, as the SDK does, unless `AWS_EC2_METADATA_V1_DISABLED=true`.
 * @module
 */
import { sleep } from "./waiter.ts";

/** Environment variables, as `process.env`. */
export type Env = Record<string, string | undefined>;

/** Where this daemon runs. */
export interface Placement {
  instanceId: string;
  region: string;
  zone: string;
}

/** How `readPlacement` behaves; every field has a default. */
export interface ImdsOptions {
  env: Env;
  /** Per-request timeout (default 2 s). */
  timeoutMs?: number;
  /** Attempts per request, with exponential backoff between them (default 3). */
  attempts?: number;
  signal?: AbortSignal;
}

const PATHS = {
  instanceId: "/latest/meta-data/instance-id",
  region: "/latest/meta-data/placement/region",
  zone: "/latest/meta-data/placement/availability-zone",
} as const;

/** The metadata service's base URL, from the SDK's settings; undefined when disabled. */
export function imdsEndpoint(env: Env): string | undefined {
  if (env.AWS_EC2_METADATA_DISABLED?.toLowerCase() === "true") return undefined;
  const explicit = env.AWS_EC2_METADATA_SERVICE_ENDPOINT?.trim();
  if (explicit) return explicit.replace(/\/+$/, "");
  return env.AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE?.toLowerCase() === "ipv6"
    ? "http://[fd00:ec2::254]"
    : "http://169.254.169.254";
}

/**
 * The fields of `known` that are empty, read from the metadata service; the others are kept (the
 * `ebs.instanceid`, `ebs.region`, `ebs.zone` options). Throws an Error starting with
 * "Not running on an EC2 instance" when the service cannot answer.
 */
export async function readPlacement(
  known: Partial<Placement>,
  opts: ImdsOptions,
): Promise<Placement> {
  const missing = (Object.keys(PATHS) as Array<keyof Placement>).filter((k) => !known[k]);
  const out = { instanceId: "", region: "", zone: "", ...known } as Placement;
  if (missing.length === 0) return out;
  const base = imdsEndpoint(opts.env);
  if (!base) {
    throw new Error(
      `Not running on an EC2 instance: the metadata service is disabled (AWS_EC2_METADATA_DISABLED); set ${
        missing.map((k) => OPTION_OF[k]).join(", ")
      }`,
    );
  }
  try {
    const token = await fetchToken(base, opts);
    for (const key of missing) out[key] = await get(base, PATHS[key], token, opts);
  } catch (err) {
    throw new Error(`Not running on an EC2 instance: metadata service ${base}: ${describe(err)}`, {
      cause: err,
    });
  }
  if (!out.region && out.zone) out.region = out.zone.replace(/[a-z]$/, "");
  return out;
}

const OPTION_OF: Record<keyof Placement, string> = {
  instanceId: "ebs.instanceid",
  region: "ebs.region",
  zone: "ebs.zone",
};

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? `: ${err.cause.message}` : "";
    return err.name === "TimeoutError" ? "no answer in time" : `${err.message}${cause}`;
  }
  return String(err);
}

class HttpStatusError extends Error {
  status: number;
  constructor(status: number, what: string) {
    super(`${what} answered HTTP ${status}`);
    this.status = status;
  }
}

async function request(
  url: string,
  init: RequestInit,
  opts: ImdsOptions,
): Promise<string> {
  const attempts = Math.max(1, opts.attempts ?? 3);
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await sleep(100 * 2 ** (i - 1), opts.signal);
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? 2000);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    try {
      const res = await fetch(url, { ...init, signal });
      const body = await res.text();
      if (res.ok) return body.trim();
      last = new HttpStatusError(res.status, `${init.method ?? "GET"} ${new URL(url).pathname}`);
      // 4xx other than 429 will not change on a retry
      if (res.status < 500 && res.status !== 429) throw last;
    } catch (err) {
      if (err instanceof HttpStatusError && err.status < 500 && err.status !== 429) throw err;
      if (opts.signal?.aborted) throw err;
      last = err;
    }
  }
  throw last;
}

async function fetchToken(base: string, opts: ImdsOptions): Promise<string | undefined> {
  try {
    return await request(`${base}/latest/api/token`, {
      method: "PUT",
      headers: { "x-aws-ec2-metadata-token-ttl-seconds": "300" },
    }, opts);
  } catch (err) {
    const v1Allowed = opts.env.AWS_EC2_METADATA_V1_DISABLED?.toLowerCase() !== "true";
    if (v1Allowed && err instanceof HttpStatusError && [403, 404, 405].includes(err.status)) {
      return undefined;
    }
    throw err;
  }
}

function get(base: string, path: string, token: string | undefined, opts: ImdsOptions) {
  const headers: Record<string, string> = token ? { "x-aws-ec2-metadata-token": token } : {};
  return request(`${base}${path}`, { method: "GET", headers }, opts);
}
