/**
 * Leases in the store keep garbage collection from deleting a block that a running backup, on
 * this host or another, has just reused. A backup holds a "backup" lease for its whole run; the
 * block sweep of a delete holds a "gc" lease. Each side writes its own lease first and then looks
 * for the other kind: a sweep that sees a live backup lease is skipped, a backup that sees a live
 * gc lease waits for it. Leases expire, so a crashed holder blocks nobody for long.
 * @module
 */
import { hostname } from "node:os";
import { CancelledError, isErrorCode } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import { volumeDir } from "./layout.ts";

export type LeaseKind = "backup" | "gc";

/** How long a lease lives without a refresh. */
export const LEASE_TTL_MS = 5 * 60_000;
const REFRESH_MS = 60_000;

interface LeaseRecord {
  Kind: LeaseKind;
  ID: string;
  Host: string;
  Pid: number;
  Expires: string;
}

/** The folder of a volume's leases in the store. */
export function leasesDir(volume: string): string {
  return `${volumeDir(volume)}/leases`;
}

/** A held lease; `release()` removes it (and stops its refresh). */
export interface Lease {
  release(): Promise<void>;
}

async function write(store: ObjectStore, volume: string, rec: LeaseRecord): Promise<void> {
  await store.write(
    `${leasesDir(volume)}/${rec.Kind}-${rec.ID}.json`,
    new TextEncoder().encode(JSON.stringify(rec)),
  );
}

/** Live leases of `kind` other than `exceptID`. */
export async function liveLeases(
  store: ObjectStore,
  volume: string,
  opts: { kind: LeaseKind; exceptID?: string },
): Promise<LeaseRecord[]> {
  const out: LeaseRecord[] = [];
  for (const name of await store.list(leasesDir(volume))) {
    if (!name.startsWith(`${opts.kind}-`) || !name.endsWith(".json")) continue;
    let rec: LeaseRecord;
    try {
      rec = JSON.parse(new TextDecoder().decode(await store.read(`${leasesDir(volume)}/${name}`)));
    } catch (err) {
      if (isErrorCode(err, "NotFound")) continue;
      if (err instanceof SyntaxError) continue;
      throw err;
    }
    if (rec.ID === opts.exceptID) continue;
    if (Date.parse(rec.Expires) > Date.now()) out.push(rec);
  }
  return out;
}

/** Writes a lease and keeps it fresh until released. */
export async function takeLease(
  store: ObjectStore,
  volume: string,
  opts: { kind: LeaseKind; id: string },
): Promise<Lease> {
  const rec = (): LeaseRecord => ({
    Kind: opts.kind,
    ID: opts.id,
    Host: hostname(),
    Pid: process.pid,
    Expires: new Date(Date.now() + LEASE_TTL_MS).toISOString(),
  });
  await write(store, volume, rec());
  const timer = setInterval(() => {
    write(store, volume, rec()).catch(() => {});
  }, REFRESH_MS);
  (timer as { unref?: () => void }).unref?.();
  return {
    release: async () => {
      clearInterval(timer);
      await store.remove(`${leasesDir(volume)}/${opts.kind}-${opts.id}.json`);
    },
  };
}

/** Takes a backup lease, then waits while a gc lease is live (a sweep must not race the dedup). */
export async function takeBackupLease(
  store: ObjectStore,
  volume: string,
  opts: { id: string; signal?: AbortSignal; pollMs?: number },
): Promise<Lease> {
  const lease = await takeLease(store, volume, { kind: "backup", id: opts.id });
  try {
    while ((await liveLeases(store, volume, { kind: "gc" })).length > 0) {
      if (opts.signal?.aborted) throw new CancelledError(`Backup of volume "${volume}" cancelled`);
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    }
  } catch (err) {
    await lease.release().catch(() => {});
    throw err;
  }
  return lease;
}
