/**
 * bench/logs: how fast each engine's log writer takes a container's output, and the CPU it spends:
 * berth's monitor (json-file), podman's conmon (k8s-file, its default) and a private dockerd's
 * json-file driver (dockerd and its containerd shim together), in one run. The container writes
 * MB megabytes of 32-byte lines as fast as it can, then a marker; the time is from `run -d`
 * returning to the marker in the log file, the CPU that of the log writer's processes over it.
 * Logs are unlimited for all (no rotation). NODE_EXTRA_CA_CERTS is unset.
 *
 * Usage: node dist/bench/logs.js [MB=100]
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, openSync, readSync, closeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { berthLauncher, env, have, must, privateDockerd, project } from "./common.js";

const mb = Number(process.argv[2] ?? 100);
const lines = Math.floor((mb * 1e6) / 32);
// 31 characters and a newline per line, then END
const script = `yes 0123456789abcdefghijklmnopqrstu 2>/dev/null | head -n ${lines}; echo END; sleep 30`;
const ticks = 100; // USER_HZ

/** utime+stime of a process, in ms (0 if gone). */
function cpuMs(pid: number): number {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / ticks;
  } catch {
    return 0;
  }
}

/** Processes whose arguments contain text. */
function processesNaming(text: string): number[] {
  return readdirSync("/proc")
    .filter((p) => /^\d+$/.test(p) && Number(p) !== process.pid)
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, "utf8").includes(text);
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Waits until the file ends with the marker line (the last 64 bytes read). */
async function waitForEnd(path: string, marker: RegExp, timeoutMs = 600_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const buf = Buffer.alloc(512);
  for (;;) {
    if (existsSync(path)) {
      const size = statSync(path).size;
      const fd = openSync(path, "r");
      const n = readSync(fd, buf, 0, buf.length, Math.max(0, size - buf.length));
      closeSync(fd);
      if (marker.test(buf.subarray(0, n).toString())) return;
    }
    if (Date.now() > deadline) throw new Error(`no end marker in ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Result {
  name: string;
  ms: number;
  cpu: number;
  bytes: number;
}

/** The time a log record was written, from its own timestamp (json-file's "time", k8s-file's first field). */
function recordTime(line: string): number {
  const m = /"time":"([^"]+)"/.exec(line) ?? /^(\S+) /.exec(line);
  if (!m) throw new Error(`no time in the log record ${line.slice(0, 80)}`);
  const t = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(m[1]!);
  if (!t) throw new Error(`unreadable time ${m[1]}`);
  return Date.parse(`${t[1]}${t[3]}`) + Number(`0.${t[2] ?? "0"}`) * 1000;
}

/**
 * Runs one engine's container. The time is the log's own: from its first record to the marker's
 * (the writer's throughput, not the engine's start-up). The CPU is what the writer's processes
 * used: all of it for processes made for this container, the growth for those that were there
 * before (a daemon).
 */
async function measure(name: string, start: () => { logPath: () => string; writers: () => number[] }, marker: RegExp, daemons: number[] = []): Promise<Result> {
  const before = new Map(daemons.map((p) => [p, cpuMs(p)]));
  const s = start();
  const path = s.logPath();
  await waitForEnd(path, marker);
  const cpu = s.writers().reduce((n, p) => n + cpuMs(p) - (before.get(p) ?? 0), 0);
  const text = readFileSync(path, "utf8");
  const first = text.slice(0, text.indexOf("\n"));
  const endLine = text.slice(text.lastIndexOf("\n", text.lastIndexOf("END")) + 1).split("\n")[0]!;
  return { name, ms: recordTime(endLine) - recordTime(first), cpu, bytes: statSync(path).size };
}

async function main(): Promise<void> {
  const base = mkdtempSync(join(tmpdir(), "berth-bench-logs-"));
  Object.assign(env, { BERTH_ROOT: join(base, "berth"), BERTH_RUNTIME_ROOT: join(base, "berth-run") });
  delete env.NODE_EXTRA_CA_CERTS;
  const results: Result[] = [];
  let dockerd: Awaited<ReturnType<typeof privateDockerd>> | undefined;
  const podmanArgs = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"];
  try {
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env });
    const berthCmd = [process.execPath, ...berthLauncher(base)];
    const berth = (...args: string[]) => must(berthCmd[0]!, [...berthCmd.slice(1), ...args]).trim();
    const saved = spawnSync(process.execPath, [join(project, "dist/berth.cjs"), "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;

    results.push(
      await measure(
        "berth (berth-monitor, json-file)",
        () => {
          const id = berth("run", "-d", "--network", "none", "--log-opt", "max-size=-1", "busybox", "sh", "-c", script);
          // the container's monitor (its arguments name the container's directory)
          const monitor = processesNaming(join(base, "berth/containers", id)).filter((p) => readFileSync(`/proc/${p}/cmdline`, "utf8").startsWith(join(project, "build/berth-monitor")));
          return { logPath: () => join(base, "berth/containers", id, `${id}-json.log`), writers: () => monitor };
        },
        /"END\\n"/,
      ),
    );
    const ids = berth("ps", "-aq").split("\n").filter(Boolean);
    if (ids.length) berth("rm", "-f", ...ids);

    if (have("podman")) {
      must("podman", [...podmanArgs, "load", "-q"], saved);
      results.push(
        await measure(
          "podman (conmon, k8s-file)",
          () => {
            const id = must("podman", [...podmanArgs, "run", "-d", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "busybox", "sh", "-c", script]).trim();
            const info = JSON.parse(must("podman", [...podmanArgs, "inspect", id]))[0];
            return { logPath: () => info.HostConfig.LogConfig.Path, writers: () => [info.State.ConmonPid] };
          },
          /stdout F END\n$/,
        ),
      );
      must("podman", [...podmanArgs, "rm", "-f", "-a"]);
    }

    if (have("dockerd") && existsSync("/usr/bin/docker")) {
      dockerd = await privateDockerd(base, "berthbench2", "10.213.199.1/24");
      const docker = (...args: string[]) => must("/usr/bin/docker", ["-H", `unix://${dockerd!.sock}`, ...args]).trim();
      must("/usr/bin/docker", ["-H", `unix://${dockerd.sock}`, "load", "-q"], saved);
      await dockerd.settle();
      const daemonPid = dockerd.pid;
      results.push(
        await measure(
          "dockerd 20.10 (json-file, with its shim)",
          () => {
            const id = docker("run", "-d", "--network", "none", "--log-driver", "json-file", "busybox", "sh", "-c", script);
            const logPath = docker("inspect", "-f", "{{.LogPath}}", id);
            // dockerd, its containerd and the container's shim (which daemonized: found by its arguments)
            return { logPath: () => logPath, writers: () => [daemonPid, ...processesNaming(join(base, "docker"))] };
          },
          /"END\\n"/,
          [daemonPid, ...processesNaming(join(base, "docker"))],
        ),
      );
      docker("rm", "-f", ...docker("ps", "-aq").split("\n").filter(Boolean));
    }
    console.log(`bench/logs: ${new Date().toISOString().slice(0, 10)}, ${mb} MB of 32-byte lines (${lines} lines) into each engine's log`);
    console.log("time: from the log's first record to its last (the records' own timestamps); CPU: the writer's processes");
    console.log(`${"writer".padEnd(42)} ${"time".padStart(9)} ${"MB/s".padStart(7)} ${"CPU".padStart(9)} ${"CPU ms/MB".padStart(10)} ${"log size".padStart(10)}`);
    for (const r of results)
      console.log(`${r.name.padEnd(42)} ${`${r.ms.toFixed(0)} ms`.padStart(9)} ${(mb / (r.ms / 1000)).toFixed(1).padStart(7)} ${`${r.cpu.toFixed(0)} ms`.padStart(9)} ${(r.cpu / mb).toFixed(1).padStart(10)} ${`${(r.bytes / 1e6).toFixed(0)} MB`.padStart(10)}`);
  } finally {
    await dockerd?.stop();
    if (have("podman")) spawnSync("podman", [...podmanArgs, "system", "reset", "-f"]);
    const left = spawnSync(process.execPath, [join(project, "dist/berth.cjs"), "ps", "-aq"], { env, encoding: "utf8" }).stdout.split("\n").filter(Boolean);
    if (left.length) spawnSync(process.execPath, [join(project, "dist/berth.cjs"), "rm", "-f", ...left], { env });
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/logs: ${(e as Error).message}`);
  process.exit(1);
});
