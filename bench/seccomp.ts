/**
 * bench/seccomp: the cost of a getpid() under berth's default seccomp profile (Docker's verdicts)
 * beside the same profile under runc, and without a filter, in one run. The probe times a loop of
 * raw getpid syscalls inside the container; medians of 5 runs, ns per call.
 *
 * Usage: node dist/bench/seccomp.js
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { defaultSeccomp, dockerDefaultCapabilities } from "../src/security/index.js";

const project = join(dirname(fileURLToPath(import.meta.url)), "../..");
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;
const which = (c: string) => spawnSync("sh", ["-c", `command -v ${c}`], { encoding: "utf8" }).stdout.trim();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function bundle(withProfile: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), "berth-bench-"));
  const spec = JSON.parse(readFileSync(join(project, "build/fixtures/busybox/config.json"), "utf8"));
  spec.root.path = join(project, "build/fixtures/busybox/rootfs");
  spec.process.args = ["/probe", "getpid", "2000000"];
  const caps = [...dockerDefaultCapabilities];
  spec.process.capabilities = { bounding: caps, effective: caps, permitted: caps };
  if (withProfile) spec.linux.seccomp = defaultSeccomp({ capabilities: caps });
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
  return dir;
}

function measure(runtime: string[], dir: string): number {
  const root = mkdtempSync(join(tmpdir(), "berth-bench-root-"));
  const xs: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = spawnSync(runtime[0]!, [...runtime.slice(1), "--root", root, "run", "--bundle", dir, `g${i}`], { encoding: "utf8", env });
    if (r.status !== 0) throw new Error(`${runtime.join(" ")}: ${r.stderr}`);
    xs.push(Number(r.stdout.trim()));
  }
  rmSync(root, { recursive: true, force: true });
  return median(xs);
}

const filtered = bundle(true);
const plain = bundle(false);
const berth = which("berth-runtime") ? ["berth-runtime"] : [process.execPath, join(project, "dist/src/cli/runtime/main.js")];
const rows: [string, number][] = [
  ["no filter (berth-runtime)", measure(berth, plain)],
  ["default profile, berth-runtime", measure(berth, filtered)],
];
const runc = which("runc");
if (runc) rows.push(["default profile, runc", measure([runc], filtered)]);
rmSync(filtered, { recursive: true, force: true });
rmSync(plain, { recursive: true, force: true });

const ref = rows.find((r) => r[0] === "default profile, runc")?.[1];
console.log("bench/seccomp: getpid() inside the container, ns per call (median of 5 runs of 2,000,000 calls)");
for (const [name, ns] of rows) console.log(`${name.padEnd(34)} ${ns.toFixed(1).padStart(8)} ns${ref ? `  ${(ns / ref).toFixed(2)}x runc` : ""}`);
