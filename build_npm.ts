/**
 * Builds the npm package for Node (tsc to dist/). Not built yet: the npm build has its own
 * issue. Run `npx deno run -A src/bin.ts` (Deno) or the single binary (`deno task compile`).
 */
console.error("build_npm.ts: the npm build is not implemented yet (see the open issues)");
process.exit(1);
