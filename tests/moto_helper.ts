/**
 * EC2, EBS direct APIs and the instance metadata service for tests: a shared moto_server from
 * `CONVOY_TEST_MOTO_ENDPOINT` (CI starts one in .ci/run) or one started here on a free port.
 * moto keeps its state in memory; each test uses its own resources (ids are unique).
 * @module
 */
import { spawn } from "node:child_process";
import { createServer, request as httpRequest } from "node:http";
import { Buffer } from "node:buffer";
import process from "node:process";

/** A moto_server and the settings that point the AWS SDK at it. */
export interface MotoServer {
  endpoint: string;
  /** AWS_ENDPOINT_URL, AWS_EC2_METADATA_SERVICE_ENDPOINT, region and a dummy key pair. */
  env: Record<string, string>;
  close(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

/** The SDK settings for a moto at `endpoint`. */
export function motoEnv(endpoint: string): Record<string, string> {
  return {
    AWS_ENDPOINT_URL: endpoint,
    AWS_EC2_METADATA_SERVICE_ENDPOINT: endpoint,
    AWS_REGION: "us-east-1",
    AWS_ACCESS_KEY_ID: "AKIAIOSFODNN7EXAMPLE",
    AWS_SECRET_ACCESS_KEY: "convoy-test-secret-never-shown",
  };
}

/** Connects to `CONVOY_TEST_MOTO_ENDPOINT`, or starts `moto_server` on 127.0.0.1. */
export async function startMoto(): Promise<MotoServer> {
  const shared = process.env.CONVOY_TEST_MOTO_ENDPOINT?.trim();
  if (shared) return { endpoint: shared, env: motoEnv(shared), close: () => Promise.resolve() };
  const port = await freePort();
  const child = spawn("moto_server", ["-H", "127.0.0.1", "-p", String(port)], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (d) => stderr = (stderr + d).slice(-2000));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      const res = await fetch(`${endpoint}/moto-api/`);
      await res.body?.cancel();
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill();
        throw new Error(`moto_server did not start: ${stderr}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    endpoint,
    env: motoEnv(endpoint),
    close: async () => {
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/**
 * An HTTP proxy in front of `target` that answers EC2 calls of `action` with an error while
 * `failures[action]` is positive (decremented per answer), and forwards everything else.
 */
export async function startFaultProxy(
  target: string,
  opts: {
    /**
     * Runs before EC2's answer to `action` reaches the client (a successful one only); a string
     * it returns replaces the answer.
     */
    tap?: (action: string, params: URLSearchParams, answer: string) => Promise<string | void>;
  } = {},
) {
  const failures: Record<string, { left: number; status: number; code: string }> = {};
  const seen: string[] = [];
  const server = createServer((req, res) => {
    const chunks: Uint8Array[] = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const params = new URLSearchParams(body.toString("utf8"));
      const action = params.get("Action") ?? "";
      seen.push(action || `${req.method} ${new URL(req.url ?? "/", target).pathname}`);
      const f = failures[action];
      if (f && f.left > 0) {
        f.left--;
        res.writeHead(f.status, { "content-type": "text/xml" });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>${f.code}</Code>` +
            `<Message>Injected ${f.code}</Message></Error></Errors><RequestID>x</RequestID></Response>`,
        );
        return;
      }
      const url = new URL(req.url ?? "/", target);
      const up = httpRequest(url, { method: req.method, headers: req.headers }, (r) => {
        const parts: Uint8Array[] = [];
        r.on("data", (c) => parts.push(c));
        r.on("end", async () => {
          let answer = Buffer.concat(parts);
          const status = r.statusCode ?? 502;
          try {
            if (opts.tap && status === 200 && action) {
              const replaced = await opts.tap(action, params, answer.toString("utf8"));
              if (typeof replaced === "string") answer = Buffer.from(replaced);
            }
            const headers = { ...r.headers };
            delete headers["content-length"];
            delete headers["transfer-encoding"];
            res.writeHead(status, { ...headers, "content-length": String(answer.length) });
            res.end(answer);
          } catch (err) {
            res.writeHead(500, { "content-type": "text/xml" });
            res.end(
              `<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>FakeHost</Code>` +
                `<Message>${
                  String(err).replace(/[<&]/g, " ")
                }</Message></Error></Errors></Response>`,
            );
          }
        });
      });
      up.on("error", (e) => {
        res.writeHead(502);
        res.end(String(e));
      });
      up.end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const port = (server.address() as { port: number }).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    failures,
    seen,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** Starts an instance in us-east-1a (moto's metadata instance, i-fake, is unknown to its EC2). */
export async function runInstance(env: Record<string, string>): Promise<string> {
  const sdk = await import("@aws-sdk/client-ec2");
  const c = new sdk.EC2Client({
    region: "us-east-1",
    endpoint: env.AWS_ENDPOINT_URL,
    credentials: { accessKeyId: env.AWS_ACCESS_KEY_ID, secretAccessKey: env.AWS_SECRET_ACCESS_KEY },
  });
  try {
    const images = await c.send(new sdk.DescribeImagesCommand({ Owners: ["amazon"] }));
    const out = await c.send(
      new sdk.RunInstancesCommand({
        ImageId: images.Images![0].ImageId!,
        MinCount: 1,
        MaxCount: 1,
        Placement: { AvailabilityZone: "us-east-1a" },
      }),
    );
    return out.Instances![0].InstanceId!;
  } finally {
    c.destroy();
  }
}
