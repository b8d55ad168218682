/**
 * The backup of a snapshot in delta-block format (createDeltaBackup): the base backup (findBase),
 * the blocks to read (blockOffsets), changed-block detection, uploads through the codec pool,
 * the new block map (mergeBlocks), then the backup record and volume.cfg. See deltablock.ts for
 * the format and the order of writes.
 * @module
 */
import { errorMessage, InvalidArgumentError } from "../api/errors.ts";
import type { DeltaBlockOperations, Mapping, Progress } from "../api/driver.ts";
import type { DeltaBackupOptions } from "../api/plugin.ts";
import { sweepQuietly } from "../store/sweep.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { pool } from "../util/pool.ts";
import { generateName } from "../util/names.ts";
import { rubyDate } from "../util/time.ts";
import {
  listBackupNames,
  loadBackupRecord,
  loadVolumeRecord,
  saveBackupRecord,
  saveVolumeRecord,
} from "./catalog.ts";
import { BLOCK_SIZE, defaultCodec, isZero } from "./codec.ts";
import {
  closeFile,
  freeBuffers,
  hashBlock,
  type ReadBlock,
  readSourceBlock,
} from "./codec_pool.ts";
import { DEFAULT_CONCURRENCY, storedBlockIsGood, trustedBlocks } from "./delta_blocks.ts";
import { discardUploads } from "./delta_discard.ts";
import { type BackupExtra, checksumOf, type VolumeExtra } from "./delta_records.ts";
import { backupConfigPath, blockPath, volumeDir } from "./layout.ts";
import { takeBackupLease } from "./leases.ts";
import {
  type BackupRecord,
  type BlockMapping,
  recordChecksumProblem,
  type VolumeRecord,
} from "./records.ts";

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
