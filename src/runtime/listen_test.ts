import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { listenUnix, MAX_BODY, type UnixServer } from "./listen.ts";

interface RawReply {
  /** Everything the server sent before it closed the connection. */
  text: string;
  status: number;
  body: string;
  ms: number;
}

/**
 * Writes `head`, then `body` in 64 KiB pieces as the socket takes them, and resolves once the
 * server closes the connection (rejects after `giveUpMs`: the server never did).
 */
function rawExchange(
  socket: string,
  head: string,
  opts: { body?: Uint8Array; giveUpMs: number },
): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const s = connect({ path: socket });
    const t0 = Date.now();
    let text = "";
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`the server kept the connection open ${opts.giveUpMs} ms; got ${text}`));
    }, opts.giveUpMs);
    s.on("connect", async () => {
      s.write(head);
      const body = opts.body ?? new Uint8Array();
      for (let i = 0; i < body.length && !s.destroyed; i += 65536) {
        if (!s.write(body.subarray(i, i + 65536))) {
          await new Promise((r) => s.once("drain", r));
        }
      }
    });
    s.on("data", (c) => (text += c));
    s.on("error", () => {}); // a reset shows as a missing reply below
    s.on("close", () => {
      clearTimeout(timer);
      const [h, ...rest] = text.split("\r\n\r\n");
      resolve({
        text,
        status: Number(h.split(" ")[1]),
        body: rest.join("\r\n\r\n"),
        ms: Date.now() - t0,
      });
    });
  });
}

describe("listenUnix()", () => {
  let dir: string;
  let server: UnixServer;
  let socket: string;
  const TIMEOUT = 600;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "convoy-listen-"));
    socket = join(dir, "s.sock");
    server = await listenUnix(socket, (req) =>
      Promise.resolve({
        status: 200,
        body: JSON.stringify({ path: req.path, bytes: req.body.length }),
        contentType: "application/json",
      }), { requestTimeoutMs: TIMEOUT });
  });
  after(async () => {
    await server.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("listenUnix() answers a body over 16 MiB with 413 and a JSON error", async () => {
    const body = new Uint8Array(MAX_BODY + 1024 * 1024).fill(0x20);
    const r = await rawExchange(
      socket,
      `POST /v1/volumes/create HTTP/1.1\r\nHost: convoy\r\nContent-Length: ${body.length}\r\n\r\n`,
      { body, giveUpMs: 10_000 },
    );
    assert.equal(r.status, 413, r.text);
    assert.match(JSON.parse(r.body).Error, /larger than 16 MiB/);
  });

  it("listenUnix() answers a body that never arrives with 408 and closes, serving others meanwhile", async () => {
    const slow = rawExchange(
      socket,
      "POST /v1/volumes/create HTTP/1.1\r\nHost: convoy\r\nContent-Length: 1000\r\n\r\n{",
      { giveUpMs: TIMEOUT * 10 },
    );
    const other = await rawExchange(
      socket,
      `POST /other HTTP/1.1\r\nHost: convoy\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      { giveUpMs: TIMEOUT / 2 },
    );
    assert.equal(other.status, 200, other.text);
    assert.deepEqual(JSON.parse(other.body), { path: "/other", bytes: 2 });
    const r = await slow;
    assert.equal(r.status, 408, r.text);
    assert.match(JSON.parse(r.body).Error, /did not arrive .* 1 of 1000 body bytes/);
    assert.ok(r.ms >= TIMEOUT, `answered after ${r.ms} ms`);
  });

  it("listenUnix() closes a connection whose headers never end", async () => {
    const r = await rawExchange(socket, "POST /v1/volumes/create HTTP/1.1\r\nHost: con", {
      giveUpMs: TIMEOUT * 10,
    });
    assert.equal(r.status, 408, r.text);
  });

  it("listenUnix() does not cut a request whose handling outlasts the timeout", async () => {
    const slowSocket = join(dir, "slow.sock");
    const slowServer = await listenUnix(slowSocket, async () => {
      await new Promise((r) => setTimeout(r, TIMEOUT * 2));
      return { status: 200, body: "done" };
    }, { requestTimeoutMs: TIMEOUT });
    try {
      const r = await rawExchange(
        slowSocket,
        "POST /x HTTP/1.1\r\nHost: convoy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        { giveUpMs: TIMEOUT * 10 },
      );
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body, "done");
    } finally {
      await slowServer.close();
    }
  });
});
