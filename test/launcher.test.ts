/**
 * The installed `berth` command (scripts/install-launchers.sh): the client (helper/berth-client.c),
 * which, with no warm process to hand the command to, execs the launcher: from the V8 start-up
 * snapshot when the node binary is the one that made it, from the bundle when node has changed
 * since (a snapshot made by another node would not load). test/warm.test.ts covers the warm path.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, utimesSync, writeFileSync, chmodSync, statSync } from "node:fs";
import { join } from "node:path";
import { project, rootSkip, tempDir } from "./helpers.js";

const noSnapshot = existsSync(join(project, "dist/berth.blob.node")) ? false : "the build made no start-up snapshot (scripts/build-snapshot.sh)";

test("the launcher uses the snapshot with the node that made it, and the bundle after node changed", { skip: rootSkip || noSnapshot }, () => {
  const bin = tempDir("berth-launchers-");
  // a "node" of our own: it runs the real one and says which way berth was started
  const fakeNode = join(bin, "node");
  writeFileSync(fakeNode, `#!/bin/sh\ncase "$1" in --snapshot-blob) echo via=snapshot >&2;; *) echo via=bundle >&2;; esac\nexec ${process.execPath} "$@"\n`);
  chmodSync(fakeNode, 0o755);
  const r0 = spawnSync("sh", [join(project, "scripts/install-launchers.sh"), fakeNode, bin], { encoding: "utf8" });
  assert.equal(r0.status, 0, r0.stderr);
  assert.equal(readFileSync(join(bin, "berth")).subarray(0, 4).toString("latin1"), "\x7fELF", "berth is the client");
  assert.match(readFileSync(join(bin, ".berth-launcher"), "utf8"), /^#!\/bin\/sh\n/);
  // no pool at that socket: the client runs the launcher
  const env: NodeJS.ProcessEnv = { ...process.env, BERTH_ROOT: tempDir("berth-launch-root-"), BERTH_RUNTIME_ROOT: tempDir("berth-launch-rt-"), BERTH_WARM_SOCKET: join(bin, "no-pool.sock") };
  delete env.NODE_EXTRA_CA_CERTS;
  const run = () => spawnSync(join(bin, "berth"), ["version"], { encoding: "utf8", env });
  // node's mtime as recorded with the snapshot: the snapshot
  const made = statSync(join(project, "dist/berth.blob.node")).mtime;
  utimesSync(fakeNode, made, made);
  let r = run();
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /via=snapshot/);
  assert.match(r.stdout, /Version:|berth version/);
  assert.match(r.stdout, /Start-up: +snapshot \((trained|untrained)/, "berth version says it started from the snapshot");
  // node replaced (another mtime): the bundle
  const later = new Date(made.getTime() + 86_400_000);
  utimesSync(fakeNode, later, later);
  r = run();
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /via=bundle/);
  assert.match(r.stdout, /Version:|berth version/);
  assert.match(r.stdout, /Start-up: +bundle/, "berth version says it started from the bundle");
  // and the bundle runs the runtime too
  const rt = spawnSync(join(bin, "berth-runtime"), ["--version"], { encoding: "utf8", env });
  assert.equal(rt.status, 0, rt.stderr);
  assert.match(rt.stdout, /berth-runtime version/);
});

test("NODE_EXTRA_CA_CERTS is kept from node's start by both launchers (berth hands it to its registry client)", { skip: noSnapshot }, () => {
  const bin = tempDir("berth-launchers-");
  const r0 = spawnSync("sh", [join(project, "scripts/install-launchers.sh"), process.execPath, bin], { encoding: "utf8" });
  assert.equal(r0.status, 0, r0.stderr);
  // node reads the file at its start and warns when it cannot: no warning, no reading
  const env = { ...process.env, NODE_EXTRA_CA_CERTS: "/nonexistent/berth-test-ca.pem", BERTH_WARM: "0" };
  const direct = spawnSync(process.execPath, ["-e", "0"], { encoding: "utf8", env });
  assert.match(direct.stderr, /Ignoring extra certs/, "node itself reads the variable at start");
  for (const cmd of ["berth", "berth-runtime"]) {
    const r = spawnSync(join(bin, cmd), ["--version"], { encoding: "utf8", env });
    assert.equal(r.status, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /Ignoring extra certs/, `${cmd} started node with NODE_EXTRA_CA_CERTS`);
  }
});
