/** Flags of `convoy daemon`, as the CLI parsed them; the daemon validates and merges them with convoy.cfg. */
export interface DaemonFlags {
  /** Default /var/lib/convoy. */
  root?: string;
  /** Default /var/run/convoy/convoy.sock. */
  socket?: string;
  /** Enabled drivers, the first is the default (default ["vfs"]). */
  drivers?: string[];
  /** Raw "key=value" entries, split on the first "=". */
  driverOpts?: string[];
  /** Extra plugin folders, searched after the bundled plugins and <root>/plugins. */
  plugins?: string[];
  /** Append JSON logs to this file instead of text to stderr. */
  log?: string;
  debug?: boolean;
  /**
   * `--mnt-ns`: the mount namespace file volumes are mounted in (e.g. /proc/1/ns/mnt); "" for
   * the daemon's own.
   */
  mntNs?: string;
  /** Timeout of each external command, e.g. "1m", "90s" (default 1m). */
  cmdTimeout?: string;
  ignoreDockerDelete?: boolean;
  createOnDockerMount?: boolean;
  /** Ignore a saved convoy.cfg and save the flags instead. */
  ignoreConfigFile?: boolean;
  /** Write the Docker plugin spec `<dockerSpecDir>/<dockerPluginName>.spec` (default true). */
  dockerSpec?: boolean;
  /**
   * Internal (tests): how long finished jobs stay listed, e.g. "2s" (default 10m); the CLI takes
   * it from the environment variable JOB_RETENTION_ENV.
   */
  jobRetention?: string;
  /** The name Docker knows this daemon by (default "convoy"). */
  dockerPluginName?: string;
  /** Take over a spec that names another live plugin instead of refusing to start. */
  replaceDockerSpec?: boolean;
  /** Default /etc/docker/plugins; tests set it through CONVOY_DOCKER_SPEC_DIR. */
  dockerSpecDir?: string;
}

/** Environment variable of DaemonFlags.jobRetention. */
export const JOB_RETENTION_ENV = "CONVOY_JOB_RETENTION";

export const DEFAULT_ROOT = "/var/lib/convoy";
export const DEFAULT_SOCKET = "/var/run/convoy/convoy.sock";
export const DEFAULT_CMD_TIMEOUT = "1m";
