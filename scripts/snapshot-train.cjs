// One training run for berth's start-up snapshot (scripts/train-snapshot.sh): loads the snapshot's
// bundle with the V8 code cache gathered so far, runs one berth command, and writes the cache back
// at exit, now holding the bytecode of every function that command ran. build-snapshot.sh bakes
// that bytecode into the snapshot, so a start does not compile the functions a run needs.
//   BERTH_TRAIN_CACHE=FILE node scripts/snapshot-train.cjs BUNDLE ARGS...
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const Module = require("node:module");
const path = require("node:path");
const [bundle, ...args] = process.argv.slice(2);
const file = path.resolve(bundle);
const cacheFile = process.env.BERTH_TRAIN_CACHE;
const source = fs.readFileSync(file, "utf8");
let cachedData;
try {
  cachedData = fs.readFileSync(cacheFile);
} catch {}
const script = new vm.Script(Module.wrap(source), { filename: file, ...(cachedData ? { cachedData } : {}) });
process.once("exit", () => {
  const tmp = `${cacheFile}.${process.pid}`;
  fs.writeFileSync(tmp, script.createCachedData());
  fs.renameSync(tmp, cacheFile);
});
const m = new Module(file, module);
m.filename = file;
m.paths = Module._nodeModulePaths(path.dirname(file));
globalThis.berthBuildDir = path.join(path.dirname(file), "../build");
process.argv = [process.argv[0], file, ...args];
script.runInThisContext()(m.exports, Module.createRequire(file), m, file, path.dirname(file));
globalThis.berthRun();
