/**
 * Chooses the store for a destination URL by its scheme. Each scheme has one StoreFactory that
 * declares its capabilities (custom endpoint support), so generic code never names a backend.
 * There is no process-wide registry: the daemon builds one (builtinStoreRegistry) and hands it
 * down; tests build their own (and only they add the `mem://` store).
 * @module
 */
import { InvalidArgumentError } from "../api/errors.ts";
import type { Logger } from "../util/log.ts";
import { destScheme } from "./dest_url.ts";
import { s3StoreFactory } from "./s3/store.ts";
import type { ObjectStore, OpenStoreOptions, StoreFactory } from "./types.ts";
import { vfsStoreFactory } from "./vfs.ts";
import { withStoreWrappers } from "./wrappers.ts";

/** Factories keyed by scheme. */
export interface StoreRegistry {
  /** Adds a factory; a second factory for the same scheme is a programming error and throws. */
  register(factory: StoreFactory): void;
  /** The registered schemes, sorted. */
  schemes(): string[];
  /**
   * Opens the store for `destURL`. Throws InvalidArgumentError for an empty or malformed URL, an
   * unknown scheme, or an endpoint the scheme does not support.
   */
  open(destURL: string, opts?: OpenStoreOptions): Promise<ObjectStore>;
}

/** A registry holding `factories`. */
export function createStoreRegistry(factories: StoreFactory[] = []): StoreRegistry {
  const byScheme = new Map<string, StoreFactory>();
  const registry: StoreRegistry = {
    register(factory) {
      if (byScheme.has(factory.scheme)) {
        throw new Error(`Cannot register store scheme "${factory.scheme}": already registered`);
      }
      byScheme.set(factory.scheme, factory);
    },
    schemes: () => [...byScheme.keys()].sort(),
    async open(destURL, opts = {}) {
      const scheme = destScheme(destURL);
      const factory = byScheme.get(scheme);
      if (!factory) {
        throw new InvalidArgumentError(
          `Unsupported backup destination "${destURL}": scheme "${scheme}" is not supported`,
        );
      }
      const endpoint = opts.endpoint ?? "";
      if (endpoint !== "" && !factory.supportsEndpoint) {
        const able = [...byScheme.values()].filter((f) => f.supportsEndpoint).map((f) =>
          `${f.scheme}://`
        );
        const only = able.length > 0
          ? `only ${able.join(", ")} supports custom endpoints`
          : "no backup store type supports custom endpoints";
        throw new InvalidArgumentError(
          `Cannot use endpoint "${endpoint}" with "${destURL}": ${only}`,
        );
      }
      return await factory.open(destURL, endpoint !== "" ? { endpoint } : {});
    },
  };
  for (const f of factories) registry.register(f);
  return registry;
}

/** The built-in factories: vfs:// and s3:// (the AWS SDK loads on first open). */
export function builtinStoreFactories(): StoreFactory[] {
  return [vfsStoreFactory, s3StoreFactory];
}

/**
 * The registry of the built-in schemes as the daemon uses them: each factory wrapped with
 * withStoreWrappers (its retry policy, if any, and logging to `opts.log`).
 */
export function builtinStoreRegistry(opts: { log: Logger }): StoreRegistry {
  return createStoreRegistry(
    builtinStoreFactories().map((f) => withStoreWrappers(f, { log: opts.log })),
  );
}
