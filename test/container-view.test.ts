/** What the process inside sees, checked from inside with the probe: config.json → the container. */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, rmSync, symlinkSync, writeFileSync, readFileSync, existsSync, cpSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { layout } from "../src/cgroups/index.js";
import { fixtureRootfs, leaks, othersCanReach, makeBundle, newRoot, nsOf, rootSkip, rt, runIn, tempDir, uniqueId, type AnySpec } from "./helpers.js";

const ok = (r: { code: number; stdout: string; stderr: string }) => {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`);
  return r.stdout;
};

describe("the container's view", { skip: rootSkip }, () => {
  test("every namespace in the spec is new; the ones not listed are the host's", () => {
    const host = nsOf("self");
    const inside = Object.fromEntries(
      ok(runIn(["/probe", "ns"], (s) => s.linux.namespaces.push({ type: "time" })))
        .trim()
        .split("\n")
        .map((l) => l.split(" ")),
    );
    for (const n of ["cgroup", "ipc", "mnt", "net", "pid", "uts", "time"]) assert.notEqual(inside[n], host[n], `${n} namespace should be new`);
    assert.equal(inside.user, host.user, "no user namespace was asked for");
    const shared = Object.fromEntries(
      ok(runIn(["/probe", "ns"], (s) => (s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "network"))))
        .trim()
        .split("\n")
        .map((l) => l.split(" ")),
    );
    assert.equal(shared.net, host.net, "without a network entry the host's network namespace is kept");
  });

  test("pid 1, hostname and domainname", () => {
    assert.equal(ok(runIn(["/probe", "pid"])).trim(), "1 0");
    assert.equal(ok(runIn(["/probe", "hostname"], (s) => ((s.hostname = "box"), (s.domainname = "example.test")))), "box\nexample.test\n");
  });

  test("user, groups, umask, cwd, env and HOME from /etc/passwd", () => {
    const out = ok(
      runIn(["/probe", "id"], (s) => {
        s.process.user = { uid: 1000, gid: 1001, additionalGids: [5, 65534] };
      }),
    );
    assert.equal(out.trim(), "uid=1000 gid=1001 euid=1000 egid=1001 groups=5,65534");
    assert.equal(ok(runIn(["/probe", "umask"], (s) => (s.process.user.umask = 0o027))).trim(), "0027");
    assert.equal(ok(runIn(["/probe", "cwd"], (s) => (s.process.cwd = "/tmp"))).trim(), "/tmp");
    // a cwd only root may enter (0700): entered while still privileged, as runc does
    const rootfs = join(tempDir(), "rootfs");
    cpSync(fixtureRootfs, rootfs, { recursive: true, verbatimSymlinks: true });
    mkdirSync(join(rootfs, "private"), { mode: 0o700 });
    assert.equal(ok(runIn(["/probe", "cwd"], (s) => ((s.root.path = rootfs), (s.process.cwd = "/private"), (s.process.user = { uid: 42, gid: 42 })))).trim(), "/private");
    const env = ok(runIn(["/probe", "env"], (s) => (s.process.env = ["A=1", "PATH=/bin"]))).trim().split("\n");
    assert.deepEqual(env.sort(), ["A=1", "HOME=/root", "PATH=/bin"]);
  });

  test("capabilities: all five sets as given, and no_new_privs", () => {
    const status = ok(
      runIn(["/probe", "status"], (s) => {
        s.process.capabilities = {
          bounding: ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"],
          effective: ["CAP_KILL"],
          permitted: ["CAP_KILL", "CAP_CHOWN"],
          inheritable: ["CAP_CHOWN"],
          ambient: ["CAP_CHOWN"],
        };
        s.process.noNewPrivileges = true;
      }),
    );
    const field = (k: string) => BigInt("0x" + new RegExp(`${k}:\\s+([0-9a-f]+)`).exec(status)![1]);
    assert.equal(field("CapBnd"), (1n << 5n) | (1n << 10n) | 1n);
    // Ambient capabilities join the permitted and effective sets at execve.
    assert.equal(field("CapEff"), (1n << 5n) | 1n);
    assert.equal(field("CapPrm"), (1n << 5n) | 1n);
    assert.equal(field("CapInh"), 1n);
    assert.equal(field("CapAmb"), 1n);
    assert.match(status, /NoNewPrivs:\s+1/);
    // A non-root user keeps capabilities across execve only through the ambient set (as with runc).
    const nonroot = ok(runIn(["/probe", "status"], (s) => ((s.process.user = { uid: 1000, gid: 1000 }), (s.process.capabilities.inheritable = s.process.capabilities.ambient))));
    assert.match(nonroot, /CapEff:\s+0000000020000420/, "capabilities survive the switch to a non-root user");
    const plain = ok(runIn(["/probe", "status"], (s) => ((s.process.user = { uid: 1000, gid: 1000 }), (s.process.capabilities.ambient = []))));
    assert.match(plain, /CapEff:\s+0000000000000000/);
  });

  test("rlimits are applied; one above the runtime's hard limit fails with a clear error", () => {
    const out = ok(runIn(["/probe", "rlimits"], (s) => (s.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: 123, hard: 456 }, { type: "RLIMIT_CORE", soft: 0, hard: 0 }])));
    assert.match(out, /RLIMIT_NOFILE 123 456/);
    assert.match(out, /RLIMIT_CORE 0 0/);
    const hard = Number(spawnSync("sh", ["-c", "ulimit -Hn"], { encoding: "utf8" }).stdout);
    if (Number.isFinite(hard) && process.getuid?.() === 0) {
      const r = runIn(["/probe", "rlimits"], (s) => (s.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: hard * 100, hard: hard * 100 }]));
      // With CAP_SYS_RESOURCE the raise works; without it (as on these VMs) the error names the limit.
      if (r.code !== 0) assert.match(r.stderr, /setrlimit 7 .*hard limit/);
    }
  });

  test("oomScoreAdj and sysctl", () => {
    assert.equal(ok(runIn(["/probe", "cat", "/proc/self/oom_score_adj"], (s) => (s.process.oomScoreAdj = 500))).trim(), "500");
    const v = ok(runIn(["/probe", "cat", "/proc/sys/kernel/msgmax"], (s) => ((s.linux.sysctl = { "kernel.msgmax": "12345" }), (s.linux.readonlyPaths = []))));
    assert.equal(v.trim(), "12345");
  });

  test("read-only root, masked paths and read-only paths", () => {
    const w = runIn(["/probe", "write", "/file", "x"]);
    assert.match(w.stdout, /Read-only file system/);
    assert.match(ok(runIn(["/probe", "cat", "/proc/keys"])), /^$/, "masked /proc/keys reads as /dev/null");
    assert.match(ok(runIn(["/probe", "ls", "/sys/firmware"])), /^$/, "masked /sys/firmware is an empty tmpfs");
    assert.match(runIn(["/probe", "write", "/proc/sys/kernel/hostname", "x"]).stdout, /Read-only file system/);
    const rw = ok(runIn(["/probe", "write", "/tmp/f", "x"], (s) => s.mounts.push({ destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid"] })));
    assert.equal(rw.trim(), "ok");
  });

  test("mounts: flags, bind mounts of files and directories, and the mount table", () => {
    const host = tempDir();
    writeFileSync(join(host, "hello"), "from the host\n");
    const out = ok(
      runIn(["/probe", "mounts"], (s) => {
        s.mounts.push({ destination: "/home", type: "bind", source: host, options: ["rbind", "ro", "nosuid", "nodev"] });
        s.mounts.push({ destination: "/etc/hostname", type: "bind", source: join(host, "hello"), options: ["bind"] });
        s.mounts.push({ destination: "/var", type: "tmpfs", source: "tmpfs", options: ["noexec", "size=1m", "mode=700"] });
      }),
    );
    assert.match(out, / \/home ro,nosuid,nodev/);
    assert.match(out, / \/etc\/hostname /);
    assert.match(out, / \/var rw,noexec.* - tmpfs tmpfs rw,size=1024k,mode=700/);
    assert.match(out, / \/ ro,/, "the root is read-only as config.json says");
    assert.match(out, / \/proc rw.* - proc /);
    assert.match(out, / \/dev\/pts .* - devpts devpts rw,gid=5,mode=620,ptmxmode=666/);
    assert.match(out, / \/sys ro,nosuid,nodev,noexec.* - sysfs /);
    assert.equal(ok(runIn(["/probe", "cat", "/etc/hostname"], (s) => s.mounts.push({ destination: "/etc/hostname", type: "bind", source: join(host, "hello"), options: ["bind"] }))), "from the host\n");
    rmSync(host, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("idmapped bind mounts: ids on disk are seen through the mount's mapping (runc's semantics)", () => {
    const host = tempDir();
    spawnSync("chmod", ["755", host]);
    writeFileSync(join(host, "by-root"), "");
    writeFileSync(join(host, "by-1000"), "");
    spawnSync("chown", ["1000:1000", join(host, "by-1000")]);
    const idmapped = { destination: "/home", type: "bind", source: host, options: ["bind", "idmap"], uidMappings: [{ containerID: 0, hostID: 1000, size: 1 }], gidMappings: [{ containerID: 0, hostID: 1000, size: 1 }] };
    const r = runIn(["/probe", "ls", "/home"], (s) => s.mounts.push(idmapped));
    assert.equal(r.code, 0, r.stderr);
    const owners = Object.fromEntries(r.stdout.trim().split("\n").map((l) => [l.split(" ")[0], l.split(" ").slice(2, 4).join(":")]));
    assert.deepEqual(owners, { "by-root": "1000:1000", "by-1000": "65534:65534" }, "disk uid 0 appears as 1000; 1000 is unmapped");
    const plain = runIn(["/probe", "ls", "/home"], (s) => s.mounts.push({ ...idmapped, options: ["bind"], uidMappings: undefined, gidMappings: undefined }));
    assert.match(plain.stdout, /by-root 100644 0 0/);
    const bad = runIn(["/probe", "id"], (s) => s.mounts.push({ ...idmapped, gidMappings: undefined }));
    assert.match(bad.stderr, /idmapped mount \/home needs both uidMappings and gidMappings/);
    rmSync(host, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("a symlink in the rootfs never redirects a mount to the host", () => {
    const rootfs = tempDir("berth-test-rootfs-");
    cpSync(fixtureRootfs, rootfs, { recursive: true, verbatimSymlinks: true });
    const victim = tempDir("berth-test-victim-");
    // An image that points /evil at a host path; the mount must land inside the rootfs instead.
    symlinkSync(victim, join(rootfs, "evil"));
    symlinkSync("../../../../../../" + victim.slice(1), join(rootfs, "evil2"));
    const r = runIn(["/probe", "ls", "/"], (s: AnySpec) => {
      s.root.path = rootfs;
      s.mounts.push({ destination: "/evil/sub", type: "tmpfs", source: "tmpfs" });
      s.mounts.push({ destination: "/evil2/sub2", type: "tmpfs", source: "tmpfs" });
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(existsSync(join(victim, "sub")), false, "nothing was created in the host directory");
    assert.equal(existsSync(join(victim, "sub2")), false);
    assert.ok(existsSync(join(rootfs, victim, "sub")), "the mount point was made inside the rootfs");
    rmSync(rootfs, { recursive: true });
    rmSync(victim, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("/dev: default devices, linux.devices, and the standard links", () => {
    const out = ok(
      runIn(["/probe", "ls", "/dev"], (s) => {
        s.linux.devices = [{ path: "/dev/fuse-test", type: "c", major: 10, minor: 229, fileMode: 0o640, uid: 0, gid: 5 }];
      }),
    );
    const entries = Object.fromEntries(out.trim().split("\n").map((l) => [l.split(" ")[0], l]));
    for (const [name, dev] of [["null", "1:3"], ["zero", "1:5"], ["full", "1:7"], ["random", "1:8"], ["urandom", "1:9"], ["tty", "5:0"]])
      assert.match(entries[name!]!, new RegExp(`^${name} 20666 0 0 ${dev}$`));
    assert.match(entries["fuse-test"]!, /^fuse-test 20640 0 5 10:229$/);
    for (const l of ["fd", "stdin", "stdout", "stderr", "ptmx"]) assert.match(entries[l]!, /^\S+ 120777 /, `${l} is a symlink`);
    assert.equal(ok(runIn(["/probe", "readlink", "/dev/fd"])).trim(), "/proc/self/fd");
  });

  const unreachable = othersCanReach(fixtureRootfs);
  test("a new user namespace maps ids as configured", { skip: unreachable ? `the container's mapped root cannot reach the rootfs (${unreachable} is not searchable by others)` : false }, () => {
    const out = ok(
      runIn(["/probe", "cat", "/proc/self/uid_map"], (s) => {
        s.linux.namespaces.push({ type: "user" });
        s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
        s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
        s.mounts = s.mounts.filter((m: { type: string }) => m.type !== "cgroup" && m.type !== "sysfs");
      }),
    );
    assert.match(out, /^\s*0\s+100000\s+65536$/m);
  });

  test("a user namespace binds sources its mapped root cannot reach (a directory only root enters), read-only where asked, as runc", { skip: unreachable ? `the container's mapped root cannot reach the rootfs (${unreachable} is not searchable by others)` : false }, () => {
    const guarded = tempDir("berth-guarded-");
    chmodSync(guarded, 0o700); // root only: uid 100000 cannot enter
    mkdirSync(join(guarded, "data"));
    writeFileSync(join(guarded, "data", "secret"), "only-root-reaches-this\n");
    writeFileSync(join(guarded, "file"), "a-file\n");
    const edit = (s: AnySpec) => {
      s.linux.namespaces.push({ type: "user" });
      s.linux.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      s.linux.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
      s.mounts = s.mounts.filter((m: { type: string }) => m.type !== "cgroup" && m.type !== "sysfs");
      // (mount points where the mapped root may make them: the fixture's /tmp)
      s.mounts.push({ destination: "/tmp/data", type: "bind", source: join(guarded, "data"), options: ["rbind", "ro"] }, { destination: "/tmp/file", type: "bind", source: join(guarded, "file"), options: ["bind"] });
    };
    try {
      const out = ok(runIn(["/bin/sh", "-c", "cat /tmp/data/secret /tmp/file; echo x > /tmp/data/new && echo WROTE || echo READONLY"], edit));
      assert.match(out, /only-root-reaches-this/);
      assert.match(out, /a-file/);
      assert.match(out, /READONLY/);
      // runc (the oracle) binds them too
      const runc = ["/usr/sbin/runc", "/usr/bin/runc"].find((p) => existsSync(p));
      if (runc) {
        const bundle = makeBundle(["/bin/cat", "/tmp/data/secret"], edit);
        const r = spawnSync(runc, ["--root", tempDir("berth-runc-"), "run", "--bundle", bundle, uniqueId()], { encoding: "utf8" });
        rmSync(bundle, { recursive: true, force: true });
        assert.match(r.stdout, /only-root-reaches-this/, `runc: ${r.stderr}`);
      }
    } finally {
      rmSync(guarded, { recursive: true, force: true });
    }
  });

  test("joining an existing namespace by path", () => {
    const root = newRoot();
    const holder = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", holder, id]));
    const pid = JSON.parse(rt(root, ["state", id]).stdout).pid;
    const want = nsOf(pid);
    const out = ok(
      runIn(["/probe", "ns"], (s) => {
        s.linux.namespaces = s.linux.namespaces.map((n: { type: string }) =>
          n.type === "network" ? { type: "network", path: `/proc/${pid}/ns/net` } : n.type === "ipc" ? { type: "ipc", path: `/proc/${pid}/ns/ipc` } : n,
        );
      }),
    );
    assert.match(out, new RegExp(`net ${want.net!.replace(/[[\]]/g, "\\$&")}`));
    assert.match(out, new RegExp(`ipc ${want.ipc!.replace(/[[\]]/g, "\\$&")}`));
    assert.doesNotMatch(out, new RegExp(`uts ${want.uts!.replace(/[[\]]/g, "\\$&")}`));
    ok(rt(root, ["delete", "-f", id]));
    rmSync(holder, { recursive: true });
    rmSync(root, { recursive: true });
  });

  test("time namespace offsets shift CLOCK_MONOTONIC", () => {
    const host = Number(readFileSync("/proc/uptime", "utf8").split(" ")[0]);
    const out = ok(
      runIn(["/probe", "cat", "/proc/uptime"], (s) => {
        s.linux.namespaces.push({ type: "time" });
        s.linux.timeOffsets = { monotonic: { secs: 86400 * 10, nanosecs: 0 }, boottime: { secs: 86400 * 10, nanosecs: 0 } };
      }),
    );
    const inside = Number(out.split(" ")[0]);
    assert.ok(inside - host > 86400 * 10 - 60, `uptime inside ${inside} vs host ${host}`);
  });

  test("the container is in its own cgroup from the start, and leaves nothing after", () => {
    const v2 = layout() === "v2";
    const out = ok(runIn(["/bin/sh", "-c", "cat /proc/self/cgroup"], (s) => (s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "cgroup"))));
    assert.match(out, v2 ? /^0::\/berth\/t-\d+-\d+$/m : /memory:\/berth\/t-\d+-\d+/);
    if (!v2) assert.match(out, /pids:\/berth\/t-\d+-\d+/);
    const ns = ok(runIn(["/bin/sh", "-c", "cat /proc/self/cgroup"]));
    assert.match(ns, v2 ? /^0::\/$/m : /memory:\/$/m, "with a cgroup namespace the container's cgroup is its root");
    const files = v2 ? "/sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max" : "/sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max";
    const limited = ok(runIn(["/bin/sh", "-c", `cat ${files}`], (s) => (s.linux.resources = { memory: { limit: 64 * 1024 * 1024 }, pids: { limit: 42 } })));
    assert.equal(limited, `${64 * 1024 * 1024}\n42\n`, "the container sees its own limits at /sys/fs/cgroup");
    assert.deepEqual(leaks(), []);
  });

  test("sysctls the container's namespaces own are set through its own /proc/sys", () => {
    const out = ok(runIn(["/bin/sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/fs/mqueue/msg_max /proc/sys/kernel/domainname"], (s) => {
      s.linux.sysctl = { "net.ipv4.ip_forward": "1", "fs/mqueue/msg_max": "17", "kernel.domainname": "inside.test" };
      s.linux.readonlyPaths = [];
    }));
    assert.equal(out, "1\n17\ninside.test\n");
    assert.notEqual(readFileSync("/proc/sys/kernel/domainname", "utf8").trim(), "inside.test", "the host's domainname is untouched");
  });

  test("--no-pivot: a new user namespace cannot mount an unmasked procfs (the host's proc and sysfs are hidden)", () => {
    const root = newRoot();
    const b = makeBundle(["/bin/busybox", "unshare", "-mrpf", "/bin/sh", "-c", "mount -t proc none /proc && echo MOUNTED"], (s) => {
      s.process.capabilities = undefined;
      s.process.noNewPrivileges = false;
    });
    const r = rt(root, ["run", "--no-pivot", "--bundle", b, uniqueId()]);
    assert.doesNotMatch(r.stdout, /MOUNTED/, "procfs was mounted inside a --no-pivot container");
    assert.match(r.stderr, /Operation not permitted|permission denied/i, r.stderr);
    const pivot = rt(root, ["run", "--bundle", b, uniqueId()]);
    assert.doesNotMatch(pivot.stdout, /MOUNTED/, "procfs was mounted inside a pivot_root container");
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });

  test("labels the host cannot apply run only when the user opts out, with a warning", { skip: existsSync("/sys/kernel/security/apparmor") && "this host has AppArmor" }, () => {
    const r = runIn(["/probe", "id"], (s) => {
      s.process.apparmorProfile = "docker-default";
      s.annotations = { "org.berth.lsm": "optional" };
    });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /process.apparmorProfile "docker-default" cannot be applied: AppArmor is not enabled on this host; running without it/);
  });

  test("--no-pivot runs in a chroot over the moved rootfs", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "ls", "/"]);
    const r = rt(root, ["run", "--no-pivot", "--bundle", b, uniqueId()]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^probe /m);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });
});

/** A copy of the busybox fixture in which `name` is a symlink to `target`. */
function rootfsWith(name: string, target: string): string {
  const dir = join(tempDir(), "rootfs");
  cpSync(fixtureRootfs, dir, { recursive: true, verbatimSymlinks: true });
  rmSync(join(dir, name), { recursive: true, force: true });
  symlinkSync(target, join(dir, name));
  return dir;
}

describe("bad input leaves nothing behind", { skip: rootSkip }, () => {
  const cases: [string, (s: AnySpec, bundle: string) => void, RegExp][] = [
    // written over the bundle's config.json below, once the bundle exists
    ["invalid JSON", () => {}, /config.json is not valid JSON/],
    ["a missing rootfs", (s) => (s.root.path = "/nonexistent/rootfs"), /rootfs \/nonexistent\/rootfs does not exist/],
    ["an unknown namespace", (s) => s.linux.namespaces.push({ type: "bogus" }), /linux.namespaces\[\d\].type: unknown namespace type "bogus"/],
    ["a missing process.cwd", (s) => delete s.process.cwd, /process.cwd: must be an absolute path/],
    ["a mount destination with ..", (s) => s.mounts.push({ destination: "/../../etc", type: "tmpfs", source: "tmpfs" }), /destination \/..\/..\/etc contains "\.\."/],
    ["an unknown executable", (s) => (s.process.args = ["/nope"]), /exec: "\/nope": stat \/nope: No such file or directory/],
    ["a command not in PATH", (s) => (s.process.args = ["nope"]), /exec: "nope": executable file not found in \$PATH/],
    ["a bind source that does not exist", (s) => s.mounts.push({ destination: "/root", type: "bind", source: "/nonexistent/src", options: ["bind"] }), /bind source \/nonexistent\/src for \/root does not exist/],
    ["a failing mount", (s) => s.mounts.push({ destination: "/root", type: "nosuchfs", source: "none" }), /mount none \(nosuchfs\) on \/root: no such device/],
    ["a rlimit with soft above hard", (s) => (s.process.rlimits = [{ type: "RLIMIT_NOFILE", soft: 10, hard: 5 }]), /soft limit 10 is above hard limit 5/],
    ["an unknown rlimit", (s) => (s.process.rlimits = [{ type: "RLIMIT_BOGUS", soft: 1, hard: 1 }]), /unknown rlimit type RLIMIT_BOGUS/],
    ["a host sysctl (kernel.core_pattern)", (s) => (s.linux.sysctl = { "kernel.core_pattern": "|/tmp/x" }), /linux.sysctl: "kernel.core_pattern" is not namespaced: setting it would change the host/],
    ["a host sysctl (vm.*, slash form)", (s) => (s.linux.sysctl = { "vm/overcommit_memory": "1" }), /linux.sysctl: "vm\/overcommit_memory" is not namespaced/],
    ["a net.* sysctl without a network namespace", (s) => ((s.linux.sysctl = { "net.ipv4.ip_forward": "1" }), (s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "network"))), /"net.ipv4.ip_forward" is not allowed in the host's network namespace/],
    ["a net.* sysctl in the host's network namespace joined by path", (s) => ((s.linux.sysctl = { "net.ipv4.ip_forward": "1" }), s.linux.namespaces.forEach((n: { type: string; path?: string }) => n.type === "network" && (n.path = "/proc/self/ns/net"))), /"net.ipv4.ip_forward" is not allowed in the host's network namespace/],
    ["an IPC sysctl without an ipc namespace", (s) => ((s.linux.sysctl = { "kernel.shmmax": "1" }), (s.linux.namespaces = s.linux.namespaces.filter((n: { type: string }) => n.type !== "ipc"))), /"kernel.shmmax" is not allowed in the host's IPC namespace/],
    ["a sysctl key that climbs out of /proc/sys", (s) => (s.linux.sysctl = { "net/../../../etc/x": "1" }), /is not a sysctl name/],
    ["proc mounted through a symlink", (s) => (s.root.path = rootfsWith("proc", "tmp")), /proc must be mounted on an ordinary directory: \/proc in the rootfs is a symlink/],
    ["sysfs mounted through a symlink", (s) => (s.root.path = rootfsWith("sys", "/etc")), /sysfs must be mounted on an ordinary directory: \/sys in the rootfs is a symlink/],
    ...(existsSync("/sys/kernel/security/apparmor")
      ? []
      : ([["an AppArmor profile on a host without AppArmor", (s) => (s.process.apparmorProfile = "docker-default"), /process.apparmorProfile "docker-default" cannot be applied: AppArmor is not enabled on this host \(set the annotation org.berth.lsm=optional/]] as typeof cases)),
    ...(existsSync("/sys/fs/selinux/enforce")
      ? []
      : ([
          ["an SELinux process label on a host without SELinux", (s) => (s.process.selinuxLabel = "system_u:system_r:container_t:s0"), /process.selinuxLabel cannot be applied: SELinux is not enabled on this host/],
          ["an SELinux mount label on a host without SELinux", (s) => (s.linux.mountLabel = "system_u:object_r:container_file_t:s0"), /linux.mountLabel cannot be applied/],
        ] as typeof cases)),
    ["a capability that does not exist", (s) => s.process.capabilities.bounding.push("CAP_TELEPORT"), /process.capabilities.bounding\[3\]: unknown capability "CAP_TELEPORT"/],
    ["a memory limit past int64", (s) => (s.linux.resources = { memory: { limit: 1e30 } }), /^linux.resources.memory.limit: 1e\+30 is out of range: at most 9223372036854775807 bytes \(8 EiB\), or -1 for no limit$/m],
    ["a memory limit below what a process needs", (s) => (s.linux.resources = { memory: { limit: 4096 } }), /linux.resources.memory.limit: 4096 bytes is below what a process needs to start/],
    // the error says how long, and does not quote 100,000 characters back
    ["a 100,000-character hostname", (s) => (s.hostname = "h".repeat(100_000)), /^[^h]*hostname: is 100000 bytes long: at most 64$/m],
  ];
  for (const [name, edit, message] of cases) {
    test(name, () => {
      const root = newRoot();
      let bundle = "";
      bundle = makeBundle(["/probe", "id"], (s) => edit(s, bundle));
      if (name === "invalid JSON") writeFileSync(join(bundle, "config.json"), "{nope");
      const id = uniqueId();
      const r = rt(root, ["create", "--bundle", bundle, id]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
      assert.equal(existsSync(join(root, id)), false, "no state directory");
      assert.deepEqual(leaks(), []);
      rmSync(bundle, { recursive: true });
      rmSync(root, { recursive: true });
    });
  }

  test("arguments past the kernel's limit: said once, with their size", () => {
    const root = newRoot();
    const b = makeBundle(["/bin/echo", ...Array.from({ length: 40 }, () => "x".repeat(100_000))]);
    const r = rt(root, ["run", "--bundle", b, uniqueId()]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /exec: \/bin\/echo: 41 arguments and the environment are \d+ bytes, more than the kernel takes .*: Argument list too long$/m);
    assert.equal((r.stderr.match(/Argument list too long/gi) ?? []).length, 1, r.stderr);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });

  test("exec's own failures exit 255, as runc's (not a code the process could have returned)", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    try {
      ok(rt(root, ["pause", id]));
      const paused = rt(root, ["exec", id, "/probe", "id"]);
      assert.equal(paused.code, 255, paused.stderr);
      assert.match(paused.stderr, /exec failed: cannot exec in a paused container/);
      ok(rt(root, ["resume", id]));
      const missing = rt(root, ["exec", id, "/nope"]);
      assert.equal(missing.code, 255, missing.stderr);
      assert.equal(rt(root, ["exec", id, "/probe", "exit", "3"]).code, 3, "the process's own code passes through");
      // a process.json without a user runs as root, as runc takes it
      writeFileSync(join(b, "proc.json"), JSON.stringify({ args: ["/probe", "id"], cwd: "/" }));
      const noUser = rt(root, ["exec", "-p", join(b, "proc.json"), id]);
      assert.equal(noUser.code, 0, noUser.stderr);
      assert.match(noUser.stdout, /^uid=0 gid=0 /);
    } finally {
      rt(root, ["delete", "-f", id]);
      rmSync(b, { recursive: true });
      rmSync(root, { recursive: true });
    }
  });

  test("a duplicate container id", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    ok(rt(root, ["create", "--bundle", b, id]));
    const r = rt(root, ["create", "--bundle", b, id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /container with id exists/);
    assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "created", "the first container is untouched");
    ok(rt(root, ["delete", "-f", id]));
    assert.deepEqual(leaks(), []);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });

  test("an invalid container id", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "id"]);
    const r = rt(root, ["create", "--bundle", b, "../escape"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid container id/);
    mkdirSync(join(root, "x"), { recursive: true });
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });
});
