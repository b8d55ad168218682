/**
 * The block framework's volume records: `<root>/state/<volume>.json` (or the adapter's
 * `records` place), the common fields and the adapter's own fields side by side at the top
 * level, and the conversion to and from the BlockVolume an adapter sees. Convoy's devicemapper
 * records (no UUID, Device or snapshot Size; `Snapshots` may be null) read with defaults.
 * @module
 */
import { z } from "zod";
import type { AdapterFields, BlockSnapshot, BlockVolume } from "../../api/block.ts";

/** The record fields the host owns; every other key belongs to the adapter. */
const VOLUME_KEYS = [
  "Name",
  "UUID",
  "Size",
  "Filesystem",
  "CreatedTime",
  "Device",
  "MountPoint",
  "Snapshots",
];
const SNAPSHOT_KEYS = ["Name", "CreatedTime", "Size"];

/** The host's part of a volume record; the adapter's keys pass through. */
export const volumeRecordSchema = z.looseObject({
  Name: z.string(),
  /** "" in Convoy's records: the host gives one at start. */
  UUID: z.string().default(""),
  Size: z.number().int().nonnegative(),
  /** "" when unknown (a restored device blkid could not identify): mount detects it. */
  Filesystem: z.string().default(""),
  CreatedTime: z.string().default(""),
  Device: z.string().default(""),
  MountPoint: z.string().default(""),
  Snapshots: z.record(
    z.string(),
    z.looseObject({
      Name: z.string(),
      CreatedTime: z.string().default(""),
      /** Missing in Convoy's records: the volume's size. */
      Size: z.number().int().nonnegative().optional(),
    }),
  ).nullable().default({}).transform((s) => s ?? {}),
});

/** A record as read from disk. */
export type VolumeRecord = z.output<typeof volumeRecordSchema>;

function rest(obj: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(Object.entries(obj).filter(([k]) => !keys.includes(k)));
}

/** A record's snapshot as the adapter sees it; `fields` validated by the adapter's schema. */
export function toSnapshot<S extends AdapterFields>(
  s: VolumeRecord["Snapshots"][string],
  of: { schema: z.ZodType<S>; volumeSize: number },
): BlockSnapshot<S> {
  const schema = of.schema;
  return {
    name: s.Name,
    createdTime: s.CreatedTime,
    size: s.Size ?? of.volumeSize,
    fields: schema.parse(rest(s, SNAPSHOT_KEYS)),
  };
}

/** A record as the adapter sees it; `fields` validated by the adapter's schema. */
export function toVolume<V extends AdapterFields>(
  r: VolumeRecord,
  schema: z.ZodType<V>,
): BlockVolume<V> {
  return {
    name: r.Name,
    uuid: r.UUID,
    size: r.Size,
    filesystem: r.Filesystem,
    createdTime: r.CreatedTime,
    device: r.Device,
    mountPoint: r.MountPoint,
    fields: schema.parse(rest(r, VOLUME_KEYS)),
  };
}

/** The saved shape of a volume and its snapshots. */
export function toRecord(
  v: BlockVolume,
  snapshots: Record<string, BlockSnapshot>,
): Record<string, unknown> {
  const snaps: Record<string, unknown> = {};
  for (const [k, s] of Object.entries(snapshots)) {
    snaps[k] = { Name: s.name, CreatedTime: s.createdTime, Size: s.size, ...s.fields };
  }
  return {
    Name: v.name,
    UUID: v.uuid,
    Size: v.size,
    Filesystem: v.filesystem,
    CreatedTime: v.createdTime,
    ...v.fields,
    Device: v.device,
    MountPoint: v.mountPoint,
    Snapshots: snaps,
  };
}
