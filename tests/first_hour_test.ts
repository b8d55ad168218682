/**
 * A new user's first hour against the real daemon and CLI: quiet successes, one clear line per
 * failure, sizes that say what was done, a quiet log, and shell completion of the daemon's names.
 */
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import {
  convoy,
  DENO,
  ok,
  rawRequest,
  REPO,
  run,
  startDaemon,
  tempDir,
  type TestDaemon,
} from "./helpers.ts";

describe("first hour with the daemon and CLI", () => {
  let d: TestDaemon;
  let dir: string;
  let cleanup: () => Promise<void>;
  const cli = (args: string[]) => convoy(args, { socket: d.socket });
  const okc = (args: string[]) => ok(args, { socket: d.socket });
  /** The daemon's log lines so far. */
  const log = () => d.output().split("\n").filter(Boolean);

  before(async () => {
    ({ dir, cleanup } = await tempDir("convoy-first-hour-"));
    d = await startDaemon({
      root: join(dir, "root"),
      args: ["--drivers", "vfs", "--drivers", "loop"],
    });
  });
  after(async () => {
    // Detach the loop device of any loop volume left by a failed assertion.
    await cli(["umount", "fh-lv"]);
    await cli(["delete", "fh-lv"]);
    await d?.stop();
    await cleanup();
  });

  it("starts with a short log: no failed reflink probe command quoted", () => {
    const lines = log();
    assert.ok(lines.some((l) => /INFO convoy daemon listening/.test(l)), d.output());
    assert.deepEqual(lines.filter((l) => /cp --reflink|reflink-probe/.test(l)), []);
    assert.equal(lines.filter((l) => /Snapshots are/.test(l)).length, 1, d.output());
  });

  it("umount, delete, snapshot delete and backup delete print nothing on success", async () => {
    await okc(["create", "fh1"]);
    await okc(["mount", "fh1"]);
    await okc(["snapshot", "create", "fh1", "--name", "fh1-s"]);
    const store = join(dir, "backups");
    await mkdir(store);
    const url = await okc(["backup", "create", "fh1-s", "--dest", `vfs://${store}`]);
    for (
      const argv of [
        ["backup", "delete", url],
        ["snapshot", "delete", "fh1-s"],
        ["umount", "fh1"],
        ["delete", "fh1"],
      ]
    ) {
      const r = await cli(argv);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "", argv.join(" "));
      assert.equal(r.stderr, "", argv.join(" "));
    }
  });

  it('a failed delete prints convoy: on stderr and {"Error"} on stdout', async () => {
    const r = await cli(["delete", "db1"]);
    assert.equal(r.code, 1);
    const message = 'Cannot delete volume "db1": volume "db1" does not exist';
    assert.equal(r.stderr, `convoy: ${message}\n`);
    assert.deepEqual(JSON.parse(r.stdout), { Error: message });
  });

  it("backup create without --dest is a usage error naming --dest", async () => {
    const r = await cli(["backup", "create", "fh-none"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^convoy: error: .*--dest/);
  });

  it("backup list of a volume without backups says so, naming the store", async () => {
    const store = join(dir, "empty-store");
    await mkdir(store);
    const r = await cli(["backup", "list", `vfs://${store}`, "--volume-name", "lv3"]);
    assert.equal(r.code, 1);
    const message = `Cannot list backups: volume "lv3" has no backups in "vfs://${store}"`;
    assert.equal(r.stderr, `convoy: ${message}\n`);
    assert.deepEqual(JSON.parse(r.stdout), { Error: message });
  });

  it("create --size says what the driver did with the size", async () => {
    const loop = await cli(["create", "fh-lv", "--driver", "loop", "--size", "1"]);
    assert.equal(loop.code, 0, loop.stderr);
    assert.equal(loop.stdout, "fh-lv\n");
    assert.equal(
      loop.stderr,
      'convoy: volume "fh-lv" is 2097152 bytes (2 MiB), not the 1 asked for: the loop driver rounded the size up\n',
    );
    assert.ok(
      log().some((l) => /WARN Size of volume "fh-lv" rounded up from 1 to 2097152/.test(l)),
    );
    await okc(["delete", "fh-lv"]);

    const vfs = await cli(["create", "fh-v", "--size", "1G"]);
    assert.equal(vfs.code, 0, vfs.stderr);
    assert.equal(
      vfs.stderr,
      'convoy: --size 1073741824 was not applied: the vfs driver does not limit the size of volume "fh-v"\n',
    );
    await okc(["delete", "fh-v"]);
  });

  it("Docker's Get of an unknown volume is not a warning; an ignored -o size is", async () => {
    const docker = async (endpoint: string, body: unknown) =>
      JSON.parse((await rawRequest(d.socket, "POST", endpoint, JSON.stringify(body))).body);
    const get = await docker("/VolumeDriver.Get", { Name: "fh-docker" });
    assert.match(get.Err, /does not exist/);
    const created = await docker("/VolumeDriver.Create", {
      Name: "fh-docker",
      Opts: { size: "1G" },
    });
    assert.equal(created.Err, "");
    const warnings = log().filter((l) => / WARN /.test(l));
    assert.deepEqual(warnings.filter((l) => /VolumeDriver\.Get/.test(l)), []);
    assert.ok(
      warnings.some((l) => /Size of volume "fh-docker" not applied: vfs sizes only --vm/.test(l)),
      d.output(),
    );
    await okc(["delete", "fh-docker"]);
  });

  it("completes volume, snapshot and driver names from the running daemon", async () => {
    await okc(["create", "fh-c1"]);
    await okc(["snapshot", "create", "fh-c1", "--name", "fh-c1-s"]);
    const complete = async (...words: string[]) => {
      const out = await ok(["complete", "--", "--socket", d.socket, ...words]);
      return out.split("\n").filter((l) => !l.startsWith(":")).map((l) => l.split("\t")[0]);
    };
    assert.deepEqual(await complete("mount", "fh-"), ["fh-c1"]);
    assert.deepEqual(await complete("snapshot", "delete", ""), ["fh-c1-s"]);
    assert.deepEqual(await complete("create", "--driver", ""), ["vfs", "loop"]);
    await okc(["snapshot", "delete", "fh-c1-s"]);
    await okc(["delete", "fh-c1"]);
  });
});

describe("the README's CLI commands", () => {
  it("run the CLI through deno task -q, which prints no Task header", async () => {
    const readme = await readFile(join(REPO, "README.md"), "utf8");
    assert.deepEqual(readme.match(/deno task convoy\b/g), null, "use `deno task -q convoy`");
    assert.match(readme, /npx deno task -q convoy <command>/);
    const config = join(REPO, "deno.json");
    const r = await run(DENO, ["task", "--config", config, "-q", "convoy", "--version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Convoy version v\S+\n$/);
    assert.equal(r.stderr, "");
  });
});
