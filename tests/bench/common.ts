/**
 * What the benchmarks share: the local S3 server (tests/s3_server.ts) with a "bench" bucket, the
 * CLI's environment, and running a command that must succeed.
 * @module
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { REPO, run } from "../helpers.ts";

/** The daemon's and CLI's environment: the server checks no signature; no metadata service. */
export const BENCH_ENV = {
  AWS_ACCESS_KEY_ID: "bench",
  AWS_SECRET_ACCESS_KEY: "bench-secret",
  AWS_EC2_METADATA_DISABLED: "true",
};

/** Starts the S3 server on a free loopback port, its data in `dir`, with the bucket "bench". */
export async function startS3Server(dir: string): Promise<{ endpoint: string; stop(): void }> {
  const s3 = spawn(process.execPath, [
    "run",
    "-A",
    join(REPO, "tests", "s3_server.ts"),
    "--port",
    "0",
    "--dir",
    dir,
  ], { stdio: ["ignore", "pipe", "inherit"] });
  const endpoint = await new Promise<string>((resolve) =>
    s3.stdout!.once("data", (c) => resolve(String(c).trim().split("\n")[0]))
  );
  const stop = () => void s3.kill("SIGTERM");
  try {
    const { S3Client, CreateBucketCommand } = await import("@aws-sdk/client-s3");
    await new S3Client({
      endpoint,
      region: "us-east-1",
      forcePathStyle: true,
      credentials: { accessKeyId: "bench", secretAccessKey: "x" },
    }).send(new CreateBucketCommand({ Bucket: "bench" }));
  } catch (err) {
    stop();
    throw err;
  }
  return { endpoint, stop };
}

/** Runs `cmd`; its stdout, or an Error with its stderr when it fails. */
export async function must(
  cmd: string,
  args: string[],
  env?: Record<string, string>,
): Promise<string> {
  const r = await run(cmd, args, { env });
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(" ")}: ${r.stderr || r.stdout}`);
  return r.stdout;
}
