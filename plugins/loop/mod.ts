/**
 * The "loop" driver: each volume is a sparse image file (ext4 or xfs inside) attached to a
 * loop device. Snapshots are crash-consistent copies of the image, free on filesystems with
 * reflinks (xfs with reflink=1, btrfs); backups are Convoy's incremental delta-block backups,
 * and devicemapper backups restore into loop volumes (and loop backups into devicemapper).
 *
 * Driver options (`--driver-opts`, read on the first start and then saved in
 * `<root>/loop/loop.cfg`):
 *
 * | Key | Default | Meaning |
 * |---|---|---|
 * | `loop.path` | `<root>/loop/volumes` | The folder holding the volume images. Put it on xfs (reflink=1) or btrfs for instant snapshots and fast incremental backups. |
 * | `loop.defaultvolumesize` | `10G` | Size of volumes created without `--size` (rounded up to 2 MiB). |
 * | `loop.fs` | `ext4` | The filesystem made on new volumes: `ext4` or `xfs`. |
 * | `loop.directio` | `false` | Attach loop devices with `--direct-io=on`. |
 * @module
 */
import type { PluginApi } from "../../mod.ts";
import { createLoopAdapter } from "./driver.ts";

/** Registers the "loop" device adapter. */
export default function setup(api: PluginApi): void {
  api.registerBlockDevice("loop", (ctx) => createLoopAdapter(api, ctx));
}
