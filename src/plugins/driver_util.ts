/**
 * Host helpers that drivers reach through `api.util`: option parsing, the saved driver
 * configuration, volume records, and the ConvoyDriver object of a driver class.
 * @module
 */
import { z } from "zod";
import * as errors from "../api/errors.ts";
import type {
  Awaitable,
  BackupOperations,
  ConvoyDriver,
  SnapshotOperations,
  StringMap,
  VolumeOperations,
} from "../api/driver.ts";
import type {
  DriverConfigSpec,
  DriverMethods,
  RecordStore,
  RecordStoreSpec,
} from "../api/plugin.ts";
import { readdir, rm } from "node:fs/promises";
import { isAbsolute, join, resolve } from "node:path";
import { OPT_MOUNT_POINT } from "../api/options.ts";
import { validateName } from "../util/names.ts";
import { parseOptions } from "../util/parse_options.ts";

export { parseOptions };
import { atomicWriteJSON, fsyncDir, readJSONFile } from "../util/fs.ts";

/** `api.util.loadDriverConfig`: see DriverConfigSpec. */
export async function loadDriverConfig<O extends z.ZodType, S extends z.ZodType, C>(
  spec: DriverConfigSpec<O, S, C>,
): Promise<C> {
  const { driver, file, log } = spec;
  const options = spec.options ?? {};
  const raw = await readJSONFile(file);
  if (raw === undefined) {
    const config = await spec.create(
      parseOptions(spec.schema, options, `${driver} driver options`),
    );
    await atomicWriteJSON(file, config);
    log.info(`Saved ${driver} configuration`, { file, ...spec.logFields(config) });
    return config;
  }

  const saved = spec.savedSchema.safeParse(raw);
  if (!saved.success) {
    const problems = saved.error.issues.map((i) => `"${i.path.join(".")}": ${i.message}`);
    throw new errors.InvalidArgumentError(
      `Cannot load ${driver} configuration "${file}": ${problems.join("; ")}`,
    );
  }
  const { config, save } = await spec.load(saved.data);
  for (const [key, { uses, same }] of Object.entries(spec.current(config))) {
    const value = options[key];
    if (value === undefined || same(value)) continue;
    log.warn(
      `Ignoring --driver-opts ${key}=${JSON.stringify(value)}: ` +
        `the saved configuration in "${file}" uses ${uses}`,
      { option: key, file },
    );
  }
  if (save) await atomicWriteJSON(file, config);
  return config;
}

/** `api.util.convoyDriver`: operation objects that call the methods of `impl`. */
export function convoyDriver(
  name: string,
  impl: DriverMethods,
  info: () => Awaitable<StringMap>,
): ConvoyDriver {
  const driverName = () => name;
  const volumes: VolumeOperations = {
    name: driverName,
    createVolume: (id, opts, ctx) => impl.createVolume(id, opts, ctx),
    deleteVolume: (id, opts) => impl.deleteVolume(id, opts),
    mountVolume: (id, opts) => impl.mountVolume(id, opts),
    umountVolume: (id) => impl.umountVolume(id),
    mountPoint: (id) => impl.mountPoint(id),
    getVolumeInfo: (id) => impl.getVolumeInfo(id),
    listVolume: (opts) => impl.listVolume(opts),
  };
  const snapshots: SnapshotOperations = {
    name: driverName,
    createSnapshot: (id, volumeID) => impl.createSnapshot(id, volumeID),
    deleteSnapshot: (id, volumeID) => impl.deleteSnapshot(id, volumeID),
    getSnapshotInfo: (id, volumeID) => impl.getSnapshotInfo(id, volumeID),
    listSnapshot: (opts) => impl.listSnapshot(opts),
  };
  const backups: BackupOperations = {
    name: driverName,
    createBackup: (snapshotID, volumeID, destURL, opts, ctx) =>
      impl.createBackup(snapshotID, volumeID, destURL, opts, ctx),
    deleteBackup: (url, opts) => impl.deleteBackup(url, opts),
    getBackupInfo: (url, opts) => impl.getBackupInfo(url, opts),
    listBackup: (destURL, opts) => impl.listBackup(destURL, opts),
  };
  return {
    name: driverName,
    info,
    volumeOps: () => volumes,
    snapshotOps: () => snapshots,
    backupOps: () => backups,
  };
}

/** `api.util.createRecordStore`: see RecordStoreSpec. */
export function createRecordStore<S extends z.ZodType>(
  spec: RecordStoreSpec<S>,
): RecordStore<z.output<S>> {
  type T = z.output<S>;
  const { dir, prefix, kind } = spec;
  const file = (name: string) => join(dir, `${prefix}${name}.json`);
  const bad = (name: string, path: string, why: string, cause?: unknown) =>
    new errors.BackendError(
      `Cannot read ${kind} "${name}": "${path}" is not a valid ${kind} record: ${why}`,
      cause === undefined ? undefined : { cause },
    );
  const read = async (name: string): Promise<T | undefined> => {
    const path = file(name);
    let raw: unknown;
    try {
      raw = await readJSONFile(path);
    } catch (err) {
      throw bad(name, path, errors.errorMessage(err), err);
    }
    if (raw === undefined) return undefined;
    const r = spec.schema.safeParse(raw);
    if (!r.success) {
      const problems = r.error.issues.map((i) => `"${i.path.join(".")}": ${i.message}`);
      throw bad(name, path, problems.join("; "));
    }
    const field = spec.nameField;
    if (field && (r.data as Record<string, unknown>)[field] !== name) {
      throw bad(name, path, `"${field}": expected "${name}"`);
    }
    return r.data;
  };
  const must = async (name: string, what: string): Promise<T> => {
    const record = await read(name);
    if (record === undefined) {
      throw new errors.NotFoundError(`Cannot ${what} "${name}": ${kind} does not exist`);
    }
    return record;
  };
  const names = async (): Promise<string[]> => {
    let entries: string[];
    try {
      entries = await readdir(dir);
    } catch (err) {
      throw new errors.BackendError(
        `Cannot list ${kind}s: cannot read "${dir}": ${errors.errorMessage(err)}`,
        { cause: err },
      );
    }
    // Temp files of atomic writes start with "."; so does no valid name.
    return entries.sort().filter((e) =>
      !e.startsWith(".") && e.startsWith(prefix) && e.endsWith(".json")
    ).map((e) => e.slice(prefix.length, -".json".length));
  };
  const list = async (): Promise<Array<{ name: string; record: T }>> => {
    const out: Array<{ name: string; record: T }> = [];
    for (const name of await names()) {
      const entry = `${prefix}${name}.json`;
      try {
        validateName(name, kind);
        const record = await read(name);
        if (record !== undefined) out.push({ name, record });
      } catch (err) {
        spec.log.warn(`Skipping "${join(dir, entry)}": ${errors.errorMessage(err)}`, {
          [kind]: name,
        });
      }
    }
    return out;
  };
  return {
    file,
    read,
    must,
    write: (name, value) => atomicWriteJSON(file(name), value),
    remove: async (name) => {
      await rm(file(name), { force: true });
      await fsyncDir(dir); // a removal that a power loss cannot undo
    },
    names,
    list,
    select: async (name, what) => {
      if (!name) return await list();
      const valid = validateName(name, kind);
      return [{ name: valid, record: await must(valid, what) }];
    },
  };
}

const mountOptions = z.looseObject({ [OPT_MOUNT_POINT]: z.string().optional() });

/**
 * `api.util.requestedMountPoint`: the mount point a mountVolume request asks for (OPT_MOUNT_POINT),
 * resolved, or "" when it names none; InvalidArgumentError when it is not absolute.
 */
export function requestedMountPoint(opts: StringMap | undefined, volume: string): string {
  const o = parseOptions(mountOptions, opts ?? {}, `options of volume "${volume}"`);
  const wanted = o[OPT_MOUNT_POINT]?.trim() ?? "";
  if (!wanted) return "";
  if (!isAbsolute(wanted)) {
    throw new errors.InvalidArgumentError(
      `Cannot mount volume "${volume}" at "${wanted}": the mount point must be an absolute path`,
    );
  }
  return resolve(wanted);
}
