/**
 * Two hosts sharing one vfs.path (two real daemons, each with its own root, on one folder as two
 * hosts would share an NFS export): each sees the other's volumes as they come and go, without a
 * restart, as Convoy did by reading the shared records on every call.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { convoy, ok, rawRequest, startDaemon, tempDir, type TestDaemon } from "./helpers.ts";

describe("vfs volumes on a shared vfs.path", () => {
  let a: TestDaemon;
  let b: TestDaemon;
  let shared: string;
  let cleanup: () => Promise<void>;
  const docker = async (d: TestDaemon, endpoint: string, body: unknown) =>
    JSON.parse((await rawRequest(d.socket, "POST", endpoint, JSON.stringify(body))).body);

  before(async () => {
    let dir: string;
    ({ dir, cleanup } = await tempDir("convoy-vfs-shared-"));
    shared = join(dir, "shared");
    await mkdir(shared);
    const args = ["--drivers", "vfs", "--driver-opts", `vfs.path=${shared}`];
    a = await startDaemon({ root: join(dir, "host-a"), args });
    b = await startDaemon({ root: join(dir, "host-b"), args });
  });
  after(async () => {
    await a.stop();
    await b.stop();
    await cleanup();
  });

  it("a volume made on one host is listed, inspected and mounted on the other at once", async () => {
    await ok(["create", "shared1"], { socket: a.socket });
    await writeFile(join(shared, "shared1", "from-a.txt"), "hello from a\n");
    assert.ok("shared1" in JSON.parse(await ok(["list"], { socket: b.socket })));
    await ok(["create", "shared2"], { socket: a.socket });
    const vol = JSON.parse(await ok(["inspect", "shared2"], { socket: b.socket }));
    assert.equal(vol.Name, "shared2");
    assert.equal(vol.DriverInfo.Path, join(shared, "shared2"));
    // Docker on host b: Get finds it, Create of it is success, Mount gives the shared folder.
    await ok(["create", "shared3"], { socket: a.socket });
    const got = await docker(b, "/VolumeDriver.Get", { Name: "shared3" });
    assert.equal(got.Err, "");
    assert.equal(got.Volume.Name, "shared3");
    await ok(["create", "shared4"], { socket: a.socket });
    assert.deepEqual(await docker(b, "/VolumeDriver.Create", { Name: "shared4" }), { Err: "" });
    const m = await docker(b, "/VolumeDriver.Mount", { Name: "shared1", ID: "c".repeat(64) });
    assert.equal(m.Err, "");
    assert.equal(m.Mountpoint, join(shared, "shared1"));
    // A name another host took cannot be created again here.
    const again = await convoy(["create", "shared2"], { socket: b.socket });
    assert.equal(again.code, 1);
    assert.match(again.stderr, /Cannot create volume "shared2": volume already exists/);
  });

  it("a volume deleted on one host goes from the other's list, unless mounted there", async () => {
    await ok(["create", "gone1"], { socket: a.socket });
    assert.ok("gone1" in JSON.parse(await ok(["list"], { socket: b.socket })));
    await ok(["delete", "gone1"], { socket: a.socket });
    const list = JSON.parse(await ok(["list"], { socket: b.socket }));
    assert.ok(!("gone1" in list), Object.keys(list).join(", "));
    const r = await convoy(["inspect", "gone1"], { socket: b.socket });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /gone1/);
    const dockerList = await docker(b, "/VolumeDriver.List", {});
    assert.ok(!dockerList.Volumes.some((v: { Name: string }) => v.Name === "gone1"));
    // Host b's own volumes stay, and one mounted there is never forgotten.
    await ok(["create", "mine"], { socket: b.socket });
    assert.ok("mine" in JSON.parse(await ok(["list"], { socket: b.socket })));
    // Another host's volume named like one of this host's snapshots is not adopted, and the
    // warning is logged once, not on every list.
    await ok(["snapshot", "create", "mine", "--name", "clash"], { socket: b.socket });
    await ok(["create", "clash"], { socket: a.socket });
    for (let i = 0; i < 3; i++) {
      assert.ok(!("clash" in JSON.parse(await ok(["list"], { socket: b.socket }))));
    }
    assert.equal(
      b.output().split("\n").filter((l) => /not adopting/.test(l) && /clash/.test(l)).length,
      1,
    );
    assert.ok("shared1" in JSON.parse(await ok(["list"], { socket: a.socket })));
    assert.equal((await convoy(["delete", "shared1"], { socket: a.socket })).code, 0);
    assert.ok("shared1" in JSON.parse(await ok(["list"], { socket: b.socket })));
  });
});
