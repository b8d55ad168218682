/**
 * Multipart uploads: objects bigger than one part, or of unknown size, are uploaded in parts
 * (8 MiB or more, up to `concurrency` in flight) and completed at the end; any failure aborts
 * the upload, so no partial object is ever visible.
 * @module
 */
import type { S3Client } from "@aws-sdk/client-s3";
import type { SDK } from "./client.ts";

const MiB = 1024 * 1024;
/** The default part size, and the largest object written with a single PutObject. */
export const S3_PART_SIZE = 8 * MiB;
/** S3's smallest part (all parts but the last). */
export const MIN_PART_SIZE = 5 * MiB;
/** S3's largest part count per upload. */
export const MAX_PARTS = 10_000;

/** A part size of at least `partSize` that fits `size` bytes into MAX_PARTS parts, in whole MiB. */
export function partSizeFor(size: number, partSize: number): number {
  const needed = Math.ceil(Math.ceil(size / MAX_PARTS) / MiB) * MiB;
  return Math.max(partSize, needed);
}

/** Reads a byte stream in parts of a requested size. */
export class PartReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #left: Uint8Array | undefined;
  #ended = false;
  /** Bytes returned so far. */
  total = 0;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Up to `size` bytes; fewer only at the end of the stream (`ended` is then true). */
  async read(size: number): Promise<{ data: Uint8Array; ended: boolean }> {
    let buf: Uint8Array | undefined; // allocated on the first byte: the end costs nothing
    let filled = 0;
    while (filled < size) {
      let chunk = this.#left;
      this.#left = undefined;
      if (!chunk) {
        if (this.#ended) break;
        const r = await this.#reader.read();
        if (r.done) {
          this.#ended = true;
          break;
        }
        chunk = r.value;
      }
      const n = Math.min(chunk.byteLength, size - filled);
      buf ??= new Uint8Array(size);
      buf.set(chunk.subarray(0, n), filled);
      filled += n;
      if (n < chunk.byteLength) this.#left = chunk.subarray(n);
    }
    this.total += filled;
    const data = !buf ? new Uint8Array() : filled === size ? buf : buf.subarray(0, filled);
    return { data, ended: this.#ended };
  }

  async cancel(reason: unknown): Promise<void> {
    await this.#reader.cancel(reason).catch(() => {});
  }
}

/** Where and how a multipart upload runs. */
export interface MultipartTarget {
  sdk: SDK;
  client: S3Client;
  bucket: string;
  /** The object's bucket key. */
  key: string;
  /** Parts in flight at most. */
  concurrency: number;
  /** Runs one request (the store passes its retries for bodies it cannot replay). */
  request<T>(fn: () => Promise<T>): Promise<T>;
}

/**
 * Uploads the parts `next()` returns (an empty one ends the object) with up to `concurrency`
 * in flight, then completes the upload after `beforeComplete()`; aborts it on any failure and
 * rejects with that failure.
 */
export async function multipartUpload(
  t: MultipartTarget,
  next: () => Promise<Uint8Array>,
  beforeComplete: () => void,
): Promise<void> {
  const { sdk, client, request } = t;
  const Bucket = t.bucket;
  const Key = t.key;
  const inflight = new Set<Promise<void>>();
  let uploadId: string | undefined;
  try {
    const created = await request(() =>
      client.send(new sdk.CreateMultipartUploadCommand({ Bucket, Key }))
    );
    uploadId = created.UploadId;
    if (!uploadId) throw new Error("CreateMultipartUpload returned no UploadId");
    const UploadId = uploadId;
    const done: { PartNumber: number; ETag: string }[] = [];
    let failure: { err: unknown } | undefined;
    for (let PartNumber = 1; !failure; PartNumber++) {
      const data = await next();
      if (data.byteLength === 0) break;
      if (PartNumber > MAX_PARTS) throw new Error(`object needs more than ${MAX_PARTS} parts`);
      const p: Promise<void> = request(() =>
        client.send(
          new sdk.UploadPartCommand({
            Bucket,
            Key,
            UploadId,
            PartNumber,
            Body: data,
            ContentLength: data.byteLength,
          }),
        )
      ).then((out) => {
        if (!out.ETag) throw new Error(`UploadPart ${PartNumber} returned no ETag`);
        done.push({ PartNumber, ETag: out.ETag });
      }).catch((err) => {
        failure ??= { err };
      }).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= t.concurrency) await Promise.race(inflight);
    }
    await Promise.all(inflight);
    if (failure) throw failure.err;
    beforeComplete();
    done.sort((a, b) => a.PartNumber - b.PartNumber);
    await request(() =>
      client.send(
        new sdk.CompleteMultipartUploadCommand({
          Bucket,
          Key,
          UploadId,
          MultipartUpload: { Parts: done },
        }),
      )
    );
  } catch (err) {
    await Promise.allSettled(inflight);
    if (uploadId !== undefined) {
      const UploadId = uploadId;
      await request(() =>
        client.send(new sdk.AbortMultipartUploadCommand({ Bucket, Key, UploadId }))
      ).catch(() => {});
    }
    throw err;
  }
}
