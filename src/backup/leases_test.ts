import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../store/testing.ts";
import { MemoryStore } from "../store/memory.ts";
import type { LogFields, Logger } from "../util/log.ts";
import {
  type LeaseRecord,
  leasesDir,
  leaseStates,
  liveLeases,
  takeBackupLease,
  takeLease,
} from "./leases.ts";
import { processStart, thisHolder } from "../util/holder.ts";

const enc = new TextEncoder();

/** A logger that keeps INFO lines. */
function recording(lines: { msg: string; fields?: LogFields }[]): Logger {
  const log: Logger = {
    debug() {},
    info: (msg, fields) => lines.push({ msg, fields }),
    warn() {},
    error() {},
    child: () => log,
  };
  return log;
}

async function writeLease(store: MemoryStore, rec: LeaseRecord): Promise<void> {
  await store.write(
    `${leasesDir("vol1")}/${rec.Kind}-${rec.ID}.json`,
    enc.encode(JSON.stringify(rec)),
  );
}

/** Starts `sleep`, and resolves to its pid and a function that kills it (-9) and reaps it. */
async function sleeper(): Promise<{ pid: number; kill: () => Promise<void> }> {
  const child = spawn("sleep", ["30"], { stdio: "ignore" });
  await new Promise((res, rej) => child.once("spawn", res).once("error", rej));
  const exited = new Promise((res) => child.once("exit", res));
  return {
    pid: child.pid!,
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
  };
}

/** A lease as a holder on this host writes it, for process `pid`. */
async function localLease(kind: "gc" | "backup", pid: number): Promise<LeaseRecord> {
  const me = await thisHolder();
  return {
    Kind: kind,
    ID: `${kind}-${pid}`,
    Host: me.host,
    Pid: pid,
    Expires: new Date(Date.now() + 5 * 60_000).toISOString(),
    Boot: me.boot,
    PidNS: me.pidNS,
    Start: await processStart(pid),
  };
}

/** Rejects when `p` has not settled within `ms`. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, rej) => {
    timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

describe("leases", () => {
  it("thisHolder() names this host, boot and process start", async () => {
    const me = await thisHolder();
    assert.equal(me.host, hostname());
    assert.equal(me.pid, process.pid);
    assert.match(me.boot, /^[0-9a-f-]{36}$/);
    assert.match(me.start, /^[0-9]+$/);
    assert.match(me.pidNS, /^pid:\[[0-9]+\]$/);
  });

  it("a lease of a killed local process is dead at once, and a backup does not wait for it", async () => {
    const store = new MemoryStore("dead");
    const p = await sleeper();
    try {
      await writeLease(store, await localLease("gc", p.pid));
      assert.equal((await liveLeases(store, "vol1", { kind: "gc" })).length, 1, "alive: live");
    } finally {
      await p.kill();
    }
    const states = await leaseStates(store, "vol1", { kind: "gc" });
    assert.deepEqual(states.live, []);
    assert.deepEqual(states.dead, [`${leasesDir("vol1")}/gc-gc-${p.pid}.json`]);
    const lines: { msg: string }[] = [];
    const lease = await within(
      takeBackupLease(store, "vol1", { id: "b1", log: recording(lines), pollMs: 20 }),
      3000,
      "takeBackupLease()",
    );
    await lease.release();
    assert.deepEqual(lines, [], "nothing was waited for");
  });

  it("a gc lease taken by another process that is then killed -9 holds up no backup", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-lease-"));
    try {
      const url = `vfs://${dir}`;
      const script = `
        import { openStore } from ${
        JSON.stringify(new URL("../store/testing.ts", import.meta.url).href)
      };
        import { takeLease } from ${JSON.stringify(new URL("./leases.ts", import.meta.url).href)};
        const store = await openStore(${JSON.stringify(url)});
        await takeLease(store, "vol1", { kind: "gc", id: "child" });
        console.log("held");
        setInterval(() => {}, 1000);
      `;
      const child = spawn(process.execPath, ["eval", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      const exited = new Promise((res) => child.once("exit", res));
      await within(
        new Promise((res) => child.stdout!.on("data", (d) => String(d).includes("held") && res(0))),
        30_000,
        "the child taking its lease",
      );
      const store = await openStore(url);
      assert.equal(
        (await liveLeases(store, "vol1", { kind: "gc" })).length,
        1,
        "held by the child",
      );
      child.kill("SIGKILL");
      await exited;
      const lines: { msg: string }[] = [];
      const lease = await within(
        takeBackupLease(store, "vol1", { id: "b1", log: recording(lines), pollMs: 20 }),
        3000,
        "takeBackupLease()",
      );
      await lease.release();
      assert.deepEqual(lines, []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a lease naming a pid that now belongs to another process is dead", async () => {
    const store = new MemoryStore("reused");
    const rec = await localLease("backup", process.pid);
    await writeLease(store, { ...rec, Start: String(Number(rec.Start) - 1) });
    assert.deepEqual(await liveLeases(store, "vol1", { kind: "backup" }), []);
    await writeLease(store, rec);
    assert.equal((await liveLeases(store, "vol1", { kind: "backup" })).length, 1);
  });

  it("a lease of another host, or an old lease without a boot id, holds until it expires", async () => {
    const store = new MemoryStore("remote");
    const me = await thisHolder();
    const soon = new Date(Date.now() + 60_000).toISOString();
    // Pid 1 of another host or boot cannot be checked from here: only its expiry counts.
    const remote = { ...(await localLease("gc", 999_999)), Host: "elsewhere", Expires: soon };
    const otherBoot = { ...remote, ID: "b", Host: me.host, Boot: "another-boot" };
    const old: LeaseRecord = { Kind: "gc", ID: "c", Host: me.host, Pid: 999_999, Expires: soon };
    for (const rec of [remote, otherBoot, old]) await writeLease(store, rec);
    assert.equal((await liveLeases(store, "vol1", { kind: "gc" })).length, 3);
    const past = new Date(Date.now() - 1).toISOString();
    for (const rec of [remote, otherBoot, old]) await writeLease(store, { ...rec, Expires: past });
    assert.deepEqual(await liveLeases(store, "vol1", { kind: "gc" }), []);
  });

  it("takeBackupLease() waits for a remote gc lease until it expires, and logs what it waits for once per period", async () => {
    const store = new MemoryStore("wait");
    const expires = new Date(Date.now() + 600);
    await writeLease(store, {
      Kind: "gc",
      ID: "g1",
      Host: "other-host",
      Pid: 4242,
      Expires: expires.toISOString(),
      Boot: "b",
      PidNS: "pid:[1]",
      Start: "1",
    });
    const lines: { msg: string; fields?: LogFields }[] = [];
    const lease = await within(
      takeBackupLease(store, "vol1", { id: "b1", log: recording(lines), pollMs: 20 }),
      5000,
      "takeBackupLease()",
    );
    assert.ok(Date.now() >= expires.getTime(), "it waited until the lease expired");
    await lease.release();
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.match(lines[0].msg, /waits for a block sweep/);
    const waited = String(lines[0].fields?.waitingFor);
    assert.match(waited, /gc lease of host "other-host" pid 4242/);
    assert.ok(waited.includes(expires.toISOString()), waited);
  });

  it("takeLease() refreshes a held lease before it expires, and release() removes it for good", async () => {
    const store = new MemoryStore("refresh");
    const lease = await takeLease(store, "vol1", { kind: "backup", id: "r", ttlMs: 300 });
    const first = (await liveLeases(store, "vol1", { kind: "backup" }))[0].Expires;
    await new Promise((r) => setTimeout(r, 700));
    const [now] = await liveLeases(store, "vol1", { kind: "backup" });
    assert.ok(
      now && Date.parse(now.Expires) > Date.parse(first),
      "refreshed past its first expiry",
    );
    await lease.release();
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(store.keys(), []);
  });
});
