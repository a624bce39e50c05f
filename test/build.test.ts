/**
 * `berth build` as a user runs it: the seeds' FROM / COPY / RUN / CMD image and its stacked layers,
 * the cache (reused, invalidated by content not times, kept across runs), multi-stage builds (only
 * what the target needs, stages side by side), heredocs, .dockerignore, ONBUILD, every
 * instruction's effect on the image's config and files, and bad input that leaves nothing behind.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { project, rootSkip, tempDir } from "./helpers.js";
import { berth, berthCommand, berthEnv, importBusybox, ok, removeContainersAndNetworking, type BerthEnv } from "./image-helpers.js";

let env: BerthEnv;
let runtimeRoot: string;
const b = (args: string[], input?: string) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot }, ...(input !== undefined ? { input } : {}) });

/** A context directory with these files (paths relative to it). */
function context(files: Record<string, string>): string {
  const dir = tempDir("berth-ctx-");
  for (const [name, body] of Object.entries(files)) {
    fs.mkdirSync(join(dir, name, ".."), { recursive: true });
    fs.writeFileSync(join(dir, name), body);
  }
  return dir;
}

const inspect = (ref: string, fmt: string) => ok(b(["image", "inspect", "-f", fmt, ref])).stdout.trim();
const run = (ref: string, ...cmd: string[]) => ok(b(["run", "--rm", ref, ...cmd])).stdout;

/** Nothing a build made may stay: no containers, no build snapshots or mounts, no temporary files. */
function assertClean(): void {
  assert.equal(b(["ps", "-aq"]).stdout.trim(), "", "no containers are left");
  const active = join(env.root, "snapshots/overlay/active");
  if (fs.existsSync(active)) assert.deepEqual(fs.readdirSync(active).filter((n) => n.startsWith("build-") || n.startsWith("tmp-")), [], "no build snapshots are left");
  const tmp = join(env.root, "tmp");
  if (fs.existsSync(tmp)) assert.deepEqual(fs.readdirSync(tmp), [], "no temporary files are left");
  const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8");
  assert.ok(!mounts.includes(env.root + "/tmp"), "no build mount is left");
}

describe("berth build", { skip: rootSkip }, () => {
  before(() => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
  });
  after(async () => {
    await removeContainersAndNetworking(env, runtimeRoot);
  });

  test("the seeds' FROM / COPY / RUN / CMD: an image of stacked layers that runs, its history the steps", () => {
    const dir = context({
      "hello.txt": "hello from the build context\n",
      Dockerfile: "FROM busybox\nCOPY hello.txt /app/hello.txt\nRUN cat /app/hello.txt | tee /app/copy && echo built >> /app/copy\nCMD [\"cat\", \"/app/copy\"]\n",
    });
    const r = ok(b(["build", "-t", "seed:v1", dir]));
    assert.match(r.stderr, /\[stage-0 3\/4\] RUN cat \/app\/hello.txt/);
    assert.match(r.stderr, /^#3 [\d.]+ hello from the build context$/m, "the RUN step's output is shown");
    const parent = inspect("seed:v1", "{{.Parent}}");
    assert.match(parent, /^sha256:[0-9a-f]{64}$/, "Parent is the previous step's image ID");
    assert.match(inspect(parent, "{{.Parent}}"), /^sha256:[0-9a-f]{64}$/);
    assert.equal(run("seed:v1"), "hello from the build context\nbuilt\n");
    // two new layers over busybox's one: COPY and RUN, each its own overlay lower dir
    assert.equal(JSON.parse(inspect("seed:v1", "{{json .RootFS.Layers}}")).length, 3);
    const history = ok(b(["history", "--no-trunc", "--format", "{{.CreatedBy}}", "seed:v1"])).stdout;
    assert.match(history, /^CMD \["cat" "\/app\/copy"\]$/m);
    assert.match(history, /^RUN \/bin\/sh -c cat \/app\/hello.txt \| tee \/app\/copy && echo built >> \/app\/copy # buildkit$/m);
    assert.match(history, /^COPY hello.txt \/app\/hello.txt # buildkit$/m);
    assert.deepEqual(JSON.parse(inspect("seed:v1", "{{json .Config.Cmd}}")), ["cat", "/app/copy"]);
    assertClean();
  });

  test("a rebuild with nothing changed comes from the cache: same image, every step CACHED, nothing run", () => {
    const dir = context({ "a.txt": "one\n", Dockerfile: "FROM busybox\nCOPY a.txt /a.txt\nRUN echo ran-the-step; cp /a.txt /b.txt\nLABEL x=y\n" });
    const first = ok(b(["build", "-q", dir])).stdout.trim();
    const again = ok(b(["build", dir]));
    assert.equal((again.stderr.match(/CACHED/g) ?? []).length, 2);
    assert.doesNotMatch(again.stderr, /^#\d+ [\d.]+ ran-the-step$/m);
    assert.equal(ok(b(["build", "-q", dir])).stdout.trim(), first, "the same image ID");
    // a new mtime with the same content is still a hit (docker: content, modes and owners count, not times)
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(join(dir, "a.txt"), later, later);
    assert.equal(ok(b(["build", "-q", dir])).stdout.trim(), first);
    // changed content: COPY and everything after it run again
    fs.writeFileSync(join(dir, "a.txt"), "two\n");
    const changed = ok(b(["build", "-t", "cache:changed", dir]));
    assert.equal((changed.stderr.match(/CACHED/g) ?? []).length, 0);
    assert.match(changed.stderr, /^#\d+ [\d.]+ ran-the-step$/m);
    assert.equal(run("cache:changed", "cat", "/b.txt"), "two\n");
    // a mode change is a change
    fs.chmodSync(join(dir, "a.txt"), 0o600);
    assert.doesNotMatch(ok(b(["build", dir])).stderr, /#2 CACHED/);
    // --no-cache runs everything
    assert.match(ok(b(["build", "--no-cache", dir])).stderr, /^#\d+ [\d.]+ ran-the-step$/m);
    // intermediate images are hidden from `images` (shown with -a), and builder prune removes them
    const all = ok(b(["images", "-a", "-q"])).stdout.trim().split("\n").length;
    const shown = ok(b(["images", "-q"])).stdout.trim().split("\n").length;
    assert.ok(all > shown, `images -a (${all}) lists the build's intermediate images, images (${shown}) does not`);
    assert.match(ok(b(["builder", "du"])).stdout, /Total:/);
    ok(b(["builder", "prune", "-f"]));
    assert.equal(ok(b(["images", "-a", "-q"])).stdout.trim().split("\n").length, shown);
    assert.equal(run("cache:changed", "cat", "/b.txt"), "two\n", "a tagged image survives builder prune");
    assert.doesNotMatch(ok(b(["build", dir])).stderr, /CACHED/, "the cache is gone");
    assertClean();
  });

  test("multi-stage: COPY --from a stage, only the stages the target needs are built, --target", () => {
    const dir = context({
      Dockerfile: [
        "FROM busybox AS gen",
        "RUN mkdir /out && echo generated > /out/file && chmod 750 /out/file",
        "FROM busybox AS broken",
        "RUN echo this stage is never needed; exit 3",
        "FROM busybox AS final",
        "COPY --from=gen /out/file /result",
        "CMD [\"cat\", \"/result\"]",
        "",
      ].join("\n"),
    });
    const r = ok(b(["build", "-t", "multi", dir]));
    assert.doesNotMatch(r.stderr, /never needed/, "an unused stage is not built");
    assert.equal(run("multi"), "generated\n");
    assert.equal(run("multi", "stat", "-c", "%a %u", "/result"), "750 0\n");
    const t = ok(b(["build", "-q", "--target", "gen", dir])).stdout.trim();
    assert.equal(run(t, "cat", "/out/file"), "generated\n");
    const failed = b(["build", "--target", "broken", dir]);
    assert.equal(failed.code, 3, "a failing RUN exits with its exit code");
    assert.match(failed.stderr, /process "\/bin\/sh -c echo this stage is never needed; exit 3" did not complete successfully: exit code: 3/);
    assert.match(b(["build", "--target", "nope", dir]).stderr, /target stage "nope" could not be found/);
    assertClean();
  });

  const debianLayout = join(project, "build/cache/debian-oci");
  const gccSkip = !/\bgcc\b/.test(fs.existsSync(join(debianLayout, ".source")) ? fs.readFileSync(join(debianLayout, ".source"), "utf8") : "") ? "the Debian test image with gcc was not built (scripts/make-debian-image.sh needs debootstrap and Debian's mirror)" : false;
  /** The Debian test image as debian:gcc, loaded once for the tests that need it. */
  let debianLoaded = false;
  const loadDebian = () => {
    if (debianLoaded) return;
    const tarball = join(tempDir("berth-debian-"), "debian.tar");
    spawnSync("tar", ["-C", debianLayout, "-cf", tarball, "."]);
    const loaded = ok(b(["load", "-i", tarball])).stdout;
    fs.rmSync(join(tarball, ".."), { recursive: true, force: true });
    ok(b(["tag", /Loaded image ID: (\S+)/.exec(loaded)![1]!, "debian:gcc"]));
    debianLoaded = true;
  };
  test("multi-stage: a C program compiled with Debian's gcc, only the binary copied into busybox", { skip: gccSkip }, () => {
    loadDebian();
    const dir = context({
      "hello.c": '#include <stdio.h>\nint main(int argc, char **argv) { printf("hello from C, %d args\\n", argc - 1); return 0; }\n',
      Dockerfile: "FROM debian:gcc AS compile\nWORKDIR /src\nCOPY hello.c .\nRUN gcc -static -O2 -o /hello hello.c && /hello a b\nFROM busybox\nCOPY --from=compile /hello /usr/local/bin/hello\nCMD [\"/usr/local/bin/hello\", \"x\"]\n",
    });
    const r = ok(b(["build", "-t", "hello-c", dir]));
    assert.match(r.stderr, /^#\d+ [\d.]+ hello from C, 2 args$/m, "the compiled program ran in its stage");
    assert.equal(run("hello-c"), "hello from C, 1 args\n");
    // busybox's layer and the binary's: none of the compiler's 300 MB
    assert.equal(JSON.parse(inspect("hello-c", "{{json .RootFS.Layers}}")).length, 2);
    assert.ok(Number(inspect("hello-c", "{{.Size}}")) < 20e6, "the image holds no compiler");
    assertClean();
  });

  const sshSkip = !fs.existsSync("/usr/bin/ssh-agent") ? "needs ssh-agent and ssh-keygen (openssh-client)" : false;
  test("RUN --mount=type=ssh: the agent of --ssh default or of key files, as a socket of the mount's owner and mode; gone after the step", { skip: sshSkip }, () => {
    const keys = tempDir("berth-ssh-");
    spawnSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "build-key", "-f", join(keys, "id")]);
    const agentSock = join(keys, "agent.sock");
    const agent = spawn("ssh-agent", ["-D", "-a", agentSock], { stdio: "ignore" });
    try {
      for (let i = 0; i < 200 && !fs.existsSync(agentSock); i++) spawnSync("sleep", ["0.01"]);
      const withAgent = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot, SSH_AUTH_SOCK: agentSock } });
      const dir = context({
        Dockerfile: [
          "FROM busybox",
          "RUN --mount=type=ssh test -S \"$SSH_AUTH_SOCK\" && ls -ln \"$SSH_AUTH_SOCK\" && echo at=$SSH_AUTH_SOCK",
          "RUN --mount=type=ssh,id=deploy,uid=1000,gid=1001,mode=0640,target=/tmp/deploy.sock ls -ln /tmp/deploy.sock && echo at=$SSH_AUTH_SOCK",
          "RUN --mount=type=ssh,id=absent ls /run/buildkit || echo no agent for absent",
          "",
        ].join("\n"),
        "Dockerfile.required": "FROM busybox\nRUN --mount=type=ssh,id=absent,required=true true\n",
      });
      const r = ok(withAgent(["build", "--progress", "plain", "--no-cache", "-t", "ssh:1", "--ssh", "default", "--ssh", `deploy=${join(keys, "id")}`, dir]));
      assert.match(r.stderr, /^#2 [\d.]+ srw------- +1 0 +0 .* \/run\/buildkit\/ssh_agent\.0$/m, "the default agent at BuildKit's path, root's, 0600");
      assert.match(r.stderr, /^#2 [\d.]+ at=\/run\/buildkit\/ssh_agent\.0$/m, "SSH_AUTH_SOCK names it");
      assert.match(r.stderr, /^#3 [\d.]+ srw-r----- +1 1000 +1001 .* \/tmp\/deploy\.sock$/m, "uid, gid and mode as the mount asks");
      assert.match(r.stderr, /^#3 [\d.]+ at=\/tmp\/deploy\.sock$/m);
      assert.match(r.stderr, /^#4 [\d.]+ no agent for absent$/m, "an id not given is no mount unless required");
      assert.equal(run("ssh:1", "sh", "-c", "ls /run /tmp/deploy.sock 2>&1 || true").includes("No such file"), true, "no socket or mount point stays in the image");
      const missing = b(["build", "-f", join(dir, "Dockerfile.required"), dir]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /no SSH key "absent" forwarded from the client/);
      if (!gccSkip) {
        // a real client: python3 in the Debian image asks each agent for its keys (SSH2_AGENTC_REQUEST_IDENTITIES)
        loadDebian();
        spawnSync("ssh-add", ["-q", join(keys, "id")], { env: { ...process.env, SSH_AUTH_SOCK: agentSock } });
        const ask = `python3 -c 'import socket,os,struct; s=socket.socket(socket.AF_UNIX); s.connect(os.environ["SSH_AUTH_SOCK"]); s.sendall(struct.pack(">IB",1,11)); d=s.recv(65536); print("answer",d[4],"keys",struct.unpack(">I",d[5:9])[0],d.decode("latin1").count("build-key"))'`;
        const py = context({ Dockerfile: `FROM debian:gcc\nRUN --mount=type=ssh ${ask}\nRUN --mount=type=ssh,id=deploy ${ask}\n` });
        const rr = ok(withAgent(["build", "--progress", "plain", "--no-cache", "--ssh", "default", "--ssh", `deploy=${join(keys, "id")}`, py]));
        assert.match(rr.stderr, /^#2 [\d.]+ answer 12 keys 1 1$/m, `the caller's agent answers through the socket: ${rr.stderr}`);
        assert.match(rr.stderr, /^#3 [\d.]+ answer 12 keys 1 1$/m, "an agent started for the key file holds it");
      }
      assertClean();
    } finally {
      agent.kill();
    }
  });

  test("independent stages build side by side", () => {
    const dir = context({
      Dockerfile: [
        "FROM busybox AS a",
        "RUN sleep 2; echo a > /a",
        "FROM busybox AS b",
        "RUN sleep 2; echo b > /b",
        "FROM busybox",
        "COPY --from=a /a /a",
        "COPY --from=b /b /b",
        "",
      ].join("\n"),
    });
    const t0 = Date.now();
    const id = ok(b(["build", "-q", dir])).stdout.trim();
    const took = Date.now() - t0;
    assert.equal(run(id, "cat", "/a", "/b"), "a\nb\n");
    assert.ok(took < 3800, `two 2-second stages took ${took} ms (one after the other would take over 4 s)`);
  });

  test("heredocs: RUN <<EOF scripts (with and without a shebang), COPY <<EOF files with variables", () => {
    const dir = context({
      Dockerfile: [
        "FROM busybox",
        "ARG WHO=world",
        "RUN <<EOF",
        "echo first > /h1",
        "echo second >> /h1",
        "EOF",
        "RUN <<EOT",
        "#!/bin/sh -e",
        "echo \"shebang $0\" > /h2",
        "EOT",
        "COPY <<-EOF /greeting",
        "\thello ${WHO}",
        "\tquoted \"stays\"",
        "\tEOF",
        "COPY <<'EOF' /literal",
        "no ${WHO} here",
        "EOF",
        "RUN cat <<EOF > /h3",
        "from cat",
        "EOF",
        "",
      ].join("\n"),
    });
    const id = ok(b(["build", "-q", "--build-arg", "WHO=berth", dir])).stdout.trim();
    assert.equal(run(id, "cat", "/h1"), "first\nsecond\n");
    assert.match(run(id, "cat", "/h2"), /^shebang \/dev\/pipes\/EOT$/m);
    assert.equal(run(id, "cat", "/greeting"), 'hello berth\nquoted "stays"\n');
    assert.equal(run(id, "cat", "/literal"), "no ${WHO} here\n");
    assert.equal(run(id, "cat", "/h3"), "from cat\n");
  });

  test(".dockerignore: ignored files stay out, ! exceptions come back, a COPY of an ignored file says so", () => {
    const dir = context({
      ".dockerignore": "# comment\n*.log\nsecret/\n**/*.tmp\n!keep.log\n",
      "app.txt": "app\n",
      "debug.log": "no\n",
      "keep.log": "kept\n",
      "secret/key": "no\n",
      "deep/a/b/x.tmp": "no\n",
      "deep/a/b/y.txt": "yes\n",
      Dockerfile: "FROM busybox\nCOPY . /ctx/\n",
    });
    const id = ok(b(["build", "-q", dir])).stdout.trim();
    const files = run(id, "find", "/ctx", "-type", "f").split("\n").filter(Boolean).sort();
    assert.deepEqual(files, ["/ctx/.dockerignore", "/ctx/Dockerfile", "/ctx/app.txt", "/ctx/deep/a/b/y.txt", "/ctx/keep.log"]);
    fs.writeFileSync(join(dir, "Dockerfile"), "FROM busybox\nCOPY debug.log /\n");
    const r = b(["build", dir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /debug.log" is excluded by .dockerignore/);
    // a Dockerfile's own <name>.dockerignore wins over the context's
    fs.writeFileSync(join(dir, "Other.Dockerfile"), "FROM busybox\nCOPY . /ctx/\n");
    fs.writeFileSync(join(dir, "Other.Dockerfile.dockerignore"), "app.txt\n");
    const id2 = ok(b(["build", "-q", "-f", join(dir, "Other.Dockerfile"), dir])).stdout.trim();
    assert.match(run(id2, "ls", "/ctx"), /debug\.log/);
    assert.doesNotMatch(run(id2, "ls", "/ctx"), /app\.txt/);
  });

  test("ONBUILD triggers run in the child build and are not inherited", () => {
    const base = context({ Dockerfile: "FROM busybox\nONBUILD COPY marker /from-onbuild\nONBUILD RUN echo triggered > /onbuild-ran\n" });
    ok(b(["build", "-t", "onbuild-base", base]));
    assert.deepEqual(JSON.parse(inspect("onbuild-base", "{{json .Config.OnBuild}}")), ["COPY marker /from-onbuild", "RUN echo triggered > /onbuild-ran"]);
    const child = context({ marker: "m\n", Dockerfile: "FROM onbuild-base\n" });
    ok(b(["build", "-t", "onbuild-child", child]));
    assert.equal(run("onbuild-child", "cat", "/from-onbuild", "/onbuild-ran"), "m\ntriggered\n");
    assert.equal(inspect("onbuild-child", "{{json .Config.OnBuild}}"), "null");
  });

  test("every instruction: the config docker would build, users looked up in the image, ADD unpacks archives", () => {
    const tarDir = tempDir("berth-tar-");
    fs.mkdirSync(join(tarDir, "pkg"));
    fs.writeFileSync(join(tarDir, "pkg/inside.txt"), "from the archive\n");
    const dir = context({
      "file.txt": "f\n",
      Dockerfile: [
        "# syntax=docker/dockerfile:1",
        "ARG BASE=busybox",
        "FROM ${BASE}",
        "MAINTAINER someone@example.com",
        "ARG VERSION=1.0",
        "ENV APP_HOME=/srv/app \\",
        "    MODE=\"two words\"",
        "LABEL org.example.version=$VERSION description=\"a test image\"",
        "EXPOSE 8080 53/udp 9000-9001",
        "WORKDIR $APP_HOME",
        "WORKDIR sub",
        "COPY --chown=nobody:nogroup --chmod=0640 file.txt ./owned.txt",
        "ADD pkg.tar.gz /unpacked/",
        "RUN echo \"$MODE|$VERSION|$(pwd)\" > /env-seen",
        "SHELL [\"/bin/sh\", \"-e\", \"-c\"]",
        "RUN echo shell-form-through-SHELL > /shell",
        "USER nobody",
        "RUN id -u > /tmp/uid",
        "VOLUME /data",
        "STOPSIGNAL SIGQUIT",
        "HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD true",
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]",
        "CMD [\"echo default\"]",
        "",
      ].join("\n"),
    });
    spawnSync("tar", ["-C", tarDir, "-czf", join(dir, "pkg.tar.gz"), "pkg"]);
    const r = ok(b(["build", "-t", "every", "--build-arg", "VERSION=2.5", "--label", "from-cli=yes", dir]));
    assert.match(r.stderr, /syntax directive .* is ignored/);
    const cfg = JSON.parse(inspect("every", "{{json .Config}}"));
    assert.ok(cfg.Env.includes("APP_HOME=/srv/app") && cfg.Env.includes("MODE=two words"));
    assert.equal(cfg.WorkingDir, "/srv/app/sub");
    assert.equal(cfg.User, "nobody");
    assert.deepEqual(Object.keys(cfg.ExposedPorts).sort(), ["53/udp", "8080/tcp", "9000/tcp", "9001/tcp"]);
    assert.deepEqual(Object.keys(cfg.Volumes), ["/data"]);
    assert.equal(cfg.StopSignal, "SIGQUIT");
    assert.deepEqual(cfg.Healthcheck, { Test: ["CMD-SHELL", "true"], Interval: 5e9, Timeout: 2e9, Retries: 4 });
    assert.deepEqual(cfg.Entrypoint, ["/bin/sh", "-c"]);
    assert.deepEqual(cfg.Cmd, ["echo default"]);
    assert.deepEqual(cfg.Labels, { "org.example.version": "2.5", description: "a test image", "from-cli": "yes" });
    assert.equal(inspect("every", "{{.Author}}"), "someone@example.com");
    assert.equal(run("every"), "default\n");
    assert.equal(run("every", "cat /env-seen"), "two words|2.5|/srv/app/sub\n");
    assert.equal(run("every", "cat /shell"), "shell-form-through-SHELL\n");
    assert.equal(run("every", "cat /tmp/uid"), "65534\n");
    assert.equal(run("every", "stat -c '%U:%G %a' /srv/app/sub/owned.txt"), "nobody:nogroup 640\n");
    assert.equal(run("every", "cat /unpacked/pkg/inside.txt"), "from the archive\n");
    // build args reach RUN as environment but not the image
    assert.ok(!cfg.Env.some((e: string) => e.startsWith("VERSION=")));
  });

  test("RUN --mount=type=cache persists between builds; tmpfs and secret mounts leave nothing in the image", () => {
    const secret = join(tempDir("berth-secret-"), "token");
    fs.writeFileSync(secret, "s3cret\n");
    const dir = context({
      Dockerfile: [
        "FROM busybox",
        "ARG RUNID",
        "RUN --mount=type=cache,target=/var/cache/thing echo $RUNID >> /var/cache/thing/runs; wc -l < /var/cache/thing/runs > /runs",
        "RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/y && ls /scratch > /saw-tmpfs",
        "RUN --mount=type=secret,id=token cat /run/secrets/token > /secret-len-src && wc -c < /run/secrets/token > /secret-len && rm /secret-len-src",
        "",
      ].join("\n"),
    });
    const one = ok(b(["build", "-q", "--build-arg", "RUNID=1", "--secret", `id=token,src=${secret}`, dir])).stdout.trim();
    const two = ok(b(["build", "-q", "--build-arg", "RUNID=2", "--secret", `id=token,src=${secret}`, dir])).stdout.trim();
    assert.equal(run(one, "cat", "/runs").trim(), "1");
    assert.equal(run(two, "cat", "/runs").trim(), "2", "the second build saw the first one's cache");
    assert.equal(run(two, "cat", "/saw-tmpfs"), "y\n");
    assert.equal(run(two, "cat", "/secret-len").trim(), "7");
    const listing = run(two, "sh", "-c", "ls -d /var/cache/thing /scratch /run/secrets 2>&1; true");
    assert.doesNotMatch(listing, /^\/(var\/cache\/thing|scratch|run\/secrets)$/m, "mount points are not part of the image");
    assertClean();
  });

  test("RUN --mount=type=bind: the context read-only, rw writes thrown away, a symlink out of the context refused, from= a stage", () => {
    const dir = context({
      "data/in.txt": "from the context\n",
      Dockerfile: [
        "FROM busybox AS other",
        "RUN echo from a stage > /made",
        "FROM busybox",
        "RUN --mount=type=bind,source=data,target=/ctx cat /ctx/in.txt > /seen && (echo x > /ctx/new 2>/dev/null && echo writable || echo read-only) >> /seen",
        "RUN --mount=type=bind,source=data,target=/ctx,rw echo scribble > /ctx/in.txt && echo rw-ok >> /seen",
        "RUN --mount=type=bind,from=other,source=/made,target=/m cat /m >> /seen",
        "",
      ].join("\n"),
    });
    const id = ok(b(["build", "-q", dir])).stdout.trim();
    assert.equal(run(id, "cat", "/seen"), "from the context\nread-only\nrw-ok\nfrom a stage\n");
    assert.equal(fs.readFileSync(join(dir, "data/in.txt"), "utf8"), "from the context\n", "an rw bind never writes to the context");
    assert.ok(!fs.existsSync(join(dir, "data/new")));
    const out = context({ Dockerfile: "FROM busybox\nRUN --mount=type=bind,source=hostetc,target=/h,rw echo owned > /h/berth-escape-test\n" });
    fs.symlinkSync("/etc", join(out, "hostetc"));
    const r = b(["build", out]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /outside the build context/);
    assert.ok(!fs.existsSync("/etc/berth-escape-test"), "nothing was written to the host's /etc");
    assertClean();
  });

  test("bad input: a clear error naming the line, and nothing left behind", () => {
    const cases: [string, Record<string, string>, RegExp][] = [
      ["unknown instruction", { Dockerfile: "FROM busybox\nFROB x\n" }, /Dockerfile:2:1: unknown instruction: FROB/],
      ["missing source", { Dockerfile: "FROM busybox\nCOPY nothere /x\n" }, /file not found in build context.*nothere/],
      ["outside the context", { Dockerfile: "FROM busybox\nCOPY ../x /x\n" }, /outside the build context/],
      ["unknown stage", { Dockerfile: "FROM busybox\nCOPY --from=nostage /x /y\n" }, /nostage/],
      ["no FROM", { Dockerfile: "RUN true\n" }, /must come after FROM|no FROM/],
      ["several sources, no slash", { "a": "1", "b": "2", Dockerfile: "FROM busybox\nCOPY a b /dest\n" }, /must be a directory and end with a \//],
      ["unterminated heredoc", { Dockerfile: "FROM busybox\nRUN <<EOF\necho\n" }, /unterminated heredoc EOF/],
      // a RUN that fails before its process exists: its mount, snapshot and files go too (assertClean)
      ["an unknown user for a RUN", { Dockerfile: "FROM busybox\nUSER nosuchuser\nRUN true\n" }, /nosuchuser/],
    ];
    for (const [what, files, re] of cases) {
      const r = b(["build", context(files)]);
      assert.notEqual(r.code, 0, what);
      assert.match(r.stderr, re, what);
    }
    const link = context({ Dockerfile: "FROM busybox\nCOPY out /x\n" });
    fs.symlinkSync("/etc/passwd", join(link, "out"));
    assert.match(b(["build", link]).stderr, /outside the build context/);
    assertClean();
  });

  test("contexts from stdin: a tar, and a Dockerfile alone; --output writes the files", () => {
    const dir = context({ "f.txt": "from a tar context\n", Dockerfile: "FROM busybox\nCOPY f.txt /f.txt\n" });
    const tar = spawnSync("tar", ["-C", dir, "-cz", "."]).stdout;
    const r = berth(env, ["build", "-q", "-"], { input: tar, extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
    ok(r);
    assert.equal(run(r.stdout.trim(), "cat", "/f.txt"), "from a tar context\n");
    const alone = ok(b(["build", "-q", "-"], "FROM busybox\nRUN echo no context > /n\n")).stdout.trim();
    assert.equal(run(alone, "cat", "/n"), "no context\n");
    const out = tempDir("berth-out-");
    ok(b(["build", "-q", "-o", join(out, "files"), dir]));
    assert.equal(fs.readFileSync(join(out, "files/f.txt"), "utf8"), "from a tar context\n");
    assert.ok(fs.existsSync(join(out, "files/bin/busybox")));
    ok(b(["build", "-q", "--output", `type=tar,dest=${join(out, "img.tar")}`, dir]));
    assert.match(spawnSync("tar", ["-tf", join(out, "img.tar")], { encoding: "utf8" }).stdout, /^\.?\/?f\.txt$/m);
    assertClean();
  });

  test("on a terminal: BuildKit's view redrawn in place, a running step's last lines, FINISHED; a failure shows the step's output", { skip: !fs.existsSync("/usr/bin/script") && "needs script (bsdutils)" }, () => {
    const dir = context({ Dockerfile: "FROM busybox\nRUN for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 0.1; done\n", "Dockerfile.bad": "FROM busybox\nRUN echo about to fail; exit 3\n" });
    const underTerminal = (args: string[]) => {
      const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, BERTH_RUNTIME_ROOT: runtimeRoot };
      delete e.NODE_EXTRA_CA_CERTS;
      const cmd = [process.execPath, ...berthCommand(), ...args].map((a) => `'${a}'`).join(" ");
      const r = spawnSync("script", ["-qec", `stty cols 100 rows 30; ${cmd}`, "/dev/null"], { env: e, encoding: "utf8", timeout: 60_000 });
      // the frames as a terminal shows them one after another: each redraw starts by moving up
      return { status: r.status, frames: r.stdout.split(/\x1b\[\d+A\r/).map((f) => f.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "")) };
    };
    const good = underTerminal(["build", "--no-cache", "-t", "tty:1", dir]);
    assert.equal(good.status, 0, good.frames.join("\n---\n"));
    assert.ok(good.frames.length > 3, `the view is redrawn while the step runs (${good.frames.length} frames)`);
    const live = good.frames.find((f) => /=> => # line 3\n/.test(f) && !/line 8/.test(f));
    assert.ok(live, "a frame shows the running step's output as it comes");
    assert.match(live!, /^\[\+\] Building [\d.]+s \(1\/2\)/m);
    assert.match(live!, /^ => \[stage-0 2\/2\] RUN for i in/m);
    const last = good.frames[good.frames.length - 1]!;
    assert.match(last, /^\[\+\] Building [\d.]+s \(2\/2\) FINISHED/m);
    assert.doesNotMatch(last, /=> => # line/, "a finished step's output is folded away");
    assert.match(last, /=> => naming to docker\.io\/library\/tty:1/);
    const bad = underTerminal(["build", "-f", join(dir, "Dockerfile.bad"), dir]);
    assert.equal(bad.status, 3);
    const end = bad.frames[bad.frames.length - 1]!;
    assert.match(end, /=> ERROR \[stage-0 2\/2\] RUN echo about to fail; exit 3/);
    assert.match(end, /------\n > \[stage-0 2\/2\] RUN echo about to fail; exit 3:\nabout to fail\n------\n/);
    assert.match(end, /ERROR: failed to solve: process "\/bin\/sh -c echo about to fail; exit 3" did not complete successfully: exit code: 3/);
    assertClean();
  });

  test("COPY --parents keeps the source's directories (all of them, or those after a /./ pivot), and its history says so", () => {
    const dir = context({ "x/a.txt": "xa\n", "x/y/a.txt": "xya\n", "x/y/b.md": "xyb\n", "z/c.txt": "z\n",
      Dockerfile: "FROM busybox\nCOPY --parents x/a.txt z/c.txt /p1/\nCOPY --parents ./x/./y/*.txt /p2/\nCOPY --parents x/y /p3/\nCOPY --parents **/*.txt /p4/\nCOPY x/a.txt z/c.txt /flat/\n" });
    ok(b(["build", "-q", "-t", "parents:1", dir]));
    const files = run("parents:1", "find", "/p1", "/p2", "/p3", "/p4", "/flat", "-type", "f").trim().split("\n").sort();
    assert.deepEqual(files, ["/flat/a.txt", "/flat/c.txt", "/p1/x/a.txt", "/p1/z/c.txt", "/p2/y/a.txt", "/p3/x/y/a.txt", "/p3/x/y/b.md", "/p4/x/a.txt", "/p4/x/y/a.txt", "/p4/z/c.txt"]);
    assert.equal(run("parents:1", "cat", "/p2/y/a.txt"), "xya\n");
    assert.match(ok(b(["history", "--no-trunc", "parents:1"])).stdout, /COPY --parents x\/a\.txt z\/c\.txt \/p1\/ # buildkit/);
    assertClean();
  });

  test("--cache-from: an image built elsewhere, saved and loaded, serves the steps whose inputs match (its layers reused, no step run)", () => {
    const dir = context({ "a.txt": "a\n", "b.txt": "b\n", Dockerfile: "FROM busybox\nWORKDIR /app\nCOPY a.txt .\nRUN echo ran-one; echo one > /one\nCOPY b.txt .\nRUN echo ran-two; cat /app/a.txt /app/b.txt > /both\nCMD [\"cat\", \"/both\"]\n" });
    ok(b(["build", "-q", "-t", "cached:src", dir]));
    const tarball = join(tempDir("berth-cachefrom-"), "images.tar");
    ok(b(["save", "-o", tarball, "cached:src", "busybox"]));
    // another store: only the saved images (the build cache of the first store is not there)
    const other = berthEnv();
    const o = (args: string[]) => berth(other, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
    assert.match(ok(o(["load", "-i", tarball])).stdout, /Loaded image: cached:src\n[^]*Loaded image: busybox:latest/, "both images load (they share busybox's layer)");
    const layers = (e: (a: string[]) => ReturnType<typeof b>, ref: string) => ok(e(["image", "inspect", "-f", "{{json .RootFS.Layers}}", ref])).stdout.trim();
    const hit = ok(o(["build", "--progress", "plain", "--cache-from", "cached:src", "-t", "cached:dst", dir]));
    assert.equal((hit.stderr.match(/^#\d+ CACHED$/gm) ?? []).length, 5, hit.stderr);
    assert.doesNotMatch(hit.stderr, /^#\d+ [\d.]+ ran-(one|two)$/m, "no RUN step ran");
    assert.equal(layers(o, "cached:dst"), layers(b, "cached:src"), "the same layers");
    assert.equal(ok(o(["run", "--rm", "cached:dst"])).stdout, "a\nb\n");
    // a changed source: the steps before it still come from the image, it and those after run
    fs.writeFileSync(join(dir, "b.txt"), "b changed\n");
    const part = ok(o(["build", "--progress", "plain", "--cache-from", "cached:src", "-t", "cached:dst2", dir]));
    assert.equal((part.stderr.match(/^#\d+ CACHED$/gm) ?? []).length, 3, part.stderr);
    assert.doesNotMatch(part.stderr, /^#\d+ [\d.]+ ran-one$/m);
    assert.match(part.stderr, /^#\d+ [\d.]+ ran-two$/m);
    assert.equal(ok(o(["run", "--rm", "cached:dst2"])).stdout, "a\nb changed\n");
    // without --cache-from nothing of the loaded image is used; an image not in the store is a warning
    fs.writeFileSync(join(dir, "b.txt"), "b\n");
    const other2 = berthEnv();
    ok(berth(other2, ["load", "-i", tarball]));
    const cold = ok(berth(other2, ["build", "--progress", "plain", "--cache-from", "nosuch:image", dir], { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } }));
    assert.doesNotMatch(cold.stderr, /CACHED/);
    assert.match(cold.stderr, /WARNING: --cache-from nosuch:image: no such image in the store/);
    assert.equal(ok(o(["ps", "-aq"])).stdout.trim(), "");
    assertClean();
  });
});
