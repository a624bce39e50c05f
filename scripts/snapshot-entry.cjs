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
const m = { exports: {} };
script.runInThisContext()(m.exports, require, m, file, dist);
