import { describe, it } from "node:test";
import { once } from "node:events";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openVfsStore } from "../store/vfs.ts";
import { STALE_TEMP_AGE_MS } from "../store/sweep.ts";
import { processStart, thisHolder } from "../util/holder.ts";
import { silentLogger } from "../util/log.ts";
import { collectGarbage } from "./gc.ts";
import { volumeConfigPath, volumeDir } from "./layout.ts";

/** A temp name in the form src/store/temp_name.ts documents, naming `pid` started at `start`. */
async function tempOf(base: string, w: { pid: number; start: string; boot?: string }) {
  const me = await thisHolder();
  const boot = w.boot ?? me.boot.replaceAll("-", "").slice(0, 16);
  const ns = /[0-9]+/.exec(me.pidNS)![0];
  return `.${base}.tmp-${boot}-${ns}-${w.pid}-${w.start}-0123abcd`;
}

/** The pid and start time of a process that has exited. */
async function deadProcess(): Promise<{ pid: number; start: string }> {
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  await new Promise((res) => child.once("spawn", res));
  const start = await processStart(child.pid!);
  assert.ok(start, "the child's start time is readable");
  const exited = new Promise((res) => child.once("exit", res));
  child.kill("SIGKILL");
  await exited;
  return { pid: child.pid!, start };
}

describe("collectGarbage() temp files", () => {
  it("collectGarbage() sweeps a dead local writer's temp file at once, keeps live and fresh foreign ones; a dry run removes nothing", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-gc-temps-"));
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await store.write(volumeConfigPath("vol1"), new TextEncoder().encode('{"Name":"vol1"}'));
      const blocks = join(dir, volumeDir("vol1"), "blocks", "ab", "cd");
      await mkdir(blocks, { recursive: true });
      const me = await thisHolder();
      const dead = await deadProcess();
      const foreign = { pid: 1, start: "1", boot: "0123456789abcdef" };
      const files: Record<string, string> = {
        deadWriter: await tempOf("a.blk", dead), // killed a moment ago
        reusedPid: await tempOf("b.blk", { pid: me.pid, start: `${Number(me.start) + 1}` }),
        live: await tempOf("c.blk", { pid: me.pid, start: me.start }),
        foreignFresh: await tempOf("d.blk", foreign),
        foreignOld: await tempOf("e.blk", foreign),
        unknownFresh: ".f.blk.tmp-89abcdef", // the short form: by age only
        unknownOld: ".g.blk.tmp-0badf00d",
      };
      const old = (Date.now() - STALE_TEMP_AGE_MS - 60_000) / 1000;
      for (const [what, name] of Object.entries(files)) {
        await writeFile(join(blocks, name), what);
        if (what.endsWith("Old")) await utimes(join(blocks, name), old, old);
      }
      const swept = ["deadWriter", "reusedPid", "foreignOld", "unknownOld"];
      const bytes = swept.reduce((n, w) => n + w.length, 0);
      const all = Object.values(files).sort();

      const dry = await collectGarbage(store, { dryRun: true, log: silentLogger });
      assert.equal(dry.Volumes.vol1.StaleTemps, swept.length);
      assert.equal(dry.Volumes.vol1.StaleTempBytes, bytes);
      assert.deepEqual((await readdir(blocks)).sort(), all, "a dry run removes nothing");

      const real = await collectGarbage(store, { log: silentLogger });
      assert.deepEqual(real.Volumes.vol1, dry.Volumes.vol1);
      const kept = Object.entries(files).filter(([w]) => !swept.includes(w)).map(([, n]) => n);
      assert.deepEqual((await readdir(blocks)).sort(), kept.sort());
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("collectGarbage() sweeps at once the temp file of a writer killed mid-write", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-gc-killed-"));
    try {
      const store = await openVfsStore(`vfs://${dir}`);
      await store.write(volumeConfigPath("vol1"), new TextEncoder().encode('{"Name":"vol1"}'));
      const key = `${volumeDir("vol1")}/blocks/ab/cd/${"ab".repeat(32)}.blk`;
      // A writer whose body never ends: its temp file stays until it is killed.
      const code = `
        const { openVfsStore } = await import(${
        JSON.stringify(import.meta.resolve("../store/vfs.ts"))
      });
        const store = await openVfsStore(${JSON.stringify(`vfs://${dir}`)});
        const body = new ReadableStream({
          start(c) { c.enqueue(new Uint8Array(1000)); console.log("writing"); },
          pull() { return new Promise(() => {}); },
        });
        setInterval(() => {}, 1000); // keeps the process alive while the write waits
        await store.write(${JSON.stringify(key)}, body);`;
      const child = spawn(process.execPath, ["eval", code], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      await once(child.stdout!, "data");
      const folder = join(dir, volumeDir("vol1"), "blocks", "ab", "cd");
      let temps: string[] = [];
      for (let i = 0; i < 200 && temps.length === 0; i++) {
        temps = await readdir(folder).catch(() => []);
        if (temps.length === 0) await new Promise((res) => setTimeout(res, 10));
      }
      assert.equal(temps.length, 1, "the writer's temp file exists");
      const live = await collectGarbage(store, { log: silentLogger });
      assert.equal(live.Volumes.vol1.StaleTemps, 0, "a live writer's temp is kept");
      const exited = once(child, "exit");
      child.kill("SIGKILL");
      await exited;
      const dry = await collectGarbage(store, { dryRun: true, log: silentLogger });
      assert.equal(dry.Volumes.vol1.StaleTemps, 1);
      assert.deepEqual(await readdir(folder), temps, "a dry run removes nothing");
      const real = await collectGarbage(store, { log: silentLogger });
      assert.deepEqual(real.Volumes.vol1, dry.Volumes.vol1);
      assert.equal(real.Volumes.vol1.StaleTempBytes, 1000);
      await assert.rejects(
        readdir(folder),
        { code: "ENOENT" },
        "the temp and its folders are gone",
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
