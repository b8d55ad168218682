/**
 * The driver conformance suite, for plugin authors: `driverConformance({ name, init, ... })`
 * declares node:test tests of a driver against Convoy's driver contract; `pluginInit(setup,
 * name)` gives the InitFunc a plugin's `setup(api)` registers, over the daemon's real plugin API.
 * The npm package exports it as `convoy/conformance`.
 * @module
 */
export {
  type Capabilities,
  type ConformanceOptions,
  driverConformance,
  pluginInit,
  type TestFunctions,
} from "./src/testing/conformance.ts";
