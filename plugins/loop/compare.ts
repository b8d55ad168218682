/**
 * The loop driver's snapshot comparison: which 2 MiB blocks of one snapshot image differ from
 * another. With reflinks, blocks whose extents are shared are equal and every other block with
 * data is reported without reading anything; without reflinks the extent maps (FIEMAP) only rule
 * out holes, and the remaining blocks are read and compared.
 * @module
 */
import { Buffer } from "node:buffer";
import { open, stat } from "node:fs/promises";
import type { Logger, Mappings, PluginApi } from "../../mod.ts";
import {
  BLOCK_SIZE,
  blockMap,
  blocksToMappings,
  diffBlockMaps,
  FILEFRAG_UNIT,
  parseFilefrag,
} from "./extents.ts";

/** Long compares may take long: no short command timeout. */
const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;

/** What one comparison did (logged; tests read it). */
export interface CompareStats {
  /** "full" (no base), "extents" (reflink: extent maps only) or "read" (read-compared). */
  method: "full" | "extents" | "read";
  /** Blocks of the snapshot. */
  blocks: number;
  /** Blocks reported. */
  changed: number;
  /** Blocks found equal because both files share their extents. */
  shared: number;
  /** Data bytes read from the two images to compare. */
  bytesRead: number;
  ms: number;
}

/** Compares snapshot images of one driver instance. */
export class ImageComparer {
  #api: PluginApi;
  #log: Logger;
  #reflink: () => boolean;

  constructor(api: PluginApi, opts: { log: Logger; reflink: () => boolean }) {
    this.#api = api;
    this.#log = opts.log;
    this.#reflink = opts.reflink;
  }

  /** The block map of `file` from filefrag, or undefined when FIEMAP is not available. */
  async #blockMap(file: string, size: number): Promise<Map<number, string> | undefined> {
    try {
      const { stdout } = await this.#api.exec(
        "filefrag",
        ["-s", "-v", `-b${FILEFRAG_UNIT}`, file],
        { timeoutMs: LONG_COMMAND_TIMEOUT_MS },
      );
      const extents = parseFilefrag(stdout);
      if (extents) return blockMap(extents, { size });
      this.#log.warn(`No extent map of "${file}": unexpected filefrag output`);
    } catch (err) {
      this.#log.warn(`No extent map of "${file}": ${this.#api.errors.errorMessage(err)}`);
    }
    return undefined;
  }

  /**
   * The 2 MiB ranges of image `a.file` that differ from image `b.file` (every range holding
   * data when `b` is undefined).
   */
  async compare(
    a: { file: string; name: string },
    b: { file: string; name: string } | undefined,
    opts: { volume: string; signal?: AbortSignal },
  ): Promise<Mappings> {
    const started = performance.now();
    const sizeA = (await stat(a.file)).size;
    const log = (stats: CompareStats) => {
      this.#log.info(
        `Compared snapshot "${a.name}" of volume "${opts.volume}" with ${
          b ? `"${b.name}"` : "nothing (full)"
        }`,
        { volume: opts.volume, snapshot: a.name, base: b?.name ?? "", ...stats },
      );
    };
    if (!b) {
      const blocks = Math.ceil(sizeA / BLOCK_SIZE);
      const map = await this.#blockMap(a.file, sizeA);
      const list = map
        ? [...map.keys()].sort((x, y) => x - y)
        : Array.from({ length: blocks }, (_, i) => i);
      log({
        method: "full",
        blocks,
        changed: list.length,
        shared: 0,
        bytesRead: 0,
        ms: Math.round(performance.now() - started),
      });
      return { mappings: blocksToMappings(list), blockSize: BLOCK_SIZE };
    }
    const sizeB = (await stat(b.file)).size;
    const blocks = Math.ceil(Math.max(sizeA, sizeB) / BLOCK_SIZE);
    const [mapA, mapB] = [await this.#blockMap(a.file, sizeA), await this.#blockMap(b.file, sizeB)];
    let candidates: number[];
    let shared = 0;
    if (mapA && mapB) ({ differ: candidates, shared } = diffBlockMaps(mapA, mapB));
    else candidates = Array.from({ length: blocks }, (_, i) => i);
    let changed = candidates;
    let bytesRead = 0;
    const method = this.#reflink() && mapA && mapB ? "extents" : "read";
    if (method === "read") {
      ({ changed, bytesRead } = await this.#readCompare(
        { a: a.file, b: b.file, candidates },
        { mapA, mapB, signal: opts.signal },
      ));
    }
    log({
      method,
      blocks,
      changed: changed.length,
      shared,
      bytesRead,
      ms: Math.round(performance.now() - started),
    });
    return { mappings: blocksToMappings(changed), blockSize: BLOCK_SIZE };
  }

  /** The candidate blocks whose bytes differ; a side with no data extents there reads as zeros. */
  async #readCompare(
    files: { a: string; b: string; candidates: number[] },
    opts: { mapA?: Map<number, string>; mapB?: Map<number, string>; signal?: AbortSignal },
  ): Promise<{ changed: number[]; bytesRead: number }> {
    const changed: number[] = [];
    let bytesRead = 0;
    const fa = await open(files.a, "r");
    try {
      const fb = await open(files.b, "r");
      try {
        const bufA = new Uint8Array(BLOCK_SIZE);
        const bufB = new Uint8Array(BLOCK_SIZE);
        for (const block of files.candidates) {
          if (opts.signal?.aborted) {
            throw new this.#api.errors.CancelledError("Cancelled comparing snapshots");
          }
          const pos = block * BLOCK_SIZE;
          const hasA = !opts.mapA || opts.mapA.has(block);
          const hasB = !opts.mapB || opts.mapB.has(block);
          if (hasA) bytesRead += await readFull(fa, { buf: bufA, pos });
          if (hasB) bytesRead += await readFull(fb, { buf: bufB, pos });
          const same = hasA && hasB
            ? Buffer.from(bufA.buffer).equals(Buffer.from(bufB.buffer))
            : this.#api.util.isZero(hasA ? bufA : bufB);
          if (!same) changed.push(block);
        }
      } finally {
        await fb.close();
      }
    } finally {
      await fa.close();
    }
    return { changed, bytesRead };
  }
}

/** Fills `at.buf` from byte `at.pos` of `fh` (zeros past the end); resolves to the bytes read. */
async function readFull(
  fh: {
    read(buf: Uint8Array, off: number, len: number, pos: number): Promise<{ bytesRead: number }>;
  },
  at: { buf: Uint8Array; pos: number },
): Promise<number> {
  const { buf, pos } = at;
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  if (off < buf.length) buf.fill(0, off);
  return off;
}
