/** The vfs driver runs the driver conformance suite (src/testing/conformance.ts). */
import { driverConformance, pluginInit } from "../../conformance.ts";
import setup from "./mod.ts";

driverConformance({ name: "vfs", init: pluginInit(setup, "vfs") });
