/**
 * The Docker Engine API (`berth system service`) driven by the real docker CLIs — Debian's 20.10
 * and /usr/local/bin/docker (28.x) where present — on a socket and store of the test's own, and by
 * plain HTTP for what a CLI never sends (bad input). The same containers are seen through berth's
 * own CLI, and a killed service leaves its containers running for the next one to serve.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import { join } from "node:path";
import { leaks, project, rootSkip, tempDir, waitFor } from "./helpers.js";
import { berth, berthCommand, berthEnv, importBusybox, ok, removeNetworking, type BerthEnv } from "./image-helpers.js";
import { registrySkip, startRegistry } from "./registry.js";
import { WebSocket } from "ws";

/**
 * A command under a terminal (script(1)): its input written, script's own input kept open until it
 * ends (script quits, hanging up the terminal, when its input ends first). Its output and status.
 */
function underTerminal(command: string, env: NodeJS.ProcessEnv, input = ""): Promise<{ status: number | null; stdout: string }> {
  const child = spawn("script", ["-qec", command, "/dev/null"], { env, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stdin.on("error", () => {});
  if (input) child.stdin.write(input);
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  return new Promise((resolve) =>
    child.on("close", (status) => {
      clearTimeout(timer);
      child.stdin.destroy();
      resolve({ status, stdout });
    }),
  );
}

const clis = ["/usr/bin/docker", "/usr/local/bin/docker"].filter((p) => fs.existsSync(p));
const skip = rootSkip || (clis.length ? false : "needs a docker CLI (Debian's docker.io; npm test installs it as root)");

let env: BerthEnv;
let runtimeRoot: string;
let sock: string;
let service: ChildProcess | undefined;
const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });

/**
 * Starts the API server as `berth system service` runs it (plain node on its bundle; the test kills
 * that process itself) and waits for its socket. With viaCli, through `berth system service`.
 */
async function startService(viaCli = false, path = sock): Promise<ChildProcess> {
  // Docker Hub is a closed local port: nothing the tests do may leave the machine
  const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig, BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_HUB_REGISTRY: "127.0.0.1:9" };
  delete e.NODE_EXTRA_CA_CERTS;
  const args = viaCli ? [...berthCommand(), "system", "service", `unix://${path}`] : [join(project, "dist/berth-api.cjs"), "--root", env.root, `unix://${path}`];
  const child = spawn(process.execPath, args, { env: e, stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  await waitFor(() => stderr.includes("listening") || child.exitCode !== null, "the API service to listen", 20_000, 50);
  assert.equal(child.exitCode, null, `the service exited: ${stderr}`);
  return child;
}

function stopService(sig: NodeJS.Signals = "SIGTERM"): Promise<void> {
  const s = service;
  service = undefined;
  if (!s || s.exitCode !== null) return Promise.resolve();
  return new Promise((res) => {
    s.once("exit", () => res());
    s.kill(sig);
  });
}

function docker(cli: string, args: string[], opts: { input?: string; timeout?: number } = {}) {
  // the client's own config (its logins), apart from the service's
  const config = join(env.dockerConfig, "..", "docker-cli");
  const r = spawnSync(cli, args, { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: config, DOCKER_HOST: `unix://${sock}`, DOCKER_CONFIG: config }, input: opts.input ?? "", encoding: "utf8", timeout: opts.timeout ?? 60_000 });
  return { code: r.status ?? 128, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
}
const dok = (r: { code: number; stdout: string; stderr: string }, what = "docker") => {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r;
};

/** A raw request on the socket: status and body. */
function request(method: string, path: string, body?: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method, path, headers: { ...(body !== undefined ? { "Content-Type": "application/json" } : {}), ...headers } }, (res) => {
      let data = "";
      res.on("data", (d) => (data += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: data, headers: res.headers }));
    });
    req.on("error", reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

describe("the Docker API: berth system service", { skip }, () => {
  before(async () => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
    sock = join(tempDir("berth-test-api-"), "berth.sock");
    service = await startService();
  });
  after(async () => {
    const ids = b(["ps", "-aq"]).stdout.trim().split("\n").filter(Boolean);
    if (ids.length) b(["rm", "-f", ...ids]);
    await stopService();
    await removeNetworking(env, runtimeRoot);
  });

  test("the socket is 0660; _ping, version and info answer as dockerd's", async () => {
    const st = fs.statSync(sock);
    assert.equal(st.mode & 0o777, 0o660);
    const ping = await request("GET", "/_ping");
    assert.equal(ping.status, 200);
    assert.equal(ping.body, "OK");
    assert.equal(ping.headers["api-version"], "1.50");
    assert.equal(ping.headers["ostype"], "linux");
    for (const cli of clis) {
      const v = dok(docker(cli, ["version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}"]));
      assert.equal(v.stdout.trim(), "1.50 linux", cli);
      assert.match(dok(docker(cli, ["info", "--format", "{{.Images}} {{.OSType}}"])).stdout, /^1 linux$/m, cli);
    }
    const old = await request("GET", "/v1.12/version");
    assert.equal(old.status, 400);
    assert.match(JSON.parse(old.body).message, /client version 1.12 is too old/);
    assert.equal((await request("GET", "/v1.41/_ping")).status, 200, "a versioned path");
  });

  test("docker run: output, stderr apart, exit codes, --rm leaves nothing", () => {
    for (const cli of clis) {
      const r = docker(cli, ["run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 7"]);
      assert.equal(r.code, 7, `${cli}: ${r.stderr}`);
      assert.equal(r.stdout, "out\n");
      assert.match(r.stderr, /^err\n/);
      const input = docker(cli, ["run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z"], { input: "hello stdin\n" });
      assert.equal(input.stdout, "HELLO STDIN\n", `${cli}: ${input.stderr}`);
      const missing = docker(cli, ["run", "--rm", "busybox", "/nonexistent"]);
      assert.equal(missing.code, 127, `${cli}: ${missing.stderr}`);
    }
    assert.equal(b(["ps", "-aq"]).stdout, "", "--rm containers are gone");
  });

  test("docker run -d, ps, logs, exec (stdin, exit code), inspect -f, cp both ways, stats, top, stop, rm — and berth sees the same containers", () => {
    const cli = clis[0]!;
    const id = dok(docker(cli, ["run", "-d", "--name", "api-web", "-e", "FOO=bar", "--memory", "64m", "busybox", "sh", "-c", "echo started; exec sleep 1000"])).stdout.trim();
    assert.match(id, /^[0-9a-f]{64}$/);
    assert.match(dok(docker(cli, ["ps", "--format", "{{.Names}} {{.Status}}"])).stdout, /^api-web Up /m);
    assert.match(ok(b(["ps", "--format", "{{.Names}}"])).stdout, /^api-web$/m, "berth ps shows what docker run made");
    assert.equal(dok(docker(cli, ["logs", "api-web"])).stdout, "started\n");
    const e = docker(cli, ["exec", "api-web", "sh", "-c", "echo $FOO; exit 3"]);
    assert.equal(e.code, 3);
    assert.equal(e.stdout, "bar\n");
    assert.equal(dok(docker(cli, ["exec", "-i", "api-web", "cat"], { input: "piped\n" })).stdout, "piped\n");
    const pid = Number(dok(docker(cli, ["inspect", "-f", "{{.State.Pid}}", "api-web"])).stdout.trim());
    assert.match(fs.readFileSync(`/proc/${pid}/cmdline`, "utf8"), /^sleep\0/);
    assert.equal(dok(docker(cli, ["inspect", "-f", "{{.HostConfig.Memory}}", "api-web"])).stdout.trim(), String(64 * 1024 * 1024));
    const host = tempDir("berth-test-cp-");
    fs.writeFileSync(join(host, "in.txt"), "from the host\n");
    dok(docker(cli, ["cp", join(host, "in.txt"), "api-web:/tmp/"]));
    assert.equal(dok(docker(cli, ["exec", "api-web", "cat", "/tmp/in.txt"])).stdout, "from the host\n");
    dok(docker(cli, ["exec", "api-web", "sh", "-c", "mkdir -p /data && echo inside > /data/f"]));
    dok(docker(cli, ["cp", "api-web:/data", host]));
    assert.equal(fs.readFileSync(join(host, "data/f"), "utf8"), "inside\n");
    const stats = dok(docker(cli, ["stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}", "api-web"])).stdout;
    assert.match(stats, /^api-web [\d.]+[KMG]iB \/ 64MiB$/m);
    assert.match(dok(docker(cli, ["top", "api-web"])).stdout, /sleep 1000/);
    dok(docker(cli, ["stop", "-t", "1", "api-web"]));
    assert.match(ok(b(["ps", "-a", "--format", "{{.Names}} {{.Status}}"])).stdout, /^api-web Exited \(137\)/m);
    // and docker sees what berth made
    ok(b(["run", "-d", "--name", "from-berth", "busybox", "sleep", "1000"]));
    assert.match(dok(docker(cli, ["ps", "--format", "{{.Names}}"])).stdout, /^from-berth$/m);
    dok(docker(cli, ["rm", "-f", "api-web", "from-berth"]));
    assert.equal(b(["ps", "-aq"]).stdout, "");
  });

  test("docker run -it under a terminal", { skip: !fs.existsSync("/usr/bin/script") && "needs script (bsdutils)" }, async () => {
    const cli = clis[clis.length - 1]!;
    const r = await underTerminal(`${cli} run --rm -it busybox sh -c 'tty; echo done'`, { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: env.dockerConfig });
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /\/dev\/pts\/0\r?\n/, JSON.stringify(r.stdout));
    assert.match(r.stdout, /done/);
  });

  test("docker exec -it under a terminal: a terminal of the asked size, input, the exit code", { skip: !fs.existsSync("/usr/bin/script") && "needs script (bsdutils)" }, async () => {
    for (const cli of clis) {
      dok(docker(cli, ["run", "-d", "--name", "api-tty", "busybox", "sleep", "1000"]));
      try {
        const r = await underTerminal(`stty rows 31 cols 101; ${cli} exec -it api-tty sh -c 'tty; stty size; read x; echo "got $x"; exit 7'`, { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: env.dockerConfig }, "hello\n");
        assert.equal(r.status, 7, `${cli}: ${r.stdout}`);
        assert.match(r.stdout, /\/dev\/pts\/\d+\r?\n/, cli);
        // docker ≥ 23 sends the size with the exec (ConsoleSize); 20.10 only resizes once it has
        // started, so its process may start on a 0x0 terminal (as with dockerd)
        if (cli === "/usr/local/bin/docker") assert.match(r.stdout, /^31 101\r?$/m, `${cli}: the exec's terminal has the client's size`);
        assert.match(r.stdout, /^got hello\r?$/m, cli);
      } finally {
        dok(docker(cli, ["rm", "-f", "api-tty"]));
      }
    }
  });

  test("detach keys under a terminal: run -it with ctrl-p ctrl-q, exec -it with the config file's detachKeys; the container runs on", { skip: !fs.existsSync("/usr/bin/script") && "needs script (bsdutils)" }, async () => {
    for (const cli of clis) {
      const home = tempDir("berth-test-detach-");
      fs.writeFileSync(join(home, "config.json"), JSON.stringify({ detachKeys: "ctrl-a,q" }));
      try {
        const e = { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: env.dockerConfig };
        // the keys typed once the client is attached (its terminal raw: cooked, ctrl-q is flow control)
        const typeWhenReady = async (command: string, ready: () => boolean, keys: string) => {
          const child = spawn("script", ["-qec", command, "/dev/null"], { env: e, stdio: ["pipe", "pipe", "pipe"] });
          let out = "";
          child.stdout.on("data", (d: Buffer) => (out += d.toString()));
          child.stdin.on("error", () => {});
          const exited = new Promise<number | null>((r) => child.on("close", r));
          await waitFor(ready, "the client to be attached", 30_000, 100);
          await new Promise((r) => setTimeout(r, 700));
          child.stdin.write(keys);
          const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
          const status = await exited;
          clearTimeout(timer);
          return { status, out };
        };
        const running = () => docker(cli, ["inspect", "-f", "{{.State.Running}}", "api-detach"]).stdout.trim() === "true";
        const run = await typeWhenReady(`${cli} run -it --name api-detach busybox sh -c 'sleep 1000'`, running, "\x10\x11");
        // the client detached (Debian's 20.10 CLI reports its own escape as an error, exit 1)
        assert.ok(run.status === 0 || /read escape sequence/.test(run.out), `${cli}: ${run.status} ${run.out}`);
        assert.equal(dok(docker(cli, ["inspect", "-f", "{{.State.Running}}", "api-detach"])).stdout.trim(), "true", `${cli}: the container runs on`);
        const execs = () => /sleep 1000[\s\S]*sleep 1000/.test(docker(cli, ["top", "api-detach"]).stdout);
        const exec = await typeWhenReady(`DOCKER_CONFIG=${home} ${cli} exec -it api-detach sh -c 'sleep 1000'`, execs, "\x01q");
        assert.ok(exec.status === 0 || /read escape sequence/.test(exec.out), `${cli}: ${exec.status} ${exec.out}`);
        assert.equal(dok(docker(cli, ["inspect", "-f", "{{.State.Running}}", "api-detach"])).stdout.trim(), "true");
      } finally {
        docker(cli, ["rm", "-f", "api-detach"]);
        fs.rmSync(home, { recursive: true, force: true });
      }
    }
    // a client without an escape proxy of its own (a raw hijacked attach): the server detaches it
    const cli = clis[0]!;
    dok(docker(cli, ["run", "-dit", "--name", "api-detach-raw", "busybox", "sh"]));
    try {
      const { connect } = await import("node:net");
      const conn = connect(sock);
      let got = "";
      conn.on("data", (d) => (got += d.toString("latin1")));
      const closed = new Promise((r) => conn.on("close", r));
      conn.write("POST /containers/api-detach-raw/attach?stream=1&stdin=1&stdout=1&detachKeys=ctrl-x,y HTTP/1.1\r\nHost: docker\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n");
      await waitFor(() => got.includes("101"), "the attach to be upgraded", 10_000, 20);
      conn.write("echo before\r\x18y");
      await Promise.race([closed, new Promise((_, j) => setTimeout(() => j(new Error(`the server kept the connection after the detach keys: ${JSON.stringify(got)}`)), 10_000))]);
      assert.equal(dok(docker(cli, ["inspect", "-f", "{{.State.Running}}", "api-detach-raw"])).stdout.trim(), "true", "the container runs on, its stdin open");
    } finally {
      docker(cli, ["rm", "-f", "api-detach-raw"]);
    }
  });

  test("dockerd's answers where clients expect them: not a swarm, no plugins, log drivers by name, -e NAME from the caller", async () => {
    for (const cli of clis) {
      const leave = docker(cli, ["swarm", "leave", "--force"]);
      assert.notEqual(leave.code, 0);
      assert.match(leave.stderr, /This node is not part of a swarm/, cli);
      const services = docker(cli, ["service", "ls"]);
      assert.match(services.stderr, /This node is not a swarm manager/, cli);
      // no managed plugins: none listed, none by name, none installed
      assert.deepEqual(dok(docker(cli, ["plugin", "ls", "-q"])).stdout, "", cli);
      const inspect = docker(cli, ["plugin", "inspect", "nosuch"]);
      assert.notEqual(inspect.code, 0);
      assert.match(inspect.stderr, /No such plugin: nosuch|plugin "nosuch(:latest)?" not found/, cli);
    }
    const install = await request("POST", "/plugins/pull?remote=vieux/sshfs", "[]");
    assert.equal(install.status, 501);
    assert.match(JSON.parse(install.body).message, /does not install managed plugins/);
    assert.equal((await request("POST", "/v1.41/swarm/leave?force=1")).status, 503);
    assert.equal((await request("GET", "/v1.41/nodes")).status, 503);
    assert.match((await request("GET", "/info")).body, /"LocalNodeState":"inactive"/);
    const cli = clis[0]!;
    // the local driver: docker's limits, and logs read back
    dok(docker(cli, ["run", "--name", "api-local", "--log-driver", "local", "busybox", "sh", "-c", "echo one; echo two >&2"]));
    assert.deepEqual(JSON.parse(dok(docker(cli, ["inspect", "-f", "{{json .HostConfig.LogConfig}}", "api-local"])).stdout), { Type: "local", Config: { "max-size": "20m", "max-file": "5" } });
    const logs = dok(docker(cli, ["logs", "api-local"]));
    assert.equal(logs.stdout + logs.stderr, "one\ntwo\n");
    dok(docker(cli, ["rm", "api-local"]));
    const unknown = docker(cli, ["run", "--rm", "--log-driver", "nosuch", "busybox", "true"]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /logger: no log driver named 'nosuch' is registered/);
    assert.equal(b(["ps", "-aq"]).stdout, "", "nothing was created");
    // berth's own CLI: -e NAME takes the caller's value in run and exec
    ok(b(["run", "-d", "--name", "api-env", "busybox", "sleep", "1000"]));
    const e = berth(env, ["exec", "-e", "BERTH_TEST_FROM_CALLER", "api-env", "sh", "-c", "echo $BERTH_TEST_FROM_CALLER"], { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_TEST_FROM_CALLER: "passed" } });
    assert.equal(e.stdout, "passed\n", e.stderr);
    ok(b(["rm", "-f", "api-env"]));
  });

  test("container details as dockerd: --mac-address, --tmpfs with options, docker update of resources and restart policy, Env NAME without a value, Isolation default", async () => {
    const cli = clis[0]!;
    const net = "api-details";
    dok(docker(cli, ["network", "create", net]));
    try {
      const mac = "02:42:ac:11:99:01";
      const shown = dok(docker(cli, ["run", "--rm", "--network", net, "--mac-address", mac, "--tmpfs", "/scratch:size=1m,mode=1770", "busybox", "sh", "-c", "cat /sys/class/net/eth0/address; stat -c %a /scratch; grep ' /scratch ' /proc/mounts"])).stdout.split("\n");
      assert.equal(shown[0], mac);
      assert.equal(shown[1], "1770");
      assert.match(shown[2] ?? "", /tmpfs \/scratch tmpfs .*size=1024k/);
      const id = dok(docker(cli, ["run", "-d", "--restart", "always", "--cpus", "0.5", "busybox", "sleep", "1000"])).stdout.trim();
      const settings = () => dok(docker(cli, ["inspect", "-f", "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}", id])).stdout.trim();
      // what the update does not name stays (the CLI sends zeros and an unnamed restart policy for it)
      dok(docker(cli, ["update", "--memory", "64m", "--memory-swap", "128m", id]));
      assert.equal(settings(), `${64 << 20} 500000000 always:0`);
      dok(docker(cli, ["update", "--restart", "on-failure:3", id]));
      assert.equal(settings(), `${64 << 20} 500000000 on-failure:3`);
      // the new limit is the cgroup's
      const limit = dok(docker(cli, ["exec", id, "sh", "-c", "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max"])).stdout.trim();
      assert.equal(limit, String(64 << 20));
      dok(docker(cli, ["rm", "-f", id]));
      // the API's Env: NAME alone is kept as is (only the CLI fills in its own value); Isolation "default" is taken
      const made = await request("POST", "/containers/create", JSON.stringify({ Image: "busybox", Cmd: ["true"], Env: ["JUSTNAME", "A=1"], HostConfig: { Isolation: "default" } }));
      assert.equal(made.status, 201, made.body);
      const cid = JSON.parse(made.body).Id;
      assert.deepEqual(JSON.parse(dok(docker(cli, ["inspect", "-f", "{{json .Config.Env}}", cid])).stdout).filter((e: string) => !e.startsWith("PATH=")), ["JUSTNAME", "A=1"]);
      dok(docker(cli, ["rm", cid]));
      const hyperv = await request("POST", "/containers/create", JSON.stringify({ Image: "busybox", HostConfig: { Isolation: "hyperv" } }));
      assert.equal(hyperv.status, 400);
    } finally {
      docker(cli, ["network", "rm", net]);
    }
  });

  test("legacy links: --link NAME:ALIAS puts the linked container's address in /etc/hosts, and it answers there", () => {
    const cli = clis[0]!;
    const www = tempDir("berth-test-www-");
    fs.writeFileSync(join(www, "index.html"), "linked\n");
    fs.chmodSync(www, 0o755);
    dok(docker(cli, ["run", "-d", "--name", "api-linked", "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"]));
    try {
      const ip = dok(docker(cli, ["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "api-linked"])).stdout.trim();
      assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
      const r = dok(docker(cli, ["run", "--name", "api-client", "--link", "api-linked:db", "busybox", "sh", "-c", "grep -w db /etc/hosts; wget -qO- http://db/"]));
      assert.match(r.stdout, new RegExp(`^${ip.replace(/\./g, "\\.")}\\s+db$`, "m"));
      assert.match(r.stdout, /^linked$/m, "the alias reaches the linked container");
      assert.deepEqual(JSON.parse(dok(docker(cli, ["inspect", "-f", "{{json .HostConfig.Links}}", "api-client"])).stdout), ["/api-linked:/api-client/db"]);
      // docker rm --link (DELETE /containers/{name}?link=1): the link goes, both containers stay
      dok(docker(cli, ["rm", "--link", "/api-client/db"]));
      assert.equal(dok(docker(cli, ["inspect", "-f", "{{json .HostConfig.Links}}", "api-client"])).stdout.trim(), "null");
      assert.equal(dok(docker(cli, ["ps", "-a", "--filter", "name=api-", "--format", "{{.Names}}"])).stdout.trim().split("\n").sort().join(" "), "api-client api-linked");
      const own = docker(cli, ["rm", "--link", "api-client"]);
      assert.notEqual(own.code, 0);
      assert.match(own.stderr, /cannot remove the default link name of the container/);
      dok(docker(cli, ["rm", "api-client"]));
      const missing = docker(cli, ["run", "--rm", "--link", "nosuch:db", "busybox", "true"]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /could not get container for nosuch/);
    } finally {
      dok(docker(cli, ["rm", "-f", "api-linked"]));
      fs.rmSync(www, { recursive: true, force: true });
    }
  });

  test("--device-cgroup-rule lets a container open a device the defaults do not allow", () => {
    const cli = clis[0]!;
    // c 1:2 (the long-gone /dev/kmem): the cgroup refuses it (EPERM) unless a rule allows it; then the kernel has no such device (ENXIO)
    const probe = "mknod /tmp/d c 1 2; cat /tmp/d 2>&1; true";
    assert.match(dok(docker(cli, ["run", "--rm", "--network", "none", "busybox", "sh", "-c", probe])).stdout, /Operation not permitted/);
    assert.match(dok(docker(cli, ["run", "--rm", "--network", "none", "--device-cgroup-rule", "c 1:2 rwm", "busybox", "sh", "-c", probe])).stdout, /No such device or address/);
    assert.match(ok(b(["run", "--rm", "--network", "none", "--device-cgroup-rule", "c 1:* r", "busybox", "sh", "-c", probe])).stdout, /No such device or address/);
    const bad = b(["run", "--rm", "--device-cgroup-rule", "x 1:2 q", "busybox", "true"]);
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /invalid device cgroup rule "x 1:2 q"/);
  });

  test("docker cp reaches into volumes and bind mounts, as dockerd's does; a read-only one refuses writes", () => {
    const cli = clis[0]!;
    const host = tempDir("berth-test-bind-");
    const ro = tempDir("berth-test-bind-");
    fs.writeFileSync(join(host, "from-host"), "host file\n");
    fs.writeFileSync(join(ro, "kept"), "read only\n");
    dok(docker(cli, ["run", "-d", "--name", "api-cp", "-v", "api-cpvol:/data", "-v", `${host}:/bind`, "-v", `${ro}:/ro:ro`, "busybox", "sleep", "1000"]));
    try {
      dok(docker(cli, ["exec", "api-cp", "sh", "-c", "echo in-volume > /data/v; mkdir -p /data/sub; echo deep > /data/sub/d"]));
      assert.match(dok(docker(cli, ["cp", "api-cp:/data/v", "-"])).stdout, /in-volume/);
      const out = tempDir("berth-test-cpout-");
      dok(docker(cli, ["cp", "api-cp:/data", join(out, "data-copy")]));
      assert.equal(fs.readFileSync(join(out, "data-copy/sub/d"), "utf8"), "deep\n", "the volume's directory, whole");
      dok(docker(cli, ["cp", "api-cp:/bind", out]));
      assert.equal(fs.readFileSync(join(out, "bind/from-host"), "utf8"), "host file\n", "the bind mount, named as in the container");
      fs.writeFileSync(join(out, "put"), "put in\n");
      dok(docker(cli, ["cp", join(out, "put"), "api-cp:/data/"]));
      assert.equal(dok(docker(cli, ["exec", "api-cp", "cat", "/data/put"])).stdout, "put in\n", "written into the volume, seen inside");
      const refused = docker(cli, ["cp", join(out, "put"), "api-cp:/ro/"]);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /read-only/);
      assert.equal(fs.existsSync(join(ro, "put")), false);
      fs.rmSync(out, { recursive: true, force: true });
    } finally {
      dok(docker(cli, ["rm", "-f", "-v", "api-cp"]));
      docker(cli, ["volume", "rm", "api-cpvol"]);
      fs.rmSync(host, { recursive: true, force: true });
      fs.rmSync(ro, { recursive: true, force: true });
    }
  });

  test("registry-mirrors in daemon.json: docker pull of a Docker Hub image is served by the mirror", { skip: registrySkip }, async () => {
    const reg = await startRegistry();
    const cli = clis[0]!;
    try {
      // the mirror holds library/busybox, as a Hub mirror does
      dok(docker(cli, ["tag", "busybox", `${reg.host}/library/busybox:mirrored`]));
      dok(docker(cli, ["push", `${reg.host}/library/busybox:mirrored`]));
      dok(docker(cli, ["rmi", `${reg.host}/library/busybox:mirrored`]));
      fs.mkdirSync(env.configDir, { recursive: true });
      // a mirror that is down first: the next one serves
      fs.writeFileSync(join(env.configDir, "daemon.json"), JSON.stringify({ "registry-mirrors": ["http://127.0.0.1:9", `http://${reg.host}`] }));
      const pulled = dok(docker(cli, ["pull", "busybox:mirrored"]));
      assert.match(pulled.stdout, /Status: Downloaded newer image for busybox:mirrored/);
      assert.match(dok(docker(cli, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout, /^busybox:mirrored$/m);
      dok(docker(cli, ["rmi", "busybox:mirrored"]));
      // berth's own CLI reads the same file
      const env2 = { BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_HUB_REGISTRY: "127.0.0.1:9" };
      ok(berth(env, ["pull", "busybox:mirrored"], { extraEnv: env2 }));
      ok(berth(env, ["rmi", "busybox:mirrored"], { extraEnv: env2 }));
      // without a mirror that has it, the pull fails (Hub is a closed port here) with the registry's error
      fs.writeFileSync(join(env.configDir, "daemon.json"), JSON.stringify({ "registry-mirrors": ["http://127.0.0.1:9"] }));
      assert.notEqual(docker(cli, ["pull", "busybox:mirrored"]).code, 0);
    } finally {
      fs.rmSync(join(env.configDir, "daemon.json"), { force: true });
      await reg.stop();
    }
  });

  test("registries.conf (podman's format): docker pull of a registry's image is served by its mirror (a path inside another registry); a blocked registry is refused", { skip: registrySkip }, async () => {
    const reg = await startRegistry();
    const cli = clis[0]!;
    try {
      // the mirror keeps registry.test's repositories under /cache
      dok(docker(cli, ["tag", "busybox", `${reg.host}/cache/team/busybox:1`]));
      dok(docker(cli, ["push", `${reg.host}/cache/team/busybox:1`]));
      dok(docker(cli, ["rmi", `${reg.host}/cache/team/busybox:1`]));
      fs.mkdirSync(env.configDir, { recursive: true });
      // registry.test itself lives at a closed local port: only the mirror can serve (and no name is looked up)
      fs.writeFileSync(
        join(env.configDir, "registries.conf"),
        `[[registry]]\nprefix = "registry.test"\nlocation = "127.0.0.1:9"\n[[registry.mirror]]\nlocation = "127.0.0.1:9/down"\n[[registry.mirror]]\nlocation = "${reg.host}/cache"\ninsecure = true\n\n[[registry]]\nprefix = "blocked.test"\nblocked = true\n`,
      );
      const pulled = dok(docker(cli, ["pull", "registry.test/team/busybox:1"]));
      assert.match(pulled.stdout, /Downloaded newer image for registry.test\/team\/busybox:1/);
      assert.equal(dok(docker(cli, ["run", "--rm", "registry.test/team/busybox:1", "echo", "mirrored"])).stdout, "mirrored\n");
      dok(docker(cli, ["rmi", "registry.test/team/busybox:1"]));
      const env2 = { BERTH_RUNTIME_ROOT: runtimeRoot, BERTH_HUB_REGISTRY: "127.0.0.1:9" };
      ok(berth(env, ["pull", "registry.test/team/busybox:1"], { extraEnv: env2 }));
      ok(berth(env, ["rmi", "registry.test/team/busybox:1"], { extraEnv: env2 }));
      const blocked = docker(cli, ["pull", "blocked.test/team/busybox:1"]);
      assert.notEqual(blocked.code, 0);
      assert.match(blocked.stderr, /registry blocked.test is blocked in .*registries.conf/);
    } finally {
      fs.rmSync(join(env.configDir, "registries.conf"), { force: true });
      await reg.stop();
    }
  });

  test("volumes and networks through the API: names refused as dockerd, connect with an address, alias, link and link-local address, other tools' CNI networks only when asked", () => {
    const cli = clis[0]!;
    dok(docker(cli, ["volume", "create", "api-vol"]));
    assert.match(dok(docker(cli, ["volume", "ls", "--format", "{{.Name}}"])).stdout, /^api-vol$/m);
    assert.equal(dok(docker(cli, ["run", "--rm", "-v", "api-vol:/v", "busybox", "sh", "-c", "echo kept > /v/f; cat /v/f"])).stdout, "kept\n");
    assert.equal(dok(docker(cli, ["run", "--rm", "-v", "api-vol:/v", "busybox", "cat", "/v/f"])).stdout, "kept\n");
    dok(docker(cli, ["volume", "rm", "api-vol"]));
    dok(docker(cli, ["network", "create", "api-net"]));
    assert.match(dok(docker(cli, ["network", "ls", "--format", "{{.Name}} {{.Driver}}"])).stdout, /^api-net bridge$/m);
    dok(docker(cli, ["run", "-d", "--name", "api-srv", "--network", "api-net", "busybox", "sleep", "1000"]));
    const r = docker(cli, ["run", "--rm", "--network", "api-net", "busybox", "ping", "-c", "1", "-W", "3", "api-srv"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    // dockerd's refusals: a name taken (CheckDuplicate), a name with a space
    assert.match(docker(cli, ["network", "create", "api-net"]).stderr, /network with name api-net already exists/);
    assert.match(docker(cli, ["network", "create", "api net"]).stderr, /invalid network name "api net"/);
    // connect with an address, an alias, a link and a link-local address: seen inside at once
    const subnet = JSON.parse(dok(docker(cli, ["network", "inspect", "-f", "{{json .IPAM.Config}}", "api-net"])).stdout)[0].Subnet as string;
    const fixed = subnet.replace(/\.0\/\d+$/, ".77");
    dok(docker(cli, ["run", "-d", "--name", "api-other", "busybox", "sleep", "1000"]));
    dok(docker(cli, ["network", "connect", "--ip", fixed, "--alias", "other-alias", "--link", "api-srv:srv-link", "--link-local-ip", "169.254.9.9", "api-net", "api-other"]));
    const addrs = dok(docker(cli, ["exec", "api-other", "ip", "-4", "addr", "show", "eth1"])).stdout;
    assert.match(addrs, new RegExp(`inet ${fixed.replace(/\./g, "\\.")}/`));
    assert.match(addrs, /inet 169\.254\.9\.9\/16/);
    const linked = docker(cli, ["exec", "api-other", "ping", "-c", "1", "-W", "3", "srv-link"]);
    assert.equal(linked.code, 0, `the link's alias resolves from the connected container: ${linked.stderr}${linked.stdout}`);
    assert.equal(docker(cli, ["exec", "api-srv", "ping", "-c", "1", "-W", "3", "other-alias"]).code, 0, "the alias resolves on the network");
    const ep = JSON.parse(dok(docker(cli, ["inspect", "-f", "{{json .NetworkSettings.Networks}}", "api-other"])).stdout)["api-net"];
    assert.deepEqual([ep.IPAMConfig.IPv4Address, ep.IPAMConfig.LinkLocalIPs, ep.Links], [fixed, ["169.254.9.9"], ["api-srv:srv-link"]]);
    // and again after a restart (kept with the container's networks)
    dok(docker(cli, ["restart", "-t", "1", "api-other"]));
    assert.equal(docker(cli, ["exec", "api-other", "ping", "-c", "1", "-W", "3", "srv-link"]).code, 0, "the link after a restart");
    assert.match(dok(docker(cli, ["exec", "api-other", "ip", "-4", "addr", "show", "eth1"])).stdout, /inet 169\.254\.9\.9\/16/);
    // --link-local-ip at run; a bad one refused before anything is made
    assert.match(dok(docker(cli, ["run", "--rm", "--network", "api-net", "--link-local-ip", "169.254.7.7", "busybox", "ip", "-4", "addr", "show", "eth0"])).stdout, /inet 169\.254\.7\.7\/16/);
    assert.match(docker(cli, ["run", "--rm", "--network", "api-net", "--link-local-ip", "nope", "busybox", "true"]).stderr, /invalid link-local IP address: nope/);
    dok(docker(cli, ["rm", "-f", "api-srv", "api-other"]));
    dok(docker(cli, ["network", "rm", "api-net"]));
    assert.doesNotMatch(dok(docker(cli, ["network", "ls"])).stdout, /api-net/);
    // other tools' CNI networks (podman's, in /etc/cni/net.d) only when asked for
    const foreign = fs.existsSync("/etc/cni/net.d") ? fs.readdirSync("/etc/cni/net.d").filter((f) => f.endsWith(".conflist")).map((f) => JSON.parse(fs.readFileSync(join("/etc/cni/net.d", f), "utf8")).name as string) : [];
    const listed = dok(docker(cli, ["network", "ls", "--format", "{{.Name}}"])).stdout.split("\n");
    for (const name of foreign) assert.ok(!listed.includes(name), `${name} (another tool's CNI network) is not listed by default`);
    const asked = dok(docker(cli, ["network", "ls", "--filter", "driver=cni", "--format", "{{.Name}}"])).stdout.split("\n");
    for (const name of foreign) assert.ok(asked.includes(name), `${name} is listed with --filter driver=cni`);
  });

  test("docker login (POST /auth), push and pull with the client's credentials (X-Registry-Auth) against an htpasswd registry", { skip: registrySkip }, async () => {
    const cli = clis[clis.length - 1]!;
    const reg = await startRegistry({ htpasswd: { user: "alice", password: "s3cret" } });
    try {
      const bad = docker(cli, ["login", "-u", "alice", "--password-stdin", reg.host], { input: "wrong\n" });
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /unauthorized|incorrect|401/i);
      const good = dok(docker(cli, ["login", "-u", "alice", "--password-stdin", reg.host], { input: "s3cret\n" }));
      assert.match(good.stdout, /Login Succeeded/);
      // the service keeps no credentials of its own: only the client's header lets it in
      assert.ok(!fs.existsSync(join(env.dockerConfig, "config.json")) || !fs.readFileSync(join(env.dockerConfig, "config.json"), "utf8").includes(reg.host), "the service saved nothing");
      dok(docker(cli, ["tag", "busybox", `${reg.host}/private/busybox:1`]));
      const pushed = dok(docker(cli, ["push", `${reg.host}/private/busybox:1`])).stdout;
      // GET /distribution/{name}/json: what the registry has, with the client's credentials, nothing pulled
      const auth = Buffer.from(JSON.stringify({ username: "alice", password: "s3cret", serveraddress: reg.host })).toString("base64url");
      const dist = await request("GET", `/v1.41/distribution/${reg.host}/private/busybox:1/json`, undefined, { "X-Registry-Auth": auth });
      assert.equal(dist.status, 200, dist.body);
      const info = JSON.parse(dist.body) as { Descriptor: { digest: string; mediaType: string; size: number }; Platforms: { architecture: string; os: string }[] };
      assert.equal(info.Descriptor.digest, /digest: (sha256:[0-9a-f]{64})/.exec(pushed)![1]);
      assert.deepEqual(info.Platforms.map((p) => `${p.os}/${p.architecture}`), [`linux/${process.arch === "x64" ? "amd64" : process.arch}`]);
      const anonymous = await request("GET", `/distribution/${reg.host}/private/busybox:1/json`);
      assert.notEqual(anonymous.status, 200, "without credentials the registry refuses");
      dok(docker(cli, ["rmi", `${reg.host}/private/busybox:1`]));
      dok(docker(cli, ["pull", `${reg.host}/private/busybox:1`]));
      // docker pull --all-tags: no tag in the request, every tag the registry lists
      dok(docker(cli, ["tag", "busybox", `${reg.host}/private/busybox:2`]));
      dok(docker(cli, ["push", `${reg.host}/private/busybox:2`]));
      dok(docker(cli, ["rmi", `${reg.host}/private/busybox:1`, `${reg.host}/private/busybox:2`]));
      const all = dok(docker(cli, ["pull", "--all-tags", `${reg.host}/private/busybox`])).stdout;
      assert.deepEqual(dok(docker(cli, ["images", "--format", "{{.Tag}}", `${reg.host}/private/busybox`])).stdout.trim().split("\n").sort(), ["1", "2"], `only the matching tags of the image busybox:latest also names (${all})`);
      dok(docker(cli, ["rmi", `${reg.host}/private/busybox:2`]));
      assert.match(dok(docker(cli, ["images", "--format", "{{.Repository}}:{{.Tag}}"])).stdout, new RegExp(`^${reg.host.replace(/\./g, "\\.")}/private/busybox:1$`, "m"));
      dok(docker(cli, ["rmi", `${reg.host}/private/busybox:1`]));
      dok(docker(cli, ["logout", reg.host]));
      const anon = docker(cli, ["pull", `${reg.host}/private/busybox:1`]);
      assert.notEqual(anon.code, 0, "without the client's credentials the registry refuses");
    } finally {
      await reg.stop();
    }
  });

  test("docker build (POST /build, the legacy builder's messages): tags, build args, cache, a failing RUN's exit code", () => {
    const dir = tempDir("berth-api-build-");
    fs.writeFileSync(join(dir, "msg.txt"), "from the context\n");
    fs.writeFileSync(join(dir, "Dockerfile"), "FROM busybox\nARG WHO=nobody\nCOPY msg.txt /msg.txt\nRUN echo \"built for $WHO\" > /who\nCMD [\"cat\", \"/msg.txt\", \"/who\"]\n");
    fs.writeFileSync(join(dir, "Failing.Dockerfile"), "FROM busybox\nRUN echo about to fail; exit 4\n");
    for (const cli of clis) {
      const tag = `apibuild:${cli.includes("local") ? "28" : "20"}`;
      const r = dok(docker(cli, ["build", "-t", tag, "--build-arg", "WHO=docker", dir], { timeout: 120_000 }), `${cli} build`);
      assert.match(r.stdout + r.stderr, /Successfully (built|tagged)|naming to/);
      assert.equal(dok(docker(cli, ["run", "--rm", tag])).stdout, "from the context\nbuilt for docker\n");
      assert.equal(ok(b(["run", "--rm", tag])).stdout, "from the context\nbuilt for docker\n", "berth's CLI sees the image the API built");
      const again = dok(docker(cli, ["build", "-q", "-t", tag, "--build-arg", "WHO=docker", dir]));
      assert.equal(again.stdout.trim(), dok(docker(cli, ["image", "inspect", "-f", "{{.Id}}", tag])).stdout.trim(), "a cached rebuild gives the same image");
      const failed = docker(cli, ["build", "-f", join(dir, "Failing.Dockerfile"), dir], { timeout: 120_000 });
      assert.equal(failed.code, 4, `${cli}: a failing RUN's exit code (${failed.stderr})`);
      assert.match(failed.stdout + failed.stderr, /about to fail/);
      assert.match(failed.stderr, /returned a non-zero code: 4/);
    }
  });

  test("docker build's other options through the API: labels, --add-host, --network none, a Dockerfile outside the context, --cache-from after a prune, builder prune; docker commit --change", () => {
    const dir = tempDir("berth-api-build2-");
    const ctx = join(dir, "ctx");
    fs.mkdirSync(ctx);
    fs.writeFileSync(join(ctx, "f"), "from the context\n");
    // the Dockerfile outside the context: the CLI adds it to the context under a random name
    fs.writeFileSync(join(dir, "Outside.Dockerfile"), 'FROM busybox\nCOPY f /f\nRUN grep foo /etc/hosts > /hosts; ip -o link | wc -l > /links\nCMD ["cat", "/f", "/hosts", "/links"]\n');
    for (const cli of clis) {
      const tag = `apibuild2:${cli.includes("local") ? "28" : "20"}`;
      const args = ["build", "-t", tag, "--label", "team=berth", "--add-host", "foo:10.1.2.3", "--network", "none", "-f", join(dir, "Outside.Dockerfile"), ctx];
      dok(docker(cli, args, { timeout: 120_000 }), `${cli} build`);
      // the extra host was in the step's /etc/hosts, and the step had no network but loopback
      assert.equal(dok(docker(cli, ["run", "--rm", tag])).stdout, "from the context\n10.1.2.3\tfoo\n1\n", cli);
      assert.equal(dok(docker(cli, ["inspect", "-f", "{{index .Config.Labels \"team\"}}", tag])).stdout.trim(), "berth");
      // the build cache pruned (docker builder prune), the image saved and loaded back: its steps
      // come back as cache only through --cache-from
      const saved = join(dir, "saved.tar");
      dok(docker(cli, ["save", "-o", saved, tag]));
      dok(docker(cli, ["rmi", tag]));
      const pruned = dok(docker(cli, ["builder", "prune", "-f"]));
      assert.match(pruned.stdout, /Total reclaimed space/);
      dok(docker(cli, ["load", "-i", saved]));
      const plain = dok(docker(cli, [...args.slice(0, 1), "-t", `${tag}-plain`, ...args.slice(3)], { timeout: 120_000 }));
      assert.doesNotMatch(plain.stdout, /Using cache/, "no cache without --cache-from");
      dok(docker(cli, ["builder", "prune", "-f"]));
      const reused = dok(docker(cli, [...args.slice(0, 1), "--cache-from", tag, "-t", `${tag}-again`, ...args.slice(3)], { timeout: 120_000 }));
      assert.match(reused.stdout, /Using cache/, "steps reused from the --cache-from image");
      dok(docker(cli, ["rmi", tag, `${tag}-plain`, `${tag}-again`]));
    }
    // docker commit --change: Dockerfile instructions applied to the committed image
    const cli = clis[0]!;
    const id = dok(docker(cli, ["run", "-d", "busybox", "sh", "-c", "echo made > /made; sleep 1000"])).stdout.trim();
    dok(docker(cli, ["commit", "--change", 'CMD ["cat", "/made"]', "--change", "ENV COMMITTED=1", "--change", "LABEL via=change", id, "committed:change"]));
    assert.equal(dok(docker(cli, ["run", "--rm", "committed:change"])).stdout, "made\n");
    assert.equal(dok(docker(cli, ["run", "--rm", "committed:change", "sh", "-c", "echo $COMMITTED"])).stdout, "1\n");
    assert.equal(dok(docker(cli, ["inspect", "-f", "{{index .Config.Labels \"via\"}}", "committed:change"])).stdout.trim(), "change");
    dok(docker(cli, ["rm", "-f", id]));
    dok(docker(cli, ["rmi", "committed:change"]));
  });

  test("bad input: a clear error with dockerd's status, and the server stays up", async () => {
    const bad = await request("POST", "/containers/create", "{nope");
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body).message, /invalid JSON/);
    const noImage = await request("POST", "/containers/create", JSON.stringify({ Image: "nosuchimage:1" }));
    assert.equal(noImage.status, 404);
    assert.match(JSON.parse(noImage.body).message, /No such image: nosuchimage:1/);
    // checked against the API description: a wrong type names the field
    const wrongType = await request("POST", "/containers/create", JSON.stringify({ Image: "busybox", HostConfig: { Memory: "lots" } }));
    assert.equal(wrongType.status, 400);
    assert.match(JSON.parse(wrongType.body).message, /invalid container configuration: HostConfig.Memory must be integer/);
    const wrongCmd = await request("POST", "/containers/create", JSON.stringify({ Image: "busybox", Cmd: "not a list" }));
    assert.equal(wrongCmd.status, 400);
    assert.match(JSON.parse(wrongCmd.body).message, /Cmd must be array/);
    // every JSON body is checked against its schema, not only create's
    const cli = clis[0]!;
    const target = dok(docker(cli, ["run", "-d", "-e", "KEEP=1", "busybox", "sleep", "1000"])).stdout.trim();
    for (const [path, body, field] of [
      ["/networks/create", { Name: "badnet", Internal: "yes" }, /invalid request body: Internal must be boolean/],
      ["/volumes/create", { Name: "badvol", Labels: ["a"] }, /invalid request body: Labels must be object/],
      [`/containers/${target}/exec`, { Cmd: "id" }, /invalid request body: Cmd must be array/],
      [`/containers/${target}/update`, { Memory: "1g" }, /invalid request body: Memory must be integer/],
      [`/networks/bridge/connect`, { Container: 7 }, /invalid request body: Container must be string/],
      ["/auth", { username: ["me"] }, /invalid request body: username must be string/],
      [`/commit?container=${target}`, { Env: "A=1" }, /invalid request body: Env must be array/],
    ] as const) {
      const r = await request("POST", path, JSON.stringify(body));
      assert.equal(r.status, 400, `${path}: ${r.body}`);
      assert.match(JSON.parse(r.body).message, field);
    }
    // nothing was made by the refused requests
    assert.equal((await request("GET", "/networks/badnet")).status, 404);
    assert.equal((await request("GET", "/volumes/badvol")).status, 404);
    // a commit's body config: what it sets is the image's, the rest the container's (dockerd's merge)
    const committed = await request("POST", `/commit?container=${target}&repo=committed&tag=1`, JSON.stringify({ Cmd: ["echo", "from the body"], Env: null, Labels: {} }));
    assert.equal(committed.status, 201, committed.body);
    const img = JSON.parse((await request("GET", "/images/committed:1/json")).body);
    assert.deepEqual(img.Config.Cmd, ["echo", "from the body"]);
    assert.ok(img.Config.Env.includes("KEEP=1"), `Env from the container: ${img.Config.Env}`);
    assert.equal(dok(docker(cli, ["run", "--rm", "committed:1"])).stdout.trim(), "from the body");
    dok(docker(cli, ["rm", "-f", target]));
    dok(docker(cli, ["rmi", "committed:1"]));
    const notObject = await request("POST", "/containers/create", "[1,2]");
    assert.equal(notObject.status, 400);
    const missing = await request("GET", "/containers/nosuchcontainer/json");
    assert.equal(missing.status, 404);
    assert.match(JSON.parse(missing.body).message, /No such container: nosuchcontainer/);
    const huge = await request("POST", "/containers/create", Buffer.alloc(5 << 20, 0x20));
    assert.equal(huge.status, 413);
    assert.equal((await request("GET", "/nosuchpath")).status, 404);
    assert.equal((await request("DELETE", "/_ping")).status, 405);
    // 50 requests at once, one of them malformed: all answered
    const all = await Promise.all(Array.from({ length: 50 }, (_, i) => request("GET", i === 7 ? "/containers/json?filters=%7Bbad" : "/containers/json")));
    assert.deepEqual([...new Set(all.map((r) => r.status))].sort(), [200, 400]);
    assert.equal((await request("GET", "/_ping")).status, 200);
  });

  test("a client that stops reading (attach, logs -f): back-pressure holds the container's stream, not the server's memory", async () => {
    const cli = clis[0]!;
    const rss = () => Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${service!.pid}/status`, "utf8"))![1]) / 1024;
    const line = "0123456789".repeat(10);
    // a stalled client: it sends the request, reads the first bytes, then reads no more
    const stalled = (request: string) =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(sock, () => s.write(request));
        s.once("data", () => {
          s.pause();
          resolve(s);
        });
        s.once("error", reject);
      });
    const chatty = dok(docker(cli, ["run", "-d", "--log-driver", "none", "busybox", "yes", line])).stdout.trim();
    const logged = dok(docker(cli, ["run", "-d", "--log-opt", "max-size=4m", "--log-opt", "max-file=2", "busybox", "yes", line])).stdout.trim();
    try {
      const before = rss();
      const clients = [
        await stalled(`POST /v1.41/containers/${chatty}/attach?stream=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: berth\r\nUpgrade: tcp\r\nConnection: Upgrade\r\n\r\n`),
        await stalled(`GET /v1.41/containers/${logged}/logs?follow=1&stdout=1&stderr=1 HTTP/1.1\r\nHost: berth\r\n\r\n`),
      ];
      // both containers write as fast as they can meanwhile (hundreds of MB a second without back-pressure)
      await new Promise((r) => setTimeout(r, 3000));
      const grown = rss() - before;
      assert.ok(grown < 48, `the server grew by ${grown.toFixed(1)} MB behind two stalled clients`);
      for (const c of clients) c.destroy();
      // the server goes on serving, and the containers run on
      assert.equal((await request("GET", "/_ping")).status, 200);
      assert.equal(dok(docker(cli, ["inspect", "-f", "{{.State.Running}}", chatty])).stdout.trim(), "true");
    } finally {
      dok(docker(cli, ["rm", "-f", chatty, logged]));
    }
  });

  test("attach over a websocket (GET /attach/ws): stdin in, stdout and stderr out as messages; before 1.42 text frames and all streams, logs=1 without stream", async () => {
    const cli = clis[0]!;
    const id = dok(docker(cli, ["run", "-d", "-i", "busybox", "sh", "-c", "echo started; read line; echo got $line; echo oops >&2; sleep 0.5"])).stdout.trim();
    await waitFor(() => docker(cli, ["logs", id]).stdout.includes("started"), "the container's first line");
    type Got = { messages: { text: string; binary: boolean }[]; closed: number };
    const open = (path: string, input?: string) =>
      new Promise<Got>((resolve, reject) => {
        const ws = new WebSocket(`ws+unix://${sock}:${path}`);
        const got: Got = { messages: [], closed: 0 };
        ws.on("open", () => input !== undefined && ws.send(input));
        ws.on("message", (m: Buffer, binary: boolean) => got.messages.push({ text: m.toString(), binary }));
        ws.on("close", (code) => resolve({ ...got, closed: code }));
        ws.on("unexpected-response", (_req, res) => reject(new Error(`status ${res.statusCode}`)));
        ws.on("error", reject);
        // a stream that never ends fails the test instead of hanging it
        setTimeout(() => (ws.terminate(), reject(new Error(`no end after 20 s: ${JSON.stringify(got.messages)}`))), 20_000).unref();
      });
    // 1.50: what was asked for, binary frames; the container's output after its stdin line
    const modern = await open(`/v1.50/containers/${id}/attach/ws?stream=1&stdin=1&stdout=1&stderr=1`, "hello\n");
    assert.equal(modern.closed, 1000);
    assert.equal(modern.messages.map((m) => m.text).join(""), "got hello\noops\n");
    assert.ok(modern.messages.every((m) => m.binary), "binary frames from 1.42 on");
    // logs=1 without stream: what the container wrote, then the socket closes
    const logs = await open(`/v1.50/containers/${id}/attach/ws?logs=1&stdout=1`);
    assert.equal(logs.messages.map((m) => m.text).join(""), "started\ngot hello\n");
    // 1.41: every stream whatever was asked, as text frames
    const old = await open(`/v1.41/containers/${id}/attach/ws?logs=1`);
    assert.equal(old.messages.map((m) => m.text).join(""), "started\ngot hello\noops\n");
    assert.ok(old.messages.every((m) => !m.binary), "text frames before 1.42");
    await assert.rejects(open(`/containers/nosuchcontainer/attach/ws?stream=1`), /status 404/);
    assert.equal((await request("GET", `/containers/${id}/attach/ws`)).status, 400);
    dok(docker(cli, ["rm", "-f", id]));
  });

  test("the service killed with -9: containers keep running, a new service serves them, their logs included; restart policies apply at start", async () => {
    const cli = clis[0]!;
    dok(docker(cli, ["run", "-d", "--name", "survivor", "busybox", "sh", "-c", "echo before; exec sleep 1000"]));
    dok(docker(cli, ["create", "--name", "always", "--restart", "always", "busybox", "sleep", "1000"]));
    const pid = Number(dok(docker(cli, ["inspect", "-f", "{{.State.Pid}}", "survivor"])).stdout.trim());
    // an attached run whose exit the service would record itself: the service dies first
    const attached = spawn(cli, ["run", "--rm", "--name", "orphaned", "busybox", "sh", "-c", "sleep 2; exit 3"], { env: { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: env.dockerConfig }, stdio: "ignore" });
    await waitFor(() => /running/.test(b(["inspect", "-f", "{{.State.Status}}", "orphaned"]).stdout), "the attached container to run", 10_000, 50);
    await stopService("SIGKILL");
    attached.kill();
    // the monitor sees its recorder gone and runs the exit command: --rm removes the container
    await waitFor(() => b(["ps", "-a", "--format", "{{.Names}}"]).stdout.split("\n").every((n) => n !== "orphaned"), "the orphaned --rm container to be removed after its exit", 15_000, 100);
    assert.ok(fs.existsSync(`/proc/${pid}`), "the container outlives the service");
    service = await startService();
    assert.match(dok(docker(cli, ["ps", "--format", "{{.Names}} {{.State}}"])).stdout, /^survivor running$/m);
    assert.equal(dok(docker(cli, ["logs", "survivor"])).stdout, "before\n");
    assert.match(dok(docker(cli, ["ps", "--format", "{{.Names}}"])).stdout, /^always$/m, "a container with restart policy always was started by the service");
    dok(docker(cli, ["rm", "-f", "survivor", "always"]));
  });

  test("berth system service serves until stopped, as one process (the service takes the CLI's place)", async () => {
    const other = join(tempDir("berth-test-api-"), "cli.sock");
    const child = await startService(true, other);
    try {
      // the pid started is the server itself, with no CLI process waiting beside it
      assert.match(fs.readFileSync(`/proc/${child.pid}/cmdline`, "utf8"), /berth-api\.cjs/);
      const parentOf = (p: string) => {
        try {
          return fs.readFileSync(`/proc/${p}/stat`, "utf8").split(") ")[1]?.split(" ")[1];
        } catch {
          return undefined; // gone meanwhile
        }
      };
      assert.equal(fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p) && parentOf(p) === String(child.pid)).length, 0, "no child process");
      const r = spawnSync(clis[0]!, ["ps", "-a", "--format", "{{.Names}}"], { env: { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${other}`, HOME: env.dockerConfig }, encoding: "utf8", timeout: 30_000 });
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await new Promise((res) => {
        child.once("exit", res);
        child.kill("SIGTERM");
      });
    }
    await waitFor(() => !fs.existsSync(other), "the socket to be removed", 10_000);
  });

  test("socket activation: systemd's socket (fd://) is served", { skip: !fs.existsSync("/usr/bin/systemd-socket-activate") && "needs systemd-socket-activate" }, async () => {
    const activated = join(tempDir("berth-test-api-"), "activated.sock");
    const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_RUNTIME_ROOT: runtimeRoot };
    delete e.NODE_EXTRA_CA_CERTS;
    const child = spawn("/usr/bin/systemd-socket-activate", ["-l", activated, process.execPath, ...berthCommand(), "system", "service", "fd://"], { env: e, stdio: "ignore" });
    try {
      await waitFor(() => fs.existsSync(activated), "the activation socket", 10_000);
      const r = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        http.get({ socketPath: activated, path: "/_ping" }, (res) => {
          let body = "";
          res.on("data", (d) => (body += d));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        }).on("error", reject);
      });
      assert.deepEqual(r, { status: 200, body: "OK" });
    } finally {
      await new Promise((res) => (child.once("exit", res), child.kill("SIGTERM")));
    }
  });

  test("tcp without TLS is refused, except on loopback when asked", () => {
    const r = spawnSync(process.execPath, [...berthCommand(), "system", "service", "tcp://0.0.0.0:23750"], { env: { ...process.env, BERTH_ROOT: env.root }, encoding: "utf8", timeout: 20_000 });
    assert.equal(r.status, 1);
    assert.match(r.stderr, /refusing to serve the API on tcp:\/\/0\.0\.0\.0:23750 without TLS/);
  });

  test("nothing left behind", () => {
    assert.deepEqual(leaks(), []);
    assert.ok(fs.existsSync(join(project, "package.json")));
  });
});
