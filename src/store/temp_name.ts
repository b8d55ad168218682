/**
 * Names of vfs temp files (a write in progress, renamed into place when complete). A temp name
 * names its writer, so that a sweep can tell a killed writer's leftover at once:
 *
 *     .<name>.tmp-<boot>-<pidns>-<pid>-<start>-<8 hex>
 *
 * `<boot>` is the first 16 hex digits of the writer host's boot id, `<pidns>` the inode of its
 * pid namespace, `<pid>` and `<start>` its pid and start time (clock ticks since boot), and the
 * last part is random. Where /proc does not tell these (or the name would be too long), and in
 * names written by earlier versions, the temp name is `.<name>.tmp-<8 hex>`: its writer is unknown.
 * @module
 */
import { Buffer } from "node:buffer";
import { holderGone, thisHolder } from "../util/holder.ts";

/** A temp file's name, either form. */
export const TEMP_NAME = /^\..+\.tmp-(?:([0-9a-f]{16})-([0-9]+)-([0-9]+)-([0-9]+)-)?[0-9a-f]{8}$/;

/** The longest file name most file systems allow (bytes). */
const NAME_MAX = 255;

function compactBoot(boot: string): string {
  return boot.replaceAll("-", "").slice(0, 16);
}

/** A fresh temp file name for a write of the file `base`, naming this process. */
export async function tempName(base: string): Promise<string> {
  const rand = crypto.randomUUID().slice(0, 8);
  const me = await thisHolder();
  const ns = /^pid:\[([0-9]+)\]$/.exec(me.pidNS)?.[1];
  const boot = compactBoot(me.boot);
  if (ns && /^[0-9a-f]{16}$/.test(boot) && /^[0-9]+$/.test(me.start)) {
    const name = `.${base}.tmp-${boot}-${ns}-${me.pid}-${me.start}-${rand}`;
    if (Buffer.byteLength(name) <= NAME_MAX) return name;
  }
  return `.${base}.tmp-${rand}`;
}

/**
 * Whether `name` is a temp name whose writer is known to be gone: a process of this host, boot
 * and pid namespace that no longer runs (or whose pid is now another process). False for a live
 * writer, an unknown one (another host or boot or namespace, the short form) and a non-temp name.
 */
export async function tempWriterGone(name: string): Promise<boolean> {
  const m = TEMP_NAME.exec(name);
  if (!m || m[1] === undefined) return false;
  const me = await thisHolder();
  if (compactBoot(me.boot) !== m[1]) return false;
  return await holderGone({
    boot: me.boot,
    pidNS: `pid:[${m[2]}]`,
    pid: Number(m[3]),
    start: m[4],
  });
}
