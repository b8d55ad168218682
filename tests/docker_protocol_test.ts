/**
 * Docker's volume plugin protocol against the real daemon (no Docker engine needed): request and
 * response shapes, errors, mount reference counting by mount ID, persistence across a restart,
 * stale IDs after Docker re-activates the plugin, and the Docker-related daemon flags.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { rawRequest, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";

type Json = Record<string, unknown>;

/** POSTs a Docker plugin call and resolves to the parsed answer; asserts HTTP 200. */
async function call(socket: string, endpoint: string, body: unknown = {}): Promise<Json> {
  const r = await rawRequest(socket, "POST", endpoint, JSON.stringify(body));
  assert.equal(r.status, 200, `${endpoint}: ${r.body}`);
  return JSON.parse(r.body);
}

/** Like call(), but asserts success (`Err` present and empty) and returns the answer. */
async function okCall(socket: string, endpoint: string, body: unknown = {}): Promise<Json> {
  const r = await call(socket, endpoint, body);
  assert.equal(r.Err, "", `${endpoint} ${JSON.stringify(body)}: ${r.Err}`);
  return r;
}

async function mountIDs(root: string, volume: string): Promise<string[]> {
  const state = JSON.parse(await readFile(join(root, "state.json"), "utf8"));
  return state.Volumes[volume]?.MountIDs;
}

async function exists(path: string): Promise<boolean> {
  return await stat(path).then(() => true, () => false);
}

const ID_A = "a".repeat(64);
const ID_B = "b".repeat(64);

describe("Docker volume plugin protocol", () => {
  let d: TestDaemon;
  let dir: string;
  let root: string;
  let cleanup: () => Promise<void>;
  let socket: string;
  const volDir = (name: string) => join(root, "vfs", "volumes", name);

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-docker-proto-"));
    root = join(dir, "root");
    d = await startDaemon({ root });
    socket = d.socket;
  });
  after(async () => {
    await d.stop();
    await cleanup();
  });

  it("answers Plugin.Activate and VolumeDriver.Capabilities", async () => {
    assert.deepEqual(await call(socket, "/Plugin.Activate"), { Implements: ["VolumeDriver"] });
    assert.deepEqual(await call(socket, "/VolumeDriver.Capabilities"), {
      Capabilities: { Scope: "local" },
    });
  });

  it("answers unknown endpoints and bad bodies with a JSON Err, never a hang", async () => {
    for (const path of ["/VolumeDriver.Rename", "/Plugin.Deactivate", "/NetworkDriver.Join"]) {
      const r = await rawRequest(socket, "POST", path, "{}");
      assert.equal(r.status, 404, path);
      assert.match(
        JSON.parse(r.body).Err,
        new RegExp(`Unknown endpoint ${path.replace(".", "\\.")}`),
      );
    }
    const bad = await call(socket, "/VolumeDriver.Create", undefined);
    assert.match(String(bad.Err), /name is empty/);
    const r = await rawRequest(socket, "POST", "/VolumeDriver.Create", "{not json");
    assert.equal(r.status, 200);
    assert.match(JSON.parse(r.body).Err, /Cannot parse request body/);
    const opts = await call(socket, "/VolumeDriver.Create", { Name: "v1", Opts: { size: 5 } });
    assert.match(String(opts.Err), /Invalid request body: Opts\.size/);
  });

  it("creates with options, is idempotent, and rejects unknown options clearly", async () => {
    assert.deepEqual(
      await call(socket, "/VolumeDriver.Create", {
        Name: "proto1",
        Opts: { size: "10M", driver: "vfs" },
      }),
      { Err: "" },
    );
    assert.deepEqual(await call(socket, "/VolumeDriver.Create", { Name: "proto1", Opts: null }), {
      Err: "",
    });
    // An existing volume is success whatever the options, as in Convoy, even unknown or bad ones.
    for (const Opts of [{ colour: "red" }, { size: "ten" }, { driver: "nope" }]) {
      assert.deepEqual(await call(socket, "/VolumeDriver.Create", { Name: "proto1", Opts }), {
        Err: "",
      }, JSON.stringify(Opts));
    }
    const unknown = await call(socket, "/VolumeDriver.Create", {
      Name: "proto2",
      Opts: { colour: "red", size: "1G", Flavour: "x" },
    });
    assert.equal(
      unknown.Err,
      'Cannot create volume "proto2": unknown options "colour", "Flavour" (valid options: ' +
        "size, driver, backup, snapshot, endpoint, id, type, iops, throughput, vm)",
    );
    assert.match(
      String(
        (await call(socket, "/VolumeDriver.Create", { Name: "proto2", Opts: { size: "ten" } }))
          .Err,
      ),
      /Cannot create volume "proto2": Invalid size "ten"/,
    );
    assert.match(
      String(
        (await call(socket, "/VolumeDriver.Create", { Name: "proto2", Opts: { driver: "nope" } }))
          .Err,
      ),
      /driver "nope" is not enabled/,
    );
    assert.match(
      String((await call(socket, "/VolumeDriver.Create", { Name: "../x" })).Err),
      /Invalid volume name/,
    );
    assert.match(
      String(
        (await call(socket, "/VolumeDriver.Create", {
          Name: "proto2",
          Opts: { snapshot: "s1", backup: "vfs:///tmp/x?backup=b&volume=v" },
        })).Err,
      ),
      /"backup" and "snapshot" exclude each other/,
    );
    const get = await call(socket, "/VolumeDriver.Get", { Name: "proto2" });
    assert.match(String(get.Err), /volume "proto2" does not exist/);
    assert.equal(get.Volume, undefined);
  });

  it("reports Get, List and Path: a Mountpoint only while mounted, and a Status map", async () => {
    await okCall(socket, "/VolumeDriver.Create", { Name: "proto3" });
    const get = await okCall(socket, "/VolumeDriver.Get", { Name: "proto3" });
    const vol = get.Volume as Json;
    assert.equal(vol.Name, "proto3");
    assert.equal(vol.Mountpoint, undefined);
    assert.match(String(vol.CreatedAt), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/);
    assert.ok(Math.abs(Date.parse(String(vol.CreatedAt)) - Date.now()) < 60_000);
    assert.deepEqual(vol.Status, { driver: "vfs", size: "0", snapshots: [], mounts: 0 });
    assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "proto3" }), { Err: "" });

    const m = await okCall(socket, "/VolumeDriver.Mount", { Name: "proto3", ID: ID_A });
    assert.equal(m.Mountpoint, volDir("proto3"));
    assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "proto3" }), {
      Mountpoint: volDir("proto3"),
      Err: "",
    });
    const rs = await rawRequest(
      socket,
      "POST",
      "/v1/snapshots/create",
      JSON.stringify({ VolumeName: "proto3", Name: "proto3-snap" }),
    );
    assert.equal(rs.status, 200, rs.body);
    const mounted = (await okCall(socket, "/VolumeDriver.Get", { Name: "proto3" })).Volume as Json;
    assert.equal(mounted.Mountpoint, volDir("proto3"));
    assert.deepEqual(mounted.Status, {
      driver: "vfs",
      size: "0",
      snapshots: ["proto3-snap"],
      mounts: 1,
    });

    const list = await okCall(socket, "/VolumeDriver.List");
    const mine = (list.Volumes as Json[]).filter((v) => String(v.Name).startsWith("proto3"));
    assert.deepEqual(mine, [{ Name: "proto3", Mountpoint: volDir("proto3") }]);
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "proto3", ID: ID_A });
    const after = await okCall(socket, "/VolumeDriver.List");
    assert.deepEqual(
      (after.Volumes as Json[]).find((v) => v.Name === "proto3"),
      { Name: "proto3" },
    );
    assert.match(
      String((await call(socket, "/VolumeDriver.Path", { Name: "nosuch" })).Err),
      /volume "nosuch" does not exist/,
    );
  });

  it("counts mounts by ID: mounted on the first Mount, unmounted on the last Unmount", async () => {
    await okCall(socket, "/VolumeDriver.Create", { Name: "refs" });
    const mp = (await okCall(socket, "/VolumeDriver.Mount", { Name: "refs", ID: ID_A })).Mountpoint;
    await writeFile(join(String(mp), "f"), "x");
    assert.equal(
      (await okCall(socket, "/VolumeDriver.Mount", { Name: "refs", ID: ID_B })).Mountpoint,
      mp,
    );
    assert.deepEqual(await mountIDs(root, "refs"), [ID_A, ID_B]);
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID: ID_A });
    assert.equal((await okCall(socket, "/VolumeDriver.Path", { Name: "refs" })).Mountpoint, mp);
    assert.deepEqual(await mountIDs(root, "refs"), [ID_B]);
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID: ID_B });
    assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "refs" }), { Err: "" });
    assert.deepEqual(await mountIDs(root, "refs"), []);

    // docker cp on a running container mounts again with the container's ID, then unmounts once.
    await okCall(socket, "/VolumeDriver.Mount", { Name: "refs", ID: ID_A });
    assert.equal(
      (await okCall(socket, "/VolumeDriver.Mount", { Name: "refs", ID: ID_A })).Mountpoint,
      mp,
      "a repeated Mount with the same ID returns the same mount point",
    );
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID: ID_A });
    assert.equal((await okCall(socket, "/VolumeDriver.Path", { Name: "refs" })).Mountpoint, mp);
    // An unknown ID is success and changes nothing.
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID: ID_B });
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "nosuchvol", ID: ID_B });
    assert.deepEqual(await mountIDs(root, "refs"), [ID_A]);
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID: ID_A });
    assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "refs" }), { Err: "" });
    assert.equal(await readFile(join(String(mp), "f"), "utf8"), "x", "unmounting keeps data");

    // Parallel Mounts of one volume: every one is counted.
    const ids = Array.from({ length: 20 }, (_, i) => `${i}`.padStart(64, "c"));
    await Promise.all(
      ids.map((ID) => okCall(socket, "/VolumeDriver.Mount", { Name: "refs", ID })),
    );
    assert.equal((await mountIDs(root, "refs")).length, 20);
    await Promise.all(
      ids.map((ID) => okCall(socket, "/VolumeDriver.Unmount", { Name: "refs", ID })),
    );
    assert.deepEqual(await mountIDs(root, "refs"), []);
  });

  it("Remove forgets a vfs volume but keeps its data, refuses while in use, and succeeds for unknown volumes", async () => {
    await okCall(socket, "/VolumeDriver.Create", { Name: "rmme" });
    await okCall(socket, "/VolumeDriver.Mount", { Name: "rmme", ID: ID_A });
    await okCall(socket, "/VolumeDriver.Mount", { Name: "rmme", ID: ID_B });
    await writeFile(join(volDir("rmme"), "data"), "x");
    assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "rmme" }), {
      Err: 'Cannot remove volume "rmme": volume is in use by 2 containers',
    });
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "rmme", ID: ID_A });
    assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "rmme" }), {
      Err: 'Cannot remove volume "rmme": volume is in use by 1 container',
    });
    assert.ok(await exists(join(volDir("rmme"), "data")));
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "rmme", ID: ID_B });
    assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "rmme" }), { Err: "" });
    // As in Convoy (a reference-only delete): the volume is gone, its folder and data stay.
    assert.match(
      String((await call(socket, "/VolumeDriver.Get", { Name: "rmme" })).Err),
      /does not exist/,
    );
    assert.equal(await readFile(join(volDir("rmme"), "data"), "utf8"), "x");
    assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "rmme" }), { Err: "" });
    // Creating the name again brings the data back.
    await okCall(socket, "/VolumeDriver.Create", { Name: "rmme" });
    assert.equal(await readFile(join(volDir("rmme"), "data"), "utf8"), "x");
  });

  it("without --create-on-docker-mount, a Mount of an unknown volume is an error", async () => {
    const r = await call(socket, "/VolumeDriver.Mount", { Name: "ghostvol", ID: ID_A });
    assert.equal(r.Err, 'Cannot mount volume "ghostvol": volume "ghostvol" does not exist');
  });

  it("creates a volume from a backup (-o backup) and from a snapshot (-o snapshot)", async () => {
    await okCall(socket, "/VolumeDriver.Create", { Name: "origin" });
    const mp = String(
      (await okCall(socket, "/VolumeDriver.Mount", { Name: "origin", ID: ID_A })).Mountpoint,
    );
    await writeFile(join(mp, "hello"), "before");
    const snap = await rawRequest(
      socket,
      "POST",
      "/v1/snapshots/create",
      JSON.stringify({ VolumeName: "origin", Name: "origin-s1" }),
    );
    assert.equal(snap.status, 200, snap.body);
    await writeFile(join(mp, "hello"), "after");

    await okCall(socket, "/VolumeDriver.Create", {
      Name: "fromsnap",
      Opts: { snapshot: "origin-s1" },
    });
    assert.equal(await readFile(join(volDir("fromsnap"), "hello"), "utf8"), "before");
    assert.deepEqual(await readdir(join(root, "docker-snapshot-copies")), [], "no copy is left");

    const store = join(dir, "store");
    await mkdir(store);
    const b = await rawRequest(
      socket,
      "POST",
      "/v1/backups/create",
      JSON.stringify({ SnapshotName: "origin-s1", URL: `vfs://${store}` }),
    );
    assert.equal(b.status, 200, b.body);
    await okCall(socket, "/VolumeDriver.Create", { Name: "frombackup", Opts: { backup: b.body } });
    assert.equal(await readFile(join(volDir("frombackup"), "hello"), "utf8"), "before");

    assert.match(
      String(
        (await call(socket, "/VolumeDriver.Create", {
          Name: "fromnothing",
          Opts: { snapshot: "nosuchsnap" },
        })).Err,
      ),
      /Cannot create volume "fromnothing" from snapshot "nosuchsnap": snapshot "nosuchsnap" does not exist/,
    );
    assert.match(
      String(
        (await call(socket, "/VolumeDriver.Create", {
          Name: "fromnothing",
          Opts: { backup: `vfs://${store}?backup=backup-00000000&volume=origin` },
        })).Err,
      ),
      /backup/i,
    );
    assert.match(
      String((await call(socket, "/VolumeDriver.Get", { Name: "fromnothing" })).Err),
      /does not exist/,
    );
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "origin", ID: ID_A });
  });

  it("answers every Docker call while a backup of the same volume runs", async () => {
    await okCall(socket, "/VolumeDriver.Create", { Name: "busy" });
    const mp = String(
      (await okCall(socket, "/VolumeDriver.Mount", { Name: "busy", ID: ID_A })).Mountpoint,
    );
    // Incompressible data so that tar+gzip takes a few seconds.
    const chunk = new Uint8Array(8 << 20);
    for (let i = 0; i < 10; i++) {
      for (let o = 0; o < chunk.length; o += 65536) {
        crypto.getRandomValues(chunk.subarray(o, o + 65536));
      }
      await writeFile(join(mp, `blob${i}`), chunk);
    }
    const s = await rawRequest(
      socket,
      "POST",
      "/v1/snapshots/create",
      JSON.stringify({ VolumeName: "busy", Name: "busy-s1" }),
    );
    assert.equal(s.status, 200, s.body);
    const store = join(dir, "busystore");
    await mkdir(store);
    let backupDone = false;
    const backup = rawRequest(
      socket,
      "POST",
      "/v1/backups/create",
      JSON.stringify({ SnapshotName: "busy-s1", URL: `vfs://${store}` }),
    ).finally(() => (backupDone = true));
    await new Promise((r) => setTimeout(r, 300));
    const calls: Array<[string, unknown]> = [
      ["/VolumeDriver.Get", { Name: "busy" }],
      ["/VolumeDriver.List", {}],
      ["/VolumeDriver.Path", { Name: "busy" }],
      ["/VolumeDriver.Mount", { Name: "busy", ID: ID_B }],
      ["/VolumeDriver.Unmount", { Name: "busy", ID: ID_B }],
      ["/VolumeDriver.Create", { Name: "busy2" }],
      ["/VolumeDriver.Remove", { Name: "busy2" }],
    ];
    // No timing assertion: every call must complete while the backup is still running.
    for (const [path, body] of calls) await okCall(socket, path, body);
    assert.equal(backupDone, false, "every Docker call was answered while the backup ran");
    const r = await backup;
    assert.equal(r.status, 200, r.body);
    await okCall(socket, "/VolumeDriver.Unmount", { Name: "busy", ID: ID_A });
  });
});

describe("Docker mount IDs across daemon restarts and Docker re-activation", () => {
  it("keeps the table across a daemon restart; stale IDs clear when Docker asks again", async () => {
    const { dir, cleanup } = await tempDir("convoy-docker-restart-");
    const root = join(dir, "root");
    let d = await startDaemon({ root });
    const socket = d.socket;
    try {
      await okCall(socket, "/VolumeDriver.Create", { Name: "keep" });
      const mp = (await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_A }))
        .Mountpoint;
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_B });
      assert.equal(await d.stop(), 0, d.output());

      d = await startDaemon({ root, socket });
      assert.deepEqual(await mountIDs(root, "keep"), [ID_A, ID_B]);
      assert.equal((await okCall(socket, "/VolumeDriver.Path", { Name: "keep" })).Mountpoint, mp);
      await okCall(socket, "/VolumeDriver.Unmount", { Name: "keep", ID: ID_A });
      assert.equal((await okCall(socket, "/VolumeDriver.Path", { Name: "keep" })).Mountpoint, mp);

      await d.kill9();
      d = await startDaemon({ root, socket });
      assert.deepEqual(await mountIDs(root, "keep"), [ID_B]);
      await okCall(socket, "/VolumeDriver.Unmount", { Name: "keep", ID: ID_B });
      assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "keep" }), { Err: "" });

      // Docker restarts (it activates the plugin again) without ever sending Unmount.
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_A });
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_A });
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_B });
      await call(socket, "/Plugin.Activate");
      assert.deepEqual(await mountIDs(root, "keep"), [`stale:${ID_A}`, `stale:${ID_B}`]);
      const st = ((await okCall(socket, "/VolumeDriver.Get", { Name: "keep" })).Volume as Json)
        .Status as Json;
      assert.equal(st.mounts, 0, "stale IDs are not containers in use");
      assert.equal((await okCall(socket, "/VolumeDriver.Path", { Name: "keep" })).Mountpoint, mp);
      // The restarted container asks again with its ID: one live reference replaces the stale ones.
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep", ID: ID_A });
      assert.deepEqual(await mountIDs(root, "keep"), [`stale:${ID_B}`, ID_A]);
      await okCall(socket, "/VolumeDriver.Unmount", { Name: "keep", ID: ID_A });
      assert.deepEqual(await mountIDs(root, "keep"), [`stale:${ID_B}`]);
      assert.equal(
        (await okCall(socket, "/VolumeDriver.Path", { Name: "keep" })).Mountpoint,
        mp,
        "a stale ID keeps the volume mounted (with live-restore its container may run)",
      );
      // A stale ID survives a daemon restart too; Docker's Remove proves it dead.
      assert.equal(await d.stop(), 0, d.output());
      d = await startDaemon({ root, socket });
      assert.deepEqual(await mountIDs(root, "keep"), [`stale:${ID_B}`]);
      assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "keep" }), { Err: "" });
      assert.match(
        String((await call(socket, "/VolumeDriver.Get", { Name: "keep" })).Err),
        /does not exist/,
      );

      // An Unmount of a stale ID (live-restore: its container stopped) releases it.
      await okCall(socket, "/VolumeDriver.Create", { Name: "keep2" });
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep2", ID: ID_A });
      await call(socket, "/Plugin.Activate");
      await okCall(socket, "/VolumeDriver.Unmount", { Name: "keep2", ID: ID_A });
      assert.deepEqual(await mountIDs(root, "keep2"), []);
      assert.deepEqual(await call(socket, "/VolumeDriver.Path", { Name: "keep2" }), { Err: "" });
      // A live ID taken after the activation still blocks Remove.
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep2", ID: ID_B });
      await call(socket, "/Plugin.Activate");
      await okCall(socket, "/VolumeDriver.Mount", { Name: "keep2", ID: ID_A });
      assert.deepEqual(await call(socket, "/VolumeDriver.Remove", { Name: "keep2" }), {
        Err: 'Cannot remove volume "keep2": volume is in use by 1 container',
      });
      assert.deepEqual(await mountIDs(root, "keep2"), [ID_A], "Remove dropped the stale ID");
      await okCall(socket, "/VolumeDriver.Unmount", { Name: "keep2", ID: ID_A });
      await okCall(socket, "/VolumeDriver.Remove", { Name: "keep2" });
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});

describe("--ignore-docker-delete and --create-on-docker-mount", () => {
  let d: TestDaemon;
  let root: string;
  let cleanup: () => Promise<void>;

  before(async () => {
    let dir: string;
    ({ dir, cleanup } = await tempDir("convoy-docker-flags-"));
    root = join(dir, "root");
    d = await startDaemon({ root, args: ["--ignore-docker-delete", "--create-on-docker-mount"] });
  });
  after(async () => {
    await d.stop();
    await cleanup();
  });

  it("a Mount of an unknown volume creates it", async () => {
    const r = await okCall(d.socket, "/VolumeDriver.Mount", { Name: "auto1", ID: ID_A });
    assert.equal(r.Mountpoint, join(root, "vfs", "volumes", "auto1"));
    assert.equal(
      ((await okCall(d.socket, "/VolumeDriver.Get", { Name: "auto1" })).Volume as Json)
        .Name,
      "auto1",
    );
    assert.deepEqual(await mountIDs(root, "auto1"), [ID_A]);
    const both = await Promise.all([
      okCall(d.socket, "/VolumeDriver.Mount", { Name: "auto2", ID: ID_A }),
      okCall(d.socket, "/VolumeDriver.Mount", { Name: "auto2", ID: ID_B }),
    ]);
    assert.equal(both[0].Mountpoint, both[1].Mountpoint, "concurrent first Mounts agree");
    assert.deepEqual((await mountIDs(root, "auto2")).sort(), [ID_A, ID_B]);
    assert.match(
      String((await call(d.socket, "/VolumeDriver.Mount", { Name: "a", ID: ID_A })).Err),
      /Invalid volume name/,
    );
  });

  it("Docker's Remove keeps the volume and its data", async () => {
    await okCall(d.socket, "/VolumeDriver.Create", { Name: "kept" });
    const mp = String(
      (await okCall(d.socket, "/VolumeDriver.Mount", { Name: "kept", ID: ID_A })).Mountpoint,
    );
    await writeFile(join(mp, "f"), "kept");
    await okCall(d.socket, "/VolumeDriver.Unmount", { Name: "kept", ID: ID_A });
    assert.deepEqual(await call(d.socket, "/VolumeDriver.Remove", { Name: "kept" }), { Err: "" });
    assert.equal(
      ((await okCall(d.socket, "/VolumeDriver.Get", { Name: "kept" })).Volume as Json)
        .Name,
      "kept",
    );
    assert.equal(await readFile(join(mp, "f"), "utf8"), "kept");
  });
});
