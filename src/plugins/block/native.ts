/**
 * Native backups across block drivers: the block drivers of one daemon share a registry of
 * their adapters' backup URL schemes, so that a volume of one block driver is restored from
 * another's native backup (e.g. an ebs:// snapshot into a loop volume) through the owning
 * adapter's `NativeBackups.open`, and the bytes are copied into the new device.
 * @module
 */
import { type FileHandle, open, stat } from "node:fs/promises";
import type { BlockCallContext, NativeBackupReader } from "../../api/block.ts";
import type { OperationContext } from "../../api/driver.ts";
import { BLOCK_SIZE, isZero } from "../../backup/codec.ts";
import { blockOffsets } from "../../backup/deltablock.ts";
import { pool } from "../../util/pool.ts";
import { readFull } from "../../util/fs.ts";

/** Opens a native backup of a registered driver. */
export type OpenNativeBackup = (url: string, ctx?: BlockCallContext) => Promise<NativeBackupReader>;

/** The block drivers' native backup schemes of one daemon. */
export class NativeBackupRegistry {
  #schemes = new Map<string, { driver: string; open?: OpenNativeBackup }>();

  /** Registers `driver`'s schemes; the returned function removes them again. */
  add(driver: string, schemes: string[], open: OpenNativeBackup | undefined): () => void {
    const entry = { driver, open };
    for (const s of schemes) this.#schemes.set(s, entry);
    return () => {
      for (const s of schemes) if (this.#schemes.get(s) === entry) this.#schemes.delete(s);
    };
  }

  /** The driver owning URL scheme `scheme` (without ":"), and its opener when it has one. */
  get(scheme: string): { driver: string; open?: OpenNativeBackup } | undefined {
    return this.#schemes.get(scheme);
  }
}

/** Parallel reads of a remote reader. */
const COPY_CONCURRENCY = 4;

/**
 * Copies the mapped ranges of `r` into `target` (a fresh file or device, sized to `r.size` when
 * a file) in 2 MiB blocks; all-zero blocks are not written, so a fresh target keeps its holes.
 */
export async function copyNativeBackup(
  r: NativeBackupReader,
  target: string,
  ctx?: OperationContext,
): Promise<void> {
  // A SnapshotSource is read at multiples of 2 MiB, at most 2 MiB at a time.
  const list = blockOffsets(r.mappings, r.size);
  const src = r.source;
  const srcFile = src.kind === "reader" ? undefined : await open(src.path, "r");
  let fh: FileHandle | undefined;
  try {
    const isFile = (await stat(target)).isFile();
    fh = await open(target, "r+");
    if (isFile) await fh.truncate(r.size);
    const out = fh;
    const progress = { done: 0, total: list.length, bytes: 0 };
    await pool(list, { concurrency: COPY_CONCURRENCY, signal: ctx?.signal }, async (offset) => {
      const data = new Uint8Array(Math.min(BLOCK_SIZE, r.size - offset));
      if (src.kind === "reader") await src.read(offset, data, { signal: ctx?.signal });
      else await readFull(srcFile!, { buf: data, pos: offset });
      if (!isZero(data)) {
        for (let done = 0; done < data.length;) {
          const { bytesWritten } = await out.write(data, done, data.length - done, offset + done);
          done += bytesWritten;
        }
      }
      progress.done++;
      progress.bytes += data.length;
      ctx?.progress?.({ ...progress });
    });
    await fh.sync();
  } finally {
    await fh?.close();
    await srcFile?.close();
  }
}
