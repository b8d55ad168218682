import { z } from "zod";
import * as errors from "../api/errors.ts";
import type { InitFunc } from "../api/driver.ts";
import { type BackupStoreApi, PLUGIN_API_VERSION, type PluginApi } from "../api/plugin.ts";
import type { Exec } from "../runtime/exec.ts";
import type { Logger } from "../util/log.ts";
import { atomicWriteJSON, readJSONFile } from "../util/fs.ts";
import { validateName } from "../util/names.ts";
import { parseSize } from "../util/sizes.ts";
import { rubyDate } from "../util/time.ts";

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
  throw new errors.InvalidArgumentError(`Invalid ${what}: ${problems.join("; ")}`);
}

/** Builds the `api` object passed to each plugin's setup function. */
export function createPluginApi(opts: {
  register: (name: string, init: InitFunc) => void;
  log: Logger;
  exec: Exec;
  backup: BackupStoreApi;
}): PluginApi {
  return {
    apiVersion: PLUGIN_API_VERSION,
    register: opts.register,
    log: opts.log,
    deps: { z },
    exec: opts.exec,
    errors,
    util: {
      parseSize,
      validateName,
      now: () => rubyDate(),
      writeJSON: atomicWriteJSON,
      readJSON: readJSONFile,
      parseOptions,
    },
    backup: opts.backup,
  };
}
