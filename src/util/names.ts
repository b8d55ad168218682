import { InvalidArgumentError } from "../api/errors.ts";

/** The one name rule for volumes, snapshots and backups (Convoy's, plus a length limit). */
export const NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;
export const NAME_MAX_LENGTH = 255;

/** True when `name` is a valid volume, snapshot or backup name. */
export function isValidName(name: string): boolean {
  return name.length <= NAME_MAX_LENGTH && NAME_PATTERN.test(name);
}

/**
 * Throws InvalidArgumentError unless `name` is valid. `kind` names the object in the message.
 * @example validateName("db1", "volume")
 */
export function validateName(name: unknown, kind: string): string {
  if (typeof name !== "string" || name === "") {
    throw new InvalidArgumentError(`Invalid ${kind} name: name is empty`);
  }
  if (name.length > NAME_MAX_LENGTH) {
    throw new InvalidArgumentError(
      `Invalid ${kind} name "${name.slice(0, 32)}…": longer than ${NAME_MAX_LENGTH} characters`,
    );
  }
  if (!NAME_PATTERN.test(name)) {
    throw new InvalidArgumentError(
      `Invalid ${kind} name ${JSON.stringify(name)}: must be at least 2 characters of ` +
        `a-z, A-Z, 0-9, "_", "." or "-", starting with a letter or digit`,
    );
  }
  return name;
}

/**
 * A fresh name `<prefix>-<hex>`: the first `hexLength` (at most 32) hex digits of a new UUIDv4
 * without its dashes, as Convoy v0.5.2 makes them (16 digits, the 13th always "4").
 */
export function generateName(prefix: string, hexLength = 16): string {
  return `${prefix}-${randomHex(hexLength)}`;
}

/** `digits` (at most 32) hex digits: the start of a new UUIDv4 without its dashes. */
export function randomHex(digits: number): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, digits);
}
