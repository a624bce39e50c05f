/**
 * bench/run: `run --rm busybox true` with berth beside docker (a private dockerd started here) and
 * podman, on the same busybox image (berth's default image, saved and loaded into the others), in
 * one run: with each one's default network (the issue's headline figures; docker's bridge is an
 * interface of the bench's own, without its firewall rules; podman's is not run, as netavark would
 * change this machine's firewall) and with --network none.
 * Also the memory of a running container's monitor beside podman's conmon.
 * NODE_EXTRA_CA_CERTS is unset (it is not set on users' machines).
 *
 * Usage: node dist/bench/run.js [iterations=15]
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { berthLauncher, env, have, median, must, project, time } from "./common.js";

const iterations = Number(process.argv[2] ?? 15);

/** Resident and private (unshared) memory of a process, from /proc/PID/smaps_rollup. */
function memory(pid: number): { rss: number; private: number } {
  const t = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, "m").exec(t)?.[1] ?? 0);
  return { rss: kb("Rss"), private: kb("Private_Clean") + kb("Private_Dirty") };
}

async function main(): Promise<void> {
  const base = mkdtempSync(join(tmpdir(), "berth-bench-run-"));
  // through the launcher, as the installed command runs (it keeps V8's code cache for the bundle)
  const cli = berthLauncher(base);
  const berth = [...cli, "--root", join(base, "berth")];
  const b = (...a: string[]) => [process.execPath, [...berth, ...a]] as const;
  const daemons: ChildProcess[] = [];
  let dockerBridge = false;
  const runtimeRoot = join(base, "berth-run");
  Object.assign(env, { BERTH_RUNTIME_ROOT: runtimeRoot });
  try {
    // berth's default image into a private store, then into the peers
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env: { ...env, BERTH_ROOT: join(base, "berth") } });
    const saved = spawnSync(process.execPath, [...berth, "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;
    // each tool with the default network (docker's: a bridge of its own, see below) and with none
    type Cmd = readonly [string, readonly string[]];
    const tools: Array<{ name: string; none: Cmd; plain?: Cmd }> = [{ name: "berth", none: b("run", "--rm", "--network", "none", "busybox", "true"), plain: b("run", "--rm", "busybox", "true") }];
    // podman raises NOFILE and NPROC by default, which root without CAP_SYS_RESOURCE cannot (this VM)
    const nproc = 4096;
    if (have("podman")) {
      const p = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file"];
      must("podman", [...p, "load", "-q"], saved);
      // runc: crun refuses this kind of host's hybrid cgroups; nofile: root here lacks CAP_SYS_RESOURCE for podman's default.
      // Its default network is not run: netavark would change this machine's firewall.
      tools.push({ name: "podman", none: ["podman", [...p, "--runtime", "runc", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", `nproc=${nproc}:${nproc}`, "busybox", "true"]] });
    }
    if (have("dockerd")) {
      // docker's default bridge on an interface of the bench's own, without its firewall rules
      // (--iptables=false: not the bench's firewall to change)
      spawnSync("ip", ["link", "add", "berthbench0", "type", "bridge"]);
      spawnSync("ip", ["addr", "add", "10.213.199.1/24", "dev", "berthbench0"]);
      spawnSync("ip", ["link", "set", "berthbench0", "up"]);
      dockerBridge = true;
      const sock = join(base, "docker.sock");
      daemons.push(spawn("dockerd", ["--data-root", join(base, "docker/root"), "--exec-root", join(base, "docker/exec"), "--pidfile", join(base, "docker.pid"), "-H", `unix://${sock}`, "--bridge=berthbench0", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"], { stdio: "ignore" }));
      const d = ["-H", `unix://${sock}`];
      for (let i = 0; i < 600 && spawnSync("/usr/bin/docker", [...d, "version"], { stdio: "ignore" }).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      must("/usr/bin/docker", [...d, "load", "-q"], saved);
      tools.push({ name: "docker", none: ["/usr/bin/docker", [...d, "run", "--rm", "--network", "none", "busybox", "true"]], plain: ["/usr/bin/docker", [...d, "run", "--rm", "busybox", "true"]] });
    }
    const modes = [
      { name: "default network", cmd: (t: (typeof tools)[number]) => t.plain },
      { name: "--network none", cmd: (t: (typeof tools)[number]) => t.none },
    ];
    for (const t of tools) for (const m of modes) if (m.cmd(t)) time(m.cmd(t)![0], [...m.cmd(t)![1]]); // warm up
    const times = new Map<string, number[]>();
    for (let i = 0; i < iterations; i++)
      for (const t of tools)
        for (const m of modes) {
          const c = m.cmd(t);
          if (!c) continue;
          const key = `${t.name} ${m.name}`;
          times.set(key, [...(times.get(key) ?? []), time(c[0], [...c[1]])]);
        }
    console.log(`bench/run: run --rm busybox true, median of ${iterations} (NODE_EXTRA_CA_CERTS unset)`);
    console.log(`${"".padEnd(10)}${modes.map((m) => m.name.padStart(18)).join("")}`);
    for (const t of tools) console.log(`${t.name.padEnd(10)}${modes.map((m) => (times.has(`${t.name} ${m.name}`) ? `${median(times.get(`${t.name} ${m.name}`)!).toFixed(1)} ms` : "not run").padStart(18)).join("")}`);
    for (const m of modes) {
      const berthMs = times.get(`berth ${m.name}`);
      const peers = tools.filter((t) => t.name !== "berth" && times.has(`${t.name} ${m.name}`)).map((t) => ({ name: t.name, ms: median(times.get(`${t.name} ${m.name}`)!) }));
      if (!berthMs || !peers.length) continue;
      const fastest = peers.reduce((a, c) => (c.ms < a.ms ? c : a));
      console.log(`${m.name}: berth is ${(fastest.ms / median(berthMs)).toFixed(2)}x faster than the faster peer (${fastest.name})`);
    }
    // 100 detached sleepers: total start time, and the memory their monitors hold (podman: conmon)
    const many = Number(process.env.BENCH_MANY ?? 100);
    const sumMemory = (pids: number[]) => pids.reduce((acc, p) => {
      try {
        const m = memory(p);
        return { rss: acc.rss + m.rss, private: acc.private + m.private };
      } catch {
        return acc;
      }
    }, { rss: 0, private: 0 });
    const fleet = async (name: string, start: () => string, monitors: () => number[], cleanup: () => void) => {
      const t = process.hrtime.bigint();
      for (let i = 0; i < many; i++) start();
      const ms = Number(process.hrtime.bigint() - t) / 1e6;
      const m = sumMemory(monitors());
      console.log(`${name.padEnd(24)}${many} detached sleep containers: ${(ms / 1000).toFixed(1)} s to start; monitors ${(m.rss / 1024).toFixed(1)} MB RSS, ${(m.private / 1024).toFixed(1)} MB private`);
      cleanup();
    };
    await fleet(
      "berth --network none",
      () => must(process.execPath, [...berth, "run", "-d", "--network", "none", "busybox", "sleep", "600"]),
      () => must("sh", ["-c", `cat ${join(base, "berth/containers")}/*/monitor.pid`]).trim().split("\n").map(Number),
      () => void spawnSync("sh", ["-c", `${process.execPath} ${berth.join(" ")} rm -f $(${process.execPath} ${berth.join(" ")} ps -aq)`], { env }),
    );
    if (have("podman")) {
      const p = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"];
      await fleet(
        "podman --network none",
        () => must("podman", [...p, "run", "-d", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", `nproc=${nproc}:${nproc}`, "busybox", "sleep", "600"]),
        () => must("sh", ["-c", "pgrep -x conmon || true"]).trim().split("\n").filter(Boolean).map(Number).filter((pid) => readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(base)),
        () => void spawnSync("podman", [...p, "rm", "-af", "-t", "0"], { env }),
      );
    }
    // the monitor's memory while a container sleeps
    const id = must(process.execPath, [...berth, "run", "-d", "--network", "none", "busybox", "sleep", "30"]).trim();
    const mon = Number(readFileSync(join(base, "berth/containers", id, "monitor.pid"), "utf8"));
    const m = memory(mon);
    console.log(`berth-monitor of an idle container: RSS ${(m.rss / 1024).toFixed(2)} MB, private ${(m.private / 1024).toFixed(2)} MB`);
    must(process.execPath, [...berth, "rm", "-f", id]);
  } finally {
    for (const d of daemons) {
      d.kill("SIGTERM");
      await new Promise((r) => (d.exitCode === null ? d.once("exit", r) : r(undefined)));
    }
    // berth's bridge and nftables table, made by its bridged runs
    const { Networking } = await import("../src/network/index.js");
    await new Networking(join(base, "berth"), join(runtimeRoot, ".network")).removeAll().catch(() => {});
    if (dockerBridge) spawnSync("ip", ["link", "del", "berthbench0"]);
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (existsSync(base)) rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/run: ${e.message}`);
  process.exit(1);
});
