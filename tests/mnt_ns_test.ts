/**
 * `convoy daemon --mnt-ns PATH` against a real second mount namespace (a process started with
 * `unshare --mount --propagation private`): volumes are mounted there and not in the daemon's
 * namespace, and mount state is read from there. Needs root and loop devices.
 */
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { access, mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  convoy,
  mountsUnder,
  ok,
  run,
  startDaemon,
  startMountNamespace,
  tempDir,
} from "./helpers.ts";

/** Loop devices whose backing file is below `dir`. */
async function loopsUnder(dir: string): Promise<string[]> {
  const r = await run("losetup", ["--list", "--noheadings", "--output", "NAME,BACK-FILE"]);
  return r.stdout.split("\n").map((l) => l.trim().split(/\s+/)).filter(([, file]) =>
    file?.startsWith(dir + "/")
  ).map(([dev]) => dev);
}

/** Runs `sh -c script` inside the namespace at `nsPath`; resolves to its stdout. */
async function inNamespace(nsPath: string, script: string): Promise<string> {
  const r = await run("nsenter", [`--mount=${nsPath}`, "sh", "-c", script]);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

/**
 * A temporary folder and a process in a second mount namespace. `release(daemon)` stops the
 * daemon, then the namespace, detaches loop devices left on images under the folder, removes it.
 */
async function namespaceFixture() {
  const { dir, cleanup } = await tempDir("convoy-mntns-");
  const ns = await startMountNamespace();
  const release = async (daemon?: { stop(): Promise<unknown> }) => {
    await daemon?.stop();
    await ns.stop();
    for (const dev of await loopsUnder(dir)) await run("losetup", ["--detach", dev]);
    await cleanup();
  };
  return { dir, ns, release };
}

describe("convoy daemon --mnt-ns", () => {
  it("mounts a loop volume in the target namespace only, and reads mount state from there", async () => {
    const { dir, ns, release } = await namespaceFixture();
    const root = join(dir, "root");
    let d = await startDaemon({ root, args: ["--drivers", "loop", "--mnt-ns", ns.path] });
    const cli = (...args: string[]) => ok(args, { socket: d.socket });
    const mountedThere = async (mp: string) =>
      (await ns.mounts()).filter((e) => e.mountPoint === mp);
    try {
      assert.equal(
        JSON.parse(await readFile(join(root, "convoy.cfg"), "utf8")).MountNamespaceFD,
        ns.path,
      );
      assert.equal(await cli("create", "v1", "--size", "64M"), "v1");
      const mp = await cli("mount", "v1");
      assert.equal(mp, join(root, "loop", "mounts", "v1"));

      const there = await mountedThere(mp);
      assert.equal(there.length, 1, "mounted once in the target namespace");
      assert.match(there[0].source, /^\/dev\/loop\d+$/);
      assert.equal(there[0].fstype, "ext4");
      assert.deepEqual(await mountsUnder(dir), [], "nothing mounted in the daemon's namespace");
      const vol = JSON.parse(await cli("inspect", "v1"));
      assert.equal(vol.MountPoint, mp);
      assert.equal(vol.DriverInfo.Device, there[0].source);
      assert.equal(JSON.parse(await cli("list")).v1.MountPoint, mp);

      // The volume's filesystem is reachable in the namespace, not here (an empty folder).
      await inNamespace(ns.path, `echo written-in-ns > '${mp}/hello'`);
      assert.equal(await inNamespace(ns.path, `cat '${mp}/hello'`), "written-in-ns\n");
      await assert.rejects(access(join(mp, "hello")), { code: "ENOENT" });

      // A restart (convoy.cfg keeps --mnt-ns) finds the mount there and leaves it alone; read
      // from this namespace's table it would try to mount it again, which mount refuses.
      await d.stop();
      d = await startDaemon({ root });
      assert.doesNotMatch(d.output(), /Cannot restore/);
      assert.equal((await mountedThere(mp)).length, 1);
      assert.equal(JSON.parse(await cli("inspect", "v1")).MountPoint, mp);

      await cli("umount", "v1");
      assert.deepEqual(await mountedThere(mp), [], "unmounted there");
      assert.equal(JSON.parse(await cli("inspect", "v1")).MountPoint, "");

      // A mount point of the caller's: umount must find the mount there to undo it (the
      // folder is kept, so only a real unmount in the namespace removes the entry).
      const elsewhere = join(dir, "elsewhere");
      assert.equal(await cli("mount", "v1", "--mountpoint", elsewhere), elsewhere);
      assert.equal(await inNamespace(ns.path, `cat '${elsewhere}/hello'`), "written-in-ns\n");
      assert.equal((await mountedThere(elsewhere)).length, 1);
      assert.deepEqual(await mountsUnder(dir), []);
      await cli("umount", "v1");
      assert.deepEqual(await mountedThere(elsewhere), []);
      await access(elsewhere);

      // The device mounted behind the daemon's back, in the namespace: delete sees it there.
      const [device] = await loopsUnder(dir);
      assert.match(device ?? "", /^\/dev\/loop\d+$/);
      const manual = join(dir, "manual");
      await inNamespace(ns.path, `mkdir -p '${manual}' && mount '${device}' '${manual}'`);
      const del = await convoy(["delete", "v1"], { socket: d.socket });
      assert.equal(del.code, 1);
      assert.match(del.stderr, new RegExp(`its device "${device}" is mounted at "${manual}"`));
      await inNamespace(ns.path, `umount '${manual}'`);

      await cli("delete", "v1");
      assert.deepEqual(JSON.parse(await cli("list")), {});
      assert.deepEqual(await loopsUnder(dir), []);
    } finally {
      await release(d);
    }
  });

  it("snapshots a volume mounted in the namespace with its filesystem frozen there; the backup restores it", async () => {
    const { dir, ns, release } = await namespaceFixture();
    const d = await startDaemon({
      root: join(dir, "root"),
      args: ["--drivers", "loop", "--mnt-ns", ns.path],
    });
    const cli = (...args: string[]) => ok(args, { socket: d.socket });
    try {
      await cli("create", "v1", "--size", "64M");
      const mp = await cli("mount", "v1");
      // Written in the namespace and not synced: only the freeze there puts it into the image.
      const sum = await inNamespace(
        ns.path,
        `head -c 3000000 /dev/urandom > '${mp}/data' && sha256sum < '${mp}/data'`,
      );
      await cli("snapshot", "create", "v1", "--name", "s1");
      await inNamespace(ns.path, `echo thawed > '${mp}/after'`); // not left frozen
      await mkdir(join(dir, "store"));
      const url = await cli("backup", "create", "s1", "--dest", `vfs://${join(dir, "store")}`);
      await cli("create", "v2", "--backup", url);
      const mp2 = await cli("mount", "v2");
      assert.equal(await inNamespace(ns.path, `sha256sum < '${mp2}/data'`), sum);
      assert.equal(await inNamespace(ns.path, `ls '${mp2}'`), "data\nlost+found\n");
      assert.deepEqual(await mountsUnder(dir), [], "nothing mounted in the daemon's namespace");
      for (const v of ["v1", "v2"]) await cli("umount", v);
      await cli("snapshot", "delete", "s1");
      for (const v of ["v1", "v2"]) await cli("delete", v);
    } finally {
      await release(d);
    }
  });

  it("refuses a missing namespace, saves the flag and honours the saved one on restart", async () => {
    const { dir, ns, release } = await namespaceFixture();
    const root = join(dir, "root");
    let d: Awaited<ReturnType<typeof startDaemon>> | undefined;
    try {
      const missing = join(dir, "no-such-ns");
      const bad = await startDaemon({
        root,
        args: ["--mnt-ns", missing],
        waitForSocket: false,
      });
      assert.equal(await bad.exited, 1);
      assert.equal(
        bad.output().trim().split("\n").at(-1),
        `convoy: Cannot start daemon: mount namespace "${missing}" does not exist`,
      );
      await assert.rejects(access(join(root, "convoy.cfg")), { code: "ENOENT" });

      d = await startDaemon({ root, args: ["--drivers", "vfs", "--mnt-ns", ns.path] });
      await d.stop();
      const saved = JSON.parse(await readFile(join(root, "convoy.cfg"), "utf8"));
      assert.equal(saved.MountNamespaceFD, ns.path);

      // Restarted without the flag (and with another one): the saved namespace is used.
      d = await startDaemon({ root, args: ["--mnt-ns", missing] });
      assert.match(
        d.output(),
        /Ignoring flag --mnt-ns .*no-such-ns \(saved: \/proc\/\d+\/ns\/mnt\)/,
      );
      await d.stop();
      d = await startDaemon({ root });
      const cli = (...args: string[]) => ok(args, { socket: d!.socket });
      await cli("create", "b1");
      const target = join(dir, "bind-target");
      assert.equal(await cli("mount", "b1", "--mountpoint", target), target);
      assert.ok((await ns.mounts()).some((e) => e.mountPoint === target), "bind mount there");
      assert.deepEqual(await mountsUnder(dir), [], "no bind mount in the daemon's namespace");
      assert.equal(JSON.parse(await cli("inspect", "b1")).MountPoint, target);
      await cli("umount", "b1");
      assert.ok(!(await ns.mounts()).some((e) => e.mountPoint === target));
      await cli("delete", "b1");
      await d.stop();

      // Once the namespace is gone, the saved path fails the start, named.
      await ns.stop();
      const gone = await startDaemon({ root, waitForSocket: false });
      assert.equal(await gone.exited, 1);
      assert.match(
        gone.output(),
        new RegExp(`Cannot start daemon: mount namespace "${saved.MountNamespaceFD}"`),
      );

      // --ignore-config-file without --mnt-ns: the daemon's own namespace again.
      d = await startDaemon({ root, args: ["--ignore-config-file"] });
      await d.stop();
      assert.equal(
        JSON.parse(await readFile(join(root, "convoy.cfg"), "utf8")).MountNamespaceFD,
        "",
      );
    } finally {
      await release(d);
    }
  });
});
