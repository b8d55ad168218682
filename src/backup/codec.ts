/**
 * Block codecs of delta-block backups: the checksum that names a block and the compression of
 * its file. Convoy v0.5.2 uses SHA-512 truncated to 64 hex digits and gzip; newer stores record
 * their choice in volume.cfg (`ChecksumAlgorithm`, `BlockCompression`) so any reader knows.
 * Readers detect the compression of each block from its magic bytes.
 * @module
 */
import zlib from "node:zlib";
import { InvalidArgumentError } from "../api/errors.ts";

/** The 2 MiB block size of Convoy's format. */
export const BLOCK_SIZE = 2 * 1024 * 1024;

export type ChecksumAlgorithm = "sha512" | "sha256";
export type Compression = "gzip" | "zstd";

/** Convoy v0.5.2's choices: what a store must use to stay readable by old Convoy. */
export const CONVOY_CODEC = { checksum: "sha512", compression: "gzip" } as const;

type ZstdFn = (
  buf: Uint8Array,
  opts: unknown,
  cb: (err: Error | null, out: Uint8Array) => void,
) => void;
const zstdCompress = (zlib as unknown as { zstdCompress?: ZstdFn }).zstdCompress;
const zstdDecompress = (zlib as unknown as { zstdDecompress?: ZstdFn }).zstdDecompress;
const ZSTD_LEVEL = (zlib.constants as Record<string, number>).ZSTD_c_compressionLevel;

/** True when this runtime's node:zlib has zstd (Deno 2.9 and Bun do; Node 20 does not). */
export const hasZstd = typeof zstdCompress === "function" && typeof zstdDecompress === "function";

/** The codec of a new store: the fastest this runtime offers, unless one is asked for. */
export function defaultCodec(
  requested?: string,
): { checksum: ChecksumAlgorithm; compression: Compression } {
  if (requested === "gzip") return { ...CONVOY_CODEC };
  if (requested === "zstd" || requested === undefined || requested === "") {
    if (hasZstd) return { checksum: "sha256", compression: "zstd" };
    if (requested === "zstd") {
      throw new InvalidArgumentError(`Invalid compression "zstd": this runtime has no zstd`);
    }
    return { ...CONVOY_CODEC };
  }
  throw new InvalidArgumentError(
    `Invalid compression ${JSON.stringify(requested)}: expected "gzip" or "zstd"`,
  );
}

function toHex(buf: ArrayBuffer, digits: number): string {
  const b = new Uint8Array(buf);
  let s = "";
  for (let i = 0; i < digits / 2; i++) s += b[i].toString(16).padStart(2, "0");
  return s;
}

/** The block's name: 64 lowercase hex digits of its digest. Runs off the event loop. */
export async function blockChecksum(data: Uint8Array, algo: ChecksumAlgorithm): Promise<string> {
  const digest = await crypto.subtle.digest(
    algo === "sha512" ? "SHA-512" : "SHA-256",
    data as BufferSource,
  );
  return toHex(digest, 64);
}

function call(fn: ZstdFn | typeof zlib.gzip, data: Uint8Array, opts: unknown): Promise<Uint8Array> {
  return new Promise((resolve, reject) =>
    (fn as ZstdFn)(data, opts, (err, out) => (err ? reject(err) : resolve(out)))
  );
}

/** Compresses one block (in libuv's thread pool, not on the event loop). */
export function compressBlock(data: Uint8Array, compression: Compression): Promise<Uint8Array> {
  if (compression === "zstd") return call(zstdCompress!, data, { params: { [ZSTD_LEVEL]: 1 } });
  return call(zlib.gzip, data, { level: 1 });
}

/** Decompresses a block file, gzip or zstd, detected from its magic bytes. */
export function decompressBlock(data: Uint8Array): Promise<Uint8Array> {
  if (data.length >= 2 && data[0] === 0x1f && data[1] === 0x8b) return call(zlib.gunzip, data, {});
  if (
    data.length >= 4 && data[0] === 0x28 && data[1] === 0xb5 && data[2] === 0x2f && data[3] === 0xfd
  ) {
    if (!zstdDecompress) {
      throw new InvalidArgumentError("Cannot read a zstd block: this runtime has no zstd");
    }
    return call(zstdDecompress, data, {});
  }
  return Promise.reject(new Error("unknown block compression (neither gzip nor zstd)"));
}

/** True when every byte is zero. */
export function isZero(data: Uint8Array): boolean {
  let start = 0;
  if (data.byteOffset % 4 === 0) {
    const words = new Uint32Array(data.buffer, data.byteOffset, data.byteLength >>> 2);
    for (let i = 0; i < words.length; i++) if (words[i] !== 0) return false;
    start = words.length * 4;
  }
  for (let i = start; i < data.length; i++) if (data[i] !== 0) return false;
  return true;
}
