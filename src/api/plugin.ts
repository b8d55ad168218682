/**
 * What the host hands a plugin's `setup(api)`. Plugins use `import type` only and take every
 * runtime value (register, zod, exec, errors, backup store helpers) from `api`, so the same file
 * loads under deno run, Node and the single binaries.
 * @module
 */
import type { z } from "zod";
import type { DeltaBlockOperations, InitFunc, OperationContext, StringMap } from "./driver.ts";
import type * as errors from "./errors.ts";
import type { Exec } from "../runtime/exec.ts";
import type { Logger } from "../util/log.ts";

export type { Exec, ExecOptions, ExecResult } from "../runtime/exec.ts";
export type { LogFields, Logger } from "../util/log.ts";

/** The plugin API version this host implements. */
export const PLUGIN_API_VERSION = 1;

/** The volume record kept in a backup store (volume.cfg). */
export interface BackupVolume {
  name: string;
  driver: string;
  /** Bytes; 0 for file-level (vfs) volumes. */
  size: number;
  createdTime: string;
  /**
   * A stable identity of this volume (e.g. a UUID made at create). Incremental backups only
   * build on earlier backups with the same identity, so two volumes that share a name (other
   * hosts, or a re-created volume) never merge each other's blocks.
   */
  uuid?: string;
}

/** Options of `api.backup.createDeltaBackup`. */
export interface DeltaBackupOptions extends OperationContext {
  volume: BackupVolume;
  snapshot: { name: string; createdTime: string };
  destURL: string;
  endpoint?: string;
  /** Block compression for a new store: "gzip" (readable by Convoy v0.5.2) or "zstd". */
  compression?: string;
}

/** Options of `api.backup.restoreDeltaBackup`. */
export interface DeltaRestoreOptions extends BackupTargetOptions {
  /** Bytes of the target to keep; a regular-file target is truncated to the volume size. */
  truncate?: boolean;
}

/** What `verifyBackup` found. */
export interface VerifyReport {
  backupURL: string;
  blocks: number;
  checked: number;
  bytes: number;
  /** One line per missing or corrupt block; empty when the backup is sound. */
  problems: string[];
}

/** Options of the backup helpers that address an existing backup. */
export interface BackupTargetOptions extends OperationContext {
  endpoint?: string;
}

/** Options of `api.backup.createSingleFileBackup`. */
export interface SingleFileBackupOptions extends OperationContext {
  volume: BackupVolume;
  snapshot: { name: string; createdTime: string };
  destURL: string;
  endpoint?: string;
}

/**
 * Backup store helpers (Convoy's objectstore package): the host owns the stores (vfs://, s3://),
 * their layout and URL format; drivers call these from their BackupOperations.
 */
export interface BackupStoreApi {
  /**
   * Uploads `file` (a local archive) as a single-file backup of `opts.volume`, writes the backup
   * record, then the volume record, and resolves to the backup URL.
   */
  createSingleFileBackup(file: string, opts: SingleFileBackupOptions): Promise<string>;
  /** Downloads the archive of a single-file backup into `targetFile`. */
  restoreSingleFileBackup(
    backupURL: string,
    targetFile: string,
    opts?: BackupTargetOptions,
  ): Promise<void>;
  /** The volume record of the backup's volume; throws NotFoundError when the backup does not exist. */
  getBackupVolume(backupURL: string, opts?: BackupTargetOptions): Promise<BackupVolume>;
  /**
   * Backs up snapshot `opts.snapshot` of a block volume in Convoy's delta-block format: only
   * the ranges `ops.compareSnapshot` reports changed since the volume's last backup are read;
   * blocks are deduplicated, all-zero blocks are not stored. Resolves to the backup URL.
   */
  createDeltaBackup(ops: DeltaBlockOperations, opts: DeltaBackupOptions): Promise<string>;
  /** Writes every block of a delta-block backup into `target` (a file or block device), verifying checksums. */
  restoreDeltaBackup(backupURL: string, target: string, opts?: DeltaRestoreOptions): Promise<void>;
  /** Checks that every block (or a `sample` fraction) of a backup is present and sound. */
  verifyBackup(
    backupURL: string,
    opts?: BackupTargetOptions & { sample?: number },
  ): Promise<VerifyReport>;
  /** Deletes one backup, and the volume's folder in the store when it was the last. */
  deleteBackup(backupURL: string, opts?: BackupTargetOptions): Promise<void>;
  /** Convoy's BackupInfo map of one backup. */
  getBackupInfo(backupURL: string, opts?: BackupTargetOptions): Promise<StringMap>;
  /** BackupInfo maps keyed by backup URL, for volumes recorded with `opts.driver`. */
  listBackup(
    destURL: string,
    opts: { driver: string; volumeName?: string; endpoint?: string },
  ): Promise<Record<string, StringMap>>;
}

/** Small helpers shared with drivers. */
export interface PluginUtil {
  /** Bytes from "10G", "512M", "1048576"; throws InvalidArgumentError. */
  parseSize(input: string): number;
  /** Throws InvalidArgumentError unless `name` follows the name rule. */
  validateName(name: unknown, kind: string): string;
  /** Go RubyDate in local time, as every Convoy CreatedTime. */
  now(): string;
  /** Atomic JSON write: temp file, fsync, rename. */
  writeJSON(path: string, value: unknown): Promise<void>;
  /** Parsed JSON, or undefined when the file does not exist. */
  readJSON<T = unknown>(path: string): Promise<T | undefined>;
  /**
   * Parses a driver's string options with a zod schema; throws InvalidArgumentError naming
   * every bad key.
   */
  parseOptions<S extends z.ZodType>(schema: S, raw: StringMap, what: string): z.output<S>;
}

/** The object passed to a plugin's default export. */
export interface PluginApi {
  apiVersion: number;
  /** Records a driver. A second registration of a name is an error. */
  register(name: string, init: InitFunc): void;
  log: Logger;
  deps: { z: typeof z };
  exec: Exec;
  errors: typeof errors;
  util: PluginUtil;
  backup: BackupStoreApi;
}

/** The shape of a plugin module's default export. */
export type PluginSetup = (api: PluginApi) => void | Promise<void>;
