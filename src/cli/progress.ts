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

/**
 * One progress line: bar, percent, blocks, bytes, rate. A job that counts bytes, not blocks
 * (single-file backups and restores: Done equals Bytes), shows bytes done of total.
 */
export function progressLine(
  job: Pick<JobInfo, "Done" | "Total" | "Bytes" | "Rate">,
  width = 30,
): string {
  const frac = job.Total > 0 ? Math.min(1, job.Done / job.Total) : 0;
  const fill = Math.round(frac * width);
  const amount = job.Done === job.Bytes
    ? `${mb(job.Bytes)}/${mb(job.Total)}`
    : `${job.Done}/${job.Total} blocks ${mb(job.Bytes)}`;
  return `[${"#".repeat(fill)}${".".repeat(width - fill)}] ${Math.floor(frac * 100)}% ` +
    `${amount} ${mb(job.Rate)}/s`;
}

/** Exit code after a second Ctrl-C: 128 + SIGINT, as a shell reports it. */
const INTERRUPTED = 130;

/**
 * Runs `call` (a long request carrying `jobID`). Ctrl-C (SIGINT) cancels the job in the daemon,
 * whatever stdout and stderr are, and `call` then fails with the daemon's "cancelled"; a second
 * Ctrl-C stops waiting and exits. On a terminal it also polls GET /v1/jobs and draws the job's
 * progress on stderr.
 */
export async function withProgress(
  s: Session,
  jobID: string,
  call: () => Promise<string>,
): Promise<string> {
  let interrupts = 0;
  let drawn = false;
  let stop = false;
  const onInt = () => {
    if (++interrupts > 1) process.exit(INTERRUPTED);
    s.deps.io.stderr(`${drawn ? "\n" : ""}cancelling… (Ctrl-C again to stop waiting)\n`);
    drawn = false;
    void cancel();
  };
  process.on("SIGINT", onInt);
  const poll = s.deps.io.stderrIsTTY ? drawProgress() : Promise.resolve();
  try {
    return await call();
  } finally {
    stop = true;
    process.off("SIGINT", onInt);
    await poll;
    if (drawn) s.deps.io.stderr("\r\x1b[K");
  }

  /** Cancels the job; until the daemon has registered it (Ctrl-C came first), tries again. */
  async function cancel(): Promise<void> {
    while (!stop) {
      try {
        await s.call("DELETE", "/v1/jobs", { ID: jobID });
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  async function drawProgress(): Promise<void> {
    while (!stop) {
      await new Promise((r) => setTimeout(r, 500));
      if (stop) break;
      try {
        const jobs = JSON.parse(await s.call("GET", "/v1/jobs")) as JobInfo[];
        const job = jobs.find((j) => j.ID === jobID);
        if (job && job.Total > 0 && !stop && !interrupts) {
          s.deps.io.stderr(`\r${progressLine(job)}\x1b[K`);
          drawn = true;
        }
      } catch {
        // Progress is best effort; the call itself reports failures.
      }
    }
  }
}
