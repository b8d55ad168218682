import { appendFileSync } from "node:fs";

import type { LogFields, Logger } from "../api/host.ts";

export type { LogFields, Logger };

type Level = "debug" | "info" | "warn" | "error";
const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

/** Options of createLogger. */
export interface LoggerOptions {
  /** Lowest level written (default "info"). */
  level?: Level;
  /** Append JSON lines to this file instead of text lines to stderr. */
  file?: string;
}

/** Creates a logger: text to stderr, or JSON lines appended to `file`. */
export function createLogger(opts: LoggerOptions = {}, base: LogFields = {}): Logger {
  const min = RANK[opts.level ?? "info"];
  const write = (level: Level, msg: string, fields?: LogFields) => {
    if (RANK[level] < min) return;
    const all = { ...base, ...fields };
    const time = new Date().toISOString();
    if (opts.file) {
      appendFileSync(opts.file, JSON.stringify({ time, level, msg, ...all }) + "\n", {
        mode: 0o644,
      });
    } else {
      const kv = Object.entries(all).map(([k, v]) =>
        `${k}=${typeof v === "string" && !/\s|"/.test(v) ? v : JSON.stringify(v)}`
      );
      process.stderr.write(
        `${time} ${level.toUpperCase()} ${msg}${kv.length ? " " + kv.join(" ") : ""}\n`,
      );
    }
  };
  return {
    debug: (m, f) => write("debug", m, f),
    info: (m, f) => write("info", m, f),
    warn: (m, f) => write("warn", m, f),
    error: (m, f) => write("error", m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }),
  };
}

/** A logger that drops everything (tests). */
export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
