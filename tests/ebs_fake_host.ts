/**
 * What moto cannot do, done the way an EC2 host would, for tests: moto answers the EC2 API but
 * attaches no disk. Behind a proxy in front of moto, this "hypervisor" gives each volume a sparse
 * image file, attaches a loop device for each AttachVolume and links it where a Nitro instance's
 * udev puts an EBS disk (`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id>`), removes both
 * on DetachVolume, copies the image on CreateSnapshot and seeds a volume made from a snapshot with
 * that copy. So mkfs, mount, fsfreeze and every byte of data run for real.
 *
 * moto keeps block data (for the EBS direct APIs) only for snapshots written with StartSnapshot /
 * PutSnapshotBlock. So the host answers CreateSnapshot with such a snapshot: it writes every
 * 512 KiB block of the volume's image (zero blocks too: moto's ListChangedBlocks only walks the
 * first snapshot's blocks, so every snapshot holds every index and the diff is exact), then
 * replaces the snapshot id in EC2's answer. Images are `imageBytes` long (default 32 MiB) whatever
 * the EBS size, to keep that cheap: the filesystem is made on the loop device's size.
 * @module
 */
import { createHash } from "node:crypto";
import {
  copyFile,
  mkdir,
  readFile,
  rm,
  symlink,
  truncate,
  unlink,
  writeFile,
} from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../mod.ts";
import { startFaultProxy } from "./moto_helper.ts";

const BY_ID = "/dev/disk/by-id";

/** The link udev makes for an EBS NVMe disk. */
export function nvmeLinkOf(volumeId: string): string {
  return join(BY_ID, `nvme-Amazon_Elastic_Block_Store_${volumeId.replace("-", "")}`);
}

/** A proxy in front of moto at `motoEndpoint` that plays the EC2 host for volumes it sees made. */
export async function startFakeHost(
  motoEndpoint: string,
  opts: { dir: string; exec: Exec; env: Record<string, string>; imageBytes?: number },
) {
  const { dir, exec } = opts;
  const imageBytes = opts.imageBytes ?? 32 * 1024 * 1024;
  const ebsSdk = await import("@aws-sdk/client-ebs");
  const ec2Sdk = await import("@aws-sdk/client-ec2");
  const clientOpts = {
    region: "us-east-1",
    endpoint: motoEndpoint,
    credentials: {
      accessKeyId: opts.env.AWS_ACCESS_KEY_ID,
      secretAccessKey: opts.env.AWS_SECRET_ACCESS_KEY,
    },
  };
  const ebs = new ebsSdk.EBSClient(clientOpts);
  const ec2 = new ec2Sdk.EC2Client(clientOpts);

  /** Writes `file` as a new EBS direct snapshot; resolves to its id. */
  async function directSnapshot(file: string, params: URLSearchParams, sizeGiB: number) {
    const tags: Array<{ Key: string; Value: string }> = [];
    for (let i = 1; params.has(`TagSpecification.1.Tag.${i}.Key`); i++) {
      tags.push({
        Key: params.get(`TagSpecification.1.Tag.${i}.Key`)!,
        Value: params.get(`TagSpecification.1.Tag.${i}.Value`) ?? "",
      });
    }
    const s = await ebs.send(
      new ebsSdk.StartSnapshotCommand({
        VolumeSize: sizeGiB,
        Description: params.get("Description") ?? "",
        ...(tags.length ? { Tags: tags } : {}),
      }),
    );
    const data = await readFile(file);
    const BLOCK = 512 * 1024;
    for (let i = 0; i * BLOCK < data.length; i++) {
      const block = new Uint8Array(BLOCK);
      block.set(data.subarray(i * BLOCK, (i + 1) * BLOCK));
      await ebs.send(
        new ebsSdk.PutSnapshotBlockCommand({
          SnapshotId: s.SnapshotId,
          BlockIndex: i,
          BlockData: block,
          DataLength: BLOCK,
          Checksum: createHash("sha256").update(block).digest("base64"),
          ChecksumAlgorithm: "SHA256",
        }),
      );
    }
    await ebs.send(
      new ebsSdk.CompleteSnapshotCommand({ SnapshotId: s.SnapshotId, ChangedBlocksCount: 0 }),
    );
    return s.SnapshotId!;
  }
  const sizes = new Map<string, number>();
  await mkdir(dir, { recursive: true });
  const images = new Map<string, string>();
  const loops = new Map<string, string>();
  const tag = (xml: string, name: string) =>
    new RegExp(`<${name}>([^<]+)</${name}>`).exec(xml)?.[1];

  async function detach(volumeId: string) {
    const loop = loops.get(volumeId);
    if (!loop) return;
    await unlink(nvmeLinkOf(volumeId)).catch(() => {});
    await exec("losetup", ["-d", loop]).catch(() => {});
    loops.delete(volumeId);
  }

  /** Runs once, after the host's own handling of the next successful answer to the action. */
  const after: Record<string, () => Promise<void>> = {};
  const proxy = await startFaultProxy(motoEndpoint, {
    tap: async (action, params, answer) => {
      const replaced = await play(action, params, answer);
      const hook = after[action];
      delete after[action];
      await hook?.();
      return replaced;
    },
  });

  /** What an EC2 host does beside EC2's answer to `action`; a string replaces the answer. */
  async function play(
    action: string,
    params: URLSearchParams,
    answer: string,
  ): Promise<string | void> {
    if (action === "CreateVolume") {
      const id = tag(answer, "volumeId")!;
      const file = join(dir, `${id}.img`);
      const from = params.get("SnapshotId");
      const fromFile = from && images.get(from);
      if (fromFile) await copyFile(fromFile, file);
      else await writeFile(file, "");
      await truncate(file, imageBytes);
      images.set(id, file);
      sizes.set(id, Number(params.get("Size") ?? "1"));
    } else if (action === "AttachVolume") {
      const id = params.get("VolumeId")!;
      const file = images.get(id);
      if (!file) return; // not made through this host
      const { stdout } = await exec("losetup", ["--find", "--show", file]);
      loops.set(id, stdout.trim());
      await mkdir(BY_ID, { recursive: true });
      await unlink(nvmeLinkOf(id)).catch(() => {});
      await symlink(stdout.trim(), nvmeLinkOf(id));
    } else if (action === "DetachVolume") {
      await detach(params.get("VolumeId")!);
    } else if (action === "CreateSnapshot") {
      const vol = params.get("VolumeId")!;
      const file = images.get(vol);
      if (!file) return;
      const made = tag(answer, "snapshotId")!;
      const snap = await directSnapshot(file, params, sizes.get(vol) ?? 1);
      await ec2.send(new ec2Sdk.DeleteSnapshotCommand({ SnapshotId: made }));
      const copy = join(dir, `${snap}.img`);
      await exec("cp", ["--sparse=always", file, copy]);
      images.set(snap, copy);
      return answer.replace(
        `<snapshotId>${made}</snapshotId>`,
        `<snapshotId>${snap}</snapshotId>`,
      );
    } else if (action === "DeleteVolume") {
      const id = params.get("VolumeId")!;
      await detach(id);
      const file = images.get(id);
      if (file) await rm(file, { force: true });
      images.delete(id);
    }
  }
  return {
    endpoint: proxy.endpoint,
    failures: proxy.failures,
    after,
    seen: proxy.seen,
    /** Whether the host currently has `volumeId` attached (a loop device behind its link). */
    attached: (volumeId: string) => loops.has(volumeId),
    async close() {
      for (const id of [...loops.keys()]) await detach(id);
      await proxy.close();
      ebs.destroy();
      ec2.destroy();
    },
  };
}
