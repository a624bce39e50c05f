/**
 * Real engines drive berth-runtime: containerd (ctr), dockerd and podman from Debian, each with a
 * private daemon started and stopped here, on an image of the busybox fixture made offline.
 * docker and podman send their default seccomp profiles, which berth compiles and loads.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync, rmSync, rmdirSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fixtureRootfs, rootSkip, tempDir } from "./helpers.js";
import { ociArchive, rootfsTar } from "./fixtures/image.js";

const which = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).stdout.trim();
const runtimeBin = which("berth-runtime");
const skipFor = (...bins: string[]) => rootSkip || (!runtimeBin ? "berth-runtime is not on PATH (run ./install.sh)" : bins.find((b) => !which(b)) ? `${bins.find((b) => !which(b))} is not installed (npm test installs it as root)` : false);

function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}) {
  const r = spawnSync(cmd, args, { encoding: "utf8", env: opts.env ?? process.env, timeout: opts.timeout ?? 60_000, stdio: ["ignore", "pipe", "pipe"] });
  return { code: r.status ?? 128, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

/** Cgroup parents the engines create (docker/, default/, libpod_parent/): removed after if we made them. */
const engineCgroupParents = ["docker", "default", "libpod_parent"];
function cgroupParentsPresent(): Set<string> {
  const out = new Set<string>();
  for (const h of readdirSync("/sys/fs/cgroup")) for (const p of engineCgroupParents) if (existsSync(join("/sys/fs/cgroup", h, p))) out.add(join("/sys/fs/cgroup", h, p));
  return out;
}
function removeEmptyCgroups(dir: string): void {
  if (!existsSync(dir)) return;
  for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeEmptyCgroups(join(dir, e.name));
  try {
    rmdirSync(dir);
  } catch {
    // still in use: leave it
  }
}

async function waitForSocket(path: string, daemon: ChildProcess, log: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (existsSync(path)) return;
    if (daemon.exitCode !== null) throw new Error(`daemon exited: ${readFileSync(log, "utf8").slice(-2000)}`);
    await sleep(100);
  }
  throw new Error(`daemon socket ${path} did not appear: ${readFileSync(log, "utf8").slice(-2000)}`);
}

async function stopDaemon(daemon: ChildProcess | undefined): Promise<void> {
  if (!daemon || daemon.exitCode !== null) return;
  const exited = new Promise((r) => daemon.on("exit", r));
  daemon.kill("SIGTERM");
  await Promise.race([exited, sleep(15_000)]);
  if (daemon.exitCode === null) daemon.kill("SIGKILL");
}

const images = tempDir("berth-test-images-");
// State directories the engines make on their own (shim sockets, locks): removed if they were not here before.
const engineDirs = ["/run/containerd", "/run/docker", "/run/containers", "/run/libpod", "/var/lib/cni", "/var/lib/containers", "/run/crun"];
const engineDirsBefore = new Set(engineDirs.filter((d) => existsSync(d)));
after(() => {
  rmSync(images, { recursive: true, force: true });
  for (const d of engineDirs) if (!engineDirsBefore.has(d)) rmSync(d, { recursive: true, force: true });
});

describe("containerd 1.6 (ctr) runs containers with berth-runtime", { skip: skipFor("containerd", "ctr", "containerd-shim-runc-v2", "script") }, () => {
  const dir = tempDir("berth-test-containerd-");
  const sock = join(dir, "containerd.sock");
  let daemon: ChildProcess | undefined;
  let cgroupsBefore: Set<string>;
  const ctr = (...args: string[]) => run("ctr", ["--address", sock, ...args]);
  const image = "docker.io/library/berth-busybox:latest";

  before(async () => {
    cgroupsBefore = cgroupParentsPresent();
    writeFileSync(join(dir, "config.toml"), `version = 2\nroot = "${dir}/root"\nstate = "${dir}/state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n`);
    const log = join(dir, "containerd.log");
    daemon = spawn("sh", ["-c", `exec containerd --config ${dir}/config.toml > ${log} 2>&1`], { stdio: "ignore" });
    await waitForSocket(sock, daemon, log);
    const r = ctr("images", "import", ociArchive(fixtureRootfs, images, image));
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    ctr("task", "kill", "-s", "SIGKILL", "bg");
    ctr("task", "delete", "-f", "bg");
    ctr("container", "delete", "bg");
    ctr("images", "rm", image);
    await stopDaemon(daemon);
    for (const d of cgroupParentsPresent()) if (!cgroupsBefore.has(d)) removeEmptyCgroups(d);
    rmSync(dir, { recursive: true, force: true });
  });

  test("ctr run --runc-binary berth-runtime", () => {
    const r = ctr("run", "--rm", "--runc-binary", runtimeBin, image, "fg", "/probe", "pid");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "1 0\n");
  });

  test("ctr task exec, ps, kill and delete on a detached container", async () => {
    let r = ctr("run", "-d", "--runc-binary", runtimeBin, image, "bg", "/probe", "sleep", "60");
    assert.equal(r.code, 0, r.stderr);
    r = ctr("task", "exec", "--exec-id", "e1", "bg", "/bin/sh", "-c", "/probe echo from exec; exit 5");
    assert.equal(r.code, 5);
    assert.equal(r.stdout, "from exec\n");
    assert.match(ctr("task", "ps", "bg").stdout, /^\d+\s/m);
    assert.equal(ctr("task", "kill", "-s", "SIGKILL", "bg").code, 0);
    for (let i = 0; i < 100 && !/STOPPED/.test(ctr("task", "ls").stdout); i++) await sleep(50);
    assert.match(ctr("task", "ls").stdout, /bg\s+\d+\s+STOPPED/);
    assert.equal(ctr("task", "delete", "bg").code, 0);
    assert.equal(ctr("container", "delete", "bg").code, 0);
  });

  test("ctr run -t gives the container a terminal", () => {
    // script(1) provides the pty that ctr -t insists on.
    const r = run("script", ["-qec", `ctr --address ${sock} run -t --rm --runc-binary ${runtimeBin} ${image} tty /probe isatty`, "/dev/null"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /1 1 1/);
  });
});

describe("dockerd 20.10 runs containers with --runtime berth", { skip: skipFor("dockerd", "containerd") }, () => {
  const dir = tempDir("berth-test-docker-");
  const sock = join(dir, "docker.sock");
  let daemon: ChildProcess | undefined;
  let cgroupsBefore: Set<string>;
  const dockerCli = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : which("docker");
  const docker = (...args: string[]) => run(dockerCli, ["-H", `unix://${sock}`, ...args]);
  const common = ["--runtime", "berth", "--network", "none"];

  before(async () => {
    cgroupsBefore = cgroupParentsPresent();
    const log = join(dir, "dockerd.log");
    daemon = spawn(
      "sh",
      ["-c", `exec dockerd --data-root ${dir}/data --exec-root ${dir}/exec -H unix://${sock} --pidfile ${dir}/docker.pid --iptables=false --ip-masq=false --bridge=none --add-runtime berth=${runtimeBin} > ${log} 2>&1`],
      { stdio: "ignore" },
    );
    await waitForSocket(sock, daemon, log);
    for (let i = 0; i < 100 && docker("info").code !== 0; i++) await sleep(100);
    const r = docker("import", rootfsTar(fixtureRootfs, images), "berth-busybox");
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    docker("rm", "-f", "d1");
    await stopDaemon(daemon);
    for (const d of cgroupParentsPresent()) if (!cgroupsBefore.has(d)) removeEmptyCgroups(d);
    spawnSync("sh", ["-c", `grep -o ' ${dir}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("docker run --runtime berth", () => {
    const r = docker("run", "--rm", ...common, "berth-busybox", "/probe", "id");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^uid=0 gid=0 /);
    // docker's default seccomp profile is in force: mount and unshare are refused inside.
    const status = docker("run", "--rm", ...common, "berth-busybox", "/probe", "status");
    assert.match(status.stdout, /Seccomp:\s+2/);
    const denied = docker("run", "--rm", ...common, "berth-busybox", "sh", "-c", "unshare -U true 2>/dev/null; echo $?");
    assert.equal(denied.stdout, "1\n");
    const code = docker("run", "--rm", ...common, "berth-busybox", "/probe", "exit", "23");
    assert.equal(code.code, 23, "docker reports the container's exit status");
  });

  test("docker exec, top, stop and rm", () => {
    let r = docker("run", "-d", "--name", "d1", ...common, "berth-busybox", "/probe", "sleep", "60");
    assert.equal(r.code, 0, r.stderr);
    r = docker("exec", "d1", "/probe", "pid");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\d+ 0\n$/);
    assert.equal(docker("exec", "d1", "sh", "-c", "exit 9").code, 9);
    assert.match(docker("top", "d1").stdout, /\/probe sleep 60/);
    assert.equal(docker("stop", "-t", "1", "d1").code, 0);
    assert.match(docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "d1").stdout, /exited 137/);
    assert.equal(docker("rm", "d1").code, 0);
  });
});

describe("podman 4.3 runs containers with --runtime berth-runtime", { skip: skipFor("podman", "conmon") }, () => {
  const dir = tempDir("berth-test-podman-");
  let cgroupsBefore: Set<string>;
  const env = { ...process.env, CONTAINERS_CONF: join(dir, "containers.conf") };
  const podman = (...args: string[]) =>
    run("podman", ["--root", `${dir}/root`, "--runroot", `${dir}/runroot`, "--tmpdir", `${dir}/tmp`, "--runtime", runtimeBin, "--cgroup-manager", "cgroupfs", "--events-backend", "file", ...args], { env });
  const common = ["--network", "none"];

  before(() => {
    cgroupsBefore = cgroupParentsPresent();
    // Root here lacks CAP_SYS_RESOURCE: podman's default ulimits must stay within the hard limits.
    writeFileSync(env.CONTAINERS_CONF, `[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n`);
    const r = podman("import", rootfsTar(fixtureRootfs, images), "berth-busybox");
    assert.equal(r.code, 0, r.stderr);
  });
  after(() => {
    podman("rm", "-f", "-a");
    podman("system", "reset", "-f");
    for (const d of cgroupParentsPresent()) if (!cgroupsBefore.has(d)) removeEmptyCgroups(d);
    spawnSync("sh", ["-c", `grep -o ' ${dir}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]);
    rmSync(dir, { recursive: true, force: true });
  });

  test("podman run", () => {
    const r = podman("run", "--rm", ...common, "berth-busybox", "/probe", "pid");
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "1 0\n");
    assert.equal(podman("run", "--rm", ...common, "berth-busybox", "/probe", "exit", "4").code, 4);
    assert.match(podman("run", "--rm", ...common, "berth-busybox", "/probe", "status").stdout, /Seccomp:\s+2/, "podman's default seccomp profile is loaded");
  });

  test("podman exec: exit codes 126 and 127 come from berth-runtime's error text", () => {
    let r = podman("run", "-d", "--name", "p1", ...common, "berth-busybox", "/probe", "sleep", "60");
    assert.equal(r.code, 0, r.stderr);
    r = podman("exec", "p1", "/probe", "pid");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^\d+ 0\n$/);
    r = podman("exec", "p1", "nope");
    assert.equal(r.code, 127);
    assert.match(r.stderr, /executable file not found/);
    r = podman("exec", "p1", "/etc/passwd");
    assert.equal(r.code, 126);
    assert.equal(podman("stop", "-t", "1", "p1").code, 0);
    assert.equal(podman("rm", "p1").code, 0);
  });
});
