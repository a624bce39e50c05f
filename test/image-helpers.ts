/** Helpers for the image tests: the berth CLI with a private store, images made by other tools. */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fixtureConfig, fixtureRootfs, project, rt, tempDir, type Result } from "./helpers.js";
import { ImageStore } from "../src/images/index.js";
import { networkNames } from "../src/network/index.js";

export const berthBundle = join(project, "dist/berth.cjs");
const snapshotBlob = join(project, "dist/berth.blob");

/**
 * berth as the installed command starts it: from its V8 snapshot when the build made one (the
 * path users take), else the bundle. BERTH_TEST_BUNDLE=1 tests the bundle instead.
 */
export function berthCommand(): string[] {
  if (!process.env.BERTH_TEST_BUNDLE && existsSync(snapshotBlob) && existsSync(`${snapshotBlob}.flags`)) return ["--snapshot-blob", snapshotBlob, ...readFileSync(`${snapshotBlob}.flags`, "utf8").split(/\s+/).filter(Boolean), "--"];
  return [berthBundle];
}

export interface BerthEnv {
  root: string;
  configDir: string;
  dockerConfig: string;
}

export function berthEnv(): BerthEnv {
  const base = tempDir("berth-img-");
  const env = { root: join(base, "root"), configDir: join(base, "etc"), dockerConfig: join(base, "docker") };
  storeRoots.push(env.root);
  return env;
}

/**
 * Every store a test made leaves no bridge or nftables table behind when the test process ends,
 * whether or not the test removed them itself (its store directory goes then, and with it the
 * only record of what it made): the names are those berth derives from the store's root.
 */
const storeRoots: string[] = [];
process.on("exit", () => {
  if (process.getuid?.() !== 0) return;
  for (const root of storeRoots) {
    const { bridge, table } = networkNames(root);
    if (existsSync(`/sys/class/net/${bridge}`)) spawnSync("ip", ["link", "del", bridge]);
    spawnSync("nft", ["delete", "table", "ip", table], { stdio: "ignore" });
  }
});

export function berth(env: BerthEnv, args: string[], opts: { input?: string | Buffer; timeout?: number; extraEnv?: Record<string, string> } = {}): Result {
  const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig, ...opts.extraEnv };
  delete e.NODE_EXTRA_CA_CERTS;
  const r = spawnSync(process.execPath, [...berthCommand(), ...args], { env: e, input: opts.input ?? "", timeout: opts.timeout ?? 120_000, maxBuffer: 1 << 30 });
  return { code: r.status ?? 128, stdout: r.stdout?.toString() ?? "", stderr: (r.stderr?.toString() ?? "") + (r.error ? String(r.error) : "") };
}

export function ok(r: Result, what = "berth"): Result {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r;
}

export function sh(cmd: string, args: string[], opts: { cwd?: string; input?: string } = {}): string {
  const r = spawnSync(cmd, args, { encoding: "utf8", cwd: opts.cwd, input: opts.input ?? "", maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/**
 * An OCI image layout made by umoci (a tool independent of berth): the busybox fixture rootfs plus
 * a marker file, tagged `latest`. umoci writes layer tars without end-of-archive blocks.
 */
export function umociLayout(marker: string): string {
  const dir = tempDir("berth-umoci-");
  const layout = join(dir, "layout");
  sh("umoci", ["init", "--layout", layout]);
  sh("umoci", ["new", "--image", `${layout}:latest`]);
  sh("umoci", ["unpack", "--image", `${layout}:latest`, join(dir, "bundle")]);
  cpSync(fixtureRootfs, join(dir, "bundle/rootfs"), { recursive: true, verbatimSymlinks: true });
  writeFileSync(join(dir, "bundle/rootfs/etc/marker"), marker);
  sh("umoci", ["repack", "--image", `${layout}:latest`, join(dir, "bundle")]);
  sh("umoci", ["config", "--image", `${layout}:latest`, "--config.cmd", "/bin/sh", "--config.env", `MARKER=${marker}`]);
  rmSync(join(dir, "bundle"), { recursive: true, force: true });
  return layout;
}

/**
 * Run a process in an image from a store: prepare a snapshot, mount it as a bundle's rootfs, run it
 * with berth-runtime, then unmount and remove the snapshot. What the engine will do, by hand.
 */
export function runImage(env: BerthEnv, image: string, args: string[]): Result {
  const store = new ImageStore({ root: env.root });
  const rec = store.get(image);
  const key = `test-${process.pid}-${Date.now()}`;
  store.snapshots.prepare(key, store.topLayer(rec));
  const bundle = tempDir("berth-bundle-");
  const rootfs = join(bundle, "rootfs");
  mkdirSync(rootfs);
  store.snapshots.mount(key, rootfs);
  try {
    const spec = JSON.parse(readFileSync(fixtureConfig, "utf8"));
    spec.root = { path: rootfs, readonly: false };
    spec.process.args = args;
    writeFileSync(join(bundle, "config.json"), JSON.stringify(spec));
    const root = tempDir("berth-rtroot-");
    try {
      return rt(root, ["run", "--bundle", bundle, key]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  } finally {
    spawnSync("umount", [rootfs]);
    rmSync(bundle, { recursive: true, force: true });
    store.snapshots.remove(key);
  }
}

/** Remove what a test store made for networking: its bridges and its nftables table (docker keeps docker0; a test must not). */
export async function removeNetworking(env: BerthEnv, runtimeRoot: string): Promise<void> {
  const { Networking } = await import("../src/network/index.js");
  await new Networking(env.root, join(runtimeRoot, ".network")).removeAll();
}

/** After a suite: its containers removed (forced), then its networks, bridges and nft table. */
export async function removeContainersAndNetworking(env: BerthEnv, runtimeRoot: string): Promise<void> {
  const b = (args: string[]) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot } });
  const ids = b(["ps", "-aq"]).stdout.trim().split("\n").filter(Boolean);
  if (ids.length) b(["rm", "-f", ...ids]);
  await removeNetworking(env, runtimeRoot);
}

/** The busybox fixture (with berth's probe at /probe) as busybox:latest in env's store. */
export function importBusybox(env: BerthEnv): void {
  const tarball = join(tempDir("berth-img-"), "rootfs.tar");
  sh("tar", ["-C", join(project, "build/fixtures/busybox/rootfs"), "-cf", tarball, "."]);
  ok(berth(env, ["import", "-c", 'CMD ["sh"]', tarball, "busybox:latest"]));
}
