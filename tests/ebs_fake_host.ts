/**
 * What moto cannot do, done the way an EC2 host would, for tests: moto answers the EC2 API but
 * attaches no disk. Behind a proxy in front of moto, this "hypervisor" gives each volume a sparse
 * image file, attaches a loop device for each AttachVolume and links it where a Nitro instance's
 * udev puts an EBS disk (`/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id>`), removes both
 * on DetachVolume, copies the image on CreateSnapshot and seeds a volume made from a snapshot with
 * that copy. So mkfs, mount, fsfreeze and every byte of data run for real.
 * @module
 */
import { copyFile, mkdir, rm, symlink, truncate, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Exec } from "../mod.ts";
import { startFaultProxy } from "./moto_helper.ts";

const BY_ID = "/dev/disk/by-id";
const GiB = 1024 ** 3;

/** The link udev makes for an EBS NVMe disk. */
export function nvmeLinkOf(volumeId: string): string {
  return join(BY_ID, `nvme-Amazon_Elastic_Block_Store_${volumeId.replace("-", "")}`);
}

/** A proxy in front of moto at `motoEndpoint` that plays the EC2 host for volumes it sees made. */
export async function startFakeHost(motoEndpoint: string, opts: { dir: string; exec: Exec }) {
  const { dir, exec } = opts;
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

  const proxy = await startFaultProxy(motoEndpoint, {
    tap: async (action, params, answer) => {
      if (action === "CreateVolume") {
        const id = tag(answer, "volumeId")!;
        const file = join(dir, `${id}.img`);
        const from = params.get("SnapshotId");
        const fromFile = from && images.get(from);
        if (fromFile) await copyFile(fromFile, file);
        else await writeFile(file, "");
        await truncate(file, Number(params.get("Size") ?? "1") * GiB);
        images.set(id, file);
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
        const snap = tag(answer, "snapshotId")!;
        const copy = join(dir, `${snap}.img`);
        await exec("cp", ["--sparse=always", file, copy]);
        images.set(snap, copy);
      } else if (action === "DeleteVolume") {
        const id = params.get("VolumeId")!;
        await detach(id);
        const file = images.get(id);
        if (file) await rm(file, { force: true });
        images.delete(id);
      }
    },
  });
  return {
    endpoint: proxy.endpoint,
    failures: proxy.failures,
    seen: proxy.seen,
    /** Whether the host currently has `volumeId` attached (a loop device behind its link). */
    attached: (volumeId: string) => loops.has(volumeId),
    async close() {
      for (const id of [...loops.keys()]) await detach(id);
      await proxy.close();
    },
  };
}
