/**
 * Who a process is, as leases and temp-file names record it: host name, boot id, pid namespace,
 * pid and process start time; and whether such a process is known to be gone. Only a process of
 * this host, in this boot and pid namespace can be checked (through /proc); any other is unknown.
 * @module
 */
import { readFile, readlink } from "node:fs/promises";
import { hostname } from "node:os";

/** A process as a lease or temp name records it; "" where /proc did not tell. */
export interface Holder {
  host: string;
  pid: number;
  /** /proc/sys/kernel/random/boot_id of the process's host. */
  boot: string;
  /** The process's pid namespace (`pid:[…]` of /proc/self/ns/pid). */
  pidNS: string;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22). */
  start: string;
}

async function readText(path: string): Promise<string> {
  try {
    return (await readFile(path, "utf8")).trim();
  } catch {
    return "";
  }
}

/** Field 22 (starttime) of /proc/PID/stat, or "" when there is no such process. */
export async function processStart(pid: number): Promise<string> {
  const stat = await readText(`/proc/${pid}/stat`);
  // Field 2 (comm) may hold spaces and ")": the fields after it follow the last ")".
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return stat ? rest[22 - 3] ?? "" : "";
}

let self: Promise<Holder> | undefined;

/** This process as a holder (boot id etc. are "" where /proc does not tell). */
export function thisHolder(): Promise<Holder> {
  self ??= (async () => ({
    host: hostname(),
    pid: process.pid,
    boot: await readText("/proc/sys/kernel/random/boot_id"),
    pidNS: await readlink("/proc/self/ns/pid").catch(() => ""),
    start: await processStart(process.pid),
  }))();
  return self;
}

/**
 * Whether the process `h` names is known to be gone: true only when it ran on this host (when
 * `h.host` is given), in this boot and pid namespace, and its pid is now no process or another
 * process (another start time). False when it lives, or when this cannot be told (another host or
 * boot or namespace, fields missing).
 */
export async function holderGone(
  h: { host?: string; boot?: string; pidNS?: string; pid: number; start?: string },
): Promise<boolean> {
  const me = await thisHolder();
  const checkable = !!h.boot && !!h.pidNS && !!h.start && !!me.boot && !!me.pidNS && !!me.start &&
    (h.host === undefined || h.host === me.host) && h.boot === me.boot && h.pidNS === me.pidNS;
  if (!checkable) return false;
  return await processStart(h.pid) !== h.start;
}
