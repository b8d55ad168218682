import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { convoy, ok, rawRequest, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    out.push(join(e.parentPath, e.name).slice(dir.length + 1) + (e.isDirectory() ? "/" : ""));
  }
  return out.sort();
}

describe("convoy CLI against the real daemon (vfs driver)", () => {
  let d: TestDaemon;
  let dir: string;
  let cleanup: () => Promise<void>;
  let socket: string;
  const cli = (args: string[]) => convoy(args, { socket });
  const okc = (args: string[]) => ok(args, { socket });

  before(async () => {
    ({ dir, cleanup } = await tempDir());
    d = await startDaemon({ root: join(dir, "root") });
    socket = d.socket;
  });
  after(async () => {
    await d.stop();
    await cleanup();
  });

  it("info reports the embedded default: the vfs driver under <root>/vfs/volumes", async () => {
    const info = JSON.parse(await okc(["info"]));
    assert.deepEqual(info.General.DriverList, ["vfs"]);
    assert.equal(info.General.DefaultDriver, "vfs");
    assert.equal(info.General.Root, join(dir, "root"));
    assert.equal(info.vfs.Root, join(dir, "root", "vfs"));
    assert.equal(info.vfs.Path, join(dir, "root", "vfs", "volumes"));
  });

  it("runs the quick start: create, write, snapshot, back up, restore into a new volume", async () => {
    const store = join(dir, "backups");
    await mkdir(store);
    assert.equal(await okc(["create", "vol.1_1-0"]), "vol.1_1-0");
    const mp = await okc(["mount", "vol.1_1-0"]);
    assert.equal(mp, join(dir, "root", "vfs", "volumes", "vol.1_1-0"));
    assert.equal((await stat(mp)).mode & 0o777, 0o755);
    await writeFile(join(mp, "hello.txt"), "hello convoy\n");
    await mkdir(join(mp, "sub"));
    await writeFile(join(mp, "sub", "data.bin"), new Uint8Array(100_000).map((_, i) => i % 251));

    assert.equal(await okc(["snapshot", "create", "vol.1_1-0", "--name", "snap1"]), "snap1");
    await writeFile(join(mp, "hello.txt"), "changed after the snapshot\n");

    assert.equal(await okc(["snapshot", "create", "vol.1_1-0", "--name", "asnap"]), "asnap");
    const vol = JSON.parse(await okc(["inspect", "vol.1_1-0"]));
    // Map keys come sorted, as Go's encoding/json writes them in Convoy's output.
    const sorted = (o: object) => assert.deepEqual(Object.keys(o), Object.keys(o).sort());
    sorted(vol.DriverInfo);
    assert.deepEqual(Object.keys(vol.Snapshots), ["asnap", "snap1"]);
    sorted(vol.Snapshots.snap1.DriverInfo);
    assert.equal(vol.Name, "vol.1_1-0");
    assert.equal(vol.Driver, "vfs");
    assert.equal(vol.MountPoint, mp);
    assert.notEqual(vol.CreatedTime, "");
    assert.equal(vol.DriverInfo.Driver, "vfs");
    assert.equal(vol.DriverInfo.Size, "0");
    assert.equal(vol.Snapshots.snap1.Name, "snap1");
    assert.notEqual(vol.Snapshots.snap1.CreatedTime, "");

    const snap = JSON.parse(await okc(["snapshot", "inspect", "snap1"]));
    assert.equal(snap.Name, "snap1");
    assert.equal(snap.VolumeName, "vol.1_1-0");
    assert.equal(snap.VolumeCreatedAt, vol.CreatedTime);
    sorted(snap.DriverInfo);
    sorted(JSON.parse(await okc(["list", "--driver"]))["vol.1_1-0"]);

    const url = await okc(["backup", "create", "snap1", "--dest", `vfs://${store}`]);
    assert.match(url, new RegExp(`^vfs://${store}\\?backup=backup-[0-9a-f]+&volume=vol\\.1_1-0$`));
    assert.ok(!url.includes("\\u0026"), "URL printed unescaped");

    const list = JSON.parse(await okc(["backup", "list", `vfs://${store}`]));
    assert.deepEqual(Object.keys(list), [url]);
    assert.equal(list[url].VolumeName, "vol.1_1-0");
    assert.equal(list[url].SnapshotName, "snap1");
    assert.equal(list[url].DriverName, "vfs");
    assert.equal(list[url].SnapshotCreatedAt, snap.CreatedTime);
    assert.equal(list[url].VolumeCreatedAt, vol.CreatedTime);
    const inspected = JSON.parse(await okc(["backup", "inspect", url.replace("&", "\\u0026")]));
    assert.equal(inspected.BackupURL, url);

    assert.equal(await okc(["create", "restored", "--backup", url]), "restored");
    const rmp = await okc(["mount", "restored"]);
    assert.equal(await readFile(join(rmp, "hello.txt"), "utf8"), "hello convoy\n");
    assert.deepEqual(
      await readFile(join(rmp, "sub", "data.bin")),
      await readFile(join(mp, "sub", "data.bin")),
    );

    await okc(["backup", "delete", url]);
    assert.deepEqual(JSON.parse(await okc(["backup", "list", `vfs://${store}`])), {});
    const left = await listFiles(store);
    assert.ok(left.every((f) => !f.includes("volumes/")), `store left: ${left.join(", ")}`);

    await okc(["umount", "restored"]);
    await okc(["umount", "vol.1_1-0"]);
    await okc(["snapshot", "delete", "snap1"]);
    assert.equal((await cli(["snapshot", "inspect", "snap1"])).code, 1);
    await okc(["delete", "vol.1_1-0", "restored"]);
    assert.deepEqual(JSON.parse(await okc(["list"])), {});
  });

  it("backup list reports an unreadable record (stderr, exit 1) and backup gc collects an orphan block, --dry-run nothing", async () => {
    const store = join(dir, "gc-store");
    await mkdir(store);
    await okc(["create", "gcvol"]);
    await okc(["snapshot", "create", "gcvol", "--name", "gcsnap"]);
    const url = await okc(["backup", "create", "gcsnap", "--dest", `vfs://${store}`]);
    const volDir = join(store, "convoy-objectstore/volumes/gc/vo/gcvol");
    const sum = "ab".repeat(32);
    const block = join(volDir, "blocks/ab/ab", `${sum}.blk`);
    await mkdir(join(volDir, "blocks/ab/ab"), { recursive: true });
    await writeFile(block, "orphan");

    const dry = await cli(["backup", "gc", `vfs://${store}`, "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.ok(dry.stdout.startsWith('{\n\t"DryRun": true'), dry.stdout);
    assert.deepEqual(JSON.parse(dry.stdout).Volumes.gcvol, {
      UnreferencedBlocks: 1,
      UnreferencedBlockBytes: 6,
      StaleTemps: 0,
      StaleTempBytes: 0,
    });
    await stat(block);
    const gc = JSON.parse(await okc(["backup", "gc", `vfs://${store}`, "--volume-name", "gcvol"]));
    assert.equal(gc.DryRun, false);
    assert.equal(gc.Volumes.gcvol.UnreferencedBlocks, 1);
    await assert.rejects(stat(block), { code: "ENOENT" });

    const bad = join(volDir, "backups/backup_backup-0000000000000bad.cfg");
    await writeFile(bad, "{not json");
    const listed = await cli(["backup", "list", `vfs://${store}`]);
    assert.equal(listed.code, 1);
    const list = JSON.parse(listed.stdout);
    assert.deepEqual(list[url].SnapshotName, "gcsnap", "the readable backup is still listed");
    const badURL = `vfs://${store}?backup=backup-0000000000000bad&volume=gcvol`;
    assert.match(list[badURL].Error, /not valid JSON/);
    assert.match(
      listed.stderr,
      /backup ".*backup-0000000000000bad.*" cannot be read: .*not valid JSON/,
    );
    const kept = JSON.parse(await okc(["backup", "gc", `vfs://${store}`]));
    assert.match(kept.Volumes.gcvol.Skipped, /blocks kept: .*backup-0000000000000bad/);
    await rm(bad);
    await okc(["backup", "delete", url]);
    await okc(["snapshot", "delete", "gcsnap"]);
    await okc(["delete", "gcvol"]);
  });

  it("delete --reference keeps the data", async () => {
    await okc(["create", "keepme"]);
    const path = JSON.parse(await okc(["inspect", "keepme"])).DriverInfo.Path;
    await writeFile(join(path, "precious"), "x");
    await okc(["delete", "--reference", "keepme"]);
    assert.equal(await readFile(join(path, "precious"), "utf8"), "x");
    assert.equal((await cli(["inspect", "keepme"])).code, 1);
  });

  it("mount --mountpoint bind-mounts the volume there", async () => {
    await okc(["create", "bindvol"]);
    const target = join(dir, "mnt-bind");
    assert.equal(await okc(["mount", "bindvol", "--mountpoint", target]), target);
    await writeFile(join(target, "f"), "through the bind mount");
    const path = JSON.parse(await okc(["inspect", "bindvol"])).DriverInfo.Path;
    assert.equal(await readFile(join(path, "f"), "utf8"), "through the bind mount");
    const del = await cli(["delete", "bindvol"]);
    assert.equal(del.code, 1, "a mounted volume is not deleted");
    await okc(["umount", "bindvol"]);
    assert.deepEqual(await readdir(target), []);
    await okc(["delete", "bindvol"]);
  });

  it("generates Convoy's volume-<16 hex> and snapshot-<16 hex> names", async () => {
    const v = await okc(["create"]);
    assert.match(v, /^volume-[0-9a-f]{12}4[0-9a-f]{3}$/);
    const s = await okc(["snapshot", "create", v]);
    assert.match(s, /^snapshot-[0-9a-f]{12}4[0-9a-f]{3}$/);
    await okc(["delete", v]);
    assert.equal((await cli(["snapshot", "inspect", s])).code, 1, "snapshots go with their volume");
  });

  it("rejects bad input with exit 1 and a one-line message, leaving nothing behind", async () => {
    for (const bad of ["a", "a/b", "../etc", "-x", "x".repeat(256), "bad name", "tab\tname"]) {
      const r = await cli(["create", "--", bad]);
      assert.notEqual(r.code, 0, bad);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
    const unknown = await cli(["inspect", "nosuchvol"]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /volume "nosuchvol" does not exist/);
    // stdout (a pipe here) carries Convoy's {"Error": ...} with the same message.
    assert.equal(JSON.parse(unknown.stdout).Error, unknown.stderr.trim().replace(/^convoy: /, ""));

    await okc(["create", "dup1"]);
    const dup = await cli(["create", "dup1"]);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /Cannot create volume "dup1": volume already exists/);
    await okc(["snapshot", "create", "dup1", "--name", "dupsnap"]);
    assert.match((await cli(["create", "dupsnap"])).stderr, /a snapshot with that name exists/);
    assert.match(
      (await cli(["snapshot", "create", "dup1", "--name", "dup1"])).stderr,
      /a volume with that name exists/,
    );
    assert.match(
      (await cli(["snapshot", "create", "dup1", "--name", "dupsnap"])).stderr,
      /a snapshot with that name exists/,
    );

    const drv = await cli(["create", "vol9", "--driver", "randomdriver"]);
    assert.equal(drv.code, 1);
    assert.match(drv.stderr, /driver "randomdriver" is not enabled/);

    const names = Object.keys(JSON.parse(await okc(["list"])));
    assert.deepEqual(names, ["dup1"]);
    await okc(["delete", "dup1"]);
  });

  it("answers usage errors with exit 2", async () => {
    assert.equal((await cli(["nosuchcommand"])).code, 2);
    assert.equal((await cli(["create", "--size", "ten"])).code, 2);
    assert.equal((await cli(["mount"])).code, 2);
    assert.equal((await cli(["create", "--bogus-flag"])).code, 2);
  });

  it("returns JSON errors with 4xx statuses on the REST API", async () => {
    const bad = await rawRequest(socket, "POST", "/v1/volumes/create", "{not json");
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).Error, /Cannot parse request body/);
    const missing = await rawRequest(
      socket,
      "GET",
      "/v1/volumes/",
      JSON.stringify({ VolumeName: "ghost" }),
    );
    assert.equal(missing.status, 404);
    assert.match(JSON.parse(missing.body).Error, /volume "ghost" does not exist/);
    const noPrefix = await rawRequest(
      socket,
      "GET",
      "/volumes/",
      JSON.stringify({ volumename: "ghost" }),
    );
    assert.equal(
      noPrefix.status,
      404,
      "routes work without /v1 and field names match case-insensitively",
    );
    await rawRequest(socket, "POST", "/v1/volumes/create", JSON.stringify({ Name: "restvol" }));
    const dup = await rawRequest(
      socket,
      "POST",
      "/v1/volumes/create",
      JSON.stringify({ Name: "restvol" }),
    );
    assert.equal(dup.status, 409);
    const traversal = await rawRequest(
      socket,
      "POST",
      "/v1/volumes/create",
      JSON.stringify({ Name: "../../etc" }),
    );
    assert.equal(traversal.status, 400);
    const wrongType = await rawRequest(
      socket,
      "POST",
      "/v1/volumes/create",
      JSON.stringify({ Name: "x1", Size: "huge" }),
    );
    assert.equal(wrongType.status, 400);
    const route = await rawRequest(socket, "GET", "/v1/nothing/here");
    assert.equal(route.status, 404);
    assert.ok(JSON.parse(route.body).Error);
    await rawRequest(socket, "DELETE", "/v1/volumes/", JSON.stringify({ VolumeName: "restvol" }));
  });

  it("keeps state consistent through 100 parallel creates and 100 parallel deletes", async () => {
    const names = Array.from({ length: 100 }, (_, i) => `par${i}`);
    const created = await Promise.all(
      names.map((n) =>
        rawRequest(socket, "POST", "/v1/volumes/create", JSON.stringify({ Name: n }))
      ),
    );
    assert.deepEqual(created.map((r) => r.status), names.map(() => 200));
    const list = JSON.parse(await okc(["list"]));
    assert.deepEqual(
      Object.keys(list).filter((n) => n.startsWith("par")).sort(),
      [...names].sort(),
    );
    const deleted = await Promise.all(
      names.map((n) =>
        rawRequest(socket, "DELETE", "/v1/volumes/", JSON.stringify({ VolumeName: n }))
      ),
    );
    assert.deepEqual(deleted.map((r) => r.status), names.map(() => 200));
    assert.deepEqual(JSON.parse(await okc(["list"])), {});
    const state = JSON.parse(await readFile(join(dir, "root", "state.json"), "utf8"));
    assert.deepEqual(Object.keys(state.Volumes), []);
    const vols = (await readdir(join(dir, "root", "vfs", "volumes"))).filter((n) =>
      n.startsWith("par")
    );
    assert.deepEqual(vols, []);
  });
});

describe("daemon lifecycle", () => {
  it("keeps volumes, snapshots and mounts across a restart and a kill -9", async () => {
    const { dir, cleanup } = await tempDir();
    const root = join(dir, "root");
    let d = await startDaemon({ root });
    const socket = d.socket;
    try {
      await ok(["create", "persist1"], { socket });
      await ok(["snapshot", "create", "persist1", "--name", "psnap"], { socket });
      const target = join(dir, "bindmp");
      await ok(["mount", "persist1", "--mountpoint", target], { socket });
      assert.equal(await d.stop(), 0, d.output());

      d = await startDaemon({ root, socket });
      let vol = JSON.parse(await ok(["inspect", "persist1"], { socket }));
      assert.equal(vol.MountPoint, target);
      assert.ok(vol.Snapshots.psnap);

      await d.kill9();
      d = await startDaemon({ root, socket });
      vol = JSON.parse(await ok(["inspect", "persist1"], { socket }));
      assert.ok(vol.Snapshots.psnap);
      await ok(["umount", "persist1"], { socket });
      await ok(["delete", "persist1"], { socket });
    } finally {
      await d.stop();
      await cleanup();
    }
  });

  it("recovers a consistent state after kill -9 in the middle of parallel creates", async () => {
    const { dir, cleanup } = await tempDir();
    const root = join(dir, "root");
    let d = await startDaemon({ root });
    const socket = d.socket;
    try {
      const pending = Array.from(
        { length: 40 },
        (_, i) =>
          rawRequest(socket, "POST", "/v1/volumes/create", JSON.stringify({ Name: `crash${i}` }))
            .catch(() => undefined),
      );
      await new Promise((r) => setTimeout(r, 150));
      await d.kill9();
      await Promise.all(pending);
      d = await startDaemon({ root, socket });
      const listed = Object.keys(JSON.parse(await ok(["list"], { socket }))).sort();
      const state = JSON.parse(await readFile(join(root, "state.json"), "utf8"));
      for (const v of Object.values(state.Volumes) as { Status: string }[]) {
        assert.equal(v.Status, "ready");
      }
      const onDisk = (await readdir(join(root, "vfs", "volumes", "config")))
        .map((f) => f.replace(/^vfs_volume_(.*)\.json$/, "$1")).filter((n) => n.startsWith("crash"))
        .sort();
      assert.deepEqual(listed, onDisk, "every recorded volume exists and every volume is recorded");
      for (const n of listed) JSON.parse(await ok(["inspect", n], { socket }));
      await ok(["create", "crash-after"], { socket });
    } finally {
      await d.stop();
      await cleanup();
    }
  });

  it("creates the socket 0660, refuses a second daemon on it, and replaces a stale one", async () => {
    const { dir, cleanup } = await tempDir();
    const socket = join(dir, "run", "convoy.sock");
    let d = await startDaemon({ root: join(dir, "root"), socket });
    try {
      assert.equal((await stat(socket)).mode & 0o777, 0o660);
      const second = await startDaemon({ root: join(dir, "root2"), socket, waitForSocket: false });
      assert.notEqual(await second.exited, 0);
      assert.match(second.output(), /another daemon is running/);
      await d.kill9();
      assert.ok((await stat(socket)).isSocket(), "a killed daemon leaves its socket");
      d = await startDaemon({ root: join(dir, "root"), socket });
      assert.equal(await ok(["create", "afterstale"], { socket }), "afterstale");
    } finally {
      await d.stop();
      await cleanup();
    }
  });

  it("reports a clear error when no daemon is running", async () => {
    const r = await convoy(["list"], { socket: "/tmp/convoy-no-such-daemon.sock" });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot connect to convoy daemon at \/tmp\/convoy-no-such-daemon\.sock/);
  });

  it("rejects --driver-opts without '=' as a usage error", async () => {
    const { dir, cleanup } = await tempDir();
    try {
      const d = await startDaemon({
        root: join(dir, "root"),
        args: ["--driver-opts", "vfs.path"],
        waitForSocket: false,
      });
      assert.equal(await d.exited, 2);
      assert.match(d.output(), /--driver-opts/);
    } finally {
      await cleanup();
    }
  });
});

describe("requests the daemon refuses", () => {
  it("a body over 16 MiB gets 413 and a loop size the filesystem cannot hold 400, leaving no image", async () => {
    const { dir, cleanup } = await tempDir();
    const d = await startDaemon({ root: join(dir, "root"), args: ["--drivers", "loop"] });
    try {
      const big = await rawRequest(
        d.socket,
        "POST",
        "/v1/volumes/create",
        JSON.stringify({ Name: "big", Pad: " ".repeat(17 * 1024 * 1024) }),
      );
      assert.equal(big.status, 413);
      assert.match(JSON.parse(big.body).Error, /larger than 16 MiB/);

      const path = join(dir, "root", "loop", "volumes");
      const huge = await rawRequest(
        d.socket,
        "POST",
        "/v1/volumes/create",
        JSON.stringify({ Name: "huge", Size: "1000T" }),
      );
      assert.equal(huge.status, 400, huge.body);
      assert.equal(
        JSON.parse(huge.body).Error,
        `Cannot create volume "huge": size 1000T exceeds what the filesystem at "${path}" allows`,
      );
      assert.deepEqual(await readdir(path), []);
      const list = await rawRequest(d.socket, "GET", "/v1/volumes/list");
      assert.deepEqual(JSON.parse(list.body), {});
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});

describe("long operations", () => {
  it("a long backup neither blocks list nor other volumes, reports progress, and can be cancelled", async () => {
    const { dir, cleanup } = await tempDir();
    const d = await startDaemon({ root: join(dir, "root") });
    const socket = d.socket;
    try {
      const store = join(dir, "store");
      await mkdir(store);
      await ok(["create", "big"], { socket });
      await ok(["create", "other"], { socket });
      const path = JSON.parse(await ok(["inspect", "big"], { socket })).DriverInfo.Path;
      const chunk = new Uint8Array(16 * 1024 * 1024);
      for (let i = 0; i < 24; i++) {
        crypto.getRandomValues(chunk.subarray(0, 65536));
        for (let o = 65536; o < chunk.length; o += 65536) chunk.copyWithin(o, 0, 65536);
        chunk[i] = i; // distinct files, incompressible enough to take a while
        await writeFile(join(path, `f${i}`), chunk);
      }
      await ok(["snapshot", "create", "big", "--name", "bigsnap"], { socket });

      const body = JSON.stringify({
        URL: `vfs://${store}`,
        SnapshotName: "bigsnap",
        JobID: "job-test-1",
      });
      const running = rawRequest(socket, "POST", "/v1/backups/create", body);
      let job: { State: string } | undefined;
      for (let i = 0; i < 100 && !job; i++) {
        const jobs = JSON.parse((await rawRequest(socket, "GET", "/v1/jobs")).body) as {
          ID: string;
          State: string;
        }[];
        job = jobs.find((j) => j.ID === "job-test-1");
        if (!job) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(job?.State, "running");
      const list = JSON.parse(await ok(["list"], { socket }));
      assert.deepEqual(Object.keys(list), ["big", "other"]);
      await ok(["snapshot", "create", "other", "--name", "othersnap"], { socket });
      const meanwhile = JSON.parse((await rawRequest(socket, "GET", "/v1/jobs")).body) as {
        ID: string;
        State: string;
      }[];
      assert.equal(
        meanwhile.find((j) => j.ID === "job-test-1")?.State,
        "running",
        "list answered while the backup ran",
      );
      const del = await convoy(["snapshot", "delete", "bigsnap"], { socket });
      assert.equal(del.code, 1, "a snapshot being backed up is not deleted");
      assert.match(del.stderr, /being backed up/);

      await ok(["jobs", "cancel", "job-test-1"], { socket });
      const res = await running;
      assert.equal(res.status, 499);
      assert.match(JSON.parse(res.body).Error, /cancelled/);
      assert.deepEqual(JSON.parse(await ok(["backup", "list", `vfs://${store}`], { socket })), {});

      const url = await ok(["backup", "create", "othersnap", "--dest", `vfs://${store}`], {
        socket,
      });
      const report = JSON.parse(await ok(["backup", "verify", url], { socket }));
      assert.deepEqual(report.problems, []);
      const jobs = JSON.parse(await ok(["jobs"], { socket })) as { Kind: string; State: string }[];
      assert.ok(jobs.some((j) => j.Kind === "backup" && j.State === "cancelled"));
      assert.ok(jobs.some((j) => j.Kind === "verify" && j.State === "done"));
    } finally {
      await d.stop();
      await cleanup();
    }
  });
});
