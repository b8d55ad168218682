import { z } from "zod";
import { NotFoundError } from "../api/errors.ts";
import type { HttpRequest, HttpResponse } from "../runtime/listen.ts";
import { parseSize } from "../util/sizes.ts";
import { bool, int, json, parseBody, str, text } from "./http.ts";
import type { VolumeService } from "./service.ts";

type Route = (svc: VolumeService, req: HttpRequest) => Promise<HttpResponse>;

const size = z.union([
  z.number().int().nonnegative(),
  z.string().transform((s, ctx) => {
    try {
      return parseSize(s);
    } catch (err) {
      ctx.addIssue({ code: "custom", message: (err as Error).message });
      return z.NEVER;
    }
  }),
]).nullish().transform((v) => v ?? 0);

const CreateVolume = z.object({
  Name: str,
  DriverName: str,
  Size: size,
  BackupURL: str,
  Endpoint: str,
  DriverVolumeID: str,
  Type: str,
  IOPS: int,
  Throughput: int,
  PrepareForVM: bool,
  Verbose: bool,
  JobID: str,
});
const VolumeRef = z.object({
  VolumeName: str,
  ReferenceOnly: bool,
  MountPoint: str,
  Verbose: bool,
});
const CreateSnapshot = z.object({ Name: str, VolumeName: str, Verbose: bool });
const SnapshotRef = z.object({ SnapshotName: str });
const BackupReq = z.object({
  URL: str,
  Endpoint: str,
  SnapshotName: str,
  VolumeName: str,
  Verbose: bool,
  Compression: z.enum(["", "gzip", "zstd"]).nullish().transform((v) => v ?? ""),
  JobID: str,
  Sample: z.number().gt(0).lte(1).nullish(),
  DryRun: bool,
});
const JobRef = z.object({ ID: str });

/** Convoy's REST routes (convoy.md §4.2), keyed "METHOD path" without the /v1 prefix. */
export const routes: Record<string, Route> = {
  "GET /info": async (svc) => json(await svc.info()),
  "GET /volumes/list": async (svc, req) => {
    const d = req.query.get("driver");
    return json(await svc.listVolumes({ driverInfo: !!d && d !== "0" && d !== "false" }));
  },
  "GET /volumes": async (svc, req) => {
    const b = parseBody(req.body, VolumeRef);
    return json(await svc.inspectVolume(b.VolumeName));
  },
  "POST /volumes/create": async (svc, req) => {
    const b = parseBody(req.body, CreateVolume);
    const name = await svc.createVolume({
      name: b.Name,
      driver: b.DriverName,
      size: b.Size,
      backupURL: b.BackupURL,
      endpoint: b.Endpoint,
      driverVolumeID: b.DriverVolumeID,
      type: b.Type,
      iops: b.IOPS,
      throughput: b.Throughput,
      prepareForVM: b.PrepareForVM,
      jobID: b.JobID || undefined,
    });
    return b.Verbose ? json(await svc.inspectVolume(name)) : text(name);
  },
  "DELETE /volumes": async (svc, req) => {
    const b = parseBody(req.body, VolumeRef);
    await svc.deleteVolume(b.VolumeName, { referenceOnly: b.ReferenceOnly });
    return text("");
  },
  "POST /volumes/mount": async (svc, req) => {
    const b = parseBody(req.body, VolumeRef);
    const mp = await svc.mountVolume(b.VolumeName, { mountPoint: b.MountPoint || undefined });
    return b.Verbose ? json(await svc.inspectVolume(b.VolumeName)) : text(mp);
  },
  "POST /volumes/umount": async (svc, req) => {
    const b = parseBody(req.body, VolumeRef);
    await svc.umountVolume(b.VolumeName);
    return text("");
  },
  "POST /snapshots/create": async (svc, req) => {
    const b = parseBody(req.body, CreateSnapshot);
    const name = await svc.createSnapshot(b.VolumeName, { name: b.Name || undefined });
    if (!b.Verbose) return text(name);
    const s = await svc.inspectSnapshot(name);
    return json({
      Name: s.Name,
      VolumeName: s.VolumeName,
      CreatedTime: s.CreatedTime,
      DriverInfo: s.DriverInfo,
    });
  },
  "GET /snapshots": async (svc, req) => {
    const b = parseBody(req.body, SnapshotRef);
    return json(await svc.inspectSnapshot(b.SnapshotName));
  },
  "DELETE /snapshots": async (svc, req) => {
    const b = parseBody(req.body, SnapshotRef);
    await svc.deleteSnapshot(b.SnapshotName);
    return text("");
  },
  "POST /backups/create": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    const url = await svc.createBackup(b.SnapshotName, {
      destURL: b.URL,
      endpoint: b.Endpoint || undefined,
      compression: b.Compression || undefined,
      jobID: b.JobID || undefined,
    });
    return b.Verbose ? json({ URL: url }) : text(url);
  },
  "GET /backups/list": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    return json(
      await svc.listBackups(b.URL, {
        volumeName: b.VolumeName || undefined,
        endpoint: b.Endpoint || undefined,
      }),
    );
  },
  "GET /backups/inspect": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    return json(await svc.inspectBackup(b.URL, { endpoint: b.Endpoint || undefined }));
  },
  "POST /backups/verify": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    return json(
      await svc.verifyBackup(b.URL, {
        endpoint: b.Endpoint || undefined,
        sample: b.Sample ?? undefined,
        jobID: b.JobID || undefined,
      }),
    );
  },
  "POST /backups/gc": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    return json(
      await svc.collectGarbage(b.URL, {
        volumeName: b.VolumeName || undefined,
        endpoint: b.Endpoint || undefined,
        dryRun: b.DryRun,
      }),
    );
  },
  "GET /jobs": (svc) => Promise.resolve(json(svc.jobs.list())),
  "DELETE /jobs": (svc, req) => {
    svc.jobs.cancel(parseBody(req.body, JobRef).ID);
    return Promise.resolve(text(""));
  },
  "DELETE /backups": async (svc, req) => {
    const b = parseBody(req.body, BackupReq);
    await svc.deleteBackup(b.URL, { endpoint: b.Endpoint || undefined });
    return text("");
  },
};

/** Strips the optional `/v<version>` prefix and a trailing slash: "/v1/volumes/" → "/volumes". */
export function routeKey(method: string, path: string): string {
  const p = path.replace(/^\/v[0-9.]+(?=\/)/, "").replace(/\/+$/, "") || "/";
  return `${method.toUpperCase()} ${p}`;
}

/** Throws NotFoundError for a path no route serves. */
export function findRoute(method: string, path: string): Route {
  const r = routes[routeKey(method, path)];
  if (!r) throw new NotFoundError(`Handler not found: ${method} ${path}`);
  return r;
}
