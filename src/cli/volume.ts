import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { oneLine, ReportedFailure } from "./exit.ts";
import { checkName, iopsArg, normalizeBackupUrl, sizeArg, throughputArg } from "./parse.ts";
import type { Session } from "./session.ts";
import { withProgress } from "./progress.ts";
import { errorMessage } from "../api/errors.ts";
import { generateName } from "../util/names.ts";

/** Volume commands: info, create, delete, mount, umount, list, inspect. */
export function addVolumeCommands(program: CommandUnknownOpts, s: Session): void {
  program
    .command("info")
    .description("show the daemon configuration and driver information")
    .action(async () => {
      s.print(await s.call("GET", "/v1/info"));
    });

  program
    .command("create")
    .description("create a new volume")
    .argument("[name]", "volume name (generated when omitted)")
    .option(
      "--driver <name>",
      "a driver the daemon loaded (`convoy info` lists them; default: the daemon's first)",
    )
    .option("--size <size>", "size in bytes, or with a K, M, G or T suffix", sizeArg)
    .option("--backup <url>", "create the volume from this backup")
    .option("--s3-endpoint <url>", "custom S3 endpoint for --backup (env: CONVOY_S3_ENDPOINT)")
    .option("--id <id>", "driver volume ID of an existing volume (for drivers that adopt one)")
    .option("--type <type>", "volume type (for drivers that have types)")
    .option("--iops <n>", "provisioned IOPS (for drivers that take it)", iopsArg)
    .option("--throughput <n>", "provisioned MiB/s (for drivers that take it)", throughputArg)
    .option("--vm", "prepare the volume for use by a virtual machine")
    .action(async (name, opts) => {
      const volume = name ?? "";
      if (volume !== "") checkName(volume, "volume");
      const backup = normalizeBackupUrl(opts.backup ?? "");
      const jobID = backup ? generateName("job", 16) : "";
      const create = () =>
        s.call("POST", "/v1/volumes/create", {
          Name: volume,
          DriverName: opts.driver ?? "",
          Size: opts.size ?? 0,
          BackupURL: backup,
          Endpoint: s.endpointFor(backup, opts.s3Endpoint),
          DriverVolumeID: opts.id ?? "",
          Type: opts.type ?? "",
          IOPS: opts.iops ?? 0,
          ...(opts.throughput ? { Throughput: opts.throughput } : {}),
          PrepareForVM: opts.vm === true,
          Verbose: s.verbose,
          ...(jobID ? { JobID: jobID } : {}),
        });
      // A restore is a job: progress on a terminal, Ctrl-C cancels it.
      const answer = jobID ? await withProgress(s, jobID, create) : await create();
      s.print(answer);
      if (opts.size) await reportSize(s, { answer, requested: opts.size });
    });

  program
    .command("delete")
    .description("delete one or more volumes")
    .argument("<volumes...>", "volume names")
    .option("-r, --reference", "only remove convoy's reference, keep the data (driver-dependent)")
    .action(async (volumes, opts) => {
      const failures: string[] = [];
      for (const volume of volumes) {
        try {
          checkName(volume, "volume");
          s.print(
            await s.call("DELETE", "/v1/volumes/", {
              VolumeName: volume,
              ReferenceOnly: opts.reference === true,
            }),
          );
        } catch (err) {
          // Each failure is reported at once and the next volume is tried, as in Convoy.
          const message = oneLine(errorMessage(err));
          failures.push(message);
          s.warn(`convoy: ${message}`);
          if (s.globals.debug && err instanceof Error && err.stack) s.debug(err.stack);
        }
      }
      if (failures.length > 0) {
        throw new ReportedFailure(failures.join("; "), { stdoutJSON: true });
      }
    });

  program
    .command("mount")
    .description("mount a volume")
    .argument("<volume>", "volume name")
    .option("--mountpoint <path>", "where to mount it (default: the driver's mount directory)")
    .action(async (volume, opts) => {
      checkName(volume, "volume");
      s.print(
        await s.call("POST", "/v1/volumes/mount", {
          VolumeName: volume,
          MountPoint: opts.mountpoint ?? "",
          Verbose: s.verbose,
        }),
      );
    });

  program
    .command("umount")
    .description("unmount a volume")
    .argument("<volume>", "volume name")
    .action(async (volume) => {
      checkName(volume, "volume");
      s.print(await s.call("POST", "/v1/volumes/umount", { VolumeName: volume }));
    });

  program
    .command("list")
    .description("list all volumes")
    .option("--driver", "print only each volume's driver information (not a filter)")
    .action(async (opts) => {
      s.print(await s.call("GET", opts.driver ? "/v1/volumes/list?driver=1" : "/v1/volumes/list"));
    });

  program
    .command("inspect")
    .description("show a volume's details")
    .argument("<volume>", "volume name")
    .action(async (volume) => {
      checkName(volume, "volume");
      s.print(await s.call("GET", "/v1/volumes/", { VolumeName: volume }));
    });
}

const BINARY_UNITS = [["TiB", 2 ** 40], ["GiB", 2 ** 30], ["MiB", 2 ** 20], [
  "KiB",
  2 ** 10,
]] as const;

/** `n` bytes in the largest binary unit that divides it, e.g. "2 MiB"; plain bytes otherwise. */
function humanSize(n: number): string {
  for (const [unit, factor] of BINARY_UNITS) {
    if (n >= factor && n % factor === 0) return `${n / factor} ${unit}`;
  }
  return `${n} bytes`;
}

/**
 * Says on stderr when the created volume's size is not the `--size` asked for (a driver rounded
 * it up, or does not size volumes at all). Best effort: if the volume cannot be inspected,
 * nothing is said.
 */
async function reportSize(s: Session, o: { answer: string; requested: number }): Promise<void> {
  try {
    const name = s.verbose ? (JSON.parse(o.answer) as { Name: string }).Name : o.answer.trim();
    const info = JSON.parse(await s.call("GET", "/v1/volumes/", { VolumeName: name })) as {
      Driver?: string;
      DriverInfo?: Record<string, string>;
    };
    const driver = info.Driver ?? "";
    if (info.DriverInfo?.Size === undefined) {
      s.warn(
        `convoy: the ${driver} driver reports no size for volume "${name}": --size ${o.requested} may not have been applied`,
      );
      return;
    }
    const size = Number(info.DriverInfo.Size);
    if (!Number.isSafeInteger(size) || size === o.requested) return;
    if (size === 0) {
      s.warn(
        `convoy: --size ${o.requested} was not applied: the ${driver} driver does not limit the size of volume "${name}"`,
      );
    } else {
      s.warn(
        `convoy: volume "${name}" is ${size} bytes (${
          humanSize(size)
        }), not the ${o.requested} asked for: the ${driver} driver ${
          size > o.requested ? "rounded the size up" : "chose the size"
        }`,
      );
    }
  } catch {
    // The volume was created; a failed look at its size is not the create's failure.
  }
}
