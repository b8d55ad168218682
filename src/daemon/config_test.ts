import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Logger } from "../util/log.ts";
import { parseDriverOpts, resolveConfig, saveConfig } from "./config.ts";

function recordingLogger(lines: string[]): Logger {
  const l: Logger = {
    debug() {},
    info() {},
    warn: (m) => lines.push(m),
    error: (m) => lines.push(m),
    child: () => l,
  };
  return l;
}

describe("config", () => {
  it("parseDriverOpts() splits on the first '=' only and rejects entries without one", () => {
    assert.deepEqual(parseDriverOpts(["vfs.path=/a=b", "x="]), { "vfs.path": "/a=b", x: "" });
    assert.throws(
      () => parseDriverOpts(["novalue"]),
      /Invalid --driver-opts "novalue": expected key=value/,
    );
    assert.throws(() => parseDriverOpts(["=v"]), /expected key=value/);
  });

  it("resolveConfig() defaults to the vfs driver with no flags", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-cfg-"));
    try {
      const r = await resolveConfig({ root }, recordingLogger([]));
      assert.deepEqual(r.config.DriverList, ["vfs"]);
      assert.equal(r.config.DefaultDriver, "vfs");
      assert.equal(r.cmdTimeoutMs, 60_000);
      assert.equal(r.socket, "/var/run/convoy/convoy.sock");
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("resolveConfig() keeps the saved config and warns about each conflicting flag", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-cfg-"));
    try {
      const first = await resolveConfig(
        { root, drivers: ["vfs"], driverOpts: ["vfs.path=/a"] },
        recordingLogger([]),
      );
      await saveConfig(first.config);
      const warnings: string[] = [];
      const again = await resolveConfig(
        { root, drivers: ["vfs", "loop"], driverOpts: ["vfs.path=/b"], cmdTimeout: "5m" },
        recordingLogger(warnings),
      );
      assert.deepEqual(again.config.DriverList, ["vfs"]);
      assert.equal(again.config.DriverOpts["vfs.path"], "/a");
      assert.equal(warnings.length, 3);
      assert.match(warnings.join("\n"), /--drivers vfs,loop/);
      assert.match(warnings.join("\n"), /--driver-opts vfs.path=\/b/);
      assert.match(warnings.join("\n"), /--cmd-timeout 5m/);
      const replaced = await resolveConfig(
        { root, drivers: ["vfs", "loop"], ignoreConfigFile: true },
        recordingLogger([]),
      );
      assert.deepEqual(replaced.config.DriverList, ["vfs", "loop"]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("resolveConfig() uses 1m for a saved CmdTimeout that does not parse, and warns", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-cfg-"));
    try {
      const first = await resolveConfig({ root }, recordingLogger([]));
      for (const bad of ["", "soon", "0s"]) {
        await saveConfig({ ...first.config, CmdTimeout: bad });
        const warnings: string[] = [];
        const r = await resolveConfig({ root }, recordingLogger(warnings));
        assert.equal(r.cmdTimeoutMs, 60_000, bad);
        assert.equal(r.config.CmdTimeout, "1m");
        assert.equal(warnings.length, 1);
        assert.match(warnings[0], new RegExp(`Ignoring CmdTimeout "${bad}" in .*convoy\\.cfg`));
      }
      // A flag's bad value is still refused: the user typed it.
      await assert.rejects(
        resolveConfig({ root, cmdTimeout: "soon", ignoreConfigFile: true }, recordingLogger([])),
        /soon/,
      );
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("resolveConfig() saves --mnt-ns as MountNamespaceFD; the saved one wins over the flag", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-cfg-"));
    try {
      const none = await resolveConfig({ root }, recordingLogger([]));
      assert.equal(none.config.MountNamespaceFD, "");
      const first = await resolveConfig(
        { root, mntNs: "/host/proc/1/ns/mnt" },
        recordingLogger([]),
      );
      assert.equal(first.config.MountNamespaceFD, "/host/proc/1/ns/mnt");
      await saveConfig(first.config);
      assert.equal(
        JSON.parse(await readFile(join(root, "convoy.cfg"), "utf8")).MountNamespaceFD,
        "/host/proc/1/ns/mnt",
      );
      const warnings: string[] = [];
      const again = await resolveConfig({ root }, recordingLogger(warnings));
      assert.equal(again.config.MountNamespaceFD, "/host/proc/1/ns/mnt");
      assert.deepEqual(warnings, []);
      const other = await resolveConfig(
        { root, mntNs: "/proc/9/ns/mnt" },
        recordingLogger(warnings),
      );
      assert.equal(other.config.MountNamespaceFD, "/host/proc/1/ns/mnt");
      assert.deepEqual(warnings, [
        `Ignoring flag --mnt-ns /proc/9/ns/mnt (saved: /host/proc/1/ns/mnt): ${
          join(root, "convoy.cfg")
        } is used; restart with --ignore-config-file to replace it`,
      ]);
      const replaced = await resolveConfig({ root, ignoreConfigFile: true }, recordingLogger([]));
      assert.equal(replaced.config.MountNamespaceFD, "");
      const relative = await resolveConfig(
        { root, mntNs: "ns/mnt", ignoreConfigFile: true },
        recordingLogger([]),
      );
      assert.equal(relative.config.MountNamespaceFD, join(process.cwd(), "ns/mnt"));
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
