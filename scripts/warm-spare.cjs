// A warm process of `berth system warm` (src/cli/berth/warm.ts) when node cannot start from berth's
// start-up snapshot (made by another node): the snapshot's bundle loaded through V8's code cache,
// as the launchers load theirs, waiting on the pool's listening socket, fd 4.
// Usage: node warm-spare.cjs BUILD_DIR
"use strict";
const path = require("node:path");
const buildDir = process.argv[2];
globalThis.berthBuildDir = buildDir;
const root = path.dirname(buildDir);
require(path.join(root, "scripts", "launcher.cjs"))(path.join(root, "dist", "berth-snapshot.cjs"));
globalThis.berthWarmSpare(4);
