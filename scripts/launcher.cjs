// The installed `berth` and `berth-runtime` commands load their one-file bundle through this:
// compiled once, the code is cached beside the bundle (V8's code cache), so later starts skip
// compiling it. A stale or foreign cache is rejected by V8 and rewritten.
"use strict";
const fs = require("node:fs");
const vm = require("node:vm");
const Module = require("node:module");
const path = require("node:path");
module.exports = function launch(file) {
  const cacheFile = `${file}.v8cache-${process.version}`;
  const source = fs.readFileSync(file, "utf8").replace(/^#!/, "//"); // a shebang is not JavaScript
  let cachedData;
  try {
    cachedData = fs.readFileSync(cacheFile);
  } catch {}
  const script = new vm.Script(Module.wrap(source), { filename: file, ...(cachedData ? { cachedData } : {}) });
  if (!cachedData || script.cachedDataRejected)
    process.once("exit", () => {
      try {
        const tmp = `${cacheFile}.${process.pid}`;
        fs.writeFileSync(tmp, script.createCachedData());
        fs.renameSync(tmp, cacheFile);
      } catch {}
    });
  const m = new Module(file, module);
  m.filename = file;
  m.paths = Module._nodeModulePaths(path.dirname(file));
  script.runInThisContext()(m.exports, Module.createRequire(file), m, file, path.dirname(file));
};
