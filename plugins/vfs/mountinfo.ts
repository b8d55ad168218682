/**
 * Mount detection from /proc/self/mountinfo, by exact path (Convoy matched a substring of
 * `mount` output, so "/mounts/vol1" also matched "/mounts/vol10").
 * @module
 */
import { readFile, realpath } from "node:fs/promises";
import { resolve } from "node:path";

const MOUNTINFO = "/proc/self/mountinfo";

/** Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) of a mountinfo field. */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The mount points listed in a mountinfo text (the fifth field of each line). */
export function parseMountPoints(text: string): Set<string> {
  const points = new Set<string>();
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length >= 5) points.add(unescapeMountField(fields[4]));
  }
  return points;
}

/**
 * True when `path` (after resolving symlinks, as the kernel reports it) is a mount point in
 * this process's mount namespace.
 */
export async function isMountPoint(path: string, mountinfo = MOUNTINFO): Promise<boolean> {
  let canonical: string;
  try {
    canonical = await realpath(path);
  } catch {
    canonical = resolve(path);
  }
  return parseMountPoints(await readFile(mountinfo, "utf8")).has(canonical);
}
