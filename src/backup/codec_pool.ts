/**
 * Block hashing and (de)compression on worker threads, so they use every core and never stall
 * the daemon's event loop. Workers are started on first use, shared, and do not keep the
 * process alive. The worker is inline JavaScript, so the same code runs under deno run, Node,
 * and the single binaries.
 * @module
 */
import { cpus } from "node:os";
import { Worker } from "node:worker_threads";
import type { ChecksumAlgorithm, Compression } from "./codec.ts";

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const zlib = require("node:zlib");
const crypto = require("node:crypto");
const held = new Map();
const level = zlib.constants.ZSTD_c_compressionLevel;
const digest = (algo, data) => crypto.createHash(algo).update(data).digest("hex").slice(0, 64);
function unpack(buf) {
  if (buf[0] === 0x1f && buf[1] === 0x8b) return zlib.gunzipSync(buf);
  if (buf[0] === 0x28 && buf[1] === 0xb5 && buf[2] === 0x2f && buf[3] === 0xfd) {
    if (!zlib.zstdDecompressSync) throw new Error("this runtime has no zstd");
    return zlib.zstdDecompressSync(buf);
  }
  throw new Error("unknown block compression (neither gzip nor zstd)");
}
// Every buffer that comes in is sent back, so the caller reuses it: no per-block allocation of
// transferred memory, which the garbage collector would see late.
parentPort.on("message", (m) => {
  const back = [];
  try {
    if (m.op === "hash") {
      const data = new Uint8Array(m.buf);
      held.set(m.id, data);
      parentPort.postMessage({ id: m.id, sum: digest(m.algo, data) });
    } else if (m.op === "pack") {
      const data = held.get(m.hold);
      held.delete(m.hold);
      back.push(data.buffer);
      const out = m.compression === "zstd"
        ? zlib.zstdCompressSync(data, { params: { [level]: 1 } })
        : zlib.gzipSync(data, { level: 1 });
      const copy = new Uint8Array(out);
      parentPort.postMessage({ id: m.id, out: copy, buf: data.buffer }, [copy.buffer, data.buffer]);
    } else if (m.op === "drop") {
      const data = held.get(m.hold);
      held.delete(m.hold);
      parentPort.postMessage({ id: m.id, buf: data.buffer }, [data.buffer]);
    } else if (m.op === "unpack") {
      back.push(m.buf, m.into);
      const raw = unpack(new Uint8Array(m.buf, 0, m.len));
      const into = new Uint8Array(m.into);
      const n = Math.min(raw.length, into.length);
      into.set(raw.subarray(0, n));
      const sum = digest(m.algo, raw);
      parentPort.postMessage({ id: m.id, sum, length: raw.length, into: m.into, buf: m.buf }, [m.into, m.buf]);
    }
  } catch (err) {
    if (m.hold !== undefined && held.has(m.hold)) back.push(held.get(m.hold).buffer);
    held.delete(m.hold);
    parentPort.postMessage({ id: m.id, error: String(err && err.message || err), bufs: back }, back);
  }
});
`;

interface Reply {
  id: number;
  sum?: string;
  out?: Uint8Array;
  buf?: ArrayBuffer;
  into?: ArrayBuffer;
  length?: number;
  error?: string;
}

const ALGO: Record<ChecksumAlgorithm, string> = { sha512: "sha512", sha256: "sha256" };

class Lane {
  #worker: Worker;
  #waiting = new Map<number, (r: Reply) => void>();
  #busy = 0;
  constructor() {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true });
    this.#worker.unref();
    this.#worker.on("message", (r: Reply) => {
      const done = this.#waiting.get(r.id);
      this.#waiting.delete(r.id);
      if (this.#waiting.size === 0) this.#worker.unref();
      done?.(r);
    });
  }
  get load(): number {
    return this.#busy;
  }
  call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    const id = nextId++;
    this.#busy++;
    this.#worker.ref();
    return new Promise<Reply>((resolve) => {
      this.#waiting.set(id, (r) => {
        this.#busy--;
        resolve(r);
      });
      this.#worker.postMessage({ ...msg, id }, transfer);
    });
  }
}

let nextId = 1;
let lanes: Lane[] | undefined;

function lane(): Lane {
  lanes ??= Array.from({ length: Math.max(1, Math.min(4, cpus().length)) }, () => new Lane());
  return lanes.reduce((a, b) => (b.load < a.load ? b : a));
}

/** A block held by a worker after hashing, to be compressed (new) or dropped (already stored). */
export interface HashedBlock {
  checksum: string;
  /** Compresses the block; resolves to the compressed bytes and the caller's buffer, returned. */
  pack(compression: Compression): Promise<{ packed: Uint8Array; buffer: Uint8Array }>;
  /** Forgets the block; resolves to the caller's buffer, returned. */
  drop(): Promise<Uint8Array>;
}

/**
 * Hashes `data` on a worker. `data` must own its whole ArrayBuffer: it is transferred (unusable
 * meanwhile) and comes back from pack() or drop().
 */
export async function hashBlock(data: Uint8Array, algo: ChecksumAlgorithm): Promise<HashedBlock> {
  const l = lane();
  const buf = data.buffer as ArrayBuffer;
  const r = await l.call({ op: "hash", buf, algo: ALGO[algo] }, [buf]);
  if (r.error) throw new Error(r.error);
  const hold = r.id;
  return {
    checksum: r.sum!,
    pack: async (compression) => {
      const p = await l.call({ op: "pack", hold, compression });
      if (p.error) throw new Error(p.error);
      return { packed: p.out!, buffer: new Uint8Array(p.buf!) };
    },
    drop: async () => {
      const p = await l.call({ op: "drop", hold });
      return new Uint8Array(p.buf!);
    },
  };
}

/**
 * Decompresses a block file on a worker into `into` (which must own its whole ArrayBuffer; it
 * is transferred and returned as `data`). Resolves to the data, its full length and checksum.
 */
export async function unpackBlock(
  packed: Uint8Array,
  opts: { algo: ChecksumAlgorithm; into: Uint8Array },
): Promise<{ data: Uint8Array; length: number; checksum: string }> {
  const buf = new Uint8Array(packed).buffer; // a copy: the caller's array stays intact
  const into = opts.into.buffer as ArrayBuffer;
  const r = await lane().call(
    { op: "unpack", buf, len: packed.length, into, algo: ALGO[opts.algo] },
    [buf, into],
  );
  if (r.error) throw new Error(r.error);
  return { data: new Uint8Array(r.into!), length: r.length!, checksum: r.sum! };
}
