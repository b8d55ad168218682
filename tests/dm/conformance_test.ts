/**
 * The devicemapper driver runs the driver conformance suite (src/testing/conformance.ts) on a
 * real thin pool over loop devices; skipped, with the reason, where device-mapper has none
 * (.ci/dm_tests.sh runs it in a User-mode Linux guest).
 */
import { mkdtemp, open } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { driverConformance } from "../../conformance.ts";
import { createBackupStoreApi } from "../../src/backup/store_api.ts";
import { cleanup, dmInit, exec, GiB, MiB, recordingLogger, skipReason } from "./helpers.ts";

const pool = `cc${process.pid % 10000}`;
const loops: string[] = [];
/** The pool's images and the driver root, in the guest's RAM when there is /dev/shm. */
const dir = skipReason ? "" : await mkdtemp(join(await shm(), "convoy-dm-conformance-"));

/** A sparse 2 GiB data and 32 MiB metadata image, each on a loop device. */
async function prepare(): Promise<void> {
  for (const [name, size] of [["data.img", 2 * GiB], ["meta.img", 32 * MiB]] as const) {
    const fh = await open(join(dir, name), "w");
    await fh.truncate(size);
    await fh.close();
    loops.push((await exec("losetup", ["--find", "--show", join(dir, name)])).stdout.trim());
  }
}

async function shm(): Promise<string> {
  return await exec("test", ["-d", "/dev/shm"]).then(() => "/dev/shm", () => tmpdir());
}

const log = recordingLogger();
driverConformance({
  name: "devicemapper",
  init: dmInit({ log, backup: createBackupStoreApi({ log }) }),
  root: join(dir, "root", "devicemapper"),
  config: () => ({
    "dm.datadev": loops[0],
    "dm.metadatadev": loops[1],
    "dm.thinpoolname": pool,
    "dm.defaultvolumesize": "64M",
  }),
  prepare,
  cleanup: () => cleanup({ dir, pool, loops }),
  skip: skipReason && `${skipReason}; .ci/dm_tests.sh runs it in a User-mode Linux guest`,
});
