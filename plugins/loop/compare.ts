/**
 * The loop driver's snapshot comparison: which 2 MiB blocks of one snapshot image differ from
 * another. With reflinks, blocks whose extents are shared are equal and every other block with
 * data is reported without reading anything. Without reflinks (or extent maps) the answer is
 * "unknown": reading both images would cost more than the host's compare of one image with the
 * last backup's block map.
 * @module
 */
import { stat } from "node:fs/promises";
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
  /**
   * "full" (no base), "extents" (reflink: extent maps only) or "unknown" (no reflinks or no
   * extent maps: answered "unknown", the host compares checksums with the last backup's map).
   */
  method: "full" | "extents" | "unknown";
  /** Blocks of the snapshot. */
  blocks: number;
  /** Blocks reported. */
  changed: number;
  /** Blocks found equal because both files share their extents. */
  shared: number;
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
   * data when `b` is undefined), or "unknown".
   */
  async compare(
    a: { file: string; name: string },
    b: { file: string; name: string } | undefined,
    opts: { volume: string; signal?: AbortSignal },
  ): Promise<Mappings | "unknown"> {
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
        ms: Math.round(performance.now() - started),
      });
      return { mappings: blocksToMappings(list), blockSize: BLOCK_SIZE };
    }
    const sizeB = (await stat(b.file)).size;
    const blocks = Math.ceil(Math.max(sizeA, sizeB) / BLOCK_SIZE);
    const unknown = (): "unknown" => {
      log({
        method: "unknown",
        blocks,
        changed: 0,
        shared: 0,
        ms: Math.round(performance.now() - started),
      });
      return "unknown";
    };
    if (!this.#reflink()) return unknown();
    const [mapA, mapB] = [await this.#blockMap(a.file, sizeA), await this.#blockMap(b.file, sizeB)];
    if (!mapA || !mapB) return unknown();
    const { differ: changed, shared } = diffBlockMaps(mapA, mapB);
    log({
      method: "extents",
      blocks,
      changed: changed.length,
      shared,
      ms: Math.round(performance.now() - started),
    });
    return { mappings: blocksToMappings(changed), blockSize: BLOCK_SIZE };
  }
}
