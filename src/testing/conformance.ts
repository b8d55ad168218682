/**
 * The driver conformance suite: what the daemon relies on from any ConvoyDriver (the seed
 * contract of src/api/driver.ts), run against a real driver instance. Every bundled driver runs
 * it (plugins/*\/conformance_test.ts, tests/dm/conformance_test.ts), and so can a plugin author:
 *
 * ```ts
 * import { describe, it } from "node:test";
 * import { driverConformance, pluginInit } from "convoy/conformance";
 * import setup from "./mydriver.ts";
 *
 * driverConformance({
 *   name: "mydriver",
 *   init: pluginInit(setup, "mydriver"),
 *   capabilities: { snapshots: false, backups: false },
 * });
 * ```
 *
 * A capability the driver does not offer is reported as a skipped test with the reason, and the
 * suite checks that the driver says so with a NotSupportedError; nothing is left out silently.
 * @module
 */
import * as nodeTest from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { ConvoyDriver, InitFunc, StringMap, VolumeOperations } from "../api/driver.ts";
import type { BackupStoreApi, Exec, Logger, PluginSetup } from "../api/plugin.ts";
import {
  OPT_BACKUP_URL,
  OPT_COMPRESSION,
  OPT_ENDPOINT_URL,
  OPT_MOUNT_POINT,
  OPT_PREPARE_FOR_VM,
  OPT_REFERENCE_ONLY,
  OPT_SIZE,
  OPT_SNAPSHOT_CREATED_TIME,
  OPT_VOLUME_CREATED_TIME,
  OPT_VOLUME_ID,
  OPT_VOLUME_IOPS,
  OPT_VOLUME_NAME,
  OPT_VOLUME_TYPE,
} from "../api/options.ts";
import type { ErrorCode } from "../api/errors.ts";
import { createBackupStoreApi } from "../backup/store_api.ts";
import { createPluginApi } from "../plugins/host_api.ts";
import { createExec } from "../runtime/exec.ts";
import { silentLogger } from "../util/log.ts";

/** What a driver offers beyond volumes. Each defaults to true; false skips those tests, visibly. */
export interface Capabilities {
  /** snapshotOps(): create, inspect, list, delete snapshots. */
  snapshots?: boolean;
  /** backupOps(): backup round trip through `backupDest` and restore with OPT_BACKUP_URL. */
  backups?: boolean;
  /** mountVolume with opts.MountPoint (`convoy mount --mountpoint`). */
  customMountPoint?: boolean;
  /** deleteVolume with ReferenceOnly "true" keeps the data. */
  referenceOnlyDelete?: boolean;
}

/** The functions of node:test the suite declares its tests with (injectable for other runners). */
export interface TestFunctions {
  describe: (name: string, fn: () => void) => unknown;
  it: (name: string, opts: { skip?: string | boolean }, fn: () => Promise<void>) => unknown;
  before: (fn: () => Promise<void>) => unknown;
  after: (fn: () => Promise<void>) => unknown;
}

/** Options of driverConformance. */
export interface ConformanceOptions {
  /** The driver's registered name: `driver.name()` and every ops' `name()` must equal it. */
  name: string;
  init: InitFunc;
  /** `--driver-opts`, given to `init` (default `{}`); a function gets the root. */
  config?: StringMap | ((root: string) => StringMap);
  /** The driver's root folder (default: a new temp folder, removed afterwards). */
  root?: string;
  /** The `Size` of created volumes, in bytes as a string (default "0": the driver's default). */
  size?: string;
  /** Where backups go (default `vfs://<temp folder>`). */
  backupDest?: string;
  capabilities?: Capabilities;
  /** Skips the whole suite with this reason (e.g. no device-mapper here); still listed. */
  skip?: string;
  /** Called before the driver starts (e.g. set up a pool that `config` then names). */
  prepare?: () => Promise<void>;
  /** Called after the suite, after its volumes are deleted (e.g. tear down a pool). */
  cleanup?: () => Promise<void>;
  /** node:test by default. */
  test?: TestFunctions;
}

/**
 * An InitFunc for a plugin's `setup(api)`: the real plugin API of the daemon (exec, logger, the
 * backup store over vfs:// and s3:// URLs), as `convoy daemon` would give it.
 */
export function pluginInit(
  setup: PluginSetup,
  name: string,
  opts: { exec?: Exec; log?: Logger; backup?: BackupStoreApi } = {},
): InitFunc {
  const log = opts.log ?? silentLogger;
  let init: InitFunc | undefined;
  const api = createPluginApi({
    register: (registered, fn) => {
      if (registered === name) init = fn;
    },
    log,
    exec: opts.exec ?? createExec({ timeoutMs: 120_000 }),
    backup: opts.backup ?? createBackupStoreApi({ log }),
  });
  setup(api);
  if (!init) throw new Error(`The plugin's setup() did not register a driver named "${name}"`);
  return init;
}

/** Rejects with a ConvoyError of `code` (and the name of the class the plugin API exports). */
async function rejectsWithCode(fn: () => unknown, code: ErrorCode, what: string): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  assert.ok(caught !== undefined, `${what}: expected a ${code} error, got success`);
  const got = (caught as { code?: unknown }).code;
  assert.equal(
    got,
    code,
    `${what}: expected a ${code} error, got ${(caught as Error)?.name} (code ${String(got)}): ${
      (caught as Error)?.message
    }`,
  );
}

function assertStringMap(map: unknown, what: string): asserts map is StringMap {
  assert.ok(map && typeof map === "object" && !Array.isArray(map), `${what}: not an object`);
  for (const [k, v] of Object.entries(map)) {
    assert.equal(typeof v, "string", `${what}: value of "${k}" is ${typeof v}, not a string`);
  }
}

/**
 * Declares the conformance tests of one driver with node:test (describe/it). Volumes, snapshots
 * and backups it makes are named `conf-*` and deleted again; the driver is shut down at the end.
 */
export function driverConformance(opts: ConformanceOptions): void {
  const t: TestFunctions = opts.test ?? (nodeTest as unknown as TestFunctions);
  const caps: Required<Capabilities> = {
    snapshots: true,
    backups: true,
    customMountPoint: true,
    referenceOnlyDelete: true,
    ...opts.capabilities,
  };
  if (!caps.snapshots) caps.backups = false;
  const suiteSkip = opts.skip ? `SKIPPED: ${opts.skip}` : undefined;
  const unless = (cap: keyof Capabilities, what: string) =>
    suiteSkip ??
      (caps[cap]
        ? undefined
        : `SKIPPED: ${opts.name} does not offer ${what} (capabilities.${cap})`);

  /** A test; a skipped one says why in its name, since test reporters may not show reasons. */
  const test = (name: string, skip: string | undefined, fn: () => Promise<void>) =>
    t.it(skip && skip !== suiteSkip ? `${name} [${skip}]` : name, { skip }, fn);

  let root = "";
  let scratch = "";
  let ownRoot = false;
  let driver: ConvoyDriver;
  let vops: VolumeOperations;
  const made = new Set<string>();

  const config = () => typeof opts.config === "function" ? opts.config(root) : opts.config ?? {};
  const start = async () => {
    driver = await opts.init(root, config());
    vops = await driver.volumeOps();
  };
  /** The create options the daemon passes (src/daemon/service.ts createVolume). */
  const createOpts = (name: string, extra: StringMap = {}): StringMap => ({
    [OPT_SIZE]: opts.size ?? "0",
    [OPT_BACKUP_URL]: "",
    [OPT_ENDPOINT_URL]: "",
    [OPT_VOLUME_NAME]: name,
    [OPT_VOLUME_ID]: "",
    [OPT_VOLUME_TYPE]: "",
    [OPT_VOLUME_IOPS]: "0",
    [OPT_PREPARE_FOR_VM]: "false",
    ...extra,
  });
  const create = async (name: string, extra?: StringMap) => {
    made.add(name);
    await vops.createVolume(name, createOpts(name, extra));
  };
  const remove = async (name: string) => {
    await vops.deleteVolume(name, { [OPT_REFERENCE_ONLY]: "false" });
    made.delete(name);
  };
  /** Mounts, writes `content` to a file, unmounts. */
  const writeData = async (name: string, content: string) => {
    const mp = await vops.mountVolume(name, {});
    await writeFile(join(mp, "conformance.txt"), content);
    await vops.umountVolume(name);
  };
  const readData = async (name: string) => {
    const mp = await vops.mountVolume(name, {});
    try {
      return await readFile(join(mp, "conformance.txt"), "utf8");
    } finally {
      await vops.umountVolume(name);
    }
  };

  t.describe(`driver conformance: ${opts.name}${suiteSkip ? ` [${suiteSkip}]` : ""}`, () => {
    t.before(async () => {
      if (suiteSkip) return;
      scratch = await mkdtemp(join(tmpdir(), "convoy-conformance-"));
      ownRoot = !opts.root;
      root = opts.root ?? join(scratch, "root");
      await opts.prepare?.();
      await start();
    });
    t.after(async () => {
      if (suiteSkip) return;
      try {
        for (const name of made) {
          await Promise.resolve(vops.umountVolume(name)).catch(() => {});
          if (caps.snapshots) {
            const sops = await driver.snapshotOps();
            const snaps = await Promise.resolve(sops.listSnapshot({ [OPT_VOLUME_NAME]: name }))
              .catch(() => ({}));
            for (const s of Object.keys(snaps)) {
              await Promise.resolve(sops.deleteSnapshot(s, name)).catch(() => {});
            }
          }
          await Promise.resolve(vops.deleteVolume(name, { [OPT_REFERENCE_ONLY]: "false" }))
            .catch(() => {});
        }
        await driver?.shutdown?.();
      } finally {
        await opts.cleanup?.();
        if (ownRoot) await rm(root, { recursive: true, force: true });
        await rm(scratch, { recursive: true, force: true });
      }
    });

    test("name() and info() describe the driver with string maps", suiteSkip, async () => {
      assert.equal(driver.name(), opts.name);
      assert.equal(vops.name(), opts.name);
      assertStringMap(await driver.info(), "info()");
    });

    test(
      "createVolume() makes a volume that getVolumeInfo() and listVolume() show",
      suiteSkip,
      async () => {
        await create("conf-v1");
        const info = await vops.getVolumeInfo("conf-v1");
        assertStringMap(info, "getVolumeInfo()");
        const list = await vops.listVolume({});
        assert.ok("conf-v1" in list, `listVolume() lacks "conf-v1": ${Object.keys(list)}`);
        assertStringMap(list["conf-v1"], "listVolume()[conf-v1]");
        assert.equal(await vops.mountPoint("conf-v1"), "", "a new volume is not mounted");
        await remove("conf-v1");
      },
    );

    test(
      "createVolume() of an existing name is refused with AlreadyExists; data stays",
      suiteSkip,
      async () => {
        await create("conf-dup");
        await writeData("conf-dup", "first");
        await rejectsWithCode(() => create("conf-dup"), "AlreadyExists", "second createVolume");
        assert.equal(await readData("conf-dup"), "first");
        await remove("conf-dup");
      },
    );

    test("operations on an unknown volume throw NotFound", suiteSkip, async () => {
      const ghost = "conf-ghost";
      await rejectsWithCode(() => vops.getVolumeInfo(ghost), "NotFound", "getVolumeInfo");
      await rejectsWithCode(() => vops.mountVolume(ghost, {}), "NotFound", "mountVolume");
      await rejectsWithCode(() => vops.umountVolume(ghost), "NotFound", "umountVolume");
      await rejectsWithCode(
        () => vops.deleteVolume(ghost, { [OPT_REFERENCE_ONLY]: "false" }),
        "NotFound",
        "deleteVolume",
      );
      assert.ok(!(ghost in await vops.listVolume({})));
    });

    test(
      "mountVolume() mounts, keeps data across mounts, and repeats are idempotent",
      suiteSkip,
      async () => {
        await create("conf-mnt");
        const mp = await vops.mountVolume("conf-mnt", {});
        assert.ok(mp, "mountVolume() resolves to a path");
        assert.ok((await stat(mp)).isDirectory(), `mount point "${mp}" is a folder`);
        assert.equal(await vops.mountPoint("conf-mnt"), mp);
        assert.equal(await vops.mountVolume("conf-mnt", {}), mp, "a second mount answers the same");
        await writeFile(join(mp, "conformance.txt"), "kept");
        await vops.umountVolume("conf-mnt");
        assert.equal(await vops.mountPoint("conf-mnt"), "");
        await vops.umountVolume("conf-mnt"); // unmounting an unmounted volume is no error
        assert.equal(await vops.mountPoint("conf-mnt"), "");
        assert.equal(await readData("conf-mnt"), "kept");
        await remove("conf-mnt");
      },
    );

    test(
      "deleteVolume() of a mounted volume is refused with Conflict; data stays",
      suiteSkip,
      async () => {
        await create("conf-busy");
        const mp = await vops.mountVolume("conf-busy", {});
        await writeFile(join(mp, "conformance.txt"), "busy");
        await rejectsWithCode(
          () => vops.deleteVolume("conf-busy", { [OPT_REFERENCE_ONLY]: "false" }),
          "Conflict",
          "deleteVolume of a mounted volume",
        );
        assert.equal(await readFile(join(mp, "conformance.txt"), "utf8"), "busy");
        await vops.umountVolume("conf-busy");
        await remove("conf-busy");
        await rejectsWithCode(() => vops.getVolumeInfo("conf-busy"), "NotFound", "getVolumeInfo");
        assert.ok(!("conf-busy" in await vops.listVolume({})), "a deleted volume is not listed");
      },
    );

    test(
      "mountVolume() at a custom mount point (opts.MountPoint)",
      unless("customMountPoint", "custom mount points"),
      async () => {
        await create("conf-at");
        await writeData("conf-at", "at");
        const at = join(scratch, "custom-mp");
        assert.equal(await vops.mountVolume("conf-at", { [OPT_MOUNT_POINT]: at }), at);
        assert.equal(await vops.mountPoint("conf-at"), at);
        assert.equal(await readFile(join(at, "conformance.txt"), "utf8"), "at");
        await vops.umountVolume("conf-at");
        assert.equal(await vops.mountPoint("conf-at"), "");
        await remove("conf-at");
      },
    );

    test(
      "deleteVolume() with ReferenceOnly forgets the volume",
      unless("referenceOnlyDelete", "ReferenceOnly deletes"),
      async () => {
        await create("conf-ref");
        await vops.deleteVolume("conf-ref", { [OPT_REFERENCE_ONLY]: "true" });
        made.delete("conf-ref");
        await rejectsWithCode(() => vops.getVolumeInfo("conf-ref"), "NotFound", "getVolumeInfo");
        assert.ok(!("conf-ref" in await vops.listVolume({})));
      },
    );

    if (!caps.snapshots && !suiteSkip) {
      test(
        "snapshotOps() throws NotSupported (capabilities.snapshots is false)",
        undefined,
        async () => {
          await rejectsWithCode(() => driver.snapshotOps(), "NotSupported", "snapshotOps()");
        },
      );
    }
    if (!caps.backups && !suiteSkip) {
      test(
        "backupOps() throws NotSupported (capabilities.backups is false)",
        undefined,
        async () => {
          await rejectsWithCode(() => driver.backupOps(), "NotSupported", "backupOps()");
        },
      );
    }

    test(
      "snapshots: create, inspect, list by volume, delete; NotFound and AlreadyExists",
      unless("snapshots", "snapshots"),
      async () => {
        const sops = await driver.snapshotOps();
        assert.equal(sops.name(), opts.name);
        await create("conf-snapv");
        await create("conf-other");
        await sops.createSnapshot("conf-s1", "conf-snapv");
        await sops.createSnapshot("conf-s2", "conf-other");
        const info = await sops.getSnapshotInfo("conf-s1", "conf-snapv");
        assertStringMap(info, "getSnapshotInfo()");
        const mine = await sops.listSnapshot({ [OPT_VOLUME_NAME]: "conf-snapv" });
        assert.deepEqual(Object.keys(mine), ["conf-s1"], "listSnapshot() filters by VolumeName");
        assertStringMap(mine["conf-s1"], "listSnapshot()[conf-s1]");
        const all = await sops.listSnapshot({});
        assert.ok("conf-s1" in all && "conf-s2" in all, `listSnapshot({}): ${Object.keys(all)}`);

        await rejectsWithCode(
          () => sops.createSnapshot("conf-s1", "conf-snapv"),
          "AlreadyExists",
          "createSnapshot of an existing snapshot",
        );
        await rejectsWithCode(
          () => sops.createSnapshot("conf-s3", "conf-ghost"),
          "NotFound",
          "createSnapshot of an unknown volume",
        );
        await rejectsWithCode(
          () => sops.getSnapshotInfo("conf-nosnap", "conf-snapv"),
          "NotFound",
          "getSnapshotInfo of an unknown snapshot",
        );
        await rejectsWithCode(
          () => sops.deleteSnapshot("conf-nosnap", "conf-snapv"),
          "NotFound",
          "deleteSnapshot of an unknown snapshot",
        );

        await sops.deleteSnapshot("conf-s1", "conf-snapv");
        await rejectsWithCode(
          () => sops.getSnapshotInfo("conf-s1", "conf-snapv"),
          "NotFound",
          "getSnapshotInfo of a deleted snapshot",
        );
        assert.deepEqual(await sops.listSnapshot({ [OPT_VOLUME_NAME]: "conf-snapv" }), {});
        await sops.deleteSnapshot("conf-s2", "conf-other");
        await remove("conf-snapv");
        await remove("conf-other");
      },
    );

    test(
      "backups: a snapshot backed up, listed, inspected, restored and deleted",
      unless("backups", "backups"),
      async () => {
        const sops = await driver.snapshotOps();
        const bops = await driver.backupOps();
        assert.equal(bops.name(), opts.name);
        let dest = opts.backupDest;
        if (!dest) {
          await mkdir(join(scratch, "backups"));
          dest = `vfs://${join(scratch, "backups")}`;
        }
        await create("conf-bv");
        await writeData("conf-bv", "backed up");
        const vinfo = await vops.getVolumeInfo("conf-bv");
        await sops.createSnapshot("conf-bs", "conf-bv");
        const sinfo = await sops.getSnapshotInfo("conf-bs", "conf-bv");
        await writeData("conf-bv", "changed after the snapshot");
        const url = await bops.createBackup("conf-bs", "conf-bv", dest, {
          [OPT_VOLUME_NAME]: "conf-bv",
          [OPT_VOLUME_CREATED_TIME]: vinfo[OPT_VOLUME_CREATED_TIME] ?? "",
          [OPT_SNAPSHOT_CREATED_TIME]: sinfo[OPT_SNAPSHOT_CREATED_TIME] ?? "",
          [OPT_ENDPOINT_URL]: "",
          [OPT_COMPRESSION]: "",
        });
        assert.equal(typeof url, "string");
        assert.ok(url.length > 0, "createBackup() resolves to the backup URL");
        assertStringMap(await bops.getBackupInfo(url, {}), "getBackupInfo()");
        const listed = await bops.listBackup(dest, { [OPT_VOLUME_NAME]: "conf-bv" });
        assert.ok(url in listed, `listBackup() lacks "${url}": ${Object.keys(listed)}`);
        assertStringMap(listed[url], "listBackup()[url]");

        await create("conf-restored", { [OPT_BACKUP_URL]: url });
        assert.equal(await readData("conf-restored"), "backed up", "the restore has the snapshot");
        await rejectsWithCode(
          () => create("conf-bv", { [OPT_BACKUP_URL]: url }),
          "AlreadyExists",
          "restore onto an existing volume",
        );
        assert.equal(await readData("conf-bv"), "changed after the snapshot");

        await bops.deleteBackup(url, {});
        await rejectsWithCode(() => bops.getBackupInfo(url, {}), "NotFound", "getBackupInfo");
        assert.ok(!(url in await bops.listBackup(dest, {})), "a deleted backup is not listed");
        await rejectsWithCode(
          () => create("conf-fromgone", { [OPT_BACKUP_URL]: url }),
          "NotFound",
          "restore of a deleted backup",
        );
        made.delete("conf-fromgone");
        assert.ok(
          !("conf-fromgone" in await vops.listVolume({})),
          "a failed restore leaves nothing",
        );
        await sops.deleteSnapshot("conf-bs", "conf-bv");
        await remove("conf-restored");
        await remove("conf-bv");
      },
    );

    test(
      "a restarted driver (same root and config) keeps volumes, snapshots and mounts",
      suiteSkip,
      async () => {
        await create("conf-keep");
        await writeData("conf-keep", "kept over a restart");
        if (caps.snapshots) {
          await (await driver.snapshotOps()).createSnapshot("conf-ks", "conf-keep");
        }
        const mp = await vops.mountVolume("conf-keep", {});
        const before = await vops.getVolumeInfo("conf-keep");
        await driver.shutdown?.();
        await start();
        assert.deepEqual(await vops.getVolumeInfo("conf-keep"), before);
        assert.ok("conf-keep" in await vops.listVolume({}));
        assert.equal(await vops.mountPoint("conf-keep"), mp, "volumes stay mounted");
        assert.equal(await readFile(join(mp, "conformance.txt"), "utf8"), "kept over a restart");
        await vops.umountVolume("conf-keep");
        if (caps.snapshots) {
          const sops = await driver.snapshotOps();
          assert.ok("conf-ks" in await sops.listSnapshot({ [OPT_VOLUME_NAME]: "conf-keep" }));
          await sops.deleteSnapshot("conf-ks", "conf-keep");
        }
        await remove("conf-keep");
      },
    );
  });
}
