/**
 * Convoy's delta-block backups: a volume is cut into 2 MiB blocks, each stored once per volume
 * under its checksum; a backup record maps offsets to checksums. Only the blocks a driver
 * reports changed since the volume's last backup are read; when it cannot say ("unknown"), every
 * allocated block is read once and only those whose checksum the last backup's map lacks are
 * stored. All-zero blocks are not stored.
 * Order of writes: blocks, then the backup record, then volume.cfg — a backup killed midway is
 * never listed, and a re-run reuses the blocks it had uploaded once it has checked them (a
 * killed upload may have left a truncated object). A backup that fails or is cancelled removes
 * the blocks it uploaded (see discardUploads), and each backup sweeps the volume's stale
 * temporary objects (see sweepStaleTemps).
 * @module
 */
import { open, stat } from "node:fs/promises";
import {
  BackendError,
  errorMessage,
  InvalidArgumentError,
  isErrorCode,
  NotFoundError,
} from "../api/errors.ts";
import type { DeltaBlockOperations, Mapping, Progress } from "../api/driver.ts";
import type { DeltaBackupOptions, VerifyReport } from "../api/plugin.ts";
import { sweepQuietly } from "../store/sweep.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { BackgroundSync } from "../util/background_sync.ts";
import { pool } from "../util/pool.ts";
import { generateName } from "../util/names.ts";
import { rubyDate } from "../util/time.ts";
import {
  checkBackupRecord,
  listBackupNames,
  loadBackupRecord,
  loadVolumeRecord,
  saveBackupRecord,
  saveVolumeRecord,
} from "./catalog.ts";
import {
  BLOCK_SIZE,
  type ChecksumAlgorithm,
  type Compression,
  defaultCodec,
  isZero,
} from "./codec.ts";
import {
  checkBlock,
  closeFile,
  freeBuffers,
  hashBlock,
  type ReadBlock,
  readSourceBlock,
  TargetWriteError,
  unpackBlockTo,
} from "./codec_pool.ts";
import { backupConfigPath, blockPath, volumeDir } from "./layout.ts";
import { clearLeftovers, referencedBlocks, removeBlocks, sweepUnreferenced } from "./gc.ts";
import {
  describeLease,
  leaseStates,
  liveLeases,
  noteSweepNeeded,
  sweepNotes,
  takeBackupLease,
  takeLease,
} from "./leases.ts";
import {
  type BackupRecord,
  type BlockMapping,
  recordChecksumProblem,
  RecordParseError,
  type VolumeRecord,
} from "./records.ts";

/** Blocks in flight at once: bounds memory to about this many × 2 × 2 MiB. */
export const DEFAULT_CONCURRENCY = 8;

/**
 * A restore datasyncs in the background every this many bytes written through the page cache
 * (BackgroundSync). Direct writes leave nothing to write back, and a datasync meanwhile would only
 * stall them behind a log and cache flush (measured: twice the write time per block).
 */
const RESTORE_SYNC_EVERY = 64 * 1024 * 1024;

/** Our additions to volume.cfg (Convoy ignores unknown fields). */
interface VolumeExtra {
  BlockCompression?: Compression;
  ChecksumAlgorithm?: ChecksumAlgorithm;
}
/** Our additions to backup_<name>.cfg. */
interface BackupExtra {
  VolumeUUID?: string;
  VolumeSize?: number;
  VolumeCreatedAt?: string;
  ChecksumAlgorithm?: ChecksumAlgorithm;
}

function checksumOf(v: VolumeRecord | BackupRecord): ChecksumAlgorithm {
  return (v as VolumeExtra).ChecksumAlgorithm === "sha256" ? "sha256" : "sha512";
}

/** 2 MiB block offsets covering `mappings`, sorted and unique. */
export function blockOffsets(mappings: Mapping[], limit: number): number[] {
  const set = new Set<number>();
  for (const m of mappings) {
    if (m.size <= 0) continue;
    const first = Math.floor(m.offset / BLOCK_SIZE) * BLOCK_SIZE;
    for (let off = first; off < m.offset + m.size && off < limit; off += BLOCK_SIZE) set.add(off);
  }
  return [...set].sort((a, b) => a - b);
}

/**
 * The complete block map of a new backup: the base map, overridden by the blocks read now, minus
 * the offsets that are zero now (they restore as zeros from a fresh target).
 */
export function mergeBlocks(
  base: BlockMapping[],
  changed: BlockMapping[],
  zeroed: number[],
): BlockMapping[] {
  const map = new Map<number, string>(base.map((b) => [b.Offset, b.BlockChecksum]));
  for (const b of changed) map.set(b.Offset, b.BlockChecksum);
  for (const z of zeroed) map.delete(z);
  return [...map].sort((a, b) => a[0] - b[0]).map(([Offset, BlockChecksum]) => ({
    Offset,
    BlockChecksum,
  }));
}

/** Picks the base of an incremental backup: the newest earlier backup of the same volume identity. */
async function findBase(
  store: ObjectStore,
  opts: { volume: DeltaBackupOptions["volume"]; record?: VolumeRecord; log: Logger },
): Promise<BackupRecord | undefined> {
  const { volume, record } = opts;
  if (!record) return undefined;
  const sameVolume = (b: BackupRecord) => {
    if (recordChecksumProblem(b)) return false; // never build on an altered block map
    const uuid = (b as BackupExtra).VolumeUUID;
    if (volume.uuid && uuid) return uuid === volume.uuid;
    // Records without an identity (Convoy's): trust them only if volume.cfg describes this volume.
    return !uuid && record.CreatedTime === volume.createdTime && record.Driver === volume.driver;
  };
  const last = record.LastBackupName
    ? await loadBackupRecord(store, { volume: volume.name, backup: record.LastBackupName }).catch(
      () => undefined,
    )
    : undefined;
  if (last && sameVolume(last) && last.SingleFile.FilePath === "") return last;
  let best: BackupRecord | undefined;
  for (const name of await listBackupNames(store, volume.name)) {
    const b = await loadBackupRecord(store, { volume: volume.name, backup: name }).catch(() =>
      undefined
    );
    if (!b || b.SingleFile.FilePath !== "" || !sameVolume(b)) continue;
    if (!best || Date.parse(b.CreatedTime) > Date.parse(best.CreatedTime)) best = b;
  }
  if (!best && last) {
    opts.log.info(
      "last backup belongs to another volume of the same name, or its record was altered; doing a full backup",
      {
        volume: volume.name,
        last: last.Name,
      },
    );
  }
  return best;
}

/** Checksums of the blocks that the volume's readable backup records reference. */
async function trustedBlocks(store: ObjectStore, volume: string): Promise<Set<string>> {
  const r = await referencedBlocks(store, volume, { skipUnreadable: true });
  return "refs" in r ? r.refs : new Set();
}

/**
 * Whether the object at `key` unpacks to a whole block with checksum `sum` (what verify and
 * restore will check). A missing or undecodable object is not.
 */
async function storedBlockIsGood(
  store: ObjectStore,
  key: string,
  opts: { sum: string; algo: ChecksumAlgorithm },
): Promise<boolean> {
  let raw: Uint8Array;
  try {
    raw = await store.read(key);
  } catch (err) {
    if (isErrorCode(err, "NotFound")) return false;
    throw err;
  }
  try {
    // `raw` is handed over: a store's read() result is ours.
    const { length, checksum } = await checkBlock(raw, { algo: opts.algo, size: BLOCK_SIZE });
    return length === BLOCK_SIZE && checksum === opts.sum;
  } catch {
    return false;
  }
}

/**
 * Removes the blocks (by checksum) that a failed or cancelled backup uploaded. The store's rule
 * for concurrent backups: a live backup of the same volume (another daemon or host) may have
 * found one of these blocks in the store and reused it, so nothing is removed while one holds a
 * lease (`convoy backup gc` collects them later); blocks that a backup record references are
 * kept. A gc lease is held meanwhile, as a delete's sweep holds one, so a backup starting now
 * waits instead of reusing a block being removed. Never throws: what it cannot remove it logs
 * and leaves to gc.
 */
async function discardUploads(
  store: ObjectStore,
  opts: { volume: string; sums: Set<string>; backup: string; log: Logger },
): Promise<void> {
  const { volume, log } = opts;
  if (opts.sums.size === 0) return;
  // Blocks kept here are referenced by no record: a note makes the next delete sweep them.
  const leaveNote = () =>
    noteSweepNeeded(store, volume, { id: opts.backup, why: `backup "${opts.backup}" failed` })
      .catch(() => {});
  let lease;
  try {
    lease = await takeLease(store, volume, { kind: "gc", id: generateName("gc", 16) });
  } catch (err) {
    log.warn("cannot remove the failed backup's blocks; left for gc", {
      blocks: opts.sums.size,
      error: errorMessage(err),
    });
    await leaveNote();
    return;
  }
  try {
    const others = await liveLeases(store, volume, { kind: "backup", exceptID: opts.backup });
    if (others.length > 0) {
      log.info("another backup of this volume is running; the failed backup's blocks are kept", {
        blocks: opts.sums.size,
      });
      await leaveNote();
      return;
    }
    const referenced = await trustedBlocks(store, volume);
    const keys = [...opts.sums].filter((sum) => !referenced.has(sum)).map((sum) =>
      blockPath(volume, sum)
    );
    await removeBlocks(store, keys);
    log.info("removed the failed backup's blocks", { blocksRemoved: keys.length });
  } catch (err) {
    log.warn("cannot remove the failed backup's blocks; left for gc", {
      blocks: opts.sums.size,
      error: errorMessage(err),
    });
    await leaveNote();
  } finally {
    await lease.release().catch(() => {});
  }
}

/** Options of createDeltaBackup beyond the plugin API's. */
export interface EngineOptions {
  log: Logger;
  now?: () => string;
  concurrency?: number;
}

/**
 * Backs up a snapshot in delta-block format and resolves to the new backup's name. Incremental
 * against the newest earlier backup of the same volume identity whose snapshot the driver still
 * has; a full backup otherwise (never merged with a stale map). When the driver's comparison is
 * "unknown", the incremental reads every allocated block of the snapshot (never the base's) and
 * skips the blocks whose checksum the base map holds: it costs one read and hash of the snapshot.
 *
 * A block already in the store is reused only when a backup record references it (and it is not
 * empty), or after reading it back whole (decompressed, size and checksum checked); otherwise it
 * is written again. So the new backup passes verify if the blocks it builds on do. When the
 * backup fails or is cancelled, its record (if written) and the blocks it uploaded are removed
 * (discardUploads).
 */
export async function createDeltaBackup(
  store: ObjectStore,
  ops: DeltaBlockOperations,
  opts: DeltaBackupOptions & EngineOptions,
): Promise<string> {
  const { volume, snapshot, signal } = opts;
  const vol = volume.name;
  const log = opts.log.child({ volume: vol, snapshot: snapshot.name });
  const name = generateName("backup", 16);
  const lease = await takeBackupLease(store, vol, { id: name, signal, log });
  /** Checksums of the blocks this backup wrote. */
  const own = new Set<string>();
  let recorded = false;
  let completed = false;
  const sweep = sweepQuietly(store, { prefix: volumeDir(vol), log }); // beside the backup
  try {
    const record = await loadVolumeRecord(store, vol);
    const codec = record
      ? {
        checksum: checksumOf(record),
        // A volume.cfg without our fields was written by Convoy: stay readable by it.
        compression: (record as VolumeExtra).BlockCompression ?? "gzip",
      }
      : defaultCodec(opts.compression);
    if (record && opts.compression && opts.compression !== codec.compression) {
      throw new InvalidArgumentError(
        `Cannot back up volume "${vol}" with ${opts.compression}: its blocks in "${store.url}" use ${codec.compression}`,
      );
    }
    const base = await findBase(store, { volume, record, log });
    const incremental = base !== undefined && base.SnapshotName !== snapshot.name &&
      await ops.hasSnapshot(base.SnapshotName, vol);
    const t0 = performance.now();
    let compared = await ops.compareSnapshot(
      snapshot.name,
      incremental ? base.SnapshotName : "",
      vol,
    );
    /**
     * The driver could not say what changed: every allocated block is read, and the blocks whose
     * checksum the base map holds are neither stat'ed, compressed nor uploaded. The new map is
     * then the blocks read now alone (what is not allocated now restores as zeros).
     */
    const byChecksum = incremental && compared === "unknown";
    if (byChecksum) compared = await ops.compareSnapshot(snapshot.name, "", vol);
    if (compared === "unknown") {
      if (!volume.size) {
        throw new InvalidArgumentError(
          `Cannot back up volume "${vol}": the driver cannot list its allocated ranges and its size is unknown`,
        );
      }
      compared = { mappings: [{ offset: 0, size: volume.size }], blockSize: BLOCK_SIZE };
    }
    const mappings = compared;
    const tCompared = performance.now();
    if (mappings.blockSize !== BLOCK_SIZE) {
      throw new InvalidArgumentError(
        `Cannot back up volume "${vol}": driver block size ${mappings.blockSize} is not ${BLOCK_SIZE}`,
      );
    }
    const offsets = blockOffsets(mappings.mappings, volume.size || Number.MAX_SAFE_INTEGER);
    log.info("backup started", {
      backup: name,
      mode: incremental ? "incremental" : "full",
      compare: byChecksum ? "checksums" : "driver",
      blocks: offsets.length,
    });
    const known = new Set<string>(incremental ? base.Blocks.map((b) => b.BlockChecksum) : []);
    /** The base map by offset, to count the blocks read that did not change. */
    const before = new Map<number, string>(
      incremental ? base.Blocks.map((b) => [b.Offset, b.BlockChecksum]) : [],
    );
    let unchanged = 0;
    let stored = 0;
    const inflight = new Map<string, Promise<void>>();
    const changed: BlockMapping[] = [];
    const zeroed: number[] = [];
    const progress: Progress = { done: 0, total: offsets.length, bytes: 0 };
    let uploaded = 0;
    let rechecked = 0;
    let replaced = 0;
    let trusted: Promise<Set<string>> | undefined;
    const buffers: Uint8Array[] = [];
    await ops.openSnapshot(snapshot.name, vol);
    let file: string | undefined;
    try {
      file = await ops.snapshotFile?.(snapshot.name, vol);
      /** The block at `offset`, hashed unless all zeros; `buf` is handed over. */
      const read = async (offset: number, buf: Uint8Array): Promise<ReadBlock> => {
        const length = Math.min(BLOCK_SIZE, (volume.size || Number.MAX_SAFE_INTEGER) - offset);
        if (file) {
          return await readSourceBlock({ path: file, offset, length }, {
            algo: codec.checksum,
            into: buf,
          });
        }
        if (length < BLOCK_SIZE) buf.fill(0);
        await ops.readSnapshot(snapshot.name, vol, offset, buf.subarray(0, length));
        if (isZero(buf)) return { zero: true, buffer: buf };
        return { zero: false, hashed: await hashBlock(buf, codec.checksum) };
      };
      await pool(
        offsets,
        { concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY, signal },
        async (offset) => {
          let buf = buffers.pop() ?? new Uint8Array(BLOCK_SIZE);
          try {
            const block = await read(offset, buf); // owns buf until returned, packed or dropped
            if (block.zero) {
              buf = block.buffer;
              zeroed.push(offset);
            } else {
              const { hashed } = block;
              const sum = hashed.checksum;
              let back: Uint8Array | undefined;
              try {
                if (!known.has(sum)) {
                  let p = inflight.get(sum);
                  if (!p) {
                    p = (async () => {
                      const key = blockPath(vol, sum);
                      const found = await store.stat(key);
                      if (found) {
                        trusted ??= trustedBlocks(store, vol);
                        if (found.size > 0 && (await trusted).has(sum)) return;
                        // Maybe left by a killed upload: truncated, empty or never completed.
                        const good = await storedBlockIsGood(store, key, {
                          sum,
                          algo: codec.checksum,
                        });
                        if (good) {
                          rechecked++;
                          return;
                        }
                        replaced++;
                        log.warn("replacing a damaged block", { block: sum, size: found.size });
                      }
                      own.add(sum);
                      const { packed, buffer, release } = await hashed.pack(codec.compression);
                      back = buffer;
                      await store.write(key, packed, { deferSync: true });
                      uploaded += packed.length;
                      stored++;
                      release(); // not after a failed write, which might still read `packed`
                    })();
                    inflight.set(sum, p);
                  }
                  await p;
                  known.add(sum);
                }
              } finally {
                back ??= await hashed.drop().catch(() => undefined);
                buf = back ?? new Uint8Array(BLOCK_SIZE);
              }
              if (before.get(offset) === sum) unchanged++;
              changed.push({ Offset: offset, BlockChecksum: sum });
            }
          } finally {
            if (buf.byteLength === BLOCK_SIZE) buffers.push(buf);
          }
          progress.done++;
          progress.bytes += BLOCK_SIZE;
          opts.progress?.({ ...progress });
        },
      );
    } finally {
      freeBuffers(buffers);
      try {
        if (file) await closeFile(file); // before closeSnapshot, which may remove the device
      } finally {
        await ops.closeSnapshot(snapshot.name, vol);
      }
    }
    const tBlocks = performance.now();
    await store.flush?.(); // every block durable before the record that refers to them
    const tFlushed = performance.now();
    const blocks = mergeBlocks(incremental && !byChecksum ? base.Blocks : [], changed, zeroed);
    const now = opts.now?.() ?? rubyDate();
    const backup: BackupRecord & BackupExtra = {
      Name: name,
      Driver: "",
      VolumeName: vol,
      SnapshotName: snapshot.name,
      SnapshotCreatedAt: snapshot.createdTime,
      CreatedTime: now,
      Blocks: blocks,
      SingleFile: { FilePath: "" },
      VolumeUUID: volume.uuid,
      VolumeSize: volume.size,
      VolumeCreatedAt: volume.createdTime,
      ChecksumAlgorithm: codec.checksum,
    };
    recorded = true; // before the write: a write reported failed may still have landed
    await saveBackupRecord(store, backup);
    const updated: VolumeRecord & VolumeExtra = {
      ...(record ?? {}),
      Name: vol,
      Driver: volume.driver,
      Size: volume.size,
      CreatedTime: volume.createdTime,
      LastBackupName: name,
      BlockCompression: codec.compression,
      ChecksumAlgorithm: codec.checksum,
    };
    await saveVolumeRecord(store, updated);
    log.info("backup completed", {
      backup: name,
      mode: incremental ? "incremental" : "full",
      compare: byChecksum ? "checksums" : "driver",
      blocksRead: offsets.length,
      blocksChanged: changed.length,
      blocksUnchanged: unchanged,
      blocksUploaded: stored,
      bytesUploaded: uploaded,
      blocksRechecked: rechecked,
      blocksReplaced: replaced,
      compareSeconds: +((tCompared - t0) / 1000).toFixed(2),
      blocksSeconds: +((tBlocks - tCompared) / 1000).toFixed(2),
      flushSeconds: +((tFlushed - tBlocks) / 1000).toFixed(2),
    });
    completed = true;
    return name;
  } finally {
    if (!completed) {
      if (recorded) {
        await store.remove(backupConfigPath(vol, name)).catch((err) =>
          log.warn("cannot remove the failed backup's record", { error: errorMessage(err) })
        );
      }
      await discardUploads(store, { volume: vol, sums: own, backup: name, log });
    }
    await sweep;
    await lease.release().catch((err) =>
      log.warn("cannot release lease", { error: errorMessage(err) })
    );
  }
}

/** Loads a delta-block backup's records; NotFoundError naming the URL when missing. */
async function loadDelta(
  store: ObjectStore,
  ref: { volume: string; backup: string; url: string; action: string },
): Promise<{ volume: VolumeRecord; backup: BackupRecord }> {
  const backup = await loadBackupRecord(store, ref);
  if (!backup) {
    throw new NotFoundError(
      `Cannot ${ref.action} backup "${ref.url}": backup record "${
        backupConfigPath(ref.volume, ref.backup)
      }" does not exist`,
    );
  }
  if (ref.action !== "delete") checkBackupRecord(store, backup, ref);
  const volume = await loadVolumeRecord(store, ref.volume);
  if (!volume) {
    throw new NotFoundError(
      `Cannot ${ref.action} backup "${ref.url}": the volume has no volume.cfg in the store`,
    );
  }
  if (backup.SingleFile.FilePath !== "") {
    throw new InvalidArgumentError(
      `Cannot ${ref.action} backup "${ref.url}": it is a single-file backup, not a block backup`,
    );
  }
  return { volume, backup };
}

/** The size of the volume a backup was taken of. */
export function backupSize(volume: VolumeRecord, backup: BackupRecord): number {
  return (backup as BackupExtra).VolumeSize ?? volume.Size;
}

interface BlockRef {
  volume: string;
  block: BlockMapping;
  algo: ChecksumAlgorithm;
  url: string;
  action: string;
}

const where = (ref: BlockRef) => `block ${ref.block.BlockChecksum} at offset ${ref.block.Offset}`;

/** A block file's bytes; NotFoundError naming the backup and block when it is missing. */
async function readBlockFile(store: ObjectStore, ref: BlockRef): Promise<Uint8Array> {
  try {
    return await store.read(blockPath(ref.volume, ref.block.BlockChecksum));
  } catch (err) {
    if (isErrorCode(err, "NotFound")) {
      throw new NotFoundError(
        `Cannot ${ref.action} backup "${ref.url}": ${where(ref)} is missing`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}

function corrupt(ref: BlockRef, why: string, cause?: unknown): BackendError {
  return new BackendError(
    `Cannot ${ref.action} backup "${ref.url}": ${where(ref)} is corrupt (${why})`,
    { cause },
  );
}

/**
 * Reads, decompresses and verifies one block, keeping none of it; resolves to its size. A clear
 * error names the backup and the block.
 */
async function checkBlockFile(store: ObjectStore, opts: BlockRef): Promise<number> {
  const raw = await readBlockFile(store, opts);
  let sum: string;
  let length: number;
  try {
    // `raw` is handed over: a store's read() result is ours.
    ({ checksum: sum, length } = await checkBlock(raw, { algo: opts.algo, size: BLOCK_SIZE }));
  } catch (err) {
    throw corrupt(opts, errorMessage(err), err);
  }
  if (length !== BLOCK_SIZE || sum !== opts.block.BlockChecksum) {
    throw corrupt(opts, "checksum mismatch");
  }
  return length;
}

/**
 * Reads, decompresses and verifies one block and writes it into `target` at its offset; resolves
 * to how it was written (see unpackBlockTo).
 */
async function restoreBlock(
  store: ObjectStore,
  opts: BlockRef & { target: string },
): Promise<"direct" | "buffered"> {
  const raw = await readBlockFile(store, opts);
  let written: "direct" | "buffered" | false;
  try {
    written = await unpackBlockTo(raw, {
      algo: opts.algo,
      expect: { checksum: opts.block.BlockChecksum, size: BLOCK_SIZE },
      target: { path: opts.target, offset: opts.block.Offset },
    });
  } catch (err) {
    if (err instanceof TargetWriteError) {
      throw new BackendError(
        `Cannot ${opts.action} backup "${opts.url}": cannot write ${
          where(opts)
        } to "${opts.target}" (${err.message})`,
        { cause: err },
      );
    }
    throw corrupt(opts, errorMessage(err), err);
  }
  if (!written) throw corrupt(opts, "checksum mismatch");
  return written;
}

/**
 * Writes every block of a delta-block backup into `target` (an existing file or block device);
 * unmapped ranges are left as they are (zeros in a fresh target). A regular-file target is sized
 * to the volume.
 */
export async function restoreDeltaBackup(
  store: ObjectStore,
  opts: {
    volume: string;
    backup: string;
    url: string;
    target: string;
    signal?: AbortSignal;
    progress?: (p: Progress) => void;
    log: Logger;
    concurrency?: number;
  },
): Promise<void> {
  const { volume, backup } = await loadDelta(store, { ...opts, action: "restore" });
  const size = backupSize(volume, backup);
  const algo = checksumOf(backup);
  const st = await stat(opts.target);
  const fh = await open(opts.target, "r+");
  const background = new BackgroundSync(RESTORE_SYNC_EVERY, () => fh.datasync());
  let done = false;
  try {
    if (st.isFile()) await fh.truncate(size);
    const progress: Progress = { done: 0, total: backup.Blocks.length, bytes: 0 };
    const t0 = performance.now();
    await pool(backup.Blocks, {
      concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY,
      signal: opts.signal,
    }, async (block) => {
      if (block.Offset + BLOCK_SIZE > size && size > 0) {
        throw new BackendError(
          `Cannot restore backup "${opts.url}": block at offset ${block.Offset} is past the volume size ${size}`,
        );
      }
      const how = await restoreBlock(store, {
        volume: opts.volume,
        block,
        algo,
        url: opts.url,
        action: "restore",
        target: opts.target,
      });
      if (how === "buffered") background.wrote(BLOCK_SIZE);
      progress.done++;
      progress.bytes += BLOCK_SIZE;
      opts.progress?.({ ...progress });
    });
    const tWritten = performance.now();
    await background.drain();
    await fh.sync();
    opts.log.info("Restored delta-block backup", {
      volume: opts.volume,
      backup: opts.backup,
      blocks: backup.Blocks.length,
      blocksSeconds: +((tWritten - t0) / 1000).toFixed(2),
      syncSeconds: +((performance.now() - tWritten) / 1000).toFixed(2),
    });
    done = true;
  } finally {
    await background.drain().catch(() => {}); // never close the handle under a running datasync
    const closed = closeFile(opts.target).finally(() => fh.close());
    // A failed close matters after a good restore; after a failure, the first error does.
    await (done ? closed : closed.catch(() => {}));
  }
}

/** Checks every block (or a random `sample` fraction) of a delta-block backup without restoring it. */
export async function verifyDeltaBackup(
  store: ObjectStore,
  opts: {
    volume: string;
    backup: string;
    url: string;
    sample?: number;
    signal?: AbortSignal;
    progress?: (p: Progress) => void;
  },
): Promise<VerifyReport> {
  const { backup } = await loadDelta(store, { ...opts, action: "verify" });
  const algo = checksumOf(backup);
  let blocks = backup.Blocks;
  if (opts.sample !== undefined && opts.sample < 1) {
    if (!(opts.sample > 0)) {
      throw new InvalidArgumentError(
        `Invalid sample ${opts.sample}: expected a fraction in (0, 1]`,
      );
    }
    const want = Math.max(1, Math.ceil(blocks.length * opts.sample));
    blocks = [...blocks].sort(() => Math.random() - 0.5).slice(0, want);
  }
  const problems: string[] = [];
  let bytes = 0;
  let done = 0;
  await pool(blocks, { concurrency: DEFAULT_CONCURRENCY, signal: opts.signal }, async (block) => {
    try {
      // Not `bytes += await ...`: that reads `bytes` before the await, losing concurrent counts.
      const checked = await checkBlockFile(store, {
        volume: opts.volume,
        block,
        algo,
        url: opts.url,
        action: "verify",
      });
      bytes += checked;
    } catch (err) {
      if (isErrorCode(err, "Cancelled")) throw err;
      problems.push(errorMessage(err));
    }
    opts.progress?.({ done: ++done, total: blocks.length, bytes });
  });
  return {
    backupURL: opts.url,
    blocks: backup.Blocks.length,
    checked: blocks.length,
    bytes,
    problems: problems.sort(),
  };
}

/**
 * Deletes a delta-block backup: its record, then (unless a backup of the volume is running,
 * here or on another host) the blocks no remaining backup uses; the whole volume folder when it
 * was the last backup. When a crashed or failed holder left a lease or a sweep note behind, or
 * a delete had to skip its sweep, every unreferenced block of the volume is swept, not only the
 * deleted backup's. A skipped sweep leaves a note for the next delete or `backup gc`.
 */
export async function deleteDeltaBackup(
  store: ObjectStore,
  opts: { volume: string; backup: string; url: string; log: Logger },
): Promise<void> {
  const log = opts.log.child({ volume: opts.volume, backup: opts.backup });
  const { volume, backup } = await loadDelta(store, { ...opts, action: "delete" });
  await store.remove(backupConfigPath(opts.volume, opts.backup));
  if (volume.LastBackupName === opts.backup) {
    await saveVolumeRecord(store, { ...volume, LastBackupName: "" });
  }
  const gcID = generateName("gc", 16);
  const lease = await takeLease(store, opts.volume, { kind: "gc", id: gcID });
  let released = false;
  try {
    const notes = await sweepNotes(store, opts.volume);
    const backups = await leaseStates(store, opts.volume, { kind: "backup" });
    if (backups.live.length > 0) {
      log.info("a backup of this volume is running; unused blocks are kept until a later sweep", {
        running: backups.live.map(describeLease),
      });
      await noteSweepNeeded(store, opts.volume, {
        id: gcID,
        why: `delete of backup "${opts.backup}" skipped its sweep`,
      });
      return;
    }
    const remaining = await listBackupNames(store, opts.volume);
    if (remaining.length === 0) {
      await lease.release();
      released = true;
      if ((await liveLeases(store, opts.volume, { kind: "backup" })).length === 0) {
        await store.remove(volumeDir(opts.volume));
        log.info("deleted the last backup; removed the volume's folder");
      }
      return;
    }
    const leftovers = notes.length > 0 || backups.dead.length > 0 ||
      (await leaseStates(store, opts.volume, { kind: "gc", exceptID: gcID })).dead.length > 0;
    if (leftovers) {
      const swept = await sweepUnreferenced(store, opts.volume, {});
      if ("unreadable" in swept) {
        log.warn("unused blocks are kept: a backup record cannot be read", {
          error: swept.unreadable,
        });
        return;
      }
      await clearLeftovers(store, opts.volume, { notes, exceptID: gcID });
      log.info("deleted backup; swept every unreferenced block", { blocksRemoved: swept.count });
      return;
    }
    const discard = new Set(backup.Blocks.map((b) => b.BlockChecksum));
    for (const name of remaining) {
      if (discard.size === 0) break;
      let other: BackupRecord | undefined;
      try {
        other = await loadBackupRecord(store, { volume: opts.volume, backup: name });
      } catch (err) {
        if (!(err instanceof RecordParseError)) throw err;
        log.warn("unused blocks are kept: a backup record cannot be read", {
          error: errorMessage(err),
        });
        await noteSweepNeeded(store, opts.volume, { id: gcID, why: errorMessage(err) });
        return;
      }
      for (const b of other?.Blocks ?? []) discard.delete(b.BlockChecksum);
    }
    const keys = [...discard].map((sum) => blockPath(opts.volume, sum));
    await removeBlocks(store, keys);
    log.info("deleted backup", { blocksRemoved: keys.length });
  } finally {
    if (!released) await lease.release().catch(() => {});
  }
}
