/**
 * One block of a delta-block backup in the store, read back: whether a stored block can be
 * reused (storedBlockIsGood, trustedBlocks), checked (checkBlockFile, for verify) or written to a
 * target (restoreBlock); the errors name the backup and the block.
 * @module
 */
import { BackendError, errorMessage, isErrorCode, NotFoundError } from "../api/errors.ts";
import type { ObjectStore } from "../store/types.ts";
import { BLOCK_SIZE, type ChecksumAlgorithm } from "./codec.ts";
import { checkBlock, TargetWriteError, unpackBlockTo } from "./codec_pool.ts";
import { blockPath } from "./layout.ts";
import { referencedBlocks } from "./gc.ts";
import type { BlockMapping } from "./records.ts";

/** Blocks in flight at once: bounds memory to about this many × 2 × 2 MiB. */
export const DEFAULT_CONCURRENCY = 8;

/** Checksums of the blocks that the volume's readable backup records reference. */
export async function trustedBlocks(store: ObjectStore, volume: string): Promise<Set<string>> {
  const r = await referencedBlocks(store, volume, { skipUnreadable: true });
  return "refs" in r ? r.refs : new Set();
}

/**
 * Whether the object at `key` unpacks to a whole block with checksum `sum` (what verify and
 * restore will check). A missing or undecodable object is not.
 */
export async function storedBlockIsGood(
  store: ObjectStore,
  key: string,
  opts: { sum: string; algo: ChecksumAlgorithm },
): Promise<boolean> {
  let raw: Uint8Array;
  try {
    raw = await store.read(key);
  } catch (err) {
    if (isErrorCode(err, "NotFound")) return false;
    throw err;
  }
  try {
    // `raw` is handed over: a store's read() result is ours.
    const { length, checksum } = await checkBlock(raw, { algo: opts.algo, size: BLOCK_SIZE });
    return length === BLOCK_SIZE && checksum === opts.sum;
  } catch {
    return false;
  }
}

/** One block of a backup, with the backup's URL and the action to name in errors. */
export interface BlockRef {
  volume: string;
  block: BlockMapping;
  algo: ChecksumAlgorithm;
  url: string;
  action: string;
}

const where = (ref: BlockRef) => `block ${ref.block.BlockChecksum} at offset ${ref.block.Offset}`;

/** A block file's bytes; NotFoundError naming the backup and block when it is missing. */
async function readBlockFile(store: ObjectStore, ref: BlockRef): Promise<Uint8Array> {
  try {
    return await store.read(blockPath(ref.volume, ref.block.BlockChecksum));
  } catch (err) {
    if (isErrorCode(err, "NotFound")) {
      throw new NotFoundError(
        `Cannot ${ref.action} backup "${ref.url}": ${where(ref)} is missing`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}

function corrupt(ref: BlockRef, why: string, cause?: unknown): BackendError {
  return new BackendError(
    `Cannot ${ref.action} backup "${ref.url}": ${where(ref)} is corrupt (${why})`,
    { cause },
  );
}

/**
 * Reads, decompresses and verifies one block, keeping none of it; resolves to its size. A clear
 * error names the backup and the block.
 */
export async function checkBlockFile(store: ObjectStore, opts: BlockRef): Promise<number> {
  const raw = await readBlockFile(store, opts);
  let sum: string;
  let length: number;
  try {
    // `raw` is handed over: a store's read() result is ours.
    ({ checksum: sum, length } = await checkBlock(raw, { algo: opts.algo, size: BLOCK_SIZE }));
  } catch (err) {
    throw corrupt(opts, errorMessage(err), err);
  }
  if (length !== BLOCK_SIZE || sum !== opts.block.BlockChecksum) {
    throw corrupt(opts, "checksum mismatch");
  }
  return length;
}

/**
 * Reads, decompresses and verifies one block and writes it into `target` at its offset; resolves
 * to how it was written (see unpackBlockTo).
 */
export async function restoreBlock(
  store: ObjectStore,
  opts: BlockRef & { target: string },
): Promise<"direct" | "buffered"> {
  const raw = await readBlockFile(store, opts);
  let written: "direct" | "buffered" | false;
  try {
    written = await unpackBlockTo(raw, {
      algo: opts.algo,
      expect: { checksum: opts.block.BlockChecksum, size: BLOCK_SIZE },
      target: { path: opts.target, offset: opts.block.Offset },
    });
  } catch (err) {
    if (err instanceof TargetWriteError) {
      throw new BackendError(
        `Cannot ${opts.action} backup "${opts.url}": cannot write ${
          where(opts)
        } to "${opts.target}" (${err.message})`,
        { cause: err },
      );
    }
    throw corrupt(opts, errorMessage(err), err);
  }
  if (!written) throw corrupt(opts, "checksum mismatch");
  return written;
}
