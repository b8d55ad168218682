/**
 * Device-mapper plumbing: device names, table and status parsing, thin_delta's XML, and a thin
 * wrapper over `dmsetup` (every command through the host's exec, bounded by --cmd-timeout).
 *
 * Device names: the pool is `<dm.thinpoolname>` (Convoy's name), a volume is
 * `convoy-<pool>-<volume>` and a snapshot activated for a backup is
 * `convoy-<pool>-<volume>@<snapshot>`. The prefix keeps volume names from clashing with other
 * device-mapper devices of the host (Convoy used the bare volume name); "@" cannot occur in a
 * volume name, so a snapshot device never clashes with a volume device. Names longer than
 * device-mapper's 127 characters are shortened with a hash.
 * @module
 */
import { createHash } from "node:crypto";
import type { Exec, Logger, Mapping, PluginApi } from "../../mod.ts";

/** The backup engine's block size: every mapping is aligned to it. */
export const BACKUP_BLOCK_SIZE = 2 * 1024 * 1024;
/** The largest thin device id (24 bits). */
export const MAX_DEV_ID = 0xffffff;
/** device-mapper's name limit (DM_NAME_LEN - 1). */
export const MAX_NAME_LENGTH = 127;
/** The pool's low-water mark in blocks and its features, as Convoy created it. */
export const LOW_WATER_MARK = 32768;
export const POOL_FEATURES = ["skip_block_zeroing"];

function shorten(name: string): string {
  if (name.length <= MAX_NAME_LENGTH) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
  return `${name.slice(0, MAX_NAME_LENGTH - 17)}~${hash}`;
}

/** The prefix of every device this driver makes on `pool`. */
export function devicePrefix(pool: string): string {
  return `convoy-${pool}-`;
}

/** The device-mapper name of a volume. */
export function volumeDeviceName(pool: string, volume: string): string {
  return shorten(`${devicePrefix(pool)}${volume}`);
}

/** The device-mapper name of a snapshot activated (read-only) for a backup. */
export function snapshotDeviceName(pool: string, volume: string, snapshot: string): string {
  const name = `${devicePrefix(pool)}${volume}@${snapshot}`;
  if (name.length <= MAX_NAME_LENGTH) return name;
  const hash = createHash("sha256").update(name).digest("hex").slice(0, 16);
  return `${devicePrefix(pool)}${volume.slice(0, 40)}@~${hash}`;
}

/** True for a snapshot device name of `pool` (a leftover after a crash during a backup). */
export function isSnapshotDeviceName(pool: string, name: string): boolean {
  return name.startsWith(devicePrefix(pool)) && name.includes("@");
}

/** `major:minor` of a device number (`stat().rdev`), as dmsetup tables and mountinfo show it. */
export function devNumber(rdev: number): string {
  const major = (Math.floor(rdev / 256) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  return `${major >>> 0}:${minor >>> 0}`;
}

/** Least common multiple of two positive integers. */
export function lcm(a: number, b: number): number {
  let x = a;
  let y = b;
  while (y) [x, y] = [y, x % y];
  return (a / x) * b;
}

/** Volume sizes are multiples of the pool block and of the backup block (2 MiB). */
export function sizeAlignment(blockSectors: number): number {
  return lcm(blockSectors * 512, BACKUP_BLOCK_SIZE);
}

/** `bytes` rounded up to a multiple of `alignment`. */
export function roundUp(bytes: number, alignment: number): number {
  return Math.ceil(bytes / alignment) * alignment;
}

/** One line of a table: `<start> <length> <type> <args...>`. */
export interface TableLine {
  start: number;
  length: number;
  type: string;
  args: string[];
}

/** Parses a one-line table as dmsetup prints it; undefined for anything else. */
export function parseTable(text: string): TableLine | undefined {
  const lines = text.split("\n").map((l) => l.trim()).filter(Boolean);
  if (lines.length !== 1) return undefined;
  const [start, length, type, ...args] = lines[0].split(/\s+/);
  if (!type || !/^\d+$/.test(start) || !/^\d+$/.test(length)) return undefined;
  return { start: Number(start), length: Number(length), type, args };
}

/** The pool's table: `0 <sectors> thin-pool <meta> <data> <block> <low water> <n> <features>`. */
export function poolTable(
  p: { sectors: number; metadata: string; data: string; blockSectors: number },
): string {
  return `0 ${p.sectors} thin-pool ${p.metadata} ${p.data} ${p.blockSectors} ${LOW_WATER_MARK} ` +
    `${POOL_FEATURES.length} ${POOL_FEATURES.join(" ")}`;
}

/** A thin device's table: `0 <sectors> thin <pool device> <dev id>`. */
export function thinTable(p: { sectors: number; pool: string; devID: number }): string {
  return `0 ${p.sectors} thin ${p.pool} ${p.devID}`;
}

/** What differs between a live pool table and the one expected ("" when they agree). */
export function comparePoolTable(
  live: TableLine | undefined,
  want: { metadata: string; data: string; blockSectors: number },
): string {
  if (!live) return "its table is not a single target";
  if (live.type !== "thin-pool") return `it is a "${live.type}" device, not a thin-pool`;
  const [meta, data, block] = live.args;
  const problems: string[] = [];
  if (meta !== want.metadata) problems.push(`metadata device ${meta}, not ${want.metadata}`);
  if (data !== want.data) problems.push(`data device ${data}, not ${want.data}`);
  if (Number(block) !== want.blockSectors) {
    problems.push(`block size ${block} sectors, not ${want.blockSectors}`);
  }
  return problems.join(", ");
}

/** What differs between a live thin table and the expected one ("" when they agree). */
export function compareThinTable(
  live: TableLine | undefined,
  want: { sectors: number; pool: string; devID: number },
): string {
  if (!live) return "its table is not a single target";
  if (live.type !== "thin") return `it is a "${live.type}" device, not a thin device`;
  const [pool, id] = live.args;
  const problems: string[] = [];
  if (pool !== want.pool) problems.push(`pool ${pool}, not ${want.pool}`);
  if (Number(id) !== want.devID) problems.push(`thin id ${id}, not ${want.devID}`);
  if (live.length !== want.sectors) problems.push(`${live.length} sectors, not ${want.sectors}`);
  return problems.join(", ");
}

/** `dmsetup status` of a thin-pool. */
export interface PoolStatus {
  transactionID: number;
  usedMetadataBlocks: number;
  totalMetadataBlocks: number;
  usedDataBlocks: number;
  totalDataBlocks: number;
  /** The held metadata root ("-" when no metadata snapshot is reserved). */
  heldRoot: string;
  /** "rw", "ro", "out_of_data_space", or "Fail"/"Error" when the pool failed. */
  mode: string;
  needsCheck: boolean;
}

/** Parses a thin-pool status line; undefined when it is not one (e.g. "Fail"). */
export function parsePoolStatus(text: string): PoolStatus | undefined {
  const t = parseTable(text);
  if (!t || t.type !== "thin-pool") return undefined;
  const [tid, meta, data, held, mode, ...rest] = t.args;
  const m = /^(\d+)\/(\d+)$/.exec(meta ?? "");
  const d = /^(\d+)\/(\d+)$/.exec(data ?? "");
  if (!m || !d || !/^\d+$/.test(tid)) {
    return {
      transactionID: 0,
      usedMetadataBlocks: 0,
      totalMetadataBlocks: 0,
      usedDataBlocks: 0,
      totalDataBlocks: 0,
      heldRoot: "-",
      mode: t.args[0] ?? "Fail",
      needsCheck: false,
    };
  }
  return {
    transactionID: Number(tid),
    usedMetadataBlocks: Number(m[1]),
    totalMetadataBlocks: Number(m[2]),
    usedDataBlocks: Number(d[1]),
    totalDataBlocks: Number(d[2]),
    heldRoot: held ?? "-",
    mode: mode ?? "",
    needsCheck: rest.includes("needs_check"),
  };
}

/** One range of thin_delta's output, in pool blocks. */
export interface DeltaRange {
  kind: "same" | "different" | "left_only" | "right_only";
  begin: number;
  length: number;
}

/** thin_delta's output. */
export interface ThinDelta {
  /** The pool block size in sectors, from the superblock element. */
  blockSectors?: number;
  ranges: DeltaRange[];
}

/**
 * Parses `thin_delta` XML: `<superblock … data_block_size="N"><diff left= right=>` with
 * `<same|different|left_only|right_only begin="B" length="L"/>` (pool blocks). Throws on output
 * that is not complete thin_delta XML.
 */
export function parseThinDelta(xml: string): ThinDelta {
  if (!/<superblock\b/.test(xml) || !/<\/superblock>/.test(xml)) {
    throw new Error(
      `unexpected thin_delta output: ${JSON.stringify(xml.trim().slice(0, 200) || "(empty)")}`,
    );
  }
  const bs = /<superblock\b[^>]*\bdata_block_size="(\d+)"/.exec(xml);
  const ranges: DeltaRange[] = [];
  const re = /<(same|different|left_only|right_only)\b([^>]*)\/>/g;
  for (const m of xml.matchAll(re)) {
    const begin = /\bbegin="(\d+)"/.exec(m[2]);
    const length = /\blength="(\d+)"/.exec(m[2]);
    if (!begin || !length) throw new Error(`unexpected thin_delta range: ${m[0]}`);
    ranges.push({
      kind: m[1] as DeltaRange["kind"],
      begin: Number(begin[1]),
      length: Number(length[1]),
    });
  }
  return { blockSectors: bs ? Number(bs[1]) : undefined, ranges };
}

/**
 * Byte ranges of the kept thin_delta ranges, rounded out to 2 MiB backup blocks (whatever the
 * pool block size), merged, and cut at `limit` bytes (the volume size).
 */
export function deltaToMappings(
  ranges: DeltaRange[],
  opts: { kinds: ReadonlyArray<DeltaRange["kind"]>; blockBytes: number; limit: number },
): Mapping[] {
  const B = BACKUP_BLOCK_SIZE;
  const spans: Array<[number, number]> = [];
  for (const r of ranges) {
    if (!opts.kinds.includes(r.kind) || r.length <= 0) continue;
    const start = Math.floor((r.begin * opts.blockBytes) / B) * B;
    const end = Math.min(
      Math.ceil(((r.begin + r.length) * opts.blockBytes) / B) * B,
      roundUp(opts.limit, B),
    );
    if (end > start) spans.push([start, end]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  const out: Mapping[] = [];
  for (const [start, end] of spans) {
    const last = out.at(-1);
    if (last && start <= last.offset + last.size) {
      last.size = Math.max(last.size, end - last.offset);
    } else out.push({ offset: start, size: end - start });
  }
  return out;
}

/** A failed command whose message matches `re`. */
export function failedWith(err: unknown, re: RegExp): boolean {
  return re.test(err instanceof Error ? err.message : String(err));
}

/** device-mapper says the device does not exist. */
export const NO_DEVICE = /No such device or address|does not exist|No such device\b/i;
/** device-mapper says the device is open. */
export const BUSY = /Device or resource busy/i;
/** The pool says the thin id does not exist. */
export const NO_DATA = /No data available/i;
/** The pool says the thin id is taken (or a metadata snapshot is reserved already). */
export const EXISTS = /File exists/i;

/** `dmsetup` through the host's exec. */
export class DmSetup {
  #exec: Exec;
  #api: PluginApi;
  #log: Logger;

  constructor(api: PluginApi, log: Logger) {
    this.#api = api;
    this.#exec = api.exec;
    this.#log = log;
  }

  async run(args: string[]): Promise<string> {
    return (await this.#exec("dmsetup", args)).stdout;
  }

  /** The live table of `name`, or undefined when no such device exists. */
  async table(name: string): Promise<string | undefined> {
    try {
      return await this.run(["table", name]);
    } catch (err) {
      if (failedWith(err, NO_DEVICE)) return undefined;
      throw err;
    }
  }

  /** The status line of `name`, or undefined when no such device exists. */
  async status(name: string): Promise<string | undefined> {
    try {
      return await this.run(["status", name]);
    } catch (err) {
      if (failedWith(err, NO_DEVICE)) return undefined;
      throw err;
    }
  }

  async create(name: string, table: string, opts: { readonly?: boolean } = {}): Promise<void> {
    await this.run(["create", name, ...(opts.readonly ? ["--readonly"] : []), "--table", table]);
  }

  /**
   * Removes `name`; a missing device is fine. While it is busy (a closing file handle, a lazy
   * unmount), retries for up to `attempts` × 100 ms, then throws a ConflictError.
   */
  async remove(name: string, attempts = 50): Promise<void> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.run(["remove", name]);
        return;
      } catch (err) {
        if (failedWith(err, NO_DEVICE)) return;
        if (!failedWith(err, BUSY)) throw err;
        if (attempt >= attempts) {
          throw new this.#api.errors.ConflictError(
            `device-mapper device "${name}" is busy (open or mounted): ${(err as Error).message}`,
            { cause: err },
          );
        }
        if (attempt === 1) this.#log.debug(`Device "${name}" is busy; retrying its removal`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async message(pool: string, msg: string): Promise<void> {
    await this.run(["message", pool, "0", msg]);
  }

  async suspend(name: string): Promise<void> {
    await this.run(["suspend", name]);
  }

  async resume(name: string): Promise<void> {
    await this.run(["resume", name]);
  }

  /** True when `name` is suspended (its I/O is held until a resume). */
  async suspended(name: string): Promise<boolean> {
    const attr = await this.run(["info", "-c", "--noheadings", "-o", "attr", name]);
    return attr.trim()[2] === "s";
  }

  /** The names of every device-mapper device. */
  async list(): Promise<string[]> {
    const out = await this.run(["ls"]);
    if (/No devices found/i.test(out)) return [];
    return out.split("\n").map((l) => l.split("\t")[0].trim()).filter(Boolean);
  }
}
