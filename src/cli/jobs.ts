import type { CommandUnknownOpts } from "@commander-js/extra-typings";
import type { Session } from "./session.ts";

/** `convoy jobs [cancel ID]`: long operations running in the daemon. */
export function addJobCommands(program: CommandUnknownOpts, s: Session): void {
  const jobs = program
    .command("jobs")
    .description("list long operations (backups, restores, verifies) with their progress")
    .action(async () => {
      s.print(await s.call("GET", "/v1/jobs"));
    });
  jobs
    .command("cancel")
    .description("cancel a running job")
    .argument("<id>", "job ID, as `convoy jobs` shows it")
    .action(async (id) => {
      s.print(await s.call("DELETE", "/v1/jobs", { ID: id }));
    });
}
