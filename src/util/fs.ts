import { chmod, lstat, mkdir, open, readFile, rename, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { ReadableFile } from "../api/host.ts";

/**
 * Writes `data` to `path` atomically: a temp file beside it, fsync, rename, fsync of the
 * directory. A reader sees the old content or the new, never a part.
 */
export async function atomicWriteFile(path: string, data: string | Uint8Array): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${basename(path)}.tmp-${process.pid}-${crypto.randomUUID().slice(0, 8)}`);
  const fh = await open(tmp, "w", 0o644);
  try {
    await fh.chmod(0o644); // regardless of the umask: shared (NFS) records must stay readable
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dir);
}

/** fsyncs a directory so a rename in it survives a crash; ignored where unsupported. */
export async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, "r");
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some filesystems (and runtimes) refuse fsync on a directory; the rename is still atomic.
  }
}

/** Writes JSON atomically, compact with a trailing newline (as Go's json.Encoder). */
export function atomicWriteJSON(path: string, value: unknown): Promise<void> {
  return atomicWriteFile(path, JSON.stringify(value) + "\n");
}

/** Reads and parses a JSON file; resolves to `undefined` only when the file does not exist. */
export async function readJSONFile<T = unknown>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  return JSON.parse(text) as T;
}

/** True when `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}

/** Creates `path` and its missing parents with mode 0755, whatever the umask. */
export async function ensureDir(path: string): Promise<void> {
  const first = await mkdir(path, { recursive: true, mode: 0o755 });
  if (first === undefined) return;
  for (let p = path;; p = dirname(p)) {
    await chmod(p, 0o755);
    if (p === first || p === dirname(p)) break;
  }
}

/** The `code` of a Node error ("ENOENT"), or undefined. */
export function errno(err: unknown): string | undefined {
  return (err as { code?: string } | null)?.code;
}

/**
 * Fills `at.buf` from byte `at.pos` of `fh`; what lies past the end of the file reads as zeros.
 * Resolves to the bytes read.
 */
export async function readFull(
  fh: ReadableFile,
  at: { buf: Uint8Array; pos: number },
): Promise<number> {
  const { buf, pos } = at;
  let off = 0;
  while (off < buf.length) {
    const { bytesRead } = await fh.read(buf, off, buf.length - off, pos + off);
    if (bytesRead === 0) break;
    off += bytesRead;
  }
  if (off < buf.length) buf.fill(0, off);
  return off;
}
