/**
 * bench/run: `run --rm busybox true` with berth beside docker (a private dockerd started here) and
 * podman, on the same busybox image (berth's default image, saved and loaded into the others), in
 * one run, all with --network none (berth's default is a bridge since the networking issue).
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
  try {
    // berth's default image into a private store, then into the peers
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env: { ...env, BERTH_ROOT: join(base, "berth") } });
    const saved = spawnSync(process.execPath, [...berth, "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;
    const tools: Array<{ name: string; cmd: readonly [string, readonly string[]] }> = [{ name: "berth --network none", cmd: b("run", "--rm", "--network", "none", "busybox", "true") }];
    // podman raises NOFILE and NPROC by default, which root without CAP_SYS_RESOURCE cannot (this VM)
    const nproc = 4096;
    if (have("podman")) {
      const p = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file"];
      must("podman", [...p, "load", "-q"], saved);
      // runc: crun refuses this kind of host's hybrid cgroups; nofile: root here lacks CAP_SYS_RESOURCE for podman's default
      tools.push({ name: "podman --network none", cmd: ["podman", [...p, "--runtime", "runc", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", `nproc=${nproc}:${nproc}`, "busybox", "true"]] });
    }
    if (have("dockerd")) {
      const sock = join(base, "docker.sock");
      daemons.push(spawn("dockerd", ["--data-root", join(base, "docker/root"), "--exec-root", join(base, "docker/exec"), "--pidfile", join(base, "docker.pid"), "-H", `unix://${sock}`, "--bridge=none", "--iptables=false", "--ip6tables=false"], { stdio: "ignore" }));
      const d = ["-H", `unix://${sock}`];
      for (let i = 0; i < 600 && spawnSync("/usr/bin/docker", [...d, "version"], { stdio: "ignore" }).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      must("/usr/bin/docker", [...d, "load", "-q"], saved);
      tools.push({ name: "docker --network none", cmd: ["/usr/bin/docker", [...d, "run", "--rm", "--network", "none", "busybox", "true"]] });
    }
    for (const t of tools) time(t.cmd[0], [...t.cmd[1]]); // warm up
    const times = new Map<string, number[]>(tools.map((t) => [t.name, []]));
    for (let i = 0; i < iterations; i++) for (const t of tools) times.get(t.name)!.push(time(t.cmd[0], [...t.cmd[1]]));
    const fastestPeer = Math.min(...[...times].filter(([n]) => !n.startsWith("berth")).map(([, xs]) => median(xs)));
    console.log(`bench/run: run --rm busybox true, median of ${iterations} (NODE_EXTRA_CA_CERTS unset)`);
    for (const [name, xs] of times) console.log(`${name.padEnd(24)}${median(xs).toFixed(1).padStart(8)} ms   ${(median(xs) / fastestPeer).toFixed(2)}x the fastest peer's time`);
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
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (existsSync(base)) rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/run: ${e.message}`);
  process.exit(1);
});
