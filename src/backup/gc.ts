/**
 * Garbage collection of a block store: removes the blocks of a volume that no backup record
 * references (left by a crash, by a failed backup, or by a delete that had to skip its sweep
 * while a backup ran), and stale temporary objects (sweepStaleTemps: vfs temp files, S3
 * multipart uploads). Runs under a gc lease and skips a volume
 * while a live backup lease exists.
 * @module
 */
import { errorMessage, NotFoundError } from "../api/errors.ts";
import { sweepStaleTemps } from "../store/sweep.ts";
import type { ObjectStore } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { generateName } from "../util/names.ts";
import { listBackupNames, loadBackupRecord, loadVolumeRecord, walkVolumes } from "./catalog.ts";
import { blockPath, BLOCKS_DIR, volumeConfigPath, volumeDir } from "./layout.ts";
import { describeLease, leaseStates, noteSweepNeeded, sweepNotes, takeLease } from "./leases.ts";
import { RecordParseError } from "./records.ts";

/** What gc removed from one volume (or would remove, in a dry run). */
export interface VolumeGcReport {
  UnreferencedBlocks: number;
  UnreferencedBlockBytes: number;
  StaleTemps: number;
  StaleTempBytes: number;
  /** Why the volume's blocks were left alone (a backup is running, a record is unreadable). */
  Skipped?: string;
}

/** `backup gc` output: per volume name. */
export interface GcReport {
  DryRun: boolean;
  Volumes: Record<string, VolumeGcReport>;
}

const BLOCK_FILE = /^([0-9a-f]{64})\.blk$/;

/** Every block checksum stored for `volume` (walks blocks/<2>/<2>/). */
async function storedBlocks(store: ObjectStore, volume: string): Promise<string[]> {
  const dir = `${volumeDir(volume)}/${BLOCKS_DIR}`;
  const out: string[] = [];
  for (const l1 of await store.list(dir)) {
    for (const l2 of await store.list(`${dir}/${l1}`)) {
      for (const name of await store.list(`${dir}/${l1}/${l2}`)) {
        const m = BLOCK_FILE.exec(name);
        if (m && m[1].startsWith(l1 + l2)) out.push(m[1]);
      }
    }
  }
  return out;
}

/**
 * The checksums referenced by the volume's backup records, or the message of the first record
 * that cannot be read (then no block may be judged unreferenced). With `skipUnreadable`, such a
 * record is passed over instead (it restores nothing, so it vouches for nothing).
 */
export async function referencedBlocks(
  store: ObjectStore,
  volume: string,
  opts: { skipUnreadable?: boolean } = {},
): Promise<{ refs: Set<string> } | { unreadable: string }> {
  const refs = new Set<string>();
  for (const name of await listBackupNames(store, volume)) {
    try {
      const rec = await loadBackupRecord(store, { volume, backup: name });
      for (const b of rec?.Blocks ?? []) refs.add(b.BlockChecksum);
    } catch (err) {
      if (!(err instanceof RecordParseError)) throw err;
      if (opts.skipUnreadable) continue;
      return { unreadable: errorMessage(err) };
    }
  }
  return { refs };
}

/**
 * Removes (unless `dryRun`) the volume's blocks that no backup record references. The caller
 * holds a gc lease and has found no live backup lease.
 */
export async function sweepUnreferenced(
  store: ObjectStore,
  volume: string,
  opts: { dryRun?: boolean },
): Promise<{ count: number; bytes: number } | { unreadable: string }> {
  const r = await referencedBlocks(store, volume);
  if ("unreadable" in r) return r;
  const keys = (await storedBlocks(store, volume)).filter((s) => !r.refs.has(s))
    .map((s) => blockPath(volume, s));
  let bytes = 0;
  for (const key of keys) bytes += (await store.stat(key))?.size ?? 0;
  if (!opts.dryRun) await removeBlocks(store, keys);
  return { count: keys.length, bytes };
}

/** Removes known block objects, in batches. */
export async function removeBlocks(store: ObjectStore, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    const batch = keys.slice(i, i + 1000);
    await (store.removeObjects ? store.removeObjects(...batch) : store.remove(...batch));
  }
}

/**
 * Removes what crashed holders left: dead leases of both kinds and the sweep notes in `notes`,
 * after a complete sweep.
 */
export async function clearLeftovers(
  store: ObjectStore,
  volume: string,
  opts: { notes: string[]; exceptID?: string },
): Promise<void> {
  const dead = [
    ...(await leaseStates(store, volume, { kind: "backup" })).dead,
    ...(await leaseStates(store, volume, { kind: "gc", exceptID: opts.exceptID })).dead,
  ];
  if (dead.length + opts.notes.length > 0) await store.remove(...dead, ...opts.notes);
}

/** Collects one volume's garbage under a gc lease (see the module doc). */
export async function gcVolume(
  store: ObjectStore,
  volume: string,
  opts: { dryRun?: boolean; log: Logger },
): Promise<VolumeGcReport> {
  const log = opts.log.child({ volume });
  const report: VolumeGcReport = {
    UnreferencedBlocks: 0,
    UnreferencedBlockBytes: 0,
    StaleTemps: 0,
    StaleTempBytes: 0,
  };
  const id = generateName("gc", 16);
  // A dry run removes nothing, so it needs no lease and holds up no backup.
  const lease = opts.dryRun ? undefined : await takeLease(store, volume, { kind: "gc", id });
  try {
    const notes = await sweepNotes(store, volume);
    const backups = (await leaseStates(store, volume, { kind: "backup" })).live;
    if (backups.length > 0) {
      report.Skipped = `a backup of the volume is running: ${
        backups.map(describeLease).join(", ")
      }`;
    } else {
      const swept = await sweepUnreferenced(store, volume, { dryRun: opts.dryRun });
      if ("unreadable" in swept) {
        report.Skipped = `blocks kept: ${swept.unreadable}`;
      } else {
        report.UnreferencedBlocks = swept.count;
        report.UnreferencedBlockBytes = swept.bytes;
        if (!opts.dryRun) await clearLeftovers(store, volume, { notes, exceptID: id });
      }
    }
    const sizes = new Map<string, number>();
    const temps = await sweepStaleTemps(store, {
      prefix: volumeDir(volume),
      dryRun: opts.dryRun,
      onSwept: (key, bytes) => sizes.set(key, bytes),
    });
    report.StaleTemps = temps.length;
    report.StaleTempBytes = temps.reduce((n, key) => n + (sizes.get(key) ?? 0), 0);
    if (report.Skipped) {
      log.info("gc skipped the volume's blocks", { reason: report.Skipped });
      if (!opts.dryRun && backups.length > 0) {
        await noteSweepNeeded(store, volume, { id, why: report.Skipped }).catch(() => {});
      }
    } else {
      log.info(opts.dryRun ? "gc found garbage (dry run)" : "gc collected garbage", {
        blocks: report.UnreferencedBlocks,
        bytes: report.UnreferencedBlockBytes,
        temps: report.StaleTemps,
      });
    }
    return report;
  } finally {
    await lease?.release().catch((err) =>
      log.warn("cannot release lease", { error: errorMessage(err) })
    );
  }
}

/** Collects the garbage of every volume in the store, or of `opts.volume` only. */
export async function collectGarbage(
  store: ObjectStore,
  opts: { volume?: string; dryRun?: boolean; log: Logger },
): Promise<GcReport> {
  if (opts.volume !== undefined && !(await loadVolumeRecord(store, opts.volume))) {
    throw new NotFoundError(
      `Cannot collect garbage of volume "${opts.volume}" in "${store.url}": volume record "${
        volumeConfigPath(opts.volume)
      }" does not exist`,
    );
  }
  const names = opts.volume !== undefined
    ? [opts.volume]
    : (await walkVolumes(store, opts.log)).map((v) => v.Name);
  const out: GcReport = { DryRun: !!opts.dryRun, Volumes: {} };
  for (const name of names.sort()) {
    out.Volumes[name] = await gcVolume(store, name, opts);
  }
  return out;
}
