import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { BackendError, NotFoundError } from "../api/errors.ts";
import { type LogFields, type Logger, silentLogger } from "../util/log.ts";
import { MemoryStore } from "./memory.ts";
import type { ObjectStore } from "./types.ts";
import { sweepStaleTemps } from "./sweep.ts";
import { withLogging, withRetry } from "./wrappers.ts";

/** A store whose `read` fails `failures` times with `err` before delegating. */
function flaky(store: ObjectStore, failures: number, err: Error): ObjectStore & { calls: number } {
  const s = Object.create(store) as ObjectStore & { calls: number };
  s.calls = 0;
  s.read = (key) => {
    s.calls++;
    return s.calls <= failures ? Promise.reject(err) : store.read(key);
  };
  return s;
}

describe("withRetry()", () => {
  it("withRetry() and withLogging() keep a store's sweepTemps, and add none", async () => {
    const mem = Object.assign(new MemoryStore(), {
      sweepTemps: (prefix: string) => Promise.resolve([`swept ${prefix}`]),
    });
    const wrapped = withLogging(withRetry(mem), silentLogger);
    assert.deepEqual(await sweepStaleTemps(wrapped, { prefix: "a" }), ["swept a"]);
    assert.equal(withLogging(withRetry(new MemoryStore()), silentLogger).sweepTemps, undefined);
  });

  it("withRetry() and withLogging() keep a store's flush and removeObjects", async () => {
    const calls: string[] = [];
    const mem = Object.assign(new MemoryStore(), {
      flush: () => Promise.resolve(void calls.push("flush")),
      removeObjects: (...keys: string[]) => Promise.resolve(void calls.push(`rm ${keys}`)),
    });
    const wrapped = withLogging(withRetry(mem), silentLogger);
    await wrapped.flush?.();
    await wrapped.removeObjects?.("a", "b");
    assert.deepEqual(calls, ["flush", "rm a,b"]);
    assert.equal(withRetry(new MemoryStore()).flush, undefined);
  });

  it("withRetry() waits what the policy's backoff says, for each retry", async () => {
    const mem = new MemoryStore();
    await mem.write("k", new Uint8Array([7]));
    const f = flaky(mem, 2, new BackendError("Cannot read: connection reset"));
    const asked: number[] = [];
    const store = withRetry(f, { attempts: 3, backoff: (_err, retry) => (asked.push(retry), 1) });
    assert.deepEqual(await store.read("k"), new Uint8Array([7]));
    assert.deepEqual(asked, [1, 2]);
  });

  it("withRetry() retries a transient BackendError", async () => {
    const mem = new MemoryStore();
    await mem.write("k", new Uint8Array([7]));
    const f = flaky(mem, 2, new BackendError("Cannot read: connection reset"));
    const store = withRetry(f, { attempts: 3, delayMs: 1 });
    assert.deepEqual(await store.read("k"), new Uint8Array([7]));
    assert.equal(f.calls, 3);
  });

  it("withRetry() does not retry an error marked permanent", async () => {
    const denied = Object.assign(new BackendError("Cannot read: access denied"), {
      permanent: true,
    });
    const f = flaky(new MemoryStore(), 5, denied);
    await assert.rejects(withRetry(f, { delayMs: 1 }).read("k"), denied);
    assert.equal(f.calls, 1);
  });

  it("withRetry() does not retry NotFoundError", async () => {
    const f = flaky(new MemoryStore(), 5, new NotFoundError("Cannot read: missing"));
    await assert.rejects(withRetry(f, { delayMs: 1 }).read("k"), NotFoundError);
    assert.equal(f.calls, 1);
  });
});

describe("withLogging()", () => {
  it("withLogging() logs each operation with its key", async () => {
    const lines: [string, LogFields | undefined][] = [];
    const log: Logger = {
      debug: (m, f) => lines.push([m, f]),
      info: (m, f) => lines.push([m, f]),
      warn: (m, f) => lines.push([m, f]),
      error: (m, f) => lines.push([m, f]),
      child: () => log,
    };
    const store = withLogging(new MemoryStore(), log);
    await store.write("a/b", new Uint8Array([1]));
    await assert.rejects(store.read("none"), NotFoundError);
    assert.deepEqual(lines.map(([m, f]) => [m, f?.key]), [
      ["store write", "a/b"],
      ["store read failed", "none"],
    ]);
  });
});
