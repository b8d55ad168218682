/**
 * The conformance suite catches what it promises to: run through a recording harness (its
 * `test` option) against a small folder driver, it passes the driver as written and fails the
 * one test each deliberate break concerns.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { ConvoyDriver, InitFunc, StringMap, VolumeOperations } from "../api/driver.ts";
import {
  AlreadyExistsError,
  ConflictError,
  NotFoundError,
  NotSupportedError,
} from "../api/errors.ts";
import { OPT_MOUNT_POINT, OPT_REFERENCE_ONLY } from "../api/options.ts";
import { type Capabilities, driverConformance, type TestFunctions } from "./conformance.ts";

type Break = "none" | "deleteWhileMounted" | "ghostInfo" | "forgetsOnRestart" | "silentSnapshots";

/** A driver whose volumes are folders, its records one JSON file; `broken` adds one fault. */
function folderDriver(broken: Break): InitFunc {
  return async (root) => {
    const dir = (name: string) => join(root, "volumes", name);
    const file = join(root, "records.json");
    await mkdir(join(root, "volumes"), { recursive: true });
    const mounted = new Map<string, boolean>(
      broken === "forgetsOnRestart"
        ? []
        : Object.entries(JSON.parse(await readFile(file, "utf8").catch(() => "{}"))),
    );
    const save = () => writeFile(file, JSON.stringify(Object.fromEntries(mounted)));
    const must = (name: string) => {
      if (!mounted.has(name)) throw new NotFoundError(`Volume "${name}" does not exist`);
      return mounted.get(name)!;
    };
    const info = (name: string): StringMap => ({
      Path: dir(name),
      MountPoint: mounted.get(name) ? dir(name) : "",
    });
    const vops: VolumeOperations = {
      name: () => "folder",
      async createVolume(name) {
        if (mounted.has(name)) throw new AlreadyExistsError(`Volume "${name}" already exists`);
        await mkdir(dir(name));
        mounted.set(name, false);
        await save();
      },
      async deleteVolume(name, o) {
        if (must(name) && broken !== "deleteWhileMounted") {
          throw new ConflictError(`Volume "${name}" is mounted`);
        }
        if (o[OPT_REFERENCE_ONLY] !== "true") await rm(dir(name), { recursive: true });
        mounted.delete(name);
        await save();
      },
      async mountVolume(name, o) {
        must(name);
        if (o[OPT_MOUNT_POINT]) throw new NotSupportedError("no custom mount points");
        mounted.set(name, true);
        await save();
        return dir(name);
      },
      async umountVolume(name) {
        must(name);
        mounted.set(name, false);
        await save();
      },
      mountPoint: (name) => must(name) ? dir(name) : "",
      getVolumeInfo: (name) => broken === "ghostInfo" || must(name) !== undefined ? info(name) : {},
      listVolume: () => Object.fromEntries([...mounted.keys()].map((n) => [n, info(n)])),
    };
    const driver: ConvoyDriver = {
      name: () => "folder",
      info: () => ({ Root: root }),
      volumeOps: () => vops,
      snapshotOps: () => {
        if (broken === "silentSnapshots") return {} as never;
        throw new NotSupportedError("folder has no snapshots");
      },
      backupOps: () => {
        throw new NotSupportedError("folder has no backups");
      },
    };
    return driver;
  };
}

/** Runs the suite on `init` outside node:test; each test's name → "pass", "skip" or "fail". */
async function runSuite(
  init: InitFunc,
  capabilities: Capabilities,
): Promise<Record<string, string>> {
  const cases: Array<{ name: string; skip?: string | boolean; fn: () => Promise<void> }> = [];
  const befores: Array<() => Promise<void>> = [];
  const afters: Array<() => Promise<void>> = [];
  const test: TestFunctions = {
    describe: (_name, fn) => fn(),
    it: (name, opts, fn) => cases.push({ name, skip: opts.skip, fn }),
    before: (fn) => befores.push(fn),
    after: (fn) => afters.push(fn),
  };
  driverConformance({ name: "folder", init, capabilities, test });
  const out: Record<string, string> = {};
  for (const fn of befores) await fn();
  try {
    for (const c of cases) {
      const short = c.name.replace(/ \[.*\]$/, "");
      if (c.skip) {
        out[short] = "skip";
        continue;
      }
      out[short] = await c.fn().then(() => "pass", () => "fail");
    }
  } finally {
    for (const fn of afters) await fn();
  }
  return out;
}

const CAPS: Capabilities = { snapshots: false, backups: false, customMountPoint: false };

/** The names of the tests that failed. */
const failed = (r: Record<string, string>) =>
  Object.entries(r).filter(([, v]) => v === "fail").map(([k]) => k);

describe("driverConformance()", () => {
  it("passes a driver that keeps the contract, and skips what it does not offer", async () => {
    const r = await runSuite(folderDriver("none"), CAPS);
    assert.deepEqual(failed(r), []);
    assert.equal(
      r["snapshots: create, inspect, list by volume, delete; NotFound and AlreadyExists"],
      "skip",
    );
    assert.equal(r["mountVolume() at a custom mount point (opts.MountPoint)"], "skip");
    assert.equal(r["snapshotOps() throws NotSupported (capabilities.snapshots is false)"], "pass");
    assert.equal(Object.values(r).filter((v) => v === "pass").length, 10);
  });

  it("fails a driver that deletes a mounted volume", async () => {
    assert.deepEqual(failed(await runSuite(folderDriver("deleteWhileMounted"), CAPS)), [
      "deleteVolume() of a mounted volume is refused with Conflict; data stays",
    ]);
  });

  it("fails a driver that answers getVolumeInfo() for an unknown volume", async () => {
    assert.deepEqual(failed(await runSuite(folderDriver("ghostInfo"), CAPS)), [
      "operations on an unknown volume throw NotFound",
      "deleteVolume() of a mounted volume is refused with Conflict; data stays",
      "deleteVolume() with ReferenceOnly forgets the volume",
    ]);
  });

  it("fails a driver that forgets its volumes on restart", async () => {
    assert.deepEqual(failed(await runSuite(folderDriver("forgetsOnRestart"), CAPS)), [
      "a restarted driver (same root and config) keeps volumes, snapshots and mounts",
    ]);
  });

  it("fails a driver without snapshots that does not say so", async () => {
    assert.deepEqual(failed(await runSuite(folderDriver("silentSnapshots"), CAPS)), [
      "snapshotOps() throws NotSupported (capabilities.snapshots is false)",
    ]);
  });
});
