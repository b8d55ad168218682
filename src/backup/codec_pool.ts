/**
 * Block hashing and (de)compression on worker threads, so they use every core and never stall
 * the daemon's event loop. Workers are started on first use, shared, and do not keep the
 * process alive. The worker is inline JavaScript, so the same code runs under deno run, Node,
 * and the single binaries.
 *
 * Memory stays bounded by the blocks in flight, whatever the volume size: no buffer is allocated
 * per block on the main thread. Block buffers and the pooled buffers that carry compressed bytes
 * are transferred to a worker and back, never copied or dropped; the worker copies zlib's output
 * into them and frees that output at once (by detaching its ArrayBuffer) instead of leaving it
 * to a garbage collector that sees external memory late.
 * @module
 */
import { cpus } from "node:os";
import { clearInterval, setInterval } from "node:timers";
import { Worker } from "node:worker_threads";
import { BLOCK_SIZE, type ChecksumAlgorithm, type Compression } from "./codec.ts";

/** Size of a pooled buffer for compressed bytes: a block's worst-case compressed size fits. */
const SPARE_SIZE = BLOCK_SIZE + 64 * 1024;
/** Spare buffers kept for reuse; more in flight at once are left to the garbage collector. */
const MAX_SPARES = 16;
/** Spare buffers unused for this long are freed, so an idle daemon holds none. */
const SPARE_IDLE_MS = 10_000;

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const zlib = require("node:zlib");
const crypto = require("node:crypto");
const held = new Map();
const level = zlib.constants.ZSTD_c_compressionLevel;
// One output chunk per call, so zlib's result is a single buffer of its own that free() releases.
const chunkSize = ${SPARE_SIZE};
const digest = (algo, data) => crypto.createHash(algo).update(data).digest("hex").slice(0, 64);
// Releases the memory of a zlib result now: detaching an ArrayBuffer frees its backing store,
// where the garbage collector would free it only much later. Only for a buffer the result owns.
const free = (u8) => {
  const ab = u8.buffer;
  if (u8.byteOffset !== 0 || ab.byteLength < 65536 || typeof ab.transfer !== "function") return;
  try {
    ab.transfer(0);
  } catch {
    // not detachable: the garbage collector will free it
  }
};
function unpack(buf) {
  if (buf[0] === 0x1f && buf[1] === 0x8b) return zlib.gunzipSync(buf, { chunkSize });
  if (buf[0] === 0x28 && buf[1] === 0xb5 && buf[2] === 0x2f && buf[3] === 0xfd) {
    if (!zlib.zstdDecompressSync) throw new Error("this runtime has no zstd");
    return zlib.zstdDecompressSync(buf, { chunkSize });
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
      back.push(data.buffer, m.out);
      const z = m.compression === "zstd"
        ? zlib.zstdCompressSync(data, { params: { [level]: 1 }, chunkSize })
        : zlib.gzipSync(data, { level: 1, chunkSize });
      const len = z.length;
      let out = m.out;
      if (len <= out.byteLength) {
        new Uint8Array(out).set(z);
      } else {
        out = new Uint8Array(z).buffer; // cannot happen for a block; the caller's buffer is dropped
      }
      free(z);
      parentPort.postMessage({ id: m.id, out, len, buf: data.buffer }, [out, data.buffer]);
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
      const length = raw.length;
      free(raw);
      parentPort.postMessage({ id: m.id, sum, length, into: m.into, buf: m.buf }, [m.into, m.buf]);
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
  out?: ArrayBuffer;
  len?: number;
  buf?: ArrayBuffer;
  into?: ArrayBuffer;
  bufs?: ArrayBuffer[];
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
  lanes ??= Array.from({ length: Math.max(1, Math.min(3, cpus().length)) }, () => new Lane());
  return lanes.reduce((a, b) => (b.load < a.load ? b : a));
}

const spares: ArrayBuffer[] = [];
let sparesUsed = false;
let trimmer: ReturnType<typeof setInterval> | undefined;

/** A pooled buffer for compressed bytes (`size` larger than a block's get one of their own). */
function spare(size = SPARE_SIZE): ArrayBuffer {
  sparesUsed = true;
  return size <= SPARE_SIZE ? spares.pop() ?? new ArrayBuffer(SPARE_SIZE) : new ArrayBuffer(size);
}

/** Gives buffers back to the pool; others than the pool's own are dropped. */
function recycle(...bufs: (ArrayBuffer | undefined)[]): void {
  for (const b of bufs) {
    if (b?.byteLength === SPARE_SIZE && spares.length < MAX_SPARES) spares.push(b);
  }
  if (spares.length === 0 || trimmer) return;
  trimmer = setInterval(() => {
    if (sparesUsed) {
      sparesUsed = false;
      return;
    }
    clearInterval(trimmer);
    trimmer = undefined;
    // Detaching frees the memory now rather than at some later garbage collection.
    for (const b of spares.splice(0)) (b as { transfer?: (n: number) => unknown }).transfer?.(0);
  }, SPARE_IDLE_MS);
  trimmer.unref();
}

/** Compressed bytes in a pooled buffer, and the caller's block buffer, returned by the worker. */
export interface PackedBlock {
  /** The compressed bytes: valid until release(). */
  packed: Uint8Array;
  /** The buffer that was handed to hashBlock(). */
  buffer: Uint8Array;
  /**
   * Returns `packed`'s memory to the pool, for the next block. Call it once nothing reads
   * `packed` any more; skip it (the garbage collector frees it then) when a failed write might.
   */
  release(): void;
}

/** A block held by a worker after hashing, to be compressed (new) or dropped (already stored). */
export interface HashedBlock {
  checksum: string;
  /** Compresses the block; resolves to the compressed bytes and the caller's buffer, returned. */
  pack(compression: Compression): Promise<PackedBlock>;
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
  const bound = buf.byteLength + (buf.byteLength >>> 7) + 4096; // > zstd's and gzip's bounds
  const r = await l.call({ op: "hash", buf, algo: ALGO[algo] }, [buf]);
  if (r.error) throw new Error(r.error);
  const hold = r.id;
  return {
    checksum: r.sum!,
    pack: async (compression) => {
      const out = spare(bound);
      const p = await l.call({ op: "pack", hold, compression, out }, [out]);
      if (p.error) {
        recycle(...p.bufs ?? []);
        throw new Error(p.error);
      }
      let released = false;
      return {
        packed: new Uint8Array(p.out!, 0, p.len!),
        buffer: new Uint8Array(p.buf!),
        release: () => {
          if (!released) recycle(p.out);
          released = true;
        },
      };
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
 * `packed` is copied into a pooled buffer first: the caller's array stays intact.
 */
export async function unpackBlock(
  packed: Uint8Array,
  opts: { algo: ChecksumAlgorithm; into: Uint8Array },
): Promise<{ data: Uint8Array; length: number; checksum: string }> {
  const buf = spare(packed.length);
  new Uint8Array(buf).set(packed);
  const into = opts.into.buffer as ArrayBuffer;
  const r = await lane().call(
    { op: "unpack", buf, len: packed.length, into, algo: ALGO[opts.algo] },
    [buf, into],
  );
  if (r.error) {
    recycle(...r.bufs ?? []);
    throw new Error(r.error);
  }
  recycle(r.buf);
  return { data: new Uint8Array(r.into!), length: r.length!, checksum: r.sum! };
}
