/** What the CLI benches share: the environment users have, timing, and berth through its launcher. */
import { spawn, spawnSync } from "node:child_process";
import * as http from "node:http";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { removeEmptyParent } from "../src/cgroups/index.js";

// berth keeps its parent cgroup between containers: the bench leaves none behind
if (process.getuid?.() === 0) process.once("exit", () => removeEmptyParent());
import { fileURLToPath } from "node:url";

export const project = join(dirname(fileURLToPath(import.meta.url)), "../..");
/** NODE_EXTRA_CA_CERTS is unset: it is not set on users' machines and slows every node start. */
export const env: NodeJS.ProcessEnv = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;
export const have = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

export function must(cmd: string, args: string[], input?: Buffer): string {
  const r = spawnSync(cmd, args, { env, input, maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout.toString();
}

export function time(cmd: string, args: string[]): number {
  const t = process.hrtime.bigint();
  must(cmd, args);
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/**
 * node's arguments to run berth as the installed command does: from its V8 start-up snapshot when
 * the build made one, else through a launcher in `dir` that keeps V8's code cache for the bundle.
 */
export function berthLauncher(dir: string): string[] {
  const blob = join(project, "dist/berth.blob");
  if (existsSync(blob) && existsSync(`${blob}.flags`)) return ["--snapshot-blob", blob, ...readFileSync(`${blob}.flags`, "utf8").split(/\s+/).filter(Boolean), "--"];
  const cli = join(dir, "berth-cli.cjs");
  writeFileSync(cli, `globalThis.berthBuildDir = ${JSON.stringify(join(project, "build"))};\nrequire(${JSON.stringify(join(project, "scripts/launcher.cjs"))})(${JSON.stringify(join(project, "dist/berth.cjs"))});\n`);
  return [cli];
}

/**
 * berth (or berth-runtime, with runtime) as installed with `berth system warm` running: the
 * installed client (helper/berth-client.c, built into `dir` by scripts/install-launchers.sh) hands
 * each command to a warm process of a pool started here on its own socket, with the given
 * environment. stop() ends the pool.
 */
export async function berthWarm(dir: string, e: NodeJS.ProcessEnv, opts: { runtime?: boolean } = {}): Promise<{ cmd: string; env: NodeJS.ProcessEnv; stop(): Promise<void> }> {
  const bin = join(dir, "warm-bin");
  spawnSync("mkdir", ["-p", bin]);
  const r = spawnSync("sh", [join(project, "scripts/install-launchers.sh"), process.execPath, bin], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`install-launchers: ${r.stderr}`);
  const socket = join(dir, opts.runtime ? "runtime-warm.sock" : "warm.sock");
  const warmEnv = { ...e, [opts.runtime ? "BERTH_RUNTIME_WARM_SOCKET" : "BERTH_WARM_SOCKET"]: socket };
  const pool = spawn(join(bin, "berth"), ["system", "warm", ...(opts.runtime ? ["--runtime"] : []), "--socket", socket], { env: { ...e, BERTH_WARM: "0" }, stdio: ["ignore", "ignore", "inherit"] });
  for (let i = 0; i < 100 && !existsSync(socket); i++) await new Promise((res) => setTimeout(res, 50));
  await new Promise((res) => setTimeout(res, 1000)); // the warm processes' own start
  return {
    cmd: join(bin, opts.runtime ? "berth-runtime" : "berth"),
    env: warmEnv,
    stop: () =>
      new Promise((res) => {
        pool.once("exit", () => res());
        pool.kill("SIGTERM");
      }),
  };
}

/** Waits until an Engine API server answers GET /_ping on the unix socket. */
export async function waitForPing(sock: string): Promise<void> {
  const ping = () =>
    new Promise<boolean>((resolve) => {
      const req = http.request({ socketPath: sock, path: "/_ping" }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on("error", () => resolve(false));
      req.end();
    });
  for (let i = 0; i < 600; i++) {
    if (await ping()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing answers on ${sock}`);
}

/**
 * A private dockerd (Debian's docker.io) with its state under `base`: its default bridge is an
 * interface of the bench's own (`bridge`, address `cidr`), and it changes no firewall (--iptables=false
 * and friends). stop() ends it and removes the bridge.
 */
export async function privateDockerd(base: string, bridge: string, cidr: string): Promise<{ sock: string; pid: number; stop(): Promise<void>; settle(): Promise<void> }> {
  spawnSync("ip", ["link", "add", bridge, "type", "bridge"]);
  spawnSync("ip", ["addr", "add", cidr, "dev", bridge]);
  spawnSync("ip", ["link", "set", bridge, "up"]);
  const sock = join(base, "docker.sock");
  const child = spawn("dockerd", ["--data-root", join(base, "docker/root"), "--exec-root", join(base, "docker/exec"), "--pidfile", join(base, "docker.pid"), "-H", `unix://${sock}`, `--bridge=${bridge}`, "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false"], { stdio: "ignore" });
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    spawnSync("ip", ["link", "del", bridge]);
  };
  try {
    await waitForPing(sock);
  } catch (e) {
    await stop();
    throw e;
  }
  return { sock, pid: child.pid!, stop, settle: () => settle(child.pid!) };
}

/**
 * Waits until a process has gone idle (under 2% of a CPU over half a second, up to 15 s): a
 * dockerd just started works for seconds after it answers, and on two cores that work would be
 * charged to whatever is measured beside it.
 */
export async function settle(pid: number): Promise<void> {
  const ticks = () => {
    try {
      return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ").slice(11, 13).reduce((n, v) => n + Number(v), 0);
    } catch {
      return 0;
    }
  };
  for (let i = 0, last = ticks(); i < 30; i++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = ticks();
    if (now - last <= 1) return;
    last = now;
  }
}
