/**
 * The "devicemapper" driver: each volume is a thin device of a device-mapper thin pool,
 * formatted with ext4 or xfs; snapshots are thin snapshots; backups are Convoy's incremental
 * delta-block backups, the changed blocks found with `thin_delta` on a reserved metadata
 * snapshot. Loop backups restore into devicemapper volumes, and devicemapper backups into loop
 * volumes. Needs device-mapper with dm-thin-pool, dmsetup, thin-provisioning-tools (thin_delta,
 * thin_check), blockdev, blkdiscard, blkid, mkfs.ext4/mkfs.xfs, mount.
 *
 * Driver options (`--driver-opts`, read on the first start and then saved in
 * `<root>/devicemapper/devicemapper.cfg`):
 *
 * | Key | Default | Meaning |
 * |---|---|---|
 * | `dm.datadev` | required | The block device holding the pool's data. |
 * | `dm.metadatadev` | required | The block device holding the pool's metadata (size it with `thin_metadata_size`). Its first 4 KiB are zeroed on the first start only. |
 * | `dm.thinpoolname` | `convoy-pool` | The pool's device-mapper name: `/dev/mapper/<name>`. |
 * | `dm.thinpoolblocksize` | `4096` | The pool block size in 512-byte sectors: 128 to 2097152, a multiple of 128. Any size backs up (ranges are rounded out to 2 MiB). |
 * | `dm.defaultvolumesize` | `100G` | Size of volumes created without `--size`. |
 * | `dm.fs` | `ext4` | The filesystem made on new volumes: `ext4` or `xfs`. |
 *
 * Volume devices are named `convoy-<pool>-<volume>` (Convoy used the bare volume name, which
 * could clash with any other device-mapper device); sizes are rounded up to a multiple of the
 * pool block size and of 2 MiB. `ReferenceOnly` deletes keep the thin device, its data and its
 * snapshots in the pool (Convoy destroyed them); creating the same name again adopts them.
 * @module
 */
import type { PluginApi } from "../../mod.ts";
import { createDevicemapperAdapter } from "./driver.ts";

/** Registers the "devicemapper" device adapter. */
export default function setup(api: PluginApi): void {
  api.registerBlockDevice("devicemapper", (ctx) => createDevicemapperAdapter(api, ctx));
}
