/**
 * Test helpers for driver plugins: their InitFunc through the real plugin api.
 * @module
 */
import assert from "node:assert/strict";
import type { InitFunc } from "../api/driver.ts";
import type { BackupStoreApi, Exec, Logger, PluginSetup } from "../api/plugin.ts";
import { silentLogger } from "../util/log.ts";
import { createPluginApi } from "./host_api.ts";

/** A backup store whose every call rejects. */
export const noBackupStore: BackupStoreApi = new Proxy({} as BackupStoreApi, {
  get: (_, key) => () => Promise.reject(new Error(`backup store not available: ${String(key)}`)),
});

/** The InitFunc that `setup` registers as `name`; fails unless it registers exactly that. */
export function registeredInit(
  setup: PluginSetup,
  name: string,
  opts: { exec: Exec; log?: Logger; backup?: BackupStoreApi },
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
  });
  setup(api);
  assert.ok(init, "setup() did not register the driver");
  return init;
}
