/**
 * Node 20, 22 and 24 are all supported: the root-free unit tests (`npm run test:unit`) run on Node
 * 22 and 24 too, from npm's node-linux-<arch> packages that npm test's setup caches in build/cache.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { project } from "./helpers.js";

// the files npm run test:unit runs (package.json)
const unit = (JSON.parse(readFileSync(join(project, "package.json"), "utf8")).scripts["test:unit"] as string).split(" ").filter((a) => a.startsWith("dist/test/"));

for (const v of ["22", "24"]) {
  const bin = join(project, `build/cache/node${v}/node_modules/node-linux-${process.arch}/bin/node`);
  test(`the unit tests pass on Node ${v}`, { skip: !existsSync(bin) && `Node ${v} is not installed (npm test's setup installs it from npm)` }, () => {
    assert.ok(unit.length >= 4, `unit test files: ${unit.join(" ")}`);
    const version = spawnSync(bin, ["--version"], { encoding: "utf8" }).stdout.trim();
    assert.match(version, new RegExp(`^v${v}\\.`));
    // a runner of its own, not a child reporting to this one (NODE_TEST_CONTEXT)
    const env: NodeJS.ProcessEnv = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_EXTRA_CA_CERTS;
    const r = spawnSync(bin, ["--test", "--test-reporter=tap", ...unit], { cwd: project, encoding: "utf8", timeout: 180_000, env });
    assert.equal(r.status, 0, `Node ${version}: ${r.stdout.slice(-3000)}${r.stderr.slice(-1000)}`);
    assert.match(r.stdout, /^# fail 0$/m);
    assert.match(r.stdout, /^# pass [1-9]\d*$/m);
  });
}
