/**
 * Option-value parsers and input normalisation for the CLI.
 *
 * Parsers given to commander throw commander's InvalidArgumentError, which commander reports
 * as a usage error (exit 2). Name checks throw Convoy's InvalidArgumentError (exit 1).
 *
 * @module
 */
import { unescapeBackupURL } from "../backup/url.ts";
import { InvalidArgumentError as CommanderArgumentError } from "@commander-js/extra-typings";
import { errorMessage } from "../api/errors.ts";
import { validateName } from "../util/names.ts";
import { parseSize } from "../util/sizes.ts";
import { parseDuration } from "../util/duration.ts";

/** Appends a repeatable option's value (`--drivers a --drivers=b`). */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}

/** `--size`: bytes or a number with K/M/G/T, as a number of bytes. */
export function sizeArg(value: string): number {
  try {
    return parseSize(value);
  } catch (err) {
    throw new CommanderArgumentError(errorMessage(err));
  }
}

/** A parser of a non-negative integer flag; `label` names it in the error. */
function intArg(label: string): (value: string) => number {
  return (value) => {
    const n = Number(value.trim());
    if (!/^\s*[0-9]+\s*$/.test(value) || !Number.isSafeInteger(n)) {
      throw new CommanderArgumentError(
        `Invalid ${label} ${JSON.stringify(value)}: expected an integer`,
      );
    }
    return n;
  };
}

/** `--iops`: a non-negative integer (Convoy silently turned garbage into 0; we refuse it). */
export const iopsArg = intArg("IOPS");

/** `--throughput`: a non-negative integer (MiB/s). */
export const throughputArg = intArg("throughput");

/**
 * Splits a `--driver-opts` entry on its first "=" (so values may contain "="). Throws when the
 * entry has no "=" or an empty key.
 * @example splitDriverOpt("vfs.path=/a=b") // ["vfs.path", "/a=b"]
 */
export function splitDriverOpt(entry: string): [string, string] {
  const eq = entry.indexOf("=");
  if (eq < 0) {
    throw new CommanderArgumentError(
      `Invalid driver option ${JSON.stringify(entry)}: expected key=value`,
    );
  }
  const key = entry.slice(0, eq).trim();
  if (key === "") {
    throw new CommanderArgumentError(
      `Invalid driver option ${JSON.stringify(entry)}: the key is empty`,
    );
  }
  return [key, entry.slice(eq + 1)];
}

/** `--driver-opts`: checks the entry and collects it unchanged. */
export function driverOptArg(value: string, previous: string[] | undefined): string[] {
  splitDriverOpt(value);
  return collect(value, previous);
}

/** `--cmd-timeout`: checks the duration syntax and keeps the text for the daemon. */
export function durationArg(value: string): string {
  try {
    parseDuration(value);
  } catch (err) {
    throw new CommanderArgumentError(errorMessage(err));
  }
  return value;
}

/** Validates a volume, snapshot or backup name given on the command line (exit 1 when bad). */
export function checkName(name: string, kind: string): string {
  return validateName(name, kind);
}

/**
 * Accepts the escaped form of a backup URL that Convoy printed (`\u0026` for "&"), and the form
 * a shell leaves when the backslash was not quoted (see unescapeBackupURL).
 */
export const normalizeBackupUrl = unescapeBackupURL;

/**
 * Replaces the `\u0026` escape of "&" in daemon output, so backup URLs are printed as they are
 * typed. Inside JSON this is an equivalent encoding; an escaped backslash (`\\u0026`) is kept.
 */
export function unescapeAmpersands(text: string): string {
  return text.replace(/(?<!\\)((?:\\\\)*)\\u0026/g, "$1&");
}
