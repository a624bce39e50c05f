/**
 * A build's RUN step as BuildKit runs one: the runtime's container in the foreground on a snapshot of
 * the step before, its output piped to the build, the network it asks for — and no container record,
 * name, monitor or events. Everything it makes is named after the builder's pid (`build-PID-…`), so
 * what a killed build leaves is swept as its other leftovers are: the snapshot (mounted at tmp/KEY)
 * and its files by the image store's cleanLeftovers, the runtime's container (processes, cgroup) and
 * the network's addresses by `system repair` (src/engine/repair.ts) and the next build.
 */
import * as fs from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "../common/path.js";
import { isRootless } from "../common/paths.js";
import { builtin } from "../common/builtin.js";
import { pipe } from "../common/sys.js";
import { trace } from "../common/trace.js";
import { writeFileAtomic } from "../common/lock.js";
import { unmountAsync } from "../images/index.js";
import { attach as attachNetwork, hostsFile, resolvConf, type EndpointRequest } from "../network/index.js";
import type { Mount } from "../runtime/index.js";
import type { RunStep } from "../build/index.js";
import { berthCommand, isMountpoint, parseUlimit, recursiveReadOnly, type Engine } from "./engine.js";
import { etcMounts, netMode } from "./net.js";
import { buildSpec, layeredReader, resolveUser } from "./spec.js";
import type { ContainerRecord } from "./store.js";
import { defaultContainerConfig, defaultHostConfig } from "./types.js";
import { orphanStep } from "./step-id.js";

export async function runStep(engine: Engine, step: RunStep, opts: { forwardSignals: boolean } = { forwardSignals: true }): Promise<{ exitCode: number; snapshot: string; remove(): Promise<void> }> {
  const images = engine.images;
  const key = `build-${process.pid}-${randomBytes(8).toString("hex")}`;
  const rootfs = join(engine.root, "tmp", key); // where the store's sweep looks for a killed build's mounts
  const files = join(engine.root, "tmp", `${key}-files`); // the bundle and /etc files (swept as tmp/build-PID-…)
  const imgCfg = images.config(step.image).config ?? {};
  // the container's settings as create merges them: the step's over the image's
  const env = new Map<string, string>();
  for (const e of [...(imgCfg.Env ?? []), ...step.env]) env.set(e.split("=")[0]!, e);
  const hc = defaultHostConfig();
  hc.NetworkMode = step.network === "default" ? "default" : step.network;
  hc.LogConfig = { Type: "none", Config: {} };
  if (step.extraHosts.length) hc.ExtraHosts = step.extraHosts;
  if (step.ulimits?.length) hc.Ulimits = step.ulimits.map(parseUlimit);
  if (step.shmSize) hc.ShmSize = step.shmSize;
  const config = { ...defaultContainerConfig(step.image.id), Cmd: step.argv, Entrypoint: [], Env: [...env.values()], User: step.user || imgCfg.User || "", WorkingDir: step.workdir || imgCfg.WorkingDir || "", Hostname: key.slice(-12) };
  const rec = { Id: key, Name: `/${key}`, Path: step.argv[0]!, Args: step.argv.slice(1), Image: step.image.id, Config: config, HostConfig: hc } as unknown as ContainerRecord;
  const mode = netMode(hc);
  const held = { snapshot: false, network: false, runtime: false };
  let mounting: Promise<void> | undefined;
  const undo = async () => {
    if (held.runtime && engine.runtime.has(key)) await engine.runtime.delete(key, { force: true }).catch(() => {}); // the container's own cleanup failed: repair's sweep takes it
    if (isMountpoint(rootfs)) await unmountAsync(rootfs).catch(() => {}); // left for the store's sweep of build-PID-… mounts
    if (held.network) await engine.network.release(key).catch(() => {}); // left for repair, which releases what no running step holds
    fs.rmSync(files, { recursive: true, force: true });
  };
  try {
    await images.ensureUnpacked(step.image);
    trace("step: unpacked");
    images.snapshots.prepare(key, images.topLayer(step.image));
    trace("step: snapshot prepared");
    held.snapshot = true;
    fs.mkdirSync(rootfs, { recursive: true });
    fs.mkdirSync(files, { recursive: true, mode: 0o700 });
    mounting = images.snapshots.mountAsync(key, rootfs, { volatile: true }); // committed at once: nothing to sync
    mounting.catch(() => {}); // awaited below
    trace("step: mount started");
    const user = resolveUser(layeredReader(images.snapshots.dirs(key)), config.User);
    trace("step: user resolved");
    held.network = mode.kind === "bridge";
    const endpoints: EndpointRequest[] = mode.kind === "bridge" ? [{ network: mode.network, aliases: [], names: [] }] : [];
    const net = await attachNetwork(engine.network, { container: key, mode, rootless: isRootless(), endpoints, ports: [], active: (c) => engine.isActive(c), pastaPidFile: join(files, "pasta.pid") });
    trace("step: network allocated");
    const etc: Array<[string, string]> = [
      ["hostname", `${config.Hostname}\n`],
      ["hosts", hostsFile(config.Hostname, net.endpoints.map((e) => e.IPAddress), hc.ExtraHosts ?? [], net.endpoints[0]?.Gateway)],
      ["resolv.conf", resolvConf(hc, mode.kind !== "host", net.dns)],
    ];
    const mounts: Mount[] = step.mounts.map((m) =>
      m.type === "tmpfs"
        ? { destination: m.target, type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec"] }
        : { destination: m.target, type: "bind", source: m.source!, options: ["rbind", m.readonly ? "ro" : "rw", ...(m.readonly && recursiveReadOnly() ? ["rro"] : []), "rprivate"] },
    );
    mounts.push(...etcMounts(files, etc, false));
    const spec = buildSpec({ rec, rootfs, user, mounts, joinNamespaces: mode.kind === "host" ? { network: "host" } : {}, noNewPrivileges: false });
    writeFileAtomic(join(files, "config.json"), JSON.stringify(spec), false);
    await mounting;
    trace("step: rootfs mounted");
    // the output: one pipe for stdout and stderr, read through the event loop
    const [readEnd, writeEnd] = pipe();
    const { Socket } = builtin<typeof import("node:net")>("node:net");
    const output = new Socket({ fd: readEnd, readable: true, writable: false });
    output.on("data", (d: Buffer) => step.output(d));
    const drained = new Promise<void>((resolve) => output.on("close", () => resolve()));
    let exitCode: number;
    try {
      held.runtime = true;
      // the network is joined while the container waits at its hook point, before its process runs
      const joinNet = net.onPid || net.beforeSetup ? async (pid: number) => {
        await net.beforeSetup?.(pid);
        net.onPid?.(pid);
        await net.join(pid, [...berthCommand(engine.root), "internal-dns"]);
      } : undefined;
      exitCode = await engine.runtime.run(key, { bundle: files, spec, stdio: ["ignore", writeEnd, writeEnd], direct: true, forwardSignals: opts.forwardSignals, ...(joinNet ? { beforeSetup: joinNet } : {}) });
      trace("step: ran");
    } finally {
      fs.closeSync(writeEnd); // the container's copies are gone with it: the reader sees the end
    }
    await drained;
    held.runtime = false;
    await unmountAsync(rootfs);
    fs.rmdirSync(rootfs);
    if (held.network) await engine.network.release(key);
    held.network = false;
    fs.rmSync(files, { recursive: true, force: true });
    return {
      exitCode,
      snapshot: key,
      remove: async () => images.snapshots.removeAsync(key),
    };
  } catch (e) {
    await mounting?.catch(() => {}); // settled first, so the undo sees (and unmounts) its mount
    await undo();
    if (held.snapshot) await images.snapshots.removeAsync(key).catch(() => {}); // left for the store's sweep of build-PID-… snapshots
    if (!isMountpoint(rootfs)) fs.rmSync(rootfs, { recursive: true, force: true }); // (a mount left for the sweep is not emptied through)
    throw e;
  }
}

/** What killed builds' steps left in the runtime and the network (repair's part; the store sweeps the rest). */
export async function sweepSteps(engine: Engine, opts: { dryRun?: boolean } = {}): Promise<string[]> {
  const out: string[] = [];
  for (const s of engine.runtime.list()) {
    if (!orphanStep(s.id)) continue;
    out.push(`the runtime's container of a killed build's step ${s.id}`);
    if (!opts.dryRun) await engine.runtime.delete(s.id, { force: true }).catch(() => {}); // listed again by the next repair
  }
  return out;
}
