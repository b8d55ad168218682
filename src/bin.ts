#!/usr/bin/env node
import process from "node:process";
import { main } from "./main.ts";
import { followLauncher, needsYoungGenCap, runWithYoungGenCap } from "./runtime/young_gen.ts";

const argv = process.argv.slice(2);
followLauncher();
const run = needsYoungGenCap(argv, { env: process.env, execArgv: process.execArgv })
  ? runWithYoungGenCap(argv)
  : main(argv);
run.then((code) => process.exit(code), (err) => {
  process.stderr.write(`convoy: ${(err as Error)?.message ?? err}\n`);
  process.exit(1);
});
