/**
 * kill -9 at any moment: for each command that changes the store (run -d, rm -f, commit, volume rm,
 * network create and rm, build, load, pull), trials that kill berth at a random point of its work — in a
 * quarter of them its container's monitor and helper too — and then check what a user would:
 * `ps -a` and `images` work, the names are free again once the containers are removed, `system
 * repair` cleans up, and nothing stays behind: no container directories or names, snapshots,
 * temporary files, mounts, cgroups, addresses, interfaces or processes.
 *
 * BERTH_CRASH_TRIALS sets the number of trials (200 in npm test; more from a stress run).
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { spawnSync } from "node:child_process";
import { rootSkip, tempDir, which } from "./helpers.js";
import { registrySkip, startRegistry, type TestRegistry } from "./registry.js";
import { berth, berthCommand, berthEnv, importBusybox, ok, removeContainersAndNetworking, type BerthEnv } from "./image-helpers.js";

const TRIALS = Number(process.env.BERTH_CRASH_TRIALS ?? 200);

interface Command {
  name: string;
  setup?: () => void;
  args: string[];
}

/** cgroups under berth's parent in every hierarchy */
function berthCgroups(): Set<string> {
  const out = new Set<string>();
  for (const h of fs.readdirSync("/sys/fs/cgroup")) {
    const dir = fs.existsSync(join("/sys/fs/cgroup", h, "cgroup.procs")) ? join("/sys/fs/cgroup", "berth") : join("/sys/fs/cgroup", h, "berth");
    try {
      for (const n of fs.readdirSync(dir, { withFileTypes: true })) if (n.isDirectory()) out.add(join(dir, n.name));
    } catch {
      /* no berth parent there */
    }
  }
  return out;
}

function links(): Set<string> {
  return new Set(fs.readdirSync("/sys/class/net"));
}

/** Processes that belong to the store: monitors (their arguments name it) and containers (their root is in it). */
function storeProcesses(root: string): string[] {
  const out: string[] = [];
  for (const p of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(p) || Number(p) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8").replace(/\0/g, " ");
      const state = /^State:\s+(\S)/m.exec(fs.readFileSync(`/proc/${p}/status`, "utf8"))?.[1];
      if (state === "Z") continue;
      if (cmd.includes(root) || fs.readlinkSync(`/proc/${p}/root`).startsWith(root)) out.push(`${p} ${cmd.slice(0, 120)}`);
    } catch {
      /* gone */
    }
  }
  return out;
}

describe("kill -9 at any moment, then recovery", { skip: rootSkip }, () => {
  let env: BerthEnv;
  let runtimeRoot: string;
  let ctx: string;
  let baseCgroups: Set<string>;
  let baseLinks: Set<string>;
  const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });

  let reg: TestRegistry | undefined;
  let bigTar = "";
  let bigRef = "";
  before(async () => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
    // an image of 8 MB that does not compress, saved (for load) and pushed (for pull)
    ok(b(["run", "--name", "maker", "--network", "none", "busybox", "dd", "if=/dev/urandom", "of=/big", "bs=1M", "count=8"]));
    ok(b(["commit", "maker", "crash/big:1"]));
    ok(b(["rm", "maker"]));
    bigTar = join(tempDir("berth-crash-img-"), "big.tar");
    ok(b(["save", "-o", bigTar, "crash/big:1"]));
    if (!registrySkip) {
      reg = await startRegistry();
      bigRef = `${reg.host}/crash/big:1`;
      ok(b(["tag", "crash/big:1", bigRef]));
      ok(b(["push", bigRef]));
      ok(b(["rmi", bigRef]));
    }
    ok(b(["rmi", "crash/big:1"]));
    ctx = tempDir("berth-crash-ctx-");
    fs.writeFileSync(join(ctx, "Dockerfile"), "FROM busybox\nCOPY a /a\nRUN echo one > /one\nRUN cat /a /one > /both\nCMD [\"cat\", \"/both\"]\n");
    fs.writeFileSync(join(ctx, "a"), "a\n".repeat(1000));
    // the default network's bridge and nft table are made once, so they are part of the baseline
    ok(b(["run", "--rm", "busybox", "true"]));
    baseCgroups = berthCgroups();
    baseLinks = links();
  });
  after(async () => {
    await removeContainersAndNetworking(env, runtimeRoot);
    await reg?.stop();
  });

  const running = () => ok(b(["run", "-d", "--name", "k", "busybox", "sleep", "60"]));
  const commands: Command[] = [
    { name: "run -d", args: ["run", "-d", "--name", "k", "busybox", "sleep", "60"] },
    { name: "run -d --network none", args: ["run", "-d", "--name", "k", "--network", "none", "busybox", "sleep", "60"] },
    { name: "rm -f", setup: running, args: ["rm", "-f", "k"] },
    { name: "commit", setup: running, args: ["commit", "k", "crash:commit"] },
    {
      name: "volume rm",
      setup: () => {
        ok(b(["volume", "create", "vol"]));
        ok(b(["run", "--rm", "--network", "none", "-v", "vol:/data", "busybox", "sh", "-c", "dd if=/dev/zero of=/data/f bs=1M count=8 2>/dev/null; mkdir -p /data/d/e; touch /data/d/e/f"]));
      },
      args: ["volume", "rm", "vol"],
    },
    { name: "network create", args: ["network", "create", "crashnet"] },
    { name: "network rm", setup: () => ok(b(["network", "create", "crashnet"])), args: ["network", "rm", "crashnet"] },
    { name: "build", args: ["build", "-q", "--no-cache", "--network", "none", "-t", "crash:build", "CTX"] },
    { name: "load", args: ["load", "-i", "BIGTAR"] },
    ...(registrySkip ? [] : [{ name: "pull", args: ["pull", "BIGREF"] }]),
  ];
  const argsOf = (c: Command) => c.args.map((a) => (a === "CTX" ? ctx : a === "BIGTAR" ? bigTar : a === "BIGREF" ? bigRef : a));

  /** Everything the trials may have made, removed the way a user would. */
  function removeAll(): void {
    const ids = b(["ps", "-aq"]).stdout.trim().split("\n").filter(Boolean);
    if (ids.length) ok(b(["rm", "-f", ...ids]), "rm -f");
    b(["volume", "rm", "-f", "vol"]);
    b(["network", "rm", "crashnet"]);
    b(["rmi", "crash:commit", "crash:build", "crash/big:1", ...(bigRef ? [bigRef] : [])]);
  }
  const cleanUp = (): string => {
    removeAll();
    return ok(b(["system", "repair"]), "system repair").stdout;
  };

  /** What must not be left once every container, volume and network the trial made is gone. */
  async function leftovers(): Promise<string[]> {
    const out: string[] = [];
    // a removed container's monitor ends by itself, its exit command a moment after the removal
    for (let i = 0; i < 100 && storeProcesses(env.root).length; i++) await sleep(30);
    const ls = (d: string) => (fs.existsSync(d) ? fs.readdirSync(d) : []);
    for (const n of ls(join(env.root, "containers"))) if (n !== "names") out.push(`containers/${n}`);
    for (const n of ls(join(env.root, "containers/names"))) out.push(`containers/names/${n}`);
    for (const n of ls(join(env.root, "snapshots/overlay/active"))) out.push(`snapshot ${n}`);
    for (const n of ls(join(env.root, "tmp"))) out.push(`tmp/${n}`);
    for (const n of ls(join(env.root, "content/ingest"))) out.push(`ingest ${n}`);
    for (const n of ls(join(env.root, "volumes"))) out.push(`volumes/${n}`);
    for (const n of ls(env.root)) if (/\.tmp-\d+$/.test(n)) out.push(n);
    const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8");
    for (const l of mounts.split("\n")) if (l.includes(env.root) || l.includes(runtimeRoot)) out.push(`mount ${l.split(" ")[4]}`);
    for (const c of berthCgroups()) if (!baseCgroups.has(c)) out.push(`cgroup ${c}`);
    for (const l of links()) if (!baseLinks.has(l)) out.push(`interface ${l}`);
    const net = join(env.root, "network/networks.json");
    if (fs.existsSync(net)) {
      const doc = JSON.parse(fs.readFileSync(net, "utf8"));
      for (const e of doc.endpoints) out.push(`address ${e.IPAddress} of ${e.Container.slice(0, 12)}`);
      for (const p of doc.ports) out.push(`port ${p.HostPort} of ${p.Container.slice(0, 12)}`);
    }
    for (const p of storeProcesses(env.root)) out.push(`process ${p}`);
    return out;
  }

  /** Run berth, kill it (and, with all, the store's monitors and containers' helpers) after delayMs. */
  async function killed(args: string[], delayMs: number, all: boolean): Promise<void> {
    const child = spawn(process.execPath, [...berthCommand(), ...args], {
      env: { ...process.env, BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig, BERTH_RUNTIME_ROOT: runtimeRoot, NODE_EXTRA_CA_CERTS: "" },
      stdio: "ignore",
    });
    const exited = new Promise((r) => child.once("exit", r));
    await Promise.race([sleep(delayMs), exited]);
    if (all) for (const p of storeProcesses(env.root)) if (!p.includes(" sleep 60")) process.kill(Number(p.split(" ")[0]), "SIGKILL");
    child.kill("SIGKILL");
    await exited;
  }

  test(`${TRIALS} trials: kill -9 during a command, then ps, images, the same name again, repair; nothing left`, async () => {
    // how long each command takes here, unkilled: the kill points are spread over that
    const length = new Map<string, number>();
    for (const c of commands) {
      c.setup?.();
      const args = argsOf(c);
      const t0 = Date.now();
      ok(b(args), c.name);
      length.set(c.name, Math.max(Date.now() - t0, 20));
      cleanUp();
    }
    assert.deepEqual(await leftovers(), [], "nothing is left by the commands themselves");
    const repaired = new Map<string, number>();
    for (let i = 0; i < TRIALS; i++) {
      const c = commands[i % commands.length]!;
      c.setup?.();
      const delay = Math.random() * length.get(c.name)! * 1.2;
      const all = Math.random() < 0.25;
      await killed(argsOf(c), delay, all);
      const what = `trial ${i}: ${c.name} killed after ${delay.toFixed(0)} ms${all ? " (with its monitors and helpers)" : ""}`;
      assert.equal(b(["ps", "-a"]).code, 0, `${what}: ps -a works`);
      assert.equal(b(["images"]).code, 0, `${what}: images works`);
      removeAll();
      // the name is free again once its container is removed (before any repair), and a container runs under it
      const again = b(["run", "--rm", "--name", "k", "busybox", "true"]);
      assert.equal(again.code, 0, `${what}: a fresh run with the same name: ${again.stderr}`);
      // a killed pull keeps what it downloaded (repair leaves resumable downloads): the next pull
      // finishes it, and nothing of it stays
      if (c.name === "pull") {
        ok(b(["pull", bigRef]), `${what}: the next pull`);
        ok(b(["rmi", bigRef]));
      }
      const lines = ok(b(["system", "repair"]), "system repair").stdout.trim().split("\n").filter((l) => l !== "nothing to repair");
      for (const l of lines) {
        const kind = l.replace(/[0-9a-f]{6,}/g, "…").replace(/\d+/g, "N");
        repaired.set(kind, (repaired.get(kind) ?? 0) + 1);
      }
      assert.deepEqual(await leftovers(), [], `${what}: nothing is left after rm -f and system repair`);
      assert.match(ok(b(["system", "repair", "--dry-run"])).stdout, /^nothing to repair$/m, `${what}: repair finds nothing more`);
    }
    // what repair had to remove, for the test's log
    for (const [l, n] of repaired) console.log(`# repair removed (${n}x): ${l}`);
  });

  test("system repair --dry-run lists what repair then removes; system prune repairs too", async () => {
    const dead = 999_999_999; // beyond pid_max: no such process
    const id = "ab".repeat(32);
    fs.mkdirSync(join(env.root, "containers", `.removing-${id}-${dead}`, "rootfs"), { recursive: true });
    fs.writeFileSync(join(env.root, "containers/names/ghost"), "cd".repeat(32));
    fs.mkdirSync(join(env.root, "tmp"), { recursive: true });
    fs.writeFileSync(join(env.root, "tmp", `layer-${dead}-0badf00d`), "x".repeat(4096));
    fs.mkdirSync(join(env.root, "volumes", `.removing-data-${dead}`, "sub"), { recursive: true });
    const listed = ok(b(["system", "repair", "--dry-run"])).stdout;
    for (const what of [/would remove container abababababab \(an unfinished removal\)/, /would remove container name ghost \(it named no container\)/, /would remove temporary file tmp\/layer-/, /would remove volume data \(an unfinished removal\)/]) assert.match(listed, what);
    assert.ok(fs.existsSync(join(env.root, "containers/names/ghost")), "a dry run removes nothing");
    const pruned = ok(b(["system", "prune", "-f"])).stdout;
    assert.match(pruned, /^Repaired: removed container name ghost/m);
    assert.equal(ok(b(["system", "repair", "--dry-run"])).stdout, "nothing to repair\n");
    assert.deepEqual(await leftovers(), []);
  });
});

describe("a full disk", { skip: rootSkip || (!which("mkfs.ext4") ? "needs mkfs.ext4 (e2fsprogs)" : false) }, () => {
  const base = tempDir("berth-test-full-");
  const mnt = join(base, "mnt");
  let env: BerthEnv;
  let runtimeRoot: string;
  const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });

  before(() => {
    fs.mkdirSync(mnt);
    const img = join(base, "fs.img");
    assert.equal(spawnSync("truncate", ["-s", "96M", img]).status, 0);
    assert.equal(spawnSync("mkfs.ext4", ["-q", "-F", img]).status, 0);
    assert.equal(spawnSync("mount", ["-o", "loop", img, mnt]).status, 0);
    env = { root: join(mnt, "store"), configDir: join(base, "etc"), dockerConfig: join(base, "docker") };
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
  });
  after(async () => {
    await removeContainersAndNetworking(env, runtimeRoot);
    spawnSync("sh", ["-c", `grep -o ' ${base}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]);
    fs.rmSync(base, { recursive: true, force: true });
  });

  test("a container fills the store's file system: ps and events still read, run says why it fails, rm -f works, nothing is left", async () => {
    ok(b(["run", "-d", "--network", "none", "--name", "filler", "busybox", "sh", "-c", "dd if=/dev/zero of=/big bs=1M 2>/dev/null; sleep 2; exit 3"]));
    for (let i = 0; i < 100 && Number(spawnSync("df", ["--output=avail", mnt], { encoding: "utf8" }).stdout.split("\n")[1]) > 0; i++) await sleep(50);
    // what the container left, berth itself may not write either (root's reserved blocks included)
    spawnSync("dd", ["if=/dev/zero", `of=${join(mnt, "pad")}`, "bs=4k"]);
    const ps = b(["ps", "-a"]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, /filler/);
    assert.equal(b(["images"]).code, 0);
    assert.equal(b(["events", "--since", "10m", "--until", "0s"]).code, 0);
    const run = b(["run", "--rm", "--network", "none", "--name", "late", "busybox", "true"]);
    assert.notEqual(run.code, 0, run.stderr);
    assert.match(run.stderr, /^Error: no space left on device \(writing \S+\): free space on that file system/m);
    await sleep(2500);
    // its exit is recorded as it was, though the disk it filled is still full
    assert.equal(b(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "filler"]).stdout.trim(), "exited 3");
    // removal first, bookkeeping after: it works on the full disk
    const rm = b(["rm", "-f", "filler"]);
    assert.equal(rm.code, 0, rm.stderr);
    fs.rmSync(join(mnt, "pad"));
    assert.match(ok(b(["system", "repair", "--dry-run"])).stdout, /^nothing to repair$/m, "no half-written file, name or snapshot is left");
    assert.deepEqual(fs.readdirSync(join(env.root, "containers/names")), [], "no name stays reserved");
    // the name a failed run asked for is free
    ok(b(["run", "--rm", "--network", "none", "--name", "late", "busybox", "true"]));
    // the events log has whole lines only
    for (const line of fs.readFileSync(join(env.root, "events.log"), "utf8").trim().split("\n")) JSON.parse(line);
  });
});
