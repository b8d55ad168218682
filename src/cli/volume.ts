import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { oneLine, ReportedFailure } from "./exit.ts";
import { checkName, iopsArg, normalizeBackupUrl, sizeArg } from "./parse.ts";
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
    .option("--driver <name>", "driver of the volume (default: the daemon's default driver)")
    .option("--size <size>", "size in bytes, or with a K, M, G or T suffix", sizeArg)
    .option("--backup <url>", "create the volume from this backup")
    .option("--s3-endpoint <url>", "custom S3 endpoint for --backup (env: CONVOY_S3_ENDPOINT)")
    .option("--id <id>", "driver volume ID of an existing volume (ebs, digitalocean)")
    .option("--type <type>", "volume type (ebs)")
    .option("--iops <n>", "provisioned IOPS (ebs)", iopsArg)
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
          PrepareForVM: opts.vm === true,
          Verbose: s.verbose,
          ...(jobID ? { JobID: jobID } : {}),
        });
      // A restore is a job: progress on a terminal, Ctrl-C cancels it.
      s.print(jobID ? await withProgress(s, jobID, create) : await create());
    });

  program
    .command("delete")
    .description("delete one or more volumes")
    .argument("<volumes...>", "volume names")
    .option("-r, --reference", "only remove convoy's reference, keep the data (driver-dependent)")
    .action(async (volumes, opts) => {
      let failed = 0;
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
          failed++;
          s.warn(`Error deleting ${volume}: ${oneLine(errorMessage(err))}`);
          if (s.globals.debug && err instanceof Error && err.stack) s.debug(err.stack);
        }
      }
      if (failed > 0) throw new ReportedFailure(`failed to delete ${failed} volume(s)`);
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
    .option("--driver", "show the raw driver information of each volume")
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
