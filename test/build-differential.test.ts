/**
 * `berth build` against the builders users compare it with: dockerd 20.10's BuildKit and its legacy
 * builder (a private dockerd, no bridge) and `podman build`, on the same Dockerfiles, context and
 * busybox image. Each result's files (path, type, mode, owner, content digest or link target) and
 * its config fields are compared with BuildKit's, entry by entry. Where docker's two builders
 * disagree with each other, berth follows BuildKit; the disagreements are asserted too, so a change
 * on either side shows.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { extract } from "tar-stream";
import { rootSkip, tempDir, which } from "./helpers.js";
import { berth, berthCommand, berthEnv, importBusybox, ok, removeContainersAndNetworking, type BerthEnv } from "./image-helpers.js";

const dockerCli = existsSync("/usr/bin/docker") ? "/usr/bin/docker" : which("docker");
const podmanSkip = !which("podman") ? "needs podman" : false;
// State directories podman makes on its own: removed after if they were not here before.
const podmanDirs = ["/run/containers", "/run/libpod", "/var/lib/cni", "/var/lib/containers", "/run/crun", "/etc/cni/net.d/87-podman-bridge.conflist"];
const skip = rootSkip || (!which("dockerd") || !dockerCli ? "needs Debian's docker.io (dockerd and the docker CLI)" : false);

/** Every instruction whose effect docker 20.10's built-in frontends both understand. */
const MAIN = `ARG BASE=busybox
FROM \${BASE} AS base
ARG V=7
ENV A=one B="two words" C=\${V}x
LABEL org.example.v=$V note="x y"
WORKDIR /app/sub
COPY a.txt ./
COPY --chown=7:8 b.txt /app/b.txt
COPY dir/ /app/dir/
COPY dir /app/dir2
COPY *.md /docs/
COPY link /app/
ADD files.tar.gz /extract/
ADD plain.txt /added/renamed.txt
RUN echo "$A|$B|$C|$V" > /app/env.txt && mkdir -p /var/made && chmod 0750 /var/made && ln -s /app/env.txt /app/symlink && rm /app/sub/a.txt && chown 3:4 /var/made
RUN ["/bin/sh", "-c", "echo exec-form > /exec.txt; touch /app/dir/removed-later"]
RUN rm /app/dir/removed-later /app/dir/one.txt && rmdir /app/dir/empty
USER 1000:1000
WORKDIR /home/user
USER root
EXPOSE 80 443/udp
VOLUME ["/data", "/logs"]
SHELL ["/bin/sh", "-ec"]
RUN echo shell > /shell.txt
HEALTHCHECK --interval=5s --timeout=2s --retries=4 CMD true
STOPSIGNAL SIGTERM
ONBUILD RUN echo hi
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hello"]
`;

const MULTI = `FROM busybox AS build
RUN mkdir -p /out/sub && echo x > /out/x && echo y > /out/sub/y && chmod 0600 /out/sub/y
FROM busybox AS unused
RUN false
FROM busybox
COPY --from=build /out /copied
COPY --from=build --chown=5:6 /out/x /xfile
COPY --from=build /out/sub/ /flat/
COPY --from=build --chmod=0751 /out/x /mode
ENV PATH=/copied:$PATH
CMD ["cat", "/xfile"]
`;

/** A file tree summary of an exported container, one line per entry; runtime-made files left out. */
async function summarize(tarball: Buffer): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on("entry", (h, stream, next) => {
      const hash = createHash("sha256");
      stream.on("data", (d) => hash.update(d as Buffer));
      stream.on("end", () => {
        const name = h.name.replace(/^\.?\//, "").replace(/\/$/, "");
        const what = h.type === "file" ? `sha256:${hash.digest("hex").slice(0, 16)}` : h.type === "symlink" ? `-> ${h.linkname}` : h.type === "link" ? `=> ${h.linkname}` : "";
        if (name && !runtimeMade(name)) out.set(name, `${h.type} ${(h.mode! & 0o7777).toString(8).padStart(4, "0")} ${h.uid}:${h.gid} ${what}`.trim());
        next();
      });
      stream.on("error", reject);
    });
    ex.on("finish", resolve);
    ex.on("error", reject);
  });
  ex.end(tarball);
  await done;
  return out;
}

/** What the runtime of each engine adds to a created container (mount points, marker files). */
function runtimeMade(name: string): boolean {
  return /^(dev|proc|sys|run)(\/|$)/.test(name) || [".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "etc/mtab"].includes(name);
}

function differences(a: Map<string, string>, b: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [k, v] of a) if (b.get(k) !== v) out.push(`${k}: ${v} | ${b.get(k) ?? "(missing)"}`);
  for (const [k, v] of b) if (!a.has(k)) out.push(`${k}: (missing) | ${v}`);
  return out.sort();
}

/** Where builders that commit containers (docker's legacy one, buildah) differ from BuildKit on MAIN. */
const COMMITTED_VS_BUILDKIT = ["data: directory 0755 0:0 | (missing)", "home/user: directory 0755 0:0 | directory 0755 1000:1000", "logs: directory 0755 0:0 | (missing)"];

const CONFIG_FIELDS = ["Cmd", "Entrypoint", "Env", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels", "Healthcheck", "StopSignal", "OnBuild", "Shell"] as const;

function configOf(inspectJson: string): Record<string, unknown> {
  const cfg = JSON.parse(inspectJson)[0].Config as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  // An empty list and an absent field mean the same to every engine.
  for (const f of CONFIG_FIELDS) {
    const v = cfg[f];
    out[f] = v === null || v === "" || (Array.isArray(v) && v.length === 0) || (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 0) ? undefined : v;
  }
  return out;
}

interface Result {
  files: Map<string, string>;
  config: Record<string, unknown>;
  /** `history --no-trunc`'s CREATED BY column, newest first */
  history: string[];
}

describe("berth build beside docker's builders (differential)", { skip }, () => {
  const base = tempDir("berth-test-build-diff-");
  const sock = join(base, "docker.sock");
  let daemon: ChildProcess | undefined;
  let env: BerthEnv;
  const runtimeRoot = join(base, "berth-run");
  const ctx = join(base, "ctx");
  const multi = join(base, "multi");
  const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
  /** berth's stdout as bytes (an archive). */
  const berthBytes = (args: string[]): Buffer => {
    const r = spawnSync(process.execPath, [...berthCommand(), ...args], { env: { ...process.env, BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, BERTH_RUNTIME_ROOT: runtimeRoot }, maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`berth ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  const docker = (args: string[], buildkit = "1") => {
    const r = spawnSync(dockerCli, ["-H", `unix://${sock}`, ...args], { env: { ...process.env, DOCKER_BUILDKIT: buildkit }, maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`docker ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    env = berthEnv();
    importBusybox(env);
    const saved = berthBytes(["save", "busybox:latest"]);
    writeFileSync(join(base, "busybox.tar"), saved);
    const log = join(base, "dockerd.log");
    daemon = spawn("sh", ["-c", `exec dockerd --data-root ${base}/docker/data --exec-root ${base}/docker/exec -H unix://${sock} --pidfile ${base}/docker.pid --iptables=false --ip-masq=false --bridge=none > ${log} 2>&1`], { stdio: "ignore" });
    for (let i = 0; ; i++) {
      if (spawnSync(dockerCli, ["-H", `unix://${sock}`, "info"], { stdio: "ignore" }).status === 0) break;
      if (daemon.exitCode !== null || i > 300) throw new Error(`dockerd did not start: ${readFileSync(log, "utf8").slice(-2000)}`);
      await sleep(100);
    }
    const load = spawnSync(dockerCli, ["-H", `unix://${sock}`, "load", "-q"], { input: saved });
    assert.equal(load.status, 0, load.stderr?.toString());

    mkdirSync(join(ctx, "dir/empty"), { recursive: true });
    mkdirSync(join(ctx, "dir/nested"), { recursive: true });
    writeFileSync(join(ctx, "Dockerfile"), MAIN);
    writeFileSync(join(ctx, "a.txt"), "a\n");
    writeFileSync(join(ctx, "b.txt"), "b\n");
    chmodSync(join(ctx, "b.txt"), 0o600);
    writeFileSync(join(ctx, "dir/one.txt"), "one\n");
    writeFileSync(join(ctx, "dir/nested/two.sh"), "#!/bin/sh\necho two\n");
    chmodSync(join(ctx, "dir/nested/two.sh"), 0o755);
    chmodSync(join(ctx, "dir/nested"), 0o700);
    writeFileSync(join(ctx, "x.md"), "x\n");
    writeFileSync(join(ctx, "y.md"), "y\n");
    writeFileSync(join(ctx, "ignored.md"), "never copied\n");
    writeFileSync(join(ctx, ".dockerignore"), "ignored.md\n");
    symlinkSync("a.txt", join(ctx, "link"));
    writeFileSync(join(ctx, "plain.txt"), "plain\n");
    const src = join(base, "tarsrc");
    mkdirSync(join(src, "t/deeper"), { recursive: true });
    writeFileSync(join(src, "t/f"), "in the archive\n");
    writeFileSync(join(src, "t/deeper/g"), "deeper\n");
    chmodSync(join(src, "t/deeper/g"), 0o640);
    const tar = spawnSync("tar", ["-C", src, "--owner=11", "--group=12", "--numeric-owner", "-czf", join(ctx, "files.tar.gz"), "t"]);
    assert.equal(tar.status, 0, tar.stderr?.toString());
    mkdirSync(multi);
    writeFileSync(join(multi, "Dockerfile"), MULTI);
  });

  after(async () => {
    if (daemon && daemon.exitCode === null) {
      const exited = new Promise((r) => daemon!.once("exit", r));
      daemon.kill("SIGTERM");
      await Promise.race([exited, sleep(15_000)]);
      if (daemon.exitCode === null) daemon.kill("SIGKILL");
    }
    await removeContainersAndNetworking(env, runtimeRoot);
    spawnSync("sh", ["-c", `grep -o ' ${base}[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]);
    rmSync(base, { recursive: true, force: true });
  });

  const podmanDirsBefore = new Set(podmanDirs.filter((d) => existsSync(d)));
  const podman = (args: string[]) => {
    // runc: crun refuses this host's hybrid cgroups; ulimits: root here lacks CAP_SYS_RESOURCE for podman's defaults
    const common = ["--root", join(base, "podman/root"), "--runroot", join(base, "podman/run"), "--tmpdir", join(base, "podman/tmp"), "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "runc"];
    const r = spawnSync("podman", [...common, ...args], { maxBuffer: 1 << 28 });
    if (r.status !== 0) throw new Error(`podman ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
    return r.stdout;
  };
  after(() => {
    if (podmanSkip) return;
    spawnSync("sh", ["-c", `grep -o ' ${base}/podman[^ ]*' /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l`]);
    try {
      podman(["system", "reset", "-f"]);
    } catch {
      /* the directory goes below */
    }
    for (const d of podmanDirs) if (!podmanDirsBefore.has(d)) rmSync(d, { recursive: true, force: true });
  });

  async function berthResult(dir: string, tag: string): Promise<Result> {
    ok(b(["build", "-q", "--network", "none", "-t", tag, dir]));
    const id = ok(b(["create", tag])).stdout.trim();
    const tarball = berthBytes(["export", id]);
    ok(b(["rm", id]));
    const history = ok(b(["history", "--no-trunc", "--format", "{{.CreatedBy}}", tag])).stdout.trim().split("\n");
    return { files: await summarize(tarball), config: configOf(ok(b(["image", "inspect", tag])).stdout), history };
  }

  async function dockerResult(dir: string, tag: string, buildkit: "0" | "1"): Promise<Result> {
    docker(["build", "-q", "--network", "none", "-t", tag, dir], buildkit);
    const id = docker(["create", tag]).toString().trim();
    const tarball = docker(["export", id]);
    docker(["rm", id]);
    const history = docker(["history", "--no-trunc", "--format", "{{.CreatedBy}}", tag]).toString().trim().split("\n");
    return { files: await summarize(tarball), config: configOf(docker(["image", "inspect", tag]).toString()), history };
  }

  test("every instruction: the same files and the same config as BuildKit", async () => {
    const mine = await berthResult(ctx, "diff:main");
    const buildkit = await dockerResult(ctx, "diff:buildkit", "1");
    assert.ok(buildkit.files.has("app/env.txt") && buildkit.files.size > 300, "the oracle built the image");
    assert.deepEqual(differences(buildkit.files, mine.files), [], "files: BuildKit | berth");
    assert.deepEqual(mine.config, buildkit.config);
    // docker 20.10's BuildKit (0.8) leaves COPY's flags out of history; newer ones record them, as berth
    assert.deepEqual(mine.history.map((l) => l.replace(/^(COPY|ADD) --chown=\S+ /, "$1 ")), buildkit.history);
  });

  test("the legacy builder: the same files and config but where it differs from BuildKit", async () => {
    const mine = await berthResult(ctx, "diff:main");
    const legacy = await dockerResult(ctx, "diff:legacy", "0");
    const buildkit = await dockerResult(ctx, "diff:buildkit", "1");
    // docker's two builders disagree: the legacy one puts VOLUME directories in the image (its
    // steps are committed containers, volume mount points included) and makes WORKDIR
    // directories root's whatever the USER; berth follows BuildKit
    const legacyVsBuildkit = differences(legacy.files, buildkit.files);
    assert.deepEqual(legacyVsBuildkit, COMMITTED_VS_BUILDKIT);
    assert.deepEqual(differences(legacy.files, mine.files), legacyVsBuildkit, "berth differs from the legacy builder only where BuildKit does");
    assert.deepEqual(mine.config, legacy.config);
  });

  test("multi-stage: COPY --from a stage (owners, modes, directory contents); unused stages not built", async () => {
    const mine = await berthResult(multi, "diff:multi");
    const buildkit = await dockerResult(multi, "diff:multi-bk", "1");
    assert.deepEqual(differences(buildkit.files, mine.files), [], "files: BuildKit | berth");
    assert.deepEqual(mine.config, buildkit.config);
    assert.deepEqual(mine.history.map((l) => l.replace(/^(COPY|ADD) --ch(own|mod)=\S+ /, "$1 ")), buildkit.history);
    assert.equal(mine.files.get("mode")?.slice(0, 9), "file 0751");
    assert.equal(mine.files.get("xfile"), "file 0644 5:6 sha256:" + createHash("sha256").update("x\n").digest("hex").slice(0, 16));
  });

  test("podman build (buildah): the same files and config but where it differs from BuildKit", { skip: podmanSkip }, async () => {
    podman(["load", "-q", "-i", join(base, "busybox.tar")]);
    const mine = await berthResult(ctx, "diff:main");
    const buildkit = await dockerResult(ctx, "diff:buildkit", "1");
    podman(["build", "-q", "--format", "docker", "--network", "none", "--layers", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096", "-t", "diff:podman", ctx]);
    const id = podman(["create", "diff:podman"]).toString().trim();
    podman(["export", "-o", join(base, "podman-export.tar"), id]);
    const tarball = readFileSync(join(base, "podman-export.tar"));
    podman(["rm", id]);
    // podman's inspect shows the OCI config, the docker-only Healthcheck beside it, and not
    // OnBuild or Shell at all (they are compared with docker's above)
    const inspected = JSON.parse(podman(["image", "inspect", "diff:podman"]).toString());
    inspected[0].Config.Healthcheck = inspected[0].Healthcheck;
    const theirs: Result = { files: await summarize(tarball), config: configOf(JSON.stringify(inspected)), history: [] };
    delete (theirs.config.Labels as Record<string, string>)["io.buildah.version"];
    theirs.config.OnBuild = mine.config.OnBuild;
    theirs.config.Shell = mine.config.Shell;
    const podmanVsBuildkit = differences(theirs.files, buildkit.files);
    // buildah commits as the legacy builder does, with the same differences
    assert.deepEqual(podmanVsBuildkit, COMMITTED_VS_BUILDKIT);
    assert.deepEqual(differences(theirs.files, mine.files), podmanVsBuildkit, "berth differs from podman only where BuildKit does");
    assert.deepEqual(mine.config, theirs.config);
  });
});
