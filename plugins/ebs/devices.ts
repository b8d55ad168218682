/**
 * Device names for attachments and finding an attached volume's device node.
 *
 * Names are chosen from /dev/sdf../dev/sdp (EC2's recommended range for EBS data volumes), in
 * order, skipping those this instance's attachments use (xvdX and sdX count as the same name)
 * and those of attaches still in flight in this daemon. The attached device is found by the
 * volume id where the kernel shows it (Nitro: the NVMe disk whose serial is the volume id,
 * `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id without dash>`), else at the name asked
 * for or its xvd form (Xen), waiting with bounded exponential backoff for udev to create it.
 * @module
 */
import { realpath, stat } from "node:fs/promises";
import { type Check, waitFor } from "./waiter.ts";

export const DEVICE_LETTERS = "fghijklmnop";

/** The letter after /dev/sd or /dev/xvd (e.g. "f"), or undefined for other names. */
function letterOf(device: string): string | undefined {
  return /^\/dev\/(?:sd|xvd)([a-z]+)\d*$/.exec(device)?.[1];
}

/** The first free name of /dev/sdf../dev/sdp, or undefined when all 11 are taken. */
export function chooseDeviceName(used: Iterable<string>): string | undefined {
  const taken = new Set<string>();
  for (const d of used) {
    const l = letterOf(d);
    if (l) taken.add(l);
  }
  for (const l of DEVICE_LETTERS) if (!taken.has(l)) return `/dev/sd${l}`;
  return undefined;
}

/** The by-id link a Nitro instance's udev makes for an EBS volume's NVMe disk. */
export function nvmeLink(volumeId: string): string {
  return `/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_${volumeId.replace("-", "")}`;
}

/** Where the device of `volumeId` attached at `deviceName` may show, most specific first. */
export function deviceCandidates(volumeId: string, deviceName: string): string[] {
  const out = [nvmeLink(volumeId)];
  if (deviceName) {
    out.push(deviceName);
    const l = letterOf(deviceName);
    if (l) out.push(`/dev/xvd${l}`, `/dev/sd${l}`);
  }
  return [...new Set(out)];
}

/** The device node (symlinks resolved) of the first candidate that is a block device, if any. */
export async function probeDevice(candidates: string[]): Promise<string | undefined> {
  for (const c of candidates) {
    try {
      if ((await stat(c)).isBlockDevice()) return await realpath(c);
    } catch {
      // not there (yet)
    }
  }
  return undefined;
}

/** Waits for the device of an attached volume; TimeoutError via `timeout` when it never shows. */
export function findDevice(
  volumeId: string,
  opts: {
    deviceName: string;
    what: string;
    timeoutMs: number;
    timeout: (message: string) => Error;
    signal?: AbortSignal;
  },
): Promise<string> {
  const candidates = deviceCandidates(volumeId, opts.deviceName);
  return waitFor(async (): Promise<Check<string>> => {
    const dev = await probeDevice(candidates);
    return dev ? { done: true, value: dev } : { done: false, state: "no device yet" };
  }, {
    what: `${opts.what}: find the device of ${volumeId} (${candidates.join(", ")})`,
    timeoutMs: opts.timeoutMs,
    initialDelayMs: 100,
    maxDelayMs: 2000,
    signal: opts.signal,
    timeout: opts.timeout,
  });
}
