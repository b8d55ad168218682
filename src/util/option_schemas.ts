/**
 * Zod schemas of option strings that every driver reads the same way (`api.util.schemas`).
 * @module
 */
import { z } from "zod";
import { parseSize } from "./sizes.ts";

/** The schemas; combine them with `.optional()`, `.prefault()`, `.refine()`. */
export const optionSchemas = {
  /** A boolean flag as a string ("true", "1", "yes"...); "" and a missing key are false. */
  flag: z.preprocess((v) => (v === "" ? undefined : v), z.stringbool().default(false)),

  /** A size string ("10G", "1048576") in bytes; "" and "0" are 0 (unset). */
  size: z.string().transform((s, ctx) => {
    try {
      return parseSize(s);
    } catch (err) {
      ctx.issues.push({ code: "custom", message: (err as Error).message, input: s });
      return z.NEVER;
    }
  }),
};

/** The type of `api.util.schemas`. */
export type OptionSchemas = typeof optionSchemas;
