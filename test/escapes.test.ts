/**
 * Escape regressions: each test fails on the vulnerable behaviour it is named after.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { fixtureRootfs, makeBundle, newRoot, rootSkip, rt, runIn, tempDir, uniqueId } from "./helpers.js";

const root = newRoot();
after(() => rmSync(root, { recursive: true, force: true }));

describe("escape regressions", { skip: rootSkip }, () => {
  test("CVE-2019-5736 class: the runtime's binary behind a waiting init cannot be opened from inside", () => {
    // Until `start`, the container's pid 1 is berth-helper (a host binary) waiting on the exec fifo.
    const b = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    assert.equal(rt(root, ["create", "--bundle", b, id]).code, 0);
    const r = rt(root, ["exec", id, "/bin/sh", "-c", "/probe open /proc/1/exe; /probe open /proc/1/exe w; /probe readlink /proc/1/exe; for f in /proc/1/fd/*; do /probe readlink $f; done | sort -u"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^error \/proc\/1\/exe: Permission denied$/);
    assert.match(lines[1]!, /^error \/proc\/1\/exe: Permission denied$/);
    assert.equal(lines[2], "Permission denied", "not even the helper's path is visible");
    assert.deepEqual(lines.slice(3), ["Permission denied"], "nor its file descriptors (they include host directories)");
    // A container process holding CAP_SYS_PTRACE passes the dumpable check (as with runc), so the
    // binary it would reach is a sealed in-memory copy: nothing on the host to overwrite.
    const privileged = rt(root, ["exec", "--cap", "CAP_SYS_PTRACE", id, "/bin/sh", "-c", "/probe readlink /proc/1/exe; /probe open /proc/1/exe w"]);
    assert.match(privileged.stdout, /^\/memfd:berth-helper \(deleted\)\nerror \/proc\/1\/exe: (Operation not permitted|Text file busy)\n$/, privileged.stderr);
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    rmSync(b, { recursive: true });
  });

  test("CVE-2024-21626 class: no host file descriptor or host cwd reaches the container", () => {
    const r = runIn(["/bin/sh", "-c", "/probe ls /proc/self/fd; /probe readlink /proc/self/cwd"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    const fds = lines.slice(0, -1).map((l) => l.split(" ")[0]).sort();
    assert.deepEqual(fds, ["0", "1", "2", "3"], "stdio and the probe's own directory fd only");
    assert.equal(lines.at(-1), "/");
    // exec'd processes too
    const b = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    assert.equal(rt(root, ["run", "-d", "--bundle", b, id]).code, 0);
    const e = rt(root, ["exec", "--cwd", "/tmp", id, "/bin/sh", "-c", "/probe ls /proc/self/fd; /probe readlink /proc/self/cwd"]);
    const elines = e.stdout.trim().split("\n");
    assert.deepEqual(elines.slice(0, -1).map((l) => l.split(" ")[0]).sort(), ["0", "1", "2", "3"]);
    assert.equal(elines.at(-1), "/tmp");
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    rmSync(b, { recursive: true });
  });

  test("CVE-2019-16884 class: an image whose /proc is a symlink is refused (procfs goes on an ordinary directory, as runc)", () => {
    const rootfs = tempDir("berth-test-rootfs-");
    cpSync(fixtureRootfs, rootfs, { recursive: true, verbatimSymlinks: true });
    rmSync(join(rootfs, "proc"), { recursive: true });
    mkdirSync(join(rootfs, "fakeproc"));
    symlinkSync("/fakeproc", join(rootfs, "proc"));
    const r = runIn(["/bin/sh", "-c", "/probe cat /proc/keys | wc -c; /probe write /proc/sys/kernel/hostname x; /probe pid"], (s) => (s.root.path = rootfs));
    assert.equal(r.code, 1, "an unmasked /proc must never be reachable");
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /proc must be mounted on an ordinary directory: \/proc in the rootfs is a symlink/);
    assert.deepEqual(readdirSync(join(rootfs, "fakeproc")), [], "nothing was mounted through the link");
    rmSync(rootfs, { recursive: true });
  });

  test("CVE-2021-30465 class: a mount destination swapped for a symlink stays inside the rootfs", () => {
    // The race swaps a directory for a symlink between check and mount; resolving every mount
    // destination with RESOLVE_IN_ROOT at mount time makes the swapped-in link point inside.
    const rootfs = tempDir("berth-test-rootfs-");
    cpSync(fixtureRootfs, rootfs, { recursive: true, verbatimSymlinks: true });
    const victim = tempDir("berth-test-victim-");
    mkdirSync(join(rootfs, "swapped"));
    renameSync(join(rootfs, "swapped"), join(rootfs, "swapped-was-here"));
    symlinkSync(victim, join(rootfs, "swapped"));
    const r = runIn(["/probe", "ls", victim], (s) => {
      s.root.path = rootfs;
      s.mounts.push({ destination: "/swapped", type: "tmpfs", source: "tmpfs", options: ["size=1m"] });
    });
    assert.equal(r.code, 0, r.stderr);
    const hostMounts = runIn(["/probe", "id"]).code; // any run: the host's mount table is what matters
    assert.equal(hostMounts, 0);
    assert.doesNotMatch(readFileSync("/proc/self/mountinfo", "utf8"), new RegExp(victim), "nothing was mounted on the host path");
    rmSync(rootfs, { recursive: true });
    rmSync(victim, { recursive: true });
  });
});
