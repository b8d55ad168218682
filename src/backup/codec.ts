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

/** True when this runtime's node:zlib has zstd (Deno 2.9 and Bun do; Node 20 does not). */
export const hasZstd =
  typeof (zlib as unknown as { zstdCompressSync?: unknown }).zstdCompressSync === "function" &&
  typeof (zlib as unknown as { zstdDecompressSync?: unknown }).zstdDecompressSync === "function";

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
