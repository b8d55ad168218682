import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createServer as createHttpServer } from "node:http";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer as createNetServer } from "node:net";
import type { Server, Socket } from "node:net";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  BackendError,
  ConflictError,
  ConvoyError,
  InvalidArgumentError,
  NotFoundError,
} from "../api/errors.ts";
import { createSocketTransport, parseResponse, sendRequest, USER_AGENT } from "./client.ts";

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** Runs `fn` with a socket path in a fresh temp dir, removed afterwards. */
async function withTempSocket(fn: (socketPath: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-cli-"));
  try {
    await fn(join(dir, "convoy.sock"));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function listen(server: Server, socketPath: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
}

function close(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Serves `handler` with node:http on a temp unix socket while `fn` runs. */
async function withHttpServer(
  handler: (seen: Seen, res: ServerResponse) => void,
  fn: (socketPath: string, seen: Seen[]) => Promise<void>,
): Promise<void> {
  await withTempSocket(async (socketPath) => {
    const seen: Seen[] = [];
    const server = createHttpServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const s = {
          method: req.method ?? "",
          url: req.url ?? "",
          headers: req.headers,
          body: Buffer.concat(chunks).toString("utf8"),
        };
        seen.push(s);
        handler(s, res);
      });
    });
    await listen(server, socketPath);
    try {
      await fn(socketPath, seen);
    } finally {
      server.closeAllConnections();
      await close(server);
    }
  });
}

/** Serves raw bytes with node:net: `onRequest` gets the socket once a request head arrived. */
async function withRawServer(
  onRequest: (socket: Socket) => void,
  fn: (socketPath: string) => Promise<void>,
): Promise<void> {
  await withTempSocket(async (socketPath) => {
    const sockets = new Set<Socket>();
    const server = createNetServer((socket) => {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => {});
      let head = "";
      let answered = false;
      socket.on("data", (chunk: Buffer) => {
        head += chunk.toString("latin1");
        if (!answered && head.includes("\r\n\r\n")) {
          answered = true;
          onRequest(socket);
        }
      });
    });
    await listen(server, socketPath);
    try {
      await fn(socketPath);
    } finally {
      for (const s of sockets) s.destroy();
      await close(server);
    }
  });
}

describe("sendRequest()", () => {
  it("sendRequest() sends Convoy's headers and a JSON body on GET", async () => {
    await withHttpServer(
      (_seen, res) => {
        res.setHeader("Content-Type", "text/plain; charset=utf-8");
        res.end('{\n\t"Name": "vol1"\n}');
      },
      async (socketPath, seen) => {
        const request = createSocketTransport(socketPath);
        const body = await request("GET", "/v1/volumes/", { VolumeName: "vol1" });
        assert.equal(body, '{\n\t"Name": "vol1"\n}');
        assert.equal(seen.length, 1);
        assert.equal(seen[0].method, "GET");
        assert.equal(seen[0].url, "/v1/volumes/");
        assert.equal(seen[0].body, '{"VolumeName":"vol1"}');
        assert.equal(seen[0].headers["user-agent"], USER_AGENT);
        assert.equal(seen[0].headers["content-type"], "application/json");
        assert.equal(seen[0].headers["content-length"], String(seen[0].body.length));
      },
    );
  });

  it("createSocketTransport() sends no body when none is given and keeps query strings", async () => {
    await withHttpServer(
      (_seen, res) => res.end(""),
      async (socketPath, seen) => {
        const body = await createSocketTransport(socketPath)("GET", "/v1/volumes/list?driver=1");
        assert.equal(body, "");
        assert.equal(seen[0].url, "/v1/volumes/list?driver=1");
        assert.equal(seen[0].body, "");
      },
    );
  });

  it("createSocketTransport() decodes a chunked response", async () => {
    const big = "x".repeat(100_000);
    await withHttpServer(
      (_seen, res) => {
        res.write('{"a": "é",');
        res.write(` "big": "${big}"`);
        setTimeout(() => res.end("}"), 10);
      },
      async (socketPath) => {
        const body = await createSocketTransport(socketPath)("POST", "/v1/volumes/mount", {});
        assert.deepEqual(JSON.parse(body), { a: "é", big });
      },
    );
  });

  it('createSocketTransport() turns {"Error"} answers into typed errors', async () => {
    const cases: [number, new (...args: never[]) => ConvoyError][] = [
      [400, InvalidArgumentError],
      [404, NotFoundError],
      [409, ConflictError],
      [500, BackendError],
    ];
    for (const [status, type] of cases) {
      await withHttpServer(
        (_seen, res) => {
          res.statusCode = status;
          res.setHeader("Content-Type", "application/json");
          res.end(JSON.stringify({ Error: `Volume vol1 failed with ${status}` }));
        },
        async (socketPath) => {
          await assert.rejects(
            createSocketTransport(socketPath)("GET", "/v1/volumes/", { VolumeName: "vol1" }),
            (err: unknown) => {
              assert.ok(err instanceof type, `status ${status}`);
              assert.equal((err as Error).message, `Volume vol1 failed with ${status}`);
              return true;
            },
          );
        },
      );
    }
  });

  it("createSocketTransport() accepts Convoy's plain-text error bodies", async () => {
    await withHttpServer(
      (_seen, res) => {
        res.statusCode = 404;
        res.end("Volume not found.\n");
      },
      async (socketPath) => {
        await assert.rejects(
          createSocketTransport(socketPath)("DELETE", "/v1/volumes/", { VolumeName: "v1" }),
          new NotFoundError("Volume not found."),
        );
      },
    );
  });

  it("createSocketTransport() explains an error without a body", async () => {
    await withHttpServer(
      (_seen, res) => {
        res.statusCode = 404;
        res.end();
      },
      async (socketPath) => {
        await assert.rejects(
          createSocketTransport(socketPath)("GET", "/v1/info"),
          /convoy daemon answered HTTP 404 Not Found without a message/,
        );
      },
    );
  });

  it("sendRequest() reports a missing socket as an unreachable daemon", async () => {
    await withTempSocket(async (socketPath) => {
      await assert.rejects(
        sendRequest(socketPath, { method: "GET", path: "/v1/info" }),
        (err: unknown) => {
          assert.ok(err instanceof ConvoyError);
          assert.equal(err.code, "Unavailable");
          assert.equal(
            err.message,
            `cannot connect to convoy daemon at ${socketPath}: no such socket ` +
              `(is "convoy daemon" running?)`,
          );
          return true;
        },
      );
    });
  });

  it("sendRequest() reports a path that is not a listening socket as unreachable", async () => {
    await withTempSocket(async (socketPath) => {
      await writeFile(socketPath, "");
      await assert.rejects(
        sendRequest(socketPath, { method: "GET", path: "/v1/info" }),
        (err: unknown) => {
          assert.ok(err instanceof ConvoyError);
          assert.equal(err.code, "Unavailable");
          assert.match(
            err.message,
            new RegExp(
              `^cannot connect to convoy daemon at ${socketPath}: .+ \\(is "convoy daemon" running\\?\\)$`,
            ),
          );
          return true;
        },
      );
    });
  });

  it("sendRequest() resolves once Content-Length bytes arrived on a kept-alive connection", async () => {
    await withRawServer(
      (socket) => {
        socket.write("HTTP/1.1 100 Continue\r\n\r\n");
        socket.write("HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\n\r\nhello");
        setTimeout(() => socket.write(" world"), 10); // and never close
      },
      async (socketPath) => {
        const res = await sendRequest(socketPath, { method: "POST", path: "/v1/x", body: "{}" });
        assert.equal(res.status, 200);
        assert.equal(res.headers["x-a"], "1");
        assert.equal(res.body, "hello world");
      },
    );
  });

  it("sendRequest() resolves a chunked response once the last chunk arrived", async () => {
    await withRawServer(
      (socket) => {
        socket.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        setTimeout(() => socket.write("lo\r\n6;ext=1\r\n world\r\n0\r\n\r\n"), 10);
      },
      async (socketPath) => {
        const res = await sendRequest(socketPath, { method: "GET", path: "/v1/info" });
        assert.equal(res.body, "hello world");
      },
    );
  });

  it("sendRequest() reads a body without length until the connection closes", async () => {
    await withRawServer(
      (socket) => socket.end("HTTP/1.0 200 OK\r\n\r\n/mnt/vol1"),
      async (socketPath) => {
        const res = await sendRequest(socketPath, { method: "POST", path: "/v1/volumes/mount" });
        assert.equal(res.body, "/mnt/vol1");
      },
    );
  });

  it("sendRequest() fails when the daemon closes the connection mid-response", async () => {
    await withRawServer(
      (socket) => socket.end("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"),
      async (socketPath) => {
        await assert.rejects(
          sendRequest(socketPath, { method: "GET", path: "/v1/info" }),
          /closed the connection before the full response was received/,
        );
      },
    );
  });

  it("sendRequest() fails when the daemon closes the connection without answering", async () => {
    await withRawServer(
      (socket) => socket.end(),
      async (socketPath) => {
        await assert.rejects(
          sendRequest(socketPath, { method: "GET", path: "/v1/info" }),
          /closed the connection without answering/,
        );
      },
    );
  });
});

describe("parseResponse()", () => {
  const parse = (text: string, ended = false) => parseResponse(Buffer.from(text, "utf8"), ended);

  it("parseResponse() waits for the rest of the headers and body", () => {
    assert.equal(parse("HTTP/1.1 200 OK\r\nContent-Len"), undefined);
    assert.equal(parse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"), undefined);
    assert.equal(
      parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"),
      undefined,
    );
  });

  it("parseResponse() decodes chunks with trailers and multi-byte characters", () => {
    const res = parse(
      "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n\u00e9\r\n0\r\nX-T: 1\r\n\r\n",
    );
    assert.equal(res?.body, "é");
  });

  it("parseResponse() keeps the status text and joins repeated headers", () => {
    const res = parse("HTTP/1.1 404 Not Found\r\nA: 1\r\na: 2\r\nContent-Length: 0\r\n\r\n");
    assert.deepEqual(res, {
      status: 404,
      statusText: "Not Found",
      headers: { a: "1, 2", "content-length": "0" },
      body: "",
    });
  });

  it("parseResponse() rejects a malformed status line or chunk size", () => {
    assert.throws(() => parse("SSH-2.0-OpenSSH\r\n\r\n"), /Malformed response/);
    assert.throws(
      () => parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
      /bad chunk size/,
    );
  });
});
