/**
 * bench/pull: pull and unpack a ~300 MB (uncompressed), five-layer Debian image from a local
 * registry into an empty store, with berth beside podman, containerd (`ctr image pull`, which
 * unpacks into its overlayfs snapshotter), dockerd and `skopeo copy` + `umoci unpack`, in one run.
 *
 * Everything writes to a file system the bench makes: a fresh journaled ext4 on a loop device
 * (default), or tmpfs with --tmpfs. (The dev VMs' root disk is ext4 without a journal, where making
 * many files right after deleting many is 10-15x slower: not a fair place to time this.)
 * Each tool gets a new directory each round; the median of the rounds is reported, with ratios to
 * podman. NODE_EXTRA_CA_CERTS is unset for berth (it is not set on users' machines).
 *
 * Usage: node dist/bench/pull.js [rounds=3] [--tmpfs]
 * Needs root, docker-registry, skopeo (and the peers it finds: podman, containerd+ctr, dockerd, umoci).
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startRegistry } from "../test/registry.js";

const project = join(dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const rounds = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
const useTmpfs = args.includes("--tmpfs");
const env = { ...process.env };
delete env.NODE_EXTRA_CA_CERTS;

const have = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`]).status === 0;
function must(cmd: string, a: string[], opts: { env?: NodeJS.ProcessEnv } = {}): string {
  const r = spawnSync(cmd, a, { encoding: "utf8", env: opts.env ?? env, maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${a.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function waitFor(check: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error("bench/pull needs root (mounts, peers' stores)");
  const layout = must("sh", [join(project, "scripts/make-debian-image.sh")]).trim();
  const base = mkdtempSync(join(tmpdir(), "berth-bench-pull-"));
  const fsDir = join(base, "fs");
  mkdirSync(fsDir);
  let loop = "";
  if (useTmpfs) must("mount", ["-t", "tmpfs", "-o", "size=8g", "berth-bench", fsDir]);
  else {
    must("truncate", ["-s", "12G", join(base, "disk.img")]);
    must("mkfs.ext4", ["-q", "-F", join(base, "disk.img")]);
    must("mount", ["-o", "loop", join(base, "disk.img"), fsDir]);
    loop = "journaled ext4 on a loop device";
  }
  const fsKind = useTmpfs ? "tmpfs" : loop;
  const reg = await startRegistry();
  const daemons: ChildProcess[] = [];
  try {
    const ref = `${reg.host}/bench/debian:latest`;
    must("skopeo", ["--insecure-policy", "copy", "-q", "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${ref}`]);
    const inspect = JSON.parse(must("skopeo", ["inspect", "--tls-verify=false", `docker://${ref}`]));
    const blobs = must("sh", ["-c", `du -sb ${layout}/blobs | cut -f1`]).trim();
    const files = must("sh", ["-c", `find ${join(project, "build/cache/debian-rootfs")} | wc -l`]).trim();
    const uncompressed = must("sh", ["-c", `du -sb ${join(project, "build/cache/debian-rootfs")} | cut -f1`]).trim();

    type Tool = { name: string; before?: (dir: string) => Promise<void>; pull: (dir: string) => void; after?: (dir: string) => Promise<void> | void };
    const tools: Tool[] = [];
    const berthBin = join(project, "dist/berth.cjs");
    tools.push({ name: "berth", pull: (dir) => must(process.execPath, [berthBin, "pull", "-q", ref], { env: { ...env, BERTH_ROOT: dir } }) });
    if (have("podman"))
      tools.push({
        name: "podman",
        pull: (dir) => must("podman", ["--root", join(dir, "root"), "--runroot", join(dir, "run"), "--tmpdir", join(dir, "tmp"), "--storage-driver", "overlay", "--events-backend", "file", "pull", "-q", "--tls-verify=false", ref]),
        after: (dir) => void spawnSync("podman", ["--root", join(dir, "root"), "--runroot", join(dir, "run"), "--storage-driver", "overlay", "system", "reset", "-f"], { stdio: "ignore" }),
      });
    // containerd and dockerd get a fresh daemon with its root inside each round's directory
    // (started before the clock starts): their content stores are shared across namespaces
    const stopDaemon = async () => {
      const d = daemons.pop();
      if (!d) return;
      d.kill("SIGTERM");
      if (d.exitCode === null) await new Promise((r) => d.once("exit", r));
    };
    if (have("containerd") && have("ctr")) {
      const sock = join(base, "containerd.sock");
      tools.push({
        name: "ctr (containerd)",
        before: async (dir) => {
          writeFileSync(join(base, "containerd.toml"), `version = 2\nroot = "${dir}/root"\nstate = "${base}/containerd-state"\ndisabled_plugins = ["io.containerd.grpc.v1.cri"]\n[grpc]\n  address = "${sock}"\n`);
          rmSync(sock, { force: true });
          daemons.push(spawn("containerd", ["--config", join(base, "containerd.toml")], { stdio: "ignore" }));
          await waitFor(() => existsSync(sock) && spawnSync("ctr", ["--address", sock, "version"], { stdio: "ignore" }).status === 0, "containerd");
        },
        pull: () => must("ctr", ["--address", sock, "-n", "bench", "image", "pull", "--plain-http", ref]),
        after: stopDaemon,
      });
    }
    if (have("dockerd") && have("containerd")) {
      const sock = join(base, "docker.sock");
      const docker = (...a: string[]) => spawnSync("/usr/bin/docker", ["-H", `unix://${sock}`, ...a], { encoding: "utf8" });
      tools.push({
        name: "docker",
        before: async (dir) => {
          rmSync(sock, { force: true });
          daemons.push(
            spawn("dockerd", ["--data-root", join(dir, "root"), "--exec-root", join(base, "docker-exec"), "--pidfile", join(base, "docker.pid"), "-H", `unix://${sock}`, "--bridge=none", "--iptables=false", "--ip6tables=false", "--storage-driver", "overlay2"], { stdio: "ignore" }),
          );
          await waitFor(() => docker("version").status === 0, "dockerd", 60_000);
        },
        pull: () => must("/usr/bin/docker", ["-H", `unix://${sock}`, "pull", "-q", ref]),
        after: stopDaemon,
      });
    }
    if (have("umoci"))
      tools.push({
        name: "skopeo + umoci",
        pull: (dir) => {
          must("skopeo", ["--insecure-policy", "copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${join(dir, "oci")}:latest`]);
          must("umoci", ["unpack", "--image", `${join(dir, "oci")}:latest`, join(dir, "bundle")]);
        },
      });

    const times = new Map<string, number[]>(tools.map((t) => [t.name, []]));
    for (let r = 0; r < rounds; r++)
      for (const t of tools) {
        const dir = join(fsDir, `${t.name.replace(/\W+/g, "-")}-${r}`);
        mkdirSync(dir, { recursive: true });
        await t.before?.(dir);
        must("sync", []);
        const start = process.hrtime.bigint();
        t.pull(dir);
        must("sync", []); // the files are on disk, not just in the page cache, for every tool alike
        times.get(t.name)!.push(Number(process.hrtime.bigint() - start) / 1e6);
        await t.after?.(dir);
      }

    const podman = times.get("podman") ? median(times.get("podman")!) : undefined;
    const mb = (n: string) => (Number(n) / 1e6).toFixed(1);
    console.log(`bench/pull: ${inspect.Layers.length} layers, ${mb(blobs)} MB compressed, ${mb(uncompressed)} MB / ${files} files unpacked; ${fsKind}; median of ${rounds}`);
    console.log("tool".padEnd(18) + "seconds".padStart(9) + (podman ? "   vs podman" : ""));
    for (const [name, xs] of times) {
      const m = median(xs);
      console.log(name.padEnd(18) + (m / 1000).toFixed(2).padStart(9) + (podman ? `   ${(m / podman).toFixed(2)}x` : "") + `   (${xs.map((x) => (x / 1000).toFixed(2)).join(", ")})`);
    }
    if (podman) console.log(`berth's throughput is ${(podman / median(times.get("berth")!)).toFixed(2)}x podman's`);
  } finally {
    for (const d of daemons) {
      d.kill("SIGTERM");
      await new Promise((r) => (d.exitCode === null ? d.once("exit", r) : r(undefined)));
    }
    await reg.stop();
    spawnSync("sh", ["-c", `grep -o " ${fsDir}/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    spawnSync("umount", ["-l", fsDir]);
    rmSync(base, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`bench/pull: ${e.message}`);
  process.exit(1);
});
