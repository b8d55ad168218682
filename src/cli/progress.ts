import type { Session } from "./session.ts";

interface JobInfo {
  ID: string;
  State: string;
  Done: number;
  Total: number;
  Bytes: number;
  Rate: number;
}

function mb(n: number): string {
  return `${(n / 1e6).toFixed(n >= 1e9 ? 0 : 1)} MB`;
}

/** One progress line: bar, percent, blocks, bytes, rate. */
export function progressLine(
  job: Pick<JobInfo, "Done" | "Total" | "Bytes" | "Rate">,
  width = 30,
): string {
  const frac = job.Total > 0 ? Math.min(1, job.Done / job.Total) : 0;
  const fill = Math.round(frac * width);
  return `[${"#".repeat(fill)}${".".repeat(width - fill)}] ${Math.floor(frac * 100)}% ` +
    `${job.Done}/${job.Total} blocks ${mb(job.Bytes)} ${mb(job.Rate)}/s`;
}

/**
 * Runs `call` (a long request carrying `jobID`); on a terminal it polls GET /v1/jobs meanwhile
 * and draws the job's progress on stderr, and Ctrl-C cancels the job in the daemon.
 */
export async function withProgress(
  s: Session,
  jobID: string,
  call: () => Promise<string>,
): Promise<string> {
  if (!s.deps.io.stderrIsTTY) return await call();
  let drawn = false;
  let stop = false;
  const poll = (async () => {
    while (!stop) {
      await new Promise((r) => setTimeout(r, 500));
      if (stop) break;
      try {
        const jobs = JSON.parse(await s.call("GET", "/v1/jobs")) as JobInfo[];
        const job = jobs.find((j) => j.ID === jobID);
        if (job && job.Total > 0 && !stop) {
          s.deps.io.stderr(`\r${progressLine(job)}\x1b[K`);
          drawn = true;
        }
      } catch {
        // Progress is best effort; the call itself reports failures.
      }
    }
  })();
  const onInt = () => {
    s.deps.io.stderr("\ncancelling…\n");
    s.call("DELETE", "/v1/jobs", { ID: jobID }).catch(() => {});
  };
  process.on("SIGINT", onInt);
  try {
    return await call();
  } finally {
    stop = true;
    process.off("SIGINT", onInt);
    await poll;
    if (drawn) s.deps.io.stderr("\r\x1b[K");
  }
}
