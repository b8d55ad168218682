import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import type { DaemonFlags } from "../daemon/options.ts";
import { DEFAULT_CMD_TIMEOUT, DEFAULT_ROOT, JOB_RETENTION_ENV } from "../daemon/options.ts";
import { SPEC_DIR_ENV, validatePluginName } from "../daemon/docker_spec.ts";
import { InvalidArgumentError as CommanderArgumentError } from "@commander-js/extra-typings";
import { errorMessage } from "../api/errors.ts";
import { collect, driverOptArg, durationArg } from "./parse.ts";
import type { Session } from "./session.ts";

const MNT_NS_HELP = `
--mnt-ns PATH (saved in convoy.cfg as MountNamespaceFD) is for a daemon in a
container. At start PATH must exist and "nsenter --mount=PATH mount" must work.
Then mount, umount, mkdir, stat, truncate, mknod, rm and fsfreeze run as
"nsenter --mount=PATH <cmd> ...", and mount state is read from that namespace
(<prefix>/proc/<pid>/mountinfo for <prefix>/proc/<pid>/ns/mnt). mkfs, losetup,
tar, cp and the daemon's own file operations (images, records, mkdir/rmdir of
mount points) stay in the daemon's namespace: --root and the parents of mount
points must be the same paths in both (bind-mount them at the same path).`;

/** `--docker-plugin-name`: a name Docker accepts, or a usage error. */
function pluginNameArg(value: string): string {
  try {
    return validatePluginName(value);
  } catch (err) {
    throw new CommanderArgumentError(errorMessage(err));
  }
}

/** `convoy daemon`: parses the flags into DaemonFlags and runs the daemon until it stops. */
export function addDaemonCommand(program: CommandUnknownOpts, s: Session): void {
  program
    .command("daemon")
    .description("start the convoy daemon (listens on --socket)")
    .option(
      "--root <dir>",
      `directory of convoy's configuration and state (default: ${DEFAULT_ROOT})`,
    )
    .option(
      "--drivers <name>",
      "enable a driver; repeatable, the first is the default (required on first start)",
      collect,
    )
    .option(
      "--driver-opts <key=value>",
      "driver option shared by all drivers; repeatable, e.g. vfs.path=/srv/nfs",
      driverOptArg,
    )
    .option("--plugins <dir>", "extra folder of driver plugins; repeatable", collect)
    .option("--log <file>", "append JSON logs to this file instead of text logs to stderr")
    .option("--debug", "log at debug level")
    .option(
      "--cmd-timeout <duration>",
      `timeout of each external command, e.g. 90s, 2m (default: ${DEFAULT_CMD_TIMEOUT})`,
      durationArg,
    )
    .option(
      "--mnt-ns <path>",
      "mount volumes in the mount namespace of this file, e.g. /host/proc/1/ns/mnt (see below)",
    )
    .option("--ignore-docker-delete", "make Docker's volume remove a no-op")
    .option("--create-on-docker-mount", "create a missing volume when Docker mounts it")
    .option("--ignore-config-file", "ignore a saved convoy.cfg and save these flags instead")
    .option(
      "--docker-plugin-name <name>",
      "the plugin name Docker finds this daemon by: writes /etc/docker/plugins/NAME.spec (default: convoy)",
      pluginNameArg,
    )
    .option(
      "--replace-docker-spec",
      "take over a plugin spec that names another running plugin (default: refuse to start)",
    )
    .option("--no-docker-spec", "do not write a Docker plugin spec")
    .addHelpText("after", MNT_NS_HELP)
    .action(async (opts) => {
      const g = s.globals;
      const flags: DaemonFlags = {
        root: opts.root,
        socket: g.socket,
        drivers: opts.drivers,
        driverOpts: opts.driverOpts,
        plugins: opts.plugins,
        log: opts.log,
        debug: opts.debug === true || g.debug,
        mntNs: opts.mntNs,
        cmdTimeout: opts.cmdTimeout,
        ignoreDockerDelete: opts.ignoreDockerDelete === true ? true : undefined,
        createOnDockerMount: opts.createOnDockerMount === true ? true : undefined,
        ignoreConfigFile: opts.ignoreConfigFile === true ? true : undefined,
        dockerSpec: opts.dockerSpec,
        dockerPluginName: opts.dockerPluginName,
        replaceDockerSpec: opts.replaceDockerSpec === true ? true : undefined,
        dockerSpecDir: process.env[SPEC_DIR_ENV] || undefined,
      };
      const retention = s.deps.env[JOB_RETENTION_ENV];
      if (retention) flags.jobRetention = retention;
      await s.deps.runDaemon(flags);
    });
}
