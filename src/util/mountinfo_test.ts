import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  canonicalPath,
  devNumber,
  isMountPoint,
  mountAt,
  mountsDevice,
  mountsOf,
  parseMountInfo,
  parseMountPoints,
} from "./mountinfo.ts";

const TEXT = [
  "22 1 8:1 / / rw - ext4 /dev/sda1 rw",
  "42 22 8:1 /data/a /mnt/with\\040space rw - ext4 /dev/sda1 rw",
  "43 22 8:1 /data/b /mnt/vol10 rw - ext4 /dev/sda1 rw",
  "44 22 7:3 / /mnt/vol10 rw,relatime shared:7 - xfs /dev/loop3 rw",
  "45 22 7:3 / /mnt/other rw - xfs /dev/loop3 rw",
].join("\n");

describe("mountinfo", () => {
  it("parseMountPoints() decodes escapes and matches whole paths", () => {
    const text = [
      "22 1 8:1 / / rw - ext4 /dev/sda1 rw",
      "42 22 8:1 /data/a /mnt/with\\040space rw - ext4 /dev/sda1 rw",
      "43 22 8:1 /data/b /mnt/vol10 rw - ext4 /dev/sda1 rw",
    ].join("\n");
    const points = parseMountPoints(text);
    assert.ok(points.has("/mnt/with space"));
    assert.ok(points.has("/mnt/vol10"));
    assert.ok(!points.has("/mnt/vol1"));
  });

  it("parseMountInfo() reads the mount point, type and source after optional fields", () => {
    assert.deepEqual(parseMountInfo(TEXT + "\n"), [
      { mountPoint: "/", fstype: "ext4", source: "/dev/sda1", device: "8:1" },
      { mountPoint: "/mnt/with space", fstype: "ext4", source: "/dev/sda1", device: "8:1" },
      { mountPoint: "/mnt/vol10", fstype: "ext4", source: "/dev/sda1", device: "8:1" },
      { mountPoint: "/mnt/vol10", fstype: "xfs", source: "/dev/loop3", device: "7:3" },
      { mountPoint: "/mnt/other", fstype: "xfs", source: "/dev/loop3", device: "7:3" },
    ]);
  });

  it("mountsDevice() matches a mount by path or by device number, and devNumber() decodes rdev", () => {
    const entry = { mountPoint: "/m", fstype: "ext4", source: "/dev/dm-3", device: "254:3" };
    assert.equal(mountsDevice(entry, { path: "/dev/dm-3" }), true);
    assert.equal(mountsDevice(entry, { path: "/dev/mapper/x", number: "254:3" }), true);
    assert.equal(mountsDevice(entry, { path: "/dev/mapper/x", number: "254:30" }), false);
    assert.equal(mountsDevice(entry, { path: "/dev/mapper/x" }), false);
    assert.equal(devNumber(7 * 256 + 3), "7:3");
    // Large minors: the low 8 bits in rdev's low byte, the rest from bit 20.
    assert.equal(devNumber(254 * 256 + 0x34 + (0x12 << 20)), "254:4660");
  });

  it("mountAt(), isMountPoint() and mountsOf() match exact paths and devices", async () => {
    const dir = await mkdtemp(join(tmpdir(), "convoy-mountinfo-"));
    try {
      const file = join(dir, "mountinfo");
      await writeFile(file, TEXT);
      assert.deepEqual(await mountAt("/mnt/vol10", file), {
        mountPoint: "/mnt/vol10",
        fstype: "xfs",
        source: "/dev/loop3",
        device: "7:3",
      });
      assert.equal(await mountAt("/mnt/vol1", file), undefined);
      assert.equal(await isMountPoint("/mnt/with space", file), true);
      assert.equal(await isMountPoint("/mnt/vol1", file), false);
      assert.deepEqual(await mountsOf("/dev/loop3", file), ["/mnt/vol10", "/mnt/other"]);
      assert.deepEqual(await mountsOf("", file), []);
      assert.equal(await canonicalPath("/no/such/../path"), "/no/path");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
