import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { State } from "./state.ts";

describe("State", () => {
  it("save() persists concurrent mutations and load() reads them back", async () => {
    const root = await mkdtemp(join(tmpdir(), "convoy-state-"));
    try {
      const s = new State(root);
      await Promise.all(Array.from({ length: 50 }, (_, i) => {
        s.volumes.set(`vol${i}`, s.newVolume({ Name: `vol${i}`, Driver: "vfs", Status: "ready" }));
        return s.save();
      }));
      const again = new State(root);
      await again.load();
      assert.equal(again.volumes.size, 50);
      assert.equal(again.volumes.get("vol7")?.Driver, "vfs");
      assert.deepEqual((await readdir(root)).filter((f) => f.includes("tmp")), []);
      assert.equal(JSON.parse(await readFile(join(root, "state.json"), "utf8")).Version, 1);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("nameTaken() covers volumes and snapshots, which share one namespace", () => {
    const s = new State("/nonexistent");
    const v = s.newVolume({ Name: "vol1", Driver: "vfs", Status: "ready" });
    v.Snapshots.snap1 = s.newSnapshot({ Name: "snap1", Status: "ready" });
    s.volumes.set("vol1", v);
    assert.equal(s.nameTaken("vol1"), true);
    assert.equal(s.nameTaken("snap1"), true);
    assert.equal(s.nameTaken("other"), false);
    assert.equal(s.volumeOfSnapshot("snap1")?.Name, "vol1");
  });

  it("load() of a missing file is an empty state", async () => {
    const s = new State(join(tmpdir(), "convoy-missing-" + Date.now()));
    await s.load();
    assert.equal(s.volumes.size, 0);
  });
});
