import { treeBytes } from "../common/sys.js";
/**
 * Volumes, container changes and statistics, disk usage, pruning, events and host information as
 * data for the front ends (the CLI formats them; the Docker API serialises them).
 */
import { pruneCache } from "./build.js";
import { repair } from "./repair.js";
import { logTime } from "./logs.js";
export { repair } from "./repair.js";
import * as fs from "node:fs";
import * as os from "node:os";
import { join } from "../common/path.js";
import { BerthError, invalid } from "../common/errors.js";
import { layout } from "../cgroups/index.js";
import type { Engine, ContainerView } from "./engine.js";
import type { BerthEvent } from "./events.js";

// ---- volumes

export type Volume = ReturnType<Engine["volumes"]["get"]>;

export function createVolume(engine: Engine, name: string | undefined, opts: { driver?: string; labels?: Record<string, string>; options?: Record<string, string> } = {}): Volume {
  const existed = name !== undefined && engine.volumes.has(name);
  const v = engine.volumes.create(name, { labels: opts.labels ?? {}, ...(opts.driver ? { driver: opts.driver } : {}), options: opts.options ?? {} });
  if (!existed) engine.events.emit("volume", "create", v.Name, { driver: "local" });
  return v;
}

/** Volumes, with docker's filters (`dangling`, `name`, `driver`, `label`), each `key=value`. */
export function listVolumes(engine: Engine, filters: string[] = []): Volume[] {
  let vols = engine.volumes.list();
  for (const f of filters) {
    const eq = f.indexOf("=");
    if (eq < 0) throw invalid(`bad format of filter (expected name=value): ${f}`);
    const k = f.slice(0, eq),
      val = f.slice(eq + 1);
    if (k === "dangling") vols = vols.filter((v) => (engine.volumeUsers(v.Name).length === 0) === (val === "true" || val === "1"));
    else if (k === "name") vols = vols.filter((v) => v.Name.includes(val));
    else if (k === "driver") vols = vols.filter((v) => v.Driver === val);
    else if (k === "label") {
      const [lk, lv] = val.split("=", 2) as [string, string | undefined];
      vols = vols.filter((v) => lk in v.Labels && (lv === undefined || v.Labels[lk] === lv));
    } else throw invalid(`invalid filter '${k}'`);
  }
  return vols;
}

/** A volume as `docker volume inspect` shows it. */
export function inspectVolume(engine: Engine, name: string): Omit<Volume, "Anonymous"> {
  const { Anonymous: _anonymous, ...v } = engine.volumes.get(name);
  return v;
}

export function removeVolume(engine: Engine, name: string, opts: { force?: boolean } = {}): void {
  engine.volumes.remove(name, engine.volumeUsers(name), !!opts.force);
  engine.events.emit("volume", "destroy", name, { driver: "local" });
}

/** Removes the volumes no container uses: anonymous ones, or all with `all`. */
export function pruneVolumes(engine: Engine, opts: { all?: boolean } = {}): { deleted: string[]; reclaimed: number } {
  const deleted: string[] = [];
  let reclaimed = 0;
  for (const v of engine.volumes.list()) {
    if (!opts.all && !v.Anonymous) continue;
    if (engine.volumeUsers(v.Name).length) continue;
    reclaimed += treeBytes(v.Mountpoint);
    engine.volumes.remove(v.Name, []);
    engine.events.emit("volume", "destroy", v.Name, { driver: "local" });
    deleted.push(v.Name);
  }
  return { deleted, reclaimed };
}

/** Bytes of the regular files under dir (`du -sb` without hard-link sharing): 0 when it is gone. */
export { treeBytes };

// ---- containers

/**
 * Containers as `docker ps` and GET /containers/json list them: running ones (all with `all`, or
 * when a status or exited filter asks), filtered by docker's keys (`id`, `name`, `label`, `status`,
 * `exited`, `ancestor`, `network`, `volume`), each `key=value`; newest first.
 */
export async function listContainers(engine: Engine, opts: { all?: boolean; filters?: string[] } = {}): Promise<ContainerView[]> {
  const filters = (opts.filters ?? []).map((f) => {
    const eq = f.indexOf("=");
    if (eq <= 0) throw invalid(`bad format of filter (expected name=value): ${f}`);
    return [f.slice(0, eq), f.slice(eq + 1)] as const;
  });
  for (const [k] of filters) if (!["status", "name", "id", "label", "exited", "ancestor", "network", "volume"].includes(k)) throw invalid(`invalid filter '${k}'`);
  let views = await engine.list();
  const all = !!opts.all || filters.some(([k]) => k === "status" || k === "exited");
  if (!all) views = views.filter((v) => v.state.Running || v.state.Restarting);
  // values of one key are alternatives (docker ORs them), except labels, which must all match;
  // different keys must all match
  const keys = [...new Set(filters.map(([k]) => k))];
  const test = (v: ContainerView, k: string, val: string): boolean => {
    switch (k) {
      case "status":
        return (v.state.Restarting ? "restarting" : v.state.Paused ? "paused" : v.state.Status) === val;
      case "name":
        return new RegExp(val).test(v.rec.Name.slice(1));
      case "id":
        return v.rec.Id.startsWith(val);
      case "label": {
        const [lk, lv] = val.split("=", 2) as [string, string | undefined];
        return lk in (v.rec.Config.Labels ?? {}) && (lv === undefined || v.rec.Config.Labels[lk] === lv);
      }
      case "exited":
        return !v.state.Running && v.state.Status === "exited" && v.state.ExitCode === Number(val);
      case "ancestor":
        return v.rec.Config.Image === val || v.rec.Image.startsWith(val.startsWith("sha256:") ? val : `sha256:${val}`) || engine.images.find(val)?.id === v.rec.Image;
      case "network": {
        const nets = v.state.NetworkSettings?.Networks ?? {};
        return Object.entries(nets).some(([name, n]) => name === val || (n as { NetworkID?: string }).NetworkID?.startsWith(val));
      }
      case "volume":
        return (v.rec.Mounts ?? []).some((m) => m.Name === val || m.Destination === val || m.Source === val);
    }
    return false;
  };
  return views.filter((v) => keys.every((k) => (k === "label" ? filters.every(([fk, val]) => fk !== k || test(v, k, val)) : filters.some(([fk, val]) => fk === k && test(v, k, val)))));
}

// ---- changes (docker diff, GET /containers/{id}/changes)

/** docker's change kinds: 0 modified, 1 added, 2 deleted. */
export interface Change {
  Path: string;
  Kind: 0 | 1 | 2;
}

/** What the container changed relative to its image, from its overlay upper dir. */
export async function changes(engine: Engine, ref: string): Promise<Change[]> {
  const v = await engine.get(ref);
  const snaps = engine.images.snapshots;
  if (snaps.kind !== "overlay") throw new BerthError("Unsupported", "diff needs the overlay snapshotter");
  const upper = snaps.changes(v.rec.Id);
  const lowerDirs: string[] = [];
  for (let id = v.rec.SnapshotParent; id; id = snaps.layer(id)?.parent) lowerDirs.push(snaps.layerDir(id));
  const inLower = (rel: string) => lowerDirs.some((d) => fs.lstatSync(join(d, rel), { throwIfNoEntry: false }) !== undefined);
  const out: Change[] = [];
  // the mount points berth itself creates in the container are not changes, as in docker
  const ignore = new Set(["/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/sys", ...(v.rec.Mounts ?? []).map((m) => m.Destination)]);
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(join(upper, rel)).sort()) {
      const r = `${rel}/${name}`;
      const st = fs.lstatSync(join(upper, r));
      if (ignore.has(r)) continue;
      if (st.isCharacterDevice() && st.rdev === 0) out.push({ Path: r, Kind: 2 });
      else {
        out.push({ Path: r, Kind: inLower(r) ? 0 : 1 });
        if (st.isDirectory()) walk(r);
      }
    }
  };
  walk("");
  return out;
}

/** The bytes a container wrote (its writable layer), as docker's SizeRw. */
export function containerSize(engine: Engine, id: string): number {
  if (engine.images.snapshots.kind !== "overlay") return 0;
  return treeBytes(engine.images.snapshots.changes(id));
}

// ---- statistics

/** One sample of a container's resource use (what `docker stats` computes its columns from). */
export interface StatsSample {
  id: string;
  name: string;
  /** Nanoseconds of CPU used in total; a rate needs two samples. */
  cpuTotalNs: number;
  memoryUsage: number;
  /** The container's limit, or the host's memory when it has none. */
  memoryLimit: number;
  pids: number;
  netRx: number;
  netTx: number;
  blockRead: number;
  blockWrite: number;
}

/** Bytes received and sent on a process's network interfaces (lo left out), from its /proc/PID/net/dev. */
export function netCounters(pid: number): { rx: number; tx: number } {
  let rx = 0,
    tx = 0;
  try {
    for (const line of fs.readFileSync(`/proc/${pid}/net/dev`, "utf8").split("\n").slice(2)) {
      const m = /^\s*([^:]+):\s*(.*)$/.exec(line);
      if (!m || m[1] === "lo") continue;
      const f = m[2]!.trim().split(/\s+/).map(Number);
      rx += f[0] ?? 0;
      tx += f[8] ?? 0;
    }
  } catch {
    // the process is gone
  }
  return { rx, tx };
}

const hostMemory = () => Number(fs.readFileSync("/proc/meminfo", "utf8").match(/MemTotal:\s+(\d+)/)?.[1] ?? 0) * 1024;

export function statsOf(engine: Engine, v: ContainerView): StatsSample {
  let s: ReturnType<Engine["runtime"]["stats"]> | undefined;
  try {
    if (v.state.Running) s = engine.runtime.stats(v.rec.Id);
  } catch {
    // stopped meanwhile: zeros, as docker shows a stopped container
  }
  const limit = s?.memory?.usage?.limit ?? 0;
  const blk = (s?.blkio ?? {}) as { ioServiceBytesRecursive?: { op: string; value: number }[] };
  const ops = blk.ioServiceBytesRecursive ?? [];
  const net = v.state.Running && v.state.Pid ? netCounters(v.state.Pid) : { rx: 0, tx: 0 };
  return {
    id: v.rec.Id,
    name: v.rec.Name.slice(1),
    cpuTotalNs: s?.cpu?.usage?.total ?? 0,
    memoryUsage: Math.max(0, (s?.memory?.usage?.usage ?? 0) - (s?.memory?.cache ?? 0)), // docker subtracts the page cache
    memoryLimit: limit && limit < 2 ** 62 ? limit : hostMemory(),
    pids: s?.pids?.current ?? 0,
    netRx: net.rx,
    netTx: net.tx,
    blockRead: ops.filter((o) => /read/i.test(o.op)).reduce((n, o) => n + o.value, 0),
    blockWrite: ops.filter((o) => /write/i.test(o.op)).reduce((n, o) => n + o.value, 0),
  };
}

// ---- disk usage and pruning

export interface DiskUsage {
  images: { total: number; active: number; size: number; reclaimable: number; list: ReturnType<Engine["images"]["list"]> };
  containers: { total: number; active: number; size: number; reclaimable: number; sizes: Record<string, number> };
  volumes: { total: number; active: number; size: number; reclaimable: number };
  buildCache: { total: number; active: number; size: number; reclaimable: number };
}

/** berth system df: what images, containers (their writable layers) and volumes take. */
export async function diskUsage(engine: Engine): Promise<DiskUsage> {
  const imgs = engine.images.list();
  const used = new Set(imgs.filter((r) => engine.imageUsers(r.id).length).map((r) => r.id));
  const u = engine.images.usage();
  const activeSize = imgs.filter((r) => used.has(r.id)).reduce((n, r) => n + r.size, 0);
  const views = await engine.list();
  const sizes: Record<string, number> = {};
  let csize = 0,
    creclaim = 0;
  for (const v of views) {
    const n = containerSize(engine, v.rec.Id);
    sizes[v.rec.Id] = n;
    csize += n;
    if (!v.state.Running) creclaim += n;
  }
  const vols = engine.volumes.list();
  let vsize = 0,
    vunused = 0,
    vactive = 0;
  for (const v of vols) {
    const n = treeBytes(v.Mountpoint);
    vsize += n;
    if (engine.volumeUsers(v.Name).length) vactive++;
    else vunused += n;
  }
  return {
    images: { total: imgs.length, active: used.size, size: u.layersSize, reclaimable: Math.max(0, u.layersSize - activeSize), list: imgs },
    containers: { total: views.length, active: views.filter((v) => v.state.Running).length, size: csize, reclaimable: creclaim, sizes },
    volumes: { total: vols.length, active: vactive, size: vsize, reclaimable: vunused },
    buildCache: { total: 0, active: 0, size: 0, reclaimable: 0 },
  };
}

/** Removes the stopped containers: their ids, and the bytes their writable layers held. */
/**
 * docker's prune filters for containers: `until=TIME` (created before it), `label=K[=V]`,
 * `label!=K[=V]`; any other key is an error, as dockerd's.
 */
function pruneFilter(filters: string[]): (v: ContainerView) => boolean {
  const checks: ((v: ContainerView) => boolean)[] = [];
  for (const f of filters) {
    const eq = f.indexOf("=");
    const key = f.slice(0, eq < 0 ? f.length : eq);
    const value = eq < 0 ? "" : f.slice(eq + 1);
    const labelTest = (v: ContainerView, spec: string) => {
      const [k, val] = spec.split("=", 2) as [string, string | undefined];
      const labels = v.rec.Config.Labels ?? {};
      return k in labels && (val === undefined || labels[k] === val);
    };
    if (key === "until") {
      const ns = logTime(value, "until");
      if (ns === undefined) throw invalid(`invalid filter 'until=${value}'`);
      checks.push((v) => BigInt(Date.parse(v.rec.Created)) * 1_000_000n < ns);
    } else if (key === "label") checks.push((v) => labelTest(v, value));
    else if (key === "label!") checks.push((v) => !labelTest(v, value));
    else throw invalid(`invalid filter '${key}'`);
  }
  return (v) => checks.every((c) => c(v));
}

export async function pruneContainers(engine: Engine, filters: string[] = []): Promise<{ deleted: string[]; reclaimed: number }> {
  const deleted: string[] = [];
  let reclaimed = 0;
  const keep = pruneFilter(filters);
  for (const v of await engine.list())
    if (!v.state.Running && !v.state.Restarting && keep(v)) {
      reclaimed += containerSize(engine, v.rec.Id);
      deleted.push(await engine.remove(v.rec.Id));
    }
  return { deleted, reclaimed };
}

/** Stopped containers, unused anonymous volumes (with `volumes`), dangling (or, with `all`, unused) images and the build cache. */
export async function systemPrune(engine: Engine, opts: { all?: boolean; volumes?: boolean } = {}): Promise<{ repaired: string[]; containers: string[]; volumes: string[]; images: string[]; buildCache: string[]; reclaimed: number }> {
  // what killed commands left goes first: it may hold names, snapshots and addresses
  const repaired = await repair(engine);
  const c = await pruneContainers(engine);
  const vols = opts.volumes ? pruneVolumes(engine) : { deleted: [], reclaimed: 0 };
  const r = await engine.images.prune({ all: !!opts.all, inUse: engine.imageUsers });
  for (const d of r.deleted) engine.events.emit("image", "delete", d, { name: d });
  const cache = await pruneCache(engine);
  return { repaired, containers: c.deleted, volumes: vols.deleted, images: r.deleted, buildCache: cache.deleted, reclaimed: c.reclaimed + vols.reclaimed + r.reclaimed + cache.reclaimed };
}

// ---- events

/** A time as docker's --since/--until take it (unix seconds, a duration ago such as 10m, or a date), in ns. */
export function eventTime(s: string | undefined): bigint | undefined {
  if (!s) return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return BigInt(Math.floor(Number(s) * 1e9));
  const m = /^(\d+)(s|m|h)$/.exec(s);
  if (m) return (BigInt(Date.now()) - BigInt(Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s"])) * 1_000_000n;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw invalid(`invalid value for --since/--until: ${s}`);
  return BigInt(t) * 1_000_000n;
}

/** docker's event filters (`type`, `event`, `container`, `image`, `volume`, `label`), each `key=value`. */
export function eventFilter(filters: string[]): (e: BerthEvent) => boolean {
  const pairs = filters.map((f) => [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] as const);
  for (const [k] of pairs) if (!["type", "event", "container", "image", "volume", "label"].includes(k)) throw invalid(`invalid filter '${k}'`);
  return (e) =>
    pairs.every(([k, v]) => {
      switch (k) {
        case "type":
          return pairs.some(([fk, fv]) => fk === "type" && fv === e.Type);
        case "event":
          return pairs.some(([fk, fv]) => fk === "event" && (fv === e.Action || e.Action.startsWith(fv + ":")));
        case "container":
        case "image":
        case "volume": {
          if (e.Type !== k && !(k === "image" && e.Type === "container")) return false;
          const vals = pairs.filter(([fk]) => fk === k).map(([, fv]) => fv);
          const a = e.Actor;
          return vals.some((fv) => a.ID.startsWith(fv) || a.Attributes.name === fv || (k === "image" && a.Attributes.image === fv));
        }
        case "label": {
          const [lk, lv] = v.split("=", 2) as [string, string | undefined];
          return lk in e.Actor.Attributes && (lv === undefined || e.Actor.Attributes[lk] === lv);
        }
      }
      return true;
    });
}

/** The engine's events from `since` to `until` (followed while `until` is not given), filtered. */
export function events(engine: Engine, opts: { since?: string; until?: string; filters?: string[]; signal?: AbortSignal } = {}): AsyncIterable<BerthEvent> {
  const keep = eventFilter(opts.filters ?? []);
  const sinceNs = eventTime(opts.since),
    untilNs = eventTime(opts.until);
  const source = engine.events.read({ ...(sinceNs !== undefined ? { sinceNs } : {}), ...(untilNs !== undefined ? { untilNs } : {}), follow: untilNs === undefined, ...(opts.signal ? { signal: opts.signal } : {}) });
  return (async function* () {
    for await (const e of source) if (keep(e)) yield e;
  })();
}

// ---- the host

/** berth info: what docker info reports, from this host and store. */
export async function info(engine: Engine): Promise<Record<string, string | number | string[]>> {
  const views = await engine.list();
  return {
    ID: "berth",
    Containers: views.length,
    ContainersRunning: views.filter((v) => v.state.Running && !v.state.Paused).length,
    ContainersPaused: views.filter((v) => v.state.Paused).length,
    ContainersStopped: views.filter((v) => !v.state.Running).length,
    Images: engine.images.list().length,
    Driver: engine.images.snapshots.kind === "overlay" ? "overlay2" : "vfs",
    DockerRootDir: engine.root,
    CgroupDriver: "cgroupfs",
    CgroupVersion: layout() === "v2" ? "2" : "1",
    KernelVersion: os.release(),
    OperatingSystem: (fs.readFileSync("/etc/os-release", "utf8").match(/^PRETTY_NAME="?([^"\n]*)/m) ?? [])[1] ?? "Linux",
    OSType: "linux",
    Architecture: os.machine(),
    NCPU: os.cpus().length,
    MemTotal: os.totalmem(),
    Name: os.hostname(),
    ServerVersion: "0.1.0",
    DefaultRuntime: "berth-runtime",
    LoggingDriver: "json-file",
    SecurityOptions: ["name=seccomp,profile=builtin"],
  };
}
