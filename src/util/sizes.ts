import { InvalidArgumentError } from "../api/errors.ts";

const UNITS: Record<string, number> = { k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * Parses a size in bytes or with a K/M/G/T suffix (powers of 1024), as Convoy's ParseSize, but
 * rejecting negative, fractional and unsafe values. An empty string is 0.
 * @example parseSize("100m") // 104857600
 */
export function parseSize(input: string): number {
  const s = input.trim().toLowerCase();
  if (s === "") return 0;
  const m = /^([0-9]+)([kmgt]?)(i?b)?$/.exec(s);
  if (!m || (m[3] && !m[2] && m[3] !== "b")) {
    throw new InvalidArgumentError(
      `Invalid size ${JSON.stringify(input)}: expected bytes or a number with K, M, G or T`,
    );
  }
  const value = Number(m[1]) * (m[2] ? UNITS[m[2]] : 1);
  if (!Number.isSafeInteger(value)) {
    throw new InvalidArgumentError(`Invalid size ${JSON.stringify(input)}: too large`);
  }
  return value;
}
