import type { PluginSetup } from "../api/plugin.ts";
import devicemapper from "../../plugins/devicemapper/mod.ts";
import ebs from "../../plugins/ebs/mod.ts";
import loop from "../../plugins/loop/mod.ts";
import vfs from "../../plugins/vfs/mod.ts";

/** A plugin compiled into every build (deno run, npm, single binaries). */
export interface BundledPlugin {
  source: string;
  setup: PluginSetup;
}

/** The bundled plugins/ folder, imported statically so single binaries embed it. */
export const bundledPlugins: BundledPlugin[] = [
  { source: "plugins/vfs/mod.ts", setup: vfs },
  { source: "plugins/loop/mod.ts", setup: loop },
  { source: "plugins/devicemapper/mod.ts", setup: devicemapper },
  { source: "plugins/ebs/mod.ts", setup: ebs },
];
