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

function bootGuest(): { status: number | null; out: string } {
  const r = spawnSync("sh", [join(project, "scripts/cgroup2-vm.sh"), "dist/test/cgroups.test.js", "dist/test/runtime-lifecycle.test.js"], {
    cwd: project,
    encoding: "utf8",
    timeout: 900_000,
  });
  return { status: r.status, out: r.stdout + r.stderr };
}

/** The failing tests' names and errors first (CI shows the start of a long message), then the tail. */
function failureReport(out: string): string {
  const at = out.lastIndexOf("✖ failing tests");
  return `${at >= 0 ? out.slice(at).split("\n").slice(0, 60).join("\n") : ""}\n--- the guest's last lines:\n${out.slice(-3000)}`;
}

test("the cgroup and lifecycle suites pass on a real cgroup v2 kernel", { skip, timeout: 1_800_000 }, (t) => {
  let { status, out } = bootGuest();
  assert.match(out, /cgroup2 controllers: .*memory.*pids/, "the guest booted with the unified hierarchy");
  if (status !== 0) {
    // The guest is emulated (TCG) and its timing swings with the host's load: one more boot tells
    // a flake from a failure, and the first run's failures stay in the report either way.
    t.diagnostic(`first guest run failed; booting again. ${failureReport(out).slice(0, 4000)}`);
    ({ status, out } = bootGuest());
  }
  assert.equal(status, 0, failureReport(out));
  assert.match(out, /ℹ fail 0/);
});
