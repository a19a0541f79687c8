// Builds one JavaScript compute function into a component for
// wit/compute.wit: `node build.mjs SOURCE.js WIT_DIR OUT.wasm`.
//
// Through componentize-js's JavaScript API: its `componentize` command
// line failed here with a path error.
//
// componentize-js runs a module's top-level code, then snapshots the
// engine into the component. So the source is built behind a small entry
// module that calls `compute` once at the top level: the snapshot then
// holds the function already compiled, and every fresh instance, one per
// request, skips compiling it again (measured: a fifth less time a call).
// A compute function is pure, so that first call leaves nothing else
// behind.

import { componentize } from "@bytecodealliance/componentize-js";
import { cp, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";

const [sourcePath, witPath, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node build.mjs SOURCE.js WIT_DIR OUT.wasm");
  process.exit(2);
}

const staging = await mkdtemp(join(tmpdir(), "compute-js-"));
try {
  // The source's siblings come along: it may import them.
  await cp(dirname(sourcePath), staging, {
    recursive: true,
    filter: (path) => !path.includes("node_modules"),
  });
  const entry = join(staging, ".warmed-entry.js");
  await writeFile(
    entry,
    `import { compute } from "./${basename(sourcePath)}";
export { compute };
try {
  compute(new TextEncoder().encode("0"));
} catch {
  // A function may refuse the warm-up input; it is compiled all the same.
}
`,
  );
  const { component } = await componentize({
    sourcePath: entry,
    witPath,
    worldName: "compute-function",
    // A compute function needs neither HTTP nor an incoming fetch event;
    // stdio stays, so an uncaught error's message reaches the node.
    disableFeatures: ["http", "fetch-event"],
  });
  await writeFile(out, component);
} finally {
  await rm(staging, { recursive: true, force: true });
}
