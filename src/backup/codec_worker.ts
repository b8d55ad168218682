/**
 * The codec worker: hashing, (de)compression and block I/O on a worker thread (see
 * codec_pool.ts, which starts and talks to it).
 *
 * `codecWorker` runs from its own source text: codec_pool.ts starts each worker with
 * `new Worker(codecWorkerSource(...), { eval: true })`, and `String(codecWorker)` is JavaScript
 * however the host runs (deno run, tsc's npm build, the bun binary: types are gone by then). So
 * the function must be self-contained: it may use its parameters, its own locals and standard
 * globals, never an import or anything else of this module (only types, which are erased).
 *
 * Every buffer that comes in is sent back, so the caller reuses it: no per-block allocation of
 * transferred memory, which the garbage collector would see late.
 * @module
 */
import type { Buffer as NodeBuffer } from "node:buffer";
import type * as NodeCrypto from "node:crypto";
import type * as NodeFs from "node:fs";
import type { MessagePort } from "node:worker_threads";

/** The zstd stream handle's internals that zstdInto() drives (Node's and Deno's zlib alike). */
interface ZstdStream {
  _handle: {
    reset(): void;
    writeSync(
      flush: number,
      input: Uint8Array,
      inOff: number,
      inLen: number,
      out: Uint8Array,
      outOff: number,
      outLen: number,
    ): void;
  };
  /** [output bytes left, input bytes left] after writeSync. */
  _writeState: Uint32Array;
}

/** Options of node:zlib's one-shot calls, as the worker uses them. */
interface ZlibOptions {
  chunkSize?: number;
  level?: number;
  params?: Record<number, number>;
}

/** The part of node:zlib the worker uses; zstd is missing on Node 20. */
export interface WorkerZlib {
  constants: { ZSTD_e_end: number; ZSTD_c_compressionLevel: number };
  gzipSync(data: Uint8Array, opts: ZlibOptions): Uint8Array;
  gunzipSync(data: Uint8Array, opts: ZlibOptions): Uint8Array;
  zstdCompressSync?(data: Uint8Array, opts?: ZlibOptions): Uint8Array;
  zstdDecompressSync?(data: Uint8Array, opts: ZlibOptions): Uint8Array;
  createZstdDecompress?(): ZstdStream;
}

/** What the worker gets from its host: node: modules (required in the worker) and constants. */
export interface WorkerDeps {
  parentPort: MessagePort;
  zlib: WorkerZlib;
  crypto: typeof NodeCrypto;
  fs: typeof NodeFs;
  Buffer: typeof NodeBuffer;
}

/** The constants of codec_pool.ts the worker needs. */
export interface WorkerConsts {
  /** Largest block (staging buffer size, before slack). */
  blockSize: number;
  /** zstd level of new blocks. */
  zstdLevel: number;
  /** Output chunk of zlib calls: one chunk per call, so free() can release the result. */
  chunkSize: number;
}

/** A call to the worker (each but "retire" is answered by a WorkerReply with its `id`). */
export type WorkerCall =
  /** Hashes `buf` and holds it (as `id`) for "pack" or "drop". */
  | { op: "hash"; id: number; buf: ArrayBuffer; algo: string }
  /** Reads `length` bytes of `path` at `offset` into `buf`; all zeros: sent back, else "hash". */
  | {
    op: "readHash";
    id: number;
    buf: ArrayBuffer;
    algo: string;
    path: string;
    offset: number;
    length: number;
  }
  /** Compresses held block `hold` into `out`; sends back both. */
  | { op: "pack"; id: number; hold: number; compression: string; out: ArrayBuffer }
  /** Sends back held block `hold`. */
  | { op: "drop"; id: number; hold: number }
  /** Decodes and hashes `len` bytes of `buf` (freed here when `own`), keeping nothing. */
  | {
    op: "check";
    id: number;
    buf: ArrayBuffer;
    len: number;
    size: number;
    algo: string;
    own: boolean;
  }
  /** Decodes `buf`, and writes it to `path` at `offset` if it is `size` bytes with `checksum`. */
  | {
    op: "unpackTo";
    id: number;
    buf: ArrayBuffer;
    len: number;
    algo: string;
    own: boolean;
    checksum: string;
    size: number;
    path: string;
    offset: number;
  }
  /** Closes this worker's handles on `path`. */
  | { op: "close"; id: number; path: string }
  /** Closes every handle and answers `{ retired: true }`; the host then terminates the worker. */
  | { op: "retire"; id?: undefined };

/** A WorkerCall without its `id` (the pool adds it). */
export type WorkerCallBody = WorkerCall extends infer C ? C extends unknown ? Omit<C, "id"> : never
  : never;

/** The worker's answer to a WorkerCall. */
export interface WorkerReply {
  id: number;
  retired?: boolean;
  sum?: string;
  out?: ArrayBuffer;
  len?: number;
  buf?: ArrayBuffer;
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

/** An open file of the worker; `at`: undefined for buffered I/O, else the staging offset (-1: not found yet). */
interface OpenFile {
  fd: number;
  at: number | undefined;
}

/** The worker's main: answers WorkerCalls on `deps.parentPort`. Self-contained (see the module doc). */
export function codecWorker(deps: WorkerDeps, consts: WorkerConsts): void {
  const { parentPort, zlib, crypto, fs, Buffer } = deps;
  const held = new Map<number, Uint8Array>();
  // Restore targets this worker writes to and backup sources it reads from, by path: opened on
  // first use, closed by "close". I/O bypasses the page cache (O_DIRECT) where the file allows
  // it: no copy through the cache, no writeback later, no cache evicted for a one-off pass, no
  // lock contention between workers. O_DIRECT needs an aligned buffer, and JavaScript cannot see
  // addresses: a block goes through a staging buffer at the first offset the kernel accepts
  // (EINVAL otherwise), which then serves every later block of that file.
  const targets = new Map<string, OpenFile>();
  const sources = new Map<string, OpenFile>();
  const STAGE_SLACK = 8192;
  let staging: Uint8Array | undefined;
  const stagingBuffer = () => (staging ??= new Uint8Array(consts.blockSize + STAGE_SLACK));
  function openDirect(path: string, flags: number, fallback: string): OpenFile {
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
  const openTarget = (path: string) => openDirect(path, fs.constants.O_RDWR, "r+");
  const openSource = (path: string) => openDirect(path, fs.constants.O_RDONLY, "r");
  // Runs io(k) at the staging offset that file t accepts, found on its first block.
  // A read of a hole is accepted at any offset (ext4 zero-fills it without checking alignment),
  // so an offset that a later block refuses is looked for again.
  function staged<T>(t: OpenFile, io: (k: number) => T): T {
    if (t.at !== undefined && t.at >= 0) {
      try {
        return io(t.at);
      } catch (err) {
        if ((err as { code?: string }).code !== "EINVAL") throw err;
        t.at = -1;
      }
    }
    for (let k = 0; k < STAGE_SLACK; k += 16) {
      try {
        const r = io(k);
        t.at = k;
        return r;
      } catch (err) {
        if ((err as { code?: string }).code !== "EINVAL") throw err;
      }
    }
    throw new Error("no buffer alignment accepted for direct I/O");
  }
  function readUpTo(fd: number, buf: Uint8Array, from: number, length: number, position: number) {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, buf, from + done, length - done, position + done);
      if (n === 0) break;
      done += n;
    }
    return done;
  }
  // Fills data with length bytes of source t from position, then zeros (past the end of t too).
  function readBlock(t: OpenFile, data: Uint8Array, length: number, position: number): void {
    let n: number;
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
  function isZero(data: Uint8Array): boolean {
    const words = new BigUint64Array(data.buffer, data.byteOffset, data.byteLength >>> 3);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0n) return false;
    for (let i = words.length * 8; i < data.length; i++) if (data[i] !== 0) return false;
    return true;
  }
  function writeAll(fd: number, buf: Uint8Array, from: number, length: number, position: number) {
    for (let done = 0; done < length;) {
      done += fs.writeSync(fd, buf, from + done, length - done, position + done);
    }
  }
  function writeBlock(t: OpenFile, raw: Uint8Array, position: number): void {
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
  // A zstd block decoded straight into the staging buffer, at the offset its target writes
  // from: no 2 MiB result to allocate, fault in, copy and free per block. This uses zlib's
  // stream handle (Node's and Deno's alike), so it is checked once on a known frame; where it
  // is missing or wrong, unpack() serves. Returns the decoded bytes (at most max + 1), or
  // undefined.
  const isZstd = (buf: Uint8Array) =>
    buf[0] === 0x28 && buf[1] === 0xb5 && buf[2] === 0x2f && buf[3] === 0xfd;
  let zstdHandle: ZstdStream | null | undefined; // undefined: not checked yet; null: not usable
  function zstdStreamHandle(): ZstdStream | null {
    try {
      const d = zlib.createZstdDecompress!();
      const frame = zlib.zstdCompressSync!(Buffer.from("convoy"));
      const probe = new Uint8Array(64);
      d._handle.reset();
      d._handle.writeSync(zlib.constants.ZSTD_e_end, frame, 0, frame.length, probe, 3, 60);
      const ok = 60 - d._writeState[0] === 6 &&
        Buffer.from(probe.subarray(3, 9)).toString() === "convoy";
      return ok ? d : null;
    } catch {
      return null; // no zstd stream handle here
    }
  }
  function zstdInto(
    src: Uint8Array,
    out: Uint8Array,
    at: number,
    max: number,
  ): Uint8Array | undefined {
    if (zstdHandle === undefined) zstdHandle = zstdStreamHandle();
    if (zstdHandle === null || !isZstd(src)) return undefined;
    const room = Math.min(max + 1, out.length - at);
    const handle: ZstdStream = zstdHandle;
    try {
      handle._handle.reset();
      handle._handle.writeSync(zlib.constants.ZSTD_e_end, src, 0, src.length, out, at, room);
    } catch (err) {
      zstdHandle = undefined; // a fresh handle for the next block
      throw err;
    }
    return out.subarray(at, at + room - handle._writeState[0]);
  }
  const level = zlib.constants.ZSTD_c_compressionLevel;
  // One output chunk per call, so zlib's result is a single buffer of its own that free() releases.
  const chunkSize = consts.chunkSize;
  const digest = (algo: string, data: Uint8Array) =>
    crypto.createHash(algo).update(data).digest("hex").slice(0, 64);
  // Releases the memory of a zlib result now: detaching an ArrayBuffer frees its backing store,
  // where the garbage collector would free it only much later. Only for a buffer the result owns.
  const free = (u8: Uint8Array) => {
    const ab = u8.buffer as ArrayBuffer & { transfer?: (n: number) => unknown };
    if (u8.byteOffset !== 0 || ab.byteLength < 65536 || typeof ab.transfer !== "function") return;
    try {
      ab.transfer(0);
    } catch {
      // not detachable: the garbage collector will free it
    }
  };
  function unpack(buf: Uint8Array): Uint8Array {
    if (buf[0] === 0x1f && buf[1] === 0x8b) return zlib.gunzipSync(buf, { chunkSize });
    if (isZstd(buf)) {
      if (!zlib.zstdDecompressSync) throw new Error("this runtime has no zstd");
      return zlib.zstdDecompressSync(buf, { chunkSize });
    }
    throw new Error("unknown block compression (neither gzip nor zstd)");
  }
  const reply = (r: WorkerReply, transfer: ArrayBuffer[] = []) =>
    parentPort.postMessage(r, transfer);

  parentPort.on("message", (m: WorkerCall) => {
    const back: ArrayBuffer[] = [];
    let phase = "decode";
    try {
      if (m.op === "hash") {
        const data = new Uint8Array(m.buf);
        held.set(m.id, data);
        reply({ id: m.id, sum: digest(m.algo, data) });
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
          reply({ id: m.id, zero: true, buf: m.buf }, [m.buf]);
        } else {
          held.set(m.id, data);
          reply({ id: m.id, sum: digest(m.algo, data) });
        }
      } else if (m.op === "pack") {
        const data = held.get(m.hold)!;
        held.delete(m.hold);
        const buf = data.buffer as ArrayBuffer;
        back.push(buf, m.out);
        const z = m.compression === "zstd"
          ? zlib.zstdCompressSync!(data, { params: { [level]: consts.zstdLevel }, chunkSize })
          : zlib.gzipSync(data, { level: 1, chunkSize });
        const len = z.length;
        let out = m.out;
        if (len <= out.byteLength) {
          new Uint8Array(out).set(z);
        } else {
          out = new Uint8Array(z).buffer; // cannot happen for a block; the caller's buffer is dropped
        }
        free(z);
        reply({ id: m.id, out, len, buf }, [out, buf]);
      } else if (m.op === "drop") {
        const buf = held.get(m.hold)!.buffer as ArrayBuffer;
        held.delete(m.hold);
        reply({ id: m.id, buf }, [buf]);
      } else if (m.op === "check") {
        // Decoded (into the staging buffer where it can) and hashed; nothing is sent back but the
        // checksum and length.
        if (!m.own) back.push(m.buf);
        const src = new Uint8Array(m.buf, 0, m.len);
        const inPlace = zstdInto(src, stagingBuffer(), 0, m.size);
        const raw = inPlace ?? unpack(src);
        if (m.own) free(new Uint8Array(m.buf));
        const sum = digest(m.algo, raw);
        const length = raw.length;
        if (!inPlace) free(raw);
        reply({ id: m.id, sum, length, buf: m.own ? undefined : m.buf }, back);
      } else if (m.op === "unpackTo") {
        // Decoded, verified and written here: the block never travels back to the main thread.
        if (!m.own) back.push(m.buf);
        const src = new Uint8Array(m.buf, 0, m.len);
        const at = targets.get(m.path)?.at;
        const inPlace = zstdInto(src, stagingBuffer(), at !== undefined && at > 0 ? at : 0, m.size);
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
        reply({ id: m.id, written, direct, buf: m.own ? undefined : m.buf }, back);
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
        reply({ id: m.id });
      }
    } catch (err) {
      const hold = "hold" in m ? m.hold : undefined;
      if (hold !== undefined && held.has(hold)) back.push(held.get(hold)!.buffer as ArrayBuffer);
      if (hold !== undefined) held.delete(hold);
      const error = String((err as Error | undefined)?.message || err);
      reply({ id: m.id!, error, stage: phase, bufs: back }, back);
    }
  });
}

/**
 * The script a worker runs (`new Worker(source, { eval: true })`, CommonJS): codecWorker's own
 * text, called with the node: modules it needs and `consts`.
 */
export function codecWorkerSource(consts: WorkerConsts): string {
  return `(${String(codecWorker)})({
  parentPort: require("node:worker_threads").parentPort,
  zlib: require("node:zlib"),
  crypto: require("node:crypto"),
  fs: require("node:fs"),
  Buffer: require("node:buffer").Buffer,
}, ${JSON.stringify(consts)});\n`;
}
