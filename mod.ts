/**
 * Convoy's public plugin API: the driver contract (after Convoy's convoydriver package), the
 * block device adapter contract, the OPT_* option keys, typed errors and the PluginApi a
 * plugin's `setup(api)` receives.
 *
 * A plugin is one ESM file (or a folder with mod.ts) in a plugins folder:
 *
 * ```ts
 * import type { PluginApi } from "convoy/plugin-api";
 * export default function setup(api: PluginApi) {
 *   api.register("mydriver", async (root, config) => ({ ... }));
 *   // or, for block devices, only what is specific to them (see BlockDeviceAdapter):
 *   api.registerBlockDevice("mydev", async ({ root, options, log, exec }) => ({ ... }));
 * }
 * ```
 * @module
 */
export * from "./src/api/options.ts";
export * from "./src/api/errors.ts";
export type * from "./src/api/driver.ts";
export type * from "./src/api/plugin.ts";
export type * from "./src/api/aws.ts";
export type * from "./src/api/block.ts";
export { PLUGIN_API_VERSION } from "./src/api/plugin.ts";
