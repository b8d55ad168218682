/**
 * The host's BackupStoreApi (src/api/plugin.ts): what drivers call to keep single-file backups
 * in a backup store, and to list and inspect any backup there.
 * @module
 */
import type { StringMap } from "../api/driver.ts";
import { InvalidArgumentError, NotFoundError } from "../api/errors.ts";
import { OPT_ENDPOINT_URL, OPT_VOLUME_NAME } from "../api/options.ts";
import type {
  BackupQueries,
  BackupStoreApi,
  BackupTargetOptions,
  BackupVolume,
} from "../api/plugin.ts";
import { optionSchemas } from "../util/option_schemas.ts";
import { parseOptions } from "../util/parse_options.ts";
import { builtinStoreRegistry } from "../store/registry.ts";
import type { ObjectStore, OpenStoreOptions } from "../store/types.ts";
import type { Logger } from "../util/log.ts";
import { validateName } from "../util/names.ts";
import {
  backupInfo,
  loadVolumeRecord,
  requireBackupRecord,
  volumeBackupInfos,
  walkVolumes,
} from "./catalog.ts";
import {
  backupSize,
  createDeltaBackup,
  deleteDeltaBackup,
  restoreDeltaBackup,
  verifyDeltaBackup,
} from "./deltablock.ts";
import { collectGarbage, type GcReport } from "./gc.ts";
import { volumeConfigPath } from "./layout.ts";
import { type BackupRecord, isSingleFileBackup, type VolumeRecord } from "./records.ts";
import {
  createSingleFileBackup,
  deleteSingleFileBackup,
  restoreSingleFileBackup,
} from "./singlefile.ts";
import { type BackupRef, decodeBackupURL, encodeBackupURL } from "./url.ts";

/** Options of createBackupStoreApi. */
export interface BackupStoreApiOptions {
  log: Logger;
  /**
   * Where stores come from: the daemon passes its registry (default: a new builtinStoreRegistry,
   * for tests). Tests inject wrappers here.
   */
  stores?: { open(destURL: string, opts?: OpenStoreOptions): Promise<ObjectStore> };
  /** The CreatedTime of new backup records (default: now, as RubyDate). */
  now?: () => string;
}

function endpointOf(opts?: { endpoint?: string }): OpenStoreOptions {
  return opts?.endpoint ? { endpoint: opts.endpoint } : {};
}

/** `api.backup.queries`: see BackupStoreApi. */
function backupQueries(
  api: Pick<BackupStoreApi, "getBackupVolume" | "deleteBackup" | "getBackupInfo" | "listBackup">,
  driver: string,
  opts: { readable?: string[]; blocks?: boolean },
): BackupQueries {
  const readable = opts.readable ?? [];
  const parse = (raw: StringMap | undefined) => {
    const o = parseOptions(optionSchemas.backup, raw ?? {}, "backup options");
    return {
      endpoint: o[OPT_ENDPOINT_URL] || undefined,
      volumeName: o[OPT_VOLUME_NAME] || undefined,
    };
  };
  const check = async (
    url: string,
    what: string,
    o: { drivers: string[]; blocks?: boolean; endpoint?: string },
  ) => {
    const v = await api.getBackupVolume(url, { endpoint: o.endpoint });
    if (!o.drivers.includes(v.driver) && !(o.blocks && v.format === "delta-block")) {
      throw new InvalidArgumentError(
        `Cannot ${what} backup "${url}" with the ${driver} driver: it was made by driver "${v.driver}"`,
      );
    }
  };
  return {
    async deleteBackup(url, raw) {
      const { endpoint } = parse(raw);
      await check(url, "delete", { drivers: [driver], endpoint });
      await api.deleteBackup(url, { endpoint });
    },
    async getBackupInfo(url, raw) {
      const { endpoint } = parse(raw);
      await check(url, "inspect", {
        drivers: [driver, ...readable],
        blocks: opts.blocks,
        endpoint,
      });
      return await api.getBackupInfo(url, { endpoint });
    },
    async listBackup(destURL, raw) {
      const { endpoint, volumeName } = parse(raw);
      return await api.listBackup(destURL, { driver, volumeName, endpoint });
    },
  };
}

/** The host's backup store helpers: the drivers' BackupStoreApi plus what only the daemon calls. */
export interface HostBackupStoreApi extends BackupStoreApi {
  /**
   * Removes the blocks no backup record references and stale temporary objects, of every volume
   * in `destURL` (or `opts.volumeName`); with `dryRun`, only reports what it would remove.
   */
  collectGarbage(
    destURL: string,
    opts?: { volumeName?: string; endpoint?: string; dryRun?: boolean },
  ): Promise<GcReport>;
}

/** The BackupStoreApi handed to drivers, over the stores of `opts.stores`. */
export function createBackupStoreApi(opts: BackupStoreApiOptions): HostBackupStoreApi {
  const stores = opts.stores ?? builtinStoreRegistry({ log: opts.log.child({ pkg: "store" }) });
  const log = opts.log.child({ component: "backupstore" });

  async function openBackup(
    url: string,
    topts?: BackupTargetOptions,
  ): Promise<{ store: ObjectStore; ref: BackupRef }> {
    const ref = decodeBackupURL(url);
    return { store: await stores.open(ref.destURL, endpointOf(topts)), ref };
  }

  /** Both records of an existing backup; NotFoundError `Cannot find backup "<url>": …`. */
  async function loadBoth(
    url: string,
    topts?: BackupTargetOptions,
  ): Promise<{ store: ObjectStore; volume: VolumeRecord; backup: BackupRecord }> {
    const { store, ref } = await openBackup(url, topts);
    const backup = await requireBackupRecord(store, ref, { action: "find", url });
    const volume = await loadVolumeRecord(store, ref.volume);
    if (!volume) {
      throw new NotFoundError(
        `Cannot find backup "${url}": volume record "${
          volumeConfigPath(ref.volume)
        }" does not exist`,
      );
    }
    return { store, volume, backup };
  }

  const api: HostBackupStoreApi = {
    async collectGarbage(destURL, gopts = {}) {
      const store = await stores.open(destURL, endpointOf(gopts));
      const volume = gopts.volumeName ? validateName(gopts.volumeName, "volume") : undefined;
      return await collectGarbage(store, { volume, dryRun: gopts.dryRun, log });
    },

    async createSingleFileBackup(file, copts) {
      const store = await stores.open(copts.destURL, endpointOf(copts));
      const backup = await createSingleFileBackup(store, file, {
        volume: copts.volume,
        snapshot: copts.snapshot,
        signal: copts.signal,
        progress: copts.progress,
        log,
        now: opts.now,
      });
      return encodeBackupURL({ backup, volume: copts.volume.name, destURL: store.url });
    },

    async restoreSingleFileBackup(url, targetFile, topts) {
      const { store, ref } = await openBackup(url, topts);
      await restoreSingleFileBackup(store, ref, {
        url,
        file: targetFile,
        signal: topts?.signal,
        progress: topts?.progress,
        log,
      });
    },

    async getBackupVolume(url, topts): Promise<BackupVolume> {
      const { volume, backup } = await loadBoth(url, topts);
      const uuid = (backup as { VolumeUUID?: string }).VolumeUUID;
      return {
        name: volume.Name,
        driver: volume.Driver,
        size: backupSize(volume, backup),
        createdTime: (backup as { VolumeCreatedAt?: string }).VolumeCreatedAt ?? volume.CreatedTime,
        ...(uuid ? { uuid } : {}),
        format: isSingleFileBackup(backup) ? "single-file" : "delta-block",
      };
    },

    async createDeltaBackup(ops, copts) {
      const store = await stores.open(copts.destURL, endpointOf(copts));
      const backup = await createDeltaBackup(store, ops, { ...copts, log, now: opts.now });
      return encodeBackupURL({ backup, volume: copts.volume.name, destURL: store.url });
    },

    async restoreDeltaBackup(url, target, topts) {
      const { store, ref } = await openBackup(url, topts);
      await restoreDeltaBackup(store, {
        volume: ref.volume,
        backup: ref.backup,
        url,
        target,
        signal: topts?.signal,
        progress: topts?.progress,
        log,
      });
    },

    async verifyBackup(url, vopts) {
      const { store, ref } = await openBackup(url, vopts);
      const rec = await requireBackupRecord(store, ref, { action: "verify", url });
      if (isSingleFileBackup(rec)) {
        const key = rec.SingleFile.FilePath;
        const st = await store.stat(key);
        return {
          backupURL: url,
          blocks: 1,
          checked: 1,
          bytes: st?.size ?? 0,
          problems: st ? [] : [`Cannot verify backup "${url}": archive "${key}" is missing`],
        };
      }
      return await verifyDeltaBackup(store, {
        volume: ref.volume,
        backup: ref.backup,
        url,
        sample: vopts?.sample,
        signal: vopts?.signal,
        progress: vopts?.progress,
      });
    },

    async deleteBackup(url, topts) {
      const { store, ref } = await openBackup(url, topts);
      const rec = await requireBackupRecord(store, ref, { action: "delete", url });
      if (isSingleFileBackup(rec)) await deleteSingleFileBackup(store, ref, { url, log });
      else await deleteDeltaBackup(store, { volume: ref.volume, backup: ref.backup, url, log });
    },

    async getBackupInfo(url, topts): Promise<StringMap> {
      const { store, volume, backup } = await loadBoth(url, topts);
      return backupInfo(store.url, { volume, backup });
    },

    async listBackup(destURL, lopts) {
      const store = await stores.open(destURL, endpointOf(lopts));
      if (lopts.volumeName) {
        const name = validateName(lopts.volumeName, "volume");
        const volume = await loadVolumeRecord(store, name);
        if (!volume) {
          throw new NotFoundError(
            `Cannot list backups: volume "${name}" has no backups in "${store.url}"`,
          );
        }
        return volume.Driver === lopts.driver ? await volumeBackupInfos(store, volume, log) : {};
      }
      const out: Record<string, StringMap> = {};
      for (const volume of await walkVolumes(store, log)) {
        if (volume.Driver !== lopts.driver) continue;
        Object.assign(out, await volumeBackupInfos(store, volume, log));
      }
      return out;
    },

    queries: (driver, qopts) => backupQueries(api, driver, qopts ?? {}),
  };
  return api;
}
