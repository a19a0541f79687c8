// Builds one JavaScript compute function into a component for
// wit/compute.wit: `node build.mjs SOURCE.js WIT_DIR OUT.wasm`.
//
// Through componentize-js's JavaScript API: its `componentize` command
// line failed here with a path error.

import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const [sourcePath, witPath, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node build.mjs SOURCE.js WIT_DIR OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: "compute-function",
  // A compute function needs neither HTTP nor an incoming fetch event;
  // stdio stays, so an uncaught error's message reaches the node.
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
