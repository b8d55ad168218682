/**
 * The service's backup operations. A backup of a block driver's snapshot takes the typed path
 * (the driver's `block.backUp`, which runs the engine); other drivers get Convoy's string map.
 * Delete, inspect, list and verify of backups in a store go daemon → store, with no driver call.
 * @module
 */
import { CancelledError, ConvoyError, InvalidArgumentError } from "../api/errors.ts";
import type { BackupOperations, StringMap } from "../api/driver.ts";
import {
  OPT_COMPRESSION,
  OPT_ENDPOINT_URL,
  OPT_SNAPSHOT_CREATED_TIME,
  OPT_VOLUME_CREATED_TIME,
  OPT_VOLUME_NAME,
} from "../api/options.ts";
import type { VerifyReport } from "../api/plugin.ts";
import { decodeBackupURL } from "../backup/url.ts";
import { isBlockDriver } from "../plugins/block/driver.ts";
import { validateName } from "../util/names.ts";
import { unescapeBackupURL } from "../backup/url.ts";
import type { GcReport } from "../backup/gc.ts";
import { ServiceSnapshots } from "./service_snapshots.ts";

/** Backup create, verify, delete, inspect and list. */
export class ServiceBackups extends ServiceSnapshots {
  // ---- backups -------------------------------------------------------------------------------

  /** Backs up a snapshot to `destURL`; resolves to the backup URL. The volume stays usable meanwhile. */
  async createBackup(
    snapshotName: string,
    opts: { destURL: string; endpoint?: string; compression?: string; jobID?: string },
  ): Promise<string> {
    const action = `Cannot back up snapshot "${snapshotName}"`;
    if (!opts.destURL) throw new InvalidArgumentError(`${action}: no destination URL given`);
    const { volume: v, snapshot: s } = this.snapshot(snapshotName, action);
    const bops = await this.backupOps(v.Driver, action);
    this.backingUp.set(snapshotName, (this.backingUp.get(snapshotName) ?? 0) + 1);
    const destURL = unescapeBackupURL(opts.destURL);
    const job = this.jobs.start("backup", {
      volume: v.Name,
      snapshot: snapshotName,
      url: destURL,
      id: opts.jobID,
    });
    try {
      const d = this.driver(v.Driver, action);
      // Block drivers take the typed request; other drivers get Convoy's string map.
      const url = isBlockDriver(d)
        ? await d.block.backUp(snapshotName, v.Name, {
          destURL,
          endpoint: opts.endpoint || undefined,
          compression: opts.compression || undefined,
          signal: job.signal,
          progress: job.progress,
        })
        : await bops.createBackup(snapshotName, v.Name, destURL, {
          [OPT_VOLUME_NAME]: v.Name,
          [OPT_VOLUME_CREATED_TIME]: v.CreatedTime,
          [OPT_SNAPSHOT_CREATED_TIME]: s.CreatedTime,
          [OPT_ENDPOINT_URL]: opts.endpoint ?? "",
          [OPT_COMPRESSION]: opts.compression ?? "",
        }, { signal: job.signal, progress: job.progress });
      job.finish();
      this.log.info("backup created", { snapshot: snapshotName, url });
      return url;
    } catch (err) {
      job.finish(err);
      if (job.signal.aborted) throw new CancelledError(`${action}: cancelled`, { cause: err });
      throw err;
    } finally {
      const n = this.backingUp.get(snapshotName)! - 1;
      if (n) this.backingUp.set(snapshotName, n);
      else this.backingUp.delete(snapshotName);
    }
  }

  /** Checks a backup's blocks (or a sample) without restoring it. */
  async verifyBackup(
    url: string,
    opts: { endpoint?: string; sample?: number; jobID?: string } = {},
  ): Promise<VerifyReport> {
    url = unescapeBackupURL(url);
    let volume = "";
    try {
      volume = decodeBackupURL(url).volume;
    } catch {
      // verifyBackup reports the bad URL.
    }
    const job = this.jobs.start("verify", { volume, url, id: opts.jobID });
    try {
      const report = await this.backup.verifyBackup(url, {
        endpoint: opts.endpoint,
        sample: opts.sample,
        signal: job.signal,
        progress: job.progress,
      });
      job.finish();
      return report;
    } catch (err) {
      job.finish(err);
      throw err;
    }
  }

  /**
   * Backups in a store (vfs://, s3://) are deleted and inspected by the daemon itself, once the
   * driver that made them is known to be enabled with backups; other URLs (a driver's own kind,
   * e.g. ebs://) go to that driver.
   */
  async deleteBackup(url: string, opts: { endpoint?: string } = {}): Promise<void> {
    url = unescapeBackupURL(url);
    const action = `Cannot delete backup "${url}"`;
    const driver = await this.backupDriverOf(url, opts.endpoint, action);
    const bops = await this.backupOps(driver, action);
    if (this.isStoreURL(url)) await this.backup.deleteBackup(url, opts);
    else await bops.deleteBackup(url, { [OPT_ENDPOINT_URL]: opts.endpoint ?? "" });
    this.log.info("backup deleted", { url });
  }

  async inspectBackup(url: string, opts: { endpoint?: string } = {}): Promise<StringMap> {
    url = unescapeBackupURL(url);
    const action = `Cannot inspect backup "${url}"`;
    const driver = await this.backupDriverOf(url, opts.endpoint, action);
    const bops = await this.backupOps(driver, action);
    if (this.isStoreURL(url)) return await this.backup.getBackupInfo(url, opts);
    return await bops.getBackupInfo(url, { [OPT_ENDPOINT_URL]: opts.endpoint ?? "" });
  }

  /** Backups in `destURL` from every driver that makes backups, keyed by URL. */
  async listBackups(
    destURL: string,
    opts: { volumeName?: string; endpoint?: string } = {},
  ): Promise<Record<string, StringMap>> {
    if (!destURL) throw new InvalidArgumentError("Cannot list backups: no destination URL given");
    if (opts.volumeName) validateName(opts.volumeName, "volume");
    destURL = unescapeBackupURL(destURL);
    const inStore = this.isStoreURL(destURL);
    const out: Record<string, StringMap> = {};
    for (const [name, d] of this.drivers) {
      let bops: BackupOperations;
      try {
        bops = await d.backupOps();
      } catch (err) {
        if ((err as ConvoyError).code === "NotSupported") continue;
        throw err;
      }
      Object.assign(
        out,
        inStore
          ? await this.backup.listBackup(destURL, {
            driver: name,
            volumeName: opts.volumeName || undefined,
            endpoint: opts.endpoint || undefined,
          })
          : await bops.listBackup(destURL, {
            [OPT_VOLUME_NAME]: opts.volumeName ?? "",
            [OPT_ENDPOINT_URL]: opts.endpoint ?? "",
          }),
      );
      this.log.debug("backups listed", { driver: name });
    }
    return out;
  }

  /**
   * Removes unreferenced blocks and stale temporary objects in `destURL` (every volume, or
   * `opts.volumeName`); with `dryRun`, reports what it would remove.
   */
  async collectGarbage(
    destURL: string,
    opts: { volumeName?: string; endpoint?: string; dryRun?: boolean } = {},
  ): Promise<GcReport> {
    if (!destURL) {
      throw new InvalidArgumentError("Cannot collect garbage: no destination URL given");
    }
    if (opts.volumeName) validateName(opts.volumeName, "volume");
    const report = await this.backup.collectGarbage(unescapeBackupURL(destURL), opts);
    this.log.info(opts.dryRun ? "backup gc dry run" : "backup gc done", {
      dest: destURL,
      volumes: Object.keys(report.Volumes).length,
    });
    return report;
  }
}
