/**
 * Zod schemas of option strings that every driver reads the same way (`api.util.schemas`).
 * @module
 */
import { z } from "zod";
import type { OptionSchemas } from "../api/host.ts";
import {
  OPT_BACKUP_URL,
  OPT_COMPRESSION,
  OPT_ENDPOINT_URL,
  OPT_REFERENCE_ONLY,
  OPT_SIZE,
  OPT_VOLUME_NAME,
} from "../api/options.ts";
import { parseSize } from "./sizes.ts";

/** A boolean flag as a string ("true", "1", "yes"...); "" and a missing key are false. */
const flag = z.preprocess((v) => (v === "" ? undefined : v), z.stringbool().default(false));

/** A size string ("10G", "1048576") in bytes; "" and "0" are 0 (unset). */
const size = z.string().transform((s, ctx) => {
  try {
    return parseSize(s);
  } catch (err) {
    ctx.issues.push({ code: "custom", message: (err as Error).message, input: s });
    return z.NEVER;
  }
});

/**
 * The schemas; combine them with `.optional()`, `.prefault()`, `.refine()`, `.extend()`. The
 * request schemas accept keys they do not name (a driver may read more).
 */
export const optionSchemas: OptionSchemas = {
  flag,
  size,
  /** createVolume's common options: size, and the backup to restore from. */
  createVolume: z.looseObject({
    [OPT_SIZE]: size.optional(),
    [OPT_BACKUP_URL]: z.string().optional(),
    [OPT_ENDPOINT_URL]: z.string().optional(),
  }),
  /** deleteVolume's options. */
  deleteVolume: z.looseObject({ [OPT_REFERENCE_ONLY]: flag }),
  /** The options of the backup operations. */
  backup: z.looseObject({
    [OPT_ENDPOINT_URL]: z.string().optional(),
    [OPT_VOLUME_NAME]: z.string().optional(),
    [OPT_COMPRESSION]: z.string().optional(),
  }),
};

/** The type of `api.util.schemas`. */
export type { OptionSchemas };
