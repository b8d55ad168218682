/**
 * The legacy Docker plugin spec (`/etc/docker/plugins/<name>.spec`, content `unix://<socket>`):
 * how Docker finds this daemon by plugin name. A spec that names another live plugin is never
 * overwritten silently.
 *
 * @module
 */
import { readFile, rm } from "node:fs/promises";
import { connectable } from "../runtime/listen.ts";
import { join, resolve } from "node:path";
import { ConflictError, errorMessage, InvalidArgumentError } from "../api/errors.ts";
import { atomicWriteFile } from "../util/fs.ts";
import type { Logger } from "../util/log.ts";

/** Where Docker reads legacy plugin specs. */
export const DOCKER_PLUGINS_DIR = "/etc/docker/plugins";
export const DEFAULT_PLUGIN_NAME = "convoy";
/** Test hook: another directory instead of /etc/docker/plugins. */
export const SPEC_DIR_ENV = "CONVOY_DOCKER_SPEC_DIR";

/** A Docker plugin name: a reference path component (lowercase letters and digits, separated by ".", "_", "__" or "-"). */
const PLUGIN_NAME = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;

/** Returns `name`, or throws InvalidArgumentError when Docker would not accept it as a plugin name. */
export function validatePluginName(name: string): string {
  if (name.length > 128 || !PLUGIN_NAME.test(name)) {
    throw new InvalidArgumentError(
      `Invalid --docker-plugin-name ${
        JSON.stringify(name)
      }: expected lowercase letters and digits separated by ".", "_" or "-" (at most 128 characters)`,
    );
  }
  return name;
}

/** The socket path of a spec's `unix://` address, or undefined for another kind of address. */
function unixPath(address: string): string | undefined {
  if (address.startsWith("unix://")) return address.slice("unix://".length);
  return address.startsWith("/") ? address : undefined;
}

/**
 * Resolves true when something accepts a connection at `address` (`unix://PATH` or
 * `tcp://HOST:PORT`) within `timeoutMs`.
 */
export function addressAlive(address: string, timeoutMs = 2000): Promise<boolean> {
  const path = unixPath(address);
  let target: { path: string } | { host: string; port: number };
  if (path !== undefined) target = { path };
  else {
    const m = /^(?:tcp|http):\/\/\[?([^\]/]+?)\]?:(\d+)\/?$/.exec(address);
    if (!m) return Promise.resolve(false);
    target = { host: m[1], port: Number(m[2]) };
  }
  return connectable(target, timeoutMs);
}

/** This daemon's spec file: checked at start, written once it listens, released on stop. */
export interface DockerSpec {
  path: string;
  /** Writes `unix://<socket>`; a failure is logged, not thrown (Docker is optional). */
  write(): Promise<void>;
  /** Removes the spec if it still names this daemon's socket. */
  release(): Promise<void>;
}

/**
 * Checks `<dir>/<name>.spec` before the daemon takes it. A missing spec, one naming this daemon's
 * socket, or one naming a socket nothing listens on is taken (logged). One naming a live socket
 * throws ConflictError naming the spec and that socket, unless `replace` is set (logged as a
 * warning).
 */
export async function claimDockerSpec(opts: {
  socket: string;
  log: Logger;
  name?: string;
  dir?: string;
  replace?: boolean;
}): Promise<DockerSpec> {
  const name = validatePluginName(opts.name ?? DEFAULT_PLUGIN_NAME);
  const dir = opts.dir ?? DOCKER_PLUGINS_DIR;
  const path = join(dir, `${name}.spec`);
  const ours = `unix://${resolve(opts.socket)}`;
  const old = (await readFile(path, "utf8").catch(() => "")).trim();
  const oldPath = unixPath(old);
  if (old && old !== ours && !(oldPath && resolve(oldPath) === resolve(opts.socket))) {
    if (await addressAlive(old)) {
      if (!opts.replace) {
        throw new ConflictError(
          `Cannot write Docker plugin spec "${path}": it names "${old}", where another plugin is running; stop it, choose another name with --docker-plugin-name, or take the name over with --replace-docker-spec`,
        );
      }
      opts.log.warn("replacing the docker plugin spec of a running plugin", {
        file: path,
        was: old,
      });
    } else {
      opts.log.info("replacing a docker plugin spec whose socket is dead", {
        file: path,
        was: old,
      });
    }
  }
  return {
    path,
    write: async () => {
      try {
        await atomicWriteFile(path, `${ours}\n`);
        opts.log.info("docker plugin spec written", { file: path, plugin: name });
      } catch (err) {
        opts.log.warn("cannot write docker plugin spec", { file: path, error: errorMessage(err) });
      }
    },
    release: async () => {
      const now = (await readFile(path, "utf8").catch(() => "")).trim();
      if (now === ours) await rm(path, { force: true }).catch(() => {});
    },
  };
}
