/**
 * The daemon's VolumeService, one concern per file, each class adding to the one before:
 * service_base.ts (state, lookups, what the Docker adapter asks), reconcile.ts (start-up and
 * refresh), responses.ts (Convoy's response shapes), service_volumes.ts, docker_mounts.ts (mounts
 * and Docker's mount IDs), service_snapshots.ts, service_backups.ts.
 * @module
 */
import { ServiceBackups } from "./service_backups.ts";

export type { CreateVolumeRequest } from "./service_base.ts";
export { type SnapshotResponse, sortedMap, type VolumeResponse } from "./responses.ts";
export { isStaleMount, liveMountIDs, STALE_MOUNT_PREFIX } from "./docker_mounts.ts";

/**
 * The daemon's volume, snapshot and backup operations over the enabled drivers. It keeps the
 * persisted index (State), takes a lock per volume, and never probes drivers to find a volume.
 */
export class VolumeService extends ServiceBackups {}
