/** Third-party plugin sources the integration tests write into temporary plugin folders. */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Writes the two demo plugins (tsdemo.ts, jsdemo.js) into a new folder `dir`. */
export async function writeDemoPlugins(dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "tsdemo.ts"), TS_PLUGIN);
  await writeFile(join(dir, "jsdemo.js"), JS_PLUGIN);
  return dir;
}

/** A third-party driver as a user would write it: one file, `import type` only. */
export const TS_PLUGIN = `
import type { ConvoyDriver, PluginApi, StringMap } from "convoy/plugin-api";
import { mkdir, rm, stat } from "node:fs/promises";
import { join } from "node:path";

export default function setup(api: PluginApi): void {
  api.register("tsdemo", async (root: string, config: StringMap): Promise<ConvoyDriver> => {
    const vols = new Map<string, { created: string; mounted: boolean }>();
    const state = join(root, "state.json");
    const saved = await api.util.readJSON<Record<string, { created: string; mounted: boolean }>>(state);
    for (const [k, v] of Object.entries(saved ?? {})) vols.set(k, v);
    const save = () => api.util.writeJSON(state, Object.fromEntries(vols));
    const get = (id: string) => {
      const v = vols.get(id);
      if (!v) throw new api.errors.NotFoundError(\`Volume "\${id}" does not exist\`);
      return v;
    };
    const dir = (id: string) => join(root, "volumes", id);
    const volumeOps = {
      name: () => "tsdemo",
      async createVolume(id: string) {
        await mkdir(dir(id), { recursive: true });
        vols.set(id, { created: api.util.now(), mounted: false });
        await save();
      },
      async deleteVolume(id: string, opts: StringMap) {
        get(id);
        if (opts.ReferenceOnly !== "true") await rm(dir(id), { recursive: true, force: true });
        vols.delete(id);
        await save();
      },
      async mountVolume(id: string) {
        get(id).mounted = true;
        await save();
        return dir(id);
      },
      async umountVolume(id: string) {
        get(id).mounted = false;
        await save();
      },
      mountPoint: (id: string) => (get(id).mounted ? dir(id) : ""),
      getVolumeInfo: (id: string) => ({ VolumeName: id, VolumeCreatedAt: get(id).created, Greeting: config["tsdemo.greeting"] ?? "" }),
      listVolume: () => Object.fromEntries([...vols.keys()].map((k) => [k, { VolumeName: k }])),
    };
    await stat(root).catch(() => mkdir(root, { recursive: true }));
    return {
      name: () => "tsdemo",
      info: () => ({ Root: root }),
      volumeOps: () => volumeOps,
      snapshotOps: () => { throw new api.errors.NotSupportedError("tsdemo has no snapshots"); },
      backupOps: () => { throw new api.errors.NotSupportedError("tsdemo has no backups"); },
    };
  });
}
`;

/** The same kind of driver in plain JavaScript. */
export const JS_PLUGIN = `
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
export default function setup(api) {
  api.register("jsdemo", async (root) => {
    const vols = new Map();
    const notSupported = () => { throw new api.errors.NotSupportedError("jsdemo: not supported"); };
    return {
      name: () => "jsdemo",
      info: () => ({ Root: root, ApiVersion: String(api.apiVersion) }),
      volumeOps: () => ({
        name: () => "jsdemo",
        createVolume: async (id) => { await mkdir(join(root, id), { recursive: true }); vols.set(id, api.util.now()); },
        deleteVolume: (id) => { vols.delete(id); },
        mountVolume: (id) => join(root, id),
        umountVolume: () => {},
        mountPoint: () => "",
        getVolumeInfo: (id) => {
          if (!vols.has(id)) throw new api.errors.NotFoundError("no volume " + id);
          return { VolumeName: id, VolumeCreatedAt: vols.get(id) };
        },
        listVolume: () => Object.fromEntries([...vols.keys()].map((k) => [k, { VolumeName: k }])),
      }),
      snapshotOps: notSupported,
      backupOps: notSupported,
    };
  });
}
`;
