import { z } from "zod";
import { errorMessage, InvalidArgumentError, isErrorCode, NotFoundError } from "../api/errors.ts";
import type { HttpRequest, HttpResponse } from "../runtime/listen.ts";
import { parseSize } from "../util/sizes.ts";
import { json, parseBody } from "./http.ts";
import type { VolumeService } from "./service.ts";

/** Docker's VolumeDriver request. */
const DockerReq = z.object({
  Name: z.string().nullish().transform((v) => v ?? ""),
  Opts: z.record(z.string(), z.string()).nullish().transform((v) => v ?? {}),
  ID: z.string().nullish().transform((v) => v ?? ""),
});

const KNOWN_OPTS = ["size", "driver", "backup", "endpoint", "id", "type", "iops", "vm"];

function boolOpt(v: string | undefined, key: string): boolean {
  if (v === undefined || v === "") return false;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new InvalidArgumentError(`Invalid option "${key}=${v}": expected true or false`);
}

type DockerRoute = (svc: VolumeService, req: z.output<typeof DockerReq>) => Promise<unknown>;

/** Docker's volume plugin protocol; every handler answers JSON, errors as {"Err": "..."}. */
const dockerRoutes: Record<string, DockerRoute> = {
  "/VolumeDriver.Create": async (svc, r) => {
    if (svc.state.volumes.get(r.Name)?.Status === "ready") return {};
    const unknown = Object.keys(r.Opts).filter((k) => !KNOWN_OPTS.includes(k));
    if (unknown.length) {
      throw new InvalidArgumentError(
        `Cannot create volume "${r.Name}": unknown option(s) ${
          unknown.map((k) => `"${k}"`).join(", ")
        }` +
          ` (known: ${KNOWN_OPTS.join(", ")})`,
      );
    }
    const o = r.Opts;
    const iops = o.iops ? Number(o.iops) : undefined;
    if (iops !== undefined && !Number.isSafeInteger(iops)) {
      throw new InvalidArgumentError(`Invalid option "iops=${o.iops}": expected an integer`);
    }
    await svc.createVolume({
      name: r.Name,
      driver: o.driver,
      size: o.size ? parseSize(o.size) : undefined,
      backupURL: o.backup,
      endpoint: o.endpoint,
      driverVolumeID: o.id,
      type: o.type,
      iops,
      prepareForVM: boolOpt(o.vm, "vm"),
    });
    return {};
  },
  "/VolumeDriver.Remove": async (svc, r) => {
    if (svc.config.IgnoreDockerDelete) return {};
    if (svc.state.volumes.get(r.Name)?.Status !== "ready") return {};
    await svc.deleteVolume(r.Name);
    return {};
  },
  "/VolumeDriver.Mount": async (svc, r) => {
    if (!svc.state.volumes.has(r.Name) && svc.config.CreateOnDockerMount) {
      await svc.createVolume({ name: r.Name }).catch((err) => {
        if (!isErrorCode(err, "AlreadyExists")) throw err;
      });
    }
    return { Mountpoint: await svc.mountVolume(r.Name, { mountID: r.ID || "docker" }) };
  },
  "/VolumeDriver.Unmount": async (svc, r) => {
    if (svc.state.volumes.get(r.Name)?.Status !== "ready") return {};
    await svc.umountVolume(r.Name, { mountID: r.ID || "docker" });
    return {};
  },
  "/VolumeDriver.Path": async (svc, r) => {
    const v = svc.volume(r.Name, `Cannot find volume "${r.Name}"`);
    const mp = await (await svc.volumeOps(v.Driver, "Path")).mountPoint(r.Name);
    return mp ? { Mountpoint: mp } : {};
  },
  "/VolumeDriver.Get": async (svc, r) => {
    const v = svc.volume(r.Name, `Cannot find volume "${r.Name}"`);
    const res = await svc.volumeResponse(v);
    return {
      Volume: {
        Name: v.Name,
        ...(res.MountPoint ? { Mountpoint: res.MountPoint } : {}),
        CreatedAt: res.CreatedTime,
        Status: {
          driver: v.Driver,
          size: res.DriverInfo.Size ?? "0",
          snapshots: Object.keys(res.Snapshots),
          mounts: v.MountIDs.length,
        },
      },
    };
  },
  "/VolumeDriver.List": async (svc) => {
    const vols = [...svc.state.volumes.values()].filter((v) => v.Status === "ready");
    const list = await Promise.all(vols.map(async (v) => {
      const vops = await svc.volumeOps(v.Driver, "List");
      const mp = await Promise.resolve(vops.mountPoint(v.Name)).catch(() => "");
      return mp ? { Name: v.Name, Mountpoint: mp } : { Name: v.Name };
    }));
    return { Volumes: list };
  },
  "/VolumeDriver.Capabilities": () => Promise.resolve({ Capabilities: { Scope: "local" } }),
};

/** True for paths of Docker's plugin protocol. */
export function isDockerPath(path: string): boolean {
  return path === "/Plugin.Activate" || path.startsWith("/VolumeDriver.");
}

/** Serves one Docker plugin request; never throws. */
export async function handleDocker(svc: VolumeService, req: HttpRequest): Promise<HttpResponse> {
  if (req.path === "/Plugin.Activate") return json({ Implements: ["VolumeDriver"] });
  try {
    const route = dockerRoutes[req.path];
    if (!route) throw new NotFoundError(`Unknown endpoint ${req.path}`);
    const r = parseBody(req.body, DockerReq);
    return json(await route(svc, r));
  } catch (err) {
    svc.log.warn("docker request failed", { path: req.path, error: errorMessage(err) });
    return json({ Err: errorMessage(err) });
  }
}
