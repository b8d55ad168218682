import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "../util/log.ts";
import { claimDockerSpec, validatePluginName } from "./docker_spec.ts";

function recordingLogger(lines: string[]): Logger {
  const l: Logger = {
    debug() {},
    info: (m) => lines.push(`INFO ${m}`),
    warn: (m) => lines.push(`WARN ${m}`),
    error: (m) => lines.push(`ERROR ${m}`),
    child: () => l,
  };
  return l;
}

function listen(path: string): Promise<Server> {
  return new Promise((done, fail) => {
    const srv = createServer((c) => c.destroy());
    srv.once("error", fail);
    srv.listen(path, () => done(srv));
  });
}

describe("docker plugin spec", () => {
  let dir: string;
  let other: Server;
  let otherSock: string;
  const mine = () => join(dir, "mine.sock");

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "convoy-spec-"));
    otherSock = join(dir, "other.sock");
    other = await listen(otherSock);
  });
  after(async () => {
    await new Promise((r) => other.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it("claimDockerSpec() writes <dir>/convoy.spec naming its socket when there is none", async () => {
    const spec = await claimDockerSpec({ socket: mine(), dir, log: recordingLogger([]) });
    assert.equal(spec.path, join(dir, "convoy.spec"));
    await spec.write();
    assert.equal(await readFile(spec.path, "utf8"), `unix://${mine()}\n`);
    await spec.release();
    await assert.rejects(readFile(spec.path), { code: "ENOENT" });
  });

  it("claimDockerSpec() refuses a spec naming another live socket, naming both and the flags", async () => {
    const path = join(dir, "convoy.spec");
    await writeFile(path, `unix://${otherSock}\n`);
    await assert.rejects(
      claimDockerSpec({ socket: mine(), dir, log: recordingLogger([]) }),
      (err: Error & { code?: string }) => {
        assert.equal(err.code, "Conflict");
        assert.equal(err.message.includes("\n"), false);
        assert.ok(err.message.includes(`"${path}"`), err.message);
        assert.ok(err.message.includes(`"unix://${otherSock}"`), err.message);
        assert.match(err.message, /--replace-docker-spec/);
        assert.match(err.message, /--docker-plugin-name/);
        return true;
      },
    );
    assert.equal(await readFile(path, "utf8"), `unix://${otherSock}\n`, "left as it was");
  });

  it("claimDockerSpec() takes over a live plugin's spec with replace, and warns", async () => {
    const path = join(dir, "convoy.spec");
    await writeFile(path, `unix://${otherSock}\n`);
    const lines: string[] = [];
    const spec = await claimDockerSpec({
      socket: mine(),
      dir,
      replace: true,
      log: recordingLogger(lines),
    });
    await spec.write();
    assert.equal(await readFile(path, "utf8"), `unix://${mine()}\n`);
    assert.match(lines.join("\n"), /WARN replacing the docker plugin spec of a running plugin/);
  });

  it("claimDockerSpec() silently replaces a spec whose socket is dead, or its own", async () => {
    const path = join(dir, "convoy.spec");
    for (const old of [`unix://${join(dir, "gone.sock")}`, `unix://${mine()}`, mine()]) {
      await writeFile(path, `${old}\n`);
      const lines: string[] = [];
      const spec = await claimDockerSpec({ socket: mine(), dir, log: recordingLogger(lines) });
      await spec.write();
      assert.equal(await readFile(path, "utf8"), `unix://${mine()}\n`, old);
      assert.equal(lines.some((l) => l.startsWith("WARN")), false, lines.join("\n"));
    }
  });

  it("claimDockerSpec() uses the plugin name given, and another name does not conflict", async () => {
    await writeFile(join(dir, "convoy.spec"), `unix://${otherSock}\n`);
    const spec = await claimDockerSpec({
      socket: mine(),
      dir,
      name: "convoy-b",
      log: recordingLogger([]),
    });
    await spec.write();
    assert.equal(await readFile(join(dir, "convoy-b.spec"), "utf8"), `unix://${mine()}\n`);
    assert.equal(await readFile(join(dir, "convoy.spec"), "utf8"), `unix://${otherSock}\n`);
  });

  it("release() leaves a spec that another daemon has taken over since", async () => {
    const spec = await claimDockerSpec({
      socket: mine(),
      dir,
      name: "convoy-c",
      log: recordingLogger([]),
    });
    await spec.write();
    await writeFile(spec.path, `unix://${otherSock}\n`);
    await spec.release();
    assert.equal(await readFile(spec.path, "utf8"), `unix://${otherSock}\n`);
  });

  it("validatePluginName() accepts Docker plugin names and rejects the rest", () => {
    for (const ok of ["convoy", "convoy2", "my-convoy", "a.b_c", "a__b", "a--b"]) {
      assert.equal(validatePluginName(ok), ok);
    }
    for (const bad of ["", "Convoy", "../x", "a/b", "-a", "a-", "a b", "a..b", "x".repeat(129)]) {
      assert.throws(() => validatePluginName(bad), /Invalid --docker-plugin-name/, bad);
    }
  });
});
