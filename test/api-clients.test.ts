/**
 * Real API clients other than the docker CLI, unchanged, against `berth system service` on a socket
 * and store of the test's own: dockerode and testcontainers (npm), docker-py and docker-compose 1.29 (Debian).
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { PassThrough } from "node:stream";
import { httpGet, project, rootSkip, tempDir, waitFor } from "./helpers.js";
import { berth, berthEnv, importBusybox, removeNetworking, type BerthEnv } from "./image-helpers.js";

const compose = ["/usr/bin/docker-compose"].find((p) => fs.existsSync(p));
let env: BerthEnv;
let runtimeRoot: string;
let sock: string;
let service: ChildProcess | undefined;
const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });

async function dockerode(): Promise<typeof import("dockerode") | undefined> {
  try {
    return (await import("dockerode")).default as unknown as typeof import("dockerode");
  } catch {
    return undefined;
  }
}

describe("API clients: dockerode and docker-compose", { skip: rootSkip }, () => {
  before(async () => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
    sock = join(tempDir("berth-test-api-"), "berth.sock");
    const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_RUNTIME_ROOT: runtimeRoot };
    delete e.NODE_EXTRA_CA_CERTS;
    service = spawn(process.execPath, [join(project, "dist/berth-api.cjs"), "--root", env.root, `unix://${sock}`], { env: e, stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    service.stderr!.on("data", (d) => (stderr += d));
    await waitFor(() => stderr.includes("listening") || service!.exitCode !== null, "the API service", 20_000, 50);
    assert.equal(service.exitCode, null, stderr);
  });
  after(async () => {
    const ids = b(["ps", "-aq"]).stdout.trim().split("\n").filter(Boolean);
    if (ids.length) b(["rm", "-f", ...ids]);
    if (service && service.exitCode === null) await new Promise((r) => (service!.once("exit", r), service!.kill("SIGTERM")));
    await removeNetworking(env, runtimeRoot);
  });

  test("dockerode: create, start, attach, exec, logs, stats, remove", async (t) => {
    const Docker = await dockerode();
    if (!Docker) return t.skip("dockerode is not installed (npm ci installs it)");
    const d = new Docker({ socketPath: sock });
    const c = await d.createContainer({ Image: "busybox", Cmd: ["sh", "-c", "echo ready; read line; echo got:$line; sleep 1000"], OpenStdin: true, StdinOnce: false, Labels: { suite: "dockerode" } });
    const stream = await c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true });
    const out = new PassThrough();
    let text = "";
    out.on("data", (x: Buffer) => (text += x.toString()));
    d.modem.demuxStream(stream, out, out);
    await c.start();
    await waitFor(() => text.includes("ready"), "the container's first line", 10_000);
    stream.write("hello\n");
    await waitFor(() => text.includes("got:hello"), "the echo of stdin", 10_000);
    const info = await c.inspect();
    assert.equal(info.State.Running, true);
    assert.equal(info.Config.Labels.suite, "dockerode");
    const list = await d.listContainers({ filters: { label: ["suite=dockerode"] } });
    assert.deepEqual(list.map((x) => x.Id), [c.id]);
    const exec = await c.exec({ Cmd: ["sh", "-c", "echo from-exec; exit 5"], AttachStdout: true, AttachStderr: true });
    const es = await exec.start({ hijack: true, stdin: false });
    let etext = "";
    const eout = new PassThrough();
    eout.on("data", (x: Buffer) => (etext += x.toString()));
    d.modem.demuxStream(es, eout, eout);
    await new Promise((r) => es.on("end", r));
    await waitFor(() => true, "", 1);
    const ei = await exec.inspect();
    assert.equal(etext, "from-exec\n");
    assert.equal(ei.ExitCode, 5);
    // with a terminal: one raw stream, and a resize while it runs reaches the process's terminal
    const texec = await c.exec({ Cmd: ["sh", "-c", "stty size; while [ \"$(stty size)\" = '24 80' ]; do sleep 0.05; done; stty size; exit 3"], AttachStdout: true, Tty: true, ConsoleSize: [24, 80] } as Parameters<typeof c.exec>[0]);
    const ts = await texec.start({ hijack: true, stdin: false, Tty: true });
    let ttext = "";
    ts.on("data", (x: Buffer) => (ttext += x.toString()));
    await waitFor(() => ttext.includes("24 80"), "the exec's first size");
    await texec.resize({ h: 40, w: 120 });
    await new Promise((r) => ts.on("end", r));
    await waitFor(() => true, "", 1);
    assert.match(ttext, /^24 80\r\n40 120\r\n$/, JSON.stringify(ttext));
    assert.equal((await texec.inspect()).ExitCode, 3);
    const logs = (await c.logs({ stdout: true, stderr: true, follow: false })) as unknown as Buffer;
    assert.match(logs.toString("latin1"), /ready/);
    const stats = (await c.stats({ stream: false })) as unknown as { memory_stats: { usage: number }; cpu_stats: { cpu_usage: { total_usage: number } } };
    assert.ok(stats.memory_stats.usage > 0 && stats.cpu_stats.cpu_usage.total_usage > 0, JSON.stringify(stats).slice(0, 200));
    await c.remove({ force: true });
    await assert.rejects(c.inspect(), (e: { statusCode?: number }) => e.statusCode === 404);
  });

  test("testcontainers: exposed port, environment, log and HTTP wait strategies, exec, copyFilesToContainer, a network", async (t) => {
    let tc: typeof import("testcontainers");
    try {
      tc = await import("testcontainers");
    } catch {
      return t.skip("testcontainers is not installed (npm ci installs it)");
    }
    // its reaper's image cannot be had offline; the test removes what it made itself
    Object.assign(process.env, { DOCKER_HOST: `unix://${sock}`, TESTCONTAINERS_RYUK_DISABLED: "true", TESTCONTAINERS_HOST_OVERRIDE: "127.0.0.1" });
    const network = await new tc.Network().start();
    const host = tempDir("berth-test-tc-");
    fs.writeFileSync(join(host, "index.html"), "served by testcontainers on berth\n");
    const web = await new tc.GenericContainer("busybox")
      .withEnvironment({ GREETING: "hi" })
      .withExposedPorts(80)
      .withNetwork(network)
      .withNetworkAliases("web")
      .withCopyFilesToContainer([{ source: join(host, "index.html"), target: "/www/index.html" }])
      .withCommand(["sh", "-c", "echo server starting; exec httpd -f -p 80 -h /www"])
      .withWaitStrategy(tc.Wait.forAll([tc.Wait.forLogMessage("server starting"), tc.Wait.forHttp("/", 80)]))
      .start();
    try {
      const url = `http://${web.getHost()}:${web.getMappedPort(80)}/`;
      assert.equal(await httpGet(web.getMappedPort(80)).catch((e) => String(e)), "served by testcontainers on berth\n", url);
      const e = await web.exec(["sh", "-c", "echo $GREETING; cat /www/index.html"]);
      assert.equal(e.exitCode, 0);
      assert.equal(e.output, "hi\nserved by testcontainers on berth\n");
      const client = await new tc.GenericContainer("busybox").withNetwork(network).withCommand(["sleep", "1000"]).start();
      try {
        const r = await client.exec(["wget", "-qO-", "http://web/"]);
        assert.equal(r.output, "served by testcontainers on berth\n", "reached by its alias on the network");
      } finally {
        await client.stop();
      }
    } finally {
      await web.stop();
      await network.stop();
    }
    assert.equal(b(["ps", "-aq"]).stdout, "", "stop removes the containers");
  });

  const dockerPy = spawnSync("/usr/bin/python3", ["-c", "import docker"]).status === 0;
  test("docker-py: exec_run with tty, stream, demux and detach in their combinations; run, logs, remove", { skip: !dockerPy && "needs Debian's python3-docker (npm test installs it as root)" }, () => {
    const r = spawnSync("/usr/bin/python3", [join(project, "test/fixtures/docker-py-exec.py"), sock], { encoding: "utf8", timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout) as Record<string, unknown>;
    // stdout and stderr are two pipes: the order of their lines in one stream is not fixed (nor with dockerd)
    const lines = (x: unknown) => String(x).split("\n").filter(Boolean).sort();
    assert.equal((got.plain as [number, string])[0], 3);
    assert.deepEqual(lines((got.plain as [number, string])[1]), ["err", "out"]);
    assert.deepEqual(got.demux, [3, ["out\n", "err\n"]]);
    assert.equal((got.tty as [number, string])[0], 3);
    assert.deepEqual(lines((got.tty as [number, string])[1].replace(/\r/g, "")), ["err", "out"], "one terminal, both streams on it");
    assert.deepEqual(lines(got.stream), ["err", "out"]);
    assert.deepEqual(got.stream_demux, ["out\n", "err\n"]);
    assert.deepEqual(got.detach, [null, ""], "exec -d answers at once");
    assert.equal(got.detached_ran, "detached\n");
    assert.equal(got.status, "running");
    assert.equal(got.logs, "hello py\n");
    assert.ok((got.list_tags as string[]).includes("busybox:latest"), `image names as dockerd writes them: ${JSON.stringify(got.list_tags)}`);
    assert.deepEqual(got.inspect_tags, ["busybox:latest"]);
  });

  test("docker-compose: a healthy service another depends on, one reaching the others by name, a named volume and a published port; up, ps, logs, exec, scale, down -v", { skip: !compose && "needs Debian's docker-compose (npm test installs it as root)" }, async () => {
    const dir = tempDir("berth-test-compose-");
    const port = 18000 + (process.pid % 1000);
    fs.writeFileSync(
      join(dir, "docker-compose.yml"),
      `version: "2.4"
services:
  web:
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello from compose > /www/index.html && httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:${port}:80"]
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD", "wget", "-qO-", "http://127.0.0.1/"]
      interval: 1s
      retries: 20
  app:
    image: busybox
    command: ["sh", "-c", "wget -qO- http://web/ > /data/fetched; exec sleep 1000"]
    volumes: ["data:/data"]
    depends_on:
      web:
        condition: service_healthy
  worker:
    image: busybox
    command: ["sleep", "1000"]
volumes:
  data: {}
`,
    );
    const run = (args: string[]) => spawnSync(compose!, ["-p", "berthtest", ...args], { cwd: dir, env: { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: dir }, encoding: "utf8", timeout: 120_000 });
    const ok = (args: string[]) => {
      const r = run(args);
      assert.equal(r.status, 0, `docker-compose ${args.join(" ")}: ${r.stderr}${r.stdout}`);
      return r;
    };
    ok(["up", "-d"]);
    let body = "";
    for (let i = 0; i < 50 && !body; i++) body = await httpGet(port).catch(() => "");
    assert.equal(body, "hello from compose\n");
    assert.match(ok(["ps"]).stdout, /berthtest_web_1 .*Up \(healthy\)/);
    assert.equal(ok(["exec", "-T", "app", "cat", "/data/fetched"]).stdout, "hello from compose\n");
    assert.match(ok(["logs", "web"]).stdout + run(["logs", "web"]).stderr, /web_1/);
    ok(["up", "-d", "--scale", "worker=2"]);
    assert.equal((b(["ps", "--filter", "label=com.docker.compose.service=worker", "-q"]).stdout.trim().split("\n").filter(Boolean)).length, 2);
    ok(["down", "-v"]);
    assert.equal(b(["ps", "-aq"]).stdout, "", "no container left");
    assert.doesNotMatch(b(["volume", "ls", "-q"]).stdout, /berthtest/);
    assert.doesNotMatch(b(["network", "ls"]).stdout, /berthtest/);
  });
  test("docker-compose build: a service built from a Dockerfile through POST /build, then run", { skip: !compose && "needs Debian's docker-compose (npm test installs it as root)" }, () => {
    const dir = tempDir("berth-test-compose-build-");
    fs.mkdirSync(join(dir, "app"));
    fs.writeFileSync(join(dir, "app/Dockerfile"), "FROM busybox\nARG GREETING=hi\nRUN echo \"$GREETING from a compose build\" > /greeting\nCMD [\"cat\", \"/greeting\"]\n");
    fs.writeFileSync(join(dir, "docker-compose.yml"), "version: '3'\nservices:\n  built:\n    build:\n      context: ./app\n      args:\n        GREETING: hello\n    image: berthtest/built:1\n");
    const run = (args: string[]) => spawnSync(compose!, ["-p", "berthbuild", ...args], { cwd: dir, env: { PATH: process.env.PATH ?? "", DOCKER_HOST: `unix://${sock}`, HOME: dir }, encoding: "utf8", timeout: 120_000 });
    const built = run(["build"]);
    assert.equal(built.status, 0, `docker-compose build: ${built.stderr}${built.stdout}`);
    const up = run(["run", "--rm", "built"]);
    assert.equal(up.status, 0, up.stderr);
    assert.equal(up.stdout.trim(), "hello from a compose build");
    assert.equal(b(["run", "--rm", "berthtest/built:1"]).stdout, "hello from a compose build\n");
    run(["down"]);
  });
});
