import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BackupStoreApi, LogFields } from "../../mod.ts";
import {
  AlreadyExistsError,
  BackendError,
  ConflictError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
} from "../../mod.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { createPluginApi } from "../../src/plugins/host_api.ts";
import { noBackupStore } from "../../src/plugins/testing.ts";
import { parseMountInfo } from "../../src/util/mountinfo.ts";
import {
  BLOCK,
  devicesWithPrefix,
  dmInit,
  dyingExec,
  exec,
  GiB,
  isMessage,
  type LogLine,
  MiB,
  mountsBelow,
  needsPool,
  pattern,
  type PoolEnv,
  poolUsage,
  recordingExec,
  recordingLogger,
  rejectsWith,
  sha256Of,
  skipNote,
  tableOf,
  thinIDs,
  withPool,
  writeAt,
} from "../../tests/dm/helpers.ts";
import { loadOrCreateConfig, saveConfig } from "./config.ts";
import type { CompareStats } from "./driver.ts";
import type { BlockDriver } from "../../src/plugins/block/driver.ts";
import {
  comparePoolTable,
  deltaToMappings,
  devNumber,
  isSnapshotDeviceName,
  parsePoolStatus,
  parseTable,
  parseThinDelta,
  roundUp,
  sizeAlignment,
  snapshotDeviceName,
  volumeDeviceName,
} from "./dm.ts";
import { createSchemas } from "./options.ts";

// ---- helpers ---------------------------------------------------------------------------------

/** The stats of every compareSnapshot logged so far. */
function compares(log: { lines: LogLine[] }): CompareStats[] {
  return log.lines.filter((l) => l.msg.startsWith("Compared snapshot")).map((l) =>
    l.fields as unknown as CompareStats
  );
}

async function ops(d: BlockDriver) {
  return { vols: await d.volumeOps(), snaps: await d.snapshotOps() };
}

/** The 2 MiB block indexes of a list of mappings. */
function blocksOf(mappings: Array<{ offset: number; size: number }>): number[] {
  const out: number[] = [];
  for (const m of mappings) {
    assert.equal(m.offset % BLOCK, 0, `offset ${m.offset} is not 2 MiB aligned`);
    assert.equal(m.size % BLOCK, 0, `size ${m.size} is not a multiple of 2 MiB`);
    for (let o = m.offset; o < m.offset + m.size; o += BLOCK) out.push(o / BLOCK);
  }
  return out;
}

async function readCfg(env: PoolEnv): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(env.root, "devicemapper.cfg"), "utf8"));
}

/** The journal of thin ids in devicemapper.cfg, ascending. */
async function pendingIDs(env: PoolEnv): Promise<number[]> {
  return [...(await readCfg(env)).PendingDevIDs as number[]].sort((a, b) => a - b);
}

/** Unmounts the volume devices of `env` and deactivates them (and the pool) behind the driver's back. */
async function deactivateAll(env: PoolEnv, opts: { pool: boolean }): Promise<void> {
  for (const p of await mountsBelow(env.dir)) await exec("umount", [p]);
  for (const name of await devicesWithPrefix(`convoy-${env.pool}-`)) {
    await exec("dmsetup", ["remove", name]);
  }
  if (opts.pool) await exec("dmsetup", ["remove", env.pool]);
}

const SAMPLE_DELTA =
  `<superblock uuid="" time="2" transaction="0" data_block_size="128" nr_data_blocks="0">
  <diff left="2" right="3">
    <same begin="10" length="1"/>
    <different begin="11" length="1"/>
    <same begin="12" length="1"/>
    <right_only begin="40" length="1"/>
    <left_only begin="64" length="40"/>
  </diff>
</superblock>
`;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "convoy-dm-test-"));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

// ---- helpers without a pool ------------------------------------------------------------------

describe("devicemapper driver: thin_delta, tables and names", () => {
  it("parseThinDelta() reads thin_delta's ranges (in pool blocks) and the pool block size", () => {
    const d = parseThinDelta(SAMPLE_DELTA);
    assert.equal(d.blockSectors, 128);
    assert.deepEqual(d.ranges, [
      { kind: "same", begin: 10, length: 1 },
      { kind: "different", begin: 11, length: 1 },
      { kind: "same", begin: 12, length: 1 },
      { kind: "right_only", begin: 40, length: 1 },
      { kind: "left_only", begin: 64, length: 40 },
    ]);
    assert.deepEqual(
      parseThinDelta(
        '<superblock data_block_size="4096">\n<diff left="1" right="1">\n</diff>\n</superblock>\n',
      )
        .ranges,
      [],
    );
    for (const bad of ["", "Unable to find mapping tree for snap2 (77)", "<superblock>"]) {
      assert.throws(() => parseThinDelta(bad), /unexpected thin_delta output/);
    }
  });

  it("deltaToMappings() rounds pool blocks out to 2 MiB backup blocks, merges and cuts at the volume size", () => {
    const d = parseThinDelta(SAMPLE_DELTA);
    const KiB64 = 64 * 1024;
    // 64 KiB pool blocks: block 11 (704 KiB) and 40 (2.5 MiB) fall in backup blocks 0 and 1;
    // left_only 64..103 (4 MiB .. 6.5 MiB) in blocks 2 and 3.
    assert.deepEqual(
      deltaToMappings(d.ranges, {
        kinds: ["different", "left_only", "right_only"],
        blockBytes: KiB64,
        limit: 64 * MiB,
      }),
      [{ offset: 0, size: 4 * BLOCK }],
    );
    assert.deepEqual(
      deltaToMappings(d.ranges, { kinds: ["right_only"], blockBytes: KiB64, limit: 64 * MiB }),
      [{ offset: BLOCK, size: BLOCK }],
    );
    // Full: "same" ranges only.
    assert.deepEqual(
      deltaToMappings(d.ranges, { kinds: ["same"], blockBytes: KiB64, limit: 64 * MiB }),
      [{ offset: 0, size: BLOCK }],
    );
    // 4 MiB pool blocks: one pool block is two backup blocks; the volume ends at 6 MiB.
    assert.deepEqual(
      deltaToMappings([{ kind: "different", begin: 1, length: 1 }, {
        kind: "right_only",
        begin: 0,
        length: 1,
      }], { kinds: ["different", "right_only"], blockBytes: 4 * MiB, limit: 6 * MiB }),
      [{ offset: 0, size: 3 * BLOCK }],
    );
    // 2 MiB pool blocks map one to one.
    assert.deepEqual(
      deltaToMappings([{ kind: "different", begin: 3, length: 2 }, {
        kind: "different",
        begin: 7,
        length: 1,
      }], { kinds: ["different"], blockBytes: BLOCK, limit: GiB }),
      [{ offset: 3 * BLOCK, size: 2 * BLOCK }, { offset: 7 * BLOCK, size: BLOCK }],
    );
  });

  it("volume and snapshot devices are prefixed, never clash with each other, and fit 127 characters", () => {
    assert.equal(volumeDeviceName("convoy-pool", "db1"), "convoy-convoy-pool-db1");
    assert.equal(snapshotDeviceName("convoy-pool", "db1", "s1"), "convoy-convoy-pool-db1@s1");
    // A volume named like a snapshot device cannot exist: "@" is not allowed in names.
    assert.notEqual(volumeDeviceName("p", "snap-1"), snapshotDeviceName("p", "snap", "1"));
    assert.ok(isSnapshotDeviceName("p", snapshotDeviceName("p", "v1", "s1")));
    assert.ok(!isSnapshotDeviceName("p", volumeDeviceName("p", "v1")));
    assert.ok(!isSnapshotDeviceName("p", "convoy-q-v1@s1"));
    const long = "v".repeat(255);
    const a = volumeDeviceName("convoy-pool", long);
    const b = volumeDeviceName("convoy-pool", long.slice(0, 254) + "w");
    assert.ok(a.length <= 127 && b.length <= 127);
    assert.notEqual(a, b);
    assert.ok(a.startsWith("convoy-convoy-pool-vvv"));
    const s = snapshotDeviceName("convoy-pool", long, "s".repeat(255));
    assert.ok(s.length <= 127 && isSnapshotDeviceName("convoy-pool", s));
  });

  it("pool tables and status lines are parsed and compared field by field", () => {
    const live = parseTable("0 8388608 thin-pool 7:1 7:0 128 32768 1 skip_block_zeroing \n");
    assert.deepEqual(
      comparePoolTable(live, { metadata: "7:1", data: "7:0", blockSectors: 128 }),
      "",
    );
    assert.equal(
      comparePoolTable(live, { metadata: "7:3", data: "7:0", blockSectors: 4096 }),
      "metadata device 7:1, not 7:3, block size 128 sectors, not 4096",
    );
    assert.equal(
      comparePoolTable(parseTable("0 8 error"), {
        metadata: "7:1",
        data: "7:0",
        blockSectors: 128,
      }),
      'it is a "error" device, not a thin-pool',
    );
    const st = parsePoolStatus(
      "0 2097152 thin-pool 0 1652/16384 5/16384 41 rw discard_passdown queue_if_no_space - 1024",
    );
    assert.deepEqual(st, {
      transactionID: 0,
      usedMetadataBlocks: 1652,
      totalMetadataBlocks: 16384,
      usedDataBlocks: 5,
      totalDataBlocks: 16384,
      heldRoot: "41",
      mode: "rw",
      needsCheck: false,
    });
    assert.equal(parsePoolStatus("0 2097152 thin-pool Fail")?.mode, "Fail");
    assert.equal(devNumber(1792), "7:0");
    assert.equal(devNumber((254 << 8) | 3), "254:3");
    assert.equal(devNumber((259 << 8) | (1 << 20) | 5), "259:261");
    assert.equal(sizeAlignment(128), 2 * MiB);
    assert.equal(sizeAlignment(8192), 4 * MiB);
    assert.equal(sizeAlignment(384), 6 * MiB);
    assert.equal(roundUp(5 * MiB, sizeAlignment(8192)), 8 * MiB);
  });
});

describe("devicemapper driver: options", () => {
  it("a first start without dm.datadev or dm.metadatadev fails with Convoy's message", async () => {
    await withTempDir(async (dir) => {
      const configs: Record<string, string>[] = [
        {},
        { "dm.datadev": "/dev/loop0" },
        { "dm.metadatadev": "/dev/x" },
      ];
      for (const config of configs) {
        await rejectsWith(() => dmInit()(join(dir, "dm"), config), {
          type: InvalidArgumentError,
          message: "Cannot start the devicemapper driver: data device or metadata device " +
            "unspecified (set --driver-opts dm.datadev=<block device> and " +
            "--driver-opts dm.metadatadev=<block device>)",
        });
      }
    });
  });

  it("dm.thinpoolblocksize must be 128..2097152 sectors and a multiple of 128; dm.fs ext4 or xfs", async () => {
    await withTempDir(async (dir) => {
      const base = { "dm.datadev": "/dev/a", "dm.metadatadev": "/dev/b" };
      for (const bs of ["64", "200", "4194304", "2G", "x"]) {
        await rejectsWith(
          () => dmInit()(join(dir, "dm"), { ...base, "dm.thinpoolblocksize": bs }),
          { type: InvalidArgumentError, message: /"dm\.thinpoolblocksize": / },
        );
      }
      await rejectsWith(
        () => dmInit()(join(dir, "dm"), { ...base, "dm.thinpoolblocksize": "200" }),
        {
          type: InvalidArgumentError,
          message: 'Invalid devicemapper driver options: "dm.thinpoolblocksize": block size must ' +
            "be between 128 and 2097152 sectors (64 KiB to 1 GiB) and a multiple of 128, got 200",
        },
      );
      await rejectsWith(
        () => dmInit()(join(dir, "dm"), { ...base, "dm.fs": "btrfs" }),
        { type: InvalidArgumentError, message: /"dm\.fs": / },
      );
      await rejectsWith(
        () => dmInit()(join(dir, "dm"), { ...base, "dm.defaultvolumesize": "0" }),
        { type: InvalidArgumentError, message: /"dm\.defaultvolumesize": must be greater than 0/ },
      );
      await rejectsWith(
        () => dmInit()(join(dir, "dm"), { ...base, "dm.thinpoolname": "a/b" }),
        { type: InvalidArgumentError, message: /"dm\.thinpoolname": / },
      );
      await rejectsWith(
        () => dmInit()(join(dir, "dm"), { ...base, "dm.datadev": "/dev/b" }),
        {
          type: InvalidArgumentError,
          message: /dm\.datadev and dm\.metadatadev are the same device "\/dev\/b"/,
        },
      );
    });
  });

  it("a first start with a device that does not exist or is not a block device fails clearly", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "not-a-device");
      await writeFile(file, "x");
      const root = join(dir, "root", "devicemapper");
      await rejectsWith(
        () => dmInit()(root, { "dm.datadev": "/dev/no-such-disk", "dm.metadatadev": file }),
        {
          type: InvalidArgumentError,
          message: 'Cannot start the devicemapper driver: dm.datadev "/dev/no-such-disk" ' +
            "does not exist",
        },
      );
      await rejectsWith(
        () => dmInit()(root, { "dm.datadev": file, "dm.metadatadev": file + "2" }),
        {
          type: InvalidArgumentError,
          message:
            `Cannot start the devicemapper driver: dm.datadev "${file}" is not a block device`,
        },
      );
      // Nothing was saved: the next start is still a first start.
      assert.deepEqual(await readdir(root), []);
    });
  });
});

describe("devicemapper driver: saved configuration", () => {
  it("loadOrCreateConfig() loads a devicemapper.cfg without PendingDevIDs as nothing pending; saveConfig() writes it", async () => {
    await withTempDir(async (dir) => {
      const api = createPluginApi({
        register: () => {},
        log: recordingLogger(),
        exec,
        backup: noBackupStore,
      });
      const file = join(dir, "devicemapper.cfg");
      // Convoy v0.5.2's fields only: no Kept, no PendingDevIDs.
      const convoy = {
        Root: dir,
        DataDevice: "/dev/loop0",
        MetadataDevice: "/dev/loop1",
        ThinpoolDevice: "/dev/mapper/convoy-pool",
        ThinpoolSize: 4 * GiB,
        ThinpoolBlockSize: 4096,
        DefaultVolumeSize: 100 * GiB,
        LastDevID: 7,
        Filesystem: "ext4",
      };
      await writeFile(file, JSON.stringify(convoy) + "\n");
      const load = () =>
        loadOrCreateConfig(api, createSchemas(api), {
          root: dir,
          config: {},
          log: recordingLogger(),
          create: () => Promise.reject(new Error("not a first start")),
        });
      const { cfg, created } = await load();
      assert.equal(created, false);
      assert.deepEqual(cfg.PendingDevIDs, []);
      assert.deepEqual(cfg.Kept, {});
      assert.equal(cfg.LastDevID, 7);
      cfg.PendingDevIDs = [8, 3];
      await saveConfig(api, cfg);
      const saved = JSON.parse(await readFile(file, "utf8"));
      assert.deepEqual(Object.keys(saved), [...Object.keys(convoy), "Kept", "PendingDevIDs"]);
      assert.deepEqual(saved.PendingDevIDs, [8, 3]);
      assert.deepEqual((await load()).cfg.PendingDevIDs, [8, 3]);
      for (const bad of [[-1], ["3"], [2 ** 24], 5]) {
        await writeFile(file, JSON.stringify({ ...convoy, PendingDevIDs: bad }));
        await rejectsWith(load, {
          type: InvalidArgumentError,
          message: new RegExp(`^Cannot load devicemapper configuration "${file}": "PendingDevIDs`),
        });
      }
    });
  });
});

// ---- a real thin pool ------------------------------------------------------------------------

describe(`devicemapper driver: pool${skipNote}`, needsPool, () => {
  it(
    "the first start creates the pool and saves devicemapper.cfg; a second start re-uses it without zeroing",
    async () => {
      await withPool({ blockSectors: 128, dataSize: 2 * GiB }, async (env) => {
        const d = await env.init();
        assert.equal(d.name(), "devicemapper");
        const table = await tableOf(env.pool);
        assert.match(
          table ?? "",
          new RegExp(
            `^0 ${(2 * GiB) / 512} thin-pool \\d+:\\d+ \\d+:\\d+ 128 32768 1 skip_block_zeroing$`,
          ),
        );
        assert.deepEqual(await d.info(), {
          Driver: "devicemapper",
          Root: env.root,
          DataDevice: env.data,
          MetadataDevice: env.meta,
          ThinpoolDevice: `/dev/mapper/${env.pool}`,
          ThinpoolSize: String(2 * GiB),
          ThinpoolBlockSize: String(64 * 1024),
          DefaultVolumeSize: String(64 * MiB),
          Filesystem: "ext4",
        });
        const cfg = await readCfg(env);
        assert.deepEqual(Object.keys(cfg), [
          "Root",
          "DataDevice",
          "MetadataDevice",
          "ThinpoolDevice",
          "ThinpoolSize",
          "ThinpoolBlockSize",
          "DefaultVolumeSize",
          "LastDevID",
          "Filesystem",
          "Kept",
          "PendingDevIDs",
        ]);
        assert.equal(cfg.ThinpoolBlockSize, 128);
        assert.equal(cfg.LastDevID, 0);
        const { vols } = await ops(d);
        await vols.createVolume("vol1", {});
        const mp = await vols.mountVolume("vol1", {});
        await writeFile(join(mp, "hello.txt"), "still here");
        await vols.umountVolume("vol1");

        // Second start: other options are ignored with a warning; the pool and volume are kept.
        const log2 = recordingLogger();
        const d2 = await env.init({
          log: log2,
          config: { ...env.config, "dm.fs": "xfs", "dm.thinpoolblocksize": "4096" },
        });
        assert.equal(await tableOf(env.pool), table);
        const warnings = log2.lines.filter((l) => l.level === "warn").map((l) => l.msg);
        assert.deepEqual(warnings, [
          `Ignoring --driver-opts dm.thinpoolblocksize="4096": the saved configuration in ` +
          `"${join(env.root, "devicemapper.cfg")}" uses 128 sectors`,
          `Ignoring --driver-opts dm.fs="xfs": the saved configuration in ` +
          `"${join(env.root, "devicemapper.cfg")}" uses "ext4"`,
        ]);
        assert.ok(log2.lines.some((l) => l.msg === `Re-using the active thin pool "${env.pool}"`));
        const v2 = (await ops(d2)).vols;
        assert.equal((await v2.getVolumeInfo("vol1")).DevID, "1");
        const mp2 = await v2.mountVolume("vol1", {});
        assert.equal(await readFile(join(mp2, "hello.txt"), "utf8"), "still here");
        await v2.umountVolume("vol1");

        // Without devicemapper.cfg the pool (active, then inactive) is never taken over or zeroed.
        await rm(join(env.root, "devicemapper.cfg"));
        await rejectsWith(() => env.init(), {
          type: ConflictError,
          message: new RegExp(
            `^Cannot start the devicemapper driver: a device-mapper device named "${env.pool}" ` +
              `already exists .*it is not this driver's pool; choose another dm.thinpoolname$`,
          ),
        });
        await deactivateAll(env, { pool: true });
        await rejectsWith(() => env.init(), {
          type: ConflictError,
          message: new RegExp(
            `dm.metadatadev "${env.meta}" already holds thin-pool metadata.*` +
              `dd if=/dev/zero of=${env.meta} bs=4096 count=1$`,
          ),
        });
        assert.equal(await tableOf(env.pool), undefined);
      });
    },
  );

  it(
    "a pool name taken by another device is refused, on the first start and later",
    async () => {
      await withPool({}, async (env) => {
        await exec("dmsetup", ["create", env.pool, "--table", "0 8 error"]);
        await rejectsWith(() => env.init(), {
          type: ConflictError,
          message: `Cannot start the devicemapper driver: a device-mapper device named ` +
            `"${env.pool}" already exists (table "0 8 error") and ` +
            `"${join(env.root, "devicemapper.cfg")}" does not: it is not this driver's pool; ` +
            `choose another dm.thinpoolname`,
        });
        await exec("dmsetup", ["remove", env.pool]);
        await env.init();
        await exec("dmsetup", ["remove", env.pool]);
        await exec("dmsetup", ["create", env.pool, "--table", "0 8 error"]);
        await rejectsWith(() => env.init(), {
          type: ConflictError,
          message: `Cannot start the devicemapper driver with thin pool "${env.pool}": a ` +
            `device-mapper device named "${env.pool}" exists with another table (it is a ` +
            `"error" device, not a thin-pool): it is not the pool of ` +
            `"${join(env.root, "devicemapper.cfg")}"`,
        });
      });
    },
  );

  it(
    "a pool whose metadata is damaged gives a clear error with recovery advice",
    async () => {
      await withPool({}, async (env) => {
        const { vols } = await ops(await env.init());
        await vols.createVolume("vol1", {});
        await deactivateAll(env, { pool: true });
        await writeAt(env.meta, { offset: 0, data: pattern(7, 4096) });
        const err = await rejectsWith(() => env.init(), {
          type: BackendError,
          message: new RegExp(
            `^Cannot start the devicemapper driver with thin pool "${env.pool}": cannot activate ` +
              `the pool: .*thin_check reports damaged metadata: .*superblock.*` +
              `run "thin_check ${env.meta}"; .*"thin_repair -i ${env.meta} -o <spare>".*` +
              `Never zero the metadata device`,
            "s",
          ),
        });
        assert.ok(err.message.length < 2000, err.message);
        assert.equal(await tableOf(env.pool), undefined);
      });
    },
  );
});

describe(`devicemapper driver: volumes${skipNote}`, needsPool, () => {
  it(
    "createVolume() makes a thin device convoy-<pool>-<name> with ext4, its size rounded up to the pool block",
    async () => {
      await withPool({ blockSectors: 8192 }, async (env) => {
        const { vols } = await ops(await env.init());
        await vols.createVolume("vol1", { Size: "5M" });
        await vols.createVolume("vol2", {});
        const info = await vols.getVolumeInfo("vol1");
        assert.deepEqual(Object.keys(info).sort(), [
          "DevID",
          "Device",
          "Filesystem",
          "MountPoint",
          "Size",
          "VolumeCreatedAt",
          "VolumeName",
        ]);
        assert.equal(info.Device, `/dev/mapper/${env.device("vol1")}`);
        assert.equal(info.Size, String(8 * MiB));
        assert.equal(info.DevID, "1");
        assert.equal(info.Filesystem, "ext4");
        assert.equal(info.MountPoint, "");
        assert.equal(info.VolumeName, "vol1");
        assert.equal((await vols.getVolumeInfo("vol2")).Size, String(64 * MiB));
        assert.equal((await vols.getVolumeInfo("vol2")).DevID, "2");
        assert.match(
          (await tableOf(env.device("vol1"))) ?? "",
          new RegExp(`^0 ${(8 * MiB) / 512} thin \\d+:\\d+ 1$`),
        );
        const fs = await exec("blkid", ["-p", "-o", "value", "-s", "TYPE", info.Device]);
        assert.equal(fs.stdout.trim(), "ext4");
        const rec = JSON.parse(
          await readFile(join(env.root, "devicemapper_volume_vol1.json"), "utf8"),
        );
        // Convoy's fields (what Convoy reads back), plus the host's Device.
        assert.deepEqual(Object.keys(rec).sort(), [
          "Base",
          "CreatedTime",
          "DevID",
          "Device",
          "DeviceName",
          "Filesystem",
          "MountPoint",
          "Name",
          "Size",
          "Snapshots",
          "UUID",
        ]);
        assert.equal(rec.DevID, 1);
        assert.equal(rec.Size, 8 * MiB);
        assert.equal(rec.DeviceName, env.device("vol1"));
        assert.equal(rec.Device, info.Device);
        assert.match(rec.UUID, /^[0-9a-f-]{36}$/);
        assert.deepEqual(rec.Snapshots, {});
        assert.equal((await readCfg(env)).LastDevID, 2);
        assert.deepEqual(Object.keys(await vols.listVolume({})), ["vol1", "vol2"]);

        await rejectsWith(() => vols.createVolume("vol1", {}), {
          type: AlreadyExistsError,
          message: 'Cannot create volume "vol1": volume already exists',
        });
        await rejectsWith(() => vols.getVolumeInfo("nope"), {
          type: NotFoundError,
          message: 'Cannot inspect volume "nope": volume does not exist',
        });
        // Another device already has the name a volume would get: refused, nothing allocated.
        await exec("dmsetup", ["create", env.device("taken"), "--table", "0 8 error"]);
        await rejectsWith(() => vols.createVolume("taken", {}), {
          type: ConflictError,
          message: `Cannot create volume "taken": a device-mapper device named ` +
            `"${env.device("taken")}" already exists (table "0 8 error")`,
        });
        assert.equal((await readCfg(env)).LastDevID, 2);
      });
    },
  );

  it("dm.fs=xfs makes xfs volumes that mount", async () => {
    await withPool({ fs: "xfs", defaultSize: "512M" }, async (env) => {
      const d = await env.init();
      assert.equal((await d.info()).Filesystem, "xfs");
      const { vols } = await ops(d);
      await vols.createVolume("x1", {});
      assert.equal((await vols.getVolumeInfo("x1")).Filesystem, "xfs");
      const mp = await vols.mountVolume("x1", {});
      const entry = parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"))
        .find((e) => e.mountPoint === mp);
      assert.equal(entry?.fstype, "xfs");
      await vols.umountVolume("x1");
    });
  });

  it(
    "mountVolume() mounts at <root>/mounts/<name> or at a given path; exact paths, not prefixes, decide",
    async () => {
      await withPool({}, async (env) => {
        const { vols } = await ops(await env.init());
        await vols.createVolume("vol1", {});
        await vols.createVolume("vol10", {});
        const mp10 = await vols.mountVolume("vol10", {});
        assert.equal(mp10, join(env.root, "mounts", "vol10"));
        assert.equal(await vols.mountPoint("vol1"), "");
        assert.equal(await vols.mountVolume("vol10", {}), mp10);
        await writeFile(join(mp10, "f"), "ten");

        const custom = join(env.dir, "custom", "vol1");
        assert.equal(await vols.mountVolume("vol1", { MountPoint: custom }), custom);
        assert.equal((await vols.getVolumeInfo("vol1")).MountPoint, custom);
        await rejectsWith(() => vols.mountVolume("vol1", { MountPoint: join(env.dir, "other") }), {
          type: ConflictError,
          message: `Cannot mount volume "vol1" at "${join(env.dir, "other")}": volume is ` +
            `already mounted at "${custom}"`,
        });
        await rejectsWith(() => vols.mountVolume("vol1", { MountPoint: "relative/path" }), {
          type: InvalidArgumentError,
          message: /must be an absolute path/,
        });
        // vol10 at vol1's default mount point: a mount point of another device.
        await vols.umountVolume("vol10");
        assert.equal(await vols.mountPoint("vol10"), "");
        await vols.umountVolume("vol1");
        await vols.mountVolume("vol10", { MountPoint: join(env.root, "mounts", "vol1") });
        await rejectsWith(() => vols.mountVolume("vol1", {}), {
          type: ConflictError,
          message: `Cannot mount volume "vol1" at "${join(env.root, "mounts", "vol1")}": ` +
            `"${join(env.root, "mounts", "vol1")}" is already a mount point`,
        });
        await vols.umountVolume("vol10");
        const again = await vols.mountVolume("vol10", {});
        assert.equal(await readFile(join(again, "f"), "utf8"), "ten");
        await vols.umountVolume("vol10");
        assert.deepEqual(await mountsBelow(env.dir), []);
        // The default mount point of vol10 is removed; vol1's path was vol10's custom one.
        assert.deepEqual(await readdir(join(env.root, "mounts")), ["vol1"]);
      });
    },
  );

  it(
    "deleteVolume() refuses while mounted, then removes the device, its snapshots and their thin ids",
    async () => {
      await withPool({ blockSectors: 128 }, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        const before = await poolUsage(env.pool);
        await vols.createVolume("db1", {});
        const mp = await vols.mountVolume("db1", {});
        await writeFile(join(mp, "data.bin"), pattern(1, 4 * MiB));
        await rejectsWith(() => vols.deleteVolume("db1", {}), {
          type: ConflictError,
          message: `Cannot delete volume "db1": volume is mounted at "${mp}"`,
        });
        await snaps.createSnapshot("s1", "db1");
        await writeFile(join(mp, "more.bin"), pattern(2, 2 * MiB));
        await snaps.createSnapshot("s2", "db1");
        await vols.umountVolume("db1");
        // Mounted behind the driver's back: still refused.
        const device = `/dev/mapper/${env.device("db1")}`;
        const behind = join(env.dir, "behind");
        await mkdir(behind);
        await exec("mount", [device, behind]);
        await rejectsWith(() => vols.deleteVolume("db1", {}), {
          type: ConflictError,
          message: `Cannot delete volume "db1": its device "${device}" is mounted at "${behind}"`,
        });
        await exec("umount", [behind]);
        // Mounted through another node of the same device: the device number decides.
        const node = join(env.dir, "db1-node");
        const [major, minor] = devNumber((await stat(device)).rdev).split(":");
        await exec("mknod", [node, "b", major, minor]);
        await exec("mount", [node, behind]);
        assert.equal(
          parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"))
            .find((e) => e.mountPoint === behind)?.source,
          node,
        );
        await rejectsWith(() => vols.deleteVolume("db1", {}), {
          type: ConflictError,
          message: `Cannot delete volume "db1": its device "${device}" is mounted at "${behind}"`,
        });
        await rejectsWith(() => vols.mountVolume("db1", {}), {
          type: ConflictError,
          message: `Cannot mount volume "db1" at "${join(env.root, "mounts", "db1")}": its ` +
            `device "${device}" is mounted at "${behind}"`,
        });
        await exec("umount", [behind]);
        assert.ok((await poolUsage(env.pool)).used > before.used);

        // The data device's file (a loop device on a sparse file): what it holds, in bytes.
        const allocated = async () => {
          await exec("sync", []);
          return (await stat(join(env.dir, "data.img"))).blocks * 512;
        };
        const held = await allocated();
        await vols.deleteVolume("db1", {});
        // The blocks were discarded down to the data device: its file gave them back.
        assert.ok(
          (await allocated()) <= held - 4 * MiB,
          `data.img holds ${await allocated()} bytes, was ${held}`,
        );
        assert.equal(await tableOf(env.device("db1")), undefined);
        assert.deepEqual(await vols.listVolume({}), {});
        assert.equal((await poolUsage(env.pool)).used, before.used);
        // The thin ids of the volume (1) and its snapshots (2, 3) are gone from the pool.
        for (const id of [1, 2, 3]) {
          await assert.rejects(
            exec("dmsetup", [
              "create",
              `${env.device("probe")}${id}`,
              "--table",
              `0 8 thin /dev/mapper/${env.pool} ${id}`,
            ]),
            /No data available/,
          );
        }
        assert.deepEqual(await pendingIDs(env), []);
        await rejectsWith(() => vols.deleteVolume("db1", {}), {
          type: NotFoundError,
          message: 'Cannot delete volume "db1": volume does not exist',
        });
      });
    },
  );

  it(
    "deleteVolume() with ReferenceOnly keeps the thin device and its data; creating the name again adopts it",
    async () => {
      await withPool({}, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        await vols.createVolume("keep", {});
        let mp = await vols.mountVolume("keep", {});
        await writeFile(join(mp, "precious.txt"), "do not destroy");
        await vols.umountVolume("keep");
        await snaps.createSnapshot("s1", "keep");
        const used = (await poolUsage(env.pool)).used;
        const info = await vols.getVolumeInfo("keep");

        await vols.deleteVolume("keep", { ReferenceOnly: "true" });
        assert.deepEqual(await vols.listVolume({}), {});
        assert.equal(await tableOf(env.device("keep")), undefined);
        assert.equal((await poolUsage(env.pool)).used, used);
        const kept = (await readCfg(env)).Kept as Record<string, { DevID: number }>;
        assert.deepEqual(Object.keys(kept), ["keep"]);
        assert.equal(kept.keep.DevID, 1);

        // A restart lists it; creating the name adopts the thin device, data and snapshots.
        const log2 = recordingLogger();
        const v2 = await ops(await env.init({ log: log2 }));
        assert.ok(
          log2.lines.some((l) =>
            l.msg.includes("reference-only deletes") && l.msg.includes("keep")
          ),
        );
        await rejectsWith(() => v2.vols.createVolume("keep", { Size: "1G" }), {
          type: InvalidArgumentError,
          message: `Cannot create volume "keep": the thin device kept from an earlier volume ` +
            `"keep" is ${64 * MiB} bytes, not ${GiB}`,
        });
        await v2.vols.createVolume("keep", {});
        const again = await v2.vols.getVolumeInfo("keep");
        assert.equal(again.DevID, info.DevID);
        assert.equal(again.VolumeCreatedAt, info.VolumeCreatedAt);
        assert.deepEqual(Object.keys(await v2.snaps.listSnapshot({ VolumeName: "keep" })), ["s1"]);
        assert.deepEqual((await readCfg(env)).Kept, {});
        mp = await v2.vols.mountVolume("keep", {});
        assert.equal(await readFile(join(mp, "precious.txt"), "utf8"), "do not destroy");
        await v2.vols.umountVolume("keep");
        await v2.vols.deleteVolume("keep", {});
        assert.ok((await poolUsage(env.pool)).used < used);
      });
    },
  );

  it("parallel creates, snapshots and deletes get distinct thin ids and leave the pool as it was", async () => {
    await withPool({}, async (env) => {
      const { vols, snaps } = await ops(await env.init());
      const before = await poolUsage(env.pool);
      const names = ["p1", "p2", "p3", "p4", "p5", "p6"];
      await Promise.all(names.map(async (n) => {
        await vols.createVolume(n, { Size: "32M" });
        await snaps.createSnapshot(`${n}-s`, n);
      }));
      const ids = new Set<string>();
      for (const n of names) {
        ids.add((await vols.getVolumeInfo(n)).DevID);
        ids.add((await snaps.getSnapshotInfo(`${n}-s`, n)).DevID);
      }
      assert.equal(ids.size, 12);
      assert.equal((await readCfg(env)).LastDevID, 12);
      assert.deepEqual(await pendingIDs(env), []);
      await Promise.all(names.map((n) => vols.deleteVolume(n, {})));
      assert.deepEqual(await vols.listVolume({}), {});
      assert.deepEqual(await pendingIDs(env), []);
      assert.deepEqual(await thinIDs(env), []);
      assert.equal((await poolUsage(env.pool)).used, before.used);
      assert.deepEqual(await devicesWithPrefix(`convoy-${env.pool}-`), []);
    });
  });
});

describe(`devicemapper driver: snapshots${skipNote}`, needsPool, () => {
  it(
    "createSnapshot() suspends the active origin around create_snap and resumes it even when create_snap fails",
    async () => {
      await withPool({}, async (env) => {
        let failSnap = false;
        const rexec = recordingExec((cmd, args) =>
          failSnap && cmd === "dmsetup" && args[0] === "message" &&
            args[3]?.startsWith("create_snap")
            ? new BackendError('Failed to execute "dmsetup message": exit code 1: injected')
            : undefined
        );
        const { vols, snaps } = await ops(await env.init({ exec: rexec }));
        await vols.createVolume("vol1", {});
        const mp = await vols.mountVolume("vol1", {});
        await writeFile(join(mp, "a.txt"), "before");
        rexec.calls.length = 0;
        await snaps.createSnapshot("s1", "vol1");
        const dev = env.device("vol1");
        const dm = rexec.calls.filter((c) => /^dmsetup (suspend|resume|message)/.test(c));
        assert.deepEqual(dm, [
          `dmsetup suspend ${dev}`,
          `dmsetup message ${env.pool} 0 create_snap 2 1`,
          `dmsetup resume ${dev}`,
        ]);
        const info = await snaps.getSnapshotInfo("s1", "vol1");
        assert.deepEqual(Object.keys(info).sort(), [
          "DevID",
          "Size",
          "SnapshotCreatedAt",
          "SnapshotName",
          "UUID",
          "VolumeUUID",
        ]);
        assert.equal(info.UUID, "s1");
        assert.equal(info.VolumeUUID, "vol1");
        assert.equal(info.DevID, "2");
        assert.equal(info.Size, String(64 * MiB));
        await rejectsWith(() => snaps.createSnapshot("s1", "vol1"), {
          type: AlreadyExistsError,
          message: 'Cannot create snapshot "s1" of volume "vol1": snapshot already exists',
        });

        failSnap = true;
        rexec.calls.length = 0;
        await rejectsWith(() => snaps.createSnapshot("s2", "vol1"), {
          type: BackendError,
          message: /^Cannot create snapshot "s2" of volume "vol1": .*injected/,
        });
        assert.deepEqual(rexec.calls.filter((c) => /^dmsetup (suspend|resume)/.test(c)), [
          `dmsetup suspend ${dev}`,
          `dmsetup resume ${dev}`,
        ]);
        const state = (await exec("dmsetup", ["info", dev])).stdout;
        assert.match(state, /State:\s+ACTIVE/);
        assert.doesNotMatch(state, /SUSPENDED/);
        await writeFile(join(mp, "b.txt"), "writable after a failed snapshot");
        assert.deepEqual(Object.keys(await snaps.listSnapshot({})), ["s1"]);
        // The id of the failed create_snap was rolled back: not journaled, not in the pool.
        assert.equal((await readCfg(env)).LastDevID, 3);
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1, 2]);
        failSnap = false;

        await snaps.deleteSnapshot("s1", "vol1");
        await rejectsWith(() => snaps.deleteSnapshot("s1", "vol1"), {
          type: NotFoundError,
          message: 'Cannot delete snapshot "s1" of volume "vol1": snapshot does not exist',
        });
        await rejectsWith(() => snaps.getSnapshotInfo("s1", "vol1"), {
          type: NotFoundError,
          message: 'Cannot inspect snapshot "s1" of volume "vol1": snapshot does not exist',
        });
        await vols.umountVolume("vol1");
      });
    },
  );

  it(
    "compareSnapshot() reports only the blocks written since the base snapshot",
    async () => {
      // 64 KiB pool blocks: thin_delta's ranges are rounded out to 2 MiB backup blocks.
      await withPool({ blockSectors: 128 }, async (env) => {
        const d = await env.init();
        const { vols, snaps } = await ops(d);
        await vols.createVolume("vol1", {});
        const dev = `/dev/mapper/${env.device("vol1")}`;
        await writeAt(dev, { offset: 30 * MiB, data: pattern(1, 2 * MiB + 4096) });
        await snaps.createSnapshot("s1", "vol1");
        await writeAt(dev, { offset: 10 * MiB + 100 * 1024, data: pattern(2, 4096) }); // block 5
        await writeAt(dev, { offset: 42 * MiB - 4096, data: pattern(3, 8192) }); // blocks 20, 21
        await writeAt(dev, { offset: 30 * MiB, data: pattern(4, 512) }); // block 15 (overwrite)
        await snaps.createSnapshot("s2", "vol1");

        const { ops: delta, close } = d.block.deltaOps();
        try {
          const incr = await delta.compareSnapshot("s2", "s1", "vol1");
          if (incr === "unknown") assert.fail("thin_delta always knows what changed");
          assert.equal(incr.blockSize, BLOCK);
          assert.deepEqual(blocksOf(incr.mappings), [5, 15, 20, 21]);
          const stats = compares(env.log).at(-1)!;
          assert.equal(stats.method, "incremental");
          assert.equal(stats.poolBlockSize, 64 * 1024);

          // Full: every provisioned block, i.e. every block not reported reads as zeros.
          const full = await delta.compareSnapshot("s2", "", "vol1");
          if (full === "unknown") assert.fail("a full compare is never unknown");
          const reported = new Set(blocksOf(full.mappings));
          for (const b of [5, 15, 16, 20, 21]) assert.ok(reported.has(b), `block ${b} missing`);
          await delta.openSnapshot("s2", "vol1");
          const buf = new Uint8Array(BLOCK);
          for (let b = 0; b < 32; b++) {
            if (reported.has(b)) continue;
            await delta.readSnapshot("s2", "vol1", b * BLOCK, buf);
            assert.ok(buf.every((x) => x === 0), `unreported block ${b} holds data`);
          }
          // The snapshot device is read-only and holds s2's bytes.
          await delta.readSnapshot("s2", "vol1", 42 * MiB - 4096, buf.subarray(0, 8192));
          assert.deepEqual(buf.subarray(0, 8192), pattern(3, 8192));
          const snapDev = `/dev/mapper/${env.device("vol1")}@s2`;
          assert.match((await exec("dmsetup", ["info", snapDev])).stdout, /READ-ONLY/);
          await delta.closeSnapshot("s2", "vol1");
          assert.equal(await tableOf(snapDev), undefined);
          assert.equal(compares(env.log).at(-1)!.method, "full");
          assert.equal((await poolUsage(env.pool)).held, "-");
        } finally {
          await close();
        }
        await rejectsWith(() => d.block.deltaOps().ops.compareSnapshot("s9", "s1", "vol1"), {
          type: NotFoundError,
          message: 'Cannot compare snapshot "s9" of volume "vol1": snapshot does not exist',
        });
      });
    },
  );

  it(
    "a thin_delta failure is reported clearly and release_metadata_snap still runs",
    async () => {
      await withPool({}, async (env) => {
        const fake = join(env.dir, "fake-thin_delta");
        await writeFile(fake, "#!/bin/sh\necho 'bad checksum in superblock' >&2\nexit 1\n", {
          mode: 0o755,
        });
        const hang = join(env.dir, "hanging-thin_delta");
        await writeFile(hang, "#!/bin/sh\nexec sleep 60\n", { mode: 0o755 });
        let stuck = false;
        // A stuck thin_delta is stopped by the command timeout (--cmd-timeout; 1.5 s here).
        const rexec = recordingExec((cmd, args) =>
          cmd !== "thin_delta"
            ? undefined
            : stuck
            ? { cmd: hang, args, timeoutMs: 1500 }
            : { cmd: fake, args }
        );
        const store = join(env.dir, "store");
        await mkdir(store);
        const d = await env.init({
          exec: rexec,
          backup: createBackupStoreApi({ log: recordingLogger() }),
        });
        const { vols, snaps } = await ops(d);
        await vols.createVolume("vol1", {});
        await snaps.createSnapshot("s1", "vol1");
        rexec.calls.length = 0;
        await rejectsWith(() => d.block.deltaOps().ops.compareSnapshot("s1", "", "vol1"), {
          type: BackendError,
          message: new RegExp(
            `^Cannot compare snapshot "s1" of volume "vol1": thin_delta failed: Failed to execute ` +
              `".*fake-thin_delta -m --snap1 2 --snap2 2 ${env.meta}": exit code 1: ` +
              `bad checksum in superblock$`,
          ),
        });
        assert.deepEqual(rexec.calls.filter((c) => !c.startsWith("dmsetup table")), [
          `dmsetup message ${env.pool} 0 reserve_metadata_snap`,
          `thin_delta -m --snap1 2 --snap2 2 ${env.meta}`,
          `dmsetup message ${env.pool} 0 release_metadata_snap`,
        ]);
        assert.equal((await poolUsage(env.pool)).held, "-");

        stuck = true;
        rexec.calls.length = 0;
        await rejectsWith(() => d.block.deltaOps().ops.compareSnapshot("s1", "", "vol1"), {
          type: TimeoutError,
          message: new RegExp(
            `^Cannot compare snapshot "s1" of volume "vol1": thin_delta did not finish: ` +
              `Timeout executing ".*hanging-thin_delta -m --snap1 2 --snap2 2 ${env.meta}" after 2s$`,
          ),
        });
        assert.equal(rexec.calls.at(-1), `dmsetup message ${env.pool} 0 release_metadata_snap`);
        assert.equal((await poolUsage(env.pool)).held, "-");
        stuck = false;

        // Through a backup: the same error, nothing left active, the snapshot is free again.
        await rejectsWith(
          async () => await (await d.backupOps()).createBackup("s1", "vol1", `vfs://${store}`, {}),
          {
            type: BackendError,
            message: /^Cannot back up snapshot "s1" of volume "vol1": .*bad checksum in superblock/,
          },
        );
        assert.deepEqual(await devicesWithPrefix(`convoy-${env.pool}-vol1@`), []);
        assert.equal((await poolUsage(env.pool)).held, "-");
        await snaps.deleteSnapshot("s1", "vol1");

        // A metadata snapshot someone else holds: a clear error naming the command to release it.
        await snaps.createSnapshot("s2", "vol1");
        await exec("dmsetup", ["message", env.pool, "0", "reserve_metadata_snap"]);
        await rejectsWith(() => d.block.deltaOps().ops.compareSnapshot("s2", "", "vol1"), {
          type: ConflictError,
          message: `a metadata snapshot of thin pool "${env.pool}" is already reserved (by ` +
            `another tool, or left by a crash); release it with ` +
            `"dmsetup message ${env.pool} 0 release_metadata_snap"`,
        });
        // The next start releases one left behind.
        await env.init();
        assert.equal((await poolUsage(env.pool)).held, "-");
      });
    },
  );
});

describe(`devicemapper driver: backups${skipNote}`, needsPool, () => {
  /** A driver with the real backup store api and a vfs:// destination in the temp dir. */
  async function backupEnv(
    env: PoolEnv,
    opts: { wrap?: (b: BackupStoreApi) => BackupStoreApi } = {},
  ) {
    const storeLog = recordingLogger();
    const real = createBackupStoreApi({ log: storeLog });
    const backup = opts.wrap ? opts.wrap(real) : real;
    const d = await env.init({ backup });
    const store = join(env.dir, "backupstore");
    await mkdir(store, { recursive: true });
    return {
      d,
      backup,
      storeLog,
      dest: `vfs://${store}`,
      store,
      vols: await d.volumeOps(),
      snaps: await d.snapshotOps(),
      backups: await d.backupOps(),
    };
  }

  /** The engine's "backup completed" fields, newest last. */
  function completed(log: { lines: LogLine[] }): LogFields[] {
    return log.lines.filter((l) => l.msg === "backup completed").map((l) => l.fields);
  }

  async function blockFiles(store: string): Promise<string[]> {
    return (await readdir(store, { recursive: true })).map(String).filter((f) => f.endsWith(".blk"))
      .sort();
  }

  it(
    "createBackup() uploads only the changed blocks; restores give each snapshot's bytes back",
    async () => {
      await withPool({}, async (env) => {
        const { dest, store, vols, snaps, backups, storeLog } = await backupEnv(env);
        assert.equal(backups.name(), "devicemapper");
        await vols.createVolume("vol1", { Size: "32M" });
        const size = 32 * MiB;
        const dev = `/dev/mapper/${env.device("vol1")}`;
        let mp = await vols.mountVolume("vol1", {});
        await writeFile(join(mp, "one.txt"), "first version");
        await vols.umountVolume("vol1");
        await writeAt(dev, { offset: 20 * MiB, data: pattern(1, 3 * BLOCK) });
        const sum1 = await sha256Of(dev, size);
        await snaps.createSnapshot("s1", "vol1");
        const url1 = await backups.createBackup("s1", "vol1", dest, {});
        assert.match(url1, new RegExp(`^${dest}\\?backup=backup-[0-9a-f]+&volume=vol1$`));
        const blk1 = await blockFiles(store);
        const [c1] = completed(storeLog);
        assert.equal(c1.mode, "full");
        assert.equal(blk1.length, c1.blocksChanged);

        // Three whole blocks change: exactly three new blocks are read and stored.
        await writeAt(dev, { offset: 10 * MiB, data: pattern(2, BLOCK) });
        await writeAt(dev, { offset: 20 * MiB, data: pattern(3, BLOCK) });
        await writeAt(dev, { offset: 30 * MiB, data: pattern(4, BLOCK) });
        const sum2 = await sha256Of(dev, size);
        await snaps.createSnapshot("s2", "vol1");
        const url2 = await backups.createBackup("s2", "vol1", dest, {});
        const c2 = completed(storeLog).at(-1)!;
        assert.equal(c2.mode, "incremental");
        assert.equal(c2.blocksRead, 3);
        assert.equal((await blockFiles(store)).length, blk1.length + 3);
        assert.equal(compares(env.log).at(-1)!.blocks, 3);
        assert.deepEqual(await devicesWithPrefix(`convoy-${env.pool}-vol1@`), []);

        const info = await backups.getBackupInfo(url2, {});
        assert.equal(info.DriverName, "devicemapper");
        assert.equal(info.VolumeName, "vol1");
        assert.equal(info.SnapshotName, "s2");
        assert.equal(info.VolumeSize, String(size));
        assert.deepEqual(
          Object.keys(await backups.listBackup(dest, {})).sort(),
          [url1, url2].sort(),
        );
        assert.deepEqual(
          Object.keys(await backups.listBackup(dest, { VolumeName: "vol1" })).sort(),
          [url1, url2].sort(),
        );

        for (const [url, res, sum] of [[url1, "res1", sum1], [url2, "res2", sum2]]) {
          await vols.createVolume(res, { BackupURL: url });
          const ri = await vols.getVolumeInfo(res);
          assert.equal(ri.Size, String(size));
          assert.equal(ri.Filesystem, "ext4");
          assert.equal(await sha256Of(ri.Device, size), sum, `${res} differs`);
        }
        mp = await vols.mountVolume("res1", {});
        assert.equal(await readFile(join(mp, "one.txt"), "utf8"), "first version");
        await vols.umountVolume("res1");

        await rejectsWith(() => vols.createVolume("res3", { BackupURL: url2, Size: "16M" }), {
          type: InvalidArgumentError,
          message: `Cannot create volume "res3" from backup "${url2}": size must match the ` +
            `backup's size ${size}`,
        });
        await vols.createVolume("res4", { BackupURL: url2, Size: String(size) });

        await backups.deleteBackup(url1, {});
        await backups.deleteBackup(url2, {});
        assert.deepEqual(await backups.listBackup(dest, {}), {});
        await rejectsWith(() => backups.getBackupInfo(url2, {}), {
          type: NotFoundError,
          message: /^Cannot find backup/,
        });
      });
    },
  );

  it(
    "a failed restore leaves no device, thin id or record behind; backups of other drivers are refused",
    async () => {
      await withPool({}, async (env) => {
        let failRestore = false;
        const { backup, dest, vols, snaps, backups } = await backupEnv(env, {
          wrap: (real) => ({
            ...real,
            restoreDeltaBackup: async (url, target, o) => {
              if (!failRestore) return await real.restoreDeltaBackup(url, target, o);
              await writeAt(target, { offset: 0, data: pattern(1, 4096) });
              throw new Error("connection reset by peer");
            },
          }),
        });
        await vols.createVolume("vol1", {});
        await snaps.createSnapshot("s1", "vol1");
        const url = await backups.createBackup("s1", "vol1", dest, {});
        const leftovers = async () => ({
          devices: await devicesWithPrefix(`convoy-${env.pool}-`),
          records: (await readdir(env.root)).filter((f) => f.endsWith(".json")).sort(),
          used: (await poolUsage(env.pool)).used,
        });
        const before = await leftovers();
        failRestore = true;
        await rejectsWith(() => vols.createVolume("res1", { BackupURL: url }), {
          type: BackendError,
          message: `Cannot create volume "res1" from backup "${url}": connection reset by peer`,
        });
        assert.deepEqual(await leftovers(), before);
        assert.deepEqual(await pendingIDs(env), []);
        failRestore = false;

        const archive = join(env.dir, "archive.tar.gz");
        await writeFile(archive, "not a block image");
        const vfsURL = await backup.createSingleFileBackup(archive, {
          volume: { name: "files", driver: "vfs", size: 0, createdTime: "x" },
          snapshot: { name: "snap", createdTime: "y" },
          destURL: dest,
        });
        await rejectsWith(() => vols.createVolume("res2", { BackupURL: vfsURL }), {
          type: InvalidArgumentError,
          message: `Cannot create volume "res2" from backup "${vfsURL}": it was made by driver ` +
            `"vfs" as a file-level backup; only block backups restore into devicemapper volumes`,
        });
        await rejectsWith(() => backups.deleteBackup(vfsURL, {}), {
          type: InvalidArgumentError,
          message: `Cannot delete backup "${vfsURL}" with the devicemapper driver: it was made ` +
            `by driver "vfs"`,
        });
        assert.deepEqual(await leftovers(), before);
      });
    },
  );
});

describe(`devicemapper driver: restart${skipNote}`, needsPool, () => {
  it(
    "a restart re-activates every volume and re-mounts recorded mounts where they were, with or without the pool",
    async () => {
      await withPool({}, async (env) => {
        const { vols } = await ops(await env.init());
        await vols.createVolume("vol1", {});
        await vols.createVolume("vol2", {});
        await vols.createVolume("vol3", {});
        const mp1 = await vols.mountVolume("vol1", {});
        const mp2 = await vols.mountVolume("vol2", { MountPoint: join(env.dir, "custom", "two") });
        await writeFile(join(mp1, "f"), "one");
        await writeFile(join(mp2, "f"), "two");
        const tables = await Promise.all(
          ["vol1", "vol2", "vol3"].map((v) => tableOf(env.device(v))),
        );

        const check = async () => {
          for (const [i, v] of ["vol1", "vol2", "vol3"].entries()) {
            assert.equal(await tableOf(env.device(v)), tables[i], `${v} is not active`);
          }
          const mounts = parseMountInfo(await readFile("/proc/self/mountinfo", "utf8"));
          assert.equal(
            mounts.find((e) => e.mountPoint === mp1)?.source,
            `/dev/mapper/${env.device("vol1")}`,
          );
          assert.equal(
            mounts.find((e) => e.mountPoint === mp2)?.source,
            `/dev/mapper/${env.device("vol2")}`,
          );
          assert.equal(await readFile(join(mp1, "f"), "utf8"), "one");
          assert.equal(await readFile(join(mp2, "f"), "utf8"), "two");
        };

        // The pool stays active; the volumes are unmounted and deactivated behind our back.
        await deactivateAll(env, { pool: false });
        const log2 = recordingLogger();
        const d2 = await env.init({ log: log2 });
        await check();
        assert.deepEqual(log2.lines.filter((l) => l.level === "error"), []);
        assert.equal(await (await d2.volumeOps()).mountPoint("vol2"), mp2);

        // A reboot: everything is gone, the pool too.
        await deactivateAll(env, { pool: true });
        await env.init();
        await check();
        const { vols: v3 } = await ops(await env.init());
        await check();
        await v3.umountVolume("vol1");
        await v3.umountVolume("vol2");
      });
    },
  );
  it(
    "a Convoy v0.5.2 record (no UUID, DeviceName or Device, Snapshots null) is activated under its bare name and completed",
    async () => {
      await withPool({}, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        // A volume name no other test uses: Convoy named the device after the volume alone.
        const name = `${env.pool}-old`;
        await vols.createVolume(name, {});
        let mp = await vols.mountVolume(name, {});
        await writeFile(join(mp, "f"), "from convoy");
        await vols.umountVolume(name);
        await snaps.createSnapshot("s1", name);
        const file = join(env.root, `devicemapper_volume_${name}.json`);
        const ours = JSON.parse(await readFile(file, "utf8"));
        await exec("dmsetup", ["remove", env.device(name)]);
        // What Convoy v0.5.2 wrote: its fields only; first with no snapshots (null).
        const convoy = {
          Name: name,
          DevID: ours.DevID,
          Size: ours.Size,
          Base: "",
          MountPoint: "",
          CreatedTime: ours.CreatedTime,
          Snapshots: null,
        };
        await writeFile(file, JSON.stringify(convoy));
        try {
          const d2 = await ops(await env.init());
          assert.deepEqual(await d2.snaps.listSnapshot({ VolumeName: name }), {});
          await d2.vols.deleteVolume(name, { ReferenceOnly: "true" });
          await d2.vols.createVolume(name, {});
          await d2.vols.deleteVolume(name, { ReferenceOnly: "true" });
          // And with its snapshot, Convoy's fields only (no Size).
          await writeFile(
            file,
            JSON.stringify({
              ...convoy,
              Snapshots: {
                s1: {
                  Name: "s1",
                  CreatedTime: ours.Snapshots.s1.CreatedTime,
                  DevID: ours.Snapshots.s1.DevID,
                  Activated: false,
                },
              },
            }),
          );
          await writeFile(
            join(env.root, "devicemapper.cfg"),
            JSON.stringify({ ...await readCfg(env), Kept: {} }),
          );
          const d3 = await ops(await env.init());
          const info = await d3.vols.getVolumeInfo(name);
          assert.equal(info.Device, `/dev/mapper/${name}`);
          assert.equal(info.Filesystem, "ext4");
          assert.equal(info.DevID, String(ours.DevID));
          assert.equal((await tableOf(name)) !== undefined, true);
          const rec = JSON.parse(await readFile(file, "utf8"));
          assert.match(rec.UUID, /^[0-9a-f-]{36}$/);
          assert.equal(rec.DeviceName, name);
          const s1 = await d3.snaps.getSnapshotInfo("s1", name);
          assert.equal(s1.Size, String(ours.Size));
          assert.equal(s1.DevID, String(ours.Snapshots.s1.DevID));
          mp = await d3.vols.mountVolume(name, {});
          assert.equal(await readFile(join(mp, "f"), "utf8"), "from convoy");
          await d3.vols.umountVolume(name);
          await d3.vols.deleteVolume(name, {});
          assert.equal(await tableOf(name), undefined);
          assert.deepEqual(await thinIDs(env), []);
        } finally {
          await exec("dmsetup", ["remove", name]).catch(() => {});
        }
      });
    },
  );
});

describe(`devicemapper driver: interrupted operations${skipNote}`, needsPool, () => {
  it(
    "init() deletes a thin id orphaned by a create that died before its record; referenced ids and other tools' ids stay",
    async () => {
      await withPool({}, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        await vols.createVolume("vol1", {}); // id 1
        await snaps.createSnapshot("s1", "vol1"); // id 2
        // Another tool's thin ids in the same pool: 3 (the driver's next id) and 1000.
        for (const id of [3, 1000]) {
          await exec("dmsetup", ["message", env.pool, "0", `create_thin ${id}`]);
        }
        const before = await poolUsage(env.pool);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 1000]);
        assert.deepEqual(await pendingIDs(env), []);
        const deleted = (log: { lines: LogLine[] }) =>
          log.lines.filter((l) => l.level === "info" && /thin id/.test(l.msg))
            .map((l) => [l.msg, l.fields.devID]);

        // 1. Killed right after create_thin: id 3 was taken (not ours: never journaled), 4 made.
        const die1 = dyingExec((cmd, args) => isMessage(cmd, args, "create_thin"), { run: true });
        void (await ops(await env.init({ exec: die1 }))).vols.createVolume("vol2", {});
        assert.equal(await die1.died, `dmsetup message ${env.pool} 0 create_thin 4`);
        assert.equal((await readCfg(env)).LastDevID, 4);
        assert.deepEqual(await pendingIDs(env), [4]);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 4, 1000]);

        // 2. The restart deletes 4. Then killed after the mkfs of vol3 (id 5), its device active.
        const log2 = recordingLogger();
        const die2 = dyingExec((cmd) => cmd === "mkfs.ext4", { run: true });
        void (await ops(await env.init({ exec: die2, log: log2 }))).vols.createVolume("vol3", {});
        assert.match(await die2.died, new RegExp(`^mkfs.ext4 .*/${env.device("vol3")}$`));
        assert.deepEqual(deleted(log2), [
          ["Deleted thin id 4, orphaned by an interrupted operation", 4],
        ]);
        assert.deepEqual(await pendingIDs(env), [5]);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 5, 1000]);
        assert.match((await tableOf(env.device("vol3"))) ?? "", / 5$/);
        assert.ok((await poolUsage(env.pool)).used > before.used);

        // 3. The restart removes vol3's device and deletes 5, freeing its blocks. Then killed
        // right after the create_snap of s2 (id 6).
        const log3 = recordingLogger();
        const die3 = dyingExec((cmd, args) => isMessage(cmd, args, "create_snap"), { run: true });
        void (await ops(await env.init({ exec: die3, log: log3 }))).snaps.createSnapshot(
          "s2",
          "vol1",
        );
        assert.equal(await die3.died, `dmsetup message ${env.pool} 0 create_snap 6 1`);
        const state = async () =>
          /State:\s+(\S+)/.exec((await exec("dmsetup", ["info", env.device("vol1")])).stdout)?.[1];
        assert.equal(await state(), "SUSPENDED");
        assert.deepEqual(deleted(log3), [
          [`Removed device "${env.device("vol3")}" of the orphaned thin id 5`, 5],
          ["Deleted thin id 5, orphaned by an interrupted operation", 5],
        ]);
        assert.equal(await tableOf(env.device("vol3")), undefined);
        assert.equal((await poolUsage(env.pool)).used, before.used);
        assert.deepEqual(await pendingIDs(env), [6]);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 6, 1000]);

        // 4. The restart deletes 6: the pool, the records and the journal are as before.
        const log4 = recordingLogger();
        const d4 = await ops(await env.init({ log: log4 }));
        assert.deepEqual(deleted(log4), [
          ["Deleted thin id 6, orphaned by an interrupted operation", 6],
        ]);
        // The origin the killed snapshot create had suspended is resumed.
        assert.equal(await state(), "ACTIVE");
        assert.deepEqual(log4.lines.filter((l) => l.level === "warn").map((l) => l.msg), [
          'Resumed volume "vol1", left suspended by an interrupted snapshot create',
        ]);
        await writeAt(`/dev/mapper/${env.device("vol1")}`, { offset: 0, data: pattern(4, 4096) });
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 1000]);
        assert.deepEqual(Object.keys(await d4.vols.listVolume({})), ["vol1"]);
        assert.deepEqual(Object.keys(await d4.snaps.listSnapshot({})), ["s1"]);
        // The name the orphaned device held is free again.
        await d4.vols.createVolume("vol3", {});
        assert.equal((await d4.vols.getVolumeInfo("vol3")).DevID, "7");
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 7, 1000]);
      });
    },
  );

  it(
    "a volume or snapshot delete killed before its thin ids were deleted is finished by the next start, also after a reboot",
    async () => {
      await withPool({}, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        await vols.createVolume("vol2", {}); // id 1
        await writeAt(`/dev/mapper/${env.device("vol2")}`, { offset: 0, data: pattern(1, BLOCK) });
        await snaps.createSnapshot("s3", "vol2"); // id 2, sharing every block of vol2
        const vol2Only = await poolUsage(env.pool);
        await vols.createVolume("vol1", {}); // id 3
        await snaps.createSnapshot("s1", "vol1"); // id 4
        await writeAt(`/dev/mapper/${env.device("vol1")}`, {
          offset: 8 * MiB,
          data: pattern(2, 2 * BLOCK),
        });
        await snaps.createSnapshot("s2", "vol1"); // id 5
        await writeAt(`/dev/mapper/${env.device("vol1")}`, { offset: 0, data: pattern(3, BLOCK) });
        const records = async () => (await readdir(env.root)).filter((f) => f.endsWith(".json"));

        // Killed at its first thin delete: the device and the record are gone, the ids journaled.
        const die1 = dyingExec((cmd, args) => isMessage(cmd, args, "delete"), { run: false });
        void (await ops(await env.init({ exec: die1 }))).vols.deleteVolume("vol1", {});
        assert.equal(await die1.died, `dmsetup message ${env.pool} 0 delete 4`);
        assert.deepEqual(await records(), ["devicemapper_volume_vol2.json"]);
        assert.equal(await tableOf(env.device("vol1")), undefined);
        assert.deepEqual(await pendingIDs(env), [3, 4, 5]);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 4, 5]);

        // The restart (the pool stayed active) deletes them. Then a snapshot delete is killed.
        const die2 = dyingExec((cmd, args) => isMessage(cmd, args, "delete 2"), { run: false });
        const d2 = await ops(await env.init({ exec: die2 }));
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1, 2]);
        void d2.snaps.deleteSnapshot("s3", "vol2");
        assert.equal(await die2.died, `dmsetup message ${env.pool} 0 delete 2`);
        assert.deepEqual(await pendingIDs(env), [2]);
        assert.deepEqual(await thinIDs(env), [1, 2]);

        // A reboot: the pool is activated again, and then the snapshot's id is deleted.
        await deactivateAll(env, { pool: true });
        const { vols: v3, snaps: s3 } = await ops(await env.init());
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1]);
        assert.deepEqual(await s3.listSnapshot({}), {});
        assert.deepEqual(Object.keys(await v3.listVolume({})), ["vol2"]);
        assert.equal((await poolUsage(env.pool)).used, vol2Only.used);
      });
    },
  );

  it(
    "journaled ids that a record or Kept references are only cleared; a devicemapper.cfg without PendingDevIDs starts",
    async () => {
      await withPool({}, async (env) => {
        const { vols, snaps } = await ops(await env.init());
        await vols.createVolume("vol1", {}); // id 1
        let mp = await vols.mountVolume("vol1", {});
        await writeFile(join(mp, "f"), "kept safe");
        await vols.umountVolume("vol1");
        await snaps.createSnapshot("s1", "vol1"); // id 2
        await vols.createVolume("kept", {}); // id 3
        await snaps.createSnapshot("k1", "kept"); // id 4
        await vols.deleteVolume("kept", { ReferenceOnly: "true" });
        // What a daemon killed after writing the records, before clearing the journal, leaves.
        const file = join(env.root, "devicemapper.cfg");
        await writeFile(
          file,
          JSON.stringify({ ...await readCfg(env), PendingDevIDs: [1, 2, 3, 4] }),
        );
        const log = recordingLogger();
        const { vols: v2 } = await ops(await env.init({ log }));
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 4]);
        assert.deepEqual(log.lines.filter((l) => /thin id/.test(l.msg)), []);
        mp = await v2.mountVolume("vol1", {});
        assert.equal(await readFile(join(mp, "f"), "utf8"), "kept safe");
        await v2.umountVolume("vol1");
        await v2.createVolume("kept", {});
        assert.equal((await v2.getVolumeInfo("kept")).DevID, "3");

        // The devicemapper.cfg of an older version (or Convoy's) has no journal: nothing pending.
        const old = await readCfg(env);
        delete old.PendingDevIDs;
        await writeFile(file, JSON.stringify(old) + "\n");
        const { vols: v3 } = await ops(await env.init());
        assert.deepEqual(await thinIDs(env), [1, 2, 3, 4]);
        await v3.createVolume("vol2", {});
        assert.equal((await v3.getVolumeInfo("vol2")).DevID, "5");
        assert.deepEqual((await readCfg(env)).PendingDevIDs, []);
      });
    },
  );

  it(
    "an orphaned id the pool does not delete stays journaled and the daemon starts; an unreadable record stops deletions",
    async () => {
      await withPool({}, async (env) => {
        const { vols } = await ops(await env.init());
        await vols.createVolume("vol1", {}); // id 1
        const die = dyingExec((cmd, args) => isMessage(cmd, args, "create_thin"), { run: true });
        void (await ops(await env.init({ exec: die }))).vols.createVolume("vol2", {});
        assert.equal(await die.died, `dmsetup message ${env.pool} 0 create_thin 2`);
        assert.deepEqual(await pendingIDs(env), [2]);

        // The pool refuses the delete: logged with the id and kept for the next start.
        const refuse = recordingExec((cmd, args) =>
          isMessage(cmd, args, "delete")
            ? new BackendError(
              `Failed to execute "dmsetup message ${env.pool} 0 ${args[3]}": exit code 1: ` +
                "device-mapper: message ioctl failed: Operation not permitted",
            )
            : undefined
        );
        const log1 = recordingLogger();
        const d1 = await ops(await env.init({ exec: refuse, log: log1 }));
        assert.deepEqual(
          log1.lines.filter((l) => l.level === "warn" || l.level === "error")
            .map((l) => [l.msg, l.fields.devID]),
          [[
            `Cannot delete the orphaned thin id 2: Failed to execute "dmsetup message ${env.pool} ` +
            `0 delete 2": exit code 1: device-mapper: message ioctl failed: Operation not ` +
            `permitted; the next start tries again`,
            2,
          ]],
        );
        assert.equal((await d1.vols.getVolumeInfo("vol1")).DevID, "1");
        assert.deepEqual(await pendingIDs(env), [2]);
        assert.deepEqual(await thinIDs(env), [1, 2]);

        // A record that cannot be read may reference any id: nothing is deleted.
        const bad = join(env.root, "devicemapper_volume_bad.json");
        await writeFile(bad, "{not json");
        const log2 = recordingLogger();
        await env.init({ log: log2 });
        assert.ok(
          log2.lines.some((l) =>
            l.level === "warn" &&
            l.msg.startsWith(
              'Not deleting the thin ids 2 left by interrupted operations: Cannot read volume "bad"',
            )
          ),
          JSON.stringify(log2.lines.map((l) => l.msg)),
        );
        assert.deepEqual(await pendingIDs(env), [2]);
        assert.deepEqual(await thinIDs(env), [1, 2]);

        // Once the record is readable (here: gone), the next start deletes the id.
        await rm(bad);
        await env.init();
        assert.deepEqual(await pendingIDs(env), []);
        assert.deepEqual(await thinIDs(env), [1]);
      });
    },
  );
});
