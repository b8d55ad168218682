/**
 * Leases in the store keep garbage collection from deleting a block that a running backup, on
 * this host or another, has just reused. A backup holds a "backup" lease for its whole run; the
 * block sweep of a delete or gc holds a "gc" lease. Each side writes its own lease first and then
 * looks for the other kind: a sweep that sees a live backup lease is skipped, a backup that sees a
 * live gc lease waits for it.
 *
 * A lease names its holder: host name, boot id, pid namespace, pid and process start time. A
 * lease written on this host in this boot and pid namespace is dead as soon as its process is gone
 * (or the pid now belongs to another process); any other lease (another host, an earlier boot, a
 * holder whose pid this host cannot check, or an old lease without these fields) lives until it
 * expires, and its holder refreshes it while it holds it.
 * @module
 */
import { CancelledError, isErrorCode } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import { holderGone, thisHolder } from "../util/holder.ts";
import type { Logger } from "../util/log.ts";
import { volumeDir } from "./layout.ts";

export type LeaseKind = "backup" | "gc";

/** How long a lease lives without a refresh. */
export const LEASE_TTL_MS = 5 * 60_000;
/** How often a held lease is refreshed (well within LEASE_TTL_MS). */
const REFRESH_MS = 60_000;
/** A wait for a lease is logged when it starts and then at most this often. */
const WAIT_LOG_EVERY_MS = 60_000;

/** A lease file (`leases/<kind>-<id>.json`). Boot, PidNS and Start are absent in old leases. */
export interface LeaseRecord {
  Kind: LeaseKind;
  ID: string;
  Host: string;
  Pid: number;
  Expires: string;
  /** /proc/sys/kernel/random/boot_id of the holder's host. */
  Boot?: string;
  /** The holder's pid namespace (`pid:[…]` of /proc/self/ns/pid). */
  PidNS?: string;
  /** The holder's start time in clock ticks since boot (/proc/PID/stat field 22). */
  Start?: string;
}

/** The folder of a volume's leases in the store. */
export function leasesDir(volume: string): string {
  return `${volumeDir(volume)}/leases`;
}

/** A held lease; `release()` removes it (and stops its refresh). */
export interface Lease {
  release(): Promise<void>;
}

/**
 * Whether `rec` still holds: false for an expired lease, and for a lease of this host, boot and
 * pid namespace whose process is gone or is another process; true otherwise.
 */
export async function isLive(rec: LeaseRecord, opts: { now?: number } = {}): Promise<boolean> {
  if (!(Date.parse(rec.Expires) > (opts.now ?? Date.now()))) return false;
  return !(await holderGone({
    host: rec.Host,
    boot: rec.Boot,
    pidNS: rec.PidNS,
    pid: rec.Pid,
    start: rec.Start,
  }));
}

async function write(store: ObjectStore, volume: string, rec: LeaseRecord): Promise<void> {
  await store.write(
    `${leasesDir(volume)}/${rec.Kind}-${rec.ID}.json`,
    new TextEncoder().encode(JSON.stringify(rec)),
  );
}

/** The lease records of `kind` in the store (unreadable ones skipped), with their keys. */
async function readLeases(
  store: ObjectStore,
  volume: string,
  kind: LeaseKind,
): Promise<{ key: string; rec: LeaseRecord }[]> {
  const out: { key: string; rec: LeaseRecord }[] = [];
  for (const name of await store.list(leasesDir(volume))) {
    if (!name.startsWith(`${kind}-`) || !name.endsWith(".json")) continue;
    const key = `${leasesDir(volume)}/${name}`;
    try {
      out.push({ key, rec: JSON.parse(new TextDecoder().decode(await store.read(key))) });
    } catch (err) {
      if (isErrorCode(err, "NotFound") || err instanceof SyntaxError) continue;
      throw err;
    }
  }
  return out;
}

/** Live leases of `kind` other than `exceptID`. */
export async function liveLeases(
  store: ObjectStore,
  volume: string,
  opts: { kind: LeaseKind; exceptID?: string },
): Promise<LeaseRecord[]> {
  return (await leaseStates(store, volume, opts)).live;
}

/**
 * Leases of `kind` other than `exceptID`, split into live ones and keys of dead ones (expired,
 * or of a local process that is gone): a dead lease is what a crashed holder left behind.
 */
export async function leaseStates(
  store: ObjectStore,
  volume: string,
  opts: { kind: LeaseKind; exceptID?: string },
): Promise<{ live: LeaseRecord[]; dead: string[] }> {
  const live: LeaseRecord[] = [];
  const dead: string[] = [];
  for (const { key, rec } of await readLeases(store, volume, opts.kind)) {
    if (rec.ID === opts.exceptID) continue;
    if (await isLive(rec)) live.push(rec);
    else dead.push(key);
  }
  return { live, dead };
}

/** "gc lease of host h pid 12 (expires 2026-…)" for logs and reports. */
export function describeLease(rec: LeaseRecord): string {
  return `${rec.Kind} lease of host "${rec.Host}" pid ${rec.Pid} (expires ${rec.Expires})`;
}

/** Writes a lease and keeps it fresh until released. */
export async function takeLease(
  store: ObjectStore,
  volume: string,
  opts: { kind: LeaseKind; id: string; ttlMs?: number },
): Promise<Lease> {
  const me = await thisHolder();
  const ttl = opts.ttlMs ?? LEASE_TTL_MS;
  const rec = (): LeaseRecord => ({
    Kind: opts.kind,
    ID: opts.id,
    Host: me.host,
    Pid: me.pid,
    Expires: new Date(Date.now() + ttl).toISOString(),
    Boot: me.boot,
    PidNS: me.pidNS,
    Start: me.start,
  });
  await write(store, volume, rec());
  let refresh: Promise<void> = Promise.resolve();
  const timer = setInterval(() => {
    refresh = write(store, volume, rec()).catch(() => {});
  }, Math.min(REFRESH_MS, ttl / 3));
  (timer as { unref?: () => void }).unref?.();
  return {
    release: async () => {
      clearInterval(timer);
      await refresh; // a refresh landing after the remove would leave a live lease behind
      await store.remove(`${leasesDir(volume)}/${opts.kind}-${opts.id}.json`);
    },
  };
}

/**
 * Takes a backup lease, then waits while a gc lease is live (a sweep must not race the dedup).
 * The wait is logged at INFO with the lease waited for: when it starts, then every minute.
 */
export async function takeBackupLease(
  store: ObjectStore,
  volume: string,
  opts: { id: string; log: Logger; signal?: AbortSignal; pollMs?: number; logEveryMs?: number },
): Promise<Lease> {
  const lease = await takeLease(store, volume, { kind: "backup", id: opts.id });
  try {
    let logged = -Infinity;
    for (;;) {
      const live = await liveLeases(store, volume, { kind: "gc" });
      if (live.length === 0) break;
      if (opts.signal?.aborted) throw new CancelledError(`Backup of volume "${volume}" cancelled`);
      if (Date.now() - logged >= (opts.logEveryMs ?? WAIT_LOG_EVERY_MS)) {
        logged = Date.now();
        opts.log.info("backup waits for a block sweep of the volume to finish", {
          volume,
          waitingFor: live.map(describeLease),
        });
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    }
  } catch (err) {
    await lease.release().catch(() => {});
    throw err;
  }
  return lease;
}

/** The key of a note that the volume's blocks need a full sweep (written when a sweep is skipped). */
export function sweepNoteKey(volume: string, id: string): string {
  return `${leasesDir(volume)}/sweep-${id}.json`;
}

/** Keys of the volume's sweep notes. */
export async function sweepNotes(store: ObjectStore, volume: string): Promise<string[]> {
  return (await store.list(leasesDir(volume)))
    .filter((n) => n.startsWith("sweep-") && n.endsWith(".json"))
    .map((n) => `${leasesDir(volume)}/${n}`);
}

/** Notes that blocks of the volume may be left unreferenced (a skipped sweep, a failed backup). */
export async function noteSweepNeeded(
  store: ObjectStore,
  volume: string,
  opts: { id: string; why: string },
): Promise<void> {
  const me = await thisHolder();
  await store.write(
    sweepNoteKey(volume, opts.id),
    new TextEncoder().encode(
      JSON.stringify({ Why: opts.why, Host: me.host, Pid: me.pid, Time: new Date().toISOString() }),
    ),
  );
}
