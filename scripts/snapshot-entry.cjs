// What node runs to make berth's start-up snapshot (scripts/build-snapshot.sh): the bundle
// dist/berth-snapshot.cjs, compiled with the code cache that training left (when there is one and
// V8 accepts it), so the snapshot keeps the bytecode of the functions berth's commands run.
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const path = require("node:path");
const dist = path.join(process.cwd(), "dist");
const file = path.join(dist, "berth-snapshot.cjs");
let cachedData;
try {
  cachedData = fs.readFileSync(path.join(dist, "berth-snapshot.v8cache"));
} catch {}
// wrapped as the training wrapped it: a code cache belongs to one exact source text
const script = new vm.Script(require("node:module").wrap(fs.readFileSync(file, "utf8")), { filename: file, ...(cachedData ? { cachedData } : {}) });
if (cachedData) process.stderr.write(script.cachedDataRejected ? "build-snapshot: training cache is stale, not used\n" : "build-snapshot: with the training cache\n");
// kept in the snapshot: what `berth version` reports about the start it made
globalThis.berthSnapshot = { trained: !!cachedData && !script.cachedDataRejected };
const m = { exports: {} };
script.runInThisContext()(m.exports, require, m, file, dist);
// Node's own functions that berth's commands call, compiled now too (scripts/snapshot-warmup.cjs;
// an entry script can require only built-in modules, so it is loaded the way the bundle is)
const warmupFile = path.join(process.cwd(), "scripts", "snapshot-warmup.cjs");
const warmup = { exports: {} };
new vm.Script(require("node:module").wrap(fs.readFileSync(warmupFile, "utf8")), { filename: warmupFile }).runInThisContext()(warmup.exports, require, warmup, warmupFile, path.dirname(warmupFile));
warmup.exports();
// What a start from the snapshot runs (no entry script to find, read and compile: ~2 ms): berth's
// main, with the arguments after node's own (`node --snapshot-blob BLOB FLAGS -- ARGS`), told where
// its binaries are (this checkout's build/, known now).
const buildDir = path.join(process.cwd(), "build");
// A warm process of `berth system warm` starts the same way and waits for its command on the
// pool's socket (the fd in BERTH_WARM_SPARE_FD) instead.
require("node:v8").startupSnapshot.setDeserializeMainFunction(() => {
  globalThis.berthBuildDir ??= buildDir;
  const spare = process.env.BERTH_WARM_SPARE_FD;
  if (spare) {
    delete process.env.BERTH_WARM_SPARE_FD;
    globalThis.berthWarmSpare(Number(spare));
  } else globalThis.berthRun(process.argv.slice(1));
});
