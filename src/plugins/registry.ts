import { AlreadyExistsError } from "../api/errors.ts";
import type { InitFunc } from "../api/driver.ts";

/** One registered driver and the file that registered it. */
export interface DriverEntry {
  name: string;
  init: InitFunc;
  source: string;
}

/**
 * Records driver registrations. `register()` only records; the loader hands the registry to the
 * daemon, which never reads module-level state.
 */
export class Registry {
  #entries = new Map<string, DriverEntry>();

  /** Records `name`; a second registration of a name throws, naming both files. */
  register(name: string, init: InitFunc, source: string): void {
    if (typeof name !== "string" || !/^[a-z0-9][a-z0-9_.-]*$/i.test(name)) {
      throw new TypeError(
        `Cannot register driver ${JSON.stringify(name)} from ${source}: invalid name`,
      );
    }
    if (typeof init !== "function") {
      throw new TypeError(
        `Cannot register driver "${name}" from ${source}: init is not a function`,
      );
    }
    const prev = this.#entries.get(name);
    if (prev) {
      throw new AlreadyExistsError(
        `Cannot register driver "${name}" from ${source}: already registered by ${prev.source}`,
      );
    }
    this.#entries.set(name, { name, init, source });
  }

  get(name: string): DriverEntry | undefined {
    return this.#entries.get(name);
  }

  names(): string[] {
    return [...this.#entries.keys()];
  }
}
