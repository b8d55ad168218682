import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { processStart, thisHolder } from "../util/holder.ts";
import { TEMP_NAME, tempName, tempWriterGone } from "./temp_name.ts";

describe("temp names", () => {
  it("tempName() names this host's boot, pid namespace, pid and start time", async () => {
    const me = await thisHolder();
    const name = await tempName("obj.blk");
    const m = TEMP_NAME.exec(name);
    assert.ok(m, `"${name}" is a temp name`);
    assert.ok(name.startsWith(".obj.blk.tmp-"));
    assert.equal(m[1], me.boot.replaceAll("-", "").slice(0, 16));
    assert.equal(`pid:[${m[2]}]`, me.pidNS);
    assert.deepEqual([Number(m[3]), m[4]], [process.pid, me.start]);
    assert.notEqual(await tempName("obj.blk"), name, "two writes get two names");
  });

  it("tempName() falls back to the short form where the long one would exceed 255 bytes", async () => {
    const base = "x".repeat(230);
    const name = await tempName(base);
    assert.match(name, new RegExp(`^\\.${base}\\.tmp-[0-9a-f]{8}$`));
    assert.ok(TEMP_NAME.test(name));
  });

  it("tempWriterGone() is true only for a local writer that is gone or whose pid is reused", async () => {
    const me = await thisHolder();
    const boot = me.boot.replaceAll("-", "").slice(0, 16);
    const ns = /[0-9]+/.exec(me.pidNS)![0];
    const child = spawn("sleep", ["30"], { stdio: "ignore" });
    await new Promise((res) => child.once("spawn", res));
    const start = await processStart(child.pid!);
    const childTemp = `.a.tmp-${boot}-${ns}-${child.pid}-${start}-0123abcd`;
    assert.equal(await tempWriterGone(childTemp), false, "the writer runs");
    const exited = new Promise((res) => child.once("exit", res));
    child.kill("SIGKILL");
    await exited;
    assert.equal(await tempWriterGone(childTemp), true, "the writer was killed");
    assert.equal(await tempWriterGone(await tempName("a")), false, "this process");
    const reused = `.a.tmp-${boot}-${ns}-${process.pid}-${Number(me.start) + 1}-0123abcd`;
    assert.equal(await tempWriterGone(reused), true, "the pid is another process now");
    const otherBoot = `.a.tmp-0123456789abcdef-${ns}-${child.pid}-${start}-0123abcd`;
    assert.equal(await tempWriterGone(otherBoot), false, "another host or boot: unknown");
    const otherNS = `.a.tmp-${boot}-1${ns}-${child.pid}-${start}-0123abcd`;
    assert.equal(await tempWriterGone(otherNS), false, "another pid namespace: unknown");
    assert.equal(await tempWriterGone(".a.tmp-0123abcd"), false, "the short form: unknown");
    assert.equal(await tempWriterGone("a.blk"), false, "not a temp name");
  });
});
