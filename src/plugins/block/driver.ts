/**
 * The block-volume framework: a ConvoyDriver made from a device adapter (src/api/block.ts). The
 * host writes once what every block driver needs: records, mkfs, mount and unmount, fsfreeze
 * around snapshots, snapshot bookkeeping, restores from any block backup, and backups with the
 * delta-block engine (the adapter gives a snapshot source and a comparison).
 * @module
 */

import { resolve } from "node:path";
import type { BlockDeviceInit } from "../../api/block.ts";
import type { ConvoyDriver, InitFunc } from "../../api/driver.ts";
import { ensureDir } from "../../util/fs.ts";
import { convoyDriver } from "../driver_util.ts";
import { type BlockDriver, type BlockHost } from "./core.ts";
import { BlockBackupOps } from "./backups.ts";
export type { BlockBackupRequest, BlockDriver, BlockHost } from "./core.ts";
export { NativeBackupRegistry } from "./native.ts";

/** True for a driver made by the block framework. */
export function isBlockDriver(d: ConvoyDriver): d is BlockDriver {
  return typeof (d as Partial<BlockDriver>).block?.backUp === "function";
}

/** The InitFunc of a block adapter: the driver the daemon sees. */
export function blockDriverInit(host: BlockHost, name: string, init: BlockDeviceInit): InitFunc {
  return async (root, config) => {
    const log = host.log.child({ pkg: name, driver: name });
    const driverRoot = resolve(root);
    await ensureDir(driverRoot);
    const adapter = await init({ root: driverRoot, options: config ?? {}, log, exec: host.exec });
    const d = new BlockVolumes(host, { name, root: driverRoot, adapter, log });
    await d.start();
    const nb = adapter.nativeBackups;
    const unregister = nb && host.natives?.add(
      name,
      nb.schemes,
      nb.open && ((url, ctx) => nb.open!(url, { ...ctx, log })),
    );
    const driver = d.driver();
    return {
      ...driver,
      shutdown: async () => {
        unregister?.();
        await driver.shutdown?.();
      },
    };
  };
}

/** One block driver: the adapter's devices, the host's flows. */
class BlockVolumes extends BlockBackupOps {
  // ---- the ConvoyDriver object -------------------------------------------------------------

  driver(): BlockDriver {
    const d = convoyDriver(this.name, this, () => this.adapter.info());
    return {
      ...d,
      shutdown: async () => await this.adapter.shutdown?.(),
      capabilities: { dockerRemoveKeepsData: this.caps.dockerRemoveKeepsData ?? false },
      block: {
        backUp: (snap, vol, req) => this.backUp(snap, vol, req),
        nativeSchemes: this.adapter.nativeBackups?.schemes ?? [],
        deltaOps: (ctx) => this.deltaSession(ctx),
      },
    };
  }
}
