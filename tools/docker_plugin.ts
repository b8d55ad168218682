/**
 * Builds Convoy as a Docker managed (v2) volume plugin: `dist/docker-plugin/{config.json,rootfs}`,
 * ready for `docker plugin create` with no registry and no network.
 *
 *   npx deno task docker-plugin                    build dist/convoy (bun) and the plugin folder
 *   npx deno task docker-plugin --skip-build       reuse dist/convoy
 *   npx deno task docker-plugin --install convoy   also (re)install and enable it as "convoy"
 *   npx deno task docker-plugin --out DIR          build the folder elsewhere
 *   npx deno task docker-plugin --bin FILE         build (or reuse) the binary at FILE, not dist/convoy
 *
 * The rootfs holds the single binary (`bun build --compile`), the host's own copies of the
 * commands convoy and its bundled drivers run (HOST_TOOLS; those the host lacks are skipped) with
 * the shared libraries `ldd` names, and a static busybox (Debian's busybox-static) for a shell and
 * as a fallback.
 * Uses node APIs only, so it runs under deno, node (with a TS loader) and bun.
 * @module
 */
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";

const REPO = dirname(dirname(fileURLToPath(import.meta.url)));

/** Commands convoy and its drivers execute; each is taken from the host when it has it. */
export const HOST_TOOLS = [
  "cp",
  "tar",
  "gzip",
  "mount",
  "umount",
  "sync",
  "losetup",
  "blkid",
  "blockdev",
  "blkdiscard",
  "fsfreeze",
  "mkfs.ext4",
  "mkfs.xfs",
  "e2fsck",
  "dmsetup",
  "thin_check",
  "thin_delta",
];

/** Where the daemon keeps its root inside the plugin; Docker sees mounts below it (rshared). */
export const PLUGIN_ROOT = "/var/lib/convoy";
/** The plugin's socket name; Docker creates it in /run/docker/plugins. */
export const PLUGIN_SOCKET = "convoy.sock";

/** The managed plugin's config.json (Docker's "Plugin Config Version 1 of Plugin V2"). */
export function pluginConfig(): Record<string, unknown> {
  return {
    description: "Convoy: Docker volumes with snapshots and backups",
    documentation: "https://github.com/rancher/convoy",
    entrypoint: [
      "/usr/bin/convoy",
      "--socket",
      `/run/docker/plugins/${PLUGIN_SOCKET}`,
      "daemon",
      "--root",
      PLUGIN_ROOT,
      "--no-docker-spec",
      // The plugin's settings (args) are the configuration; a saved convoy.cfg never overrides them.
      "--ignore-config-file",
    ],
    workdir: "/",
    env: [
      {
        name: "PATH",
        description: "",
        settable: [],
        value: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      },
    ],
    args: {
      name: "args",
      description:
        "More `convoy daemon` flags, e.g. --create-on-docker-mount --ignore-docker-delete",
      settable: ["value"],
      value: [],
    },
    interface: { types: ["docker.volumedriver/1.0"], socket: PLUGIN_SOCKET },
    network: { type: "host" },
    propagatedMount: PLUGIN_ROOT,
    mounts: [
      {
        name: "dev",
        description: "host devices, for loop devices",
        source: "/dev",
        destination: "/dev",
        type: "bind",
        options: ["rbind"],
      },
    ],
    linux: {
      capabilities: ["CAP_SYS_ADMIN", "CAP_MKNOD"],
      allowAllDevices: true,
      devices: null,
    },
  };
}

function log(msg: string): void {
  process.stderr.write(`docker-plugin: ${msg}\n`);
}

function which(cmd: string): string | undefined {
  const r = spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" });
  const p = r.stdout.trim();
  return r.status === 0 && p.startsWith("/") ? p : undefined;
}

/** Shared libraries (and the loader) that `ldd` lists for a dynamic executable. */
export function sharedLibraries(file: string): string[] {
  const r = spawnSync("ldd", [file], { encoding: "utf8" });
  if (r.status !== 0 || /not a dynamic executable/.test(r.stdout + r.stderr)) return [];
  const libs: string[] = [];
  for (const line of r.stdout.split("\n")) {
    const m = /=>\s*(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

/** Copies `src` (symlinks followed) to the same absolute path under `rootfs`, keeping the mode. */
function copyInto(rootfs: string, src: string, dest = src): void {
  const target = join(rootfs, dest);
  if (existsSync(target)) return;
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(realpathSync(src), target);
  chmodSync(target, statSync(realpathSync(src)).mode & 0o7777);
}

/** Copies an executable and every library it needs. */
function copyWithLibraries(rootfs: string, path: string): void {
  copyInto(rootfs, path);
  for (const lib of sharedLibraries(path)) copyInto(rootfs, lib);
}

function buildBinary(out: string): void {
  const bun = join(REPO, "node_modules", ".bin", "bun");
  const [cmd, pre] = existsSync(bun) ? [bun, []] : ["npx", ["bun"]];
  log(`bun build --compile --minify src/bin.ts --outfile ${out}`);
  execFileSync(cmd, [
    ...pre,
    "build",
    "--compile",
    "--minify",
    join(REPO, "src", "bin.ts"),
    "--outfile",
    out,
  ], { stdio: ["ignore", "ignore", "inherit"], cwd: REPO });
}

function checkBinary(bin: string): string {
  const version = execFileSync(bin, ["--version"], { encoding: "utf8" }).trim();
  if (!/^Convoy version v/.test(version)) throw new Error(`${bin} --version printed "${version}"`);
  return version;
}

/** Builds `<out>/config.json` and `<out>/rootfs` around the binary `bin`. */
export function buildPluginDir(out: string, bin: string): void {
  const rootfs = join(out, "rootfs");
  rmSync(out, { recursive: true, force: true });
  for (const d of ["bin", "etc", "tmp", "proc", "sys", "dev", "run/docker/plugins", "usr/bin"]) {
    mkdirSync(join(rootfs, d), { recursive: true });
  }
  mkdirSync(join(rootfs, PLUGIN_ROOT.slice(1)), { recursive: true });
  chmodSync(join(rootfs, "tmp"), 0o1777);
  copyInto(rootfs, bin, "/usr/bin/convoy");
  for (const lib of sharedLibraries(bin)) copyInto(rootfs, lib);

  const missing: string[] = [];
  for (const tool of HOST_TOOLS) {
    const path = which(tool);
    if (!path) {
      missing.push(tool);
      continue;
    }
    copyWithLibraries(rootfs, path);
  }
  for (const conf of ["/etc/mke2fs.conf"]) if (existsSync(conf)) copyInto(rootfs, conf);

  // A static busybox: a shell and a fallback for every tool the host lacks.
  const busybox = ["/bin/busybox", "/usr/bin/busybox"].find((p) => existsSync(p));
  if (busybox && sharedLibraries(busybox).length === 0) {
    copyInto(rootfs, busybox, "/bin/busybox");
    const applets = execFileSync(busybox, ["--list"], { encoding: "utf8" }).split("\n")
      .filter(Boolean);
    for (const a of applets) {
      const link = join(rootfs, "bin", a);
      if (!existsSync(link)) symlinkSync("busybox", link);
    }
  } else {
    log("no static busybox (apt-get install busybox-static): the plugin gets no shell");
  }
  const stillMissing = missing.filter((t) => !existsSync(join(rootfs, "bin", t)));
  if (stillMissing.length) log(`not in the rootfs: ${stillMissing.join(", ")}`);
  writeFileSync(join(rootfs, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\n");
  writeFileSync(join(rootfs, "etc", "group"), "root:x:0:\n");
  writeFileSync(join(out, "config.json"), JSON.stringify(pluginConfig(), null, 2) + "\n");
}

function docker(args: string[], opts: { check?: boolean } = {}): string {
  const cli = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : "docker";
  const r = spawnSync(cli, args, { encoding: "utf8" });
  if (opts.check !== false && r.status !== 0) {
    throw new Error(`docker ${args.join(" ")} failed: ${(r.stderr || r.stdout).trim()}`);
  }
  return r.stdout.trim();
}

/** Replaces plugin `name` with the one in `dir` and enables it. */
export function installPlugin(name: string, dir: string, args: string[] = []): void {
  docker(["plugin", "rm", "-f", name], { check: false });
  log(`docker plugin create ${name} ${dir}`);
  docker(["plugin", "create", name, dir]);
  if (args.length) docker(["plugin", "set", name, `args=${args.join(" ")}`]);
  docker(["plugin", "enable", name]);
  log(`enabled: docker volume create -d ${name} NAME`);
}

function main(argv: string[]): void {
  let out = join(REPO, "dist", "docker-plugin");
  let skipBuild = false;
  let install: string | undefined;
  let bin = join(REPO, "dist", "convoy");
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--skip-build") skipBuild = true;
    else if (a === "--out") out = resolve(argv[++i]);
    else if (a === "--install") install = argv[++i];
    else if (a === "--bin") bin = resolve(argv[++i]);
    else if (a === "-h" || a === "--help") {
      process.stdout.write(
        "usage: deno task docker-plugin [--skip-build] [--out DIR] [--bin FILE] [--install NAME]\n",
      );
      return;
    } else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!skipBuild || !existsSync(bin)) buildBinary(bin);
  log(`${bin}: ${checkBinary(bin)}`);
  buildPluginDir(out, bin);
  const size = Number(execFileSync("du", ["-sm", out], { encoding: "utf8" }).split("\t")[0]);
  log(`built ${out} (${size} MB): docker plugin create convoy ${out}`);
  if (install) installPlugin(install, out);
}

if (import.meta.main ?? process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    main(process.argv.slice(2));
  } catch (err) {
    log(`error: ${(err as Error).message}`);
    process.exit(1);
  }
}
