/**
 * Backup URLs: `<destURL>?backup=<backup>&volume=<volume>` (Convoy's url.Values encoding: keys
 * sorted, so `backup` comes first).
 * @module
 */
import { InvalidArgumentError } from "../api/errors.ts";
import { isValidName } from "../util/names.ts";

export { normalizeDestURL } from "../store/dest_url.ts";

/** The parts of a backup URL. */
export interface BackupRef {
  /** The backup name, e.g. "backup-0123456789abcdef". */
  backup: string;
  /** The volume name. */
  volume: string;
  /** The store URL, without the query. */
  destURL: string;
}

const NAME_RULE = 'must be at least 2 characters of a-z, A-Z, 0-9, "_", "." or "-", ' +
  "starting with a letter or digit";

/** `<destURL>?backup=<backup>&volume=<volume>`; throws InvalidArgumentError for bad names. */
export function encodeBackupURL(ref: BackupRef): string {
  for (const [kind, name] of [["backup", ref.backup], ["volume", ref.volume]]) {
    if (!isValidName(name)) {
      throw new InvalidArgumentError(
        `Cannot build backup URL: ${kind} name "${name}" ${NAME_RULE}`,
      );
    }
  }
  return `${ref.destURL}?backup=${encodeURIComponent(ref.backup)}&volume=${
    encodeURIComponent(ref.volume)
  }`;
}

/**
 * Turns the escaped separators users paste from old Convoy output back into "&": the literal
 * six characters `\u0026`, or `u0026` after a shell ate the backslash. Every occurrence in the
 * query that precedes a `key=` is replaced; names containing "u0026" are left alone.
 */
export function unescapeBackupURL(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  return url.slice(0, q + 1) + url.slice(q + 1).replace(/\\?u0026(?=[A-Za-z0-9_]+=)/g, "&");
}

/**
 * Splits a backup URL into destination, backup and volume; accepts the escaped forms (see
 * unescapeBackupURL). Throws InvalidArgumentError when a part is missing or a name is invalid.
 */
export function decodeBackupURL(url: string): BackupRef {
  const s = unescapeBackupURL(url.trim());
  const q = s.indexOf("?");
  const fail = (why: string) => new InvalidArgumentError(`Invalid backup URL "${url}": ${why}`);
  if (q < 0) throw fail('missing "?backup=<name>&volume=<name>"');
  const destURL = s.slice(0, q);
  if (destURL === "") throw fail("missing the destination before the query");
  const params = new URLSearchParams(s.slice(q + 1).replace(/#.*$/, ""));
  const backup = params.get("backup");
  const volume = params.get("volume");
  if (backup === null || backup === "") throw fail('missing the "backup" parameter');
  if (volume === null || volume === "") throw fail('missing the "volume" parameter');
  if (!isValidName(backup)) throw fail(`backup name "${backup}" ${NAME_RULE}`);
  if (!isValidName(volume)) throw fail(`volume name "${volume}" ${NAME_RULE}`);
  return { backup, volume, destURL };
}
