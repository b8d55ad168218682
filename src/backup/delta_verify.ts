/**
 * The verify of a delta-block backup: every block (or a sample) read back and checked
 * (verifyDeltaBackup), nothing restored.
 * @module
 */
import { errorMessage, InvalidArgumentError, isErrorCode } from "../api/errors.ts";
import type { Progress } from "../api/driver.ts";
import type { VerifyReport } from "../api/plugin.ts";
import type { ObjectStore } from "../store/types.ts";
import { pool } from "../util/pool.ts";
import { checkBlockFile, DEFAULT_CONCURRENCY } from "./delta_blocks.ts";
import { checksumOf, loadDelta } from "./delta_records.ts";

/** Checks every block (or a random `sample` fraction) of a delta-block backup without restoring it. */
export async function verifyDeltaBackup(
  store: ObjectStore,
  opts: {
    volume: string;
    backup: string;
    url: string;
    sample?: number;
    signal?: AbortSignal;
    progress?: (p: Progress) => void;
  },
): Promise<VerifyReport> {
  const { backup } = await loadDelta(store, { ...opts, action: "verify" });
  const algo = checksumOf(backup);
  let blocks = backup.Blocks;
  if (opts.sample !== undefined && opts.sample < 1) {
    if (!(opts.sample > 0)) {
      throw new InvalidArgumentError(
        `Invalid sample ${opts.sample}: expected a fraction in (0, 1]`,
      );
    }
    const want = Math.max(1, Math.ceil(blocks.length * opts.sample));
    blocks = [...blocks].sort(() => Math.random() - 0.5).slice(0, want);
  }
  const problems: string[] = [];
  let bytes = 0;
  let done = 0;
  await pool(blocks, { concurrency: DEFAULT_CONCURRENCY, signal: opts.signal }, async (block) => {
    try {
      // Not `bytes += await ...`: that reads `bytes` before the await, losing concurrent counts.
      const checked = await checkBlockFile(store, {
        volume: opts.volume,
        block,
        algo,
        url: opts.url,
        action: "verify",
      });
      bytes += checked;
    } catch (err) {
      if (isErrorCode(err, "Cancelled")) throw err;
      problems.push(errorMessage(err));
    }
    opts.progress?.({ done: ++done, total: blocks.length, bytes });
  });
  return {
    backupURL: opts.url,
    blocks: backup.Blocks.length,
    checked: blocks.length,
    bytes,
    problems: problems.sort(),
  };
}
