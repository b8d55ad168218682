/**
 * Mount detection from /proc/self/mountinfo, by exact path (Convoy matched a substring of
 * `mount` output, so "/mounts/vol1" also matched "/mounts/vol10").
 * @module
 */
import { readFile, realpath } from "node:fs/promises";
import { resolve } from "node:path";

const MOUNTINFO = "/proc/self/mountinfo";

/** One line of mountinfo. */
export interface MountEntry {
  /** Where it is mounted (field 5). */
  mountPoint: string;
  /** The mount source after the " - " separator, e.g. "/dev/loop3". */
  source: string;
  fstype: string;
}

/** Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash) of a mountinfo field. */
export function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The entries of a mountinfo text. */
export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    if (fields.length < 5) continue;
    const sep = fields.indexOf("-", 6);
    out.push({
      mountPoint: unescapeMountField(fields[4]),
      fstype: sep > 0 ? unescapeMountField(fields[sep + 1] ?? "") : "",
      source: sep > 0 ? unescapeMountField(fields[sep + 2] ?? "") : "",
    });
  }
  return out;
}

/** The mount points listed in a mountinfo text. */
export function parseMountPoints(text: string): Set<string> {
  return new Set(parseMountInfo(text).map((e) => e.mountPoint));
}

/** The mounts of this process's mount namespace. */
export async function readMounts(mountinfo = MOUNTINFO): Promise<MountEntry[]> {
  return parseMountInfo(await readFile(mountinfo, "utf8"));
}

/** `path` with symlinks resolved (as the kernel reports mount points), or just resolved. */
export async function canonicalPath(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch {
    return resolve(path);
  }
}

/** The entry mounted at exactly `path` (the topmost one when stacked), or undefined. */
export async function mountAt(
  path: string,
  mountinfo = MOUNTINFO,
): Promise<MountEntry | undefined> {
  const canonical = await canonicalPath(path);
  const entries = (await readMounts(mountinfo)).filter((e) => e.mountPoint === canonical);
  return entries.at(-1);
}

/** True when `path` (symlinks resolved) is a mount point in this process's mount namespace. */
export async function isMountPoint(path: string, mountinfo = MOUNTINFO): Promise<boolean> {
  return (await mountAt(path, mountinfo)) !== undefined;
}

/** Every mount point where `device` is mounted. */
export async function mountsOf(device: string, mountinfo = MOUNTINFO): Promise<string[]> {
  if (!device) return [];
  return (await readMounts(mountinfo)).filter((e) => e.source === device).map((e) => e.mountPoint);
}
