import { InvalidArgumentError } from "../api/errors.ts";

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * Parses a Go-style duration ("90s", "1m", "2m30s", "1h") or plain seconds ("90") into
 * milliseconds; throws InvalidArgumentError.
 */
export function parseDuration(input: string): number {
  const s = input.trim();
  if (/^[0-9]+$/.test(s)) return Number(s) * 1000;
  const re = /([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    total += Number(m[1]) * UNIT_MS[m[2]];
    pos = re.lastIndex;
  }
  if (s === "" || pos !== s.length) {
    throw new InvalidArgumentError(
      `Invalid duration ${JSON.stringify(input)}: expected a value such as "90s", "2m" or "1h30m"`,
    );
  }
  return Math.round(total);
}
