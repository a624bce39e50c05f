// A warm process of `berth system warm` (src/cli/berth/warm.ts, src/cli/warm-spare.ts) loaded from
// a bundle through V8's code cache, as the launchers load theirs, waiting on the pool's listening
// socket, fd 4: berth-runtime's (`runtime`), or berth's when node cannot start from berth's
// start-up snapshot (made by another node).
// Usage: node warm-spare.cjs BUILD_DIR [berth|runtime]
"use strict";
const path = require("node:path");
const buildDir = process.argv[2];
globalThis.berthBuildDir = buildDir;
const root = path.dirname(buildDir);
const launch = require(path.join(root, "scripts", "launcher.cjs"));
if (process.argv[3] === "runtime") {
  globalThis.berthRuntimeWarmFd = 4; // the bundle's entry waits for a command instead of running argv
  launch(path.join(root, "dist", "berth-runtime.cjs"));
} else {
  launch(path.join(root, "dist", "berth-snapshot.cjs"));
  globalThis.berthWarmSpare(4);
}
