/**
 * Option parsing with zod (`api.util.parseOptions`), shared by the backup store API and the
 * drivers' helpers.
 * @module
 */
import type { z } from "zod";
import { InvalidArgumentError } from "../api/errors.ts";

/** Parses string options with `schema`; throws InvalidArgumentError naming every bad key. */
export function parseOptions<S extends z.ZodType>(
  schema: S,
  raw: Record<string, string>,
  what: string,
): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => {
    const key = i.path.length ? `"${i.path.join(".")}"` : "options";
    return `${key}: ${i.message}`;
  });
  throw new InvalidArgumentError(`Invalid ${what}: ${problems.join("; ")}`);
}
