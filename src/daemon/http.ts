import { z } from "zod";
import { InvalidArgumentError } from "../api/errors.ts";
import type { HttpResponse } from "../runtime/listen.ts";

/** A JSON response, tab-indented as Convoy's Go daemon writes it. */
export function json(value: unknown, status = 200): HttpResponse {
  return { status, body: JSON.stringify(value, null, "\t"), contentType: "application/json" };
}

/** A bare-string response (names, mount points, URLs). */
export function text(value: string, status = 200): HttpResponse {
  return { status, body: value, contentType: "text/plain; charset=utf-8" };
}

const decoder = new TextDecoder();

/**
 * Parses a JSON request body with `schema`, matching field names case-insensitively as Go's
 * decoder does. An empty body is `{}`. Throws InvalidArgumentError for malformed JSON or fields.
 */
export function parseBody<S extends z.ZodObject>(body: Uint8Array, schema: S): z.output<S> {
  const src = decoder.decode(body).trim();
  let raw: unknown = {};
  if (src) {
    try {
      raw = JSON.parse(src);
    } catch (err) {
      throw new InvalidArgumentError(`Cannot parse request body: ${(err as Error).message}`);
    }
  }
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new InvalidArgumentError("Cannot parse request body: expected a JSON object");
  }
  const keys = Object.keys(schema.shape);
  const byLower = new Map(keys.map((k) => [k.toLowerCase(), k]));
  const canon: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) canon[byLower.get(k.toLowerCase()) ?? k] = v;
  const r = schema.safeParse(canon);
  if (!r.success) {
    const msg = r.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`).join("; ");
    throw new InvalidArgumentError(`Invalid request body: ${msg}`);
  }
  return r.data;
}

/** Optional string field: absent or null reads as "". */
export const str = z.string().nullish().transform((v) => v ?? "");
/** Optional boolean field: absent or null reads as false. */
export const bool = z.boolean().nullish().transform((v) => v ?? false);
/** Optional non-negative integer, given as a number or a numeric string. */
export const int = z.union([
  z.number().int().nonnegative(),
  z.string().regex(/^[0-9]+$/).transform(Number),
])
  .nullish().transform((v) => v ?? 0);
