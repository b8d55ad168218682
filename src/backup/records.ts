/**
 * The JSON records of a backup store: `volume.cfg` and `backups/backup_<name>.cfg`, written as
 * Convoy's Go `json.Marshal` does (field order, compact, no trailing newline). Reading accepts
 * what Convoy v0.5.2 wrote, and unknown fields, which are kept when a record is rewritten.
 * @module
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { BackendError } from "../api/errors.ts";

/** A record in the store is not valid JSON or not a valid record. */
export class RecordParseError extends BackendError {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "RecordParseError";
  }
}

/** A Go string field: missing or null reads as "". */
const goString = z.string().nullish().transform((v) => v ?? "");
/** A Go int64 field: missing or null reads as 0. */
const goInt = z.number().int().nullish().transform((v) => v ?? 0);

/** One 2 MiB block of a delta-block backup. */
export const BlockMappingSchema = z.looseObject({
  Offset: z.number().int().nonnegative(),
  BlockChecksum: z.string().regex(/^[0-9a-f]{64}$/),
});
export type BlockMapping = z.output<typeof BlockMappingSchema>;

/** volume.cfg. */
export const VolumeRecordSchema = z.looseObject({
  Name: z.string().min(1),
  Driver: goString,
  /** Bytes; 0 for file-level (vfs) volumes. */
  Size: goInt,
  CreatedTime: goString,
  /** Set by delta-block backups only: the base of the next incremental backup. */
  LastBackupName: goString,
});
export type VolumeRecord = z.output<typeof VolumeRecordSchema>;

/** backup_<name>.cfg. `Blocks` is empty for single-file backups, `SingleFile.FilePath` for delta. */
export const BackupRecordSchema = z.looseObject({
  Name: z.string().min(1),
  /** Never filled in by Convoy; always "". */
  Driver: goString,
  VolumeName: z.string().min(1),
  SnapshotName: goString,
  SnapshotCreatedAt: goString,
  CreatedTime: goString,
  Blocks: z.array(BlockMappingSchema).nullish().transform((v) => v ?? []),
  SingleFile: z.looseObject({ FilePath: goString }).nullish().transform((v) =>
    v ?? { FilePath: "" }
  ),
});
export type BackupRecord = z.output<typeof BackupRecordSchema>;

/** JSON.stringify with Go's HTML-safe escaping of <, >, &, U+2028 and U+2029. */
export function goJSON(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

function parseRecord<S extends z.ZodType>(
  schema: S,
  data: Uint8Array | string,
  opts: { kind: string; where: string },
): z.output<S> {
  const what = `Cannot parse ${opts.kind} "${opts.where}"`;
  let json: unknown;
  try {
    json = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
  } catch (err) {
    throw new RecordParseError(`${what}: not valid JSON`, { cause: err });
  }
  const res = schema.safeParse(json);
  if (!res.success) {
    const issues = res.error.issues.map((i) => `${i.path.join(".") || "record"}: ${i.message}`);
    throw new RecordParseError(`${what}: ${issues.join("; ")}`, { cause: res.error });
  }
  return res.data;
}

/** Parses volume.cfg; throws RecordParseError naming `where` when it is not a valid record. */
export function parseVolumeRecord(data: Uint8Array | string, where: string): VolumeRecord {
  return parseRecord(VolumeRecordSchema, data, { kind: "volume record", where });
}

/** Parses backup_<name>.cfg; throws RecordParseError naming `where` when it is not a valid record. */
export function parseBackupRecord(data: Uint8Array | string, where: string): BackupRecord {
  return parseRecord(BackupRecordSchema, data, { kind: "backup record", where });
}

/** volume.cfg bytes: `{"Name","Driver","Size","CreatedTime","LastBackupName",…unknown}`. */
export function serializeVolumeRecord(v: VolumeRecord): string {
  const { Name, Driver, Size, CreatedTime, LastBackupName, ...extra } = v;
  return goJSON({ Name, Driver, Size, CreatedTime, LastBackupName, ...extra });
}

/**
 * backup_<name>.cfg bytes: `{"Name","Driver","VolumeName","SnapshotName","SnapshotCreatedAt",
 * "CreatedTime","Blocks"(omitted when empty),"SingleFile":{"FilePath"},…unknown}`.
 */
export function serializeBackupRecord(b: BackupRecord): string {
  const {
    Name,
    Driver,
    VolumeName,
    SnapshotName,
    SnapshotCreatedAt,
    CreatedTime,
    Blocks,
    SingleFile,
    ...extra
  } = b;
  const { FilePath, ...fileExtra } = SingleFile;
  return goJSON({
    Name,
    Driver,
    VolumeName,
    SnapshotName,
    SnapshotCreatedAt,
    CreatedTime,
    ...(Blocks.length > 0
      ? {
        Blocks: Blocks.map(({ Offset, BlockChecksum, ...x }) => ({ Offset, BlockChecksum, ...x })),
      }
      : {}),
    SingleFile: { FilePath, ...fileExtra },
    ...extra,
  });
}

/** True for a single-file backup (an archive at `SingleFile.FilePath`). */
export function isSingleFileBackup(b: BackupRecord): boolean {
  return b.SingleFile.FilePath !== "";
}

/**
 * Our addition to backup_<name>.cfg (Convoy's decoder ignores it): `"sha256:<hex>"`, the SHA-256
 * of the record as serializeBackupRecord writes it with this field removed (the UTF-8 bytes of
 * that compact, Go-escaped JSON in Convoy's field order). Re-serializing a parsed record gives the
 * same bytes, so a reader checks it with recordChecksumProblem.
 */
export const RECORD_CHECKSUM_FIELD = "RecordChecksum";

/** The RecordChecksum value of `b` (ignoring any RecordChecksum it has). */
export function recordChecksum(b: BackupRecord): string {
  const { [RECORD_CHECKSUM_FIELD]: _, ...rest } = b as BackupRecord & Record<string, unknown>;
  const json = serializeBackupRecord(rest as BackupRecord);
  return `sha256:${createHash("sha256").update(json, "utf8").digest("hex")}`;
}

/** `b` with its RecordChecksum set (last field of the record). */
export function withRecordChecksum(b: BackupRecord): BackupRecord {
  const { [RECORD_CHECKSUM_FIELD]: _, ...rest } = b as BackupRecord & Record<string, unknown>;
  return { ...rest, [RECORD_CHECKSUM_FIELD]: recordChecksum(b) } as BackupRecord;
}

/**
 * Why `b` cannot be trusted: its RecordChecksum is malformed or does not match its content;
 * undefined when it matches or when the record has none (Convoy's, or written before).
 */
export function recordChecksumProblem(b: BackupRecord): string | undefined {
  const have = (b as Record<string, unknown>)[RECORD_CHECKSUM_FIELD];
  if (have === undefined) return undefined;
  if (typeof have !== "string") return `its ${RECORD_CHECKSUM_FIELD} is not a string`;
  const want = recordChecksum(b);
  return have === want
    ? undefined
    : `its content does not match its ${RECORD_CHECKSUM_FIELD} (altered after it was written)`;
}
