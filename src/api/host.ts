/**
 * Types of the host services a plugin receives (exec, logging, mount table entries), declared
 * here so that the API depends on nothing else in src/; the host's implementations (src/runtime,
 * src/util) use these types.
 * @module
 */
import type { z } from "zod";

/** Options of one external command. */
export interface ExecOptions {
  /** Kill the command after this many milliseconds (default: the daemon's --cmd-timeout). */
  timeoutMs?: number;
  /** Written to the command's stdin. */
  input?: string | Uint8Array;
  signal?: AbortSignal;
  cwd?: string;
  env?: Record<string, string>;
}

/** What a finished command printed. */
export interface ExecResult {
  stdout: string;
  stderr: string;
}

/** Runs one external command; the signature of the exec helper handed to drivers. */
export type Exec = (cmd: string, args: string[], opts?: ExecOptions) => Promise<ExecResult>;

/** Structured fields of a log line. */
export type LogFields = Record<string, unknown>;

/** A structured logger; `child()` adds fields to every line. */
export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

/** One line of mountinfo. */
export interface MountEntry {
  /** Where it is mounted (field 5). */
  mountPoint: string;
  /** The mount source after the " - " separator, e.g. "/dev/loop3". */
  source: string;
  fstype: string;
  /**
   * The device number "major:minor" (field 3): that of the block device for ext4 and xfs, so
   * "/dev/mapper/x" and "/dev/dm-3" mounts compare equal. Absent in hand-made entries.
   */
  device?: string;
}

/** What `api.util.readFull` reads from: an open file (Node's FileHandle is one). */
export interface ReadableFile {
  read(
    buffer: Uint8Array,
    offset: number,
    length: number,
    position: number,
  ): Promise<{ bytesRead: number }>;
}

/**
 * Zod schemas of option strings that every driver reads the same way (`api.util.schemas`); the
 * request schemas accept keys they do not name (a driver may read more).
 */
export interface OptionSchemas {
  /** A boolean flag as a string ("true", "1", "yes"...); "" and a missing key are false. */
  flag: z.ZodType<boolean, unknown>;
  /** A size string ("10G", "1048576") in bytes; "" and "0" are 0 (unset). */
  size: z.ZodType<number, string>;
  /** createVolume's common options: size, and the backup to restore from. */
  createVolume: z.ZodObject<{
    Size: z.ZodOptional<z.ZodType<number, string>>;
    BackupURL: z.ZodOptional<z.ZodString>;
    EndpointURL: z.ZodOptional<z.ZodString>;
  }, z.core.$loose>;
  /** deleteVolume's options. */
  deleteVolume: z.ZodObject<{ ReferenceOnly: z.ZodType<boolean, unknown> }, z.core.$loose>;
  /** The options of the backup operations. */
  backup: z.ZodObject<{
    EndpointURL: z.ZodOptional<z.ZodString>;
    VolumeName: z.ZodOptional<z.ZodString>;
    Compression: z.ZodOptional<z.ZodString>;
  }, z.core.$loose>;
}
