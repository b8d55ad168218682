import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { CancelledError } from "../api/errors.ts";
import { Jobs } from "./jobs.ts";

describe("Jobs", () => {
  it("list() keeps running jobs and drops finished ones after keepFinishedMs", async () => {
    const jobs = new Jobs({ keepFinishedMs: 50 });
    const running = jobs.start("restore", { volume: "v1", url: "vfs:///b?backup=b1&volume=v0" });
    const done = jobs.start("verify", { volume: "v0", id: "job-mine" });
    done.finish();
    assert.deepEqual(jobs.list().map((j) => [j.ID, j.State]), [
      [running.id, "running"],
      ["job-mine", "done"],
    ]);
    assert.equal(jobs.list()[0].URL, "vfs:///b?backup=b1&volume=v0");
    await new Promise((r) => setTimeout(r, 80));
    assert.deepEqual(jobs.list().map((j) => j.ID), [running.id]);
  });

  it("list() keeps only the most recent keepFinished finished jobs", async () => {
    const jobs = new Jobs({ keepFinished: 2 });
    for (const id of ["job-a", "job-b", "job-c"]) {
      jobs.start("backup", { id }).finish();
      await new Promise((r) => setTimeout(r, 5));
    }
    const live = jobs.start("backup", { id: "job-live" });
    assert.deepEqual(jobs.list().map((j) => j.ID).sort(), ["job-b", "job-c", "job-live"]);
    live.finish(new Error("disk full"));
    assert.deepEqual(jobs.list().map((j) => j.ID).sort(), ["job-c", "job-live"]);
  });

  it("a job cancelled and then failed is listed as cancelled, with the error", () => {
    const jobs = new Jobs();
    const job = jobs.start("restore", { volume: "v1" });
    jobs.cancel(job.id);
    assert.ok(job.signal.aborted);
    job.finish(new CancelledError('Cannot create volume "v1": cancelled'));
    const [info] = jobs.list();
    assert.equal(info.State, "cancelled");
    assert.match(info.Error, /cancelled/);
  });
});
