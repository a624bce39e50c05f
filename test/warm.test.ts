/**
 * `berth system warm` and the installed client (helper/berth-client.c): a command handed to a warm
 * process behaves as the same command started cold — its arguments, environment, working
 * directory, umask, stdin/stdout/stderr, exit status and signals are the client's — and where the
 * warm process cannot run it as the client would (another mount namespace), the client starts it
 * the ordinary way. The pool stops cleanly and leaves no process or socket.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeBundle, project, rootSkip, tempDir, waitFor } from "./helpers.js";
import { berthEnv } from "./image-helpers.js";

const noImage = existsSync(join(project, "build/default-image")) || existsSync(join(project, "build/fixtures/busybox/rootfs")) ? false : "no busybox fixture (test/setup.sh)";

test("commands run by a warm process behave as cold ones; a foreign mount namespace falls back; the pool stops clean", { skip: rootSkip || noImage, timeout: 180_000 }, async () => {
  const bin = tempDir("berth-warm-bin-");
  const installed = spawnSync("sh", [join(project, "scripts/install-launchers.sh"), process.execPath, bin], { encoding: "utf8" });
  assert.equal(installed.status, 0, installed.stderr);
  const store = berthEnv();
  const socket = join(tempDir("berth-warm-sock-"), "warm.sock");
  const base: NodeJS.ProcessEnv = { ...process.env, BERTH_ROOT: store.root, BERTH_CONFIG_DIR: store.configDir, DOCKER_CONFIG: store.dockerConfig, BERTH_WARM_SOCKET: socket };
  delete base.NODE_EXTRA_CA_CERTS;
  const berth = join(bin, "berth");
  const run = (args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string; pre?: string[] } = {}) => {
    const [cmd, argv] = opts.pre ? [opts.pre[0]!, [...opts.pre.slice(1), berth, ...args]] : [berth, args];
    const r = spawnSync(cmd, argv, { env: opts.env ?? base, input: opts.input ?? "", cwd: opts.cwd, encoding: "utf8", timeout: 60_000 });
    return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  };
  // the busybox image in this store, started cold (no pool yet: the socket is not there)
  const made = spawnSync("sh", [join(project, "scripts/make-default-image.sh")], { env: base, encoding: "utf8" });
  assert.equal(made.status, 0, made.stderr);
  assert.match(run(["version"]).stdout, /Start-up: +(snapshot|bundle)/);

  // the pool runs with another store in its environment: each command must use its client's
  const pool = spawn(berth, ["system", "warm", "--socket", socket], { env: { ...base, BERTH_ROOT: join(tempDir("berth-warm-other-"), "root"), BERTH_WARM: "0" }, stdio: ["ignore", "ignore", "pipe"] });
  let poolErr = "";
  pool.stderr!.on("data", (d) => (poolErr += d));
  const spares: string[] = [];
  const exited = new Promise<number | null>((resolve) => pool.on("exit", (code) => resolve(code)));
  try {
    await waitFor(() => existsSync(socket), "the pool's socket");
    // until a warm process is up, a client starts the command itself (after waiting 10 ms for READY)
    await waitFor(() => /Start-up: +warm process/.test(run(["version"]).stdout), "a command served by a warm process", 20_000, 200);
    assert.match(run(["doctor"]).stdout, /ok +warm processes \(berth system warm on /);

    // exit status, stdout and stderr kept apart, stdin
    const r = run(["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert.deepEqual([r.code, r.stdout, r.stderr], [3, "out\n", "err\n"]);
    // warm processes wait at nice 19; the command (and so its container) runs at the normal priority
    assert.equal(run(["run", "--rm", "busybox", "sh", "-c", "cut -d' ' -f19 /proc/self/stat"]).stdout, "0\n");
    const cat = run(["run", "-i", "--rm", "busybox", "cat"], { input: "hello through the pool\n" });
    assert.equal(cat.stdout, "hello through the pool\n", cat.stderr);

    // the working directory, the environment (the store) and the umask are the client's
    const ctx = tempDir("berth-warm-ctx-");
    mkdirSync(join(ctx, "sub"));
    writeFileSync(join(ctx, "sub", "Dockerfile"), "FROM busybox\nCOPY hello /hello\nCMD [\"cat\", \"/hello\"]\n");
    writeFileSync(join(ctx, "sub", "hello"), "built warm\n");
    const b = run(["build", "-q", "-t", "warmtest", "sub"], { cwd: ctx });
    assert.equal(b.code, 0, b.stderr);
    assert.equal(run(["run", "--rm", "warmtest"]).stdout, "built warm\n");
    assert.match(run(["images", "--format", "{{.Repository}}"]).stdout, /^warmtest$/m, "the image is in the client's store");
    const umask = spawnSync("sh", ["-c", `umask 027; "${berth}" save -o out.tar warmtest && stat -c %a out.tar`], { env: base, cwd: ctx, encoding: "utf8" });
    assert.equal(umask.stdout.trim(), "640", `a file the command makes gets the client's umask: ${umask.stderr}`);
    const usage = run(["nope"]);
    const cold = run(["nope"], { env: { ...base, BERTH_WARM: "0" } });
    assert.deepEqual([usage.code, usage.stdout, usage.stderr], [cold.code, cold.stdout, cold.stderr], "a usage error: the same status and words");

    // signals the client gets reach the command (here: docker's sig-proxy to the container)
    const sig = spawn(berth, ["run", "--rm", "busybox", "sh", "-c", 'trap "echo got TERM; exit 5" TERM; echo ready; while :; do sleep 0.1; done'], { env: base, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    sig.stdout!.on("data", (d) => (out += d));
    await waitFor(() => out.includes("ready"), "the container to start", 30_000);
    sig.kill("SIGTERM");
    const [code] = await new Promise<[number | null]>((resolve) => sig.on("exit", (c) => resolve([c])));
    assert.match(out, /got TERM/);
    assert.equal(code, 5);

    // another mount namespace: the client's paths are not the pool's, so it starts the ordinary way
    const other = run(["version"], { pre: ["unshare", "-m"] });
    assert.equal(other.code, 0, other.stderr);
    assert.match(other.stdout, /Start-up: +(snapshot|bundle)/);
    assert.equal(run(["rmi", "warmtest"]).code, 0);
  } finally {
    spares.push(...spawnSync("pgrep", ["-P", String(pool.pid)], { encoding: "utf8" }).stdout.split("\n").filter(Boolean));
    pool.kill("SIGTERM");
  }
  assert.equal(await exited, 0, poolErr);
  assert.ok(!existsSync(socket), "the pool removed its socket");
  assert.ok(spares.length >= 2, `the pool's warm processes: ${spares.join(" ")}`);
  assert.deepEqual(spares.filter((pid) => existsSync(`/proc/${pid}`)), [], "no warm process left");
  // without the pool the client starts the command itself
  assert.match(run(["version"]).stdout, /Start-up: +(snapshot|bundle)/);
});

test("berth-runtime with a warm pool: every command of the cycle runs warm; for create and run the client becomes the helper, so the container is the caller's descendant", { skip: rootSkip || noImage, timeout: 120_000 }, async () => {
  const bin = tempDir("berth-warm-rt-bin-");
  const installed = spawnSync("sh", [join(project, "scripts/install-launchers.sh"), process.execPath, bin], { encoding: "utf8" });
  assert.equal(installed.status, 0, installed.stderr);
  const socket = join(tempDir("berth-warm-rt-sock-"), "warm.sock");
  const env: NodeJS.ProcessEnv = { ...process.env, BERTH_RUNTIME_WARM_SOCKET: socket };
  delete env.NODE_EXTRA_CA_CERTS;
  const cold = { ...env, BERTH_WARM: "0" };
  const root = tempDir("berth-warm-rt-root-");
  const bundle = makeBundle(["/bin/sleep", "30"]);
  const client = join(bin, "berth-runtime");
  const rt = (args: string[], e = env) => spawnSync(client, ["--root", root, ...args], { env: e, encoding: "utf8", timeout: 30_000 });
  const pool = spawn(join(bin, "berth"), ["system", "warm", "--runtime", "--socket", socket], { env: cold, stdio: ["ignore", "ignore", "pipe"] });
  let poolErr = "";
  pool.stderr!.on("data", (d) => (poolErr += d));
  const exited = new Promise<number | null>((resolve) => pool.on("exit", (code) => resolve(code)));
  const spares = () => new Set(spawnSync("pgrep", ["-P", String(pool.pid)], { encoding: "utf8" }).stdout.split("\n").filter(Boolean));
  // a warm process waiting for a client sits in poll(2) on the pool's socket, or in accept(2) (it
  // woke with another for a connection that one took)
  const waiting = (pid: string) => {
    try {
      return /^(poll_schedule_timeout|__skb_wait_for_more_packets)/.test(readFileSync(`/proc/${pid}/wchan`, "utf8"));
    } catch {
      return false;
    }
  };
  const served = async (what: string, fn: () => void | Promise<void>) => {
    await waitFor(() => spares().size === 2 && [...spares()].every(waiting), "two warm processes waiting", 20_000);
    const before = spares();
    await fn();
    await waitFor(() => [...before].some((p) => !spares().has(p)), `${what}: run by a warm process (one of ${[...before].join(", ")} ends)`, 5000);
  };
  const status = (pid: number, key: string) => /^(\S+):\s+(.*)$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith(`${key}:`)) ?? "")?.[2];
  try {
    await waitFor(() => existsSync(socket), "the pool's socket");
    // create: run by a warm process, the init cloned by the client become helper (not by the pool's
    // processes: here it is reparented to pid 1 once the helper exits, as under runc)
    // (its stdio not pipes: the created container holds them until it exits, as under runc)
    await served("create", () => assert.equal(spawnSync(client, ["--root", root, "create", "--bundle", bundle, "w1"], { env, stdio: "ignore", timeout: 30_000 }).status, 0));
    const pid = JSON.parse(rt(["state", "w1"], cold).stdout).pid as number;
    assert.equal(status(pid, "PPid"), "1");
    await served("start", () => assert.equal(rt(["start", "w1"]).status, 0));
    let state: { status: string; pid: number } | undefined;
    await served("state", () => void (state = JSON.parse(rt(["state", "w1"]).stdout)));
    assert.deepEqual([state!.status, state!.pid], ["running", pid]);
    // the same answers as a cold runtime, error and status included
    const missing = rt(["state", "nope"]);
    const coldMissing = rt(["state", "nope"], cold);
    assert.deepEqual([missing.status, missing.stdout, missing.stderr], [coldMissing.status, coldMissing.stdout, coldMissing.stderr]);
    await served("kill", () => assert.equal(rt(["kill", "w1", "KILL"]).status, 0));
    await waitFor(() => JSON.parse(rt(["state", "w1"], cold).stdout).status === "stopped", "the container to stop");
    await served("delete", () => assert.equal(rt(["delete", "w1"]).status, 0));
    assert.equal(rt(["state", "w1"]).status, 1, "deleted");
    // run: the container's exit status, its output on the client's own stdout
    await served("run", () => {
      const r = rt(["run", "--bundle", makeBundle(["/bin/sh", "-c", "echo out; exit 7"]), "w2"]);
      assert.deepEqual([r.status, r.stdout], [7, "out\n"], r.stderr);
    });
    // run in the background: the container's init is the client's child (the client is now the
    // helper), and a signal to the client reaches the container as runc's does
    await served("run (a long one)", async () => {
      const trapping = makeBundle(["/bin/sh", "-c", "trap 'exit 5' TERM; sleep 30 & wait"]);
      const c = spawn(client, ["--root", root, "run", "--bundle", trapping, "w3"], { env, stdio: "ignore" });
      const done = new Promise<number | null>((resolve) => c.on("exit", (code) => resolve(code)));
      await waitFor(() => rt(["state", "w3"], cold).stdout.includes('"running"'), "w3 running");
      const init = JSON.parse(rt(["state", "w3"], cold).stdout).pid as number;
      assert.equal(status(init, "PPid"), String(c.pid), "the container's init is the client's child");
      assert.match(readFileSync(`/proc/${c.pid}/cmdline`, "utf8"), /^berth-helper\0/);
      c.kill("SIGTERM");
      assert.equal(await done, 5, "the container's shell got the SIGTERM the client forwarded");
      assert.equal(rt(["state", "w3"], cold).status, 1, "run deleted its container");
    });
    // --preserve-fds: the caller's fd 3 is the container's
    await served("run --preserve-fds", async () => {
      const c = spawn(client, ["--root", root, "run", "--preserve-fds", "1", "--bundle", makeBundle(["/bin/sh", "-c", "echo via3 >&3"]), "w4"], { env, stdio: ["ignore", "ignore", "pipe", "pipe"] });
      let via3 = "";
      let err = "";
      c.stdio[3]!.on("data", (d) => (via3 += d));
      c.stderr!.on("data", (d) => (err += d));
      const code = await new Promise<number | null>((resolve) => c.on("close", (n) => resolve(n)));
      assert.deepEqual([code, via3], [0, "via3\n"], err);
    });
    // a create that fails: the cold runtime's message and status, and nothing left behind
    const broken = makeBundle(["/bin/true"], (spec) => {
      (spec.root as { path: string }).path = "/no-such-rootfs";
    });
    let warmFail: ReturnType<typeof rt> | undefined;
    await served("a failing create", () => void (warmFail = rt(["create", "--bundle", broken, "w5"])));
    const coldFail = rt(["create", "--bundle", broken, "w5"], cold);
    assert.notEqual(coldFail.status, 0);
    assert.deepEqual([warmFail!.status, warmFail!.stderr], [coldFail.status, coldFail.stderr]);
    assert.equal(rt(["state", "w5"], cold).status, 1, "no container left");
  } finally {
    pool.kill("SIGTERM");
  }
  assert.equal(await exited, 0, poolErr);
  assert.ok(!existsSync(socket));
});
