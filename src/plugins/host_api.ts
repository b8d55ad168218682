import { z } from "zod";
import * as errors from "../api/errors.ts";
import type { InitFunc } from "../api/driver.ts";
import {
  type BackupStoreApi,
  PLUGIN_API_VERSION,
  type PluginApi,
  type PluginMounts,
} from "../api/plugin.ts";
import type { Exec } from "../runtime/exec.ts";
import type { Logger } from "../util/log.ts";
import { atomicWriteJSON, ensureDir, errno, readFull, readJSONFile } from "../util/fs.ts";
import { KeyedMutex } from "../util/keyed_mutex.ts";
import {
  canonicalPath,
  isMountPoint,
  mountAt,
  MOUNTINFO,
  type MountInfoSource,
  mountsOf,
  parseMountInfo,
  readMounts,
} from "../util/mountinfo.ts";
import { randomHex, validateName } from "../util/names.ts";
import { optionSchemas } from "../util/option_schemas.ts";
import { parseSize } from "../util/sizes.ts";
import { rubyDate } from "../util/time.ts";
import {
  convoyDriver,
  createRecordStore,
  loadDriverConfig,
  parseOptions,
  requestedMountPoint,
} from "./driver_util.ts";
import { createFilesystems } from "./filesystems.ts";
import { awsSdkDeps } from "./aws_deps.ts";
import { blockDriverInit, type NativeBackupRegistry } from "./block/driver.ts";

/**
 * Builds the `api` object passed to each plugin's setup function. `exec` and `mountInfo` (default
 * /proc/self/mountinfo) are those of the namespace volumes are mounted in (`--mnt-ns`). `natives`,
 * shared by every plugin of a daemon, lets a block driver restore another's native backups.
 */
export function createPluginApi(opts: {
  register: (name: string, init: InitFunc) => void;
  log: Logger;
  exec: Exec;
  mountInfo?: MountInfoSource;
  backup: BackupStoreApi;
  natives?: NativeBackupRegistry;
}): PluginApi {
  const table = opts.mountInfo ?? MOUNTINFO;
  const mounts: PluginMounts = {
    list: () => readMounts(table),
    mountAt: (path) => mountAt(path, table),
    mountsOf: (device) => mountsOf(device, table),
    isMountPoint: (path) => isMountPoint(path, table),
    canonicalPath,
    parseMountInfo,
  };
  const filesystems = createFilesystems(opts.exec);
  return {
    apiVersion: PLUGIN_API_VERSION,
    register: opts.register,
    registerBlockDevice: (name, init) =>
      opts.register(
        name,
        blockDriverInit(
          {
            exec: opts.exec,
            log: opts.log,
            mounts,
            filesystems,
            backup: opts.backup,
            natives: opts.natives,
          },
          name,
          init,
        ),
      ),
    log: opts.log,
    deps: { z, aws: awsSdkDeps },
    exec: opts.exec,
    errors,
    util: {
      parseSize,
      validateName,
      now: () => rubyDate(),
      formatTime: (at, o) => rubyDate(at, o),
      writeJSON: atomicWriteJSON,
      readJSON: readJSONFile,
      parseOptions,
      schemas: optionSchemas,
      ensureDir,
      createLock: () => new KeyedMutex(),
      mounts,
      filesystems,
      loadDriverConfig,
      convoyDriver,
      createRecordStore,
      requestedMountPoint,
      errno,
      randomId: () => randomHex(12),
      readFull,
    },
    backup: opts.backup,
  };
}
