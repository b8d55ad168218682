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
 * to a garbage collector that sees external memory late. A block file read from the store is
 * handed to the worker the same way and freed there once decompressed.
 * @module
 */
import { cpus } from "node:os";
import { clearInterval, setInterval } from "node:timers";
import { Worker } from "node:worker_threads";
import { BLOCK_SIZE, type ChecksumAlgorithm, type Compression } from "./codec.ts";

/** Size of a pooled buffer for compressed bytes: a block's worst-case compressed size fits. */
const SPARE_SIZE = BLOCK_SIZE + 64 * 1024;
/** Spare buffers kept for reuse; more in flight at once are left to the garbage collector. */
const MAX_SPARES = 8;
/** Spare buffers unused for this long are freed, so an idle daemon holds none. */
const SPARE_IDLE_MS = 10_000;
/**
 * zstd level of new blocks. Measured on 2 MiB blocks of /usr files (Deno 2.9, one core):
 * level 1 compresses at ~500 MB/s and decompresses at ~625 MB/s (ratio 0.30); level -3 at ~640
 * and ~1760 MB/s (ratio 0.37). A fast level costs ~20% more store for much faster backups and
 * restores; readers need not know the level.
 */
export const ZSTD_LEVEL = -3;

const WORKER_SOURCE = `
const { parentPort } = require("node:worker_threads");
const zlib = require("node:zlib");
const crypto = require("node:crypto");
const fs = require("node:fs");
const held = new Map();
// Restore targets this worker writes to and backup sources it reads from, by path: opened on
// first use, closed by "close". I/O bypasses the page cache (O_DIRECT) where the file allows it:
// no copy through the cache, no writeback later, no cache evicted for a one-off pass, no lock
// contention between workers. O_DIRECT needs an aligned buffer, and JavaScript cannot see
// addresses: a block goes through a staging buffer at the first offset the kernel accepts
// (EINVAL otherwise), which then serves every later block of that file.
const targets = new Map();
const sources = new Map();
const STAGE_SLACK = 8192;
let staging;
const stagingBuffer = () => (staging ??= new Uint8Array(${BLOCK_SIZE} + STAGE_SLACK));
function openDirect(path, flags, fallback) {
  const direct = fs.constants.O_DIRECT;
  if (direct) {
    try {
      return { fd: fs.openSync(path, flags | direct), at: -1 };
    } catch {
      // no direct I/O here (tmpfs, some network filesystems): buffered I/O
    }
  }
  return { fd: fs.openSync(path, fallback), at: undefined };
}
const openTarget = (path) => openDirect(path, fs.constants.O_RDWR, "r+");
const openSource = (path) => openDirect(path, fs.constants.O_RDONLY, "r");
// Runs io(k) at the staging offset that file t accepts, found on its first block. A read of a
// hole is accepted at any offset (ext4 zero-fills it without checking alignment), so an offset
// that a later block refuses is looked for again.
function staged(t, io) {
  if (t.at >= 0) {
    try {
      return io(t.at);
    } catch (err) {
      if (err.code !== "EINVAL") throw err;
      t.at = -1;
    }
  }
  for (let k = 0; k < STAGE_SLACK; k += 16) {
    try {
      const r = io(k);
      t.at = k;
      return r;
    } catch (err) {
      if (err.code !== "EINVAL") throw err;
    }
  }
  throw new Error("no buffer alignment accepted for direct I/O");
}
function readUpTo(fd, buf, from, length, position) {
  let done = 0;
  while (done < length) {
    const n = fs.readSync(fd, buf, from + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}
// Fills data with length bytes of source t from position, then zeros (past the end of t too).
function readBlock(t, data, length, position) {
  let n;
  if (t.at === undefined) {
    n = readUpTo(t.fd, data, 0, length, position);
  } else {
    const stage = stagingBuffer();
    const whole = Math.ceil(length / 4096) * 4096; // direct I/O reads whole sectors
    n = Math.min(length, staged(t, (k) => readUpTo(t.fd, stage, k, whole, position)));
    data.set(stage.subarray(t.at, t.at + n));
  }
  data.fill(0, n);
}
function isZero(data) {
  const words = new BigUint64Array(data.buffer, data.byteOffset, data.byteLength >>> 3);
  for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
  for (let i = words.length * 8; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}
function writeAll(fd, buf, from, length, position) {
  for (let done = 0; done < length;) {
    done += fs.writeSync(fd, buf, from + done, length - done, position + done);
  }
}
function writeBlock(t, raw, position) {
  if (t.at === undefined) return writeAll(t.fd, raw, 0, raw.length, position);
  const stage = stagingBuffer();
  if (t.at >= 0 && raw.buffer === stage.buffer && raw.byteOffset === t.at) {
    return writeAll(t.fd, stage, t.at, raw.length, position); // decoded in place
  }
  if (raw.buffer === stage.buffer) raw = raw.slice(); // moved below while probing
  staged(t, (k) => {
    stage.set(raw, k);
    writeAll(t.fd, stage, k, raw.length, position);
  });
}
// A zstd block decoded straight into the staging buffer, at the offset its target writes from:
// no 2 MiB result to allocate, fault in, copy and free per block. This uses zlib's stream handle
// (Node's and Deno's alike), so it is checked once on a known frame; where it is missing or
// wrong, unpack() serves. Returns the decoded bytes (at most max + 1), or undefined.
const isZstd = (buf) => buf[0] === 0x28 && buf[1] === 0xb5 && buf[2] === 0x2f && buf[3] === 0xfd;
let zstdHandle; // undefined: not checked yet; null: not usable here
function zstdStreamHandle() {
  try {
    const d = zlib.createZstdDecompress();
    const frame = zlib.zstdCompressSync(Buffer.from("convoy"));
    const probe = new Uint8Array(64);
    d._handle.reset();
    d._handle.writeSync(zlib.constants.ZSTD_e_end, frame, 0, frame.length, probe, 3, 60);
    const ok = 60 - d._writeState[0] === 6 && Buffer.from(probe.subarray(3, 9)).toString() === "convoy";
    return ok ? d : null;
  } catch {
    return null; // no zstd stream handle here
  }
}
function zstdInto(src, out, at, max) {
  if (zstdHandle === undefined) zstdHandle = zstdStreamHandle();
  if (zstdHandle === null || !isZstd(src)) return undefined;
  const room = Math.min(max + 1, out.length - at);
  try {
    zstdHandle._handle.reset();
    zstdHandle._handle.writeSync(zlib.constants.ZSTD_e_end, src, 0, src.length, out, at, room);
  } catch (err) {
    zstdHandle = undefined; // a fresh handle for the next block
    throw err;
  }
  return out.subarray(at, at + room - zstdHandle._writeState[0]);
}
const level = zlib.constants.ZSTD_c_compressionLevel;
const ZSTD_LEVEL = ${ZSTD_LEVEL};
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
  if (isZstd(buf)) {
    if (!zlib.zstdDecompressSync) throw new Error("this runtime has no zstd");
    return zlib.zstdDecompressSync(buf, { chunkSize });
  }
  throw new Error("unknown block compression (neither gzip nor zstd)");
}
// Every buffer that comes in is sent back, so the caller reuses it: no per-block allocation of
// transferred memory, which the garbage collector would see late.
parentPort.on("message", (m) => {
  const back = [];
  let phase = "decode";
  try {
    if (m.op === "hash") {
      const data = new Uint8Array(m.buf);
      held.set(m.id, data);
      parentPort.postMessage({ id: m.id, sum: digest(m.algo, data) });
    } else if (m.op === "readHash") {
      back.push(m.buf);
      let t = sources.get(m.path);
      if (t === undefined) {
        t = openSource(m.path);
        sources.set(m.path, t);
      }
      const data = new Uint8Array(m.buf);
      readBlock(t, data, m.length, m.offset);
      if (isZero(data)) {
        parentPort.postMessage({ id: m.id, zero: true, buf: m.buf }, [m.buf]);
      } else {
        held.set(m.id, data);
        parentPort.postMessage({ id: m.id, sum: digest(m.algo, data) });
      }
    } else if (m.op === "pack") {
      const data = held.get(m.hold);
      held.delete(m.hold);
      back.push(data.buffer, m.out);
      const z = m.compression === "zstd"
        ? zlib.zstdCompressSync(data, { params: { [level]: ZSTD_LEVEL }, chunkSize })
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
      back.push(m.into);
      if (!m.own) back.push(m.buf);
      const raw = unpack(new Uint8Array(m.buf, 0, m.len));
      if (m.own) free(new Uint8Array(m.buf)); // handed over: freed now, not at some later GC
      const into = new Uint8Array(m.into);
      const n = Math.min(raw.length, into.length);
      into.set(raw.subarray(0, n));
      const sum = digest(m.algo, raw);
      const length = raw.length;
      free(raw);
      parentPort.postMessage({ id: m.id, sum, length, into: m.into, buf: m.own ? undefined : m.buf }, back);
    } else if (m.op === "unpackTo") {
      // Decoded, verified and written here: the block never travels back to the main thread.
      if (!m.own) back.push(m.buf);
      const src = new Uint8Array(m.buf, 0, m.len);
      const at = targets.get(m.path)?.at;
      const inPlace = zstdInto(src, stagingBuffer(), at > 0 ? at : 0, m.size);
      const raw = inPlace ?? unpack(src);
      if (m.own) free(new Uint8Array(m.buf));
      const written = raw.length === m.size && digest(m.algo, raw) === m.checksum;
      let direct = false;
      if (written) {
        phase = "write";
        let t = targets.get(m.path);
        if (t === undefined) {
          t = openTarget(m.path);
          targets.set(m.path, t);
        }
        writeBlock(t, raw, m.offset);
        direct = t.at !== undefined;
      }
      if (!inPlace) free(raw);
      parentPort.postMessage({ id: m.id, written, direct, buf: m.own ? undefined : m.buf }, back);
    } else if (m.op === "retire") {
      for (const t of [...targets.values(), ...sources.values()]) {
        try {
          fs.closeSync(t.fd);
        } catch {
          // closing is all that is left to do
        }
      }
      targets.clear();
      sources.clear();
      parentPort.postMessage({ retired: true }); // the main thread terminates this worker
      return;
    } else if (m.op === "close") {
      phase = "close";
      for (const files of [targets, sources]) {
        const t = files.get(m.path);
        files.delete(m.path);
        if (t !== undefined) fs.closeSync(t.fd);
      }
      parentPort.postMessage({ id: m.id });
    }
  } catch (err) {
    if (m.hold !== undefined && held.has(m.hold)) back.push(held.get(m.hold).buffer);
    held.delete(m.hold);
    const error = String(err && err.message || err);
    parentPort.postMessage({ id: m.id, error, stage: phase, bufs: back }, back);
  }
});
`;

interface Reply {
  id: number;
  retired?: boolean;
  sum?: string;
  out?: ArrayBuffer;
  len?: number;
  buf?: ArrayBuffer;
  into?: ArrayBuffer;
  bufs?: ArrayBuffer[];
  length?: number;
  written?: boolean;
  /** The block went to the target with direct I/O: none of it waits in the page cache. */
  direct?: boolean;
  /** The block read from a source is all zeros (not hashed, not held). */
  zero?: boolean;
  error?: string;
  /** Where a failed call failed: "decode" (the block's bytes), "write" or "close" (the target). */
  stage?: string;
}

const ALGO: Record<ChecksumAlgorithm, string> = { sha512: "sha512", sha256: "sha256" };

/** A worker idle this long (no call running, no block held) exits: an idle daemon holds none. */
let laneIdleMs = 10_000;

class Lane {
  #worker: Worker;
  #waiting = new Map<number, (r: Reply) => void>();
  #holds = 0;
  #idle: ReturnType<typeof setTimeout> | undefined;
  constructor() {
    this.#worker = new Worker(WORKER_SOURCE, { eval: true });
    this.#worker.unref();
    this.#worker.on("message", (r: Reply) => {
      if (r.retired) {
        void this.#worker.terminate();
        return;
      }
      const done = this.#waiting.get(r.id);
      this.#waiting.delete(r.id);
      if (this.#waiting.size === 0) this.#worker.unref();
      done?.(r);
      this.#whenIdle();
    });
    // A worker that dies fails its calls instead of leaving them pending; lane() replaces it.
    const stop = (why: string) => {
      this.dead = true;
      for (const [id, done] of this.#waiting) done({ id, error: `codec worker stopped: ${why}` });
      this.#waiting.clear();
    };
    this.#worker.on("error", (err: unknown) => stop(String((err as Error)?.message ?? err)));
    liveWorkers++;
    this.#worker.on("exit", (code: number) => {
      liveWorkers--;
      stop(`exit code ${code}`);
    });
    this.#whenIdle();
  }
  dead = false;
  get load(): number {
    return this.#waiting.size;
  }
  /** Counts blocks the worker holds between hash and pack/drop: a holding worker never retires. */
  hold(delta: number): void {
    this.#holds += delta;
    this.#whenIdle();
  }
  /** No call running, no block held, not retired. */
  get #idleNow(): boolean {
    return this.#waiting.size === 0 && this.#holds === 0 && !this.dead;
  }
  #whenIdle(): void {
    clearTimeout(this.#idle);
    this.#idle = undefined;
    if (!this.#idleNow) return;
    this.#idle = setTimeout(() => {
      if (!this.#idleNow) return;
      this.dead = true; // lane() starts a new worker for the next call
      this.#worker.postMessage({ op: "retire" }); // closes its targets, then exits
    }, laneIdleMs);
    this.#idle.unref();
  }
  call(msg: Record<string, unknown>, transfer: ArrayBuffer[] = []): Promise<Reply> {
    const id = nextId++;
    if (this.dead) return Promise.resolve({ id, error: "codec worker stopped" });
    clearTimeout(this.#idle);
    this.#worker.ref();
    return new Promise<Reply>((resolve) => {
      this.#waiting.set(id, resolve);
      this.#worker.postMessage({ ...msg, id }, transfer);
    });
  }
}

let nextId = 1;
let lanes: Lane[] | undefined;

/**
 * One lane more than cores (at most 4): a lane waiting for its next block leaves no core idle.
 * Measured on 2 cores: a restore took ~3.7 s with 3 lanes, ~4.6 s with 2.
 */
const LANES = Math.min(cpus().length + 1, 4);

function lane(): Lane {
  lanes ??= Array.from({ length: LANES }, () => new Lane());
  if (lanes.some((l) => l.dead)) lanes = lanes.map((l) => (l.dead ? new Lane() : l));
  return lanes.reduce((a, b) => (b.load < a.load ? b : a));
}

let liveWorkers = 0;

/** Worker threads alive now, until their exit (tests and diagnostics). */
export function codecWorkers(): number {
  return liveWorkers;
}

/** Sets how long an idle worker lives (tests); returns the previous value. */
export function setCodecIdleMs(ms: number): number {
  const old = laneIdleMs;
  laneIdleMs = ms;
  return old;
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

/**
 * Frees block buffers nothing uses any more (each must own its whole ArrayBuffer) now, rather
 * than at some later garbage collection; empties the array.
 */
export function freeBuffers(bufs: Uint8Array[]): void {
  for (const b of bufs.splice(0)) {
    if (b.byteOffset === 0 && b.byteLength === b.buffer.byteLength) {
      (b.buffer as { transfer?: (n: number) => unknown }).transfer?.(0);
    }
  }
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
  l.hold(1); // from the reply on, until pack or drop has taken the block
  const r = await l.call({ op: "hash", buf, algo: ALGO[algo] }, [buf]);
  return heldBlock(l, r, buf.byteLength);
}

/** A block read by readSourceBlock(): all zeros (not hashed), or hashed and held by a worker. */
export type ReadBlock = { zero: true; buffer: Uint8Array } | { zero: false; hashed: HashedBlock };

/**
 * Reads `file.length` bytes of the file or block device `file.path` at `file.offset` into `into`
 * (zeros after them, and past the file's end) on a worker, with direct I/O where the file allows
 * it, and hashes them unless they are all zeros. `into` must own its whole ArrayBuffer: it is
 * transferred and comes back as `buffer`, or from pack() or drop(). Call closeFile() once the
 * last block of a file is read.
 */
export async function readSourceBlock(
  file: { path: string; offset: number; length: number },
  opts: { algo: ChecksumAlgorithm; into: Uint8Array },
): Promise<ReadBlock> {
  const l = lane();
  fileLanes.add(l);
  const buf = opts.into.buffer as ArrayBuffer;
  l.hold(1);
  const r = await l.call({ op: "readHash", buf, algo: ALGO[opts.algo], ...file }, [buf]);
  if (r.zero) {
    l.hold(-1);
    return { zero: true, buffer: new Uint8Array(r.buf!) };
  }
  if (r.error) {
    l.hold(-1);
    throw new Error(`cannot read "${file.path}" at offset ${file.offset}: ${r.error}`);
  }
  return { zero: false, hashed: heldBlock(l, r, buf.byteLength) };
}

/** The HashedBlock of a hash reply from lane `l`, which holds the block (count taken by caller). */
function heldBlock(l: Lane, r: Reply, size: number): HashedBlock {
  const bound = size + (size >>> 7) + 4096; // > zstd's and gzip's bounds
  if (r.error) {
    l.hold(-1);
    throw new Error(r.error);
  }
  const hold = r.id;
  let held = true;
  const letGo = () => {
    if (held) l.hold(-1);
    held = false;
  };
  return {
    checksum: r.sum!,
    pack: async (compression) => {
      const out = spare(bound);
      const p = await l.call({ op: "pack", hold, compression, out }, [out]).finally(letGo);
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
      const p = await l.call({ op: "drop", hold }).finally(letGo);
      return new Uint8Array(p.buf!);
    },
  };
}

/** A failed write to, or close of, a restore target on a worker (not a fault of the block). */
export class TargetWriteError extends Error {
  override name = "TargetWriteError";
}

/**
 * The buffer to send a block file in: its own when `packed` spans a whole ArrayBuffer (handed
 * over: detached here, freed by the worker at once), else a pooled copy.
 */
function packedBuffer(packed: Uint8Array): { buf: ArrayBuffer; own: boolean } {
  const own = packed.buffer instanceof ArrayBuffer && packed.byteOffset === 0 &&
    packed.byteLength === packed.buffer.byteLength &&
    packed.byteLength > 0;
  if (own) return { buf: packed.buffer as ArrayBuffer, own };
  const buf = spare(packed.length);
  new Uint8Array(buf).set(packed);
  return { buf, own };
}

/**
 * Decompresses and hashes a block file (handed over, see packedBuffer) on a worker and, when the
 * result is `expect.size` bytes with checksum `expect.checksum`, writes it into the file or
 * device `target.path` at `target.offset` from that worker (synchronously: the worker is busy,
 * the event loop is not). Resolves to "direct" when it was written past the page cache (nothing
 * of it waits for writeback), "buffered" when written through it, or false when the block is not
 * what its checksum says. Rejects with TargetWriteError when the write fails, with an Error when the
 * block cannot be decoded. Call closeFile() once the last block of a target is done.
 */
export async function unpackBlockTo(
  packed: Uint8Array,
  opts: {
    algo: ChecksumAlgorithm;
    expect: { checksum: string; size: number };
    target: { path: string; offset: number };
  },
): Promise<"direct" | "buffered" | false> {
  const { buf, own } = packedBuffer(packed);
  const l = lane();
  fileLanes.add(l);
  const r = await l.call({
    op: "unpackTo",
    buf,
    len: packed.length,
    algo: ALGO[opts.algo],
    own,
    checksum: opts.expect.checksum,
    size: opts.expect.size,
    path: opts.target.path,
    offset: opts.target.offset,
  }, [buf]);
  if (r.error) {
    recycle(...r.bufs ?? []);
    throw r.stage === "write" ? new TargetWriteError(r.error) : new Error(r.error);
  }
  recycle(r.buf);
  return r.written === true && (r.direct ? "direct" : "buffered");
}

/** Lanes that may hold a restore target or backup source open. */
const fileLanes = new Set<Lane>();

/**
 * Closes the workers' handles on `path` (after unpackBlockTo or readSourceBlock); rejects if a
 * close fails.
 */
export async function closeFile(path: string): Promise<void> {
  for (const l of fileLanes) if (l.dead) fileLanes.delete(l); // its thread is gone
  const replies = await Promise.all(
    [...fileLanes].map((l) => l.call({ op: "close", path })),
  );
  const failed = replies.find((r) => r.error);
  if (failed) throw new TargetWriteError(failed.error);
}

/**
 * Decompresses a block file on a worker into `into` (which must own its whole ArrayBuffer; it
 * is transferred and returned as `data`). Resolves to the data, its full length and checksum.
 * `packed` is handed over (see packedBuffer).
 */
export async function unpackBlock(
  packed: Uint8Array,
  opts: { algo: ChecksumAlgorithm; into: Uint8Array },
): Promise<{ data: Uint8Array; length: number; checksum: string }> {
  const { buf, own } = packedBuffer(packed);
  const into = opts.into.buffer as ArrayBuffer;
  const r = await lane().call(
    { op: "unpack", buf, len: packed.length, into, algo: ALGO[opts.algo], own },
    [buf, into],
  );
  if (r.error) {
    recycle(...r.bufs ?? []);
    throw new Error(r.error);
  }
  recycle(r.buf);
  return { data: new Uint8Array(r.into!), length: r.length!, checksum: r.sum! };
}
