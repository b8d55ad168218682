import { type CommandUnknownOpts, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import { BackendError } from "../api/errors.ts";
import { generateName } from "../util/names.ts";
import { withProgress } from "./progress.ts";
import { checkName, normalizeBackupUrl, unescapeAmpersands } from "./parse.ts";
import type { Session } from "./session.ts";
import { oneLine, ReportedFailure } from "./exit.ts";

function sampleArg(v: string): number {
  const n = Number(v);
  if (!(n > 0 && n <= 1)) throw new InvalidArgumentError("expected a fraction in (0, 1], e.g. 0.1");
  return n;
}

const ENDPOINT_HELP = "custom S3 endpoint, e.g. http://minio:9000 (env: CONVOY_S3_ENDPOINT)";

/** `convoy backup [--s3-endpoint URL] create|verify|delete|list|gc|inspect`. */
export function addBackupCommands(program: CommandUnknownOpts, s: Session): void {
  const backup = program
    .command("backup")
    .description("manage backups of snapshots in an object store (s3://, vfs://)")
    .option("--s3-endpoint <url>", ENDPOINT_HELP);

  /** The endpoint for `url`: the sub-command's flag, else the parent's, else the env var. */
  const endpoint = (url: string, own: string | undefined): string =>
    s.endpointFor(url, own ?? backup.opts().s3Endpoint);
  const print = (body: string) => s.print(unescapeAmpersands(body));

  backup
    .command("create")
    .description("back up a snapshot; prints the backup URL")
    .argument("<snapshot>", "snapshot name")
    .requiredOption("--dest <url>", "destination: s3://bucket@region/path/ or vfs:///path/")
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .addOption(
      new Option(
        "--compression <codec>",
        "block compression of a new store (gzip: readable by Convoy v0.5.2)",
      )
        .choices(["gzip", "zstd"] as const),
    )
    .action(async (snapshot, opts) => {
      checkName(snapshot, "snapshot");
      const dest = normalizeBackupUrl(opts.dest);
      const jobID = generateName("job", 16);
      print(
        await withProgress(s, jobID, () =>
          s.call("POST", "/v1/backups/create", {
            URL: dest,
            Endpoint: endpoint(dest, opts.s3Endpoint),
            SnapshotName: snapshot,
            Verbose: s.verbose,
            Compression: opts.compression ?? "",
            JobID: jobID,
          })),
      );
    });

  backup
    .command("verify")
    .description("check that every block of a backup is present and sound, without restoring it")
    .argument("<url>", "backup URL")
    .option(
      "--sample <fraction>",
      "check only this random fraction of the blocks, e.g. 0.1",
      sampleArg,
    )
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .action(async (url, opts) => {
      const backupUrl = normalizeBackupUrl(url);
      const jobID = generateName("job", 16);
      const body = await withProgress(s, jobID, () =>
        s.call("POST", "/v1/backups/verify", {
          URL: backupUrl,
          Endpoint: endpoint(backupUrl, opts.s3Endpoint),
          Sample: opts.sample,
          JobID: jobID,
        }));
      print(body);
      const report = JSON.parse(body) as { problems: string[] };
      if (report.problems.length > 0) {
        throw new BackendError(
          `Backup "${backupUrl}" is damaged: ${report.problems.length} problem(s), first: ${
            report.problems[0]
          }`,
        );
      }
    });

  backup
    .command("delete")
    .description("delete a backup")
    .argument("<url>", "backup URL")
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .action(async (url, opts) => {
      const backupUrl = normalizeBackupUrl(url);
      print(
        await s.call("DELETE", "/v1/backups", {
          URL: backupUrl,
          Endpoint: endpoint(backupUrl, opts.s3Endpoint),
        }),
      );
    });

  backup
    .command("list")
    .description("list the backups in a destination")
    .argument("<dest>", "destination URL: s3://bucket@region/path/ or vfs:///path/")
    .option("--volume-name <name>", "only the backups of this volume")
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .action(async (dest, opts) => {
      const volume = opts.volumeName ?? "";
      if (volume !== "") checkName(volume, "volume");
      const url = normalizeBackupUrl(dest);
      const body = await s.call("GET", "/v1/backups/list", {
        URL: url,
        Endpoint: endpoint(url, opts.s3Endpoint),
        VolumeName: volume,
        SnapshotName: "",
      });
      print(body);
      // Entries with an Error are records that cannot be read: listed, warned about, exit 1.
      const broken = Object.entries(JSON.parse(body) as Record<string, Record<string, string>>)
        .filter(([, info]) => typeof info?.Error === "string");
      for (const [backupURL, info] of broken) {
        s.warn(`convoy: backup "${backupURL}" cannot be read: ${oneLine(info.Error)}`);
      }
      if (broken.length > 0) {
        throw new ReportedFailure(`${broken.length} backup record(s) cannot be read`);
      }
    });

  backup
    .command("gc")
    .description(
      "remove blocks no backup references and stale temporary objects; prints what was removed",
    )
    .argument("<dest>", "destination URL: s3://bucket@region/path/ or vfs:///path/")
    .option("--volume-name <name>", "only the blocks of this volume")
    .option("--dry-run", "report what would be removed, remove nothing")
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .action(async (dest, opts) => {
      const volume = opts.volumeName ?? "";
      if (volume !== "") checkName(volume, "volume");
      const url = normalizeBackupUrl(dest);
      print(
        await s.call("POST", "/v1/backups/gc", {
          URL: url,
          Endpoint: endpoint(url, opts.s3Endpoint),
          VolumeName: volume,
          DryRun: !!opts.dryRun,
        }),
      );
    });

  backup
    .command("inspect")
    .description("show a backup's details")
    .argument("<url>", "backup URL")
    .option("--s3-endpoint <url>", ENDPOINT_HELP)
    .action(async (url, opts) => {
      const backupUrl = normalizeBackupUrl(url);
      print(
        await s.call("GET", "/v1/backups/inspect", {
          URL: backupUrl,
          Endpoint: endpoint(backupUrl, opts.s3Endpoint),
        }),
      );
    });
}
