import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createExec } from "../runtime/exec.ts";
import { createFilesystems } from "./filesystems.ts";

const root = process.getuid?.() === 0;

describe("api.util.filesystems", () => {
  it(
    "mkfs(), detect(), mount() and umount() a real ext4 image; a busy mount point is a ConflictError",
    { skip: root ? false : "needs root (mount)" },
    async () => {
      const exec = createExec({ timeoutMs: 60_000 });
      const fs = createFilesystems(exec);
      const dir = await mkdtemp(join(tmpdir(), "convoy-fs-"));
      const image = join(dir, "vol.img");
      const mnt = join(dir, "mnt", "deep"); // created by mount()
      try {
        await writeFile(image, "");
        await exec("truncate", ["-s", "64M", image]);
        assert.equal(await fs.detect(image), "", "no filesystem yet");
        await fs.mkfs(image, "ext4", { discard: false });
        assert.equal(await fs.detect(image), "ext4");
        await fs.mount(image, mnt, { fs: "ext4" });
        const held = await open(join(mnt, "held"), "w");
        try {
          await assert.rejects(fs.umount(mnt, { volume: "db1" }), {
            name: "ConflictError",
            message: `Cannot unmount volume "db1" from "${mnt}": the mount point is busy`,
          });
        } finally {
          await held.close();
        }
        await fs.umount(mnt, { volume: "db1" });
        await fs.umount(mnt, { volume: "db1" }); // not mounted any more: fine
      } finally {
        await exec("umount", [mnt]).catch(() => {});
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
});
