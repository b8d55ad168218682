/**
 * The daemon in process: the VolumeService over a real vfs driver in a temp root, and the
 * request handler `convoy daemon` serves (createHandler: Docker plugin paths and REST routes),
 * called with request objects instead of through a socket. The subprocess tests in tests/ drive
 * the same code end to end.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type {
  ConvoyDriver,
  SnapshotOperations,
  StringMap,
  VolumeOperations,
} from "../api/driver.ts";
import { NotSupportedError } from "../api/errors.ts";
import { createBackupStoreApi } from "../backup/store_api.ts";
import { registeredInit } from "../plugins/testing.ts";
import { createExec } from "../runtime/exec.ts";
import type { HttpRequest, HttpResponse } from "../runtime/listen.ts";
import { builtinStoreRegistry } from "../store/registry.ts";
import { silentLogger } from "../util/log.ts";
import vfsSetup from "../../plugins/vfs/mod.ts";
import { DaemonConfig } from "./config.ts";
import { createHandler } from "./daemon.ts";
import { VolumeService } from "./service.ts";
import { State } from "./state.ts";

const exec = createExec({ timeoutMs: 60_000 });

/** A service over one vfs driver in `root`, as startDaemon builds it, and its handler. */
async function startService(
  root: string,
  config: Partial<DaemonConfig> = {},
): Promise<{ svc: VolumeService; handle: (req: HttpRequest) => Promise<HttpResponse> }> {
  const stores = builtinStoreRegistry({ log: silentLogger });
  const backup = createBackupStoreApi({ log: silentLogger, stores });
  const init = registeredInit(vfsSetup, "vfs", { exec, backup });
  const driver = await init(join(root, "vfs"), {});
  const state = new State(root);
  await state.load();
  const svc = new VolumeService({
    drivers: new Map([["vfs", driver]]),
    state,
    config: DaemonConfig.parse({
      Root: root,
      DriverList: ["vfs"],
      DefaultDriver: "vfs",
      ...config,
    }),
    backup,
    stores,
    log: silentLogger,
  });
  await svc.reconcile();
  return { svc, handle: createHandler(svc, silentLogger) };
}

/** A request as the unix-socket server hands it over; `body` is sent as JSON. */
function request(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): HttpRequest {
  const [p, q] = path.split("?");
  return {
    method,
    path: p,
    query: new URLSearchParams(q ?? ""),
    headers,
    body: new TextEncoder().encode(
      body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body),
    ),
  };
}

function textOf(res: HttpResponse): string {
  return typeof res.body === "string" ? res.body : new TextDecoder().decode(res.body);
}

function jsonOf(res: HttpResponse): Record<string, unknown> {
  return JSON.parse(textOf(res));
}

describe("the daemon in process (vfs driver, temp root)", () => {
  let dir: string;
  let root: string;
  let handle: (req: HttpRequest) => Promise<HttpResponse>;
  let svc: VolumeService;
  /** Sends a REST request and asserts its status. */
  const rest = async (method: string, path: string, body: unknown, status = 200) => {
    const res = await handle(request(method, path, body));
    assert.equal(res.status, status, `${method} ${path}: ${textOf(res)}`);
    return res;
  };
  /** Sends a Docker plugin request; Docker's protocol answers 200 with `Err`. */
  const docker = async (path: string, body: unknown) => {
    const res = await handle(request("POST", path, body));
    assert.equal(res.contentType, "application/vnd.docker.plugins.v1+json");
    return { status: res.status, body: jsonOf(res) };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "convoy-inproc-"));
    root = join(dir, "root");
    ({ svc, handle } = await startService(root));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("REST: create, inspect, list, mount, umount and delete a volume", async () => {
    assert.equal(textOf(await rest("POST", "/v1/volumes/create", { Name: "r1" })), "r1");
    const inspected = jsonOf(await rest("GET", "/v1/volumes", { VolumeName: "r1" }));
    assert.equal(inspected.Name, "r1");
    assert.equal(inspected.Driver, "vfs");
    assert.equal(inspected.MountPoint, "");
    const listed = jsonOf(await rest("GET", "/v1/volumes/list", undefined));
    assert.deepEqual(Object.keys(listed), ["r1"]);

    const mp = textOf(await rest("POST", "/v1/volumes/mount", { VolumeName: "r1" }));
    assert.ok((await stat(mp)).isDirectory());
    assert.equal(jsonOf(await rest("GET", "/v1/volumes", { VolumeName: "r1" })).MountPoint, mp);
    const busy = jsonOf(await rest("DELETE", "/v1/volumes", { VolumeName: "r1" }, 409));
    assert.match(busy.Error as string, /r1/);
    await rest("POST", "/v1/volumes/umount", { VolumeName: "r1" });
    assert.equal(textOf(await rest("DELETE", "/v1/volumes", { VolumeName: "r1" })), "");
    assert.deepEqual(jsonOf(await rest("GET", "/v1/volumes/list", undefined)), {});
  });

  it("REST: errors are JSON {Error} with the status of their code", async () => {
    const missing = jsonOf(await rest("GET", "/v1/volumes", { VolumeName: "nope" }, 404));
    assert.match(missing.Error as string, /"nope"/);
    await rest("POST", "/v1/volumes/create", { Name: "dup" });
    const dup = jsonOf(await rest("POST", "/v1/volumes/create", { Name: "dup" }, 409));
    assert.match(dup.Error as string, /Cannot create volume "dup": volume already exists/);
    const bad = jsonOf(await rest("POST", "/v1/volumes/create", "{not json", 400));
    assert.match(bad.Error as string, /Cannot parse request body/);
    const route = jsonOf(await rest("GET", "/v1/nowhere", undefined, 404));
    assert.equal(route.Error, "Handler not found: GET /v1/nowhere");
    const version = await handle(
      request("GET", "/v1/info", undefined, { "user-agent": "Convoy-Client/2" }),
    );
    assert.equal(version.status, 404);
    assert.match(jsonOf(version).Error as string, /Client version 2 does not match/);
    await rest("DELETE", "/v1/volumes", { VolumeName: "dup" });
  });

  it("REST: snapshot, backup, list, inspect, restore and delete the backup", async () => {
    const dest = join(dir, "backups");
    await mkdir(dest);
    await rest("POST", "/v1/volumes/create", { Name: "b1" });
    const mp = textOf(await rest("POST", "/v1/volumes/mount", { VolumeName: "b1" }));
    await writeFile(join(mp, "f"), "backed up");
    await rest("POST", "/v1/volumes/umount", { VolumeName: "b1" });
    const snap = textOf(
      await rest("POST", "/v1/snapshots/create", { Name: "b1s", VolumeName: "b1" }),
    );
    assert.equal(snap, "b1s");
    const url = textOf(
      await rest("POST", "/v1/backups/create", { SnapshotName: "b1s", URL: `vfs://${dest}` }),
    );
    assert.match(url, /^vfs:\/\//);
    const listed = jsonOf(await rest("GET", "/v1/backups/list", { URL: `vfs://${dest}` }));
    assert.deepEqual(Object.keys(listed), [url]);
    const inspected = jsonOf(await rest("GET", "/v1/backups/inspect", { URL: url }));
    assert.equal(inspected.VolumeName, "b1");
    assert.equal(inspected.SnapshotName, "b1s");

    await rest("POST", "/v1/volumes/create", { Name: "b2", BackupURL: url });
    const mp2 = textOf(await rest("POST", "/v1/volumes/mount", { VolumeName: "b2" }));
    assert.equal(await readFile(join(mp2, "f"), "utf8"), "backed up");
    await rest("POST", "/v1/volumes/umount", { VolumeName: "b2" });

    await rest("DELETE", "/v1/backups", { URL: url });
    await rest("GET", "/v1/backups/inspect", { URL: url }, 404);
    await rest("DELETE", "/v1/snapshots", { SnapshotName: "b1s" });
    await rest("GET", "/v1/snapshots", { SnapshotName: "b1s" }, 404);
    await rest("DELETE", "/v1/volumes", { VolumeName: "b1" });
    await rest("DELETE", "/v1/volumes", { VolumeName: "b2" });
  });

  it("Docker: activate, create, get, list, mount counted by ID, path, unmount, remove", async () => {
    assert.deepEqual((await docker("/Plugin.Activate", {})).body, {
      Implements: ["VolumeDriver"],
    });
    assert.deepEqual((await docker("/VolumeDriver.Capabilities", {})).body, {
      Capabilities: { Scope: "local" },
    });
    const unknown = await docker("/VolumeDriver.Get", { Name: "d1" });
    assert.match(unknown.body.Err as string, /"d1"/);

    assert.deepEqual((await docker("/VolumeDriver.Create", { Name: "d1", Opts: {} })).body, {
      Err: "",
    });
    const got = (await docker("/VolumeDriver.Get", { Name: "d1" })).body;
    assert.equal(got.Err, "");
    assert.equal((got.Volume as { Name: string }).Name, "d1");
    assert.deepEqual((await docker("/VolumeDriver.List", {})).body, {
      Volumes: [{ Name: "d1" }],
      Err: "",
    });

    const m1 = (await docker("/VolumeDriver.Mount", { Name: "d1", ID: "c1" })).body;
    assert.equal(m1.Err, "");
    const mp = m1.Mountpoint as string;
    assert.ok((await stat(mp)).isDirectory());
    const m2 = (await docker("/VolumeDriver.Mount", { Name: "d1", ID: "c2" })).body;
    assert.equal(m2.Mountpoint, mp);
    await docker("/VolumeDriver.Unmount", { Name: "d1", ID: "c1" });
    assert.equal((await docker("/VolumeDriver.Path", { Name: "d1" })).body.Mountpoint, mp);
    const removeBusy = (await docker("/VolumeDriver.Remove", { Name: "d1" })).body;
    assert.match(removeBusy.Err as string, /Cannot remove volume "d1"/);
    await docker("/VolumeDriver.Unmount", { Name: "d1", ID: "c2" });
    assert.deepEqual((await docker("/VolumeDriver.Path", { Name: "d1" })).body, { Err: "" });

    const path = (svc.state.volumes.get("d1") && (await svc.inspectVolume("d1")).DriverInfo.Path)!;
    assert.deepEqual((await docker("/VolumeDriver.Remove", { Name: "d1" })).body, { Err: "" });
    assert.ok(!svc.state.volumes.has("d1"));
    assert.ok((await stat(path)).isDirectory(), "Docker's Remove keeps a vfs volume's data");
    const bad = await docker("/VolumeDriver.Nothing", {});
    assert.equal(bad.status, 404);
    assert.match(bad.body.Err as string, /Unknown endpoint \/VolumeDriver.Nothing/);
  });

  it("a service started again on the same root keeps volumes, snapshots and mounts", async () => {
    await rest("POST", "/v1/volumes/create", { Name: "k1" });
    await rest("POST", "/v1/snapshots/create", { Name: "k1s", VolumeName: "k1" });
    const mp = textOf(await rest("POST", "/v1/volumes/mount", { VolumeName: "k1" }));
    const before = jsonOf(await rest("GET", "/v1/volumes", { VolumeName: "k1" }));

    ({ svc, handle } = await startService(root));
    assert.deepEqual(jsonOf(await rest("GET", "/v1/volumes", { VolumeName: "k1" })), before);
    assert.equal(before.MountPoint, mp);
    assert.equal(jsonOf(await rest("GET", "/v1/snapshots", { SnapshotName: "k1s" })).Name, "k1s");
    await rest("POST", "/v1/volumes/umount", { VolumeName: "k1" });
    await rest("DELETE", "/v1/snapshots", { SnapshotName: "k1s" });
    await rest("DELETE", "/v1/volumes", { VolumeName: "k1" });
  });

  it("Docker Mount of an unknown volume fails, or creates it with CreateOnDockerMount", async () => {
    const refused = (await docker("/VolumeDriver.Mount", { Name: "auto", ID: "c" })).body;
    assert.match(refused.Err as string, /Cannot mount volume "auto": volume "auto" does not exist/);
    assert.ok(!svc.state.volumes.has("auto"));

    const other = await startService(join(dir, "root2"), { CreateOnDockerMount: true });
    const res = await other.handle(
      request("POST", "/VolumeDriver.Mount", { Name: "auto", ID: "c" }),
    );
    const body = jsonOf(res);
    assert.equal(body.Err, "");
    assert.ok((await stat(body.Mountpoint as string)).isDirectory());
    assert.ok(other.svc.state.volumes.has("auto"));
    await other.handle(request("POST", "/VolumeDriver.Unmount", { Name: "auto", ID: "c" }));
  });
});

describe("the service and a driver that keeps snapshots with a kept device", () => {
  /**
   * An in-memory driver whose reference-only delete keeps a volume's snapshots with its data,
   * and whose create of the same name adopts both (as devicemapper does).
   */
  function keeperDriver(): ConvoyDriver {
    const snaps = new Map<string, Record<string, StringMap>>();
    const kept = new Map<string, Record<string, StringMap>>();
    const volumeOps: VolumeOperations = {
      name: () => "keeper",
      createVolume(id) {
        snaps.set(id, kept.get(id) ?? {});
        kept.delete(id);
      },
      deleteVolume(id, opts) {
        if (opts.ReferenceOnly === "true") kept.set(id, snaps.get(id) ?? {});
        snaps.delete(id);
      },
      mountVolume: () => "/nowhere",
      umountVolume() {},
      mountPoint: () => "",
      getVolumeInfo: (id) => ({ VolumeName: id, VolumeCreatedAt: "then" }),
      listVolume: () => Object.fromEntries([...snaps.keys()].map((v) => [v, { VolumeName: v }])),
    };
    const snapshotOps: SnapshotOperations = {
      name: () => "keeper",
      createSnapshot(id, volumeID) {
        snaps.get(volumeID)![id] = { SnapshotName: id, SnapshotCreatedAt: "now" };
      },
      deleteSnapshot(id, volumeID) {
        delete snaps.get(volumeID)![id];
      },
      getSnapshotInfo: (id, volumeID) => snaps.get(volumeID)![id],
      listSnapshot: (opts) => ({ ...snaps.get(opts.VolumeName) }),
    };
    return {
      name: () => "keeper",
      info: () => ({}),
      volumeOps: () => volumeOps,
      snapshotOps: () => snapshotOps,
      backupOps: () => {
        throw new NotSupportedError("keeper has no backups");
      },
    };
  }

  it("a create that adopts a kept device lists its snapshots again, at once", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-keeper-"));
    try {
      const state = new State(root);
      await state.load();
      const svc = new VolumeService({
        drivers: new Map([["keeper", keeperDriver()]]),
        state,
        config: DaemonConfig.parse({ Root: root, DriverList: ["keeper"], DefaultDriver: "keeper" }),
        backup: createBackupStoreApi({ log: silentLogger }),
        stores: builtinStoreRegistry({ log: silentLogger }),
        log: silentLogger,
      });
      await svc.reconcile();
      await svc.createVolume({ name: "v1" });
      await svc.createSnapshot("v1", { name: "s1" });
      await svc.deleteVolume("v1", { referenceOnly: true });
      await assert.rejects(svc.inspectSnapshot("s1"), { code: "NotFound" });
      await svc.createVolume({ name: "v1" });
      assert.equal((await svc.inspectSnapshot("s1")).VolumeName, "v1");
      assert.deepEqual(Object.keys((await svc.inspectVolume("v1")).Snapshots), ["s1"]);
      // A name another volume took meanwhile is not adopted twice.
      await svc.createSnapshot("v1", { name: "s2" });
      await svc.deleteVolume("v1", { referenceOnly: true });
      await svc.createVolume({ name: "v2" });
      await svc.createSnapshot("v2", { name: "s2" });
      await svc.createVolume({ name: "v1" });
      assert.equal((await svc.inspectSnapshot("s2")).VolumeName, "v2");
      assert.deepEqual(Object.keys((await svc.inspectVolume("v1")).Snapshots), ["s1"]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
