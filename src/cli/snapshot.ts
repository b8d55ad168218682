import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import { checkName } from "./parse.ts";
import type { Session } from "./session.ts";

/** `convoy snapshot create|delete|inspect`. */
export function addSnapshotCommands(program: CommandUnknownOpts, s: Session): void {
  const snapshot = program.command("snapshot").description("manage snapshots of volumes");

  snapshot
    .command("create")
    .description("take a snapshot of a volume")
    .argument("<volume>", "volume name")
    .option("--name <name>", "snapshot name (generated when omitted)")
    .action(async (volume, opts) => {
      checkName(volume, "volume");
      const name = opts.name ?? "";
      if (name !== "") checkName(name, "snapshot");
      s.print(
        await s.call("POST", "/v1/snapshots/create", {
          Name: name,
          VolumeName: volume,
          Verbose: s.verbose,
        }),
      );
    });

  snapshot
    .command("delete")
    .description("delete a snapshot")
    .argument("<snapshot>", "snapshot name")
    .action(async (name) => {
      checkName(name, "snapshot");
      s.print(await s.call("DELETE", "/v1/snapshots/", { SnapshotName: name }));
    });

  snapshot
    .command("inspect")
    .description("show a snapshot's details")
    .argument("<snapshot>", "snapshot name")
    .action(async (name) => {
      checkName(name, "snapshot");
      s.print(await s.call("GET", "/v1/snapshots/", { SnapshotName: name }));
    });
}
