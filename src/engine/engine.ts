/**
 * The engine: containers as durable objects over the image store and the runtime. Daemonless:
 * every berth command is an Engine over the same files; a container's only resident process is its
 * monitor (berth-monitor, C), which is its parent, writes its log, serves attach, and when the
 * container ends runs `berth internal-exited ID` — where exit codes are recorded, restart policies
 * applied and --rm containers removed.
 */
import { trace } from "../common/trace.js";
import * as fs from "node:fs";
import { connect, isIP, type Socket } from "node:net";
import { release } from "node:os";
import { join } from "../common/path.js";
import { basename, dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { BerthError, exists, invalid, notFound, precondition, unsupported } from "../common/errors.js";
import { buildBinary, defaultRuntimeRoot, isRootless } from "../common/paths.js";
import { builtin } from "../common/builtin.js";
import { ERRNO, openpty, pipe, removeFile, removeTree, setWindowSize, SyscallError } from "../common/sys.js";
import { FileLock, ImageStore, daemonLogOpts, pullImage, commitSnapshot, type ImageRecord, type Progress, parsePlatform, unmount as unmountPath, unmountAsync, type ContainerConfig as ImageContainerConfig } from "../images/index.js";
import { withLock, writeFileAtomic } from "../common/lock.js";
import { processStartTime } from "../common/proc.js";
import { Runtime, parseSignal, launchHelper, ROOTFS_OVERLAY_ANNOTATION, MonitorOpt as M, MonitorFile, ExitKey, type LaunchedHelper, type Mount, type Spec } from "../runtime/index.js";
import { pidAlive } from "../images/content.js";
import { buildSpec, capabilitiesFor, containerCgroup, layeredReader, parseDeviceCgroupRule, resolveUser, resourcesFor, rootlessIdMappings, rootlessSpec, type RootReader } from "./spec.js";
import { Networking, attach as attachNetwork, hostsFile, resolvConf, stopPasta, type Attachment, type EndpointRequest } from "../network/index.js";
import { seccompFromProfile, type Seccomp } from "../security/index.js";
import { etcMounts, netMode, networkSettings, portRequests } from "./net.js";
import { ContainerStore, initialState, zeroTime, type ContainerRecord, type ContainerState, type MountPoint } from "./store.js";
import { VolumeStore } from "../volumes/index.js";
import { EventLog } from "./events.js";
import { stepBuilder } from "./step-id.js";
import { copyIn, copyOut, exportRootfs, statInRoot, type PathStat } from "./copy.js";
import type { CreateRequest, MountSpec, NetworkSettings, Ulimit } from "./types.js";

export interface EngineOptions {
  /** berth's store (images, containers, volumes): /var/lib/berth or $BERTH_ROOT. */
  root?: string;
  /** Where the runtime keeps its state: /run/berth/runtime. */
  runtimeRoot?: string;
}

export interface ContainerView {
  rec: ContainerRecord;
  state: ContainerState;
}

/** A container the runtime created, and what runs beside its setup (see launch). */
interface Launched {
  pid: number;
  monitorPid: number;
  attaching?: Promise<void>;
}


/** The command a monitor runs when its container ends: this berth, told which container. */
function exitCommand(id: string, root: string): string[] {
  return [...berthCommand(root), "internal-exited", id];
}

/** This berth as a command line (for the monitor's exit command, the DNS server). */
export function berthCommand(root: string): string[] {
  const entry = process.env.BERTH_ENTRY ?? (globalThis.berthEntry as string | undefined) ?? join(buildBinary("berth-monitor"), "../../dist/berth.cjs");
  return [process.execPath, entry, "--root", root];
}

declare global {
  var berthEntry: string | undefined;
}

function procStart(pid: number): number | undefined {
  return processStartTime(pid)?.start;
}

/** docker's --link-local-ip: addresses, each IPv4 or IPv6 (checked before anything is made). */
function checkLinkLocal(ips: string[] | null | undefined): void {
  for (const ip of ips ?? []) if (!isIP(ip)) throw invalid(`invalid link-local IP address: ${ip}`);
}

/** Whether this kernel has mount_setattr (5.12), which makes a bind read-only with its submounts (asked at run time: the start-up snapshot is made elsewhere). */
let recursiveReadOnlyKnown: boolean | undefined;
export function recursiveReadOnly(): boolean {
  if (recursiveReadOnlyKnown === undefined) {
    const [major, minor] = release().split(".").map(Number);
    recursiveReadOnlyKnown = major! > 5 || (major === 5 && minor! >= 12);
  }
  return recursiveReadOnlyKnown;
}

export class Engine {
  readonly root: string;
  readonly images: ImageStore;
  readonly containers: ContainerStore;
  readonly runtime: Runtime;
  readonly volumes: VolumeStore;
  readonly events: EventLog;

  private networking?: Networking;
  private readonly runtimeRoot: string;

  /** Networks, addresses and published ports (made on first use: most commands never need them). */
  get network(): Networking {
    return (this.networking ??= new Networking(this.root, join(this.runtimeRoot, ".network")));
  }

  constructor(opts: EngineOptions = {}) {
    this.runtimeRoot = opts.runtimeRoot ?? defaultRuntimeRoot();
    this.images = new ImageStore(opts.root ? { root: opts.root } : {});
    this.root = this.images.root;
    this.containers = new ContainerStore(this.root);
    this.volumes = new VolumeStore(this.root);
    this.events = new EventLog(this.root);
    this.runtime = new Runtime({ root: this.runtimeRoot });
  }

  // ---- lookups

  /** A container as it is now: a record whose monitor died is settled as exited first. */
  async get(ref: string): Promise<ContainerView> {
    const id = this.containers.resolve(ref);
    await this.reconcile(id);
    const v = this.containers.read(id);
    if (!v) throw notFound(`No such container: ${ref}`);
    return v;
  }

  async list(): Promise<ContainerView[]> {
    const out: ContainerView[] = [];
    for (const id of this.containers.ids()) {
      await this.reconcile(id);
      const v = this.containers.read(id);
      if (v) out.push(v);
    }
    return out.sort((a, b) => b.rec.Created.localeCompare(a.rec.Created));
  }

  imageUsers = (imageId: string): string[] => this.containers.ids().filter((id) => this.containers.read(id)?.rec.Image === imageId);

  private emit(rec: ContainerRecord, action: string, extra: Record<string, string> = {}): void {
    this.events.emit("container", action, rec.Id, { image: rec.Config.Image, name: rec.Name.slice(1), ...rec.Config.Labels, ...extra });
  }

  private monitorAlive(state: ContainerState): boolean {
    return !!state.MonitorPid && pidAlive(state.MonitorPid) && procStart(state.MonitorPid) === state.MonitorStart;
  }

  /**
   * A record says running but its monitor is gone: the monitor finished (its exit command had not
   * run yet, or was killed) or died with the machine. Settle it so nothing stays "running". Left
   * alone while someone holds the container's lock (an exit command restarting it, a stop).
   */
  private async reconcile(id: string): Promise<void> {
    const v = this.containers.read(id);
    if (!v || !(v.state.Running || v.state.Restarting || (v.state.Status === "created" && v.state.MonitorPid))) return;
    if (this.monitorAlive(v.state)) {
      // the container has ended and its monitor is now the exit command: wait for it to record
      // the exit, so a command right after the end sees the container stopped
      if (v.state.Running && fs.existsSync(this.containers.path(id, MonitorFile.EXIT)))
        for (let i = 0; i < 100; i++) {
          await sleep(20);
          const cur = this.containers.read(id);
          if (!cur?.state.Running || !this.monitorAlive(cur.state)) break;
        }
      return;
    }
    const lock = FileLock.tryAcquire(this.containers.path(id, "lock"), "exclusive");
    if (!lock) return;
    try {
      const cur = this.containers.read(id);
      if (!cur || !(cur.state.Running || cur.state.Restarting || cur.state.MonitorPid) || this.monitorAlive(cur.state)) return;
      if (fs.existsSync(this.containers.path(id, MonitorFile.EXIT))) {
        // an --rm container's exit comes back unrecorded: recorded here (it is removed by rm)
        const ended = await this.exitedLocked(id, { restart: false });
        if (ended) {
          this.containers.writeState(id, ended.view.state);
          removeFile(this.containers.path(id, MonitorFile.EXIT));
        }
        return;
      }
      await this.teardown(id);
      this.containers.writeState(id, { ...cur.state, Status: "exited", Running: false, Paused: false, Restarting: false, Pid: 0, ExitCode: 255, MonitorPid: undefined, Error: "the container's monitor is gone (berth-monitor was killed, or the machine restarted)", FinishedAt: cur.state.FinishedAt === zeroTime ? new Date().toISOString() : cur.state.FinishedAt });
    } finally {
      lock.release();
    }
  }

  // ---- create

  private async imageFor(req: CreateRequest, onProgress?: Progress): Promise<ImageRecord> {
    const name = req.Config.Image;
    if (!name) throw invalid("an image is required");
    const policy = req.pull ?? "missing";
    let rec = policy === "always" ? undefined : this.images.find(name);
    if (!rec) {
      if (policy === "never") throw notFound(`No such image: ${name}`);
      const r = await pullImage(this.images, name, { ...(req.platform ? { platform: parsePlatform(req.platform) } : {}), ...(onProgress ? { onProgress } : {}) });
      rec = r.image;
    }
    return rec;
  }

  /**
   * opts.startNext: a start follows at once (berth run): the container's monitor and helper are
   * started, and its cgroup made, as soon as its settings are known, so they load (and the kernel's
   * wait for the cgroup lock passes) while the rest of create and start runs.
   */
  async create(req: CreateRequest, onProgress?: Progress, opts: { startNext?: { handlesExit?: boolean }; buildStep?: boolean } = {}): Promise<{ Id: string; Warnings: string[] }> {
    // daemon.json's log-opts fill in what the container's options leave out (as dockerd merges
    // them); without them, a log with no size limit of its own gets berth's default, so one noisy
    // container cannot fill the disk (inspect shows what applies)
    const lc = req.HostConfig.LogConfig;
    if (lc.Type === "json-file" || lc.Type === "local") {
      // (docker's local driver always has its limits: 5 files of 20 MB unless given)
      const base = lc.Type === "local" ? DEFAULT_LOG_OPTS : (daemonLogOpts() ?? (lc.Config["max-size"] === undefined ? DEFAULT_LOG_OPTS : {}));
      req = { ...req, HostConfig: { ...req.HostConfig, LogConfig: { Type: lc.Type, Config: { ...base, ...lc.Config } } } };
    }
    validateRequest(req);
    // what docker checks at create, so a bad request leaves no container behind
    resourcesFor(req.HostConfig);
    capabilitiesFor(req.HostConfig);
    for (const b of req.HostConfig.Binds ?? []) {
      const m = parseBind(b);
      if (m.Type === "bind" && !fs.existsSync(m.Source!)) throw invalid(`invalid mount config for type "bind": bind source path does not exist: ${m.Source}`);
    }
    for (const m of req.HostConfig.Mounts ?? []) if (m.Type === "bind" && (!m.Source || !fs.existsSync(m.Source))) throw invalid(`invalid mount config for type "bind": bind source path does not exist: ${m.Source ?? ""}`);
    trace("create: request checked");
    const mode = netMode(req.HostConfig);
    if (mode.kind === "bridge" && mode.network !== "bridge" && !this.network.cniNetwork(mode.network)) this.network.store.get(mode.network); // docker: network X not found
    if (mode.kind !== "bridge" && (Object.keys(req.HostConfig.PortBindings ?? {}).length || req.HostConfig.PublishAllPorts) && mode.kind !== "host")
      throw invalid(`conflicting options: port publishing and the ${mode.kind} network mode`);
    for (const [name, ep] of Object.entries(req.NetworkingConfig?.EndpointsConfig ?? {})) {
      if (ep.IPAMConfig?.IPv4Address && (mode.kind !== "bridge" || mode.network === "bridge" || name === "bridge")) throw invalid("user specified IP address is supported on user defined networks only");
      checkLinkLocal(ep.IPAMConfig?.LinkLocalIPs);
    }
    if (mode.kind === "bridge") portRequests({ Config: req.Config, HostConfig: req.HostConfig } as ContainerRecord); // the bindings parse
    const image = await this.imageFor(req, onProgress);
    trace("create: image found");
    const imgCfg: ImageContainerConfig = this.images.config(image).config ?? {};
    const id = this.containers.newId();
    // held until the record is written: what a create killed half-way leaves is told from one in progress
    const creating = this.containers.begin(id);
    let name: string;
    try {
      name = this.containers.claimName(id, req.name);
    } catch (e) {
      creating.release();
      this.containers.remove(id);
      throw e;
    }
    try {
      const c = { ...req.Config };
      // docker's merge: the container's settings over the image's
      const env = new Map<string, string>();
      for (const e of [...(imgCfg.Env ?? []), ...c.Env]) env.set(e.split("=")[0]!, e);
      c.Env = [...env.values()];
      const entrypoint = c.Entrypoint ?? imgCfg.Entrypoint ?? null;
      const cmd = c.Cmd ?? (c.Entrypoint ? null : (imgCfg.Cmd ?? null));
      const argv = [...(entrypoint ?? []), ...(cmd ?? [])];
      if (!argv.length) throw invalid("no command specified");
      c.Entrypoint = entrypoint;
      c.Cmd = cmd;
      c.WorkingDir = c.WorkingDir || imgCfg.WorkingDir || "";
      c.User = c.User || imgCfg.User || "";
      c.Hostname = c.Hostname || id.slice(0, 12);
      c.Labels = { ...(imgCfg.Labels ?? {}), ...c.Labels };
      c.StopSignal = c.StopSignal || imgCfg.StopSignal || "SIGTERM";
      if (!c.Healthcheck && imgCfg.Healthcheck?.Test && !opts.buildStep) c.Healthcheck = imgCfg.Healthcheck;
      if (imgCfg.ExposedPorts) c.ExposedPorts = { ...imgCfg.ExposedPorts, ...(c.ExposedPorts ?? {}) };
      // docker: a published port is an exposed one
      for (const k of Object.keys(req.HostConfig.PortBindings ?? {})) c.ExposedPorts = { ...(c.ExposedPorts ?? {}), [k.includes("/") ? k : `${k}/tcp`]: {} };
      // a build's RUN keeps what it writes under a VOLUME path (as BuildKit): no volumes mounted there
      if (imgCfg.Volumes && !opts.buildStep) c.Volumes = { ...imgCfg.Volumes, ...(c.Volumes ?? {}) };
      const rec: ContainerRecord = {
        Id: id,
        Name: `/${name}`,
        Created: new Date().toISOString(),
        Path: argv[0]!,
        Args: argv.slice(1),
        Image: image.id,
        Config: c,
        // links as dockerd keeps them: /target:/this/alias (the target must exist now)
        HostConfig: req.HostConfig.Links?.length
          ? {
              ...req.HostConfig,
              Links: req.HostConfig.Links.map((l) => {
                const [t, a] = l.split(":") as [string, string | undefined];
                const target = t.replace(/^\//, "");
                try {
                  this.containers.resolve(target);
                } catch {
                  // a 400, not a 404: docker's CLI takes a 404 on create for a missing image, and pulls
                  throw invalid(`could not get container for ${target}`);
                }
                return `/${target}:/${name}/${(a ?? target).split("/").pop()}`;
              }),
            }
          : req.HostConfig,
        LogPath: req.HostConfig.LogConfig.Type === "none" ? "" : this.containers.path(id, `${id}-json.log`),
        Platform: "linux",
        ...(req.NetworkingConfig ? { NetworkingConfig: req.NetworkingConfig } : {}),
        ...(opts.buildStep ? { Builder: { Pid: process.pid, Start: procStart(process.pid) } } : {}),
      };
      rec.Mounts = this.resolveMounts(req.HostConfig, c.Volumes ?? undefined);
      if (opts.startNext) {
        this.prepared.set(id, this.prepareLaunch(rec, !!opts.startNext.handlesExit));
      }
      const parent = this.images.topLayer(image);
      if (parent) rec.SnapshotParent = parent;
      await this.images.ensureUnpacked(image);
      trace("create: image unpacked");
      this.images.snapshots.prepare(id, parent);
      trace("create: snapshot prepared");
      this.containers.write(rec, initialState());
      trace("create: record written");
      this.emit(rec, "create");
      return { Id: id, Warnings: [] };
    } catch (e) {
      await this.dropPrepared(id);
      this.images.snapshots.remove(id);
      this.containers.remove(id);
      this.containers.releaseName(name, id);
      throw e;
    } finally {
      creating.release();
    }
  }

  /** Launches prepared by create for the start that follows (see create's startNext). */
  private readonly prepared = new Map<string, { launcher: LaunchedHelper; handlesExit: boolean }>();

  /**
   * The container's monitor (with its helper, waiting for its plan), then its cgroup: on v1 making
   * it starts the kernel's wait for its cgroup lock (an RCU grace period: docs/engine.md), which
   * every fork meets until it ends, so after the monitor's spawn; it is over when the container's
   * init moves in.
   */
  private prepareLaunch(rec: ContainerRecord, handlesExit: boolean): { launcher: LaunchedHelper; handlesExit: boolean } {
    const id = rec.Id;
    const hc = rec.HostConfig;
    // max-size -1 (docker's "no limit") or 0: no rotation
    const maxSize = hc.LogConfig.Config["max-size"] ?? "0";
    // rotated files compressed: docker's compress option (the local driver's default)
    const compress = (hc.LogConfig.Config.compress ?? (hc.LogConfig.Type === "local" ? "true" : "false")) === "true";
    const log = hc.LogConfig.Type !== "none" ? [M.LOG, rec.LogPath, M.LOG_MAX_SIZE, String(maxSize === "-1" ? 0 : parseSize(maxSize)), M.LOG_MAX_FILES, String(Number(hc.LogConfig.Config["max-file"] ?? "1") || 1), ...(compress ? [M.LOG_COMPRESS] : [])] : [];
    const hcTest = rec.Config.Healthcheck?.Test;
    const health = hcTest?.length && hcTest[0] !== "NONE" ? [M.HEALTH_MS, String(Math.max(100, (rec.Config.Healthcheck?.Interval ?? 30e9) / 1e6)), ...exitCommand(id, this.root).slice(0, -2).concat(["internal-health", id]).flatMap((a) => [M.HEALTH_ARG, a])] : [];
    const launcher = launchHelper(
      [buildBinary("berth-monitor"), M.DIR, this.containers.path(id), ...log, ...(rec.Config.OpenStdin ? [M.KEEP_STDIN] : []), ...(rec.Config.StdinOnce ? [M.STDIN_ONCE] : []), ...(rec.Config.Tty ? [M.TTY] : []), ...health, ...(handlesExit ? [M.WAITER, String(process.pid)] : []), M.DAEMONIZE, ...exitCommand(id, this.root).flatMap((a) => [M.EXIT_ARG, a]), "--"],
      ["ignore", "ignore", "ignore"],
    );
    trace("start: monitor launched");
    this.runtime.prepareCgroup(id, containerCgroup(id));
    trace("start: cgroup prepared");
    return { launcher, handlesExit };
  }

  /** A prepared launch that will not be used: its helper and monitor end quietly, its cgroup goes. */
  private async dropPrepared(id: string): Promise<void> {
    const p = this.prepared.get(id);
    if (!p) return;
    this.prepared.delete(id);
    p.launcher.abort();
    await this.runtime.discardCgroup(id, containerCgroup(id));
  }

  // ---- start

  /**
   * The container's mounts, decided at create as docker does: binds checked, named volumes created
   * on first use, anonymous volumes (`-v /path`, the image's VOLUMEs) made with random names.
   */
  private resolveMounts(hc: CreateRequest["HostConfig"], imageVolumes: Record<string, object> | undefined): MountPoint[] {
    const specs: MountSpec[] = [...(hc.Mounts ?? [])];
    for (const b of hc.Binds ?? []) specs.push(parseBind(b));
    const out: MountPoint[] = [];
    for (const m of specs) {
      if (!m.Target.startsWith("/")) throw invalid(`invalid mount config: mount path must be absolute: ${m.Target}`);
      if (out.some((o) => o.Destination === m.Target)) throw invalid(`Duplicate mount point: ${m.Target}`);
      if (m.Type === "bind") {
        if (!m.Source || !fs.existsSync(m.Source)) throw invalid(`invalid mount config for type "bind": bind source path does not exist: ${m.Source ?? ""}`);
        out.push({ Type: "bind", Source: m.Source, Destination: m.Target, Mode: m.ReadOnly ? "ro" : "", RW: !m.ReadOnly, Propagation: m.BindOptions?.Propagation ?? "rprivate", ...(m.ReadOnly && m.BindOptions?.ReadOnlyNonRecursive ? { NonRecursiveRO: true } : {}), ...(m.BindOptions?.NonRecursive ? { NonRecursive: true } : {}) });
      } else if (m.Type === "volume") {
        const v = this.volumes.create(m.Source, { anonymous: !m.Source });
        out.push({ Type: "volume", Name: v.Name, Source: v.Mountpoint, Destination: m.Target, Driver: "local", Mode: m.ReadOnly ? "ro" : "z", RW: !m.ReadOnly, Propagation: "", ...(m.Source ? {} : { Anonymous: true }) });
      } else {
        const opts: string[] = [];
        if (m.TmpfsOptions?.SizeBytes) opts.push(`size=${m.TmpfsOptions.SizeBytes}`);
        if (m.TmpfsOptions?.Mode) opts.push(`mode=${m.TmpfsOptions.Mode.toString(8)}`);
        out.push({ Type: "tmpfs", Source: "", Destination: m.Target, Mode: opts.join(","), RW: !m.ReadOnly, Propagation: "" });
      }
    }
    for (const [target, o] of Object.entries(hc.Tmpfs ?? {})) {
      if (out.some((x) => x.Destination === target)) throw invalid(`Duplicate mount point: ${target}`);
      out.push({ Type: "tmpfs", Source: "", Destination: target, Mode: o, RW: !o.split(",").includes("ro"), Propagation: "" });
    }
    for (const target of Object.keys(imageVolumes ?? {})) {
      if (out.some((x) => x.Destination === target)) continue;
      const v = this.volumes.create(undefined, { anonymous: true });
      out.push({ Type: "volume", Name: v.Name, Source: v.Mountpoint, Destination: target, Driver: "local", Mode: "", RW: true, Propagation: "", Anonymous: true });
    }
    return out;
  }

  private specMounts(rec: ContainerRecord): Array<{ destination: string; type: string; source: string; options: string[] }> {
    return (rec.Mounts ?? []).map((m) =>
      m.Type === "tmpfs"
        ? { destination: m.Destination, type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec", ...m.Mode.split(",").filter(Boolean)] }
        : // read-only all the way down, as docker ≥ 25 makes read-only binds where the kernel can (5.12's mount_setattr)
          { destination: m.Destination, type: "bind", source: m.Source, options: [m.NonRecursive ? "bind" : "rbind", m.RW ? "rw" : "ro", ...(!m.RW && !m.NonRecursiveRO && !m.NonRecursive && recursiveReadOnly() ? ["rro"] : []), m.Propagation || "rprivate"] },
    );
  }

  /** Containers that use a volume (by name). */
  volumeUsers(name: string): string[] {
    return this.containers.ids().filter((id) => this.containers.read(id)?.rec.Mounts?.some((m) => m.Name === name));
  }

  private nsPath(mode: string, kind: string): string | "host" | undefined {
    if (!mode || mode === "private" || mode === "shareable") return undefined;
    if (mode === "host") return "host";
    const m = /^container:(.+)$/.exec(mode);
    if (!m) throw invalid(`invalid --${kind} mode: ${mode}`);
    const other = this.containers.read(this.containers.resolve(m[1]!));
    if (!other?.state.Running) throw precondition(`cannot join the ${kind} namespace of ${m[1]}: container is not running`);
    return `/proc/${other.state.Pid}/ns/${kind === "net" ? "net" : kind}`;
  }

  /**
   * Start a created or stopped container. `beforeStart` runs between create and start (attach
   * there to miss no output). With `handlesExit`, this process promises to call exited() when the
   * container ends (an attached `run`): the monitor then starts no exit command of its own unless
   * this process dies first.
   */
  async start(ref: string, opts: { beforeStart?: (id: string) => Promise<void>; handlesExit?: boolean } = {}): Promise<void> {
    const id = this.containers.resolve(ref);
    await this.reconcile(id);
    const lock = await this.containers.lock(id);
    try {
      const v = this.containers.read(id);
      if (!v) throw notFound(`No such container: ${ref}`);
      if (v.state.Running) return; // docker: starting a running container is not an error
      await this.startLocked(v.rec, v.state, opts.beforeStart, opts.handlesExit);
    } finally {
      lock.release();
    }
  }

  /**
   * A start, phase by phase. Three things run in the background while the next phases go on: the
   * rootfs's mount (awaited before launch), the network's rules (awaited when it is connected) and,
   * once the container's process exists, the veth's move into its namespace and the caller's
   * attach (awaited before release). On failure whatever was made is undone and the error recorded.
   */
  private async startLocked(rec: ContainerRecord, state: ContainerState, beforeStart?: (id: string) => Promise<void>, handlesExit = false): Promise<void> {
    const id = rec.Id;
    const dir = this.containers.path(id);
    const rootfs = join(dir, "rootfs");
    const { launcher } = await this.takeLaunch(rec, handlesExit);
    let mounting: Promise<void> | undefined;
    try {
      mounting = this.mountRootfs(rec, rootfs);
      const user = resolveUser(mounting ? layeredReader(this.images.snapshots.dirs(id)) : this.rootReader(id), rec.Config.User);
      trace("start: user resolved");
      const net = await this.allocateNetwork(rec);
      const mounts = [...this.specMounts(rec), ...this.writeContainerFiles(rec, dir, net)];
      const spec = this.writeSpec(rec, dir, rootfs, user, mounts);
      await mounting;
      trace("start: rootfs mounted");
      const launched = await this.launch(rec, dir, spec, launcher, net, beforeStart);
      const cniSettings = await this.joinNetwork(rec, dir, launched, net);
      await (launched.attaching ?? beforeStart?.(id));
      trace("start: attached");
      await this.runtime.start(id);
      trace("start: runtime started");
      this.recordStarted(rec, state, launched, net, cniSettings);
    } catch (e) {
      launcher.abort(); // a no-op once the runtime took it
      await mounting?.catch(() => {}); // settled, so the teardown sees (and unmounts) its mount
      await this.teardown(id);
      await this.runtime.discardCgroup(id, containerCgroup(id));
      this.containers.writeState(id, { ...state, Error: (e as Error).message });
      throw e;
    }
  }

  /** The launch create prepared (berth run: the monitor already started), or a new one after an earlier run's leftovers are cleared. */
  private async takeLaunch(rec: ContainerRecord, handlesExit: boolean): Promise<{ launcher: LaunchedHelper }> {
    const id = rec.Id;
    let pre = this.prepared.get(id);
    if (pre && pre.handlesExit !== handlesExit) {
      await this.dropPrepared(id);
      pre = undefined;
    }
    this.prepared.delete(id);
    if (pre) return pre;
    const dir = this.containers.path(id);
    for (const f of [MonitorFile.EXIT, MonitorFile.PID, MonitorFile.MONITOR_PID])
      try {
        fs.unlinkSync(join(dir, f));
      } catch {
        /* none */
      }
    if (this.runtime.has(id))
      try {
        await this.runtime.delete(id, { force: true });
      } catch {
        /* none */
      }
    trace("start: leftovers cleared");
    return this.prepareLaunch(rec, handlesExit);
  }

  /**
   * Starts the rootfs's overlay mount on the thread pool (undefined when there is nothing to mount
   * here). Rootless, the runtime mounts it inside the container's user namespace. --rm containers
   * and build steps get a volatile overlay (its unmount syncs nothing), as podman mounts --rm
   * containers and as BuildKit's steps are never synced either.
   */
  private mountRootfs(rec: ContainerRecord, rootfs: string): Promise<void> | undefined {
    fs.mkdirSync(rootfs, { recursive: true });
    if (isRootless() || isMountpoint(rootfs)) return undefined;
    const mounting = this.images.snapshots.mountAsync(rec.Id, rootfs, { volatile: rec.HostConfig.AutoRemove || !!rec.Builder });
    mounting.catch(() => {}); // awaited before the runtime's create
    trace("start: rootfs mounting");
    return mounting;
  }

  /**
   * The container's network, worked out before it exists (src/network/attach.ts): for bridge
   * networks the primary first (its gateway is the default route), then those connected since.
   */
  private async allocateNetwork(rec: ContainerRecord): Promise<Attachment> {
    const id = rec.Id;
    const mode = netMode(rec.HostConfig);
    const eps = rec.NetworkingConfig?.EndpointsConfig ?? {};
    let endpoints: EndpointRequest[] = [];
    if (mode.kind === "bridge") {
      const primary = eps[mode.network] ? mode.network : (Object.keys(eps).find((k) => k === "bridge" || k === "default") ?? mode.network);
      const names = [mode.network, ...Object.keys(eps).filter((k) => k !== primary && k !== mode.network)];
      endpoints = names.map((network, i) => {
        const ep = i === 0 ? eps[primary] : eps[network];
        return { network, ...(ep?.IPAMConfig?.IPv4Address ? { ip: ep.IPAMConfig.IPv4Address } : {}), ...(ep?.IPAMConfig?.IPv6Address ? { ip6: ep.IPAMConfig.IPv6Address } : {}), ...(ep?.MacAddress ? { mac: ep.MacAddress } : {}), ...(ep?.IPAMConfig?.LinkLocalIPs?.length ? { linkLocal: ep.IPAMConfig.LinkLocalIPs } : {}), aliases: ep?.Aliases ?? [], names: [rec.Name.slice(1), id.slice(0, 12)] };
      });
    }
    const net = await attachNetwork(this.network, { container: id, mode, rootless: isRootless(), endpoints, ports: portRequests(rec), active: (c) => this.isActive(c), pastaPidFile: this.containers.path(id, "pasta.pid") });
    trace("start: network allocated");
    return net;
  }

  /** The files berth writes for the container (hostname, hosts, resolv.conf), as the bind mounts that show them. */
  private writeContainerFiles(rec: ContainerRecord, dir: string, net: Attachment): Mount[] {
    const hc = rec.HostConfig;
    const files: Array<[string, string]> = [["hostname", `${rec.Config.Hostname}\n`]];
    if (net.mode.kind !== "container") {
      // legacy links: the container's own (--link) and those it was connected with on a network
      // (a network's link whose target is gone or stopped just does not resolve, as dockerd's embedded DNS)
      const nets = net.endpoints.map((e) => e.Network);
      const endpointLinks = Object.values(rec.NetworkingConfig?.EndpointsConfig ?? {}).flatMap((ep) => ep.Links ?? []);
      const linked = [
        ...this.linkedHosts(hc.Links ?? [], rec, nets),
        ...endpointLinks.flatMap((l) => {
          try {
            return this.linkedHosts([l], rec, nets);
          } catch {
            // a network's link whose target is gone or stopped does not resolve, as dockerd's DNS
            return [];
          }
        }),
      ];
      files.push(["hosts", hostsFile(rec.Config.Hostname, net.endpoints.flatMap((e) => [e.IPAddress, ...(e.GlobalIPv6Address ? [e.GlobalIPv6Address] : [])]), [...(hc.ExtraHosts ?? []), ...linked], net.endpoints[0]?.Gateway)]);
      files.push(["resolv.conf", resolvConf(hc, net.mode.kind !== "host", net.dns)]);
    }
    return etcMounts(dir, files, hc.ReadonlyRootfs);
  }

  /** The container's OCI spec, written into its bundle (and handed over too, not read back). */
  private writeSpec(rec: ContainerRecord, dir: string, rootfs: string, user: ReturnType<typeof resolveUser>, mounts: Mount[]): Spec {
    const hc = rec.HostConfig;
    const sec = hc.SecurityOpt ?? [];
    let seccomp: "unconfined" | Seccomp | undefined;
    for (const o of sec) {
      const [k, val] = o.includes("=") ? [o.slice(0, o.indexOf("=")), o.slice(o.indexOf("=") + 1)] : o.split(":");
      if (k === "seccomp" && val === "unconfined") seccomp = "unconfined";
      else if (k === "seccomp" && val) seccomp = seccompFromProfile(val, { capabilities: capabilitiesFor(hc) }); // the profile's JSON, as docker sends it
    }
    let spec = buildSpec({
      rec,
      rootfs,
      user,
      mounts,
      joinNamespaces: Object.fromEntries(
        [
          ["pid", this.nsPath(hc.PidMode, "pid")],
          ["ipc", this.nsPath(hc.IpcMode, "ipc")],
          ["uts", this.nsPath(hc.UTSMode, "uts")],
          ["network", hc.NetworkMode === "host" ? "host" : this.nsPath(hc.NetworkMode.startsWith("container:") ? hc.NetworkMode : "", "net")],
        ].filter(([, p]) => p !== undefined),
      ) as Record<string, string>,
      ...(seccomp ? { seccomp } : {}),
      noNewPrivileges: sec.some((o) => /^no-new-privileges(:true|=true)?$/.test(o)),
      ...(hc.Init ? { initPath: buildBinary("berth-init") } : {}),
    });
    if (isRootless()) spec = rootlessSpec(spec, this.images.snapshots.rootlessRoot(rec.Id, rootfs), ROOTFS_OVERLAY_ANNOTATION);
    fs.mkdirSync(join(dir, "bundle"), { recursive: true });
    writeFileAtomic(join(dir, "bundle", "config.json"), JSON.stringify(spec), false);
    trace("start: spec written");
    return spec;
  }

  /**
   * The runtime's create under the monitor's helper. Once the container's process exists (onPid),
   * its veth goes into its namespace and the caller attaches while its mounts are made; with a
   * terminal the caller attaches only after create (it sizes the terminal, which must exist).
   * pasta joins the namespaces as this user, before the container's init becomes another user.
   */
  private async launch(rec: ContainerRecord, dir: string, spec: Spec, launcher: LaunchedHelper, net: Attachment, beforeStart?: (id: string) => Promise<void>): Promise<Launched> {
    const id = rec.Id;
    const tty = rec.Config.Tty;
    let attaching: Promise<void> | undefined;
    const onPid = (p: number) => {
      net.onPid?.(p);
      if (beforeStart && !tty) {
        attaching = beforeStart(id);
        attaching.catch(() => {}); // awaited before the release
      }
    };
    const beforeSetup = net.beforeSetup;
    // the console socket is relative: the helper starts in the monitor's directory (paths there
    // can be longer than a socket address allows)
    await this.runtime.create(id, { bundle: join(dir, "bundle"), spec, pidFile: join(dir, MonitorFile.PID), stdio: ["ignore", "ignore", "ignore"], launcher, ...(tty ? { consoleSocket: MonitorFile.CONSOLE_SOCK } : {}), ...(net.onPid || (beforeStart && !tty) ? { onPid } : {}), ...(beforeSetup ? { beforeSetup } : {}) });
    const monitorPid = Number(fs.readFileSync(join(dir, MonitorFile.MONITOR_PID), "utf8"));
    const pid = Number(fs.readFileSync(join(dir, MonitorFile.PID), "utf8"));
    trace("start: runtime created");
    return { pid, monitorPid, attaching };
  }

  /** The container's network joined to its namespace; for a CNI network, its address goes into /etc/hosts and inspect's settings are returned. */
  private async joinNetwork(rec: ContainerRecord, dir: string, launched: Launched, net: Attachment): Promise<NetworkSettings | undefined> {
    const { pid } = launched;
    const result = await net.join(pid, [...berthCommand(this.root), "internal-dns"]);
    trace("start: network joined");
    if (!net.cni || !result) return undefined;
    const hc = rec.HostConfig;
    const ips = (result.ips ?? []).filter((i) => !i.address.includes(":"));
    const addr = ips[0]?.address.split("/") ?? [];
    fs.writeFileSync(join(dir, "hosts"), hostsFile(rec.Config.Hostname, addr[0] ? [addr[0]] : [], hc.ExtraHosts ?? [], ips[0]?.gateway));
    const settings = networkSettings(pid, [], [], [], rec);
    settings.Networks[net.cni.list.name] = { NetworkID: net.cni.list.name, EndpointID: "", Gateway: ips[0]?.gateway ?? "", IPAddress: addr[0] ?? "", IPPrefixLen: Number(addr[1] ?? 0), MacAddress: result.interfaces?.find((i) => i.sandbox)?.mac ?? "", Aliases: null, DNSNames: null };
    for (const p of portRequests(rec)) (settings.Ports[`${p.containerPort}/${p.proto}`] ??= []).push({ HostIp: p.hostIp, HostPort: String(p.hostPort) });
    return settings;
  }

  /** The started container's state: running, its pids, its network as inspect shows it; and the event. */
  private recordStarted(rec: ContainerRecord, state: ContainerState, launched: Launched, net: Attachment, cniSettings: NetworkSettings | undefined): void {
    const { pid, monitorPid } = launched;
    this.containers.writeState(rec.Id, {
      ...state,
      Status: "running",
      Running: true,
      Paused: false,
      Restarting: false,
      OOMKilled: false,
      Dead: false,
      Pid: pid,
      ExitCode: 0,
      Error: "",
      StartedAt: new Date().toISOString(),
      FinishedAt: state.FinishedAt,
      MonitorPid: monitorPid,
      MonitorStart: procStart(monitorPid),
      StoppedByUser: false,
      RestartRequested: false,
      ...(rec.Config.Healthcheck?.Test?.length && rec.Config.Healthcheck.Test[0] !== "NONE" ? { Health: { Status: "starting", FailingStreak: 0, Log: [] } } : { Health: undefined }),
      NetworkSettings: cniSettings ?? networkSettings(pid, net.endpoints, net.ports, net.endpoints.length ? this.network.store.read().networks : [], rec),
    });
    this.emit(rec, state.Restarting ? "restart" : "start");
  }

  /**
   * Removes a container's snapshot. Rootless, what the container's other users made belongs to
   * subordinate ids: what the user cannot delete as itself goes as root of a user namespace.
   */
  private async removeSnapshot(id: string): Promise<void> {
    try {
      this.images.snapshots.remove(id);
    } catch (e) {
      if (!isRootless() || !(e instanceof SyscallError) || (e.errno !== ERRNO.EACCES && e.errno !== ERRNO.EPERM)) throw e;
      const maps = rootlessIdMappings();
      if (!maps.ranged) throw e;
      await this.runtime.removeInUserNamespace(e.target, maps.uid, maps.gid);
      removeTree(e.target);
    }
  }

  /** The container's files as its process sees them: its mounted rootfs, or (rootless) its layers. */
  private rootReader(id: string): string | RootReader {
    const rootfs = this.containers.path(id, "rootfs");
    return isMountpoint(rootfs) ? rootfs : layeredReader(this.images.snapshots.dirs(id));
  }

  /**
   * Whether a container holds its network allocations rightly: it runs, or someone (a start in
   * progress) holds its lock. What no such container holds is reclaimed.
   */
  /** Whether a build's step container was left by a build that is not running any more. */
  orphanBuildStep(rec: ContainerRecord): boolean {
    return !!rec.Builder && !(pidAlive(rec.Builder.Pid) && procStart(rec.Builder.Pid) === rec.Builder.Start);
  }

  /** Whether a container runs (its monitor alive), or some command holds its lock now. */
  isActive(id: string): boolean {
    // a build's step has no record: it is active while its builder lives
    const builder = stepBuilder(id);
    if (builder !== undefined) return pidAlive(builder);
    const v = this.containers.read(id);
    if (!v) return false;
    if ((v.state.Running || v.state.Restarting) && this.monitorAlive(v.state)) return true;
    const lock = FileLock.tryAcquire(this.containers.path(id, "lock"), "exclusive");
    if (!lock) return true;
    lock.release();
    return false;
  }

  /**
   * Legacy links (--link NAME[:ALIAS]): each linked container's address, preferably on a network
   * this one shares, as /etc/hosts lines under the alias, its name and short ID ("host:ip" form).
   * A linked container must be running, as in docker.
   */
  private linkedHosts(links: string[], rec: ContainerRecord, networks: string[]): string[] {
    const out: string[] = [];
    for (const link of links) {
      // docker stores links as /name:/container/alias; the CLI sends name:alias
      const [target, aliasPath] = link.split(":") as [string, string | undefined];
      const name = target.replace(/^\//, "");
      const alias = (aliasPath ?? name).split("/").pop()!;
      let v: ContainerView | undefined;
      try {
        v = this.containers.read(this.containers.resolve(name));
      } catch {
        // resolve fails only for an unknown or ambiguous name: docker's words for both
        throw notFound(`could not get container for ${name}`);
      }
      if (!v?.state.Running) throw precondition(`Cannot link to a non running container: /${name} AS ${rec.Name}/${alias}`);
      const nets = Object.values(v.state.NetworkSettings?.Networks ?? {}) as Array<{ NetworkID?: string; IPAddress?: string }>;
      const ip = (nets.find((n) => n.NetworkID && networks.includes(n.NetworkID)) ?? nets.find((n) => n.IPAddress))?.IPAddress;
      if (!ip) throw precondition(`Cannot link to /${name}: it has no network address (--network none or host)`);
      for (const h of [...new Set([alias, v.rec.Name.slice(1), v.rec.Id.slice(0, 12)])]) out.push(`${h}:${ip}`);
    }
    return out;
  }

  /**
   * What a killed create or removal of container `id` left, its directory now at `dir`: whatever
   * the container held (processes, cgroups, runtime record, addresses and ports, its rootfs mount
   * and snapshot), then the directory. For `system repair`; the container has no record.
   */
  async discardLeftover(id: string, dir: string): Promise<void> {
    const rootfs = join(dir, "rootfs");
    if (isMountpoint(rootfs)) await unmountAsync(rootfs).catch(() => {}); // not mounted any more: nothing to unmount; a busy mount is reported by the removal below
    try {
      // (with no runtime record, it still removes the cgroup at the container's path)
      await this.runtime.delete(id, { force: true });
    } catch {
      /* no runtime record */
    }
    if (fs.existsSync(join(this.root, "network"))) {
      const held = this.network.store.held(id);
      if (held.endpoints.length || held.ports.length) await this.network.release(id).catch(() => {}); // best effort for a leftover: `system repair` releases what stays held
      if (this.network.cniState(id)) await this.network.cniDetach(id).catch(() => {}); // best effort for a leftover: the plugins' state file stays for `system repair`
    }
    if (this.images.snapshots.hasActive(id)) this.images.snapshots.remove(id);
    removeTree(dir, { detachMounts: true });
  }

  /** Unmount the rootfs and remove the runtime's record (the container is not running). */
  private async teardown(id: string, opts: { releaseLater?: boolean; unpublishInBackground?: boolean; removeSnapshot?: boolean } = {}): Promise<void> {
    // three independent jobs, overlapped: the network's release (its ports' map elements deleted
    // on worker threads), the runtime's record and cgroup, and the rootfs's unmount (on a worker
    // thread: overlayfs syncs its upper layer)
    const rootfs = this.containers.path(id, "rootfs");
    const unmount = isMountpoint(rootfs) ? unmountAsync(rootfs).catch(() => {}) : Promise.resolve(); // not mounted any more: nothing to unmount; a busy mount is reported by the snapshot's removal
    // a container about to be removed (--rm): its snapshot's files go as soon as it is unmounted,
    // beside the runtime's deletion (removeLocked takes this removal over)
    if (opts.removeSnapshot && !isRootless()) {
      const removal = unmount.then(() => this.images.snapshots.removeAsync(id));
      removal.catch(() => {}); // awaited by removeLocked, which reports its error
      this.snapshotRemovals.set(id, removal);
    }
    if (isRootless()) stopPasta(this.containers.path(id, "pasta.pid")); // only rootless containers have one
    const network = (async () => {
      if (!this.networking && !fs.existsSync(join(this.root, "network"))) return;
      const held = this.network.store.held(id);
      // (unpublishInBackground: its ports' elements are deleted by a process of their own)
      if (held.endpoints.length || held.ports.length) await (opts.unpublishInBackground ? this.network.releaseInBackground(id) : this.network.release(id)).catch(() => {}); // the container ended: what stays held is reclaimed by the next allocation (reclaim) or `system repair`
      if (this.network.cniState(id)) await this.network.cniDetach(id).catch(() => {}); // the container ended: the plugins' state file stays for `system repair`
    })();
    try {
      await this.runtime.delete(id, { force: true });
    } catch {
      /* not there */
    }
    trace("teardown: runtime state deleted");
    if (opts.releaseLater) {
      // unpublishing a port waits for an RCU grace period in the kernel: the caller goes on, and settles it before it returns
      this.releasing.add(network);
      void network.finally(() => this.releasing.delete(network));
      await unmount;
    } else await Promise.all([unmount, network]);
    trace("teardown: unmounted, network released");
  }

  /**
   * The container ended (called by its monitor's exit command, or by whoever noticed first):
   * record how, then apply --restart and --rm. opts.unpublishInBackground (an attached run, whose
   * user waits for it): published ports' elements are deleted by a process of their own, the
   * ports held until it has ended (Networking.releaseInBackground), instead of waiting for an RCU grace period on
   * the kernel here.
   */
  async exited(id: string, opts: { restart?: boolean; unpublishInBackground?: boolean } = {}): Promise<void> {
    const lock = await this.containers.lock(id);
    try {
      // --rm: removed under the same lock, its teardown done already; its exit is not recorded
      // first (the record goes), unless the removal fails
      const ended = await this.exitedLocked(id, opts);
      if (ended) {
        try {
          await this.removeLocked(ended.view, {}, true);
        } catch {
          // --rm's removal failed: the container stays, exited, for `rm` (docker keeps it too)
          this.containers.writeState(id, ended.view.state);
          removeFile(this.containers.path(id, MonitorFile.EXIT));
        }
      }
    } finally {
      lock.release();
    }
    await Promise.all(this.releasing);
    trace("exited: network released");
  }

  /** Snapshot removals a teardown started (its removeSnapshot), for removeLocked. */
  private readonly snapshotRemovals = new Map<string, Promise<void>>();

  /** Network releases a teardown left running (see teardown's releaseLater). */
  private readonly releasing = new Set<Promise<void>>();

  /**
   * exited() under the container's lock. A container to remove now (--rm) comes back with its
   * exited state, which is then not written (see exited).
   */
  private async exitedLocked(id: string, opts: { restart?: boolean; unpublishInBackground?: boolean }): Promise<{ view: ContainerView } | undefined> {
    let restart = false;
    let remove = false;
    {
      const v = this.containers.read(id);
      if (!v) return undefined;
      const text = fs.existsSync(this.containers.path(id, MonitorFile.EXIT)) ? fs.readFileSync(this.containers.path(id, MonitorFile.EXIT), "utf8") : "";
      if (!text && !v.state.Running) return undefined;
      if (!v.state.Running && !v.state.MonitorPid) return undefined; // settled already
      // a new monitor (a restart) is running: this exit is not news
      if (v.state.MonitorPid && v.state.MonitorPid !== process.pid && this.monitorAlive(v.state) && !text) return undefined;
      const field = (k: string) => Number(new RegExp(`^${k} (\\d+)$`, "m").exec(text)?.[1] ?? "0");
      const code = text ? field(ExitKey.CODE) : 255;
      let oom = false;
      try {
        oom = !!this.runtime.state(id).oomKilled;
      } catch {
        /* gone */
      }
      const finishedNs = text ? BigInt(new RegExp(`^${ExitKey.FINISHED} (\\d+)$`, "m").exec(text)?.[1] ?? "0") : BigInt(Date.now()) * 1_000_000n;
      trace("exited: exit read");
      const p = v.rec.HostConfig.RestartPolicy;
      restart =
        (opts.restart !== false && !v.state.StoppedByUser && !!v.state.RestartRequested) ||
        (opts.restart !== false &&
        !v.state.StoppedByUser &&
        (p.Name === "always" || p.Name === "unless-stopped" || (p.Name === "on-failure" && code !== 0 && (!p.MaximumRetryCount || v.state.RestartCount < p.MaximumRetryCount))));
      remove = !restart && v.rec.HostConfig.AutoRemove;
      await this.teardown(id, { releaseLater: true, unpublishInBackground: !!opts.unpublishInBackground, removeSnapshot: remove });
      trace("exited: torn down");
      const state: ContainerState = {
        ...v.state,
        Status: "exited",
        Running: false,
        Paused: false,
        Restarting: false,
        OOMKilled: oom,
        Pid: 0,
        ExitCode: code,
        FinishedAt: new Date(Number(finishedNs / 1_000_000n)).toISOString(),
        MonitorPid: undefined,
        MonitorStart: undefined,
        NetworkSettings: undefined,
      };
      state.RestartRequested = false;
      this.emit(v.rec, "die", { exitCode: String(code), ...(oom ? { oomKilled: "true" } : {}) });
      if (oom) this.emit(v.rec, "oom");
      if (restart) {
        state.Restarting = true;
        state.Status = "restarting";
      }
      if (remove) return { view: { rec: v.rec, state } };
      this.containers.writeState(id, state);
      // recorded: a monitor waiting on an attached `run` (-w) sees it handled
      removeFile(this.containers.path(id, MonitorFile.EXIT));
      if (restart) {
        // docker's back-off: 100 ms doubling, at most a minute
        await sleep(Math.min(100 * 2 ** state.RestartCount, 60_000));
        await Promise.all(this.releasing); // the last run's addresses and ports are given back first
        const cur = this.containers.read(id);
        if (cur && cur.state.Restarting && !cur.state.StoppedByUser) {
          cur.state.RestartCount++;
          await this.startLocked(cur.rec, cur.state).catch((e) => this.containers.writeState(id, { ...cur.state, Restarting: false, Error: (e as Error).message }));
        }
      }
    }
    return undefined;
  }

  // ---- stop, kill, remove

  async kill(ref: string, signal: string | number = "SIGKILL"): Promise<void> {
    const v = await this.get(ref);
    if (!v.state.Running) throw precondition(`Cannot kill container: ${ref}: Container ${v.rec.Id} is not running`);
    const sig = parseSignal(typeof signal === "string" ? signal.toUpperCase() : signal);
    if (sig === 9 || sig === 15 || sig === 2) this.containers.writeState(v.rec.Id, { ...v.state, StoppedByUser: true });
    this.runtime.kill(v.rec.Id, sig, { all: false });
    this.emit(v.rec, "kill", { signal: String(sig) });
  }

  /** docker stop: the stop signal, then SIGKILL after the timeout; returns when it has exited. */
  async stop(ref: string, timeoutSec?: number, signal?: string): Promise<void> {
    const v = await this.get(ref);
    if (!v.state.Running) {
      if (v.state.Restarting) this.containers.writeState(v.rec.Id, { ...v.state, Restarting: false, StoppedByUser: true });
      return;
    }
    const id = v.rec.Id;
    this.containers.writeState(id, { ...v.state, StoppedByUser: true });
    const timeout = timeoutSec ?? v.rec.Config.StopTimeout ?? 10;
    try {
      this.runtime.kill(id, parseSignal(signal ?? v.rec.Config.StopSignal ?? "SIGTERM"));
    } catch {
      /* already gone */
    }
    if (!(await this.waitExit(id, timeout * 1000))) {
      try {
        this.runtime.kill(id, 9, { all: true });
      } catch {
        /* gone */
      }
      await this.waitExit(id, 10_000);
    }
    await this.exited(id, { restart: false });
    this.emit(v.rec, "stop");
  }

  /** Wait until the monitor has recorded the exit (true) or the time is up (false). */
  private async waitExit(id: string, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    for (let wait = 5; Date.now() < end; wait = Math.min(wait * 2, 100)) {
      if (fs.existsSync(this.containers.path(id, MonitorFile.EXIT))) return true;
      const s = this.containers.read(id)?.state;
      if (!s || (!s.Running && !s.MonitorPid)) return true;
      if (s.MonitorPid && !pidAlive(s.MonitorPid)) return true;
      await sleep(wait);
    }
    return false;
  }

  /** docker wait: the exit code once the container has stopped (not restarting). */
  async wait(ref: string): Promise<number> {
    const id = this.containers.resolve(ref);
    for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
      await this.reconcile(id);
      const v = this.containers.read(id);
      if (!v) throw notFound(`No such container: ${ref}`);
      if (!v.state.Running && !v.state.Restarting && v.state.Status !== "created") return v.state.ExitCode;
      if (v.state.Status === "created" && !v.state.MonitorPid) return v.state.ExitCode;
      await sleep(wait);
    }
  }

  async remove(ref: string, opts: { force?: boolean; volumes?: boolean } = {}): Promise<string> {
    const v = await this.get(ref);
    const id = v.rec.Id;
    if (v.state.Running || v.state.Restarting) {
      if (!opts.force) throw precondition(`You cannot remove a running container ${id}. Stop the container before attempting removal or force remove`);
      this.containers.writeState(id, { ...v.state, StoppedByUser: true, Restarting: false });
      try {
        this.runtime.kill(id, 9, { all: true });
      } catch {
        /* gone */
      }
      await this.waitExit(id, 10_000);
    }
    const lock = await this.containers.lock(id);
    trace("remove: locked");
    try {
      await this.removeLocked(v, opts);
    } finally {
      lock.release();
    }
    return id;
  }

  /** remove() under the container's lock, the container not running (`tornDown`: its teardown done). */
  private async removeLocked(v: ContainerView, opts: { volumes?: boolean }, tornDown = false): Promise<void> {
    const id = v.rec.Id;
    await this.dropPrepared(id);
    if (!tornDown) await this.teardown(id);
    trace("remove: torn down");
    if (v.state.MonitorPid && pidAlive(v.state.MonitorPid) && procStart(v.state.MonitorPid) === v.state.MonitorStart) {
      try {
        process.kill(v.state.MonitorPid, "SIGKILL");
      } catch {
        /* gone */
      }
    }
    // the snapshot's files and the record's, deleted side by side on the thread pool
    const snapshot = this.snapshotRemovals.get(id) ?? (isRootless() ? this.removeSnapshot(id) : this.images.snapshots.removeAsync(id));
    this.snapshotRemovals.delete(id);
    snapshot.catch(() => {}); // awaited below
    this.containers.releaseName(v.rec.Name, id);
    await this.containers.removeAsync(id);
    await snapshot;
    trace("remove: snapshot and record removed");
    this.emit(v.rec, "destroy");
    // docker removes a container's anonymous volumes with rm -v (and always for --rm)
    if (opts.volumes || v.rec.HostConfig.AutoRemove)
      for (const m of v.rec.Mounts ?? []) if (m.Anonymous && m.Name && !this.volumeUsers(m.Name).length) this.volumes.remove(m.Name, [], true);
  }

  /**
   * docker network connect: a running container gets the endpoint at once (a new interface in
   * its namespace); a stopped one on its next start.
   */
  async connectNetwork(ref: string, network: string, opts: { aliases?: string[]; ip?: string; ip6?: string; linkLocal?: string[]; links?: string[] } = {}): Promise<void> {
    checkLinkLocal(opts.linkLocal);
    const v = await this.get(ref);
    const id = v.rec.Id;
    const net = this.network.store.get(network);
    // a container not yet running whose networks were all disconnected (none) may join one again
    const rejoin = !v.state.Running && v.rec.HostConfig.NetworkMode === "none";
    if (netMode(v.rec.HostConfig).kind !== "bridge" && !rejoin) throw precondition(`container ${ref} is in the ${v.rec.HostConfig.NetworkMode} network mode: it cannot join other networks`);
    const lock = await this.containers.lock(id);
    try {
      const cur = this.containers.read(id)!;
      const eps = { ...(cur.rec.NetworkingConfig?.EndpointsConfig ?? {}) };
      if (eps[net.Name] || (cur.state.NetworkSettings?.Networks ?? {})[net.Name] || (net.Name === "bridge" && netMode(cur.rec.HostConfig).kind === "bridge" && (cur.rec.HostConfig.NetworkMode === "default" || cur.rec.HostConfig.NetworkMode === "bridge")))
        throw exists(`endpoint with name ${cur.rec.Name.slice(1)} already exists in network ${net.Name}`);
      const ipam = { ...(opts.ip ? { IPv4Address: opts.ip } : {}), ...(opts.ip6 ? { IPv6Address: opts.ip6 } : {}), ...(opts.linkLocal?.length ? { LinkLocalIPs: opts.linkLocal } : {}) };
      // links are kept as the API gives them (NAME:ALIAS); their targets must exist now, as for --link
      for (const l of opts.links ?? []) {
        const target = l.split(":")[0]!.replace(/^\//, "");
        try {
          this.containers.resolve(target);
        } catch {
          // resolve fails only for an unknown or ambiguous name: docker's words for both
          throw invalid(`could not get container for ${target}`);
        }
      }
      eps[net.Name] = { Aliases: opts.aliases ?? [], ...(Object.keys(ipam).length ? { IPAMConfig: ipam } : {}), ...(opts.links?.length ? { Links: opts.links } : {}) };
      if (cur.state.Running) {
        const a = await this.network.allocate(id, [{ network: net.Name, ...(opts.ip ? { ip: opts.ip } : {}), ...(opts.ip6 ? { ip6: opts.ip6 } : {}), ...(opts.linkLocal?.length ? { linkLocal: opts.linkLocal } : {}), aliases: opts.aliases ?? [], names: [cur.rec.Name.slice(1), id.slice(0, 12)] }], [], (c) => this.isActive(c));
        let linked: string[] = [];
        try {
          await this.network.plumb(`/proc/${cur.state.Pid}/ns/net`, a.endpoints);
          linked = this.linkedHosts(opts.links ?? [], cur.rec, a.endpoints.map((e) => e.Network));
        } catch (e) {
          await this.network.release(id, net.Id, { links: true });
          throw e;
        }
        // the running container sees its new links at once: its /etc/hosts grows in place (a bind mount of the file)
        if (linked.length) fs.appendFileSync(this.containers.path(id, "hosts"), linked.map((h) => `${h.slice(h.lastIndexOf(":") + 1)}\t${h.slice(0, h.lastIndexOf(":"))}\n`).join(""));
        const held = this.network.store.held(id);
        this.containers.writeState(id, { ...cur.state, NetworkSettings: networkSettings(cur.state.Pid, held.endpoints, held.ports, this.network.store.read().networks, { ...cur.rec, NetworkingConfig: { EndpointsConfig: eps } }) });
      }
      const hc = cur.rec.HostConfig.NetworkMode === "none" ? { ...cur.rec.HostConfig, NetworkMode: net.Name } : cur.rec.HostConfig;
      this.containers.writeConfig({ ...cur.rec, HostConfig: hc, NetworkingConfig: { EndpointsConfig: eps } });
      this.emit(cur.rec, "connect", { network: net.Id });
    } finally {
      lock.release();
    }
  }

  async disconnectNetwork(ref: string, network: string): Promise<void> {
    const v = await this.get(ref);
    const id = v.rec.Id;
    const net = this.network.store.get(network);
    const lock = await this.containers.lock(id);
    try {
      const cur = this.containers.read(id)!;
      const eps = { ...(cur.rec.NetworkingConfig?.EndpointsConfig ?? {}) };
      const attached = cur.state.Running ? this.network.store.held(id).endpoints.some((e) => e.Network === net.Id) : !!eps[net.Name] || cur.rec.HostConfig.NetworkMode === net.Name;
      if (!attached) throw precondition(`container ${cur.rec.Id.slice(0, 12)} is not connected to network ${net.Name}`);
      if (cur.state.Running) await this.network.release(id, net.Id, { links: true });
      delete eps[net.Name];
      // the network mode names the primary network: another one the container is on takes its place
      const wasPrimary = cur.rec.HostConfig.NetworkMode === net.Name || (net.Name === "bridge" && ["default", "bridge"].includes(cur.rec.HostConfig.NetworkMode));
      const hc = wasPrimary ? { ...cur.rec.HostConfig, NetworkMode: Object.keys(eps)[0] ?? "none" } : cur.rec.HostConfig;
      this.containers.writeConfig({ ...cur.rec, HostConfig: hc, NetworkingConfig: { EndpointsConfig: eps } });
      if (cur.state.Running) {
        const held = this.network.store.held(id);
        this.containers.writeState(id, { ...cur.state, NetworkSettings: networkSettings(cur.state.Pid, held.endpoints, held.ports, this.network.store.read().networks, { ...cur.rec, HostConfig: hc }) });
      }
      this.emit(cur.rec, "disconnect", { network: net.Id });
    } finally {
      lock.release();
    }
  }

  /** docker pause (paused=true) and unpause: the cgroup frozen or thawed, the state and an event. */
  async pause(ref: string, paused: boolean): Promise<void> {
    const v = await this.get(ref);
    if (paused && !v.state.Running) throw precondition(`Container ${v.rec.Id} is not running`);
    if (!paused && !v.state.Paused) throw precondition(`Container ${v.rec.Id} is not paused`);
    if (paused) this.runtime.pause(v.rec.Id);
    else this.runtime.resume(v.rec.Id);
    this.containers.writeState(v.rec.Id, { ...v.state, Paused: paused });
    this.emit(v.rec, paused ? "pause" : "unpause");
  }

  /** docker rename: the name, and what the networks' DNS answers for. */
  async rename(ref: string, newName: string): Promise<void> {
    const v = await this.get(ref);
    const name = newName.replace(/^\//, "");
    this.containers.renameTo(v.rec.Id, v.rec.Name, name);
    this.containers.writeConfig({ ...v.rec, Name: `/${name}` });
    if (this.networking || fs.existsSync(join(this.root, "network", "networks.json"))) await this.network.store.renameEndpoints(v.rec.Id, v.rec.Name.slice(1), name);
    this.emit({ ...v.rec, Name: `/${name}` }, "rename", { oldName: v.rec.Name });
  }

  /**
   * docker rm --link /parent/alias: the parent container's legacy link of that name goes (the
   * linked container stays); the parent's /etc/hosts keeps the entry until it starts again, as dockerd's.
   */
  async removeLink(linkName: string): Promise<void> {
    const clean = `/${linkName.replace(/^\/+/, "")}`;
    const cut = clean.lastIndexOf("/");
    if (cut <= 0) throw exists("Conflict, cannot remove the default link name of the container");
    const parent = clean.slice(1, cut);
    let v: Awaited<ReturnType<Engine["get"]>>;
    try {
      v = await this.get(parent);
    } catch {
      // get fails only for an unknown or ambiguous name: docker's words for both
      throw notFound(`Cannot get parent /${parent} for link name ${clean}`);
    }
    const lock = await this.containers.lock(v.rec.Id);
    try {
      const rec = this.containers.read(v.rec.Id)?.rec ?? v.rec;
      const links = rec.HostConfig.Links ?? [];
      const kept = links.filter((l) => l.split(":")[1] !== clean);
      if (kept.length === links.length) throw notFound(`Could not find link ${clean} on container /${parent}`);
      this.containers.writeConfig({ ...rec, HostConfig: { ...rec.HostConfig, Links: kept.length ? kept : null } });
    } finally {
      lock.release();
    }
  }

  /** docker update: new limits in the record, and in the cgroup when it runs. */
  async update(ref: string, hc: CreateRequest["HostConfig"]): Promise<void> {
    const v = await this.get(ref);
    const resources = resourcesFor(hc);
    validateRequest({ Config: v.rec.Config, HostConfig: hc });
    const lock = await this.containers.lock(v.rec.Id);
    try {
      if (v.state.Running) this.runtime.update(v.rec.Id, resources);
      this.containers.writeConfig({ ...v.rec, HostConfig: hc });
    } finally {
      lock.release();
    }
  }

  /** Resize a running container's terminal (through its init's stdin, the pty's other end). */
  async resize(ref: string, rows: number, cols: number): Promise<void> {
    const id = this.containers.resolve(ref);
    const v = this.containers.read(id);
    if (!v?.rec.Config.Tty) return;
    // the init's pid from the monitor's file: this works between create and start too, so the
    // size is right before the command first asks for it
    const pid = Number(fs.readFileSync(this.containers.path(id, MonitorFile.PID), "utf8"));
    const fd = fs.openSync(`/proc/${pid}/fd/0`, fs.constants.O_RDWR | fs.constants.O_NOCTTY);
    try {
      setWindowSize(fd, rows, cols);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * One health check (run by the monitor every interval): the test in the container, with its
   * timeout; after Retries failures in a row (outside the start period) the container is
   * unhealthy, and with --restart-on-unhealthy it is restarted.
   */
  async healthCheck(id: string): Promise<void> {
    const v = this.containers.read(id);
    const hc = v?.rec.Config.Healthcheck;
    if (!v || !hc?.Test?.length || !v.state.Running || v.state.Paused) return;
    const test = hc.Test[0] === "CMD-SHELL" ? ["/bin/sh", "-c", hc.Test.slice(1).join(" ")] : hc.Test[0] === "CMD" ? hc.Test.slice(1) : hc.Test;
    const timeoutMs = (hc.Timeout ?? 30e9) / 1e6;
    const outFile = this.containers.path(id, `health-${process.pid}.out`);
    const pidFile = this.containers.path(id, `health-${process.pid}.pid`);
    const fd = fs.openSync(outFile, "w+");
    const start = new Date().toISOString();
    let code: number;
    const timer = setTimeout(() => {
      try {
        process.kill(Number(fs.readFileSync(pidFile, "utf8")), "SIGKILL");
      } catch {
        /* done meanwhile */
      }
    }, timeoutMs);
    try {
      const spec = JSON.parse(fs.readFileSync(this.containers.path(id, "bundle/config.json"), "utf8"));
      const r = await this.runtime.exec(id, { ...spec.process, terminal: false, args: test }, { stdio: ["ignore", fd, fd], pidFile });
      code = r.exitCode ?? 1;
    } catch (e) {
      fs.writeSync(fd, (e as Error).message);
      code = 1;
    } finally {
      clearTimeout(timer);
    }
    const output = fs.readFileSync(outFile, "utf8").slice(0, 4096);
    fs.closeSync(fd);
    fs.rmSync(outFile, { force: true });
    fs.rmSync(pidFile, { force: true });
    const lock = await this.containers.lock(id);
    let restart = false;
    try {
      const cur = this.containers.read(id);
      if (!cur?.state.Running) return;
      const h = cur.state.Health ?? { Status: "starting", FailingStreak: 0, Log: [] };
      h.Log = [...h.Log, { Start: start, End: new Date().toISOString(), ExitCode: code, Output: output }].slice(-5);
      const inStartPeriod = Date.now() - Date.parse(cur.state.StartedAt) < (hc.StartPeriod ?? 0) / 1e6;
      if (code === 0) {
        h.Status = "healthy";
        h.FailingStreak = 0;
      } else if (!inStartPeriod) {
        h.FailingStreak++;
        if (h.FailingStreak >= (hc.Retries ?? 3)) h.Status = "unhealthy";
      }
      restart = h.Status === "unhealthy" && !!cur.rec.HostConfig.RestartOnUnhealthy;
      this.containers.writeState(id, { ...cur.state, Health: h, ...(restart ? { RestartRequested: true } : {}) });
      if (h.Status !== (cur.state.Health?.Status ?? "starting")) this.emit(cur.rec, `health_status: ${h.Status}`);
    } finally {
      lock.release();
    }
    if (restart) this.runtime.kill(id, 9, { all: true });
  }

  // ---- attach, exec, commit

  /** Connect to the container's output (docker's stdcopy frames) and stdin. */
  attach(id: string): Promise<Socket> {
    // through a directory fd: the socket's full path may be longer than a socket address allows
    const dirFd = fs.openSync(this.containers.path(id), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    return new Promise<Socket>((resolve, reject) => {
      const s = connect(`/proc/self/fd/${dirFd}/${MonitorFile.ATTACH_SOCK}`);
      s.once("connect", () => resolve(s));
      s.once("error", (e) => reject(new BerthError("System", `cannot attach to ${id.slice(0, 12)}: ${e.message}`)));
    }).finally(() => fs.closeSync(dirFd));
  }

  async exec(ref: string, argv: string[], opts: { user?: string; workdir?: string; env?: string[]; tty?: boolean; detach?: boolean; privileged?: boolean } = {}): Promise<number> {
    const { id, proc } = await this.execProcess(ref, argv, opts);
    const r = await this.runtime.exec(id, proc, { detach: !!opts.detach, stdio: opts.detach ? ["ignore", "ignore", "ignore"] : "inherit" });
    return r.exitCode ?? 0;
  }

  /**
   * exec with the process's stdio as streams of ours (the API's exec start): stdin to write (or
   * none), stdout and stderr to read, and its exit code. With tty: the process gets a terminal
   * (the helper relays it to a pseudo-terminal of ours), its output is all on stdout, and
   * resize(rows, cols) sets its window size.
   */
  async execStreams(ref: string, argv: string[], opts: { user?: string; workdir?: string; env?: string[]; stdin?: boolean; tty?: boolean; size?: { rows: number; cols: number } } = {}): Promise<{ pid: number; stdin?: import("node:stream").Writable; stdout: import("node:stream").Readable; stderr: import("node:stream").Readable; exit: Promise<number>; resize?: (rows: number, cols: number) => void }> {
    if (opts.tty) return this.execTerminal(ref, argv, opts);
    const { id, proc } = await this.execProcess(ref, argv, opts);
    const out = pipe(),
      err = pipe(),
      inp = opts.stdin ? pipe() : undefined;
    let pidSeen!: (pid: number) => void;
    const started = new Promise<number>((res) => (pidSeen = res));
    // runtime.exec spawns its helper before its first await: the child's ends are its own by then
    const run = this.runtime.exec(id, proc, { stdio: [inp ? inp[0] : "ignore", out[1], err[1]], onPid: pidSeen, forwardSignals: false });
    for (const fd of [out[1], err[1], ...(inp ? [inp[0]] : [])]) fs.closeSync(fd);
    const exit = run.then((r) => r.exitCode ?? 0);
    exit.catch(() => pidSeen(0));
    const pid = await Promise.race([started, exit.then(() => 0)]);
    const stdin = inp ? fs.createWriteStream("", { fd: inp[1] }) : undefined;
    stdin?.on("error", () => {}); // the process closed its stdin (EPIPE): what it did not read is dropped
    return { pid, stdout: fs.createReadStream("", { fd: out[0] }), stderr: fs.createReadStream("", { fd: err[0] }), ...(stdin ? { stdin } : {}), exit };
  }

  private async execTerminal(ref: string, argv: string[], opts: { user?: string; workdir?: string; env?: string[]; stdin?: boolean; size?: { rows: number; cols: number } }) {
    const { id, proc } = await this.execProcess(ref, argv, { ...opts, tty: true });
    const [master, slave] = openpty();
    // the helper reads its window size from its stdin (our terminal) when it starts and on SIGWINCH
    if (opts.size) setWindowSize(master, opts.size.rows, opts.size.cols);
    let helper = 0;
    let pidSeen!: (pid: number) => void;
    const started = new Promise<number>((res) => (pidSeen = res));
    const run = this.runtime.exec(id, proc, { stdio: [slave, slave, slave], onPid: pidSeen, onHelper: (p) => (helper = p), forwardSignals: false });
    fs.closeSync(slave);
    const exit = run.then((r) => r.exitCode ?? 0);
    exit.catch(() => pidSeen(0));
    const pid = await Promise.race([started, exit.then(() => 0)]);
    // read through libuv's tty handle (non-blocking, no thread held while the terminal is quiet);
    // it owns the descriptor, and ends (EIO) once the helper has gone. Input is written to the same
    // descriptor, never after the handle has begun to close it.
    const streams = builtin<typeof import("node:stream")>("node:stream");
    const stdout = new (builtin<typeof import("node:tty")>("node:tty").ReadStream)(master);
    let open = true;
    const closing = () => (open = false);
    stdout.on("error", closing);
    stdout.on("end", closing);
    stdout.on("close", closing);
    const writeAll = (b: Buffer, cb: (e?: Error | null) => void): void => {
      if (!open) return cb();
      try {
        const n = fs.writeSync(master, b);
        if (n < b.length) return void setTimeout(() => writeAll(b.subarray(n), cb), 5);
        cb();
      } catch (e) {
        // a full terminal buffer (the process is not reading): try again shortly
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") return void setTimeout(() => writeAll(b, cb), 5);
        cb();
      }
    };
    const stdin = opts.stdin ? new streams.Writable({ write: (chunk: Buffer, _enc, cb) => writeAll(chunk, cb) }) : undefined;
    const stderr = new streams.PassThrough();
    stderr.end();
    const resize = (rows: number, cols: number) => {
      if (!open) return;
      try {
        setWindowSize(master, rows, cols);
        if (helper) process.kill(helper, "SIGWINCH");
      } catch {
        /* ended */
      }
    };
    return { pid, stdout, stderr, exit, resize, ...(stdin ? { stdin } : {}) };
  }

  private async execProcess(ref: string, argv: string[], opts: { user?: string; workdir?: string; env?: string[]; tty?: boolean }) {
    const v = await this.get(ref);
    if (!v.state.Running) throw precondition(`Container ${v.rec.Id} is not running`);
    if (v.state.Paused) throw precondition(`Container ${v.rec.Id} is paused, unpause the container before exec`);
    const user = resolveUser(this.rootReader(v.rec.Id), opts.user ?? v.rec.Config.User);
    const spec = JSON.parse(fs.readFileSync(this.containers.path(v.rec.Id, "bundle/config.json"), "utf8"));
    const env = new Map<string, string>();
    for (const e of [...(spec.process.env as string[]), ...(opts.env ?? [])]) env.set(e.split("=")[0]!, e);
    const proc = {
      ...spec.process,
      terminal: !!opts.tty,
      args: argv,
      env: [...env.values()],
      cwd: opts.workdir || spec.process.cwd,
      user: { uid: user.uid, gid: user.gid, ...(user.additionalGids.length ? { additionalGids: user.additionalGids } : {}) },
    };
    return { id: v.rec.Id, proc };
  }

  /**
   * The container's file changes as a new image. Its config is the container's, with what
   * opts.config sets taking precedence (docker commit's request body), then the Dockerfile-style changes.
   */
  async commit(ref: string, opts: { reference?: string; changes?: string[]; message?: string; author?: string; pause?: boolean; config?: Record<string, unknown> } = {}): Promise<ImageRecord> {
    const v = await this.get(ref);
    const parent = this.images.find(v.rec.Image);
    const pause = opts.pause !== false && v.state.Running && !v.state.Paused;
    const c = v.rec.Config;
    const commit = () =>
      commitSnapshot(this.images, {
        snapshot: v.rec.Id,
        ...(parent ? { parent } : {}),
        config: { Env: c.Env, Cmd: c.Cmd ?? undefined, Entrypoint: c.Entrypoint ?? undefined, WorkingDir: c.WorkingDir, User: c.User, Labels: c.Labels, ...(c.ExposedPorts ? { ExposedPorts: c.ExposedPorts } : {}), ...(c.StopSignal ? { StopSignal: c.StopSignal } : {}), ...opts.config },
        createdBy: [v.rec.Path, ...v.rec.Args].join(" "),
        ...(opts.changes ? { changes: opts.changes } : {}),
        ...(opts.message ? { message: opts.message } : {}),
        ...(opts.author ? { author: opts.author } : {}),
        ...(opts.reference ? { reference: opts.reference } : {}),
      });
    return pause ? this.withPaused(v.rec.Id, commit) : commit();
  }

  /**
   * Runs fn with the container frozen, pausers counted across processes (ten concurrent commits of
   * one container): each holds a file named after its pid in the container's `pausers` directory;
   * the first freezes, the last one out thaws; a pauser that died does not count. A container that
   * a user paused meanwhile (docker pause) is left paused.
   */
  private async withPaused<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const dir = this.containers.path(id, "pausers");
    const me = join(dir, `${process.pid}.${Math.random().toString(36).slice(2, 8)}`);
    const lockPath = this.containers.path(id, "pause.lock");
    const others = () =>
      (fs.existsSync(dir) ? fs.readdirSync(dir) : []).filter((f) => join(dir, f) !== me && pidAlive(Number(f.split(".")[0])));
    await withLock(lockPath, "exclusive", () => {
      fs.mkdirSync(dir, { recursive: true });
      const frozen = others().length > 0;
      fs.writeFileSync(me, "");
      if (!frozen && !this.runtime.isPaused(id)) this.runtime.pause(id);
    });
    try {
      return await fn();
    } finally {
      await withLock(lockPath, "exclusive", async () => {
        removeFile(me);
        if (others().length) return; // another pauser still needs it frozen
        const cur = this.containers.read(id);
        if (cur?.state.Paused) return; // a user's pause: theirs to undo
        if (this.runtime.isPaused(id)) this.runtime.resume(id);
      });
    }
  }

  /** The entry at `path` in a container (docker's HEAD /containers/{id}/archive); undefined when missing. */
  statPath(ref: string, path: string): Promise<PathStat | undefined> {
    return this.withPath(ref, path, false, async (root, p, mountPoint) => {
      if (!mountPoint) return statInRoot(root, p);
      // the mount point itself: its source, under the name it has in the container
      const st = statInRoot(dirname(root), basename(root));
      return st && { ...st, name: mountPoint };
    });
  }

  /** A tar of `path` in a container, handed to `consume` (see copy.ts: safe against a container changing its tree meanwhile). */
  copyFrom<T>(ref: string, path: string, opts: { followLink?: boolean; rename?: string }, consume: (tar: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
    return this.withPath(ref, path, false, (root, p, mountPoint) =>
      // the mount point itself (not its contents, `DIR/.`): a directory named as in the container
      mountPoint && !/(^|\/)\.$/.test(path) ? copyOut(dirname(root), basename(root), { ...opts, rename: opts.rename ?? mountPoint }, consume) : copyOut(root, p, opts, consume),
    );
  }

  /** Extracts a tar into the directory `dir` of a container. */
  copyTo(ref: string, dir: string, tar: AsyncIterable<Buffer>, opts: { keepOwners?: boolean } = {}): Promise<void> {
    return this.withPath(ref, dir, true, (root, p) => copyIn(root, p, tar, opts));
  }

  /**
   * A path of a container as cp sees it: inside a bind mount or volume (the longest destination
   * that holds it), the mount's source on the host, resolved inside that source; otherwise the
   * container's root file system. A read-only mount refuses writes, as dockerd.
   */
  private async withPath<T>(ref: string, path: string, write: boolean, fn: (root: string, path: string, mountPoint?: string) => Promise<T>): Promise<T> {
    const v = await this.get(ref);
    const clean = "/" + path.split("/").filter((p) => p && p !== ".").join("/");
    const mount = (v.rec.Mounts ?? [])
      .filter((m) => (m.Type === "bind" || m.Type === "volume") && m.Source && (clean === m.Destination || clean.startsWith(m.Destination.replace(/\/$/, "") + "/")))
      .sort((a, b) => b.Destination.length - a.Destination.length)[0];
    if (!mount) return this.withRootfs(v, (root) => fn(root, path));
    if (write && !mount.RW) throw precondition(`mounted volume is marked read-only: ${mount.Destination}`);
    const rest = clean.slice(mount.Destination.replace(/\/$/, "").length);
    return rest ? fn(mount.Source, rest) : fn(mount.Source, "/", basename(mount.Destination) || "/");
  }

  /** A container's root file system as a tar (docker export), handed to `consume` while it is mounted. */
  exportContainer<T>(ref: string, consume: (tar: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
    return this.withRootfs(ref, (root) => exportRootfs(root, consume));
  }

  /** The container's file system, mounted (for export and cp): calls fn with the path. */
  async withRootfs<T>(ref: string | ContainerView, fn: (dir: string) => Promise<T>): Promise<T> {
    const v = typeof ref === "string" ? await this.get(ref) : ref;
    const rootfs = this.containers.path(v.rec.Id, "rootfs");
    if (isMountpoint(rootfs)) return fn(rootfs);
    if (isRootless()) {
      // the rootfs is mounted in the container's own namespace only: a running container's is
      // reached through its init's /proc root (the user's own process)
      if (v.state.Running && v.state.Pid) return fn(`/proc/${v.state.Pid}/root`);
      throw unsupported("rootless berth cannot mount a stopped container's layers on the host: cp, export and commit need it running (or root)");
    }
    const lock = await this.containers.lock(v.rec.Id);
    try {
      fs.mkdirSync(rootfs, { recursive: true });
      this.images.snapshots.mount(v.rec.Id, rootfs);
      try {
        return await fn(rootfs);
      } finally {
        unmountPath(rootfs);
      }
    } finally {
      lock.release();
    }
  }
}

export function isMountpoint(path: string): boolean {
  try {
    const a = fs.statSync(path),
      b = fs.statSync(join(path, ".."));
    if (a.dev !== b.dev) return true;
    return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === path);
  } catch {
    // gone or unreadable: not a mount point
    return false;
  }
}


/** -v SRC:DST[:OPTS] — an absolute SRC binds a host path, a name a volume. */
export function parseBind(spec: string): MountSpec {
  const parts = spec.split(":");
  if (parts.length < 1 || parts.length > 3 || !parts[0]) throw invalid(`invalid volume specification: '${spec}'`);
  if (parts.length === 1) return { Type: "volume", Target: parts[0]! };
  const [src, dst, opts = ""] = parts as [string, string, string?];
  if (!dst.startsWith("/")) throw invalid(`invalid volume specification: '${spec}': invalid mount config for type "${src.startsWith("/") ? "bind" : "volume"}": invalid mount path: '${dst}' mount path must be absolute`);
  const o = opts.split(",").filter(Boolean);
  for (const x of o) if (!["ro", "rw", "z", "Z", "shared", "rshared", "slave", "rslave", "private", "rprivate", "nocopy", "consistent", "cached", "delegated"].includes(x)) throw invalid(`invalid mode: ${x}`);
  const propagation = o.find((x) => /^r?(shared|slave|private)$/.test(x));
  return { Type: src.startsWith("/") ? "bind" : "volume", Source: src, Target: dst, ReadOnly: o.includes("ro"), ...(propagation ? { BindOptions: { Propagation: propagation } } : {}) };
}

/** docker's --ulimit NAME=SOFT[:HARD]. */
export function parseUlimit(u: string): Ulimit {
  const m = /^([a-z]+)=(-?\d+)(?::(-?\d+))?$/.exec(u);
  if (!m) throw invalid(`invalid ulimit argument: ${u}`);
  return { Name: m[1]!, Soft: Number(m[2]), Hard: Number(m[3] ?? m[2]) };
}

/** docker's RAMInBytes: 12, 12b, 12k, 12m, 12g (binary units), case-insensitive. */
export function parseSize(s: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?$/i.exec(s.trim());
  if (!m) throw invalid(`invalid size: '${s}'`);
  const mult = { "": 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 }[m[2]!.toLowerCase() as "" | "k"]!;
  return Math.floor(Number(m[1]) * mult);
}

/** json-file's limits unless daemon.json's log-opts or the container set them: docker's `local` driver's (5 files of 20 MB). */
export const DEFAULT_LOG_OPTS: Record<string, string> = { "max-size": "20m", "max-file": "5" };

function validateRequest(req: CreateRequest): void {
  const p = req.HostConfig.RestartPolicy;
  if (!["", "no", "always", "unless-stopped", "on-failure"].includes(p.Name)) throw invalid(`invalid restart policy '${p.Name}'`);
  if (p.MaximumRetryCount && p.Name !== "on-failure") throw invalid(`maximum retry count cannot be used with restart policy '${p.Name}'`);
  if (req.HostConfig.AutoRemove && p.Name && p.Name !== "no") throw invalid("Conflicting options: --restart and --rm");
  for (const r of req.HostConfig.DeviceCgroupRules ?? []) parseDeviceCgroupRule(r);
  const shm = req.HostConfig.ShmSize;
  if (shm !== undefined && (!Number.isInteger(shm) || shm < 0)) throw invalid(`SHM size can not be less than 0 (got ${shm})`);
  const driver = req.HostConfig.LogConfig.Type;
  // dockerd's words for a driver it does not have
  if (!["json-file", "local", "none"].includes(driver)) throw invalid(`logger: no log driver named '${driver}' is registered`);
  // (as dockerd, the none driver takes any option and ignores it)
  const opts = driver === "local" ? ["max-size", "max-file", "compress"] : ["max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"];
  if (driver !== "none") for (const k of Object.keys(req.HostConfig.LogConfig.Config)) if (!opts.includes(k)) throw invalid(`unknown log opt '${k}' for ${driver} log driver`);
  for (const o of req.HostConfig.SecurityOpt ?? []) if (o.startsWith("seccomp=") && o !== "seccomp=unconfined") seccompFromProfile(o.slice("seccomp=".length), { capabilities: [] });
}
