import { spawnSync } from "node:child_process";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { BackendError, ConvoyError, NotFoundError } from "../api/errors.ts";
import { DEFAULT_SOCKET } from "../daemon/options.ts";
import { runFake } from "./testing.ts";

describe("runCli() volume commands", () => {
  it("create sends every flag in Convoy's request body", async () => {
    const r = await runFake(
      [
        "create",
        "vol1",
        "--driver",
        "ebs",
        "--size",
        "10G",
        "--backup",
        "s3://b@us-east-1/p?backup=backup-1\\u0026volume=vol0",
        "--s3-endpoint",
        "http://minio:9000",
        "--id",
        "vol-123",
        "--type",
        "io1",
        "--iops",
        "300",
        "--vm",
      ],
      {
        respond: (call) =>
          call.path === "/v1/volumes/create"
            ? "vol1"
            : JSON.stringify({ Driver: "ebs", DriverInfo: { Size: String(10 * 1024 ** 3) } }),
      },
    );
    assert.equal(r.code, 0, r.stderr);
    const jobID = (r.calls[0].body as { JobID: string }).JobID;
    assert.match(jobID, /^job-[0-9a-f]{16}$/, "a restore is a job the CLI can follow and cancel");
    assert.deepEqual(r.calls.slice(0, 1), [{
      socket: DEFAULT_SOCKET,
      method: "POST",
      path: "/v1/volumes/create",
      body: {
        Name: "vol1",
        DriverName: "ebs",
        Size: 10 * 1024 ** 3,
        BackupURL: "s3://b@us-east-1/p?backup=backup-1&volume=vol0",
        Endpoint: "http://minio:9000",
        DriverVolumeID: "vol-123",
        Type: "io1",
        IOPS: 300,
        PrepareForVM: true,
        Verbose: false,
        JobID: jobID,
      },
    }]);
    assert.equal(r.stdout, "vol1\n");
    assert.equal(r.stderr, "");
  });

  it("create without a name sends defaults", async () => {
    const r = await runFake(["create"], { respond: () => "volume-0123456789abcdef" });
    assert.equal(r.code, 0);
    assert.deepEqual(r.calls[0].body, {
      Name: "",
      DriverName: "",
      Size: 0,
      BackupURL: "",
      Endpoint: "",
      DriverVolumeID: "",
      Type: "",
      IOPS: 0,
      PrepareForVM: false,
      Verbose: false,
    });
    assert.equal(r.stdout, "volume-0123456789abcdef\n");
  });

  it("create rejects an invalid name with exit 1 and no request", async () => {
    const r = await runFake(["create", "a/b"]);
    assert.equal(r.code, 1);
    assert.equal(r.calls.length, 0);
    assert.match(r.stderr, /^convoy: Invalid volume name "a\/b": [^\n]+\n$/);
  });

  it("create rejects a malformed --size, --iops or --throughput as a usage error", async () => {
    for (
      const argv of [["create", "--size", "10x"], ["create", "--iops", "abc"], [
        "create",
        "--size=-3",
      ], ["create", "--throughput", "fast"]]
    ) {
      const r = await runFake(argv);
      assert.equal(r.code, 2, argv.join(" "));
      assert.equal(r.calls.length, 0);
      assert.match(
        r.stderr,
        /^convoy: error: option '--(size|iops|throughput) <[a-z]+>' argument [^\n]+\n$/,
      );
    }
  });

  it("create --throughput sends Throughput (MiB/s)", async () => {
    const r = await runFake(["create", "t1", "--type", "gp3", "--throughput", "250"], {
      respond: () => "t1",
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((r.calls[0].body as { Throughput?: number }).Throughput, 250);
  });

  it("--verbose asks for JSON on create, mount, snapshot create and backup create", async () => {
    for (
      const argv of [
        ["create", "v1"],
        ["mount", "v1"],
        ["snapshot", "create", "v1"],
        ["backup", "create", "s1", "--dest", "vfs:///b"],
      ]
    ) {
      const r = await runFake(["--verbose", ...argv]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal((r.calls[0].body as Record<string, unknown>).Verbose, true, argv.join(" "));
    }
  });

  it("delete sends one request per volume and continues after a failure", async () => {
    const r = await runFake(["delete", "v1", "bad/name", "v2", "v3", "-r"], {
      respond: (call) => {
        if ((call.body as { VolumeName: string }).VolumeName === "v2") {
          throw new NotFoundError("Volume not found.");
        }
        return "";
      },
    });
    assert.equal(r.code, 1);
    assert.deepEqual(r.calls.map((c) => [c.method, c.path, c.body]), [
      ["DELETE", "/v1/volumes/", { VolumeName: "v1", ReferenceOnly: true }],
      ["DELETE", "/v1/volumes/", { VolumeName: "v2", ReferenceOnly: true }],
      ["DELETE", "/v1/volumes/", { VolumeName: "v3", ReferenceOnly: true }],
    ]);
    const lines = r.stderr.trimEnd().split("\n");
    assert.equal(lines.length, 2);
    assert.match(lines[0], /^convoy: Invalid volume name "bad\/name": [^\n]+$/);
    assert.equal(lines[1], "convoy: Volume not found.");
    // One Convoy {"Error": ...} on stdout, naming every failure, and no blank lines.
    assert.deepEqual(JSON.parse(r.stdout), {
      Error: `${lines[0].slice("convoy: ".length)}; Volume not found.`,
    });
  });

  it("delete of one missing volume fails like every other command", async () => {
    const message = 'Cannot delete volume "db1": volume "db1" does not exist';
    const r = await runFake(["delete", "db1"], {
      respond: () => {
        throw new NotFoundError(message);
      },
    });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, `convoy: ${message}\n`);
    assert.equal(r.stdout, JSON.stringify({ Error: message }, null, "\t") + "\n");
    const tty = await runFake(["delete", "db1"], {
      stdoutIsTTY: true,
      respond: () => {
        throw new NotFoundError(message);
      },
    });
    assert.equal(tty.stdout, "");
  });

  it("delete without --reference sends ReferenceOnly false and prints nothing", async () => {
    const r = await runFake(["delete", "v1"]);
    assert.equal(r.code, 0);
    assert.deepEqual(r.calls[0].body, { VolumeName: "v1", ReferenceOnly: false });
    assert.equal(r.stdout, "");
  });

  it("umount, snapshot delete and backup delete print nothing on success", async () => {
    for (
      const argv of [["umount", "v1"], ["snapshot", "delete", "s1"], [
        "backup",
        "delete",
        "vfs:///b?backup=backup-1&volume=v1",
      ]]
    ) {
      const r = await runFake(argv);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.calls.length, 1);
      assert.equal(r.stdout, "", argv.join(" "));
      assert.equal(r.stderr, "", argv.join(" "));
    }
  });

  it("create --size says when the driver rounded the size up or ignored it", async () => {
    const sized = (driver: string, size: string) => (call: { path: string }) =>
      call.path === "/v1/volumes/create"
        ? "v1"
        : JSON.stringify({ Driver: driver, DriverInfo: { Size: size } });
    const loop = await runFake(["create", "v1", "--size", "1"], {
      respond: sized("loop", "2097152"),
    });
    assert.equal(loop.code, 0);
    assert.equal(loop.stdout, "v1\n");
    assert.deepEqual(loop.calls[1], {
      socket: DEFAULT_SOCKET,
      method: "GET",
      path: "/v1/volumes/",
      body: { VolumeName: "v1" },
    });
    assert.equal(
      loop.stderr,
      'convoy: volume "v1" is 2097152 bytes (2 MiB), not the 1 asked for: the loop driver rounded the size up\n',
    );
    const vfs = await runFake(["create", "v1", "--size", "1G"], { respond: sized("vfs", "0") });
    assert.equal(vfs.code, 0);
    assert.equal(
      vfs.stderr,
      'convoy: --size 1073741824 was not applied: the vfs driver does not limit the size of volume "v1"\n',
    );
    const exact = await runFake(["create", "v1", "--size", "2M"], {
      respond: sized("loop", "2097152"),
    });
    assert.equal(exact.stderr, "");
    const verbose = await runFake(["--verbose", "create", "--size", "1"], {
      respond: (call) =>
        call.path === "/v1/volumes/create"
          ? JSON.stringify({ Name: "volume-1", Driver: "loop" })
          : JSON.stringify({ Driver: "loop", DriverInfo: { Size: "2097152" } }),
    });
    assert.deepEqual(verbose.calls[1].body, { VolumeName: "volume-1" });
    assert.match(verbose.stderr, /^convoy: volume "volume-1" is 2097152 bytes/);
    const unreported = await runFake(["create", "v1", "--size", "1G"], {
      respond: (call) =>
        call.path === "/v1/volumes/create"
          ? "v1"
          : JSON.stringify({ Driver: "my", DriverInfo: {} }),
    });
    assert.equal(
      unreported.stderr,
      'convoy: the my driver reports no size for volume "v1": --size 1073741824 may not have been applied\n',
    );
    const noSize = await runFake(["create", "v1"], { respond: sized("vfs", "0") });
    assert.equal(noSize.calls.length, 1, "no --size, no second request");
  });

  it("mount accepts flags before or after the volume name", async () => {
    for (
      const argv of [["mount", "v1", "--mountpoint", "/mnt/x"], [
        "mount",
        "--mountpoint=/mnt/x",
        "v1",
      ]]
    ) {
      const r = await runFake(argv, { respond: () => "/mnt/x" });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(r.calls[0], {
        socket: DEFAULT_SOCKET,
        method: "POST",
        path: "/v1/volumes/mount",
        body: { VolumeName: "v1", MountPoint: "/mnt/x", Verbose: false },
      });
      assert.equal(r.stdout, "/mnt/x\n");
    }
  });

  it("umount, inspect, list and info call their routes", async () => {
    const cases: [string[], string, string, unknown][] = [
      [["umount", "v1"], "POST", "/v1/volumes/umount", { VolumeName: "v1" }],
      [["inspect", "v1"], "GET", "/v1/volumes/", { VolumeName: "v1" }],
      [["list"], "GET", "/v1/volumes/list", undefined],
      [["list", "--driver"], "GET", "/v1/volumes/list?driver=1", undefined],
      [["info"], "GET", "/v1/info", undefined],
    ];
    for (const [argv, method, path, body] of cases) {
      const r = await runFake(argv, { respond: () => '{\n\t"a": "b"\n}' });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual([r.calls[0].method, r.calls[0].path, r.calls[0].body], [method, path, body]);
      assert.equal(r.stdout, '{\n\t"a": "b"\n}\n');
    }
  });

  it("name checks run for mount, umount and inspect", async () => {
    for (const cmd of ["mount", "umount", "inspect"]) {
      const r = await runFake([cmd, "x"]);
      assert.equal(r.code, 1, cmd);
      assert.equal(r.calls.length, 0);
      assert.match(r.stderr, /^convoy: Invalid volume name "x"/);
    }
  });

  it("--socket selects the socket the transport connects to", async () => {
    for (const argv of [["-s", "/tmp/a.sock", "info"], ["--socket=/tmp/a.sock", "info"]]) {
      const r = await runFake(argv);
      assert.equal(r.calls[0].socket, "/tmp/a.sock");
    }
  });
});

describe("runCli() snapshot commands", () => {
  it("snapshot create sends the volume and --name", async () => {
    const r = await runFake(["snapshot", "create", "v1", "--name", "s1"], { respond: () => "s1" });
    assert.equal(r.code, 0);
    assert.deepEqual(r.calls[0], {
      socket: DEFAULT_SOCKET,
      method: "POST",
      path: "/v1/snapshots/create",
      body: { Name: "s1", VolumeName: "v1", Verbose: false },
    });
    assert.equal(r.stdout, "s1\n");
  });

  it("snapshot create rejects an invalid --name with exit 1", async () => {
    const r = await runFake(["snapshot", "create", "v1", "--name", "s/1"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^convoy: Invalid snapshot name "s\/1"/);
  });

  it("snapshot delete and inspect send the snapshot name", async () => {
    const d = await runFake(["snapshot", "delete", "s1"]);
    assert.deepEqual([d.calls[0].method, d.calls[0].path, d.calls[0].body], [
      "DELETE",
      "/v1/snapshots/",
      { SnapshotName: "s1" },
    ]);
    assert.equal(d.stdout, "");
    const i = await runFake(["snapshot", "inspect", "s1"]);
    assert.deepEqual([i.calls[0].method, i.calls[0].path, i.calls[0].body], [
      "GET",
      "/v1/snapshots/",
      { SnapshotName: "s1" },
    ]);
  });
});

describe("runCli() backup commands", () => {
  const url = "s3://b@us-east-1/p?backup=backup-1&volume=v1";

  it("backup create takes --s3-endpoint before the sub-command and prints the URL unescaped", async () => {
    const r = await runFake(
      [
        "backup",
        "--s3-endpoint",
        "http://minio:9000",
        "create",
        "s1",
        "--dest",
        "s3://b@us-east-1/p",
      ],
      { respond: () => "s3://b@us-east-1/p?backup=backup-1\\u0026volume=v1" },
    );
    assert.equal(r.code, 0, r.stderr);
    const jobID = (r.calls[0].body as { JobID: string }).JobID;
    assert.match(jobID, /^job-[0-9a-f]{16}$/);
    assert.deepEqual(r.calls[0], {
      socket: DEFAULT_SOCKET,
      method: "POST",
      path: "/v1/backups/create",
      body: {
        URL: "s3://b@us-east-1/p",
        Endpoint: "http://minio:9000",
        SnapshotName: "s1",
        Verbose: false,
        Compression: "",
        JobID: jobID,
      },
    });
    assert.equal(r.stdout, url + "\n");
  });

  it("backup sub-commands accept their own --s3-endpoint, which wins", async () => {
    const r = await runFake([
      "backup",
      "--s3-endpoint",
      "http://a",
      "inspect",
      url,
      "--s3-endpoint",
      "http://b",
    ]);
    assert.deepEqual(r.calls[0].body, { URL: url, Endpoint: "http://b" });
  });

  it("CONVOY_S3_ENDPOINT is the default endpoint for s3:// URLs only", async () => {
    const env = { CONVOY_S3_ENDPOINT: "http://env:9000" };
    const s3 = await runFake(["backup", "delete", url], { env });
    assert.deepEqual([s3.calls[0].method, s3.calls[0].path, s3.calls[0].body], [
      "DELETE",
      "/v1/backups",
      { URL: url, Endpoint: "http://env:9000" },
    ]);
    const vfs = await runFake(["backup", "list", "vfs:///backups"], { env });
    assert.deepEqual(vfs.calls[0].body, {
      URL: "vfs:///backups",
      Endpoint: "",
      VolumeName: "",
      SnapshotName: "",
    });
    const create = await runFake(["create", "v1"], { env });
    assert.equal((create.calls[0].body as { Endpoint: string }).Endpoint, "");
  });

  it("backup list sends --volume-name and validates it", async () => {
    const r = await runFake(["backup", "list", "vfs:///b", "--volume-name", "v1"], {
      respond: () => '{\n\t"vfs:///b?backup=x\\u0026volume=v1": {}\n}',
    });
    assert.equal(r.code, 0);
    assert.deepEqual([r.calls[0].method, r.calls[0].path, r.calls[0].body], [
      "GET",
      "/v1/backups/list",
      { URL: "vfs:///b", Endpoint: "", VolumeName: "v1", SnapshotName: "" },
    ]);
    assert.equal(r.stdout, '{\n\t"vfs:///b?backup=x&volume=v1": {}\n}\n');
    const bad = await runFake(["backup", "list", "vfs:///b", "--volume-name", "a b"]);
    assert.equal(bad.code, 1);
    assert.equal(bad.calls.length, 0);
  });

  it("backup list prints every entry, warns about each with an Error, and exits 1", async () => {
    const body = JSON.stringify(
      {
        "vfs:///b?backup=x&volume=v1": { BackupName: "x", SnapshotName: "s" },
        "vfs:///b?backup=y&volume=v1": { BackupName: "y", Error: "Cannot parse: not valid JSON" },
      },
      null,
      "\t",
    );
    const r = await runFake(["backup", "list", "vfs:///b"], { respond: () => body });
    assert.equal(r.code, 1);
    assert.equal(r.stdout, body + "\n", "the JSON only, no error object after it");
    assert.equal(
      r.stderr,
      'convoy: backup "vfs:///b?backup=y&volume=v1" cannot be read: Cannot parse: not valid JSON\n',
    );
  });

  it("backup gc sends the destination, --volume-name and --dry-run", async () => {
    const r = await runFake(["backup", "gc", "vfs:///b", "--dry-run", "--volume-name", "v1"], {
      respond: () => '{"DryRun": true, "Volumes": {}}',
    });
    assert.equal(r.code, 0);
    assert.deepEqual([r.calls[0].method, r.calls[0].path, r.calls[0].body], [
      "POST",
      "/v1/backups/gc",
      { URL: "vfs:///b", Endpoint: "", VolumeName: "v1", DryRun: true },
    ]);
    const real = await runFake(["backup", "gc", "vfs:///b"], { respond: () => "{}" });
    assert.deepEqual(real.calls[0].body, {
      URL: "vfs:///b",
      Endpoint: "",
      VolumeName: "",
      DryRun: false,
    });
    assert.equal((await runFake(["backup", "gc"])).code, 2);
  });

  it("backup inspect accepts the escaped URL form", async () => {
    for (const input of [url.replace("&", "\\u0026"), url.replace("&", "u0026")]) {
      const r = await runFake(["backup", "inspect", input]);
      assert.deepEqual([r.calls[0].method, r.calls[0].path, r.calls[0].body], [
        "GET",
        "/v1/backups/inspect",
        { URL: url, Endpoint: "" },
      ]);
    }
  });

  it("backup create without --dest is a usage error naming --dest, with no request", async () => {
    const r = await runFake(["backup", "create", "s1"]);
    assert.equal(r.code, 2);
    assert.equal(r.calls.length, 0);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /^convoy: error: [^\n]*'--dest <url>'[^\n]*\n$/);
  });

  it("backup create validates the snapshot name", async () => {
    const r = await runFake(["backup", "create", "a", "--dest", "vfs:///b"]);
    assert.equal(r.code, 1);
    assert.equal(r.calls.length, 0);
  });
});

describe("runCli() daemon command", () => {
  it("daemon passes every flag to runDaemon", async () => {
    const r = await runFake([
      "-s",
      "/tmp/c.sock",
      "daemon",
      "--root",
      "/tmp/root",
      "--drivers=vfs",
      "--drivers",
      "ebs",
      "--driver-opts",
      "vfs.path=/srv/a=b",
      "--driver-opts=ebs.defaultvolumesize=1G",
      "--plugins",
      "/p1",
      "--plugins=/p2",
      "--log",
      "/tmp/log.json",
      "--debug",
      "--cmd-timeout",
      "2m",
      "--mnt-ns",
      "/host/proc/1/ns/mnt",
      "--ignore-docker-delete",
      "--create-on-docker-mount",
      "--ignore-config-file",
      "--no-docker-spec",
      "--docker-plugin-name",
      "convoy2",
      "--replace-docker-spec",
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.daemonFlags, [{
      root: "/tmp/root",
      socket: "/tmp/c.sock",
      drivers: ["vfs", "ebs"],
      driverOpts: ["vfs.path=/srv/a=b", "ebs.defaultvolumesize=1G"],
      plugins: ["/p1", "/p2"],
      log: "/tmp/log.json",
      debug: true,
      mntNs: "/host/proc/1/ns/mnt",
      cmdTimeout: "2m",
      ignoreDockerDelete: true,
      createOnDockerMount: true,
      ignoreConfigFile: true,
      dockerSpec: false,
      dockerPluginName: "convoy2",
      replaceDockerSpec: true,
      dockerSpecDir: undefined,
    }]);
  });

  it("daemon leaves unset flags undefined for the daemon's defaults", async () => {
    const r = await runFake(["daemon"]);
    assert.equal(r.code, 0);
    assert.deepEqual(r.daemonFlags, [{
      root: undefined,
      socket: DEFAULT_SOCKET,
      drivers: undefined,
      driverOpts: undefined,
      plugins: undefined,
      log: undefined,
      debug: false,
      mntNs: undefined,
      cmdTimeout: undefined,
      ignoreDockerDelete: undefined,
      createOnDockerMount: undefined,
      ignoreConfigFile: undefined,
      dockerSpec: true,
      dockerPluginName: undefined,
      replaceDockerSpec: undefined,
      dockerSpecDir: undefined,
    }]);
  });

  it("parseArgs() rejects --driver-opts without = or with an empty key", async () => {
    for (const opt of ["vfs.path", "=x"]) {
      const r = await runFake(["daemon", "--driver-opts", opt]);
      assert.equal(r.code, 2, opt);
      assert.equal(r.daemonFlags.length, 0);
      assert.match(r.stderr, /^convoy: error: option '--driver-opts <key=value>' argument/);
      assert.equal(r.stderr.split("\n").length, 2);
    }
  });

  it("daemon rejects a malformed --cmd-timeout as a usage error", async () => {
    const r = await runFake(["daemon", "--cmd-timeout", "soon"]);
    assert.equal(r.code, 2);
  });

  it("a failing daemon exits 1 with its message", async () => {
    const r = await runFake(["daemon"], {
      runDaemon: () => Promise.reject(new ConvoyError("Conflict", "Failed to lock /x/lock")),
    });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "convoy: Failed to lock /x/lock\n");
  });
});

describe("runCli() exit codes and messages", () => {
  it("usage errors exit 2 with one line on stderr", async () => {
    const cases: [string[], RegExp][] = [
      [["foo"], /^convoy: error: unknown command 'foo'/],
      [["create", "--foo"], /^convoy: error: unknown option '--foo'/],
      [["mount"], /^convoy: error: missing required argument 'volume'/],
      [["info", "extra"], /^convoy: error: too many arguments/],
      [
        ["backup", "create", "s1", "--dest"],
        /^convoy: error: option '--dest <url>' argument missing/,
      ],
    ];
    for (const [argv, re] of cases) {
      const r = await runFake(argv);
      assert.equal(r.code, 2, argv.join(" "));
      assert.match(r.stderr, re);
      assert.equal(r.stderr.split("\n").length, 2, r.stderr);
      assert.equal(r.calls.length, 0);
    }
  });

  it("no command shows the help on stderr and exits 2", async () => {
    const r = await runFake([]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /Usage: convoy/);
  });

  it("--help and --version exit 0", async () => {
    const h = await runFake(["--help"]);
    assert.equal(h.code, 0);
    assert.match(h.stdout, /Usage: convoy \[global options\] <command>/);
    const sub = await runFake(["backup", "create", "--help"]);
    assert.equal(sub.code, 0);
    assert.match(sub.stdout, /--dest <url>/);
    for (const flag of ["-v", "--version"]) {
      const v = await runFake([flag]);
      assert.equal(v.code, 0);
      assert.equal(v.stdout, "Convoy version v0.6.0\n");
    }
  });

  it("a failed operation exits 1 with one line and no stack trace", async () => {
    const respond = () => {
      throw new BackendError("Failed to execute: mount\noutput: busy\n");
    };
    const r = await runFake(["inspect", "v1"], { respond, stdoutIsTTY: true });
    assert.equal(r.code, 1);
    assert.equal(r.stderr, "convoy: Failed to execute: mount output: busy\n");
    assert.equal(r.stdout, "");
    // Not on a terminal, stdout also gets Convoy's tab-indented {"Error": ...}.
    const piped = await runFake(["inspect", "v1"], { respond });
    assert.equal(piped.code, 1);
    assert.equal(piped.stderr, r.stderr);
    assert.equal(piped.stdout, '{\n\t"Error": "Failed to execute: mount output: busy"\n}\n');
    // Usage errors (exit 2) and the daemon's failures write nothing on stdout.
    const usage = await runFake(["inspect"]);
    assert.equal(usage.code, 2);
    assert.equal(usage.stdout, "");
    const daemon = await runFake(["daemon"], {
      runDaemon: () => Promise.reject(new BackendError("Cannot start daemon: no")),
    });
    assert.equal(daemon.code, 1);
    assert.equal(daemon.stderr, "convoy: Cannot start daemon: no\n");
    assert.equal(daemon.stdout, "");
  });

  it("--debug adds requests and the stack trace on stderr", async () => {
    const r = await runFake(["-d", "inspect", "v1"], {
      respond: () => {
        throw new NotFoundError("Volume not found.");
      },
    });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /convoy: debug: GET \/v1\/volumes\/ \{"VolumeName":"v1"\}/);
    assert.match(r.stderr, /convoy: Volume not found\.\n/);
    assert.match(r.stderr, /NotFoundError: Volume not found\.\n\s+at /);
  });
});

describe("runCli() shell completion", () => {
  it("completion bash prints a script for convoy", async () => {
    const log = console.log;
    const r = await runFake(["completion", "bash"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /bash completion for convoy/);
    assert.match(r.stdout, /convoy complete --/);
    assert.equal(console.log, log);
  });

  it("completion bash says when bash-completion is missing instead of failing on TAB", async () => {
    const r = await runFake(["completion", "bash"]);
    const source = (prelude: string) =>
      spawnSync("bash", ["--norc", "--noprofile"], {
        input: `${prelude}\nsource /dev/stdin <<'CONVOY_EOF'\n${r.stdout}CONVOY_EOF\n` +
          `echo "rc=$?"; declare -F __convoy_complete | wc -l\n`,
        encoding: "utf8",
      });
    const without = source("");
    assert.equal(
      without.stderr,
      "convoy: completion needs the bash-completion package (apt-get install bash-completion)\n",
    );
    assert.match(without.stdout, /^rc=1\n0\n$/);
    const withIt = source("_get_comp_words_by_ref() { :; }");
    assert.equal(withIt.stderr, "");
    assert.equal(withIt.stdout, "rc=0\n1\n");
  });

  it("completion zsh and fish print scripts", async () => {
    for (const shell of ["zsh", "fish"]) {
      const r = await runFake(["completion", shell]);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /convoy/);
    }
  });

  it("completion rejects an unknown shell with exit 2", async () => {
    const r = await runFake(["completion", "tcsh"]);
    assert.equal(r.code, 2);
  });

  /** A daemon with volumes db1 (vfs, snapshot s1) and lv2 (loop), drivers vfs and loop. */
  const daemon = (call: { path: string }) =>
    call.path === "/v1/info"
      ? JSON.stringify({ General: { DriverList: ["vfs", "loop"] }, vfs: {}, loop: {} })
      : JSON.stringify({
        db1: { Name: "db1", Driver: "vfs", Snapshots: { s1: { Name: "s1" } } },
        lv2: { Name: "lv2", Driver: "loop", Snapshots: {} },
      });
  const values = (stdout: string) =>
    stdout.split("\n").filter((l) => l && !l.startsWith(":")).map((l) => l.split("\t")[0]);

  it("complete -- answers command, flag and --driver value completions", async () => {
    const cmds = await runFake(["complete", "--", "sn"]);
    assert.equal(cmds.code, 0);
    assert.match(cmds.stdout, /^snapshot\t/m);
    const flags = await runFake(["complete", "--", "create", "--dr"]);
    assert.match(flags.stdout, /^--driver\t/m);
    const drivers = await runFake(["complete", "--", "create", "--driver", ""], {
      respond: daemon,
    });
    assert.deepEqual(values(drivers.stdout), ["vfs", "loop"], "the daemon's drivers, no ebs");
    const bundled = await runFake(["complete", "--", "daemon", "--drivers", ""]);
    assert.deepEqual(values(bundled.stdout), ["vfs", "loop", "devicemapper"]);
    const sub = await runFake(["complete", "--", "backup", "l"]);
    assert.match(sub.stdout, /^list\t/m);
  });

  it("complete -- offers the daemon's volume and snapshot names where a command takes one", async () => {
    for (const argv of [["mount"], ["umount"], ["delete"], ["inspect"], ["snapshot", "create"]]) {
      const r = await runFake(["complete", "--", ...argv, ""], { respond: daemon });
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(values(r.stdout), ["db1", "lv2"], argv.join(" "));
    }
    const mount = await runFake(["complete", "--", "mount", "d"], { respond: daemon });
    assert.equal(mount.stdout, "db1\tvfs volume\n:4\n");
    for (const argv of [["snapshot", "delete"], ["snapshot", "inspect"], ["backup", "create"]]) {
      const r = await runFake(["complete", "--", ...argv, ""], { respond: daemon });
      assert.deepEqual(values(r.stdout), ["s1"], argv.join(" "));
    }
    const listed = await runFake([
      "complete",
      "--",
      "backup",
      "list",
      "vfs:///b",
      "--volume-name",
      "",
    ], {
      respond: daemon,
    });
    assert.deepEqual(values(listed.stdout), ["db1", "lv2"]);
  });

  it("complete -- asks the daemon on the words' --socket, and offers nothing when it fails", async () => {
    const r = await runFake(["complete", "--", "--socket", "/tmp/other.sock", "mount", ""], {
      respond: daemon,
    });
    assert.deepEqual(values(r.stdout), ["db1", "lv2"]);
    assert.deepEqual(new Set(r.calls.map((c) => c.socket)), new Set(["/tmp/other.sock"]));
    const down = await runFake(["complete", "--", "mount", ""], {
      respond: () => {
        throw new Error("cannot connect to convoy daemon");
      },
    });
    assert.equal(down.code, 0);
    assert.equal(down.stdout, ":4\n");
    assert.equal(down.stderr, "");
  });
});

describe("runCli() help", () => {
  it("create --help names no driver that is not loaded, and list --driver is not a filter", async () => {
    const create = await runFake(["create", "--help"]);
    assert.equal(create.code, 0);
    assert.doesNotMatch(create.stdout, /\b(ebs|digitalocean)\b/);
    assert.match(create.stdout, /convoy info/);
    const list = await runFake(["list", "--help"]);
    assert.match(
      list.stdout,
      /--driver +print only each volume's driver information \(not a filter\)/,
    );
  });
});
