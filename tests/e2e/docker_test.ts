/**
 * End-to-end: the real Docker engine (.ci/docker_setup.sh starts one) driving the real convoy
 * daemon through the volume plugin protocol, with the `docker` CLI, for the vfs driver and (when
 * plugins/loop exists and starts) the loop driver; then convoy as a managed (v2) plugin.
 * Skipped, with the reason printed, when no engine answers `docker info`.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { convoy, ok, REPO, tempDir } from "../helpers.ts";
import {
  docker,
  type DockerConvoy,
  dockerOk,
  dockerUnavailable,
  driverCases,
  IMAGE,
  inspectVolume,
  mountPoints,
  runFor,
  runId,
  startDockerConvoy,
} from "./docker_helpers.ts";

const unavailable = await dockerUnavailable();
const cases = unavailable ? [] : await driverCases();
if (unavailable) console.warn(`SKIPPED Docker end-to-end tests: ${unavailable}`);
for (const c of cases) {
  if (c.skip) console.warn(`SKIPPED Docker end-to-end tests of the ${c.name} driver: ${c.skip}`);
}

const RUN = runId();
const LABEL = `convoy-e2e=${RUN}`;

/** `docker run --rm` of a shell command with volume mounts; resolves to its stdout. */
function sh(volumes: string[], script: string, extra: string[] = []): Promise<string> {
  return dockerOk([
    "run",
    "--rm",
    "--network",
    "none",
    "--label",
    LABEL,
    ...extra,
    ...volumes.flatMap((v) => ["-v", v]),
    IMAGE,
    "sh",
    "-c",
    script,
  ]);
}

/** Starts a long-running container using `volume` at /data. */
function background(name: string, volume: string): Promise<string> {
  return dockerOk([
    "run",
    "-d",
    "--name",
    name,
    "--network",
    "none",
    "--label",
    LABEL,
    "-v",
    `${volume}:/data`,
    IMAGE,
    "sleep",
    "600",
  ]);
}

function exec(container: string, script: string): Promise<string> {
  return dockerOk(["exec", container, "sh", "-c", script]);
}

for (const driver of cases.length ? cases : [{ name: "vfs", daemonArgs: [] }]) {
  describe(`Docker engine with convoy (${driver.name} driver)`, {
    skip: unavailable ?? driver.skip ?? false,
  }, () => {
    let dc: DockerConvoy;
    let P: string;
    const names = (base: string) => `${base}-${driver.name}-${RUN}`;
    const cli = (args: string[]) => ok(args, { socket: dc.daemon.socket });

    /** Asserts the volume's mount state as Docker and the kernel (loop) see it. */
    async function assertMounted(volume: string, mounts: number): Promise<void> {
      const v = await inspectVolume(volume);
      assert.equal(v.Status?.mounts, mounts, `${volume}: ${JSON.stringify(v.Status)}`);
      const convoyMp = JSON.parse(await cli(["inspect", volume])).MountPoint as string;
      if (mounts) {
        assert.ok(v.Mountpoint, `${volume} is mounted`);
        assert.ok(convoyMp, `${volume} is mounted for convoy`);
      } else {
        assert.equal(v.Mountpoint, "", `${volume} is not mounted`);
        assert.equal(convoyMp, "", `${volume} is not mounted for convoy`);
      }
      if (driver.name === "loop" && convoyMp) {
        assert.ok((await mountPoints()).includes(convoyMp), `${convoyMp} is a mount`);
      }
    }

    before(async () => {
      dc = await startDockerConvoy(driver, { label: LABEL, args: ["--create-on-docker-mount"] });
      P = dc.plugin;
    });
    after(async () => {
      await dc?.cleanup();
    });

    it("creates volumes with -o options, lists and inspects them, rejects unknown options", async () => {
      const vol = names("opts");
      assert.equal(
        await dockerOk([
          "volume",
          "create",
          "-d",
          P,
          "-o",
          "size=64M",
          "-o",
          `driver=${driver.name}`,
          vol,
        ]),
        vol,
      );
      const ls = await dockerOk([
        "volume",
        "ls",
        "--filter",
        `driver=${P}`,
        "--format",
        "{{.Name}}",
      ]);
      assert.deepEqual(ls.split("\n"), [vol]);
      const v = await inspectVolume(vol);
      assert.equal(v.Driver, P);
      assert.equal(v.Mountpoint, "");
      assert.deepEqual(v.Options, { size: "64M", driver: driver.name });
      assert.equal(v.Status?.driver, driver.name);
      assert.deepEqual(v.Status?.snapshots, []);
      assert.equal(v.Status?.mounts, 0);
      const info = JSON.parse(await cli(["inspect", vol]));
      assert.equal(info.Driver, driver.name);

      const bad = await docker(["volume", "create", "-d", P, "-o", "colour=red", names("bad")]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /unknown option "colour" \(valid options: size, driver, backup/);
      const badSize = await docker(["volume", "create", "-d", P, "-o", "size=huge", names("bad")]);
      assert.notEqual(badSize.code, 0);
      assert.match(badSize.stderr, /Invalid size "huge"/);
      assert.equal((await convoy(["inspect", names("bad")], { socket: dc.daemon.socket })).code, 1);
      await dockerOk(["volume", "rm", vol]);
    });

    it("a container writes a file and a second container reads it", async () => {
      const vol = names("rw");
      await dockerOk(["volume", "create", "-d", P, vol]);
      await sh([`${vol}:/data`], "echo written-by-first > /data/hello");
      assert.equal(await sh([`${vol}:/data`], "cat /data/hello"), "written-by-first");
      await assertMounted(vol, 0);
      await dockerOk(["volume", "rm", vol]);
    });

    it("two containers share a volume: stopping one leaves it mounted for the other", async () => {
      const vol = names("shared");
      const [c1, c2] = [names("c1"), names("c2")];
      await dockerOk(["volume", "create", "-d", P, vol]);
      await background(c1, vol);
      await background(c2, vol);
      await exec(c1, "echo from-c1 > /data/shared");
      assert.equal(await exec(c2, "cat /data/shared"), "from-c1");
      await assertMounted(vol, 2);

      await dockerOk(["rm", "-f", c1]);
      await assertMounted(vol, 1);
      assert.equal(await exec(c2, "cat /data/shared"), "from-c1");
      await exec(c2, "echo from-c2 >> /data/shared");

      // docker cp mounts the volume again with the container's own mount ID, then unmounts it.
      const src = join(dc.dir, "copied.txt");
      await writeFile(src, "copied in\n");
      await dockerOk(["cp", src, `${c2}:/data/copied.txt`]);
      assert.equal(await exec(c2, "cat /data/copied.txt"), "copied in");
      await assertMounted(vol, 1);

      const refused = await docker(["volume", "rm", vol]);
      assert.notEqual(refused.code, 0, "a volume in use is not removed");
      assert.match(refused.stderr, /in use/);

      await dockerOk(["rm", "-f", c2]);
      await assertMounted(vol, 0);
      assert.equal(await sh([`${vol}:/data`], "cat /data/shared"), "from-c1\nfrom-c2");

      const data = driver.name === "vfs"
        ? join(dc.root, "vfs", "volumes", vol)
        : join(dc.root, "loop", "volumes", `${vol}.img`);
      assert.ok(existsSync(data), data);
      await dockerOk(["volume", "rm", vol]);
      assert.equal(
        await dockerOk([
          "volume",
          "ls",
          "-q",
          "--filter",
          `driver=${P}`,
          "--filter",
          `name=${vol}`,
        ]),
        "",
        "docker volume ls no longer shows it",
      );
      assert.equal((await convoy(["inspect", vol], { socket: dc.daemon.socket })).code, 1);
      // As in Convoy: a vfs folder stays (a reference-only delete), a block volume's data goes.
      assert.equal(existsSync(data), driver.name === "vfs", `${data} after docker volume rm`);
    });

    it("restarting the convoy daemon while a container runs loses nothing", async () => {
      const vol = names("restart");
      const c3 = names("c3");
      await dockerOk(["volume", "create", "-d", P, vol]);
      await background(c3, vol);
      await exec(c3, "echo before > /data/f");
      await dc.restart();
      await exec(c3, "echo during >> /data/f");
      assert.equal(await exec(c3, "cat /data/f"), "before\nduring");
      await assertMounted(vol, 1);
      const state = JSON.parse(await readFile(join(dc.root, "state.json"), "utf8"));
      assert.equal(state.Volumes[vol].MountIDs.length, 1);

      await dockerOk(["rm", "-f", c3]);
      await assertMounted(vol, 0);
      const after = JSON.parse(await readFile(join(dc.root, "state.json"), "utf8"));
      assert.deepEqual(after.Volumes[vol].MountIDs, []);
      assert.equal(await sh([`${vol}:/data`], "cat /data/f"), "before\nduring");
      await dockerOk(["volume", "rm", vol]);
    });

    it("backs up a snapshot of a volume in use; -o backup and -o snapshot restore it", async () => {
      const vol = names("bk");
      const c4 = names("c4");
      const snap = names("snap");
      const store = join(dc.dir, "backups");
      await mkdir(store);
      await dockerOk(["volume", "create", "-d", P, vol]);
      await background(c4, vol);
      await exec(c4, "echo version-1 > /data/doc");
      assert.equal(await cli(["snapshot", "create", vol, "--name", snap]), snap);
      await exec(c4, "echo version-2 > /data/doc");
      const url = await cli(["backup", "create", snap, "--dest", `vfs://${store}`]);
      assert.match(url, /^vfs:\/\/.*\?backup=backup-[0-9a-f]+&volume=/);
      assert.deepEqual((await inspectVolume(vol)).Status?.snapshots, [snap]);

      const fromBackup = names("frombackup");
      await dockerOk(["volume", "create", "-d", P, "-o", `backup=${url}`, fromBackup]);
      assert.equal(await sh([`${fromBackup}:/data`], "cat /data/doc"), "version-1");

      const fromSnap = names("fromsnap");
      await dockerOk(["volume", "create", "-d", P, "-o", `snapshot=${snap}`, fromSnap]);
      assert.equal(await sh([`${fromSnap}:/data`], "cat /data/doc"), "version-1");
      assert.equal(await exec(c4, "cat /data/doc"), "version-2", "the source is untouched");

      const missing = await docker([
        "volume",
        "create",
        "-d",
        P,
        "-o",
        "snapshot=nosuch",
        names("x"),
      ]);
      assert.match(missing.stderr, /snapshot "nosuch" does not exist/);

      await dockerOk(["rm", "-f", c4]);
      await dockerOk(["volume", "rm", vol, fromBackup, fromSnap]);
    });

    it("--volume-driver with an unknown volume name creates it (--create-on-docker-mount)", async () => {
      const vol = names("auto");
      const out = await sh([`${vol}:/data`], "echo auto > /data/a && cat /data/a", [
        "--volume-driver",
        P,
      ]);
      assert.equal(out, "auto");
      assert.equal(JSON.parse(await cli(["inspect", vol])).Name, vol);
      assert.equal((await inspectVolume(vol)).Driver, P);
      await dockerOk(["volume", "rm", vol]);
    });
  });
}

describe("convoy as a Docker managed (v2) plugin", { skip: unavailable ?? false }, () => {
  let dir: string;
  let cleanup: () => Promise<void>;
  const plugin = `cvt-managed-${RUN}`;
  let socket: string;

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-e2e-plugin-"));
  });
  after(async () => {
    const ids = (await docker(["ps", "-aq", "--filter", `label=${LABEL}`])).stdout.split("\n")
      .filter(Boolean);
    if (ids.length) await docker(["rm", "-f", ...ids]);
    const vols = (await docker(["volume", "ls", "-q", "--filter", `driver=${plugin}:latest`]))
      .stdout.split("\n").filter(Boolean);
    if (vols.length) await docker(["volume", "rm", "-f", ...vols]);
    await docker(["plugin", "disable", "-f", plugin]);
    await docker(["plugin", "rm", "-f", plugin]);
    await cleanup();
  });

  it("builds with `deno task docker-plugin`, installs offline, and serves volumes", async () => {
    const out = join(dir, "plugin");
    const bin = join(dir, "convoy");
    const built = await runFor(process.execPath, [
      "run",
      "-A",
      join(REPO, "tools", "docker_plugin.ts"),
      "--out",
      out,
      "--bin",
      bin,
    ], { timeoutMs: 120_000 });
    assert.equal(built.code, 0, built.stderr);
    assert.match((await runFor(bin, ["--version"])).stdout, /^Convoy version v/);
    const config = JSON.parse(await readFile(join(out, "config.json"), "utf8"));
    assert.deepEqual(config.interface, {
      types: ["docker.volumedriver/1.0"],
      socket: "convoy.sock",
    });
    assert.equal(config.propagatedMount, "/var/lib/convoy");
    assert.deepEqual(config.network, { type: "host" });
    assert.ok(config.linux.capabilities.includes("CAP_SYS_ADMIN"));

    await dockerOk(["plugin", "create", plugin, out], { timeoutMs: 120_000 });
    await dockerOk(["plugin", "enable", plugin]);
    const id = await dockerOk(["plugin", "inspect", plugin, "--format", "{{.Id}}"]);
    socket = `/run/docker/plugins/${id}/convoy.sock`;

    const vol = `managed-${RUN}`;
    await dockerOk(["volume", "create", "-d", plugin, "-o", "size=10M", vol]);
    await sh([`${vol}:/data`], "echo from-managed > /data/m");
    assert.equal(await sh([`${vol}:/data`], "cat /data/m"), "from-managed");
    const v = await inspectVolume(vol);
    assert.equal(v.Status?.driver, "vfs");

    // The host's convoy CLI drives the plugin's daemon. Backups go to the propagated mount,
    // which the host sees under Docker's root.
    const snap = `msnap-${RUN}`;
    assert.equal(await ok(["snapshot", "create", vol, "--name", snap], { socket }), snap);
    const dockerRoot = await dockerOk(["info", "--format", "{{.DockerRootDir}}"]);
    const hostBackups = join(dockerRoot, "plugins", id, "propagated-mount", "backups");
    await mkdir(hostBackups);
    const url = await ok(["backup", "create", snap, "--dest", "vfs:///var/lib/convoy/backups"], {
      socket,
    });
    assert.ok(existsSync(join(hostBackups, "convoy-objectstore")), "the host sees the backup");
    const restored = `mrestored-${RUN}`;
    await dockerOk(["volume", "create", "-d", plugin, "-o", `backup=${url}`, restored]);
    assert.equal(await sh([`${restored}:/data`], "cat /data/m"), "from-managed");
    const copy = `mcopy-${RUN}`;
    await dockerOk(["volume", "create", "-d", plugin, "-o", `snapshot=${snap}`, copy]);
    assert.equal(await sh([`${copy}:/data`], "cat /data/m"), "from-managed");
    await dockerOk(["volume", "rm", vol, restored, copy]);
  });

  it("takes daemon flags through `docker plugin set args`: the loop driver in the plugin", {
    skip: cases.find((c) => c.name === "loop")?.skip ??
      (readFileSync(join(REPO, "src", "plugins", "bundled.ts"), "utf8").includes("plugins/loop/")
        ? false
        : "the loop driver is not bundled into the binary"),
  }, async () => {
    await dockerOk(["plugin", "disable", plugin]);
    await dockerOk([
      "plugin",
      "set",
      plugin,
      "args=--drivers vfs --drivers loop --driver-opts loop.defaultvolumesize=64M",
    ]);
    await dockerOk(["plugin", "enable", plugin]);
    const vol = `mloop-${RUN}`;
    await dockerOk(["volume", "create", "-d", plugin, "-o", "driver=loop", vol]);
    assert.equal((await inspectVolume(vol)).Status?.driver, "loop");
    await sh([`${vol}:/data`], "echo on-a-loop-device > /data/l");
    assert.equal(await sh([`${vol}:/data`], "cat /data/l"), "on-a-loop-device");
    await dockerOk(["volume", "rm", vol]);
  });
});
