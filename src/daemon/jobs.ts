import { CancelledError, errorMessage, NotFoundError } from "../api/errors.ts";
import type { Progress } from "../api/driver.ts";
import { generateName } from "../util/names.ts";

/** A long operation as GET /v1/jobs reports it. */
export interface JobInfo {
  ID: string;
  Kind: string;
  Volume: string;
  Snapshot: string;
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

const KEEP_FINISHED_MS = 5 * 60_000;

/** Long operations (backups, verifies): progress, and cancellation by ID. */
export class Jobs {
  #jobs = new Map<
    string,
    { info: JobInfo; started: number; ctl: AbortController; ended?: number }
  >();

  /** Registers a job; `id` is the client's (so it can follow its own job) or generated. */
  start(kind: string, fields: { volume?: string; snapshot?: string; id?: string }): JobHandle {
    this.#prune();
    const id = fields.id && !this.#jobs.has(fields.id) ? fields.id : generateName("job", 16);
    const ctl = new AbortController();
    const started = Date.now();
    const info: JobInfo = {
      ID: id,
      Kind: kind,
      Volume: fields.volume ?? "",
      Snapshot: fields.snapshot ?? "",
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
    for (const [id, j] of this.#jobs) {
      if (j.ended && now - j.ended > KEEP_FINISHED_MS) this.#jobs.delete(id);
    }
  }
}
