/**
 * The embedded default driver "vfs": each volume is a directory under `vfs.path`, which may be
 * a shared NFS mount so that every host sees the same volumes. Snapshots are local copies,
 * backups are single-file archives (tar + gzip) in a vfs:// or s3:// backup store.
 *
 * Driver options (`--driver-opts`, read on the first start and then saved in
 * `<root>/vfs/vfs.cfg`):
 *
 * | Key | Default | Meaning |
 * |---|---|---|
 * | `vfs.path` | `<root>/vfs/volumes` | The folder holding the volume directories. |
 * | `vfs.defaultvolumesize` | `100G` | Size of `--vm` volumes created without `--size`. |
 * @module
 */
import type { PluginApi } from "../../mod.ts";
import { createVfsDriver } from "./driver.ts";

/** Registers the "vfs" driver. */
export default function setup(api: PluginApi): void {
  api.register("vfs", (root, config) => createVfsDriver(api, root, config));
}
