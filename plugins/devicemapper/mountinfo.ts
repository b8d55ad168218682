/**
 * Mount detection from /proc/self/mountinfo, by exact path and by device number (Convoy matched
 * a substring of `mount` output, so "/mounts/vol1" also matched "/mounts/vol10"). Device numbers
 * are compared rather than source paths: "/dev/mapper/x" and "/dev/dm-3" are the same device.
 * @module
 */
import { readFile, realpath } from "node:fs/promises";
import { resolve } from "node:path";

const MOUNTINFO = "/proc/self/mountinfo";

/** One line of mountinfo. */
export interface MountEntry {
  /** Where it is mounted (field 5). */
  mountPoint: string;
  /** `major:minor` of the mounted device (field 3). */
  device: string;
  /** The mount source after the " - " separator, e.g. "/dev/mapper/convoy-pool-vol1". */
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
      device: fields[2],
      fstype: sep > 0 ? unescapeMountField(fields[sep + 1] ?? "") : "",
      source: sep > 0 ? unescapeMountField(fields[sep + 2] ?? "") : "",
    });
  }
  return out;
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
  return (await readMounts(mountinfo)).filter((e) => e.mountPoint === canonical).at(-1);
}

/** Every mount point of the device `major:minor`. */
export async function mountsOf(device: string, mountinfo = MOUNTINFO): Promise<string[]> {
  if (!device) return [];
  return (await readMounts(mountinfo)).filter((e) => e.device === device).map((e) => e.mountPoint);
}
