/**
 * bench/network: `run --rm busybox true` with the default (bridged) network, with a published port
 * (`-p PORT:80`) and with --network none — the first is what the issue's headline figures time —
 * and host→container throughput over a published port
 * (1 GiB from 127.0.0.1 into busybox nc), berth beside docker, in one run.
 *
 * docker runs as a private dockerd started here with its bridge on an interface this bench makes
 * (berthbench0) and --iptables=false: this machine's firewall is not the bench's to change, so
 * docker's published ports go through its userland proxy (docker-proxy) — which is also what
 * docker uses for 127.0.0.1 by default. berth uses its own nftables table either way.
 * NODE_EXTRA_CA_CERTS is unset (it is not set on users' machines).
 *
 * Usage: node dist/bench/network.js [iterations=10] [MiB=1024]
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { berthLauncher, env, have, median, must, project, time } from "./common.js";

const iterations = Number(process.argv[2] ?? 10);
const mib = Number(process.argv[3] ?? 1024);
function freePort(): number {
  return Number(must(process.execPath, ["-e", "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"]).trim());
}

/** Send `mib` MiB to 127.0.0.1:port; MB/s. Retries the connection until the server listens. */
async function throughput(port: number): Promise<number> {
  const chunk = Buffer.alloc(1 << 20);
  for (let attempt = 0; attempt < 100; attempt++) {
    const r = await new Promise<number | undefined>((resolve) => {
      const s = connect({ host: "127.0.0.1", port });
      let sent = 0;
      let t0 = 0n;
      s.on("connect", () => {
        t0 = process.hrtime.bigint();
        const pump = () => {
          while (sent < mib) {
            sent++;
            if (!s.write(chunk)) return void s.once("drain", pump);
          }
          s.end();
        };
        pump();
      });
      s.on("error", () => resolve(undefined));
      s.on("close", () => (sent >= mib ? resolve((mib * 1.048576) / (Number(process.hrtime.bigint() - t0) / 1e9)) : resolve(undefined)));
    });
    if (r !== undefined) return r;
    await new Promise((r2) => setTimeout(r2, 100));
  }
  throw new Error(`nothing listened on 127.0.0.1:${port}`);
}

async function main(): Promise<void> {
  const base = mkdtempSync(join(tmpdir(), "berth-bench-net-"));
  const cli = berthLauncher(base);
  const runtimeRoot = join(base, "berth-run");
  const berth = [...cli, "--root", join(base, "berth")];
  const benv = { ...env, BERTH_RUNTIME_ROOT: runtimeRoot };
  const b = (...a: string[]) => [process.execPath, [...berth, ...a]] as const;
  const daemons: ChildProcess[] = [];
  let dockerBridge = false;
  try {
    spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env: { ...env, BERTH_ROOT: join(base, "berth") } });
    Object.assign(env, benv);
    const saved = spawnSync(process.execPath, [...berth, "save", "busybox:latest"], { env, maxBuffer: 1 << 28 }).stdout;
    const port = freePort();
    const tools: Array<{ name: string; none: readonly [string, readonly string[]]; plain: readonly [string, readonly string[]]; bridged: readonly [string, readonly string[]]; sink: (port: number) => readonly [string, readonly string[]]; rm: (name: string) => void }> = [
      {
        name: "berth",
        none: b("run", "--rm", "--network", "none", "busybox", "true"),
        plain: b("run", "--rm", "busybox", "true"),
        bridged: b("run", "--rm", "-p", `${port}:80`, "busybox", "true"),
        sink: (p) => b("run", "-d", "--name", "sink", "-p", `${p}:80`, "busybox", "nc", "-l", "-p", "80", "-e", "sh", "-c", "cat > /dev/null"),
        rm: (n) => void spawnSync(process.execPath, [...berth, "rm", "-f", n], { env }),
      },
    ];
    if (have("dockerd")) {
      spawnSync("ip", ["link", "add", "berthbench0", "type", "bridge"]);
      spawnSync("ip", ["addr", "add", "10.213.199.1/24", "dev", "berthbench0"]);
      spawnSync("ip", ["link", "set", "berthbench0", "up"]);
      dockerBridge = true;
      const sock = join(base, "docker.sock");
      daemons.push(spawn("dockerd", ["--data-root", join(base, "docker/root"), "--exec-root", join(base, "docker/exec"), "--pidfile", join(base, "docker.pid"), "-H", `unix://${sock}`, "--bridge=berthbench0", "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"], { stdio: "ignore" }));
      const d = ["-H", `unix://${sock}`];
      for (let i = 0; i < 600 && spawnSync("/usr/bin/docker", [...d, "version"], { stdio: "ignore" }).status !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      must("/usr/bin/docker", [...d, "load", "-q"], saved);
      tools.push({
        name: "docker",
        none: ["/usr/bin/docker", [...d, "run", "--rm", "--network", "none", "busybox", "true"]],
        plain: ["/usr/bin/docker", [...d, "run", "--rm", "busybox", "true"]],
        bridged: ["/usr/bin/docker", [...d, "run", "--rm", "-p", `${port}:80`, "busybox", "true"]],
        sink: (p) => ["/usr/bin/docker", [...d, "run", "-d", "--name", "sink", "-p", `${p}:80`, "busybox", "nc", "-l", "-p", "80", "-e", "sh", "-c", "cat > /dev/null"]],
        rm: (n) => void spawnSync("/usr/bin/docker", [...d, "rm", "-f", n], { env }),
      });
    }
    for (const t of tools) {
      time(t.none[0], [...t.none[1]]);
      time(t.plain[0], [...t.plain[1]]);
      time(t.bridged[0], [...t.bridged[1]]);
    }
    const none = new Map<string, number[]>(tools.map((t) => [t.name, []]));
    const plain = new Map<string, number[]>(tools.map((t) => [t.name, []]));
    const bridged = new Map<string, number[]>(tools.map((t) => [t.name, []]));
    for (let i = 0; i < iterations; i++)
      for (const t of tools) {
        none.get(t.name)!.push(time(t.none[0], [...t.none[1]]));
        plain.get(t.name)!.push(time(t.plain[0], [...t.plain[1]]));
        bridged.get(t.name)!.push(time(t.bridged[0], [...t.bridged[1]]));
      }
    console.log(`bench/network: run --rm busybox true, median of ${iterations} (NODE_EXTRA_CA_CERTS unset)`);
    for (const t of tools) {
      const n = median(none.get(t.name)!);
      const pl = median(plain.get(t.name)!);
      const br = median(bridged.get(t.name)!);
      console.log(`${t.name.padEnd(8)} --network none ${n.toFixed(1).padStart(7)} ms   default (bridged) ${pl.toFixed(1).padStart(7)} ms   bridged with -p ${br.toFixed(1).padStart(7)} ms   -p costs ${(br - n).toFixed(1).padStart(6)} ms over none`);
    }
    // the issue's headline figures are docker's and podman's default runs (bridged); podman's default
    // network is not run here (netavark would change this machine's firewall)
    if (plain.has("docker")) {
      const ratio = (m: Map<string, number[]>) => (median(m.get("docker")!) / median(m.get("berth")!)).toFixed(2);
      console.log(`docker's time / berth's: default network ${ratio(plain)}x, with -p ${ratio(bridged)}x, --network none ${ratio(none)}x`);
    }
    const speeds = new Map<string, number>();
    for (const t of tools) {
      const p = freePort();
      must(t.sink(p)[0], [...t.sink(p)[1]]);
      speeds.set(t.name, await throughput(p));
      t.rm("sink");
    }
    const docker = speeds.get("docker");
    console.log(`bench/network: ${mib} MiB from 127.0.0.1 over a published port into busybox nc`);
    for (const [name, s] of speeds) console.log(`${name.padEnd(8)} ${s.toFixed(0).padStart(6)} MB/s${docker ? `   ${(s / docker).toFixed(2)}x docker's` : ""}`);
  } finally {
    for (const d of daemons) {
      d.kill("SIGTERM");
      await new Promise((r) => (d.exitCode === null ? d.once("exit", r) : r(undefined)));
    }
    spawnSync(process.execPath, [...berth, "rm", "-f", "sink"], { env });
    const { Networking } = await import("../src/network/index.js");
    await new Networking(join(base, "berth"), join(runtimeRoot, ".network")).removeAll().catch(() => {});
    if (dockerBridge) spawnSync("ip", ["link", "del", "berthbench0"]);
    spawnSync("sh", ["-c", `grep -o " ${base}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    if (existsSync(base)) rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/network: ${e.message}`);
  process.exit(1);
});
