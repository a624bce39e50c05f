/**
 * cgroup v2 on a real kernel: boots Debian's kernel under qemu with only the unified hierarchy and
 * runs the cgroup and lifecycle suites inside (scripts/cgroup2-vm.sh; ~1 minute under TCG).
 * Set BERTH_SKIP_VM=1 to leave it out of a quick local run.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { layout } from "../src/cgroups/index.js";
import { project, rootSkip } from "./helpers.js";

const skip =
  rootSkip ||
  (process.env.BERTH_SKIP_VM ? "BERTH_SKIP_VM is set" : false) ||
  (process.arch !== "x64" ? "the cgroup v2 guest is built for x86_64" : false) ||
  (layout() === "v2" ? "this host already runs cgroup v2: the suites ran on it directly" : false) ||
  (process.env.BERTH_IN_VM ? "already inside the guest" : false);

test("the cgroup and lifecycle suites pass on a real cgroup v2 kernel", { skip, timeout: 900_000 }, () => {
  const r = spawnSync("sh", [join(project, "scripts/cgroup2-vm.sh"), "dist/test/cgroups.test.js", "dist/test/runtime-lifecycle.test.js"], {
    cwd: project,
    encoding: "utf8",
    timeout: 900_000,
  });
  const out = r.stdout + r.stderr;
  assert.match(out, /cgroup2 controllers: .*memory.*pids/, "the guest booted with the unified hierarchy");
  // The failing tests' names and errors first: CI shows the start of a long message.
  const failures = out.slice(out.lastIndexOf("✖ failing tests")).split("\n").slice(0, 60).join("\n");
  assert.equal(r.status, 0, `${out.includes("✖ failing tests") ? failures : ""}\n--- the guest's last lines:\n${out.slice(-3000)}`);
  assert.match(out, /ℹ fail 0/);
});
