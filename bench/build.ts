/**
 * bench/build: `berth build` beside dockerd's BuildKit and legacy builder (a private dockerd, its
 * bridge an interface of the bench's own, --iptables=false) and `podman build` (its own root), on
 * the same Dockerfiles and the same busybox image, in one run. berth twice: as installed with
 * `berth system warm` running (its commands start no Node, as the docker CLI's daemon is already up)
 * and without it (each command starts Node from berth's snapshot). Ratios are to berth with warm
 * processes; the last column is berth without them.
 *  - a 10-step Dockerfile, cold (--no-cache)
 *  - a rebuild with nothing changed (every step cached)
 *  - a rebuild after one copied source file changed
 *  - two independent 2-second stages (wall time; one stage alone takes 2 s)
 * Every build starts 500 ms after the one before (a user's rebuild, not a loop; the same for all).
 * Every builder runs RUN steps with --network none (the same for all; network setup is not measured).
 * NODE_EXTRA_CA_CERTS is unset. Prints medians and each peer's time over berth's.
 *
 * Usage: node dist/bench/build.js [iterations=5]
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { berthLauncher, berthWarm, env, have, median, must, privateDockerd, project } from "./common.js";

const iterations = Number(process.argv[2] ?? 5);
const cli = "/usr/bin/docker";

const TEN = `FROM busybox
ENV A=1
WORKDIR /app
COPY a.txt /app/
RUN echo one > /one
COPY b.txt /app/
RUN echo two > /two && cat /app/a.txt /app/b.txt > /both
LABEL bench=yes
RUN mkdir -p /data && echo three > /data/three
CMD ["cat", "/both"]
`;
const PARALLEL = `FROM busybox AS a
RUN sleep 2; echo a > /a
FROM busybox AS b
RUN sleep 2; echo b > /b
FROM busybox
COPY --from=a /a /a
COPY --from=b /b /b
`;

// Each build starts after a pause, as a user's rebuild does (an edit, then `build`), not as a tight
// loop: berth's warm processes are replaced between commands, dockerd's caches settle.
const pause = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);

function timed(cmd: string, args: string[], e: NodeJS.ProcessEnv): number {
  pause();
  const t0 = process.hrtime.bigint();
  const r = spawnSync(cmd, args, { env: e, stdio: ["ignore", "ignore", "pipe"], maxBuffer: 1 << 26 });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return ms;
}

async function main(): Promise<void> {
  if (!have("dockerd") || !existsSync(cli)) throw new Error("needs Debian's docker.io (dockerd and the docker CLI)");
  const base = mkdtempSync(join(tmpdir(), "berth-bench-build-"));
  let dockerd: Awaited<ReturnType<typeof privateDockerd>> | undefined;
  let warm: Awaited<ReturnType<typeof berthWarm>> | undefined;
  const berthRoot = join(base, "berth");
  const runtimeRoot = join(base, "berth-run");
  Object.assign(env, { BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_ROOT: berthRoot });
  delete env.NODE_EXTRA_CA_CERTS;
  try {
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env });
    const saved = spawnSync(process.execPath, [join(project, "dist/berth.cjs"), "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;
    dockerd = await privateDockerd(base, "berthbench1", "10.213.198.1/24");
    const dockerSock = dockerd.sock;
    must(cli, ["-H", `unix://${dockerSock}`, "load", "-q"], saved);
    // runc: crun refuses this host's hybrid cgroups; ulimits: root here lacks CAP_SYS_RESOURCE for podman's defaults
    const podmanArgs = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"];
    const podman = have("podman");
    if (podman) must("podman", [...podmanArgs, "load", "-q"], saved);
    await dockerd.settle(); // its start-up work would be charged to the first builder measured

    // berth as the installed command starts (its start-up snapshot where the build made one)
    const berthCmd = berthLauncher(base);
    warm = await berthWarm(base, env);
    const { cmd: warmCmd, env: warmEnv } = warm;
    const builders: { name: string; build: (dir: string, extra: string[]) => [string, string[], NodeJS.ProcessEnv] }[] = [
      { name: "berth", build: (dir, extra) => [warmCmd, ["build", "-q", "--network", "none", ...extra, dir], warmEnv] },
      { name: "berth (no warm)", build: (dir, extra) => [process.execPath, [...berthCmd, "build", "-q", "--network", "none", ...extra, dir], env] },
      { name: "buildkit", build: (dir, extra) => [cli, ["-H", `unix://${dockerSock}`, "build", "-q", "--network", "none", ...extra, dir], { ...env, DOCKER_BUILDKIT: "1" }] },
      { name: "legacy", build: (dir, extra) => [cli, ["-H", `unix://${dockerSock}`, "build", "-q", "--network", "none", ...extra, dir], { ...env, DOCKER_BUILDKIT: "0" }] },
      ...(podman ? [{ name: "podman", build: (dir: string, extra: string[]) => [("podman"), [...podmanArgs, "build", "-q", "--network", "none", "--layers", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", ...extra, dir], env] as [string, string[], NodeJS.ProcessEnv] }] : []),
    ];
    // BERTH_BENCH_ONLY=berth: only the builders whose name starts so (a quick look while developing)
    const only = process.env.BERTH_BENCH_ONLY;
    if (only) builders.splice(0, builders.length, ...builders.filter((b) => b.name.startsWith(only)));
    const results = new Map<string, Map<string, number>>();
    const record = (scenario: string, who: string, ms: number) => {
      if (!results.has(scenario)) results.set(scenario, new Map());
      results.get(scenario)!.set(who, ms);
    };
    for (const bld of builders) {
      const dir = join(base, `ctx-${bld.name}`);
      mkdirSync(dir);
      writeFileSync(join(dir, "Dockerfile"), TEN);
      writeFileSync(join(dir, "a.txt"), "a\n");
      writeFileSync(join(dir, "b.txt"), "b\n");
      const run = (extra: string[] = []) => timed(...bld.build(dir, extra));
      run(); // warm: the base image's layers, the builder's own start
      const cold: number[] = [],
        cached: number[] = [],
        changed: number[] = [];
      for (let i = 0; i < iterations; i++) cold.push(run(["--no-cache"]));
      run();
      for (let i = 0; i < iterations; i++) cached.push(run());
      for (let i = 0; i < iterations; i++) {
        writeFileSync(join(dir, "b.txt"), `b ${i} ${Date.now()}\n`);
        changed.push(run());
      }
      const pdir = join(base, `par-${bld.name}`);
      mkdirSync(pdir);
      writeFileSync(join(pdir, "Dockerfile"), PARALLEL);
      const par = timed(...bld.build(pdir, ["--no-cache"]));
      record("10 steps, cold (--no-cache)", bld.name, median(cold));
      record("rebuild, nothing changed", bld.name, median(cached));
      record("rebuild, one source changed", bld.name, median(changed));
      record("two 2 s stages (wall)", bld.name, par);
      console.error(`bench/build: ${bld.name} done`);
    }
    console.log(`bench/build: ${new Date().toISOString().slice(0, 10)}, median of ${iterations}, RUN with --network none, NODE_EXTRA_CA_CERTS unset`);
    const peers = builders.map((b) => b.name).filter((n) => n !== "berth");
    console.log(`${"scenario".padEnd(30)} ${"berth (warm)".padStart(12)} ${peers.map((p) => p.padStart(18)).join(" ")}`);
    for (const [scenario, byWho] of results) {
      const mine = byWho.get("berth")!;
      const cols = peers.map((p) => `${byWho.get(p)!.toFixed(0)} ms ${(byWho.get(p)! / mine).toFixed(1)}x`.padStart(18));
      console.log(`${scenario.padEnd(30)} ${`${mine.toFixed(0)} ms`.padStart(12)} ${cols.join(" ")}`);
    }
  } finally {
    await warm?.stop();
    await dockerd?.stop();
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (existsSync(base)) rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/build: ${(e as Error).message}`);
  process.exit(1);
});
