/**
 * The loop device adapter: every volume is a sparse image file holding a filesystem (ext4 or
 * xfs), attached to a loop device. Snapshots are copies of the image that share every extent with
 * it on filesystems with reflinks (xfs with reflink=1, btrfs), and are sparse copies elsewhere;
 * the host freezes a mounted filesystem around the copy. Backups tell the host which 2 MiB
 * blocks changed since the last backed-up snapshot by comparing extent maps (FIEMAP) where
 * snapshots share extents, and answer "unknown" elsewhere (the host then compares checksums).
 * Everything else (records, mkfs, mounts, backups, restores) is the host's block framework.
 *
 * On-disk layout:
 *
 * ```
 * <root>/loop.cfg                          {"Root","Path","SnapshotPath","DefaultVolumeSize","Filesystem","DirectIO"}
 * <root>/state/<volume>.json               the host's volume record, with "Path" and each snapshot's "FilePath"
 * <root>/mounts/<volume>/                  the default mount point
 * <loop.path>/<volume>.img                 the volume image (sparse; loop.path defaults to <root>/volumes)
 * <loop.path>/.tmp-<volume>-<id>.img       an image being made (mkfs or restore), renamed into place
 * <SnapshotPath>/<volume>/<snapshot>.img   a snapshot image; SnapshotPath is <root>/snapshots, or
 *                                          <loop.path>/snapshots when loop.path is another filesystem
 * <SnapshotPath>/<volume>/.tmp-<snapshot>-<id>.img   a snapshot being copied
 * ```
 *
 * Crash safety: start-up removes `.tmp-*` images and the snapshot folders of volumes without a
 * record. An image without a record (kept by a reference-only delete) is adopted by the next
 * create of the same name.
 * @module
 */
import { open, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import type {
  BlockDeviceAdapter,
  BlockDeviceContext,
  BlockVolume,
  Logger,
  PluginApi,
} from "../../mod.ts";
import { loadOrCreateConfig, type LoopConfig, SIZE_ALIGNMENT } from "./config.ts";
import { ImageComparer } from "./compare.ts";
import { createSchemas } from "./options.ts";

export type { CompareStats } from "./compare.ts";

/** The driver's name. */
export const DRIVER_NAME = "loop";

/** Copies and mkfs may take long: no short command timeout. */
const LONG_COMMAND_TIMEOUT_MS = 24 * 60 * 60 * 1000;
const TMP_PREFIX = ".tmp-";
const IMAGE_FILE = /^(.+)\.img$/;

/** The adapter's fields of a volume record. */
interface VolumeFields extends Record<string, unknown> {
  /** The image file. */
  Path: string;
}
/** The adapter's fields of a snapshot record. */
interface SnapshotFields extends Record<string, unknown> {
  /** The snapshot's image file. */
  FilePath: string;
}
type Volume = BlockVolume<VolumeFields>;

/** `bytes` in the largest unit (K, M, G, T: powers of 1024) that divides it: 1000T, 66M. */
function sizeText(bytes: number): string {
  for (const [unit, exp] of [["T", 40], ["G", 30], ["M", 20], ["K", 10]] as const) {
    if (bytes % 2 ** exp === 0) return `${bytes / 2 ** exp}${unit}`;
  }
  return String(bytes);
}

/** EFBIG: Node sets the code; Deno (2.9) only says "File too large (os error 27)". */
function isFileTooLarge(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  return e?.code === "EFBIG" || /\(os error 27\)$/.test(String(e?.message ?? ""));
}

/** Creates a sparse file of `size` bytes; fails when it exists. */
async function createSparse(path: string, size: number): Promise<void> {
  const fh = await open(path, "wx", 0o644);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

async function fsyncFile(path: string): Promise<void> {
  const fh = await open(path, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Creates the loop adapter (the init of `api.registerBlockDevice`). */
export async function createLoopAdapter(
  api: PluginApi,
  ctx: BlockDeviceContext,
): Promise<BlockDeviceAdapter<VolumeFields, SnapshotFields>> {
  const log = ctx.log;
  const schemas = createSchemas(api);
  const cfg = await loadOrCreateConfig(api, schemas, {
    root: resolve(ctx.root),
    config: ctx.options,
    log,
  });
  const loop = new LoopDevices(api, { cfg, log });
  await loop.init();
  return loop.adapter();
}

class LoopDevices {
  #api: PluginApi;
  #cfg: LoopConfig;
  #log: Logger;
  #reflink = false;
  #comparer: ImageComparer;

  constructor(api: PluginApi, opts: { cfg: LoopConfig; log: Logger }) {
    this.#api = api;
    this.#cfg = opts.cfg;
    this.#log = opts.log;
    this.#comparer = new ImageComparer(api, { log: opts.log, reflink: () => this.#reflink });
  }

  #imagePath(name: string): string {
    return join(this.#cfg.Path, `${name}.img`);
  }
  #snapshotDir(volume: string): string {
    return join(this.#cfg.SnapshotPath, volume);
  }
  #tmpImage(name: string): string {
    return join(this.#cfg.Path, `${TMP_PREFIX}${name}-${this.#api.util.randomId()}.img`);
  }

  /** Creates the folders and detects reflinks. */
  async init(): Promise<void> {
    for (const dir of [this.#cfg.Path, this.#cfg.SnapshotPath]) {
      await this.#api.util.ensureDir(dir);
    }
    this.#reflink = await this.#probeReflink();
  }

  /** True when a reflink copy from loop.path to the snapshot folder works. */
  async #probeReflink(): Promise<boolean> {
    const id = this.#api.util.randomId();
    const src = join(this.#cfg.Path, `${TMP_PREFIX}reflink-probe-${id}`);
    const dst = join(this.#cfg.SnapshotPath, `${TMP_PREFIX}reflink-probe-${id}`);
    try {
      await writeFile(src, "convoy loop reflink probe\n");
      await this.#api.exec("cp", ["--reflink=always", src, dst]);
      this.#log.info("Snapshots are reflink copies", { path: this.#cfg.Path });
      return true;
    } catch (err) {
      this.#log.info("Snapshots are sparse copies (no reflinks here)", { path: this.#cfg.Path });
      this.#log.debug("reflink probe failed", { error: this.#api.errors.errorMessage(err) });
      return false;
    } finally {
      await rm(src, { force: true });
      await rm(dst, { force: true });
    }
  }

  /** Removes what interrupted operations left; `recorded` are the volumes with a record. */
  async #cleanLeftovers(recorded: Set<string>): Promise<void> {
    // Images of interrupted creates and restores.
    for (const entry of await readdir(this.#cfg.Path)) {
      if (!entry.startsWith(TMP_PREFIX)) continue;
      const path = join(this.#cfg.Path, entry);
      this.#log.info("Removing an unfinished volume image", { path });
      try {
        await this.#detachAll(path);
        await rm(path, { recursive: true, force: true });
      } catch (err) {
        this.#log.warn(`Cannot remove "${path}": ${this.#api.errors.errorMessage(err)}`, { path });
      }
    }
    // Unfinished snapshot copies, and the snapshots of volumes that no longer exist.
    for (const volume of await readdir(this.#cfg.SnapshotPath)) {
      const dir = join(this.#cfg.SnapshotPath, volume);
      if (volume.startsWith(TMP_PREFIX)) {
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      if (!(await stat(dir)).isDirectory()) continue;
      if (!recorded.has(volume)) {
        this.#log.info(`Removing the snapshots of volume "${volume}": volume does not exist`, {
          path: dir,
        });
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      for (const entry of await readdir(dir)) {
        if (!entry.startsWith(TMP_PREFIX)) continue;
        this.#log.info("Removing an unfinished snapshot copy", { path: join(dir, entry) });
        await rm(join(dir, entry), { force: true });
      }
    }
    // Images without a record: kept by a reference-only delete (or a crash during delete).
    for (const entry of await readdir(this.#cfg.Path)) {
      const m = IMAGE_FILE.exec(entry);
      if (!m || entry.startsWith(".") || recorded.has(m[1])) continue;
      this.#log.info(
        `Image "${join(this.#cfg.Path, entry)}" belongs to no volume: ` +
          `creating volume "${m[1]}" adopts it`,
        { volume: m[1] },
      );
    }
  }

  async #statOrUndefined(path: string) {
    try {
      return await stat(path);
    } catch (err) {
      if (this.#api.util.errno(err) === "ENOENT") return undefined;
      throw err;
    }
  }

  /** The loop devices `image` is attached to. */
  async #findDevices(image: string): Promise<string[]> {
    const { stdout } = await this.#api.exec("losetup", [
      "--list",
      "--noheadings",
      "--output",
      "NAME",
      "--associated",
      image,
    ]);
    return stdout.split("\n").map((l) => l.trim()).filter(Boolean);
  }

  async #attach(image: string): Promise<string> {
    const args = ["--find", "--show"];
    if (this.#cfg.DirectIO) args.push("--direct-io=on");
    const { stdout } = await this.#api.exec("losetup", [...args, image]);
    const device = stdout.trim();
    if (!device.startsWith("/dev/")) {
      throw new this.#api.errors.BackendError(
        `losetup printed no device for "${image}": ${JSON.stringify(stdout)}`,
      );
    }
    return device;
  }

  async #detachAll(image: string): Promise<void> {
    for (const device of await this.#findDevices(image)) {
      await this.#api.exec("losetup", ["--detach", device]);
    }
  }

  /** An existing attachment of the volume's image (never a second one), or a new one. */
  async #activate(vol: Volume): Promise<{ path: string }> {
    const image = vol.fields.Path;
    if (!(await this.#statOrUndefined(image))) {
      throw new this.#api.errors.BackendError(`the image "${image}" does not exist`);
    }
    const devices = await this.#findDevices(image);
    let device = devices[0];
    if (devices.length > 1) {
      this.#log.warn(`Image "${image}" is attached more than once: using "${device}"`, {
        volume: vol.name,
        devices,
      });
    }
    if (!device) {
      device = await this.#attach(image);
      this.#log.info(`Attached volume "${vol.name}" to "${device}"`, {
        volume: vol.name,
        device,
        image,
      });
    }
    return { path: device };
  }

  /** A staged image of `size` bytes, renamed to `image` by commit. */
  async #stage(image: string, size: number, what: string) {
    const tmp = this.#tmpImage(image.slice(this.#cfg.Path.length + 1, -4));
    try {
      await createSparse(tmp, size);
    } catch (err) {
      await rm(tmp, { force: true });
      if (!isFileTooLarge(err)) throw err;
      // The filesystem's refusal of the size is bad input, not a failure.
      throw new this.#api.errors.InvalidArgumentError(
        `size ${sizeText(size)} exceeds what the filesystem at "${this.#cfg.Path}" allows`,
        { cause: err },
      );
    }
    return {
      path: tmp,
      commit: async () => {
        await fsyncFile(tmp);
        if (await this.#statOrUndefined(image)) {
          throw new this.#api.errors.ConflictError(`${what}the image "${image}" exists`);
        }
        await rename(tmp, image);
      },
      discard: () => rm(tmp, { force: true }),
    };
  }

  /**
   * A reflink (or, failing that, a sparse) copy of an image; the host has frozen a mounted
   * filesystem.
   */
  async #copyImage(src: string, dst: string): Promise<void> {
    if (this.#reflink) {
      try {
        await this.#api.exec("cp", ["--reflink=always", src, dst], {
          timeoutMs: LONG_COMMAND_TIMEOUT_MS,
        });
        return;
      } catch (err) {
        this.#log.warn(
          `Reflink copy of "${src}" failed, making a sparse copy: ${
            this.#api.errors.errorMessage(err)
          }`,
        );
        await rm(dst, { force: true });
      }
    }
    await this.#api.exec("cp", ["--sparse=always", src, dst], {
      timeoutMs: LONG_COMMAND_TIMEOUT_MS,
    });
  }

  /** A snapshot's image; NotFoundError when it is gone. */
  async #snapshotImage(vol: Volume, snap: { name: string; fields: SnapshotFields }) {
    const file = snap.fields.FilePath;
    if (!(await this.#statOrUndefined(file))) {
      throw new this.#api.errors.NotFoundError(
        `Cannot read snapshot "${snap.name}" of volume "${vol.name}": its image "${file}" does not exist`,
      );
    }
    return { file, name: snap.name };
  }

  adapter(): BlockDeviceAdapter<VolumeFields, SnapshotFields> {
    const z = this.#api.deps.z;
    const errors = this.#api.errors;
    const cfg = this.#cfg;
    return {
      capabilities: {
        filesystem: cfg.Filesystem,
        sizeAlignment: SIZE_ALIGNMENT,
        defaultSize: cfg.DefaultVolumeSize,
      },
      volumeFields: z.looseObject({ Path: z.string() }),
      snapshotFields: z.looseObject({ FilePath: z.string() }),

      start: async (volumes) => {
        await this.#cleanLeftovers(new Set(volumes.map((v) => v.name)));
      },

      createDevice: async (req) => {
        const { name, size } = req;
        const image = this.#imagePath(name);
        // Snapshots left by an older volume of the same name are not this volume's.
        await rm(this.#snapshotDir(name), { recursive: true, force: true });
        const kept = await this.#statOrUndefined(image);
        if (req.restore) {
          if (kept) throw new errors.ConflictError(`the image "${image}" exists`);
          return { fields: { Path: image }, size, staging: await this.#stage(image, size, "") };
        }
        if (!kept) {
          return { fields: { Path: image }, size, staging: await this.#stage(image, size, "") };
        }
        if (!kept.isFile()) throw new errors.ConflictError(`"${image}" exists and is not a file`);
        if (req.sizeRequested && size !== kept.size) {
          throw new errors.InvalidArgumentError(
            `the image "${image}" kept from an earlier volume is ${kept.size} bytes, not ${size}`,
          );
        }
        this.#log.info(`Adopting the image "${image}" kept from an earlier volume "${name}"`, {
          volume: name,
          size: kept.size,
        });
        return { fields: { Path: image }, size: kept.size, adopted: true };
      },

      removeDevice: async (vol, { keepData }) => {
        await this.#detachAll(vol.fields.Path);
        await rm(this.#snapshotDir(vol.name), { recursive: true, force: true });
        if (!keepData) await rm(vol.fields.Path, { force: true });
      },

      activate: (vol) => this.#activate(vol),
      deactivate: (vol) => this.#detachAll(vol.fields.Path),

      createSnapshot: async (vol, { name: snap }) => {
        const dir = this.#snapshotDir(vol.name);
        const final = join(dir, `${snap}.img`);
        const tmp = join(dir, `${TMP_PREFIX}${snap}-${this.#api.util.randomId()}.img`);
        try {
          await this.#api.util.ensureDir(dir);
          // A file without a record entry is left from a crash: it was never a snapshot.
          await rm(final, { force: true });
          await this.#copyImage(vol.fields.Path, tmp);
          await fsyncFile(tmp);
          await rename(tmp, final);
        } catch (err) {
          await rm(tmp, { force: true });
          throw err;
        }
        return { fields: { FilePath: final } };
      },
      removeSnapshot: async (_vol, snap) => {
        await rm(snap.fields.FilePath, { force: true });
      },

      openSnapshot: async (vol, snap) => {
        const { file } = await this.#snapshotImage(vol, snap);
        return { kind: "file", path: file };
      },
      compareSnapshots: async (vol, snap, base, ctx) => {
        const a = await this.#snapshotImage(vol, snap);
        const b = base ? await this.#snapshotImage(vol, base) : undefined;
        return await this.#comparer.compare(a, b, { volume: vol.name, signal: ctx?.signal });
      },

      info: () => ({
        Root: cfg.Root,
        Path: cfg.Path,
        SnapshotPath: cfg.SnapshotPath,
        DefaultVolumeSize: String(cfg.DefaultVolumeSize),
        Filesystem: cfg.Filesystem,
        DirectIO: String(cfg.DirectIO),
        Reflink: String(this.#reflink),
      }),
      volumeInfo: (vol) => ({ Path: vol.fields.Path }),
      snapshotInfo: (_vol, snap) => ({ FilePath: snap.fields.FilePath }),
    };
  }
}
