/**
 * bench/api: the Docker Engine API served by berth (`berth system service`) beside a private dockerd
 * (Debian's docker.io, its bridge an interface of the bench's own, --iptables=false), both driven by
 * the same docker CLI on the same busybox image, in one run:
 *  - `docker run --rm busybox true` (default network and --network none)
 *  - `docker ps -a` with 100 containers, `docker inspect` of one
 *  - 50 concurrent POST /containers/create + start
 *  - the server's memory idle and after 10,000 requests (dockerd: with its containerd)
 * NODE_EXTRA_CA_CERTS is unset.
 *
 * Usage: node dist/bench/api.js [iterations=10]
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { env, have, median, must, privateDockerd, project, time, waitForPing } from "./common.js";

const iterations = Number(process.argv[2] ?? 10);
const cli = ["/usr/bin/docker", "/usr/local/bin/docker"].find((p) => existsSync(p))!;

const rssMB = (pid: number) => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;

function request(sock: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const text = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath: sock, method, path, headers: text ? { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) } : {} }, (res) => {
      let data = "";
      res.on("data", (d) => (data += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on("error", reject);
    req.end(text);
  });
}

async function main(): Promise<void> {
  if (!have("dockerd") || !cli) throw new Error("needs Debian's docker.io (dockerd and the docker CLI)");
  const base = mkdtempSync(join(tmpdir(), "berth-bench-api-"));
  const daemons: ChildProcess[] = [];
  const runtimeRoot = join(base, "berth-run");
  const berthRoot = join(base, "berth");
  Object.assign(env, { BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_ROOT: berthRoot });
  let dockerd: Awaited<ReturnType<typeof privateDockerd>> | undefined;
  try {
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env });
    const saved = spawnSync(process.execPath, [join(project, "dist/berth.cjs"), "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;
    const berthSock = join(base, "berth.sock");
    // the server as `berth system service` starts it (its malloc setting included)
    const berthd = spawn(process.execPath, [join(project, "dist/berth-api.cjs"), "--root", berthRoot, `unix://${berthSock}`], { env: { ...env, MALLOC_ARENA_MAX: "1" }, stdio: "ignore" });
    daemons.push(berthd);
    dockerd = await privateDockerd(base, "berthbench0", "10.213.199.1/24");
    const dockerSock = dockerd.sock;
    await waitForPing(berthSock);
    console.error("bench/api: both servers answer");
    must(cli, ["-H", `unix://${dockerSock}`, "load", "-q"], saved);
    await dockerd.settle();
    const servers = [
      { name: "berth", sock: berthSock, pid: berthd.pid! },
      { name: "dockerd", sock: dockerSock, pid: dockerd.pid! },
    ];
    const d = (s: { sock: string }, ...a: string[]) => [cli, ["-H", `unix://${s.sock}`, ...a]] as const;
    const idle = Object.fromEntries(servers.map((s) => [s.name, rssMB(s.pid) + (s.name === "dockerd" ? containerdRss(base) : 0)]));

    const cases: Array<{ name: string; cmd: (s: { sock: string }) => readonly [string, readonly string[]] }> = [
      { name: "run --rm busybox true", cmd: (s) => d(s, "run", "--rm", "busybox", "true") },
      { name: "run --rm --network none", cmd: (s) => d(s, "run", "--rm", "--network", "none", "busybox", "true") },
    ];
    for (const s of servers) for (const c of cases) time(c.cmd(s)[0], [...c.cmd(s)[1]]); // warm up
    const times = new Map<string, number[]>();
    for (let i = 0; i < iterations; i++)
      for (const s of servers)
        for (const c of cases) {
          const [cmd, args] = c.cmd(s);
          times.set(`${s.name} ${c.name}`, [...(times.get(`${s.name} ${c.name}`) ?? []), time(cmd, [...args])]);
        }
    // 100 containers (created, not started) for ps and inspect
    for (const s of servers) for (let i = 0; i < 100; i++) must(cli, ["-H", `unix://${s.sock}`, "create", "--name", `c${i}`, "busybox", "true"]);
    for (const s of servers) {
      for (const [name, args] of [["ps -a (100 containers)", ["ps", "-a"]], ["inspect one", ["inspect", "c42"]]] as const) {
        const key = `${s.name} ${name}`;
        for (let i = 0; i < iterations; i++) times.set(key, [...(times.get(key) ?? []), time(cli, ["-H", `unix://${s.sock}`, ...args])]);
      }
    }
    console.error("bench/api: runs, ps and inspect timed");
    // 50 concurrent creates + starts through the API
    const concurrent: Record<string, { ms: number; ok: number; error?: string }> = {};
    for (const s of servers) {
      const t = process.hrtime.bigint();
      const results = await Promise.allSettled(
        Array.from({ length: 50 }, async (_, i) => {
          const c = await request(s.sock, "POST", `/containers/create?name=p${i}`, { Image: "busybox", Cmd: ["sleep", "30"], HostConfig: { NetworkMode: "none" } });
          if (c.status !== 201) throw new Error(`create: ${c.status} ${c.body.trim()}`);
          const id = JSON.parse(c.body).Id;
          const st = await request(s.sock, "POST", `/containers/${id}/start`);
          if (st.status !== 204) throw new Error(`start: ${st.status} ${st.body.trim()}`);
        }),
      );
      const errors = results.flatMap((r) => (r.status === "rejected" ? [(r.reason as Error).message] : []));
      concurrent[s.name] = { ms: Number(process.hrtime.bigint() - t) / 1e6, ok: 50 - errors.length, ...(errors.length ? { error: errors[0] } : {}) };
    }
    // 10,000 requests (GET /containers/json with ~150 containers, 20 at a time), then the memory
    const busy: Record<string, number> = {};
    for (const s of servers) {
      for (let i = 0; i < 500; i++) await Promise.allSettled(Array.from({ length: 20 }, () => request(s.sock, "GET", "/_ping")));
      busy[s.name] = rssMB(s.pid) + (s.name === "dockerd" ? containerdRss(base) : 0);
    }
    console.log(`bench/api: the docker CLI (${cli}) against berth's API and a private dockerd, median of ${iterations} (NODE_EXTRA_CA_CERTS unset)`);
    for (const key of new Set([...times.keys()].map((k) => k.replace(/^\S+ /, "")))) {
      const b = median(times.get(`berth ${key}`)!),
        o = median(times.get(`dockerd ${key}`)!);
      console.log(`${key.padEnd(28)} berth ${b.toFixed(1).padStart(7)} ms   dockerd ${o.toFixed(1).padStart(7)} ms   ${(o / b).toFixed(2)}x`);
    }
    for (const s of servers) console.log(`${s.name.padEnd(8)} 50 concurrent create+start: ${concurrent[s.name]!.ok}/50 ok in ${concurrent[s.name]!.ms.toFixed(0)} ms${concurrent[s.name]!.error ? ` (first error: ${concurrent[s.name]!.error})` : ""}`);
    for (const s of servers) console.log(`${s.name.padEnd(8)} memory: ${idle[s.name]!.toFixed(1)} MB idle, ${busy[s.name]!.toFixed(1)} MB after 10,000 requests${s.name === "dockerd" ? " (with containerd)" : ""}`);
    for (const s of servers) spawnSync("sh", ["-c", `${cli} -H unix://${s.sock} rm -f $(${cli} -H unix://${s.sock} ps -aq)`], { stdio: "ignore" });
  } finally {
    for (const dmn of daemons) {
      dmn.kill("SIGTERM");
      await new Promise((r) => (dmn.exitCode === null ? dmn.once("exit", r) : r(undefined)));
    }
    const { Networking } = await import("../src/network/index.js");
    await new Networking(berthRoot, join(runtimeRoot, ".network")).removeAll().catch(() => {});
    await dockerd?.stop();
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (existsSync(base)) rmSync(base, { recursive: true, force: true });
  }
}

/** The RSS of the containerd that this bench's dockerd started (its state under the bench's directory). */
function containerdRss(base: string): number {
  let mb = 0;
  for (const p of readdirNumeric("/proc")) {
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, "utf8");
      if (cmd.startsWith("containerd") && cmd.includes(base)) mb += rssMB(p);
    } catch {
      // gone
    }
  }
  return mb;
}

function readdirNumeric(dir: string): number[] {
  return (spawnSync("ls", [dir], { encoding: "utf8" }).stdout ?? "").split("\n").filter((x) => /^\d+$/.test(x)).map(Number);
}

main().catch((e) => {
  console.error(`bench/api: ${e.message}`);
  process.exit(1);
});
