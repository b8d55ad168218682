/**
 * Test helpers for driver plugins: their InitFunc through the real plugin api.
 * @module
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { InitFunc } from "../api/driver.ts";
import type { BackupStoreApi, Exec, LogFields, Logger, PluginSetup } from "../api/plugin.ts";
import { silentLogger } from "../util/log.ts";
import { createPluginApi } from "./host_api.ts";
import type { NativeBackupRegistry } from "./block/driver.ts";

/** A backup store whose every call rejects. */
export const noBackupStore: BackupStoreApi = new Proxy({} as BackupStoreApi, {
  get: (_, key) => () => Promise.reject(new Error(`backup store not available: ${String(key)}`)),
});

/** The InitFunc that `setup` registers as `name`; fails unless it registers exactly that. */
export function registeredInit(
  setup: PluginSetup,
  name: string,
  opts: { exec: Exec; log?: Logger; backup?: BackupStoreApi; natives?: NativeBackupRegistry },
): InitFunc {
  let init: InitFunc | undefined;
  const api = createPluginApi({
    register: (registered, fn) => {
      assert.equal(registered, name);
      init = fn;
    },
    log: opts.log ?? silentLogger,
    exec: opts.exec,
    backup: opts.backup ?? noBackupStore,
    natives: opts.natives,
  });
  setup(api);
  assert.ok(init, "setup() did not register the driver");
  return init;
}

/** A logger that keeps the info, warn and error lines it is given. */
export function recordingLogger(): Logger & { lines: Array<[string, string, LogFields?]> } {
  const lines: Array<[string, string, LogFields?]> = [];
  const logger = {
    lines,
    debug() {},
    info: (m: string, f?: LogFields) => void lines.push(["info", m, f]),
    warn: (m: string, f?: LogFields) => void lines.push(["warn", m, f]),
    error: (m: string, f?: LogFields) => void lines.push(["error", m, f]),
    child: () => logger,
  };
  return logger;
}

/** Runs `fn` with a new temporary folder, removed afterwards. */
export async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-test-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
