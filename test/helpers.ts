/** Shared test helpers: bundles around the busybox fixture, running berth-runtime, leak checks. */
import { spawn, spawnSync } from "node:child_process";
import { get } from "node:http";
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { removeEmptyParent } from "../src/cgroups/index.js";
import { fileURLToPath } from "node:url";

export const project = join(dirname(fileURLToPath(import.meta.url)), "../..");
export const fixtureRootfs = join(project, "build/fixtures/busybox/rootfs");
export const fixtureConfig = join(project, "build/fixtures/busybox/config.json");
export const cli = join(project, "dist/src/cli/runtime/main.js");
export const recvtty = join(project, "build/recvtty");

export const isRoot = process.getuid?.() === 0;
export const rootSkip = isRoot ? false : "needs root (namespaces, mounts, cgroups)";

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnySpec = any;

const tempDirs: string[] = [];

// berth keeps its parent cgroup between containers (as docker keeps /docker): a test file leaves
// none behind once its containers are gone
if (process.getuid?.() === 0) process.once("exit", () => removeEmptyParent());

/**
 * A temp dir, removed when this test file's process exits (with `rm --one-file-system`: a mount a
 * failed test left inside is never deleted through). Tests that stored images left ~650 MB each.
 */
export function tempDir(prefix = "berth-test-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  if (!tempDirs.length) process.once("exit", () => void spawnSync("rm", ["-rf", "--one-file-system", "--", ...tempDirs]));
  tempDirs.push(dir);
  return dir;
}

/** A bundle whose rootfs is the busybox fixture; `args` is the process; `edit` changes the spec. */
export function makeBundle(args: string[], edit?: (spec: AnySpec) => void): string {
  const dir = tempDir("berth-bundle-");
  const spec = JSON.parse(readFileSync(fixtureConfig, "utf8"));
  spec.root.path = fixtureRootfs;
  spec.process.args = args;
  edit?.(spec);
  writeFileSync(join(dir, "config.json"), JSON.stringify(spec, null, 2));
  return dir;
}

export function newRoot(): string {
  return tempDir("berth-root-");
}

let counter = 0;
export function uniqueId(prefix = "t"): string {
  return `${prefix}-${process.pid}-${++counter}`;
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs berth-runtime synchronously with --root. Output goes through files, not pipes: a created
 * container inherits the runtime's stdio (as with runc), and a pipe would stay open after it exits.
 * NODE_EXTRA_CA_CERTS is dropped (it slows node start).
 */
export function rt(root: string, args: string[], opts: { input?: string; cwd?: string; timeout?: number } = {}): Result {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  const dir = tempDir("berth-out-");
  const out = openSync(join(dir, "out"), "w+");
  const err = openSync(join(dir, "err"), "w+");
  try {
    const r = spawnSync(process.execPath, [cli, "--root", root, ...args], {
      stdio: [opts.input === undefined ? "ignore" : "pipe", out, err],
      input: opts.input,
      cwd: opts.cwd,
      env,
      timeout: opts.timeout ?? 30_000,
    });
    return { code: r.status ?? 128, stdout: readFileSync(join(dir, "out"), "utf8"), stderr: readFileSync(join(dir, "err"), "utf8") };
  } finally {
    closeSync(out);
    closeSync(err);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs a container in the foreground and returns its output (the bundle is removed afterwards). */
export function runIn(args: string[], edit?: (spec: AnySpec) => void, extra: string[] = []): Result {
  const root = newRoot();
  const bundle = makeBundle(args, edit);
  try {
    return rt(root, ["run", ...extra, "--bundle", bundle, uniqueId()]);
  } finally {
    rmSync(bundle, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  }
}

export function sh(cmd: string): string {
  return spawnSync("sh", ["-c", cmd], { encoding: "utf8" }).stdout;
}

/** Everything a container could leave behind: mounts of test dirs, berth cgroups, live processes. */
export function leaks(): string[] {
  const out: string[] = [];
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .filter((l) => /berth-(bundle|root|test|img|snap)-|\/fixtures\/busybox/.test(l));
  if (mounts.length) out.push(`mounts: ${mounts.join("; ")}`);
  for (const h of readdirSync("/sys/fs/cgroup")) {
    const dir = join("/sys/fs/cgroup", h, "berth");
    if (existsSync(dir)) {
      const kids = readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory() && e.name.startsWith("t-"));
      if (kids.length) out.push(`cgroups: ${dir}/{${kids.map((k) => k.name).join(",")}}`);
    }
  }
  const procs = sh("ps -eo pid,args").split("\n").filter((l) => l.includes("/probe ") && !l.includes("ps -eo"));
  if (procs.length) out.push(`processes: ${procs.join("; ")}`);
  return out;
}

/** Starts a process and collects its output; for console-socket receivers and the like. */
export function background(cmd: string, args: string[]) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  const done = new Promise<number>((res) => child.on("exit", (c) => res(c ?? 128)));
  return {
    child,
    done,
    get stdout() {
      return stdout;
    },
    get stderr() {
      return stderr;
    },
    async waitFor(text: string, ms = 5000) {
      const start = Date.now();
      while (!stdout.includes(text)) {
        if (Date.now() - start > ms) throw new Error(`timed out waiting for ${JSON.stringify(text)}; got ${JSON.stringify(stdout)}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    },
  };
}

export function nsOf(pid: number | "self"): Record<string, string> {
  const out: Record<string, string> = {};
  for (const n of ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"]) {
    out[n] = sh(`readlink /proc/${pid}/ns/${n}`).trim();
  }
  return out;
}

/** Whether users other than root can reach `path` (every directory on the way searchable by others):
 * rootless and user-namespace tests run as other uids and need the project. */
export function othersCanReach(path: string): string | false {
  let dir = path;
  for (;;) {
    try {
      if ((statSync(dir).mode & 0o001) === 0) return dir;
    } catch {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) return false;
    dir = parent;
  }
}

/**
 * Waits, by the wall clock, until `cond` holds; throws naming `what` after `timeoutMs`. Loops that
 * count iterations break under a slow machine (the cgroup v2 guest is emulated), deadlines do not.
 */
export async function waitFor(cond: () => boolean, what: string, timeoutMs = 30_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** waitFor for synchronous tests: blocks the thread between checks. */
export function waitForSync(cond: () => boolean, what: string, timeoutMs = 30_000, intervalMs = 20): void {
  const deadline = Date.now() + timeoutMs;
  const cell = new Int32Array(new SharedArrayBuffer(4));
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    Atomics.wait(cell, 0, 0, intervalMs);
  }
}

/** The path of a command on PATH, or "". */
export const which = (c: string): string => spawnSync("sh", ["-c", `command -v ${c}`], { encoding: "utf8" }).stdout.trim();

/** Why tests that run berth as a user they create must skip here, or false. */
export function rootlessSkip(): string | false {
  const blocked = othersCanReach(project);
  return (
    rootSkip ||
    (["useradd", "userdel", "runuser", "newuidmap", "newgidmap"].find((c) => !which(c)) ? "needs useradd, runuser and uidmap's newuidmap" : false) ||
    (blocked ? `other users cannot reach the project (${blocked} is not searchable by others)` : false)
  );
}

/** The body of http://127.0.0.1:PORT/ (the whole body, once the server closes the response). */
export function httpGet(port: number, timeout = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    get({ host: "127.0.0.1", port, path: "/", timeout }, (res) => {
      let body = "";
      res.on("data", (d) => (body += d));
      res.on("end", () => resolve(body));
    }).on("error", reject);
  });
}
