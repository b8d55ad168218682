/**
 * Backup destination URLs (Convoy's `--dest`): parsing and normalisation per scheme. Pure.
 * @module
 */
import { InvalidArgumentError } from "../api/errors.ts";

/** Parses `destURL` as a URL; throws InvalidArgumentError when it is empty or not a URL. */
export function parseDestURL(destURL: string): URL {
  if (destURL.trim() === "") {
    throw new InvalidArgumentError("Invalid backup destination: URL is empty");
  }
  try {
    return new URL(destURL);
  } catch (err) {
    throw new InvalidArgumentError(
      `Invalid backup destination "${destURL}": not a URL (expected e.g. vfs:///path or s3://bucket@region/path)`,
      { cause: err },
    );
  }
}

/** The URL's scheme without ":", e.g. "vfs". */
export function destScheme(destURL: string): string {
  return parseDestURL(destURL).protocol.replace(/:$/, "");
}

function decode(destURL: string, part: string): string {
  try {
    return decodeURIComponent(part);
  } catch (err) {
    throw new InvalidArgumentError(
      `Invalid backup destination "${destURL}": bad percent-encoding in "${part}"`,
      { cause: err },
    );
  }
}

/** A parsed `vfs:///abs/path[/]`. */
export interface VfsURL {
  /** The absolute directory path, as given (a trailing slash is kept). */
  path: string;
  /** Normalised: "vfs://" + path. */
  url: string;
}

/** Parses `vfs:///abs/path`; the host must be empty and the path absolute. */
export function parseVfsURL(destURL: string): VfsURL {
  const u = parseDestURL(destURL);
  const path = decode(destURL, u.pathname);
  if (u.protocol !== "vfs:" || u.host !== "" || u.username !== "" || !path.startsWith("/")) {
    throw new InvalidArgumentError(
      `Invalid backup destination "${destURL}": must be vfs:///absolute/path`,
    );
  }
  return { path, url: `vfs://${path}` };
}

/** A parsed `s3://bucket@region/path` or `s3://bucket/path`. */
export interface S3URL {
  bucket: string;
  /** Undefined for `s3://bucket/path`: the SDK's environment decides. */
  region?: string;
  /** The key prefix with leading slashes trimmed; may be "" (`s3://b@r/`). */
  path: string;
  /** Normalised: `s3://bucket[@region]/<path>`. */
  url: string;
}

/** Parses the two s3:// forms of Convoy (bucket and path must be non-empty; `s3://b@r/` is valid). */
export function parseS3URL(destURL: string): S3URL {
  const u = parseDestURL(destURL);
  const user = decode(destURL, u.username);
  const host = decode(destURL, u.host);
  // "s3://@r/p" has an (empty) user part: the bucket is "", as in Go's url.Parse.
  const hasUser = /^[a-z0-9+.-]+:\/\/[^/?#]*@/i.test(destURL.trim());
  const bucket = hasUser ? user : host;
  const region = hasUser ? host : undefined;
  const rawPath = decode(destURL, u.pathname);
  if (u.protocol !== "s3:" || bucket === "" || rawPath === "" || region === "") {
    throw new InvalidArgumentError(
      `Invalid backup destination "${destURL}": must be s3://bucket@region/path/ or s3://bucket/path`,
    );
  }
  const path = rawPath.replace(/^\/+/, "");
  const url = `s3://${bucket}${region !== undefined ? "@" + region : ""}/${path}`;
  return region !== undefined ? { bucket, region, path, url } : { bucket, path, url };
}

/** A parsed `mem://name`. */
export interface MemURL {
  name: string;
  url: string;
}

/** Parses `mem://name` (in-memory test stores); no path allowed. */
export function parseMemURL(destURL: string): MemURL {
  const u = parseDestURL(destURL);
  const name = decode(destURL, u.host);
  if (u.protocol !== "mem:" || name === "" || (u.pathname !== "" && u.pathname !== "/")) {
    throw new InvalidArgumentError(`Invalid backup destination "${destURL}": must be mem://name`);
  }
  return { name, url: `mem://${name}` };
}

/**
 * The normalised form of a destination URL, as stores report it and as backup URLs from
 * list/inspect are built: `vfs://<path>`, `s3://bucket[@region]/<trimmed path>`, `mem://name`.
 */
export function normalizeDestURL(destURL: string): string {
  const scheme = destScheme(destURL);
  switch (scheme) {
    case "vfs":
      return parseVfsURL(destURL).url;
    case "s3":
      return parseS3URL(destURL).url;
    case "mem":
      return parseMemURL(destURL).url;
    default:
      throw new InvalidArgumentError(
        `Unsupported backup destination "${destURL}": scheme "${scheme}" is not supported`,
      );
  }
}
