/**
 * An in-memory store (`mem://name`): the test double of the backup engine and a reference for
 * the conformance suite. Objects are copied in and out, so callers cannot alias them.
 * @module
 */
import { NotFoundError } from "../api/errors.ts";
import { parseMemURL } from "./dest_url.ts";
import { checkKey, type ObjectStore, type StoreFactory } from "./types.ts";

/** Reads a whole byte stream. */
export async function collectStream(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = stream.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
    size += value.byteLength;
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

/** Runs `fn`, turning a throw into a rejection. */
function settle<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err);
  }
}

/** A store holding objects in a Map. */
export class MemoryStore implements ObjectStore {
  readonly kind = "mem";
  readonly url: string;
  readonly #objects = new Map<string, Uint8Array>();

  constructor(name = "test") {
    this.url = parseMemURL(`mem://${name}`).url;
  }

  /** Every key, sorted (for tests). */
  keys(): string[] {
    return [...this.#objects.keys()].sort();
  }

  stat(key: string): Promise<{ size: number } | undefined> {
    return settle(() => {
      const obj = this.#objects.get(checkKey(key));
      return obj ? { size: obj.byteLength } : undefined;
    });
  }

  read(key: string): Promise<Uint8Array> {
    return settle(() => {
      const k = checkKey(key);
      const obj = this.#objects.get(k);
      if (!obj) {
        throw new NotFoundError(`Cannot read "${k}" in "${this.url}": object does not exist`);
      }
      return new Uint8Array(obj); // a copy (Buffer#slice would be a view)
    });
  }

  async readStream(key: string): Promise<ReadableStream<Uint8Array>> {
    const data = await this.read(key);
    return new ReadableStream<Uint8Array>({
      start(controller) {
        if (data.byteLength > 0) controller.enqueue(data);
        controller.close();
      },
    });
  }

  async write(key: string, body: Uint8Array | ReadableStream<Uint8Array>): Promise<void> {
    const k = checkKey(key);
    const data = body instanceof Uint8Array ? new Uint8Array(body) : await collectStream(body);
    this.#objects.set(k, data);
  }

  list(prefix: string): Promise<string[]> {
    return settle(() => {
      const p = checkKey(prefix, { allowRoot: true });
      const start = p === "" ? "" : p + "/";
      const names = new Set<string>();
      for (const key of this.#objects.keys()) {
        if (key.startsWith(start)) names.add(key.slice(start.length).split("/")[0]);
      }
      return [...names].sort();
    });
  }

  remove(...keys: string[]): Promise<void> {
    return settle(() => {
      const checked = keys.map((key) => checkKey(key));
      for (const k of checked) {
        for (const key of [...this.#objects.keys()]) {
          if (key === k || key.startsWith(k + "/")) this.#objects.delete(key);
        }
      }
    });
  }
}

/**
 * A factory of `mem://name` stores. Each factory keeps its own named stores, so opening the same
 * URL twice from one factory gives the same store.
 */
export function memoryStoreFactory(): StoreFactory & { stores: Map<string, MemoryStore> } {
  const stores = new Map<string, MemoryStore>();
  return {
    scheme: "mem",
    supportsEndpoint: false,
    stores,
    open(destURL) {
      return settle(() => {
        const { name } = parseMemURL(destURL);
        let store = stores.get(name);
        if (!store) {
          store = new MemoryStore(name);
          stores.set(name, store);
        }
        return store;
      });
    },
  };
}
