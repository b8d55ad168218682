/**
 * Extent maps of image files, from `filefrag -v` (the FIEMAP ioctl), cut into the backup
 * engine's 2 MiB blocks. Two files whose block maps to the same physical extents hold the same
 * bytes there (reflink copies share extents until one side is written); a block without data
 * extents in either file reads as zeros in both. Pure functions, no I/O.
 * @module
 */
import type { Mapping } from "../../mod.ts";

/** The backup engine's block size. */
export const BLOCK_SIZE = 2 * 1024 * 1024;
/**
 * The unit `filefrag -b` is asked to print in. 512 bytes divides every filesystem block size,
 * so the numbers are exact even on 1 KiB-block filesystems (4096 would round there).
 */
export const FILEFRAG_UNIT = 512;

/** One extent of a file, in bytes. */
export interface Extent {
  logical: number;
  physical: number;
  length: number;
  flags: string[];
}

/** Flags of extents whose physical location is not known (yet): never trust their offsets. */
const UNKNOWN_LOCATION = new Set(["unknown_loc", "delalloc", "inline", "data_inline", "encrypted"]);

const EXTENT_LINE =
  /^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+):\s*(?:(\d+):)?\s*([a-z_,]*)\s*$/;

/**
 * Parses `filefrag -v -b<unit>` output into extents in bytes. Resolves to undefined when the
 * output has no extent table (FIEMAP unsupported, or an unexpected format).
 */
export function parseFilefrag(text: string, unit = FILEFRAG_UNIT): Extent[] | undefined {
  const lines = text.split("\n");
  const header = lines.findIndex((l) => /^\s*ext:\s+logical_offset:/.test(l));
  if (header < 0) return undefined;
  const out: Extent[] = [];
  for (const line of lines.slice(header + 1)) {
    const m = EXTENT_LINE.exec(line);
    if (!m) continue;
    out.push({
      logical: Number(m[1]) * unit,
      physical: Number(m[3]) * unit,
      length: Number(m[5]) * unit,
      flags: m[7] ? m[7].split(",").filter(Boolean) : [],
    });
  }
  return out;
}

/** Marks a block key whose location is unknown: such a block never compares equal. */
export const UNKNOWN = "?";

/**
 * For every 2 MiB block of a file of `size` bytes that holds data, a key naming where that
 * data lives: its segments as `logical+physical+length`, adjacent ones merged. Unwritten
 * (preallocated) extents read as zeros and count as holes; extents with no known location make
 * the key contain UNKNOWN.
 */
export function blockMap(
  extents: Extent[],
  opts: { size: number; blockSize?: number },
): Map<number, string> {
  const blockSize = opts.blockSize ?? BLOCK_SIZE;
  const segs = new Map<number, Array<[number, number, number] | null>>();
  for (const e of extents) {
    if (e.flags.includes("unwritten") || e.length <= 0) continue;
    const unknown = e.flags.some((f) => UNKNOWN_LOCATION.has(f));
    const start = e.logical;
    const end = Math.min(e.logical + e.length, opts.size);
    for (let pos = start; pos < end;) {
      const block = Math.floor(pos / blockSize);
      const segEnd = Math.min(end, (block + 1) * blockSize);
      let list = segs.get(block);
      if (!list) segs.set(block, list = []);
      if (unknown) list.push(null);
      else {
        const phys = e.physical + (pos - e.logical);
        const last = list.at(-1);
        if (last && last[0] + last[2] === pos && last[1] + last[2] === phys) {
          last[2] += segEnd - pos;
        } else list.push([pos, phys, segEnd - pos]);
      }
      pos = segEnd;
    }
  }
  const out = new Map<number, string>();
  for (const [block, list] of segs) {
    out.set(block, list.map((s) => (s ? `${s[0]}+${s[1]}+${s[2]}` : UNKNOWN)).join(","));
  }
  return out;
}

/** What comparing two block maps found. */
export interface BlockDiff {
  /** Blocks that hold data in either file and do not map to the same extents in both. */
  differ: number[];
  /** Blocks that map to the same physical extents in both files: equal without reading. */
  shared: number;
}

/** The blocks of `a` and `b` (block maps of two files) that may differ, ascending. */
export function diffBlockMaps(a: Map<number, string>, b: Map<number, string>): BlockDiff {
  const differ: number[] = [];
  let shared = 0;
  const blocks = new Set([...a.keys(), ...b.keys()]);
  for (const block of blocks) {
    const ka = a.get(block);
    const kb = b.get(block);
    if (ka !== undefined && ka === kb && !ka.includes(UNKNOWN)) shared++;
    else differ.push(block);
  }
  differ.sort((x, y) => x - y);
  return { differ, shared };
}

/** Ascending block numbers merged into byte ranges. */
export function blocksToMappings(blocks: number[], blockSize = BLOCK_SIZE): Mapping[] {
  const out: Mapping[] = [];
  for (const block of blocks) {
    const offset = block * blockSize;
    const last = out.at(-1);
    if (last && last.offset + last.size === offset) last.size += blockSize;
    else out.push({ offset, size: blockSize });
  }
  return out;
}
