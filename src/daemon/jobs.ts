import { CancelledError, errorMessage, NotFoundError } from "../api/errors.ts";
import type { Progress } from "../api/driver.ts";
import { generateName } from "../util/names.ts";

/** A long operation as GET /v1/jobs reports it. */
export interface JobInfo {
  ID: string;
  Kind: string;
  Volume: string;
  Snapshot: string;
  /** The backup URL (restore, verify) or the destination (backup). */
  URL: string;
  State: "running" | "done" | "failed" | "cancelled";
  Done: number;
  Total: number;
  Bytes: number;
  /** Bytes per second since the start. */
  Rate: number;
  StartedAt: string;
  Error: string;
}

/** A running job's handle for the operation that reports through it. */
export interface JobHandle {
  id: string;
  signal: AbortSignal;
  progress(p: Progress): void;
  finish(err?: unknown): void;
}

/** How long a finished job stays listed. */
export const KEEP_FINISHED_MS = 10 * 60_000;
/** At most this many finished jobs stay listed (the most recent). */
export const KEEP_FINISHED_COUNT = 100;

/** Long operations (backups, restores, verifies): progress, and cancellation by ID. */
export class Jobs {
  #jobs = new Map<
    string,
    { info: JobInfo; started: number; ctl: AbortController; ended?: number }
  >();
  readonly #keepMs: number;
  readonly #keepCount: number;

  /** Finished jobs stay listed `keepFinishedMs`, at most the last `keepFinished` of them. */
  constructor(opts: { keepFinishedMs?: number; keepFinished?: number } = {}) {
    this.#keepMs = opts.keepFinishedMs ?? KEEP_FINISHED_MS;
    this.#keepCount = opts.keepFinished ?? KEEP_FINISHED_COUNT;
  }

  /** Registers a job; `id` is the client's (so it can follow its own job) or generated. */
  start(
    kind: string,
    fields: { volume?: string; snapshot?: string; url?: string; id?: string },
  ): JobHandle {
    this.#prune();
    const id = fields.id && !this.#jobs.has(fields.id) ? fields.id : generateName("job", 16);
    const ctl = new AbortController();
    const started = Date.now();
    const info: JobInfo = {
      ID: id,
      Kind: kind,
      Volume: fields.volume ?? "",
      Snapshot: fields.snapshot ?? "",
      URL: fields.url ?? "",
      State: "running",
      Done: 0,
      Total: 0,
      Bytes: 0,
      Rate: 0,
      StartedAt: new Date(started).toISOString(),
      Error: "",
    };
    const job = { info, started, ctl, ended: undefined as number | undefined };
    this.#jobs.set(id, job);
    return {
      id,
      signal: ctl.signal,
      progress: (p) => {
        info.Done = p.done;
        info.Total = p.total;
        info.Bytes = p.bytes;
        const secs = (Date.now() - started) / 1000;
        info.Rate = secs > 0 ? Math.round(p.bytes / secs) : 0;
      },
      finish: (err) => {
        job.ended = Date.now();
        if (err === undefined) info.State = "done";
        else {
          info.State = ctl.signal.aborted ? "cancelled" : "failed";
          info.Error = errorMessage(err);
        }
      },
    };
  }

  list(): JobInfo[] {
    this.#prune();
    return [...this.#jobs.values()].map((j) => ({ ...j.info }));
  }

  /** Cancels a running job; NotFoundError for an unknown ID. */
  cancel(id: string): void {
    const job = this.#jobs.get(id);
    if (!job) throw new NotFoundError(`Cannot cancel job "${id}": no such job`);
    job.ctl.abort(new CancelledError(`Job "${id}" cancelled`));
  }

  #prune(): void {
    const now = Date.now();
    const finished: [string, number][] = [];
    for (const [id, j] of this.#jobs) {
      if (j.ended === undefined) continue;
      if (now - j.ended >= this.#keepMs) this.#jobs.delete(id);
      else finished.push([id, j.ended]);
    }
    finished.sort((a, b) => b[1] - a[1]);
    for (const [id] of finished.slice(this.#keepCount)) this.#jobs.delete(id);
  }
}
