/** seccomp: profile validation, compilation and caching, and filters in force inside containers. */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { compileSeccomp, seccompRecords, type Seccomp } from "../src/security/index.js";
import { background, makeBundle, newRoot, project, rootSkip, rt, runIn, tempDir, uniqueId, type AnySpec } from "./helpers.js";
import { spawnSync } from "node:child_process";

test("profile errors name the entry", () => {
  const cases: [Seccomp, RegExp][] = [
    [{ defaultAction: "SCMP_ACT_NOPE" }, /linux.seccomp.defaultAction: unknown action "SCMP_ACT_NOPE"/],
    [{ defaultAction: "SCMP_ACT_ALLOW", architectures: ["SCMP_ARCH_Z80"] }, /linux.seccomp.architectures\[0\]: unknown architecture "SCMP_ARCH_Z80"/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: [], action: "SCMP_ACT_ERRNO" }] }, /syscalls\[0\].names: must list at least one syscall/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", args: [{ index: 6, value: 1, op: "SCMP_CMP_EQ" }] }] }, /syscalls\[0\].args\[0\].index: must be 0..5/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["read"], action: "SCMP_ACT_ERRNO", args: [{ index: 0, value: 1, op: "SCMP_CMP_ABOUT" }] }] }, /args\[0\].op: unknown operator/],
    [{ defaultAction: "SCMP_ACT_ALLOW", flags: ["SECCOMP_FILTER_FLAG_NOPE"] }, /flags\[0\]: unknown flag/],
    [{ defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["read"], action: "SCMP_ACT_NOTIFY" }] }, /linux.seccomp.listenerPath: required when a rule uses SCMP_ACT_NOTIFY/],
    [{ defaultAction: "SCMP_ACT_NOTIFY", listenerPath: "/run/agent.sock" }, /defaultAction: SCMP_ACT_NOTIFY cannot be the default action/],
    [{ defaultAction: "SCMP_ACT_ALLOW", listenerPath: "/run/agent.sock", syscalls: [{ names: ["openat", "write"], action: "SCMP_ACT_NOTIFY" }] }, /linux.seccomp.syscalls\[0\]: SCMP_ACT_NOTIFY cannot be used for write/],
  ];
  for (const [profile, message] of cases) assert.throws(() => seccompRecords(profile), message);
});

test("records: kernel action values, errnoRet, conditions, and rules equal to the default skipped", () => {
  const { records, flags } = seccompRecords({
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 38,
    architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
    flags: ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
    syscalls: [
      { names: ["read", "write"], action: "SCMP_ACT_ALLOW" },
      { names: ["kill"], action: "SCMP_ACT_ERRNO", errnoRet: 1, args: [{ index: 1, value: 10, op: "SCMP_CMP_EQ" }, { index: 0, value: 2 ** 40, valueTwo: 2 ** 40, op: "SCMP_CMP_MASKED_EQ" }] },
      { names: ["mount"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
    ],
  });
  assert.equal(flags, 2 | 4);
  assert.deepEqual(records, [
    ["INIT", String(0x00050000 | 38)],
    ["ARCH", "x86_64"],
    ["ARCH", "x32"],
    ["RULE", String(0x7fff0000), "read"],
    ["RULE", String(0x7fff0000), "write"],
    ["RULE", String(0x00050001), "kill", "1", "4", "10", "0", "0", "7", "1099511627776", "1099511627776"],
  ]);
});

describe("compiled programs", () => {
  const bin = existsSync(join(process.cwd(), "build/berth-seccomp")) || process.env.BERTH_BUILD_DIR;
  test("compile once, then from the cache by digest; a binary tree, not a linear chain", { skip: bin ? false : "berth-seccomp not built" }, () => {
    const cache = tempDir();
    // 200 allowed syscalls under a deny-all default: a linear chain would need 200+ compares per call.
    const names = ["read", "write", "close", "fstat", "lseek", "mmap", "mprotect", "munmap", "brk", "ioctl", "pread64", "pwrite64", "readv", "writev", "access", "pipe", "select", "sched_yield", "mremap", "msync", "mincore", "madvise", "dup", "dup2", "pause", "nanosleep", "getitimer", "alarm", "setitimer", "getpid", "sendfile", "socket", "connect", "accept", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "bind", "listen", "getsockname", "getpeername", "socketpair", "setsockopt", "getsockopt", "clone", "fork", "vfork", "execve", "exit", "wait4", "kill", "uname", "fcntl", "flock", "fsync", "fdatasync", "truncate", "ftruncate", "getcwd", "chdir", "fchdir", "rename", "mkdir", "rmdir", "creat", "link", "unlink", "symlink", "readlink", "chmod", "fchmod", "chown", "fchown", "lchown", "umask", "gettimeofday", "getrlimit", "getrusage", "sysinfo", "times", "getuid", "getgid", "setuid", "setgid", "geteuid", "getegid", "setpgid", "getppid", "getpgrp", "setsid", "openat", "newfstatat", "exit_group", "futex", "epoll_wait", "epoll_ctl", "tgkill", "clock_gettime"];
    const profile: Seccomp = { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names, action: "SCMP_ACT_ALLOW" }] };
    const a = compileSeccomp(profile, cache);
    // cached by its rule list, and by the profile's own text (a hit on the latter skips flattening)
    const files = readdirSync(cache);
    assert.equal(files.length, 2, files.join(" "));
    assert.ok(files.includes(`${a.digest}.bpf`));
    assert.ok(files.some((f) => /^profile-[0-9a-f]{64}\.bpf$/.test(f)));
    const t = process.hrtime.bigint();
    const b = compileSeccomp(profile, cache);
    assert.ok(Number(process.hrtime.bigint() - t) < 5e6, "the second compile is a cache read");
    assert.equal(b.program, a.program);
    // the same rules written another way: a new profile entry, the program from the rule list's
    const split: Seccomp = { defaultAction: "SCMP_ACT_ERRNO", syscalls: [{ names: names.slice(0, 50), action: "SCMP_ACT_ALLOW" }, { names: names.slice(50), action: "SCMP_ACT_ALLOW" }] };
    const c = compileSeccomp(split, cache);
    assert.equal(c.program, a.program);
    assert.equal(readdirSync(cache).length, 3, "one more profile entry, no new rule-list entry");
    // A linear chain compares with JEQ only; libseccomp's binary tree splits the syscall numbers
    // with JGT/JGE (BPF_JMP|BPF_JGT|BPF_K = 0x25, BPF_JMP|BPF_JGE|BPF_K = 0x35), one per tree node.
    const codes = Array.from({ length: a.program.length / 16 }, (_, i) => parseInt(a.program.slice(i * 16, i * 16 + 2), 16));
    const splits = codes.filter((c) => c === 0x25 || c === 0x35).length;
    assert.ok(splits > 20, `only ${splits} range comparisons in ${codes.length} instructions: not a tree`);
    rmSync(cache, { recursive: true });
  });
});

describe("filters in force inside containers", { skip: rootSkip }, () => {
  const tmpfs = { destination: "/tmp", type: "tmpfs", source: "tmpfs" };
  test("ERRNO with errnoRet, argument conditions, KILL_PROCESS; Seccomp: 2 in /proc/self/status", () => {
    const r = runIn(["/bin/sh", "-c", "mkdir /tmp/x; echo mkdir=$?; kill -0 $$; echo kill0=$?; kill -USR1 $$; echo usr1=$?; /probe status | grep Seccomp:"], (s) => {
      s.mounts.push(tmpfs);
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [
          { names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 13 },
          // only signal 10 (SIGUSR1) is refused: the condition is on the second argument
          { names: ["kill"], action: "SCMP_ACT_ERRNO", errnoRet: 1, args: [{ index: 1, value: 10, op: "SCMP_CMP_EQ" }] },
        ],
      };
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "mkdir=1\nkill0=0\nusr1=1\nSeccomp:\t2\n");
    assert.match(r.stderr, /Permission denied/, "errnoRet 13 is EACCES");
    const killed = runIn(["/probe", "pid"], (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["getppid"], action: "SCMP_ACT_KILL_PROCESS" }] }));
    assert.equal(killed.code, 128 + 31, "SIGSYS");
  });

  test("two conditions on the same argument: each its own rule (either matches), as runc splits them; runc agrees", () => {
    const script = "kill -0 $$; echo kill0=$?; kill -USR1 $$; echo usr1=$?; kill -USR2 $$; echo usr2=$?";
    const edit = (s: AnySpec) => {
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        syscalls: [{ names: ["kill"], action: "SCMP_ACT_ERRNO", errnoRet: 1, args: [{ index: 1, value: 10, op: "SCMP_CMP_EQ" }, { index: 1, value: 12, op: "SCMP_CMP_EQ" }] }],
      };
    };
    const r = runIn(["/bin/sh", "-c", script], edit);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "kill0=0\nusr1=1\nusr2=1\n");
    const runc = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).stdout.trim();
    if (runc) {
      const b = makeBundle(["/bin/sh", "-c", script], edit);
      const root = newRoot();
      const theirs = spawnSync(runc, ["--root", root, "run", "--bundle", b, uniqueId("runc")], { encoding: "utf8" });
      rmSync(b, { recursive: true });
      rmSync(root, { recursive: true, force: true });
      assert.equal(theirs.stdout, r.stdout, `runc: ${theirs.stderr}`);
    }
  });

  test("without no_new_privs the filter is loaded while the runtime still may, and holds for a non-root user", () => {
    const r = runIn(["/bin/sh", "-c", "mkdir /tmp/x; echo $?; /probe status | grep -E 'NoNewPrivs|Seccomp:'"], (s) => {
      s.mounts.push(tmpfs);
      s.process.noNewPrivileges = false;
      s.process.user = { uid: 1000, gid: 1000 };
      s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO" }] };
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "1\nNoNewPrivs:\t0\nSeccomp:\t2\n");
  });

  test("exec'd processes get the container's filter", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "sleep", "30"], (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["getppid"], action: "SCMP_ACT_ERRNO", errnoRet: 1 }] }));
    const id = uniqueId();
    assert.equal(rt(root, ["run", "-d", "--bundle", b, id]).code, 0);
    const r = rt(root, ["exec", id, "/probe", "status"]);
    assert.match(r.stdout, /Seccomp:\s+2/);
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });

  test("SCMP_ACT_NOTIFY: the agent gets the notify fd with runc's process state, and answers for the kernel", async () => {
    const dir = tempDir();
    const sock = join(dir, "agent.sock");
    const agent = background(join(project, "build/seccomp-agent"), [sock]);
    await agent.waitFor("listening");
    const root = newRoot();
    const b = makeBundle(["/bin/sh", "-c", "mkdir /tmp/x; echo mkdir=$?; /probe pid"], (s) => {
      s.mounts.push(tmpfs);
      s.linux.seccomp = {
        defaultAction: "SCMP_ACT_ALLOW",
        listenerPath: sock,
        listenerMetadata: "from-the-test",
        syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_NOTIFY" }],
      };
    });
    const id = uniqueId();
    const r = rt(root, ["run", "--bundle", b, id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "mkdir=1\n1 0\n");
    assert.match(r.stderr, /No message of desired type/, "the agent's ENOMSG is what mkdir saw");
    await agent.done;
    const state = JSON.parse(/^state (.*)$/m.exec(agent.stdout)![1]!);
    assert.deepEqual(state.fds, ["seccompFd"]);
    assert.equal(state.metadata, "from-the-test");
    assert.equal(state.state.id, id);
    assert.ok(state.pid > 1 && state.pid === state.state.pid, "the container's pid as the host sees it");
    assert.match(agent.stdout, /^syscall \d+$/m);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
    rmSync(dir, { recursive: true });
  });

  test("SCMP_ACT_NOTIFY on exec: the exec'd process's filter is handed to the agent at the host's listenerPath", async () => {
    const dir = tempDir();
    const sock = join(dir, "agent.sock");
    const first = background(join(project, "build/seccomp-agent"), [sock]);
    await first.waitFor("listening");
    const root = newRoot();
    const b = makeBundle(["/probe", "sleep", "30"], (s) => {
      s.mounts.push(tmpfs);
      s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", listenerPath: sock, syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_NOTIFY" }] };
    });
    const id = uniqueId();
    let second: ReturnType<typeof background> | undefined;
    try {
      assert.equal(rt(root, ["run", "-d", "--bundle", b, id]).code, 0);
      await first.waitFor("state");
      // a second agent on the same path (the first took its one connection) for the exec
      second = background(join(project, "build/seccomp-agent"), [sock]);
      await second.waitFor("listening");
      const r = rt(root, ["exec", id, "/bin/sh", "-c", "mkdir /tmp/y; echo mkdir=$?"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "mkdir=1\n", "the agent answered for the exec'd process");
      await second.waitFor("syscall");
      const state = JSON.parse(/^state (.*)$/m.exec(second.stdout)![1]!);
      assert.equal(state.state.id, id);
    } finally {
      rt(root, ["delete", "-f", id]);
      second?.child.kill(); // one the exec never reached still waits for its connection
      rmSync(b, { recursive: true });
      rmSync(root, { recursive: true });
      rmSync(dir, { recursive: true });
    }
  });

  test("a bad profile fails create with the entry named, and nothing is left", () => {
    const root = newRoot();
    const b = makeBundle(["/probe", "id"], (s) => (s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["read"], action: "SCMP_ACT_FROB" }] }));
    const id = uniqueId();
    const r = rt(root, ["create", "--bundle", b, id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /linux.seccomp.syscalls\[0\].action: unknown action "SCMP_ACT_FROB"/);
    assert.equal(existsSync(join(root, id)), false);
    rmSync(b, { recursive: true });
    rmSync(root, { recursive: true });
  });
});
