import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { InvalidArgumentError } from "../api/errors.ts";
import type { DriverMethods, Logger } from "../api/plugin.ts";
import { silentLogger } from "../util/log.ts";
import { optionSchemas } from "../util/option_schemas.ts";
import { parseSize } from "../util/sizes.ts";
import {
  convoyDriver,
  createRecordStore,
  loadDriverConfig,
  requestedMountPoint,
} from "./driver_util.ts";
import { recordingLogger, withTempDir } from "./testing.ts";

/** A toy driver config: `toy.size` saved as Size; a saved Size of 0 is upgraded to 1G. */
function toySpec(file: string, options: Record<string, string>, log: Logger) {
  const { size } = optionSchemas;
  return {
    driver: "toy",
    file,
    options,
    schema: z.looseObject({ "toy.size": size.prefault("10M") }),
    savedSchema: z.looseObject({ Size: z.number().int().nonnegative() }),
    create: (o: { "toy.size": number }) => ({ Size: o["toy.size"] }),
    load: (saved: { Size: number }) =>
      saved.Size > 0
        ? { config: { Size: saved.Size }, save: false }
        : { config: { Size: 1024 ** 3 }, save: true },
    current: (cfg: { Size: number }) => ({
      "toy.size": {
        uses: `${cfg.Size} bytes`,
        same: (v: string) => parseSize(v) === cfg.Size,
      },
    }),
    logFields: (cfg: { Size: number }) => ({ size: cfg.Size }),
    log,
  };
}

describe("plugin api: loadDriverConfig", () => {
  it("saves the first start's options, then keeps the file and warns about conflicts", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "toy.cfg");
      const log = recordingLogger();
      assert.deepEqual(await loadDriverConfig(toySpec(file, { "toy.size": "2M" }, log)), {
        Size: 2 * 1024 ** 2,
      });
      assert.equal(await readFile(file, "utf8"), `{"Size":2097152}\n`);
      assert.deepEqual(log.lines, [["info", "Saved toy configuration", {
        file,
        size: 2097152,
      }]]);

      const later = recordingLogger();
      const opts = { "toy.size": "3M", "other.key": "x" };
      assert.deepEqual(await loadDriverConfig(toySpec(file, opts, later)), { Size: 2097152 });
      assert.deepEqual(later.lines, [[
        "warn",
        `Ignoring --driver-opts toy.size="3M": the saved configuration in "${file}" uses 2097152 bytes`,
        { option: "toy.size", file },
      ]]);
      const quiet = recordingLogger();
      await loadDriverConfig(toySpec(file, { "toy.size": "2m" }, quiet));
      assert.deepEqual(quiet.lines, []);
    });
  });

  it("writes the file back only when load asks to", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "toy.cfg");
      await writeFile(file, `{"Size":0,"Extra":1}`);
      assert.deepEqual(await loadDriverConfig(toySpec(file, {}, silentLogger)), {
        Size: 1024 ** 3,
      });
      assert.equal(await readFile(file, "utf8"), `{"Size":1073741824}\n`);
      await writeFile(file, `{"Size":5,"Extra":1}`);
      await loadDriverConfig(toySpec(file, {}, silentLogger));
      assert.equal(await readFile(file, "utf8"), `{"Size":5,"Extra":1}`);
    });
  });

  it("rejects bad options and a bad saved file with InvalidArgumentError", async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, "toy.cfg");
      await assert.rejects(
        loadDriverConfig(toySpec(file, { "toy.size": "lots" }, silentLogger)),
        (err) =>
          err instanceof InvalidArgumentError &&
          /^Invalid toy driver options: "toy\.size": Invalid size "lots"/.test(err.message),
      );
      await writeFile(file, `{"Size":"big"}`);
      await assert.rejects(
        loadDriverConfig(toySpec(file, {}, silentLogger)),
        (err) =>
          err instanceof InvalidArgumentError &&
          err.message.startsWith(`Cannot load toy configuration "${file}": "Size": `),
      );
    });
  });
});

describe("plugin api: convoyDriver", () => {
  it("calls the methods of one object, with it as this", async () => {
    const calls: unknown[][] = [];
    class Impl implements DriverMethods {
      #tag = "impl";
      #log(...args: unknown[]) {
        calls.push([this.#tag, ...args]);
      }
      createVolume(id: string, opts: Record<string, string>) {
        this.#log("createVolume", id, opts);
      }
      deleteVolume(id: string, opts: Record<string, string>) {
        this.#log("deleteVolume", id, opts);
      }
      mountVolume(id: string, opts: Record<string, string>) {
        this.#log("mountVolume", id, opts);
        return "/mnt";
      }
      umountVolume(id: string) {
        this.#log("umountVolume", id);
      }
      mountPoint(id: string) {
        this.#log("mountPoint", id);
        return "/mp";
      }
      getVolumeInfo(id: string) {
        this.#log("getVolumeInfo", id);
        return { Name: id };
      }
      listVolume(opts: Record<string, string>) {
        this.#log("listVolume", opts);
        return {};
      }
      createSnapshot(id: string, volumeID: string) {
        this.#log("createSnapshot", id, volumeID);
      }
      deleteSnapshot(id: string, volumeID: string) {
        this.#log("deleteSnapshot", id, volumeID);
      }
      getSnapshotInfo(id: string, volumeID: string) {
        this.#log("getSnapshotInfo", id, volumeID);
        return {};
      }
      listSnapshot(opts: Record<string, string>) {
        this.#log("listSnapshot", opts);
        return {};
      }
      createBackup(snap: string, vol: string, dest: string, opts: Record<string, string>) {
        this.#log("createBackup", snap, vol, dest, opts);
        return "url";
      }
      deleteBackup(url: string) {
        this.#log("deleteBackup", url);
      }
      getBackupInfo(url: string) {
        this.#log("getBackupInfo", url);
        return {};
      }
      listBackup(dest: string, opts: Record<string, string>) {
        this.#log("listBackup", dest, opts);
        return {};
      }
    }
    const d = convoyDriver("toy", new Impl(), () => ({ Root: "/r" }));
    assert.equal(d.name(), "toy");
    assert.deepEqual(await d.info(), { Root: "/r" });
    const vols = await d.volumeOps();
    const snaps = await d.snapshotOps();
    const backups = await d.backupOps();
    assert.equal(await d.volumeOps(), vols);
    assert.deepEqual([vols.name(), snaps.name(), backups.name()], ["toy", "toy", "toy"]);
    await vols.createVolume("v", { Size: "1" });
    assert.equal(await vols.mountVolume("v", {}), "/mnt");
    await snaps.createSnapshot("s", "v");
    assert.equal(await backups.createBackup("s", "v", "vfs:///b", {}), "url");
    await backups.deleteBackup("url");
    assert.deepEqual(calls, [
      ["impl", "createVolume", "v", { Size: "1" }],
      ["impl", "mountVolume", "v", {}],
      ["impl", "createSnapshot", "s", "v"],
      ["impl", "createBackup", "s", "v", "vfs:///b", {}],
      ["impl", "deleteBackup", "url"],
    ]);
  });
});

describe("plugin api: createRecordStore", () => {
  const schema = z.object({ Name: z.string(), Size: z.number() });

  it("createRecordStore() writes, reads, lists, selects and removes records; must() names a missing one", async () => {
    await withTempDir(async (dir) => {
      const log = recordingLogger();
      const records = createRecordStore({
        dir,
        prefix: "toy_volume_",
        schema,
        nameField: "Name",
        kind: "volume",
        log,
      });
      assert.equal(records.file("db1"), join(dir, "toy_volume_db1.json"));
      assert.equal(await records.read("db1"), undefined);
      await records.write("db1", { Name: "db1", Size: 1 });
      await records.write("db2", { Name: "db2", Size: 2 });
      await writeFile(join(dir, ".toy_volume_db3.json.tmp-1234"), "{"); // an interrupted write
      await writeFile(join(dir, "other.json"), "{}"); // not a record of this store
      assert.deepEqual(await records.read("db2"), { Name: "db2", Size: 2 });
      assert.deepEqual((await records.list()).map((r) => r.name), ["db1", "db2"]);
      assert.deepEqual((await records.select("", "list")).map((r) => r.name), ["db1", "db2"]);
      assert.deepEqual(await records.select("db2", "list the snapshots of volume"), [
        { name: "db2", record: { Name: "db2", Size: 2 } },
      ]);
      await assert.rejects(records.select("db9", "list the snapshots of volume"), {
        name: "NotFoundError",
        message: 'Cannot list the snapshots of volume "db9": volume does not exist',
      });
      await assert.rejects(records.select("../db2", "list"), { name: "InvalidArgumentError" });
      await records.remove("db1");
      await records.remove("db1"); // already gone: fine
      await assert.rejects(records.must("db1", "mount volume"), {
        name: "NotFoundError",
        message: 'Cannot mount volume "db1": volume does not exist',
      });
      assert.deepEqual(log.lines, []);
    });
  });

  it("createRecordStore() rejects a bad or misnamed record naming its file; list() skips it with a warning", async () => {
    await withTempDir(async (dir) => {
      const log = recordingLogger();
      const records = createRecordStore({
        dir,
        prefix: "",
        schema,
        nameField: "Name",
        kind: "volume",
        log,
      });
      await writeFile(join(dir, "bad.json"), "{not json");
      await writeFile(join(dir, "moved.json"), JSON.stringify({ Name: "other", Size: 1 }));
      await writeFile(join(dir, "typo.json"), JSON.stringify({ Name: "typo", Size: "1" }));
      await records.write("good", { Name: "good", Size: 3 });
      await assert.rejects(records.read("bad"), {
        name: "BackendError",
        message: new RegExp(
          `^Cannot read volume "bad": "${join(dir, "bad.json")}" is not a valid volume record: `,
        ),
      });
      await assert.rejects(records.read("moved"), {
        message: `Cannot read volume "moved": "${
          join(dir, "moved.json")
        }" is not a valid volume record: "Name": expected "moved"`,
      });
      await assert.rejects(records.read("typo"), /"Size": /);
      assert.deepEqual((await records.list()).map((r) => r.name), ["good"]);
      assert.deepEqual(log.lines.map(([level, m]) => [level, m.split(":")[0]]), [
        ["warn", `Skipping "${join(dir, "bad.json")}"`],
        ["warn", `Skipping "${join(dir, "moved.json")}"`],
        ["warn", `Skipping "${join(dir, "typo.json")}"`],
      ]);
      await assert.rejects(
        createRecordStore({ dir: join(dir, "nope"), prefix: "", schema, kind: "volume", log })
          .list(),
        { name: "BackendError", message: /^Cannot list volumes: cannot read ".*nope": / },
      );
    });
  });
});

describe("plugin api: requestedMountPoint", () => {
  it('requestedMountPoint() resolves an absolute MountPoint, is "" without one, and rejects a relative one', () => {
    assert.equal(requestedMountPoint({ MountPoint: " /mnt/a/../b/ " }, "db1"), "/mnt/b");
    assert.equal(requestedMountPoint({}, "db1"), "");
    assert.equal(requestedMountPoint(undefined, "db1"), "");
    assert.equal(requestedMountPoint({ MountPoint: "  " }, "db1"), "");
    assert.throws(() => requestedMountPoint({ MountPoint: "mnt/b" }, "db1"), {
      name: "InvalidArgumentError",
      message: 'Cannot mount volume "db1" at "mnt/b": the mount point must be an absolute path',
    });
  });
});
