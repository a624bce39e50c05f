/** Differential: the same bundle run by runc (Debian's) and by berth-runtime looks the same inside. */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeBundle, newRoot, nsOf, rootSkip, rt, tempDir, uniqueId, type AnySpec } from "./helpers.js";

const runcPath = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).stdout.trim();
const skip = rootSkip || (runcPath ? false : "runc is not installed (npm test installs it as root)");

function runBoth(args: string[], edit?: (s: AnySpec) => void): { runc: string; berth: string } {
  const bundle = makeBundle(args, edit);
  const runcRoot = newRoot();
  const berthRoot = newRoot();
  try {
    const r = spawnSync(runcPath, ["--root", runcRoot, "run", "--bundle", bundle, uniqueId("runc")], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    assert.equal(r.status, 0, `runc: ${r.stderr}`);
    const b = rt(berthRoot, ["run", "--bundle", bundle, uniqueId()]);
    assert.equal(b.code, 0, `berth: ${b.stderr}`);
    return { runc: r.stdout, berth: b.stdout };
  } finally {
    rmSync(bundle, { recursive: true, force: true });
    rmSync(runcRoot, { recursive: true, force: true });
    rmSync(berthRoot, { recursive: true, force: true });
  }
}

/** Mount table without ids, device numbers and sizes that differ between any two runs. */
function normalizeMounts(text: string): string[] {
  return text
    .trim()
    .split("\n")
    .map((l) => {
      const [pre, post] = l.split(" - ");
      const f = pre!.split(" ");
      // mount point, per-mount options, fs type, and the source's root within its fs
      return `${f[4]} ${f[5]} ${post!.split(" ")[0]}`;
    })
    .sort();
}

describe("berth-runtime and runc agree", { skip }, () => {
  const edit = (s: AnySpec) => {
    s.process.user = { uid: 1000, gid: 1000, additionalGids: [5] };
    s.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: 512, hard: 1024 }, { type: "RLIMIT_NPROC", soft: 300, hard: 400 }];
    s.hostname = "same";
  };

  test("ids", () => {
    const { runc, berth } = runBoth(["/probe", "id"], edit);
    assert.equal(berth, runc);
  });

  test("hostname", () => {
    const { runc, berth } = runBoth(["/probe", "hostname"], edit);
    assert.equal(berth, runc);
  });

  test("rlimits", () => {
    const { runc, berth } = runBoth(["/probe", "rlimits"], edit);
    assert.equal(berth, runc);
  });

  test("capabilities and no_new_privs", () => {
    const pick = (s: string) => s.split("\n").filter((l) => /^(Cap|NoNewPrivs|Seccomp:)/.test(l)).filter((l) => !l.startsWith("Seccomp"));
    for (const e of [edit, undefined]) {
      const { runc, berth } = runBoth(["/probe", "status"], e);
      assert.deepEqual(pick(berth), pick(runc));
    }
  });

  test("/dev", () => {
    const { runc, berth } = runBoth(["/probe", "ls", "/dev"]);
    assert.deepEqual(berth.trim().split("\n").sort(), runc.trim().split("\n").sort());
  });

  test("mounts", () => {
    const { runc, berth } = runBoth(["/probe", "mounts"]);
    assert.deepEqual(normalizeMounts(berth), normalizeMounts(runc));
  });

  test("namespaces are distinct from the host's in both", () => {
    const host = nsOf("self");
    const { runc, berth } = runBoth(["/probe", "ns"]);
    const parse = (s: string) => Object.fromEntries(s.trim().split("\n").map((l) => l.split(" ")));
    for (const out of [parse(runc), parse(berth)])
      for (const n of ["cgroup", "ipc", "mnt", "net", "pid", "uts"]) assert.notEqual(out[n], host[n], n);
  });

  test("umask, cwd and environment", () => {
    for (const cmd of ["umask", "cwd", "env"]) {
      const { runc, berth } = runBoth(["/probe", cmd], edit);
      assert.deepEqual(berth.split("\n").sort(), runc.split("\n").sort(), cmd);
    }
  });

  test("recursive mount options: rro (and rnoexec) reach a bind's submounts, plain ro only the top", () => {
    const src = tempDir("berth-rro-");
    mkdirSync(join(src, "sub"));
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "berth-test-rro", join(src, "sub")]).status, 0);
    try {
      const script = "touch /mnt/a 2>/dev/null && echo top-rw || echo top-ro; touch /mnt/sub/b 2>/dev/null && echo sub-rw || echo sub-ro; grep ' /mnt' /proc/self/mountinfo | cut -d' ' -f5,6";
      const seen: Record<string, string> = {};
      for (const options of [["rbind", "ro"], ["rbind", "rro"], ["rbind", "rro", "rnoexec"]]) {
        const { runc, berth } = runBoth(["/bin/sh", "-c", script], (s) => s.mounts.push({ destination: "/mnt", type: "bind", source: src, options }));
        assert.equal(berth, runc, options.join(","));
        seen[options.join(",")] = berth;
      }
      assert.match(seen["rbind,ro"]!, /^top-ro\nsub-rw\n/);
      assert.match(seen["rbind,rro"]!, /^top-ro\nsub-ro\n\/mnt ro,relatime\n\/mnt\/sub ro,relatime\n$/);
      assert.match(seen["rbind,rro,rnoexec"]!, /\/mnt\/sub ro,noexec,relatime/);
    } finally {
      spawnSync("umount", [join(src, "sub")]);
      rmSync(src, { recursive: true, force: true });
    }
  });

  test("configs engines send that runc takes: device access \"rwa\", a hostname in a joined uts namespace, every namespace joined by path", async () => {
    /** A process with namespaces of its own, for a bundle to join by path (each run gets its own: one that joins its mount namespace pivots it). */
    const withHolder = async (fn: (ns: (t: string) => string, pid: string) => void) => {
      const holder = spawn("unshare", ["--uts", "--ipc", "--net", "--mount", "--pid", "--fork", "--cgroup", "sleep", "60"], { stdio: "ignore" });
      let pid = "";
      try {
        for (let i = 0; i < 100 && !pid; i++) {
          await new Promise((r) => setTimeout(r, 20));
          pid = spawnSync("pgrep", ["-P", String(holder.pid)], { encoding: "utf8" }).stdout.trim();
        }
        assert.ok(pid, "the holder's namespaces exist");
        fn((t) => `/proc/${pid}/ns/${({ network: "net", mount: "mnt" } as Record<string, string>)[t] ?? t}`, pid);
      } finally {
        // the sleeper (pid 1 of its namespace) by its pid, then unshare
        if (pid) process.kill(Number(pid), "SIGKILL");
        holder.kill("SIGKILL");
      }
    };
    const cases: [string, (ns: (t: string) => string) => (s: AnySpec) => void][] = [
      ["device access rwa", () => (s) => (s.linux.resources = { ...(s.linux.resources ?? {}), devices: [{ allow: false, access: "rwm" }, { allow: true, type: "c", major: 1, minor: 3, access: "rwa" }] })],
      ["hostname in a joined uts namespace", (ns) => (s) => {
        s.hostname = "joined";
        s.linux.namespaces = s.linux.namespaces.map((n: { type: string }) => (n.type === "uts" ? { type: "uts", path: ns("uts") } : n));
      }],
      ["every namespace joined by path", (ns) => (s) => {
        delete s.hostname;
        s.linux.namespaces = ["pid", "network", "ipc", "uts", "mount", "cgroup"].map((t) => ({ type: t, path: ns(t) }));
      }],
    ];
    for (const [what, edit] of cases) {
      const out: Record<string, string> = {};
      for (const who of ["runc", "berth"])
        await withHolder((ns, pid) => {
          const b = makeBundle(["/bin/hostname"], edit(ns));
          const root = newRoot();
          try {
            const r = who === "runc" ? ((x) => ({ code: x.status, stdout: x.stdout, stderr: x.stderr }))(spawnSync(runcPath, ["--root", root, "run", "--bundle", b, uniqueId("runc")], { encoding: "utf8" })) : rt(root, ["run", "--bundle", b, uniqueId()]);
            assert.equal(r.code, 0, `${who}, ${what}: ${r.stderr}`);
            out[who] = r.stdout;
            if (what.startsWith("hostname")) assert.equal(spawnSync("nsenter", ["-t", pid, "-u", "hostname"], { encoding: "utf8" }).stdout.trim(), "joined", `${who} set the hostname in the joined namespace`);
          } finally {
            rmSync(b, { recursive: true, force: true });
            rmSync(root, { recursive: true, force: true });
          }
        });
      assert.equal(out.berth, out.runc, what);
    }
  });

  test("a read-only /dev tmpfs: devices and mount points made first, read-only at the end (as runc)", () => {
    const script = "grep -E ' /dev(/pts|/shm)? ' /proc/self/mountinfo | cut -d' ' -f5,6; ls /dev/null /dev/pts/ptmx; touch /dev/x 2>&1 || true";
    const { runc, berth } = runBoth(["/bin/sh", "-c", script], (s) => {
      for (const m of s.mounts) if (m.destination === "/dev") m.options = [...(m.options ?? []), "ro"];
    });
    assert.equal(berth, runc);
    assert.match(berth, /^\/dev ro,nosuid$/m);
    assert.match(berth, /Read-only file system/);
  });

  test("rootfsPropagation shared and rshared: pivot_root works (the rootfs's parent made private), the new root shared after it", () => {
    for (const [propagation, sub] of [["shared", "-"], ["rshared", "shared"]] as const) {
      const b = makeBundle(["/bin/sh", "-c", "grep -E ' / | /proc ' /proc/self/mountinfo | cut -d' ' -f5,7"], (s) => (s.linux.rootfsPropagation = propagation));
      const root = newRoot();
      try {
        const r = rt(root, ["run", "--bundle", b, uniqueId()]);
        assert.equal(r.code, 0, `${propagation}: ${r.stderr}`);
        assert.match(r.stdout, /^\/ shared:\d+$/m, propagation);
        assert.match(r.stdout, new RegExp(`^/proc ${sub === "-" ? "-" : "shared:\\d+"}$`, "m"), `${propagation}: submounts`);
      } finally {
        rmSync(b, { recursive: true, force: true });
        rmSync(root, { recursive: true, force: true });
      }
    }
    assert.equal(readFileSync("/proc/self/mountinfo", "utf8").includes("/fixtures/"), false, "nothing propagated to the host");
  });

  test("a createContainer hook runs in the container's mount namespace with the rootfs as its cwd: its bind mount into ./etc shows inside", () => {
    const dir = tempDir("berth-cchook-");
    writeFileSync(join(dir, "content"), "from the hook\n");
    writeFileSync(join(dir, "hook.sh"), `#!/bin/sh\npwd > ${dir}/cwd-$1\nmount --bind ${dir}/content ./etc/passwd\n`);
    chmodSync(join(dir, "hook.sh"), 0o755);
    try {
      const { runc, berth } = runBoth(["/bin/cat", "/etc/passwd"], (s) => (s.hooks = { createContainer: [{ path: join(dir, "hook.sh"), args: ["hook.sh", "x"] }] }));
      assert.equal(berth, runc);
      assert.equal(berth, "from the hook\n");
      assert.match(readFileSync(join(dir, "cwd-x"), "utf8"), /\/rootfs\n$/, "the hook's working directory is the rootfs");
      assert.equal(readFileSync("/proc/self/mountinfo", "utf8").includes("/fixtures/"), false, "the hook's mount stayed in the container");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
