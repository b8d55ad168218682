/**
 * Docker's volume plugin protocol (VolumeDriver API) on the daemon's socket.
 *
 * Every endpoint answers JSON with Docker's field names, errors as `{"Err": "..."}` with HTTP 200
 * (Docker shows the text as it is); an unknown endpoint gets `{"Err": ...}` with 404. Mounts are
 * reference-counted by Docker's mount ID, see VolumeService.mountVolume and the README's
 * "Docker" section.
 * @module
 */
import { randomBytes } from "node:crypto";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import {
  AlreadyExistsError,
  ConflictError,
  errorMessage,
  InvalidArgumentError,
  isErrorCode,
  NotFoundError,
  NotSupportedError,
} from "../api/errors.ts";
import type { HttpRequest, HttpResponse } from "../runtime/listen.ts";
import { parseSize } from "../util/sizes.ts";
import { validateName } from "../util/names.ts";
import { parseBody } from "./http.ts";
import { type CreateVolumeRequest, liveMountIDs, type VolumeService } from "./service.ts";

/** Content type of Docker's plugin API. */
export const PLUGIN_CONTENT_TYPE = "application/vnd.docker.plugins.v1+json";

/** Docker's VolumeDriver request: `{"Name", "Opts", "ID"}`, every field optional. */
const DockerReq = z.object({
  Name: z.string().nullish().transform((v) => v ?? ""),
  Opts: z.record(z.string(), z.string()).nullish().transform((v) => v ?? {}),
  ID: z.string().nullish().transform((v) => v ?? ""),
});
type DockerReq = z.output<typeof DockerReq>;

/** The mount ID used when Docker sends none (engines before 1.13). */
const NO_ID = "docker";

/** Options of `docker volume create -d convoy -o KEY=VALUE`, keys case-insensitive. */
export const CREATE_OPTIONS = [
  "size",
  "driver",
  "backup",
  "snapshot",
  "endpoint",
  "id",
  "type",
  "iops",
  "throughput",
  "vm",
] as const;
type CreateOption = typeof CREATE_OPTIONS[number];

function boolOpt(v: string | undefined, key: string, action: string): boolean {
  if (v === undefined || v === "") return false;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new InvalidArgumentError(`${action}: invalid option "${key}=${v}": expected true or false`);
}

/** A non-negative integer option; undefined when absent or empty. */
function intOpt(v: string | undefined, key: string, action: string): number | undefined {
  if (!v) return undefined;
  const n = Number(v);
  if (!/^[0-9]+$/.test(v) || !Number.isSafeInteger(n)) {
    throw new InvalidArgumentError(`${action}: invalid option "${key}=${v}": expected an integer`);
  }
  return n;
}

/** Validates Docker's create options; throws naming every unknown key. */
export function parseCreateOptions(
  name: string,
  raw: Record<string, string>,
): { request: CreateVolumeRequest; snapshot?: string } {
  const action = `Cannot create volume "${name}"`;
  const o: Partial<Record<CreateOption, string>> = {};
  const unknown: string[] = [];
  for (const [k, v] of Object.entries(raw)) {
    const key = k.toLowerCase();
    if ((CREATE_OPTIONS as readonly string[]).includes(key)) o[key as CreateOption] = v;
    else unknown.push(k);
  }
  if (unknown.length) {
    throw new InvalidArgumentError(
      `${action}: unknown option${unknown.length > 1 ? "s" : ""} ${
        unknown.map((k) => `"${k}"`).join(", ")
      } (valid options: ${CREATE_OPTIONS.join(", ")})`,
    );
  }
  let size: number | undefined;
  if (o.size) {
    try {
      size = parseSize(o.size);
    } catch (err) {
      throw new InvalidArgumentError(`${action}: ${errorMessage(err)}`);
    }
  }
  const iops = intOpt(o.iops, "iops", action);
  const throughput = intOpt(o.throughput, "throughput", action);
  if (o.snapshot && o.backup) {
    throw new InvalidArgumentError(`${action}: options "backup" and "snapshot" exclude each other`);
  }
  if (o.snapshot) validateName(o.snapshot, "snapshot");
  return {
    request: {
      name,
      driver: o.driver || undefined,
      size,
      backupURL: o.backup || undefined,
      endpoint: o.endpoint || undefined,
      driverVolumeID: o.id || undefined,
      type: o.type || undefined,
      iops,
      throughput,
      prepareForVM: boolOpt(o.vm, "vm", action),
    },
    snapshot: o.snapshot || undefined,
  };
}

/**
 * Creates volume `req.name` from a snapshot: the snapshot is backed up into a private store under
 * the daemon root and restored into the new volume, then the store is removed. Works for every
 * driver that makes backups, and restores into the snapshot's own driver only.
 */
async function createFromSnapshot(
  svc: VolumeService,
  req: CreateVolumeRequest,
  snapshot: string,
): Promise<void> {
  const name = req.name!;
  const action = `Cannot create volume "${name}" from snapshot "${snapshot}"`;
  const { volume: src } = svc.snapshot(snapshot, action);
  const driver = req.driver || src.Driver;
  if (driver !== src.Driver) {
    throw new InvalidArgumentError(
      `${action}: the snapshot belongs to a "${src.Driver}" volume and cannot be restored into driver "${driver}"`,
    );
  }
  if (svc.nameTaken(name)) throw new AlreadyExistsError(`${action}: the name is taken`);
  try {
    await svc.backupOps(driver, action);
  } catch (err) {
    if (isErrorCode(err, "NotSupported")) {
      throw new NotSupportedError(
        `${action}: driver "${driver}" cannot copy snapshots (it makes no backups)`,
      );
    }
    throw err;
  }
  const store = join(svc.root, "docker-snapshot-copies", randomBytes(8).toString("hex"));
  await mkdir(store, { recursive: true, mode: 0o700 });
  try {
    const url = await svc.createBackup(snapshot, { destURL: `vfs://${store}` });
    await svc.createVolume({ ...req, driver, backupURL: url, endpoint: undefined });
  } finally {
    await rm(store, { recursive: true, force: true });
  }
}

/** Go's time.RubyDate (Convoy's CreatedTime) as RFC 3339, which Docker's `CreatedAt` needs. */
export function rfc3339(t: string): string | undefined {
  const m = /^\w{3} (\w{3}) (\d{2}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2}) (\d{4})$/.exec(t);
  if (m) {
    const month = [
      "Jan",
      "Feb",
      "Mar",
      "Apr",
      "May",
      "Jun",
      "Jul",
      "Aug",
      "Sep",
      "Oct",
      "Nov",
      "Dec",
    ].indexOf(m[1]) + 1;
    if (!month) return undefined;
    return `${m[9]}-${String(month).padStart(2, "0")}-${m[2]}T${m[3]}:${m[4]}:${m[5]}${m[6]}${
      m[7]
    }:${m[8]}`;
  }
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(t) ? t : undefined;
}

function inUse(n: number): string {
  return `volume is in use by ${n} container${n === 1 ? "" : "s"}`;
}

/** Waits until a create of `name` in progress (e.g. by a concurrent Mount) has finished. */
async function settled(svc: VolumeService, name: string): Promise<void> {
  if (svc.volumeStatus(name) === "creating") await svc.settled(name);
}

type DockerRoute = (svc: VolumeService, req: DockerReq) => Promise<Record<string, unknown>>;

const dockerRoutes: Record<string, DockerRoute> = {
  "/VolumeDriver.Create": async (svc, r) => {
    const name = validateName(r.Name, "volume");
    await svc.refreshIfUnknown(name);
    await settled(svc, name);
    // Docker calls Create only after Get found nothing; an existing volume is success, whatever
    // the options (Convoy's behaviour): they are checked only for a volume still to be made.
    if (svc.volumeStatus(name) === "ready") return { Err: "" };
    const { request, snapshot } = parseCreateOptions(name, r.Opts);
    if (snapshot) await createFromSnapshot(svc, request, snapshot);
    else await svc.createVolume(request);
    return { Err: "" };
  },

  "/VolumeDriver.Remove": async (svc, r) => {
    const v = svc.volumeStatus(r.Name);
    if (svc.dockerOptions.ignoreDockerDelete) {
      svc.log.info("docker remove ignored (--ignore-docker-delete)", { volume: r.Name });
      return { Err: "" };
    }
    if (!v) return { Err: "" };
    await settled(svc, r.Name);
    if (svc.volumeStatus(r.Name) !== "ready") return { Err: "" };
    const live = await svc.releaseStaleMounts(r.Name);
    if (live) throw new ConflictError(`Cannot remove volume "${r.Name}": ${inUse(live)}`);
    // Drivers that declare it (vfs: a folder other hosts may share; ebs: a cloud volume) only
    // forget the volume, as Convoy v0.5.2 did; others delete it with its data.
    await svc.deleteVolume(r.Name, { referenceOnly: svc.dockerRemoveKeepsData(r.Name) });
    return { Err: "" };
  },

  "/VolumeDriver.Mount": async (svc, r) => {
    const name = validateName(r.Name, "volume");
    await svc.refreshIfUnknown(name);
    await settled(svc, name);
    if (!svc.volumeStatus(name)) {
      if (!svc.dockerOptions.createOnDockerMount) {
        throw new NotFoundError(`Cannot mount volume "${name}": volume "${name}" does not exist`);
      }
      await svc.createVolume({ name }).catch((err) => {
        if (!isErrorCode(err, "AlreadyExists")) throw err;
      });
      await settled(svc, name);
      svc.log.info("volume created on docker mount", { volume: name });
    }
    return { Mountpoint: await svc.mountVolume(name, { mountID: r.ID || NO_ID }), Err: "" };
  },

  "/VolumeDriver.Unmount": async (svc, r) => {
    await settled(svc, r.Name);
    if (svc.volumeStatus(r.Name) !== "ready") return { Err: "" };
    try {
      await svc.umountVolume(r.Name, { mountID: r.ID || NO_ID });
    } catch (err) {
      if (!isErrorCode(err, "NotFound")) throw err;
    }
    return { Err: "" };
  },

  "/VolumeDriver.Path": async (svc, r) => {
    await svc.refreshIfUnknown(r.Name);
    const v = svc.volume(r.Name, `Cannot find the path of volume "${r.Name}"`);
    const mp = await (await svc.volumeOps(v.Driver, "Path")).mountPoint(r.Name);
    return mp ? { Mountpoint: mp, Err: "" } : { Err: "" };
  },

  "/VolumeDriver.Get": async (svc, r) => {
    await svc.refreshIfUnknown(r.Name);
    const v = svc.volume(r.Name, `Cannot get volume "${r.Name}"`);
    const status: Record<string, unknown> = { driver: v.Driver };
    let mountPoint = "";
    let created = v.CreatedTime;
    try {
      const res = await svc.volumeResponse(v);
      mountPoint = res.MountPoint;
      created = res.CreatedTime || created;
      status.size = res.DriverInfo.Size ?? "0";
      status.snapshots = Object.keys(res.Snapshots).sort();
    } catch (err) {
      status.error = errorMessage(err);
    }
    status.mounts = liveMountIDs(v).length;
    const createdAt = rfc3339(created);
    return {
      Volume: {
        Name: v.Name,
        ...(mountPoint ? { Mountpoint: mountPoint } : {}),
        ...(createdAt ? { CreatedAt: createdAt } : {}),
        Status: status,
      },
      Err: "",
    };
  },

  "/VolumeDriver.List": async (svc) => {
    await svc.refreshVolumes();
    const vols = svc.readyVolumes();
    const list = await Promise.all(vols.map(async (v) => {
      let mp = v.MountPoint;
      try {
        mp = await (await svc.volumeOps(v.Driver, "List")).mountPoint(v.Name);
      } catch {
        // the recorded mount point will do
      }
      return mp ? { Name: v.Name, Mountpoint: mp } : { Name: v.Name };
    }));
    return { Volumes: list, Err: "" };
  },

  "/VolumeDriver.Capabilities": () => Promise.resolve({ Capabilities: { Scope: "local" } }),
};

/** True for paths of Docker's plugin protocols (`/Plugin.Activate`, `/VolumeDriver.*`, …). */
export function isDockerPath(path: string): boolean {
  return /^\/[A-Za-z]+\.[A-Za-z]+$/.test(path);
}

function reply(value: unknown, status = 200): HttpResponse {
  return { status, body: JSON.stringify(value), contentType: PLUGIN_CONTENT_TYPE };
}

/** Serves one Docker plugin request; never throws. */
export async function handleDocker(svc: VolumeService, req: HttpRequest): Promise<HttpResponse> {
  if (req.path === "/Plugin.Activate") {
    const stale = await svc.markDockerMountsStale().catch((err) => {
      svc.log.error("cannot record stale mount IDs", { error: errorMessage(err) });
      return 0;
    });
    svc.log.info("docker activated the plugin", { staleMountIDs: stale });
    return reply({ Implements: ["VolumeDriver"] });
  }
  const route = dockerRoutes[req.path];
  if (!route) {
    return reply({
      Err: `Unknown endpoint ${req.path}: convoy implements Plugin.Activate and ${
        Object.keys(dockerRoutes).map((p) => p.slice(1)).join(", ")
      }`,
    }, 404);
  }
  try {
    const r = parseBody(req.body, DockerReq);
    const out = await route(svc, r);
    svc.log.debug("docker request", { path: req.path, volume: r.Name, id: r.ID });
    return reply(out);
  } catch (err) {
    // Docker asks Get before every Create: an unknown volume there is routine, not a warning.
    const routine = req.path === "/VolumeDriver.Get" && isErrorCode(err, "NotFound");
    (routine ? svc.log.debug : svc.log.warn).call(svc.log, "docker request failed", {
      path: req.path,
      error: errorMessage(err),
    });
    return reply({ Err: errorMessage(err) });
  }
}
