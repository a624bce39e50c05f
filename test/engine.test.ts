/**
 * The berth CLI's containers, as a docker user sees them, and the seeds' scenarios end to end:
 * run -d, the init's host pid and its namespaces, exec seeing the container's hostname, processes
 * and mounts, logs, export, OOM kills reported by inspect, resource flags in the cgroup files,
 * errors with docker's wording and exit codes, a killed monitor, and nothing left behind.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { project, rootSkip, tempDir, leaks } from "./helpers.js";
import { berth, berthCommand, berthEnv, importBusybox, ok, removeContainersAndNetworking, sh, type BerthEnv } from "./image-helpers.js";

let env: BerthEnv;
let runtimeRoot: string;
const b = (args: string[], input?: string) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot }, ...(input !== undefined ? { input } : {}) });

describe("containers", { skip: rootSkip }, () => {
  before(() => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
  });
  after(async () => {
    await removeContainersAndNetworking(env, runtimeRoot);
  });

  test("run prints the command's output and returns its exit code; --rm leaves nothing", () => {
    const r = ok(b(["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2"]));
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(b(["run", "--rm", "busybox", "sh", "-c", "exit 7"]).code, 7);
    assert.equal(b(["ps", "-aq"]).stdout, "");
  });

  test("run -i feeds stdin; the container sees its end", () => {
    const r = ok(b(["run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z; echo done"], "hello stdin\n"));
    assert.equal(r.stdout, "HELLO STDIN\ndone\n");
  });

  test("the seeds: run -d; inspect's Pid is the host pid of the container's init, in six new namespaces", () => {
    const id = ok(b(["run", "-d", "--name", "seed", "--hostname", "seedbox", "busybox", "sh", "-c", "echo started; exec sleep 1000"])).stdout.trim();
    assert.match(id, /^[a-f0-9]{64}$/);
    const pid = Number(ok(b(["inspect", "--format", "{{.State.Pid}}", "seed"])).stdout.trim());
    assert.ok(pid > 1);
    assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8"), /^sleep\0/);
    for (const ns of ["pid", "net", "ipc", "uts", "mnt", "cgroup"]) assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/${ns}`), fs.readlinkSync(`/proc/self/ns/${ns}`), ns);
    // exec (the seeds' nsenter) sees the container's hostname, processes and mounts
    assert.equal(ok(b(["exec", "seed", "hostname"])).stdout, "seedbox\n");
    const ps = ok(b(["exec", "seed", "ps", "-o", "pid,args"])).stdout;
    assert.match(ps, /^\s*1 sleep 1000$/m, "the container's init is pid 1 inside");
    assert.ok(!ps.includes("node"), "no host processes");
    const mounts = ok(b(["exec", "seed", "cat", "/proc/mounts"])).stdout;
    assert.match(mounts, /^overlay \/ overlay /m, "the image's overlay is the root");
    assert.ok(!fs.readdirSync("/").every((n) => ok(b(["exec", "seed", "ls", "/"])).stdout.includes(n)), "the host's root is not visible");
    assert.equal(b(["exec", "seed", "cat", "/work/main/package.json"]).code, 1, "host files are invisible (chroot-like isolation)");
    const list = ok(b(["ps", "--format", "{{.Names}} {{.Status}} {{.Command}}"])).stdout;
    assert.match(list, /^seed Up .* "sh -c 'echo started; exec sleep 1000'"|^seed Up .* "sh -c echo started;/m);
    assert.equal(ok(b(["logs", "seed"])).stdout, "started\n");
    const log = fs.readFileSync(JSON.parse(ok(b(["inspect", "seed"])).stdout)[0].LogPath, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(log[0].log, "started\n");
    assert.equal(log[0].stream, "stdout");
    assert.match(log[0].time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$/);
  });

  test("exec: a stopped container, an unknown command, -u, -w, -e", () => {
    assert.equal(ok(b(["exec", "-u", "1234:5678", "-w", "/tmp", "-e", "X=y", "seed", "sh", "-c", "id -u; id -g; pwd; echo $X"])).stdout, "1234\n5678\n/tmp\ny\n");
    const missing = b(["exec", "seed", "nosuchcommand"]);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /executable file not found/);
  });

  test("export writes the container's file system as a tar", () => {
    ok(b(["exec", "seed", "sh", "-c", "echo exported > /root/marker"]));
    const out = join(tempDir("berth-img-"), "fs.tar");
    ok(b(["export", "-o", out, "seed"]));
    const names = sh("tar", ["-tf", out]);
    assert.match(names, /^\.?\/?root\/marker$/m);
    assert.match(names, /^\.?\/?bin\/busybox$/m);
    assert.equal(sh("tar", ["-xOf", out, "root/marker"]), "exported\n");
  });

  test("commit makes an image of the container's changes", () => {
    ok(b(["commit", "-m", "with marker", "seed", "committed/seed:1"]));
    assert.equal(ok(b(["run", "--rm", "committed/seed:1", "cat", "/root/marker"])).stdout, "exported\n");
  });

  test("ten concurrent commits of one running container all succeed; it runs on, unfrozen; cp and export meanwhile", async () => {
    ok(b(["run", "-d", "--name", "busy", "busybox", "sh", "-c", "echo work > /w; exec sleep 1000"]));
    const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig, BERTH_RUNTIME_ROOT: runtimeRoot };
    delete e.NODE_EXTRA_CA_CERTS;
    const run = (args: string[]) =>
      new Promise<{ code: number; stderr: string }>((resolve) => {
        const c = spawn(process.execPath, [...berthCommand(), ...args], { env: e, stdio: ["ignore", "ignore", "pipe"] });
        let stderr = "";
        c.stderr!.on("data", (d) => (stderr += d));
        c.on("exit", (code) => resolve({ code: code ?? 128, stderr }));
      });
    const host = tempDir("berth-img-");
    const results = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => run(["commit", "busy", `concurrent/busy:${i}`])),
      ...Array.from({ length: 3 }, (_, i) => run(["cp", "busy:/w", join(host, `w${i}`)])),
      run(["export", "-o", join(host, "busy.tar"), "busy"]),
    ]);
    for (const [i, r] of results.entries()) assert.equal(r.code, 0, `job ${i}: ${r.stderr}`);
    assert.equal(ok(b(["inspect", "-f", "{{.State.Status}} {{.State.Paused}}", "busy"])).stdout.trim(), "running false");
    const freezer = ["/sys/fs/cgroup/freezer/berth", "/sys/fs/cgroup/berth"].map((d) => join(d, JSON.parse(ok(b(["inspect", "busy"])).stdout)[0].Id)).find((d) => fs.existsSync(d));
    if (freezer && fs.existsSync(join(freezer, "freezer.state"))) assert.equal(fs.readFileSync(join(freezer, "freezer.state"), "utf8").trim(), "THAWED");
    if (freezer && fs.existsSync(join(freezer, "cgroup.freeze"))) assert.equal(fs.readFileSync(join(freezer, "cgroup.freeze"), "utf8").trim(), "0");
    assert.equal(ok(b(["images", "--filter", "reference=concurrent/busy", "-q"])).stdout.trim().split("\n").length >= 1, true);
    assert.equal(ok(b(["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout.split("\n").filter((l) => l.startsWith("concurrent/busy:")).length, 10);
    for (let i = 0; i < 3; i++) assert.equal(fs.readFileSync(join(host, `w${i}`), "utf8"), "work\n");
    assert.ok(fs.statSync(join(host, "busy.tar")).size > 0);
    ok(b(["rm", "-f", "busy"]));
  });

  test("stop sends the signal, then SIGKILL after -t; wait and inspect report the exit", () => {
    const t0 = Date.now();
    ok(b(["stop", "-t", "1", "seed"]));
    assert.ok(Date.now() - t0 < 8000);
    const st = JSON.parse(ok(b(["inspect", "seed"])).stdout)[0].State;
    assert.equal(st.Status, "exited");
    assert.equal(st.Running, false);
    assert.ok([137, 143].includes(st.ExitCode), String(st.ExitCode));
    assert.equal(ok(b(["wait", "seed"])).stdout.trim(), String(st.ExitCode));
    const exec = b(["exec", "seed", "true"]);
    assert.notEqual(exec.code, 0);
    assert.match(exec.stderr, /is not running/);
    ok(b(["start", "seed"]));
    assert.equal(JSON.parse(ok(b(["inspect", "seed"])).stdout)[0].State.Running, true);
    const rmRunning = b(["rm", "seed"]);
    assert.equal(rmRunning.code, 1);
    assert.match(rmRunning.stderr, /You cannot remove a running container [a-f0-9]{64}\. Stop the container before attempting removal or force remove/);
    ok(b(["rm", "-f", "seed"]));
    assert.equal(b(["inspect", "seed"]).code, 1);
  });

  test("the seeds' 30 MB memory limit: the 1 MB-a-step allocator is OOM-killed, inspect says so", () => {
    const r = b(["run", "--name", "oom", "--memory", "30m", "--memory-swap", "30m", "busybox", "/probe", "alloc", "1", "20"]);
    assert.equal(r.code, 137, r.stderr);
    const last = Number(/(\d+) MiB\n$/.exec(r.stdout)?.[1]);
    assert.ok(last >= 15 && last < 30, `last allocation ${last} MiB`);
    const st = JSON.parse(ok(b(["inspect", "oom"])).stdout)[0].State;
    assert.equal(st.OOMKilled, true);
    assert.equal(st.ExitCode, 137);
    ok(b(["rm", "oom"]));
  });

  test("the seeds' resource flags land in the container's cgroup files", () => {
    ok(b(["run", "-d", "--name", "res", "--memory", "64m", "--cpus", "0.5", "--cpu-shares", "512", "--pids-limit", "50", "--cpuset-cpus", "0", "busybox", "sleep", "100"]));
    const id = JSON.parse(ok(b(["inspect", "res"])).stdout)[0].Id;
    // v1 controllers are mounted as "cpu" or "cpu,cpuacct" depending on the distribution
    const cg = (ctl: string, file: string) => {
      const candidates = [`/sys/fs/cgroup/berth/${id}`, ...ctl.split("|").map((c) => `/sys/fs/cgroup/${c}/berth/${id}`)].map((d) => join(d, file));
      const p = candidates.find((c) => fs.existsSync(c));
      assert.ok(p, `none of ${candidates.join(", ")}`);
      return fs.readFileSync(p, "utf8").trim();
    };
    assert.equal(cg("memory", "memory.limit_in_bytes"), String(64 * 1024 * 1024));
    assert.equal(cg("cpu|cpu,cpuacct", "cpu.cfs_quota_us"), "50000");
    assert.equal(cg("cpu|cpu,cpuacct", "cpu.cfs_period_us"), "100000");
    assert.equal(cg("cpu|cpu,cpuacct", "cpu.shares"), "512");
    assert.equal(cg("pids", "pids.max"), "50");
    assert.equal(cg("cpuset", "cpuset.cpus"), "0");
    ok(b(["rm", "-f", "res"]));
  });

  // a block device of this host (the disk under the root file system, say), for docker's per-device flags
  const disk = fs.existsSync("/sys/block") ? fs.readdirSync("/sys/block").find((d) => !/^(loop|ram|zram|nbd|dm-|md)/.test(d) && fs.existsSync(`/dev/${d}`)) : undefined;
  test("--device-read-bps, --device-write-iops and --blkio-weight: the container's blkio files; inspect shows them as docker does; bad ones are one clear line", { skip: !disk && "no block device here" }, () => {
    const dev = `/dev/${disk}`;
    const [major, minor] = fs.readFileSync(`/sys/block/${disk}/dev`, "utf8").trim().split(":");
    const v2 = fs.existsSync("/sys/fs/cgroup/cgroup.controllers");
    const out = ok(b(["run", "--rm", "--device-read-bps", `${dev}:1mb`, "--device-write-iops", `${dev}:100`, "--blkio-weight", "300", "busybox", "sh", "-c", v2 ? "cat /sys/fs/cgroup/io.max" : "cat /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device /sys/fs/cgroup/blkio/blkio.throttle.write_iops_device; cat /sys/fs/cgroup/blkio/blkio.bfq.weight 2>/dev/null || cat /sys/fs/cgroup/blkio/blkio.weight"])).stdout;
    if (v2) assert.match(out, new RegExp(`^${major}:${minor} rbps=1048576 wbps=max riops=max wiops=100$`, "m"));
    else {
      assert.match(out, new RegExp(`^${major}:${minor} 1048576\\n${major}:${minor} 100\\n`));
      assert.match(out, /^(default )?300$/m, "the weight (BFQ's file where the disk scheduler is BFQ)");
    }
    const id = ok(b(["create", "--device-read-bps", `${dev}:2m`, "busybox", "true"])).stdout.trim();
    assert.equal(ok(b(["inspect", "-f", "{{json .HostConfig.BlkioDeviceReadBps}}", id])).stdout.trim(), `[{"Path":"${dev}","Rate":2097152}]`);
    ok(b(["rm", id]));
    for (const [args, message] of [
      [["--device-read-bps", dev], /invalid argument ".*" for "--device-read-bps" flag: bad format/],
      [["--device-read-bps", "/dev/null:1mb"], /\/dev\/null is not a block device/],
      [["--device-write-iops", "/nope:5"], /\/nope: no such device/],
    ] as const) {
      const r = b(["run", "--rm", ...args, "busybox", "true"]);
      assert.equal(r.code, 125);
      assert.match(r.stderr, message);
    }
  });

  test("a container's cgroups hold its processes only: the helper that joined them first has left; an exec joins them; --pids-limit 1 starts", async () => {
    const members = (id: string) => {
      // every hierarchy that has the container's cgroup (v1: one per controller set; v2: one)
      const dirs = [`/sys/fs/cgroup/berth/${id}`, ...fs.readdirSync("/sys/fs/cgroup").map((h) => `/sys/fs/cgroup/${h}/berth/${id}`)].filter((d) => fs.existsSync(join(d, "cgroup.procs")));
      assert.ok(dirs.length > 0, "the container has cgroups");
      return dirs.map((d) => fs.readFileSync(join(d, "cgroup.procs"), "utf8").trim().split("\n").filter(Boolean).map(Number).sort());
    };
    const comm = (pid: number) => fs.readFileSync(`/proc/${pid}/comm`, "utf8").trim();
    const id = ok(b(["run", "-d", "--name", "members", "busybox", "sleep", "100"])).stdout.trim();
    const pid = Number(ok(b(["inspect", "--format", "{{.State.Pid}}", "members"])).stdout.trim());
    for (const procs of members(id)) assert.deepEqual(procs, [pid], "the init alone, in every hierarchy");
    for (const line of fs.readFileSync(`/proc/${pid}/cgroup`, "utf8").trim().split("\n")) assert.match(line, new RegExp(`/berth/${id}$`), line);
    assert.ok(!fs.readFileSync("/proc/self/cgroup", "utf8").includes(id), "berth itself is not in the container's cgroup");
    // an attached exec: its helper stays (as the exec'd process's parent) but not in the cgroups
    const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig, BERTH_RUNTIME_ROOT: runtimeRoot };
    delete e.NODE_EXTRA_CA_CERTS;
    const attached = spawn(process.execPath, [...berthCommand(), "exec", "members", "sleep", "3"], { env: e, stdio: "ignore" });
    const done = new Promise((r) => attached.once("exit", r));
    // the exec'd process is the helper's clone until its execve: wait for both to be sleep (or time out)
    const named = () => members(id).every((procs) => procs.length === 2 && procs.every((p) => { try { return comm(p) === "sleep"; } catch { return false; } }));
    for (let i = 0; i < 100 && !named(); i++) await new Promise((r) => setTimeout(r, 30));
    for (const procs of members(id)) assert.deepEqual(procs.map(comm), ["sleep", "sleep"], "the init and the exec'd process, no helper");
    await done;
    ok(b(["rm", "-f", "members"]));
    const tight = ok(b(["run", "-d", "--pids-limit", "1", "busybox", "sleep", "100"])).stdout.trim();
    const tightPid = Number(ok(b(["inspect", "--format", "{{.State.Pid}}", tight])).stdout.trim());
    for (const procs of members(tight)) assert.deepEqual(procs, [tightPid]);
    ok(b(["rm", "-f", tight]));
  });

  test("bad input: docker's wording and exit codes, nothing half-created", () => {
    const before = b(["ps", "-aq"]).stdout;
    const ncpu = os.availableParallelism();
    const cpusTooMany = b(["run", "--cpus", String(ncpu + 97), "busybox", "true"]);
    assert.equal(cpusTooMany.code, 125);
    assert.match(cpusTooMany.stderr, new RegExp(`Range of CPUs is from 0\\.01 to ${ncpu}\\.00, as there are only ${ncpu} CPUs available`));
    const longName = b(["run", "--name", "a".repeat(10_000), "busybox", "true"]);
    assert.equal(longName.code, 125, longName.stderr);
    assert.match(longName.stderr, /Invalid container name \(a{64}…\): at most 255 characters/);
    assert.ok(longName.stderr.length < 400, "the error does not echo the whole name");
    assert.equal(ok(b(["run", "--rm", "-h", "shorthost", "busybox", "hostname"])).stdout, "shorthost\n", "-h is --hostname for run");
    const mem = b(["run", "--memory", "12q", "busybox", "true"]);
    assert.equal(mem.code, 125);
    assert.match(mem.stderr, /invalid argument "12q" for "-m, --memory" flag: invalid size: '12q'/);
    const cpus = b(["run", "--cpuset-cpus", "1,3", "busybox", "true"]);
    assert.equal(cpus.code, 125);
    assert.match(cpus.stderr, /Requested CPUs are not available - requested 1,3, available: 0-1|available: 0/);
    const vol = b(["run", "-v", "/nonexistent/berth-test:/x", "busybox", "true"]);
    assert.equal(vol.code, 125);
    assert.match(vol.stderr, /bind source path does not exist: \/nonexistent\/berth-test/);
    const img = b(["run", "--pull", "never", "no/such-image", "true"]);
    assert.equal(img.code, 125);
    assert.match(img.stderr, /No such image: no\/such-image/);
    const flag = b(["run", "--no-such-flag", "busybox"]);
    assert.equal(flag.code, 125);
    assert.match(flag.stderr, /unknown flag: --no-such-flag/);
    assert.equal(b(["ps", "-aq"]).stdout, before, "no container was left by any of them");
    ok(b(["create", "--name", "taken", "busybox", "true"]));
    const dup = b(["run", "--name", "taken", "busybox", "true"]);
    assert.equal(dup.code, 125);
    assert.match(dup.stderr, /Conflict\. The container name "\/taken" is already in use by container "[a-f0-9]{64}"/);
    const notFound = b(["run", "busybox", "/no/such/binary"]);
    assert.equal(notFound.code, 127);
    ok(b(["rm", "taken"]));
    assert.equal(b(["ps", "-aq"]).stdout, before, "a run that could not start left no container");
  });

  test("a killed monitor: the container shows as exited with a reason, nothing stuck running", () => {
    const id = ok(b(["run", "-d", "busybox", "sleep", "1000"])).stdout.trim();
    const dir = join(env.root, "containers", id);
    const monitor = Number(fs.readFileSync(join(dir, "monitor.pid"), "utf8"));
    const pid = Number(ok(b(["inspect", "-f", "{{.State.Pid}}", id])).stdout);
    process.kill(monitor, "SIGKILL");
    process.kill(pid, "SIGKILL"); // as a reboot would
    for (let i = 0; i < 50 && fs.existsSync(`/proc/${pid}`); i++) spawnSync("sleep", ["0.05"]);
    const st = JSON.parse(ok(b(["inspect", id])).stdout)[0].State;
    assert.equal(st.Running, false);
    assert.equal(st.Status, "exited");
    assert.match(st.Error, /monitor/);
    ok(b(["rm", id]));
  });

  test("--restart on-failure:2 restarts a failing container twice, then leaves it exited", async () => {
    ok(b(["run", "-d", "--name", "flaky", "--restart", "on-failure:2", "busybox", "sh", "-c", "echo run; exit 3"]));
    for (let i = 0; i < 100; i++) {
      const st = JSON.parse(ok(b(["inspect", "flaky"])).stdout)[0];
      if (st.RestartCount === 2 && !st.State.Running && !st.State.Restarting) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const st = JSON.parse(ok(b(["inspect", "flaky"])).stdout)[0];
    assert.equal(st.RestartCount, 2);
    assert.equal(st.State.ExitCode, 3);
    assert.equal(ok(b(["logs", "flaky"])).stdout, "run\nrun\nrun\n", "three runs, one log");
    ok(b(["rm", "flaky"]));
  });

  test("--init reaps zombies and passes signals; --read-only; --cap-drop shows in /proc/1/status", () => {
    const zombies = ok(b(["run", "--rm", "--init", "busybox", "sh", "-c", "sleep 0 & sleep 0.3; ps -o stat | grep -c Z || true"])).stdout.trim();
    assert.equal(zombies, "0");
    assert.match(ok(b(["run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"])).stdout, /^\/sbin\/berth-init\0/);
    const ro = b(["run", "--rm", "--read-only", "busybox", "touch", "/x"]);
    assert.notEqual(ro.code, 0);
    assert.match(ro.stderr, /Read-only file system/);
    const caps = ok(b(["run", "--rm", "--cap-drop", "ALL", "--cap-add", "NET_ADMIN", "busybox", "grep", "CapEff", "/proc/1/status"])).stdout;
    assert.equal(caps.trim(), "CapEff:\t0000000000001000");
    const dflt = ok(b(["run", "--rm", "busybox", "grep", "CapEff", "/proc/1/status"])).stdout;
    assert.equal(dflt.trim(), "CapEff:\t00000000a80425fb", "docker's 14 default capabilities");
  });

  test("json-file logs rotate at --log-opt max-size, keeping max-file files", () => {
    ok(b(["run", "--name", "chatty", "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "busybox", "sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done"]));
    const logPath = JSON.parse(ok(b(["inspect", "chatty"])).stdout)[0].LogPath;
    assert.ok(fs.existsSync(`${logPath}.1`) && fs.existsSync(`${logPath}.2`) && !fs.existsSync(`${logPath}.3`));
    for (const f of [logPath, `${logPath}.1`]) assert.ok(fs.statSync(f).size <= 2048, f);
    const lines = ok(b(["logs", "chatty"])).stdout.trim().split("\n");
    assert.equal(lines[lines.length - 1], "line-199");
    assert.equal(ok(b(["logs", "--tail", "2", "chatty"])).stdout, "line-198\nline-199\n");
    ok(b(["rm", "chatty"]));
  });

  test("--shm-size sets /dev/shm's size (64 MiB by default), and a build's RUN steps get it too", () => {
    assert.match(ok(b(["run", "--rm", "--network", "none", "busybox", "df", "-k", "/dev/shm"])).stdout, /\s65536\s/);
    assert.match(ok(b(["run", "--rm", "--network", "none", "--shm-size", "256m", "busybox", "df", "-k", "/dev/shm"])).stdout, /\s262144\s/);
    const bad = b(["run", "--rm", "--shm-size", "lots", "busybox", "true"]);
    assert.equal(bad.code, 125);
    const ctx = tempDir("berth-ctx-");
    fs.writeFileSync(join(ctx, "Dockerfile"), "FROM busybox\nRUN df -k /dev/shm | tail -1 > /shm.txt\n");
    const id = ok(b(["build", "-q", "--network", "none", "--shm-size", "128m", ctx])).stdout.trim();
    assert.match(ok(b(["run", "--rm", "--network", "none", id, "cat", "/shm.txt"])).stdout, /\s131072\s/);
    ok(b(["rmi", id]));
  });

  test("the local log driver: rotated files compressed, logs read through them", async () => {
    ok(b(["run", "--name", "loc", "--log-driver", "local", "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "busybox", "sh", "-c", "i=0; while [ $i -lt 300 ]; do echo local-line-$i; i=$((i+1)); done"]));
    const logPath = JSON.parse(ok(b(["inspect", "loc"])).stdout)[0].LogPath;
    // gzip runs beside the container: its files appear a moment after each rotation
    for (let i = 0; i < 100 && !(fs.existsSync(`${logPath}.1.gz`) && fs.existsSync(`${logPath}.2.gz`) && !fs.existsSync(`${logPath}.1`)); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(fs.existsSync(`${logPath}.1.gz`) && fs.existsSync(`${logPath}.2.gz`), "rotated files are compressed");
    assert.ok(!fs.existsSync(`${logPath}.3.gz`), "max-file=3 keeps three files");
    const lines = ok(b(["logs", "loc"])).stdout.trim().split("\n");
    assert.equal(lines[lines.length - 1], "local-line-299");
    assert.ok(lines.length > 40, `logs reads the compressed files too (${lines.length} lines; a file holds about 20)`);
    assert.equal(lines.length, new Set(lines).size, "no line twice");
    const tail = ok(b(["logs", "--tail", String(lines.length), "loc"])).stdout.trim().split("\n");
    assert.deepEqual(tail, lines);
    ok(b(["rm", "loc"]));
  });

  test("every command's --help lists its flags, one line each, and runs nothing", () => {
    const run = ok(b(["run", "--help"])).stdout;
    assert.match(run, /^Usage:  berth run \[OPTIONS\] IMAGE \[COMMAND\] \[ARG\.\.\.\]$/m);
    assert.match(run, /^  -d, --detach +Run container in background and print container ID$/m);
    assert.match(run, /^  -h, --hostname string +Container host name$/m);
    assert.match(run, /^      --memory-swap string +Swap limit/m);
    assert.ok(run.split("\n").filter((l) => /^ {2}(-\w, |    )--/.test(l)).length > 60, "all of run's flags");
    assert.match(ok(b(["network", "create", "--help"])).stdout, /^      --subnet list +Subnet in CIDR format/m);
    assert.match(ok(b(["system", "repair", "--help"])).stdout, /^      --dry-run +List what would be removed/m);
    const version = ok(b(["version", "--help"])).stdout;
    assert.doesNotMatch(version, /Client:/, "--help runs nothing");
    assert.match(ok(b(["network", "--help"])).stdout, /Commands:\n(.*\n)*  create/);
  });

  test("reading commands on a store that does not exist see it empty and make nothing", () => {
    const nowhere = join(tempDir("berth-test-"), "not/made/yet");
    for (const args of [["ps", "-a"], ["images"], ["volume", "ls"], ["network", "ls"], ["system", "df"]]) {
      const r = berth(env, ["--root", nowhere, ...args], { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
      assert.equal(r.code, 0, `${args.join(" ")}: ${r.stderr}`);
      assert.equal(fs.existsSync(join(nowhere, "..")), false, `${args.join(" ")} made no store`);
    }
    assert.match(berth(env, ["--root", nowhere, "inspect", "x"], { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } }).stderr, /No such object: x/);
    assert.equal(fs.existsSync(join(nowhere, "..")), false);
  });

  test("a log without limits of its own gets the default (5 files of 20 MB), or daemon.json's log-opts", () => {
    ok(b(["create", "--name", "quiet", "busybox", "true"]));
    assert.deepEqual(JSON.parse(ok(b(["inspect", "-f", "{{json .HostConfig.LogConfig}}", "quiet"])).stdout), { Type: "json-file", Config: { "max-size": "20m", "max-file": "5" } });
    ok(b(["rm", "quiet"]));
    fs.mkdirSync(env.configDir, { recursive: true });
    fs.writeFileSync(join(env.configDir, "daemon.json"), JSON.stringify({ "log-opts": { "max-size": "1k", "max-file": "2" } }));
    try {
      ok(b(["run", "--name", "noisy", "busybox", "sh", "-c", "i=0; while [ $i -lt 500 ]; do echo noisy-line-$i; i=$((i+1)); done"]));
      const logPath = JSON.parse(ok(b(["inspect", "noisy"])).stdout)[0].LogPath;
      assert.ok(fs.existsSync(`${logPath}.1`) && !fs.existsSync(`${logPath}.2`), "two files, rotated");
      for (const f of [logPath, `${logPath}.1`]) assert.ok(fs.statSync(f).size <= 1024, f);
      assert.match(ok(b(["logs", "--tail", "1", "noisy"])).stdout, /^noisy-line-499$/m);
      // a container's own options win over daemon.json's, which fill in the rest (as dockerd's)
      ok(b(["create", "--name", "own", "--log-opt", "max-size=5m", "busybox", "true"]));
      assert.deepEqual(JSON.parse(ok(b(["inspect", "-f", "{{json .HostConfig.LogConfig.Config}}", "own"])).stdout), { "max-size": "5m", "max-file": "2" });
    } finally {
      fs.rmSync(join(env.configDir, "daemon.json"));
      b(["rm", "-f", "noisy", "own"]);
    }
  });

  test("the seeds' export of a created container: docker export $(docker create image) | tar -x", () => {
    const id = ok(b(["create", "busybox"])).stdout.trim();
    const dir = tempDir("berth-img-");
    const r = spawnSync("sh", ["-c", `node ${JSON.stringify(join(project, "dist/berth.cjs"))} export ${id} | tar -C ${dir} -xf -`], { env: { ...process.env, BERTH_ROOT: env.root, BERTH_RUNTIME_ROOT: runtimeRoot, NODE_EXTRA_CA_CERTS: "" }, encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(fs.existsSync(join(dir, "bin/busybox")));
    assert.equal(fs.readlinkSync(join(dir, "bin/sh")), "/bin/busybox");
    ok(b(["rm", id]));
  });

  test("a read-only bind is read-only with its submounts (docker ≥ 25); bind-recursive=writable|disabled, bind-propagation; unknown --mount keys refused", () => {
    const src = tempDir("berth-rbind-");
    fs.mkdirSync(join(src, "sub"));
    assert.equal(spawnSync("mount", ["-t", "tmpfs", "berth-test-rbind", join(src, "sub")]).status, 0);
    try {
      const probe = "touch /mnt/sub/x 2>/dev/null && echo sub-rw || echo sub-ro; grep -c ' /mnt' /proc/self/mountinfo";
      const run = (mount: string[]) => ok(b(["run", "--rm", ...mount, "busybox", "sh", "-c", probe])).stdout;
      assert.equal(run(["-v", `${src}:/mnt:ro`]), "sub-ro\n2\n");
      assert.equal(run(["--mount", `type=bind,src=${src},dst=/mnt,readonly`]), "sub-ro\n2\n");
      assert.equal(run(["--mount", `type=bind,src=${src},dst=/mnt,readonly,bind-recursive=writable`]), "sub-rw\n2\n");
      assert.equal(run(["--mount", `type=bind,src=${src},dst=/mnt,bind-recursive=disabled`]), "sub-rw\n1\n", "without the submount, the directory under it is the source's own");
      assert.equal(run(["--mount", `type=bind,src=${src},dst=/mnt,bind-propagation=rslave`]), "sub-rw\n2\n");
      const bad = b(["run", "--rm", "--mount", `type=bind,src=${src},dst=/mnt,bogus=1`, "busybox", "true"]);
      assert.equal(bad.code, 125);
      assert.match(bad.stderr, /unexpected key 'bogus' in 'bogus=1'/);
    } finally {
      spawnSync("umount", [join(src, "sub")]);
      fs.rmSync(src, { recursive: true, force: true });
    }
  });

  test("container prune --filter: label, label!, until; an unknown filter is refused", () => {
    const made = ["keep", "drop", "plain"].map((n) => ok(b(["create", "--name", `prune-${n}`, "--label", "prunetest=1", ...(n === "plain" ? [] : ["--label", `tier=${n}`]), "busybox", "true"])).stdout.trim());
    try {
      const names = () => ok(b(["ps", "-a", "--filter", "name=prune-", "--format", "{{.Names}}"])).stdout.trim().split("\n").filter(Boolean).sort();
      // every filter with label=prunetest: the suite's other stopped containers are not this test's to prune
      assert.equal(ok(b(["container", "prune", "-f", "--filter", "label=prunetest", "--filter", "until=1h"])).stdout.includes("Deleted Containers"), false, "none was made an hour ago");
      assert.deepEqual(names(), ["prune-drop", "prune-keep", "prune-plain"]);
      assert.match(ok(b(["container", "prune", "-f", "--filter", "label=prunetest", "--filter", "label=tier=drop"])).stdout, new RegExp(made[1]!));
      assert.deepEqual(names(), ["prune-keep", "prune-plain"]);
      ok(b(["container", "prune", "-f", "--filter", "label=prunetest", "--filter", "label!=tier"]));
      assert.deepEqual(names(), ["prune-keep"]);
      const bad = b(["container", "prune", "-f", "--filter", "color=red"]);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /invalid filter 'color'/);
    } finally {
      b(["rm", "-f", ...made]);
    }
  });

  test("volumes: named volumes keep data across containers; in use cannot go; prune takes anonymous ones", () => {
    assert.equal(ok(b(["volume", "create", "--label", "team=a", "data"])).stdout, "data\n");
    ok(b(["run", "--rm", "-v", "data:/data", "busybox", "sh", "-c", "echo kept > /data/f"]));
    assert.equal(ok(b(["run", "--rm", "-v", "data:/data:ro", "busybox", "cat", "/data/f"])).stdout, "kept\n");
    const ro = b(["run", "--rm", "-v", "data:/data:ro", "busybox", "touch", "/data/g"]);
    assert.notEqual(ro.code, 0);
    const insp = JSON.parse(ok(b(["volume", "inspect", "data"])).stdout)[0];
    assert.deepEqual(JSON.parse(ok(b(["inspect", "--type", "volume", "data"])).stdout)[0], insp, "inspect finds volumes too");
    assert.equal(insp.Driver, "local");
    assert.deepEqual(insp.Labels, { team: "a" });
    assert.equal(fs.readFileSync(join(insp.Mountpoint, "f"), "utf8"), "kept\n");
    ok(b(["run", "-d", "--name", "holder", "-v", "data:/data", "-v", "/anon", "busybox", "sleep", "100"]));
    const mounts = JSON.parse(ok(b(["inspect", "holder"])).stdout)[0].Mounts;
    assert.equal(mounts.length, 2);
    assert.ok(mounts.some((m: { Name: string; Destination: string }) => m.Name === "data" && m.Destination === "/data"));
    const busy = b(["volume", "rm", "data"]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /volume is in use - \[[a-f0-9]{64}\]/);
    assert.match(ok(b(["volume", "ls", "--format", "{{.Name}}"])).stdout, /^data$/m);
    ok(b(["rm", "-f", "holder"]));
    const pruned = ok(b(["volume", "prune", "-f"])).stdout;
    assert.match(pruned, /Deleted Volumes:\n[a-f0-9]{64}\n/, "the anonymous volume goes");
    assert.equal(ok(b(["volume", "ls", "-q"])).stdout, "data\n", "the named one stays");
    ok(b(["volume", "rm", "data"]));
    assert.equal(ok(b(["volume", "ls", "-q"])).stdout, "");
  });

  test("diff lists added, changed and deleted paths; update changes a running container's limit; stats and info", () => {
    ok(b(["run", "-d", "--name", "dd", "--memory", "64m", "busybox", "sh", "-c", "mkdir /new; echo x > /new/file; echo changed >> /etc/passwd; rm /bin/vi; exec sleep 100"]));
    for (let i = 0; i < 50 && !b(["diff", "dd"]).stdout.includes("D /bin/vi"); i++) spawnSync("sleep", ["0.05"]);
    const d = ok(b(["diff", "dd"])).stdout.split("\n");
    for (const line of ["A /new", "A /new/file", "C /etc", "C /etc/passwd", "C /bin", "D /bin/vi"]) assert.ok(d.includes(line), `${line} in ${d.join("|")}`);
    ok(b(["update", "--memory", "96m", "--memory-swap", "128m", "dd"]));
    const id = JSON.parse(ok(b(["inspect", "dd"])).stdout)[0].Id;
    const v1 = `/sys/fs/cgroup/memory/berth/${id}/memory.limit_in_bytes`;
    const v2 = `/sys/fs/cgroup/berth/${id}/memory.max`;
    assert.equal(fs.readFileSync(fs.existsSync(v1) ? v1 : v2, "utf8").trim(), String(96 * 1024 * 1024));
    assert.equal(JSON.parse(ok(b(["inspect", "dd"])).stdout)[0].HostConfig.Memory, 96 * 1024 * 1024);
    const st = ok(b(["stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}} {{.MemUsage}}", "dd"])).stdout;
    assert.match(st, /^dd 1 [\d.]+(B|KiB|MiB) \/ 96MiB$/m);
    assert.equal(ok(b(["port", "dd"])).stdout, "");
    const info = JSON.parse(ok(b(["info", "--format", "{{json .}}"])).stdout);
    assert.equal(info.ContainersRunning, 1);
    assert.equal(info.Driver, "overlay2");
    ok(b(["rm", "-f", "dd"]));
  });

  test("-t gives the container a terminal; -it through a terminal is interactive", () => {
    const r = ok(b(["run", "-t", "--rm", "busybox", "sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys"]));
    assert.match(r.stdout, /^\/dev\/pts\/0\r?\nboth-ttys\r?\n$/);
    const bin = join(project, "dist/berth.cjs");
    // script gives berth a terminal of 30x100: the container's terminal gets the same size
    const cmd = `stty rows 30 cols 100; node ${bin} run -it --rm busybox sh -c 'read line; echo "got:$line"; stty size'`;
    const it = spawnSync("script", ["-qec", cmd, "/dev/null"], {
      input: "hello-tty\n",
      encoding: "utf8",
      env: { ...process.env, BERTH_ROOT: env.root, BERTH_RUNTIME_ROOT: runtimeRoot, NODE_EXTRA_CA_CERTS: "" },
      timeout: 30_000,
    });
    assert.equal(it.status, 0, it.stderr + it.stdout);
    assert.match(it.stdout, /got:hello-tty/);
    assert.match(it.stdout, /^30 100\r?$/m, "the container's terminal has berth's size");
  });

  test("attach: a detached -i container gets our stdin and we get its output and exit code", () => {
    ok(b(["run", "-d", "-i", "--name", "att", "busybox", "sh", "-c", "read x; echo got:$x; exit 4"]));
    const r = b(["attach", "att"], "hello-attach\n");
    assert.equal(r.stdout, "got:hello-attach\n");
    assert.equal(r.code, 4);
    ok(b(["rm", "att"]));
  });

  test("doctor says what works here, and a broken install fails naming the fix", () => {
    const r = ok(b(["doctor"]));
    assert.match(r.stdout, /^ok\s+namespaces: cgroup, ipc, mnt, net, pid, time, user, uts$/m);
    assert.match(r.stdout, /^ok\s+berth-monitor built/m);
    assert.match(r.stdout, /berth can run containers here/);
    const broken = berth(env, ["doctor"], { extraEnv: { BERTH_BUILD_DIR: "/nonexistent-berth-build" } });
    assert.equal(broken.code, 1);
    assert.match(broken.stdout, /^FAIL\s+berth-helper: .*\n\s+fix: run \.\/install\.sh/m);
  });

  test("system df counts what containers wrote; system prune reclaims it", () => {
    ok(b(["run", "--name", "writer", "busybox", "dd", "if=/dev/zero", "of=/big", "bs=1024", "count=2048"]));
    const df = ok(b(["system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Size}} {{.Reclaimable}}"])).stdout;
    const row = df.split("\n").find((l) => l.startsWith("Containers "));
    assert.match(row ?? "", /^Containers \d+ 2\.\d+MB 2\.\d+MB \(\d+%\)$/, df);
    const prune = ok(b(["system", "prune", "-f"])).stdout;
    assert.match(prune, /Deleted Container: /);
    assert.match(prune, /Total reclaimed space: 2\.\d+MB/);
  });

  test("cp both ways; container symlinks never lead to the host's files", () => {
    ok(b(["run", "-d", "--name", "cpc", "busybox", "sh", "-c", "mkdir -p /data/sub; echo inside > /data/sub/f; ln -s / /tmp/hostroot; ln -s /etc /tmp/etclink; ln -s /etc/shadow /tmp/shadowlink; exec sleep 100"]));
    for (let i = 0; i < 50 && b(["exec", "cpc", "test", "-L", "/tmp/shadowlink"]).code !== 0; i++) spawnSync("sleep", ["0.05"]);
    const host = tempDir("berth-img-");
    ok(b(["cp", "cpc:/data", host]));
    assert.equal(fs.readFileSync(join(host, "data/sub/f"), "utf8"), "inside\n");
    ok(b(["cp", "cpc:/tmp/shadowlink", join(host, "link")]));
    assert.equal(fs.readlinkSync(join(host, "link")), "/etc/shadow", "the link is copied, not the host's /etc/shadow");
    fs.writeFileSync(join(host, "in.txt"), "from the host\n");
    ok(b(["cp", join(host, "in.txt"), "cpc:/tmp/hostroot/etc/berth-cp-test"]));
    assert.ok(!fs.existsSync("/etc/berth-cp-test"), "resolved inside the container, not on the host");
    assert.equal(ok(b(["exec", "cpc", "cat", "/etc/berth-cp-test"])).stdout, "from the host\n");
    fs.mkdirSync(join(host, "tree/etclink"), { recursive: true });
    fs.writeFileSync(join(host, "tree/etclink/berth-cp-escape"), "x");
    const esc = b(["cp", join(host, "tree") + "/.", "cpc:/tmp/"]);
    assert.equal(esc.code, 1);
    assert.match(esc.stderr, /cannot overwrite non-directory etclink with directory|symlink/);
    assert.ok(!fs.existsSync("/etc/berth-cp-escape"));
    assert.equal(ok(b(["exec", "cpc", "readlink", "/tmp/etclink"])).stdout, "/etc\n", "the container's link is untouched");
    ok(b(["cp", join(host, "in.txt"), "cpc:/data/renamed"]));
    assert.equal(ok(b(["exec", "cpc", "cat", "/data/renamed"])).stdout, "from the host\n");
    ok(b(["rm", "-f", "cpc"]));
  });

  test("health checks: starting, unhealthy after --health-retries failures, healthy once the check passes; --restart-on-unhealthy", async () => {
    ok(b(["run", "-d", "--name", "hc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "200ms", "--health-retries", "2", "busybox", "sleep", "100"]));
    assert.equal(ok(b(["inspect", "-f", "{{.State.Health.Status}}", "hc"])).stdout.trim(), "starting");
    const until = async (want: string) => {
      for (let i = 0; i < 60; i++) {
        if (ok(b(["inspect", "-f", "{{.State.Health.Status}}", "hc"])).stdout.trim() === want) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.fail(`never ${want}`);
    };
    await until("unhealthy");
    const h = JSON.parse(ok(b(["inspect", "hc"])).stdout)[0].State.Health;
    assert.ok(h.FailingStreak >= 2 && h.Log.length >= 2 && h.Log[0].ExitCode === 1);
    ok(b(["exec", "hc", "touch", "/tmp/ok"]));
    await until("healthy");
    assert.match(ok(b(["ps", "--format", "{{.Names}} {{.Status}}", "--filter", "name=^hc$"])).stdout, /^hc Up .* \(healthy\)$/m);
    ok(b(["rm", "-f", "hc"]));
    ok(b(["run", "-d", "--name", "hc2", "--health-cmd", "false", "--health-interval", "200ms", "--health-retries", "1", "--restart-on-unhealthy", "busybox", "sleep", "100"]));
    for (let i = 0; i < 60 && JSON.parse(ok(b(["inspect", "hc2"])).stdout)[0].RestartCount < 1; i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(JSON.parse(ok(b(["inspect", "hc2"])).stdout)[0].RestartCount >= 1, "restarted when unhealthy, with no restart policy");
    ok(b(["rm", "-f", "hc2"]));
  });

  test("events: what berth did, in order, with docker's fields; --filter and --format", () => {
    const since = String(Date.now() / 1000);
    assert.equal(b(["run", "--rm", "--name", "evt", "busybox", "sh", "-c", "exit 3"]).code, 3);
    const until = String(Date.now() / 1000 + 0.2);
    const lines = ok(b(["events", "--since", since, "--until", until, "--filter", "container=evt", "--format", "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}"])).stdout.trim().split("\n");
    assert.deepEqual(lines, ["container create evt <no value>", "container start evt <no value>", "container die evt 3", "container destroy evt <no value>"]);
    const plain = ok(b(["events", "--since", since, "--until", until, "--filter", "event=die"])).stdout;
    assert.match(plain, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z container die [a-f0-9]{64} \(exitCode=3, image=busybox, name=evt\)$/m);
  });

  test("a run whose start fails before its container exists leaves no monitor, cgroup or record", async () => {
    const cgroupDir = fs.readdirSync("/sys/fs/cgroup").map((h) => join("/sys/fs/cgroup", h, "berth")).find((d) => fs.existsSync(join(d, "cgroup.procs")));
    const cgroupsBefore = cgroupDir ? fs.readdirSync(cgroupDir).filter((n) => /^[0-9a-f]{64}$/.test(n)) : [];
    // the monitor and helper are started early (before the spec exists): this start fails after that
    const r = b(["run", "--rm", "-u", "nosuchuser", "busybox", "true"]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /unable to find user nosuchuser/);
    const monitors = () => sh("ps", ["-eo", "args"]).split("\n").filter((l) => l.includes("berth-monitor") && l.includes(env.root));
    const deadline = Date.now() + 5000;
    while (monitors().length && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(monitors(), [], "the early monitor ended with the withdrawn start");
    assert.equal(b(["ps", "-aq"]).stdout, "");
    if (cgroupDir) assert.deepEqual(fs.readdirSync(cgroupDir).filter((n) => /^[0-9a-f]{64}$/.test(n)), cgroupsBefore, "no cgroup is left");
    assert.deepEqual(fs.readdirSync(join(env.root, "containers")).filter((n) => /^[0-9a-f]{64}$/.test(n)), [], "no record is left");
  });

  test("--rm mounts the container's rootfs volatile (nothing synced, as podman does); others as usual", () => {
    assert.match(ok(b(["run", "--rm", "busybox", "grep", " / ", "/proc/mounts"])).stdout, /volatile/);
    const id = ok(b(["run", "-d", "busybox", "sleep", "30"])).stdout.trim();
    assert.doesNotMatch(ok(b(["exec", id, "grep", " / ", "/proc/mounts"])).stdout, /volatile/);
    ok(b(["rm", "-f", id]));
  });

  test("an image of 80 layers runs: its overlay options, too long with absolute paths, are mounted relative", () => {
    // busybox's layer, then 80 layers of one file each, as a `docker save` archive
    const dir = tempDir("berth-test-layers-");
    ok(b(["save", "-o", join(dir, "busybox.tar"), "busybox"]));
    sh("tar", ["-xf", join(dir, "busybox.tar"), "-C", dir]);
    const saved = JSON.parse(fs.readFileSync(join(dir, "manifest.json"), "utf8"))[0];
    const layers: string[] = [...saved.Layers];
    const baseConfig = JSON.parse(fs.readFileSync(join(dir, saved.Config), "utf8"));
    const diffIds: string[] = [...baseConfig.rootfs.diff_ids];
    for (let i = 1; i <= 80; i++) {
      const content = join(dir, `c${i}`);
      fs.mkdirSync(content);
      fs.writeFileSync(join(content, `f${i}`), `layer ${i}\n`);
      sh("tar", ["-cf", join(dir, `l${i}.tar`), "-C", content, `f${i}`]);
      layers.push(`l${i}.tar`);
      diffIds.push(`sha256:${createHash("sha256").update(fs.readFileSync(join(dir, `l${i}.tar`))).digest("hex")}`);
    }
    fs.writeFileSync(join(dir, "config.json"), JSON.stringify({ ...baseConfig, rootfs: { type: "layers", diff_ids: diffIds }, history: undefined }));
    fs.writeFileSync(join(dir, "manifest.json"), JSON.stringify([{ Config: "config.json", RepoTags: ["tall:latest"], Layers: layers }]));
    sh("tar", ["-cf", join(dir, "tall.tar"), "-C", dir, "manifest.json", "config.json", ...layers]);
    ok(b(["load", "-i", join(dir, "tall.tar")]));
    assert.equal(ok(b(["run", "--rm", "tall", "cat", "/f1", "/f80"])).stdout, "layer 1\nlayer 80\n");
    const id = ok(b(["run", "-d", "tall", "sleep", "30"])).stdout.trim();
    assert.match(ok(b(["exec", id, "grep", " / ", "/proc/mounts"])).stdout, /lowerdir=l\//, "relative lower dirs");
    ok(b(["rm", "-f", id]));
    ok(b(["rmi", "tall"]));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test("nothing left: no containers, mounts or processes", () => {
    assert.equal(b(["ps", "-aq"]).stdout, "");
    assert.deepEqual(leaks(), []);
    const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").filter((l) => l.includes(env.root));
    assert.deepEqual(mounts, []);
  });

  test("--security-opt seccomp=FILE takes a profile in docker's format; a missing file is one clear line", () => {
    const dir = tempDir("berth-seccomp-");
    const profile = join(dir, "no-mkdir.json");
    fs.writeFileSync(
      profile,
      JSON.stringify({
        defaultAction: "SCMP_ACT_ALLOW",
        archMap: [{ architecture: "SCMP_ARCH_X86_64", subArchitectures: ["SCMP_ARCH_X86", "SCMP_ARCH_X32"] }],
        syscalls: [
          { names: ["mkdir", "mkdirat"], action: "SCMP_ACT_ERRNO", errnoRet: 1 },
          { names: ["chmod"], action: "SCMP_ACT_ERRNO", errnoRet: 1, includes: { caps: ["CAP_SYS_ADMIN"] } },
        ],
      }),
    );
    const r = b(["run", "--rm", "--security-opt", `seccomp=${profile}`, "busybox", "sh", "-c", "grep Seccomp: /proc/self/status; mkdir /tmp/d || echo refused; touch /tmp/f && chmod 600 /tmp/f && echo chmod-ok"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Seccomp:\s+2/);
    assert.match(r.stderr, /Operation not permitted/);
    assert.match(r.stdout, /refused/);
    assert.match(r.stdout, /chmod-ok/, "a rule for CAP_SYS_ADMIN only does not apply without it");
    const missing = b(["run", "--rm", "--security-opt", `seccomp=${join(dir, "nope.json")}`, "busybox", "true"]);
    assert.equal(missing.code, 125);
    assert.match(missing.stderr, /opening seccomp profile .*nope\.json.*no such file or directory/);
    fs.writeFileSync(join(dir, "bad.json"), "{ not json");
    const bad = b(["run", "--rm", "--security-opt", `seccomp=${join(dir, "bad.json")}`, "busybox", "true"]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /seccomp profile is not JSON/);

  });

  test("ps -s shows the writable layer's size and the virtual size with the image", () => {
    ok(b(["run", "-d", "--name", "sized", "busybox", "sh", "-c", "dd if=/dev/zero of=/big bs=1000 count=2000 2>/dev/null; exec sleep 100"]));
    let size = "";
    for (let i = 0; i < 50 && !/^2(\.\d+)?MB/.test(size); i++) {
      spawnSync("sleep", ["0.1"]);
      size = ok(b(["ps", "-s", "--filter", "name=sized", "--format", "{{.Size}}"])).stdout.trim();
    }
    assert.match(size, /^2(\.\d+)?MB \(virtual \d+(\.\d+)?MB\)$/);
    assert.match(ok(b(["ps", "-s", "--filter", "name=sized"])).stdout.split("\n")[0]!, /SIZE$/);
    ok(b(["rm", "-f", "sized"]));
  });

  test("an attached client that stops reading does not stop the container: it is dropped, the log is whole", async () => {
    ok(b(["run", "-d", "--name", "chatty", "busybox", "sh", "-c", "sleep 1; i=0; while [ $i -lt 3000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done; echo finished"]));
    // a client of the attach socket that never reads (the socket's path is too long for an
    // address: connect relative to the container's directory)
    const id = ok(b(["inspect", "-f", "{{.Id}}", "chatty"])).stdout.trim();
    const { connect } = await import("node:net");
    const cwd = process.cwd();
    process.chdir(join(env.root, "containers", id));
    const stuck = connect("attach.sock");
    process.chdir(cwd);
    stuck.pause();
    stuck.on("error", () => {});
    const t0 = Date.now();
    let status = "";
    for (let i = 0; i < 300 && status !== "exited"; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = b(["inspect", "-f", "{{.State.Status}}", "chatty"]).stdout.trim();
    }
    stuck.destroy();
    assert.equal(status, "exited", "the container finished although its attached client stopped reading");
    assert.ok(Date.now() - t0 < 25_000);
    const logs = ok(b(["logs", "--tail", "2", "chatty"])).stdout;
    assert.match(logs, /^line-2999-x+\nfinished\n$/, "the log has every line");
    ok(b(["rm", "chatty"]));
  });

  test("an attached client that ends its input and then goes away costs the monitor nothing (no busy loop)", async () => {
    ok(b(["run", "-d", "--name", "hangup", "busybox", "sleep", "60"]));
    const id = ok(b(["inspect", "-f", "{{.Id}}", "hangup"])).stdout.trim();
    const { connect } = await import("node:net");
    const cwd = process.cwd();
    process.chdir(join(env.root, "containers", id));
    const client = connect("attach.sock");
    process.chdir(cwd);
    client.on("error", () => {});
    await new Promise((r) => client.once("connect", r));
    client.end(); // its stdin ended (docker run -i with < /dev/null) …
    await new Promise((r) => setTimeout(r, 200));
    client.destroy(); // … and then the client was killed
    const monitor = sh("ps", ["-eo", "pid=,args="]).split("\n").find((l) => l.includes("berth-monitor") && l.includes(id))!;
    assert.ok(monitor, "the container's monitor runs");
    const pid = monitor.trim().split(/\s+/)[0]!;
    const cpu = () => fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ").slice(11, 13).reduce((n, v) => n + Number(v), 0);
    const before = cpu();
    await new Promise((r) => setTimeout(r, 1000));
    const ticks = cpu() - before;
    assert.ok(ticks < 10, `the monitor used ${ticks} clock ticks of CPU in a second with nothing to do`);
    assert.equal(ok(b(["inspect", "-f", "{{.State.Status}}", "hangup"])).stdout.trim(), "running");
    ok(b(["rm", "-f", "hangup"]));
  });

  test("pause freezes a container's processes and unpause thaws them; unpause of a running one is refused", () => {
    ok(b(["run", "-d", "--name", "ticker", "busybox", "sh", "-c", "while true; do date +%s%N >> /tmp/ticks; usleep 20000; done"]));
    const ticks = () => ok(b(["exec", "ticker", "wc", "-l", "/tmp/ticks"])).stdout.trim().split(/\s+/)[0];
    spawnSync("sleep", ["0.3"]);
    ok(b(["pause", "ticker"]));
    assert.equal(ok(b(["inspect", "-f", "{{.State.Paused}}", "ticker"])).stdout.trim(), "true");
    assert.match(ok(b(["ps", "--filter", "name=ticker", "--format", "{{.Status}}"])).stdout, /\(Paused\)/);
    const pid = ok(b(["inspect", "-f", "{{.State.Pid}}", "ticker"])).stdout.trim();
    const size = () => fs.statSync(`/proc/${pid}/root/tmp/ticks`).size;
    const s1 = size();
    spawnSync("sleep", ["0.3"]);
    assert.equal(size(), s1, "nothing runs while paused");
    ok(b(["unpause", "ticker"]));
    spawnSync("sleep", ["0.3"]);
    assert.ok(Number(ticks()) > 0 && size() > s1, "it runs again");
    const again = b(["unpause", "ticker"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /is not paused/);
    ok(b(["rm", "-f", "ticker"]));
  });
});
