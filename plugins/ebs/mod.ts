/**
 * The "ebs" driver: volumes are Amazon EBS volumes attached to this EC2 instance, snapshots are
 * EBS snapshots, backups are EBS snapshots (`ebs://<region>/<snap-id>`) or Convoy's delta-block
 * backups to vfs:// and s3:// read through the EBS direct APIs. A device adapter on the host's
 * block-volume framework: records, mkfs, mounts, fsfreeze and restores are the host's.
 *
 * Driver options (`--driver-opts`, saved in `<root>/ebs/ebs.cfg` on the first start):
 *
 * | Key | Default | Meaning |
 * |---|---|---|
 * | `ebs.defaultvolumesize` | `4G` | Size of volumes created without `--size` (whole GiB). |
 * | `ebs.defaultvolumetype` | `gp3` | gp3, gp2, io2, io1, st1, sc1 or standard (Convoy: gp2). |
 * | `ebs.defaultkmskeyid` | "" | KMS key of new volumes (they are encrypted with it). |
 * | `ebs.defaultencrypted` | `false` | Encrypt new volumes (with the account's default key). |
 * | `ebs.defaultthroughput` | EBS's | MiB/s of new gp3 volumes. |
 * | `ebs.fsfreeze` | `false` | Freeze a mounted filesystem around CreateSnapshot. |
 * | `ebs.deletesnapshots` | `false` | `snapshot delete` also deletes the EBS snapshot. |
 * | `ebs.crossregioncopy` | `false` | Restoring an ebs:// backup of another region copies it. |
 * | `ebs.instanceid`, `ebs.region`, `ebs.zone` | metadata | Override the metadata service. |
 * @module
 */
import type { PluginApi } from "../../mod.ts";
import { createEbsAdapter } from "./adapter.ts";

/** Registers the "ebs" device adapter. */
export default function setup(api: PluginApi): void {
  api.registerBlockDevice("ebs", (ctx) => createEbsAdapter(api, ctx));
}
