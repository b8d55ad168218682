/**
 * Mount detection from a mountinfo table, by exact path (Convoy matched a substring of `mount`
 * output, so "/mounts/vol1" also matched "/mounts/vol10"). The table is this process's
 * (/proc/self/mountinfo) unless a caller names another source, e.g. that of the `--mnt-ns`
 * namespace (see mount_namespace.ts).
 * @module
 */
import type { MountEntry } from "../api/host.ts";
import { readFile, realpath, stat } from "node:fs/promises";
import { resolve } from "node:path";

/** This process's mount table. */
export const MOUNTINFO = "/proc/self/mountinfo";

/** Where a mount table is read from: a mountinfo file, or a function resolving to its text. */
export type MountInfoSource = string | (() => Promise<string>);

export type { MountEntry };

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
      device: fields[2],
    });
  }
  return out;
}

/** The mount points listed in a mountinfo text. */
export function parseMountPoints(text: string): Set<string> {
  return new Set(parseMountInfo(text).map((e) => e.mountPoint));
}

/** The mounts of `source` (default: this process's mount namespace), read now. */
export async function readMounts(source: MountInfoSource = MOUNTINFO): Promise<MountEntry[]> {
  return parseMountInfo(
    typeof source === "string" ? await readFile(source, "utf8") : await source(),
  );
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
  source: MountInfoSource = MOUNTINFO,
): Promise<MountEntry | undefined> {
  const canonical = await canonicalPath(path);
  const entries = (await readMounts(source)).filter((e) => e.mountPoint === canonical);
  return entries.at(-1);
}

/** True when `path` (symlinks resolved) is a mount point in `source`'s table. */
export async function isMountPoint(
  path: string,
  source: MountInfoSource = MOUNTINFO,
): Promise<boolean> {
  return (await mountAt(path, source)) !== undefined;
}

/** `major:minor` of a device number (`stat().rdev`), as mountinfo and dmsetup tables show it. */
export function devNumber(rdev: number): string {
  const major = (Math.floor(rdev / 256) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | (Math.floor(rdev / 4096) & ~0xff);
  return `${major >>> 0}:${minor >>> 0}`;
}

/** `major:minor` of the block device at `path`; undefined when it is none. */
export async function blockDeviceNumber(path: string): Promise<string | undefined> {
  if (!path.startsWith("/")) return undefined;
  try {
    const st = await stat(path);
    return st.isBlockDevice() ? devNumber(st.rdev) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * True when `entry` mounts the block device `device` (a path): by path, or by device number
 * (`number`, from blockDeviceNumber), as "/dev/mapper/x" and "/dev/dm-3" are one device.
 */
export function mountsDevice(
  entry: MountEntry,
  device: { path: string; number?: string },
): boolean {
  return entry.source === device.path ||
    (device.number !== undefined && entry.device === device.number);
}

/** Every mount point where the block device `device` is mounted, by whichever of its nodes. */
export async function mountsOf(
  device: string,
  source: MountInfoSource = MOUNTINFO,
): Promise<string[]> {
  if (!device) return [];
  const dev = { path: device, number: await blockDeviceNumber(device) };
  return (await readMounts(source)).filter((e) => mountsDevice(e, dev)).map((e) => e.mountPoint);
}
