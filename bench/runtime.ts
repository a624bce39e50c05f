/**
 * bench/runtime: berth-runtime beside runc and crun on the same busybox bundle running `true`.
 *   - `run` (one command: create, start, wait, delete)
 *   - the create / start / delete cycle as engines drive it (three commands)
 *   - berth's in-process library path (Runtime.run from a live Node process: no Node start-up)
 *   - berth-runtime as installed with `berth system warm --runtime` running (its own socket)
 *   - each command of the cycle alone, for the CLIs
 * Every CLI command starts 200 ms after the one before (see pause below).
 * Medians over N runs, ratios to runc, in one run. NODE_EXTRA_CA_CERTS is unset for every child
 * (it adds ~70 ms to each node start on the dev machines and is not set on users' machines).
 *
 * Usage: node dist/bench/runtime.js [iterations=30]
 */
import { spawnSync } from "node:child_process";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Runtime } from "../src/runtime/index.js";
import { berthWarm } from "./common.js";

const project = join(dirname(fileURLToPath(import.meta.url)), "../..");
const iterations = Number(process.argv[2] ?? 30);
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;

const which = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).stdout.trim();
const bundle = mkdtempSync(join(tmpdir(), "berth-bench-"));
const spec = JSON.parse(readFileSync(join(project, "build/fixtures/busybox/config.json"), "utf8"));
spec.root.path = join(project, "build/fixtures/busybox/rootfs");
spec.process.args = ["/bin/true"];
writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
};

function time(fn: () => void): number {
  const t = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

// stderr goes to a file: a created container inherits the runtime's stdio, and a pipe would keep
// spawnSync waiting until the container exits.
const errFile = join(bundle, "stderr");
function must(cmd: string, args: string[], e: NodeJS.ProcessEnv = env): void {
  const fd = openSync(errFile, "w");
  const r = spawnSync(cmd, args, { env: e, stdio: ["ignore", "ignore", fd] });
  closeSync(fd);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${readFileSync(errFile, "utf8")}`);
}

interface Row {
  name: string;
  run: number;
  cycle: number;
  /** each command of the cycle alone (CLIs only) */
  steps?: { create: number; start: number; delete: number };
}

// Each command starts 200 ms after the one before, for every runtime: an engine's calls come so
// (create and start of one container, its delete when it exits, interleaved with its own work), and
// a warm pool replaces the process a command used meanwhile. In a tight loop of commands the pool
// falls behind (each replacement is a Node start on 2 cores) and commands start cold.
const pause = () => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);

function benchCli(name: string, argv0: string, pre: string[], e: NodeJS.ProcessEnv = env): Row {
  const root = mkdtempSync(join(tmpdir(), "berth-bench-root-"));
  const runs: number[] = [];
  const cycles: number[] = [];
  const steps = { create: [] as number[], start: [] as number[], delete: [] as number[] };
  // one warm-up each, not counted
  must(argv0, [...pre, "--root", root, "run", "--bundle", bundle, "warm"], e);
  for (let i = 0; i < iterations; i++) {
    pause();
    runs.push(time(() => must(argv0, [...pre, "--root", root, "run", "--bundle", bundle, `r${i}`], e)));
    pause();
    const c = time(() => must(argv0, [...pre, "--root", root, "create", "--bundle", bundle, `c${i}`], e));
    pause();
    const s = time(() => must(argv0, [...pre, "--root", root, "start", `c${i}`], e));
    pause();
    const d = time(() => must(argv0, [...pre, "--root", root, "delete", "--force", `c${i}`], e));
    cycles.push(c + s + d);
    steps.create.push(c);
    steps.start.push(s);
    steps.delete.push(d);
  }
  rmSync(root, { recursive: true, force: true });
  return { name, run: median(runs), cycle: median(cycles), steps: { create: median(steps.create), start: median(steps.start), delete: median(steps.delete) } };
}

/**
 * berth-runtime as installed (the client, helper/berth-client.c) with `berth system warm --runtime`
 * running on a socket of the bench's own: every command of the cycle runs in a warm process; for
 * create and run the client then becomes the container's helper (the container is the caller's
 * descendant, as engines need).
 */
async function benchWarmCli(): Promise<Row> {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-warm-"));
  const warm = await berthWarm(dir, env, { runtime: true });
  try {
    return benchCli("berth-runtime (warm pool)", warm.cmd, [], warm.env);
  } finally {
    await warm.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function benchLibrary(name = "berth (library, in-process)", bundleDir = bundle): Promise<Row> {
  const bundle = bundleDir;
  const root = mkdtempSync(join(tmpdir(), "berth-bench-root-"));
  const rt = new Runtime({ root });
  const runs: number[] = [];
  const cycles: number[] = [];
  const quiet = { stdio: ["ignore", "ignore", "inherit"] as ["ignore", "ignore", "inherit"] };
  await rt.run("warm", { bundle, ...quiet });
  for (let i = 0; i < iterations; i++) {
    let t = process.hrtime.bigint();
    await rt.run(`r${i}`, { bundle, ...quiet });
    runs.push(Number(process.hrtime.bigint() - t) / 1e6);
    t = process.hrtime.bigint();
    await rt.create(`c${i}`, { bundle, ...quiet });
    await rt.start(`c${i}`);
    await rt.delete(`c${i}`, { force: true });
    cycles.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  rmSync(root, { recursive: true, force: true });
  return { name, run: median(runs), cycle: median(cycles) };
}

const rows: Row[] = [];
// The installed launcher (one-file bundle) is what users and engines run; fall back to the tsc output.
const installed = which("berth-runtime");
if (installed) rows.push(benchCli("berth-runtime (installed)", installed, []));
else rows.push(benchCli("berth-runtime (dist)", process.execPath, [join(project, "dist/src/cli/runtime/main.js")]));
rows.push(await benchWarmCli());
rows.push(await benchLibrary());
// The same with a full resources block: what cgroup setup costs beyond creating the cgroup.
const limited = mkdtempSync(join(tmpdir(), "berth-bench-"));
writeFileSync(
  join(limited, "config.json"),
  JSON.stringify({
    ...spec,
    linux: {
      ...spec.linux,
      resources: {
        ...spec.linux.resources,
        memory: { limit: 512 * 1024 * 1024, reservation: 256 * 1024 * 1024, swap: 1024 * 1024 * 1024, swappiness: 10 },
        cpu: { shares: 512, quota: 50000, period: 100000, cpus: "0", mems: "0" },
        pids: { limit: 100 },
        blockIO: {},
      },
    },
  }),
);
rows.push(await benchLibrary("berth (library, full resources)", limited));
rmSync(limited, { recursive: true, force: true });
for (const peer of ["runc", "crun"]) {
  const path = which(peer);
  if (!path) {
    console.log(`(${peer} not installed: apt-get install ${peer})`);
    continue;
  }
  try {
    rows.push(benchCli(peer, path, []));
  } catch (err) {
    // crun 1.8 refuses the hybrid cgroup layout (v1 controllers plus a v2 mount) outright.
    console.log(`(${peer} cannot run here: ${String(err).split("\n")[0]!.split(": ").pop()})`);
  }
}
const unshare = which("unshare")
  ? median(Array.from({ length: 10 }, () => time(() => must("unshare", ["--fork", "--pid", "--mount", "--uts", "--ipc", "--mount-proc", "true"]))))
  : NaN;
const node = median(Array.from({ length: 10 }, () => time(() => must(process.execPath, ["-e", "0"]))));
rmSync(bundle, { recursive: true, force: true });

const runc = rows.find((r) => r.name === "runc");
console.log(`bench/runtime: busybox bundle running /bin/true, median of ${iterations}, NODE_EXTRA_CA_CERTS unset`);
console.log(`floors: node -e 0 ${node.toFixed(1)} ms (under any Node CLI); unshare --fork --pid --mount --uts --ipc --mount-proc true ${unshare.toFixed(1)} ms`);
console.log("runtime                        run (ms)  vs runc   create+start+delete (ms)  vs runc");
for (const r of rows) {
  const ratio = (a: number, b?: number) => (b ? `${(a / b).toFixed(2)}x` : "-");
  console.log(
    `${r.name.padEnd(30)} ${r.run.toFixed(1).padStart(8)}  ${ratio(r.run, runc?.run).padStart(7)}   ${r.cycle.toFixed(1).padStart(24)}  ${ratio(r.cycle, runc?.cycle).padStart(7)}`,
  );
}
console.log("each command of the cycle (ms)      create    start   delete");
for (const r of rows.filter((x) => x.steps))
  console.log(`${r.name.padEnd(34)} ${r.steps!.create.toFixed(1).padStart(7)}  ${r.steps!.start.toFixed(1).padStart(7)}  ${r.steps!.delete.toFixed(1).padStart(7)}`);
const full = rows.find((r) => r.name === "berth (library, full resources)")!;
const plain = rows.find((r) => r.name === "berth (library, in-process)")!;
console.log(`cgroup resources block: +${(full.run - plain.run).toFixed(2)} ms per run on this host's cgroups (target ≤ 2 ms on v1, ≤ 1 ms on v2)`);
const crun = rows.find((r) => r.name.startsWith("crun"));
const lib = rows.find((r) => r.name.startsWith("berth (library"))!;
if (crun) console.log(`in-process library run vs crun run: ${(lib.run / crun.run).toFixed(2)}x (target ≤ 1.5x)`);
