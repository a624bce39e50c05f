/** exec into running containers, terminals through --console-socket, and hooks. */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { background, leaks, makeBundle, newRoot, nsOf, recvtty, rootSkip, rt, tempDir, uniqueId, waitForSync } from "./helpers.js";

const root = newRoot();
after(() => rmSync(root, { recursive: true, force: true }));

function startSleeper(edit?: (s: any) => void): { id: string; pid: number; bundle: string } {
  const bundle = makeBundle(["/probe", "sleep", "60"], edit);
  const id = uniqueId();
  const r = rt(root, ["run", "-d", "--bundle", bundle, id]);
  assert.equal(r.code, 0, r.stderr);
  return { id, pid: JSON.parse(rt(root, ["state", id]).stdout).pid, bundle };
}

function stop(c: { id: string; bundle: string }) {
  assert.equal(rt(root, ["delete", "-f", c.id]).code, 0);
  rmSync(c.bundle, { recursive: true, force: true });
}

describe("exec", { skip: rootSkip }, () => {
  test("joins every namespace and the cgroup of the container's init", () => {
    const c = startSleeper();
    const want = nsOf(c.pid);
    const r = rt(root, ["exec", c.id, "/probe", "ns"]);
    assert.equal(r.code, 0, r.stderr);
    for (const line of r.stdout.trim().split("\n")) {
      const [name, value] = line.split(" ");
      assert.equal(value, want[name!], `${name} namespace`);
    }
    const cg = rt(root, ["exec", c.id, "/probe", "cat", "/proc/self/cgroup"]).stdout;
    assert.match(cg, /^\d+:memory:\/$/m, "inside the container's cgroup namespace root");
    const pids = rt(root, ["exec", c.id, "/bin/ps", "-o", "pid,args"]).stdout;
    assert.match(pids, /^\s*1 \/probe sleep 60$/m, "sees the container's pid namespace");
    stop(c);
  });

  test("user, cwd, env, exit status; process.json; detach with pid-file", () => {
    const c = startSleeper();
    let r = rt(root, ["exec", "--user", "1000:1000", "--cwd", "/tmp", "-e", "FOO=bar", c.id, "/bin/sh", "-c", "id -u; pwd; echo $FOO; exit 3"]);
    assert.equal(r.code, 3);
    assert.equal(r.stdout, "1000\n/tmp\nbar\n");
    const procFile = join(c.bundle, "process.json");
    writeFileSync(procFile, JSON.stringify({ user: { uid: 0, gid: 0 }, cwd: "/", args: ["/probe", "env"], env: ["ONLY=this"] }));
    r = rt(root, ["exec", "--process", procFile, c.id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "ONLY=this\nHOME=/root\n");
    const pidFile = join(c.bundle, "exec.pid");
    r = rt(root, ["exec", "-d", "--pid-file", pidFile, c.id, "/probe", "sleep", "30"]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.ok(existsSync(`/proc/${pid}`));
    assert.deepEqual(JSON.parse(rt(root, ["ps", "-f", "json", c.id]).stdout).sort(), [c.pid, pid].sort());
    stop(c);
    assert.deepEqual(leaks(), []);
  });

  test("a missing command and a stopped container give clear errors (exit 255, as runc's exec)", () => {
    const c = startSleeper();
    try {
      let r = rt(root, ["exec", c.id, "nope"]);
      assert.equal(r.code, 255);
      assert.match(r.stderr, /exec: "nope": executable file not found in \$PATH/);
      rt(root, ["kill", c.id, "KILL"]);
      waitForSync(() => JSON.parse(rt(root, ["state", c.id]).stdout).status === "stopped", "the killed container to stop");
      r = rt(root, ["exec", c.id, "/probe", "id"]);
      assert.equal(r.code, 255);
      assert.match(r.stderr, /cannot exec in a stopped container/);
    } finally {
      stop(c);
    }
  });

  test("kill --all signals every process in the container", () => {
    const c = startSleeper();
    rt(root, ["exec", "-d", c.id, "/probe", "sleep", "50"]);
    assert.equal(JSON.parse(rt(root, ["ps", "-f", "json", c.id]).stdout).length, 2);
    assert.equal(rt(root, ["kill", "--all", c.id, "KILL"]).code, 0);
    waitForSync(() => JSON.parse(rt(root, ["ps", "-f", "json", c.id]).stdout).length === 0, "every process to die");
    assert.deepEqual(JSON.parse(rt(root, ["ps", "-f", "json", c.id]).stdout), []);
    stop(c);
  });
});

describe("terminals", { skip: rootSkip }, () => {
  test("create --console-socket sends exactly one pty master; the process has a controlling terminal", async () => {
    const dir = tempDir();
    const sock = join(dir, "console.sock");
    const recv = background(recvtty, [sock]);
    await recv.waitFor("listening");
    const bundle = makeBundle(["/bin/sh", "-c", "/probe isatty; tty; readlink /proc/self/fd/0"], (s) => (s.process.terminal = true));
    const id = uniqueId();
    let r = rt(root, ["create", "--console-socket", sock, "--bundle", bundle, id]);
    assert.equal(r.code, 0, r.stderr);
    await recv.waitFor("received 1 fd");
    r = rt(root, ["start", id]);
    assert.equal(r.code, 0, r.stderr);
    await recv.done;
    assert.match(recv.stdout, /1 1 1\r\n\/dev\/pts\/0\r\n\/dev\/pts\/0/);
    rt(root, ["delete", "-f", id]);
    rmSync(bundle, { recursive: true });
    rmSync(dir, { recursive: true });
  });

  test("the pty belongs to the process's user (run and exec -t), as runc makes it", async () => {
    const dir = tempDir();
    const sock = join(dir, "console.sock");
    let recv = background(recvtty, [sock]);
    await recv.waitFor("listening");
    const bundle = makeBundle(["/bin/sh", "-c", "ls -ln $(tty) | awk '{print \"owner=\" $3}'"], (s) => ((s.process.terminal = true), (s.process.user = { uid: 1000, gid: 1000 })));
    const id = uniqueId();
    let r = rt(root, ["run", "-d", "--console-socket", sock, "--bundle", bundle, id]);
    assert.equal(r.code, 0, r.stderr);
    await recv.done;
    assert.match(recv.stdout, /owner=1000/);
    rt(root, ["delete", "-f", id]);
    const c = startSleeper();
    recv = background(recvtty, [sock]);
    await recv.waitFor("listening");
    r = rt(root, ["exec", "-t", "-d", "--user", "1234:1234", "--console-socket", sock, c.id, "/bin/sh", "-c", "ls -ln $(tty) | awk '{print \"owner=\" $3}'"]);
    assert.equal(r.code, 0, r.stderr);
    await recv.done;
    assert.match(recv.stdout, /owner=1234/);
    stop(c);
    rmSync(bundle, { recursive: true });
    rmSync(dir, { recursive: true });
  });

  test("exec --tty --console-socket into a running container", async () => {
    const c = startSleeper();
    const dir = tempDir();
    const sock = join(dir, "console.sock");
    const recv = background(recvtty, [sock]);
    await recv.waitFor("listening");
    const r = rt(root, ["exec", "-t", "-d", "--console-socket", sock, c.id, "/probe", "isatty"]);
    assert.equal(r.code, 0, r.stderr);
    await recv.done;
    assert.match(recv.stdout, /1 1 1/);
    stop(c);
    rmSync(dir, { recursive: true });
  });

  test("a terminal without a console socket is refused with --detach", () => {
    const bundle = makeBundle(["/probe", "id"], (s) => (s.process.terminal = true));
    const r = rt(root, ["run", "-d", "--bundle", bundle, uniqueId()]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot allocate tty if runc will detach without setting console socket/);
    rmSync(bundle, { recursive: true });
  });
});

describe("hooks", { skip: rootSkip }, () => {
  function hookScript(dir: string, name: string, body: string): string {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`);
    chmodSync(path, 0o755);
    return path;
  }

  test("each hook runs at its point with the state on stdin, in order", () => {
    const dir = tempDir();
    const log = join(dir, "log");
    const rec = hookScript(dir, "rec.sh", `read state; echo "$1 $(echo "$state" | tr -d ' ' | grep -o '"status":"[a-z]*"') $(readlink /proc/self/ns/mnt)" >> ${log}`);
    const bundle = makeBundle(["/probe", "sleep", "30"], (s) => {
      s.hooks = Object.fromEntries(
        ["prestart", "createRuntime", "createContainer", "poststart", "poststop"].map((h) => [h, [{ path: rec, args: ["rec.sh", h] }]]),
      );
    });
    const id = uniqueId();
    assert.equal(rt(root, ["create", "--bundle", bundle, id]).code, 0);
    assert.equal(rt(root, ["start", id]).code, 0);
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    const lines = readFileSync(log, "utf8").trim().split("\n");
    assert.deepEqual(
      lines.map((l) => l.split(" ").slice(0, 2).join(" ")),
      ['prestart "status":"creating"', 'createRuntime "status":"creating"', 'createContainer "status":"creating"', 'poststart "status":"running"', 'poststop "status":"stopped"'],
    );
    const hostMnt = nsOf("self").mnt;
    assert.equal(lines[1]!.split(" ")[2], hostMnt, "createRuntime runs in the runtime's namespace");
    assert.notEqual(lines[2]!.split(" ")[2], hostMnt, "createContainer runs in the container's mount namespace");
    rmSync(bundle, { recursive: true });
    rmSync(dir, { recursive: true });
  });

  test("startContainer runs inside the container before the process", () => {
    const dir = tempDir();
    const bundle = makeBundle(["/bin/sh", "-c", "cat /tmp/hook-was-here"], (s) => {
      s.mounts.push({ destination: "/tmp", type: "tmpfs", source: "tmpfs" });
      s.hooks = { startContainer: [{ path: "/bin/sh", args: ["sh", "-c", "hostname > /tmp/hook-was-here"] }] };
    });
    const r = rt(root, ["run", "--bundle", bundle, uniqueId()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "berth-test\n");
    rmSync(bundle, { recursive: true });
    rmSync(dir, { recursive: true });
  });

  test("startContainer hooks run under the container's seccomp filter and capabilities; a failing one stops the container", () => {
    const bundle = makeBundle(["/bin/sh", "-c", "cat /tmp/hook-rc; grep CapBnd /tmp/hook-status"], (s) => {
      s.mounts.push({ destination: "/tmp", type: "tmpfs", source: "tmpfs" });
      s.linux.seccomp = { defaultAction: "SCMP_ACT_ALLOW", syscalls: [{ names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1 }] };
      s.hooks = { startContainer: [{ path: "/bin/sh", args: ["sh", "-c", "mkdir /tmp/d 2>/dev/null; echo $? > /tmp/hook-rc; cat /proc/self/status > /tmp/hook-status"] }] };
    });
    const r = rt(root, ["run", "--bundle", bundle, uniqueId()]);
    assert.equal(r.code, 0, r.stderr);
    const [rc, caps] = r.stdout.trim().split("\n");
    assert.equal(rc, "1", "mkdir in the hook is refused by the container's filter");
    const own = readFileSync("/proc/self/status", "utf8").match(/CapBnd:\s*(\w+)/)![1];
    assert.notEqual(caps!.split(/\s+/)[1], own, "the hook has the container's bounding set, not the runtime's");
    assert.equal(caps!.split(/\s+/)[1], "0000000020000420", "CAP_AUDIT_WRITE, CAP_KILL and CAP_NET_BIND_SERVICE only");
    rmSync(bundle, { recursive: true });

    const failing = makeBundle(["/bin/sh", "-c", "echo the process ran"], (s) => (s.hooks = { startContainer: [{ path: "/bin/sh", args: ["sh", "-c", "exit 3"] }] }));
    const f = rt(root, ["run", "--bundle", failing, uniqueId()]);
    assert.notEqual(f.code, 0);
    assert.doesNotMatch(f.stdout, /the process ran/);
    assert.match(f.stderr, /startContainer hook \/bin\/sh failed \(exit status 3\)/);
    rmSync(failing, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("a failing createRuntime hook fails create and leaves nothing; a slow one times out", () => {
    const dir = tempDir();
    const fail = hookScript(dir, "fail.sh", "echo nope >&2; exit 3");
    const slow = hookScript(dir, "slow.sh", "sleep 10");
    for (const [hook, message] of [[{ path: fail }, /createRuntime hook .*fail.sh failed \(exit status 3\): nope/], [{ path: slow, timeout: 1 }, /timed out after 1s/]] as const) {
      const bundle = makeBundle(["/probe", "id"], (s) => (s.hooks = { createRuntime: [hook] }));
      const id = uniqueId();
      const r = rt(root, ["create", "--bundle", bundle, id]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, message);
      assert.equal(existsSync(join(root, id)), false);
      assert.deepEqual(leaks(), []);
      rmSync(bundle, { recursive: true });
    }
    rmSync(dir, { recursive: true });
  });
});
