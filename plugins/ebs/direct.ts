/**
 * Reading EBS snapshots through the EBS direct APIs: ListSnapshotBlocks (every block a snapshot
 * holds, with its block token), ListChangedBlocks (the blocks that differ between two snapshots of
 * one lineage) and GetSnapshotBlock (one 512 KiB block, its SHA-256 checked). No volume is
 * created or attached to read a snapshot.
 * @module
 */
import { createHash } from "node:crypto";
import type { EbsSdk, Mapping, PluginApi } from "../../mod.ts";
import type { Env } from "./imds.ts";
import { awsError, sdkSettings } from "./cloud.ts";

type EBSClient = InstanceType<EbsSdk["EBSClient"]>;
type Errors = PluginApi["errors"];

/** The EBS direct APIs' block size. */
export const EBS_BLOCK = 512 * 1024;

/** Block index → block token (undefined: the block holds no data, reads as zeros). */
export type BlockTokens = Map<number, string | undefined>;

/** One page of ListSnapshotBlocks or ListChangedBlocks: its blocks as (index, token). */
interface BlockPage {
  BlockSize?: number;
  NextToken?: string;
  blocks: [index: number | undefined, token: string | undefined][];
}

/** The EBS direct APIs of one region. */
export class EbsDirect {
  #sdk: EbsSdk;
  #errors: Errors;
  #client: EBSClient;

  constructor(
    sdk: EbsSdk,
    errors: Errors,
    region: string,
    opts: { env?: Env; maxAttempts?: number } = {},
  ) {
    this.#sdk = sdk;
    this.#errors = errors;
    this.#client = new sdk.EBSClient({
      region,
      ...sdkSettings("EBS", opts.env),
      maxAttempts: opts.maxAttempts ?? 8,
      retryMode: "standard",
      requestHandler: { connectionTimeout: 10_000, requestTimeout: 60_000 },
    });
  }

  close(): void {
    this.#client.destroy();
  }

  #check(blockSize: number | undefined, prefix: string) {
    // AWS reports bytes; moto 5 reports KiB (512)
    if (blockSize !== undefined && blockSize !== EBS_BLOCK && blockSize * 1024 !== EBS_BLOCK) {
      throw new this.#errors.BackendError(
        `${prefix}: the EBS direct API reports blocks of ${blockSize} bytes, not ${EBS_BLOCK}`,
      );
    }
  }

  /** Every block of `snapshotId` that holds data, with its token. */
  snapshotBlocks(
    snapshotId: string,
    opts: { prefix: string; signal?: AbortSignal },
  ): Promise<BlockTokens> {
    return this.#blockTokens(opts, async (token) => {
      const page = await this.#client.send(
        new this.#sdk.ListSnapshotBlocksCommand({
          SnapshotId: snapshotId,
          NextToken: token,
          MaxResults: 10000,
        }),
        { abortSignal: opts.signal },
      );
      return { ...page, blocks: (page.Blocks ?? []).map((b) => [b.BlockIndex, b.BlockToken]) };
    });
  }

  /**
   * The blocks that differ between `first` and `second`, with `second`'s token (undefined where
   * `second` holds no data there).
   */
  changedBlocks(
    first: string,
    second: string,
    opts: { prefix: string; signal?: AbortSignal },
  ): Promise<BlockTokens> {
    return this.#blockTokens(opts, async (token) => {
      const page = await this.#client.send(
        new this.#sdk.ListChangedBlocksCommand({
          FirstSnapshotId: first,
          SecondSnapshotId: second,
          NextToken: token,
          MaxResults: 10000,
        }),
        { abortSignal: opts.signal },
      );
      return {
        ...page,
        blocks: (page.ChangedBlocks ?? []).map((b) => [b.BlockIndex, b.SecondBlockToken]),
      };
    });
  }

  /** Block index → token over every page `fetch(NextToken)` returns, block sizes checked. */
  async #blockTokens(
    opts: { prefix: string },
    fetch: (token: string | undefined) => Promise<BlockPage>,
  ): Promise<BlockTokens> {
    const out: BlockTokens = new Map();
    let token: string | undefined;
    try {
      do {
        const page = await fetch(token);
        this.#check(page.BlockSize, opts.prefix);
        for (const [index, blockToken] of page.blocks) {
          if (index !== undefined) out.set(Number(index), blockToken);
        }
        token = page.NextToken;
      } while (token);
    } catch (err) {
      throw awsError(this.#errors, err, opts.prefix);
    }
    return out;
  }

  /** One block's 512 KiB, its SHA-256 (when the API sends one) checked. */
  async readBlock(
    snapshotId: string,
    at: { index: number; token: string; prefix: string; signal?: AbortSignal },
  ): Promise<Uint8Array> {
    let data: Uint8Array;
    let checksum: string | undefined;
    let algorithm: string | undefined;
    try {
      const out = await this.#client.send(
        new this.#sdk.GetSnapshotBlockCommand({
          SnapshotId: snapshotId,
          BlockIndex: at.index,
          BlockToken: at.token,
        }),
        { abortSignal: at.signal },
      );
      data = await out.BlockData!.transformToByteArray();
      checksum = out.Checksum;
      algorithm = out.ChecksumAlgorithm;
    } catch (err) {
      throw awsError(this.#errors, err, at.prefix);
    }
    if (data.length !== EBS_BLOCK) {
      throw new this.#errors.BackendError(
        `${at.prefix}: block ${at.index} of ${snapshotId} has ${data.length} bytes, not ${EBS_BLOCK}`,
      );
    }
    if (checksum && (algorithm ?? "SHA256") === "SHA256") {
      const got = createHash("sha256").update(data).digest("base64");
      if (got !== checksum) {
        throw new this.#errors.BackendError(
          `${at.prefix}: block ${at.index} of ${snapshotId} fails its SHA-256 check`,
        );
      }
    }
    return data;
  }

  /**
   * Fills `data` with the bytes of `snapshotId` from `offset` (a multiple of 512 KiB): blocks in
   * `tokens` are read, the others are zeros.
   */
  async readRange(
    snapshotId: string,
    tokens: BlockTokens,
    at: { offset: number; data: Uint8Array; prefix: string; signal?: AbortSignal },
  ): Promise<void> {
    const { offset, data } = at;
    if (offset % EBS_BLOCK !== 0) {
      throw new this.#errors.InvalidArgumentError(
        `${at.prefix}: offset ${offset} is not a multiple of ${EBS_BLOCK}`,
      );
    }
    const reads: Promise<void>[] = [];
    for (let pos = 0; pos < data.length; pos += EBS_BLOCK) {
      const index = (offset + pos) / EBS_BLOCK;
      const len = Math.min(EBS_BLOCK, data.length - pos);
      const token = tokens.get(index);
      if (!token) {
        data.fill(0, pos, pos + len);
        continue;
      }
      reads.push(
        this.readBlock(snapshotId, { index, token, prefix: at.prefix, signal: at.signal }).then(
          (block) => data.set(block.subarray(0, len), pos),
        ),
      );
    }
    await Promise.all(reads);
  }
}

/** Byte ranges of the blocks in `indices`, adjacent blocks merged. */
export function blocksToRanges(indices: Iterable<number>): Mapping[] {
  const sorted = [...indices].sort((a, b) => a - b);
  const out: Mapping[] = [];
  for (const i of sorted) {
    const last = out[out.length - 1];
    if (last && last.offset + last.size === i * EBS_BLOCK) last.size += EBS_BLOCK;
    else out.push({ offset: i * EBS_BLOCK, size: EBS_BLOCK });
  }
  return out;
}
