import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createExec, type Exec, type ExecOptions } from "../runtime/exec.ts";
import { MOUNTINFO, readMounts } from "../util/mountinfo.ts";
import { startMountNamespace, tempDir } from "../../tests/helpers.ts";
import {
  checkMountNamespace,
  mountInfoPathOf,
  mountInfoSource,
  mountNamespace,
  nsenterExec,
} from "./mount_namespace.ts";

const exec = createExec({ timeoutMs: 30_000 });

/** An exec that only records what it is asked to run. */
function recordingExec(): Exec & { calls: Array<[string, string[], ExecOptions | undefined]> } {
  const calls: Array<[string, string[], ExecOptions | undefined]> = [];
  const fn: Exec = (cmd, args, opts) => {
    calls.push([cmd, args, opts]);
    return Promise.resolve({ stdout: "", stderr: "" });
  };
  return Object.assign(fn, { calls });
}

describe("mountInfoPathOf()", () => {
  it("maps <prefix>/proc/<pid>/ns/mnt to <prefix>/proc/<pid>/mountinfo", () => {
    assert.equal(mountInfoPathOf("/proc/1/ns/mnt"), "/proc/1/mountinfo");
    assert.equal(mountInfoPathOf("/host/proc/1/ns/mnt"), "/host/proc/1/mountinfo");
    assert.equal(mountInfoPathOf("/a/b/proc/4242/ns/mnt"), "/a/b/proc/4242/mountinfo");
    assert.equal(mountInfoPathOf("/proc/self/ns/mnt"), "/proc/self/mountinfo");
    assert.equal(mountInfoPathOf("/host//proc/7/./ns/mnt"), "/host/proc/7/mountinfo");
  });

  it("is undefined for any other path, so the table is read through nsenter", () => {
    for (const p of ["", "/run/ns/mnt", "/proc/1/ns/net", "/proc/x1/ns/mnt", "/proc/1/ns/mnt2"]) {
      assert.equal(mountInfoPathOf(p), undefined, p);
    }
    assert.equal(mountInfoPathOf("/var/run/docker/netns/proc/1/ns/mnt.bak"), undefined);
  });
});

describe("nsenterExec()", () => {
  it("runs the mount-point commands through nsenter and every other command as it is", async () => {
    const rec = recordingExec();
    const ns = nsenterExec(rec, "/host/proc/1/ns/mnt");
    for (const cmd of ["mount", "umount", "mkdir", "stat", "truncate", "mknod", "rm", "fsfreeze"]) {
      await ns(cmd, ["-x", "/p"], { timeoutMs: 5 });
    }
    await ns("/usr/bin/umount", ["/p"]);
    for (const cmd of ["mkfs.ext4", "losetup", "tar", "gzip", "cp", "blkid", "dmsetup"]) {
      await ns(cmd, ["/p"]);
    }
    await ns("mount", ["--bind", "a", "b"], { cwd: "/srv/x", timeoutMs: 7 });
    assert.deepEqual(rec.calls.map(([cmd, args]) => [cmd, ...args].join(" ")), [
      "nsenter --mount=/host/proc/1/ns/mnt mount -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt umount -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt mkdir -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt stat -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt truncate -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt mknod -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt rm -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt fsfreeze -x /p",
      "nsenter --mount=/host/proc/1/ns/mnt /usr/bin/umount /p",
      "mkfs.ext4 /p",
      "losetup /p",
      "tar /p",
      "gzip /p",
      "cp /p",
      "blkid /p",
      "dmsetup /p",
      "nsenter --mount=/host/proc/1/ns/mnt --wd=/srv/x mount --bind a b",
    ]);
    assert.deepEqual(rec.calls[0][2], { timeoutMs: 5 });
    // The working directory is set inside the namespace, not for nsenter itself.
    assert.deepEqual(rec.calls.at(-1)![2], { timeoutMs: 7 });
  });

  it("mountNamespace('') leaves exec and the mount table as they are", () => {
    const rec = recordingExec();
    const ns = mountNamespace("", rec);
    assert.equal(ns.exec, rec);
    assert.equal(ns.mountInfo, MOUNTINFO);
    assert.equal(mountNamespace("/proc/1/ns/mnt", rec).mountInfo, "/proc/1/mountinfo");
  });
});

describe("mount namespace (real, second namespace)", () => {
  it("mounts through nsenterExec() are seen in the namespace's table only", async () => {
    const { dir, cleanup } = await tempDir("convoy-mntns-");
    const ns = await startMountNamespace();
    try {
      const target = join(dir, "mnt");
      await mkdir(target);
      const inNs = nsenterExec(exec, ns.path);
      await inNs("mount", ["-t", "tmpfs", "convoy-test-tmpfs", target]);
      const own = await readMounts();
      assert.ok(!own.some((e) => e.mountPoint === target), "mounted in this namespace");
      const table = mountNamespace(ns.path, exec).mountInfo;
      assert.equal(table, `/proc/${ns.pid}/mountinfo`);
      const theirs = await readMounts(table);
      const found = theirs.filter((e) => e.mountPoint === target);
      // A tmpfs's device number is an anonymous one the kernel picks.
      assert.match(found[0]?.device ?? "", /^0:\d+$/);
      assert.deepEqual(found.map(({ device: _, ...e }) => e), [
        { mountPoint: target, fstype: "tmpfs", source: "convoy-test-tmpfs" },
      ]);

      // A path of no /proc/<pid>/ns/mnt form: the table is read through nsenter.
      const link = join(dir, "ns-link");
      await symlink(ns.path, link);
      const viaNsenter = mountInfoSource(link, exec);
      assert.equal(typeof viaNsenter, "function");
      const read = await readMounts(viaNsenter);
      assert.ok(read.some((e) => e.mountPoint === target && e.fstype === "tmpfs"));
      assert.ok(!(await readMounts()).some((e) => e.mountPoint === target));

      await inNs("umount", [target]);
      assert.ok(!(await readMounts(table)).some((e) => e.mountPoint === target));
    } finally {
      await ns.stop();
      await cleanup();
    }
  });

  it("checkMountNamespace() accepts a namespace and names the path it refuses", async () => {
    const { dir, cleanup } = await tempDir("convoy-mntns-");
    const ns = await startMountNamespace();
    try {
      await checkMountNamespace(mountNamespace(ns.path, exec), exec);
      await checkMountNamespace(mountNamespace("", exec), exec);

      const missing = join(dir, "no-such-ns");
      await assert.rejects(
        checkMountNamespace(mountNamespace(missing, exec), exec),
        (err: Error & { code?: string }) => {
          assert.equal(err.code, "InvalidArgument");
          assert.equal(
            err.message,
            `Cannot start daemon: mount namespace "${missing}" does not exist`,
          );
          return true;
        },
      );

      const notNs = join(dir, "plain-file");
      await writeFile(notNs, "");
      await assert.rejects(
        checkMountNamespace(mountNamespace(notNs, exec), exec),
        new RegExp(
          `^InvalidArgumentError: Cannot start daemon: mount namespace "${notNs}" cannot be entered: ` +
            `Failed to execute "nsenter --mount=${notNs} mount"`,
        ),
      );
    } finally {
      await ns.stop();
      await cleanup();
    }
  });
});
