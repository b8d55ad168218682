/**
 * Stores for tests: the built-in schemes, wrapped as the daemon wraps them, plus `mem://` (the
 * in-memory store, registered here and nowhere in production code). Import from tests only.
 * @module
 */
import { silentLogger } from "../util/log.ts";
import { memoryStoreFactory } from "./memory.ts";
import { builtinStoreFactories, createStoreRegistry, type StoreRegistry } from "./registry.ts";
import type { ObjectStore, OpenStoreOptions } from "./types.ts";
import { withStoreWrappers } from "./wrappers.ts";

/** The registry of tests (one per process, so `mem://name` names one store). */
export const testStores: StoreRegistry = createStoreRegistry([
  ...builtinStoreFactories().map((f) => withStoreWrappers(f, { log: silentLogger })),
  memoryStoreFactory(),
]);

/** Opens `destURL` with testStores (see StoreRegistry.open). */
export function openStore(destURL: string, opts: OpenStoreOptions = {}): Promise<ObjectStore> {
  return testStores.open(destURL, opts);
}
