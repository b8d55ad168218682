/**
 * Block hashing and (de)compression on worker threads, so they use every core and never stall
 * the daemon's event loop. Workers are started on first use, shared, and do not keep the
 * process alive. The worker (codec_worker.ts) starts from its function's source text, so the
 * same code runs under deno run, Node, and the single binaries.
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
import { codecWorkerSource, type WorkerCallBody, type WorkerReply } from "./codec_worker.ts";

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

type Reply = WorkerReply;

let source: string | undefined;
/** The worker's script (built once). */
function workerSource(): string {
  return source ??= codecWorkerSource({
    blockSize: BLOCK_SIZE,
    zstdLevel: ZSTD_LEVEL,
    chunkSize: SPARE_SIZE,
  });
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
    this.#worker = new Worker(workerSource(), { eval: true });
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
  call(msg: WorkerCallBody, transfer: ArrayBuffer[] = []): Promise<Reply> {
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
 * Decompresses and hashes a block file on a worker, keeping nothing: resolves to its checksum and
 * length (`size` + 1 when it decodes to more than `size` bytes). `packed` is handed over (see
 * packedBuffer).
 */
export async function checkBlock(
  packed: Uint8Array,
  opts: { algo: ChecksumAlgorithm; size: number },
): Promise<{ length: number; checksum: string }> {
  const { buf, own } = packedBuffer(packed);
  const r = await lane().call(
    { op: "check", buf, len: packed.length, size: opts.size, algo: ALGO[opts.algo], own },
    [buf],
  );
  if (r.error) {
    recycle(...r.bufs ?? []);
    throw new Error(r.error);
  }
  recycle(r.buf);
  return { length: r.length!, checksum: r.sum! };
}
