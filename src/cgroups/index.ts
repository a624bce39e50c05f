/**
 * Resource control: one cgroup layer over v1 (a hierarchy per controller), v2 (unified) and the
 * hybrid layout (v1 controllers plus a v2 mount), detected at run time from /proc/self/mountinfo.
 * The runtime uses `openCgroup(path)`; drivers and the value mapping are exported for tests and tools.
 */
import { existsSync, readFileSync, rmdirSync } from "node:fs";
import { join } from "../common/path.js";
import { BerthError, invalid } from "../common/errors.js";
import { writeDetached } from "../common/sys.js";
import { trace } from "../common/trace.js";
import { V1Driver, V2Driver, ownCgroups, type CgroupDriver, type CgroupEntry, type EntryOptions, type Hierarchy } from "./driver.js";
import type { HostLimits, LinuxResources } from "./resources.js";
import type { Stats } from "./stats.js";

export { V1Driver, V2Driver, type CgroupDriver, type CgroupEntry, type EntryOptions, type Hierarchy } from "./driver.js";
export { v1Writes, v2Writes, validateResources, sharesToWeight, blkioToIoWeight, parseCpuList, type LinuxResources, type CgroupWrite } from "./resources.js";
export type { Stats } from "./stats.js";
export { deviceFilterProgram } from "./devicefilter.js";

export type CgroupLayout = "v1" | "v2" | "hybrid";

let cachedHierarchies: Hierarchy[] | undefined;

/** The host's cgroup hierarchies, read from /proc/self/mountinfo. */
export function hierarchies(): Hierarchy[] {
  if (cachedHierarchies) return cachedHierarchies;
  const out: Hierarchy[] = [];
  const notControllers = ["rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const [fstype, , superOpts = ""] = line.slice(sep + 3).split(" ");
    if (pre[3] !== "/") continue; // a bind of a sub-cgroup, not a hierarchy root
    const mount = pre[4]!.replace(/\\040/g, " ");
    if (fstype === "cgroup2") {
      let controllers: string[] = [];
      try {
        controllers = readFileSync(join(mount, "cgroup.controllers"), "utf8").trim().split(/\s+/).filter(Boolean);
      } catch {
        // unreadable: no controllers
      }
      out.push({ mount, controllers, v2: true });
    } else if (fstype === "cgroup") {
      const controllers = superOpts.split(",").filter((o) => !notControllers.includes(o) && (!o.includes("=") || o.startsWith("name=")));
      if (out.some((h) => h.controllers.join() === controllers.join())) continue;
      out.push({ mount, controllers, v2: false });
    }
  }
  cachedHierarchies = out;
  return out;
}

export function layout(): CgroupLayout {
  const h = hierarchies();
  const v1 = h.some((x) => !x.v2);
  const v2 = h.some((x) => x.v2);
  return v1 && v2 ? "hybrid" : v2 ? "v2" : "v1";
}

function hostLimits(): HostLimits {
  const read = (p: string, fallback: string) => {
    try {
      return readFileSync(p, "utf8").trim();
    } catch {
      // a host without this file: the fallback is the kernel's default
      return fallback;
    }
  };
  return { cpus: read("/sys/devices/system/cpu/online", "0"), mems: read("/sys/devices/system/node/online", "0") };
}

let cachedDriver: CgroupDriver | undefined;

/** The driver for this host: v2 when only the unified hierarchy exists, v1 (with the hybrid's v2 mount) otherwise. */
export function hostDriver(): CgroupDriver {
  if (cachedDriver) return cachedDriver;
  const h = hierarchies();
  if (h.length === 0) throw new BerthError("Unsupported", "no cgroup file system is mounted on this host");
  cachedDriver = layout() === "v2" ? new V2Driver(h[0]!.mount, hostLimits()) : new V1Driver(h, hostLimits());
  return cachedDriver;
}

/**
 * runc's semantics: an absolute cgroupsPath as given; a relative one stays relative (no leading
 * slash), to be opened under the runtime's own cgroups (ownCgroupBase); none: /berth/<id>.
 */
export function cgroupPathFor(id: string, cgroupsPath?: string): string {
  if (!cgroupsPath) return `/berth/${id}`;
  if (cgroupsPath.includes(":") && !cgroupsPath.startsWith("/"))
    throw new BerthError("Unsupported", `cgroupsPath ${JSON.stringify(cgroupsPath)} is a systemd slice path; berth uses cgroupfs (systemd cgroups are not supported on this host)`);
  if (cgroupsPath.split("/").includes("..")) throw invalid(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)} escapes the cgroup root`);
  const clean = join("/", cgroupsPath);
  if (clean === "/") throw invalid("linux.cgroupsPath: the root cgroup cannot hold a container");
  return cgroupsPath.startsWith("/") ? clean : clean.slice(1);
}

/**
 * Where a relative cgroupsPath goes, as runc puts it: under the caller's own cgroup in each
 * hierarchy (on v1 each controller's own: they differ where a process was moved in one only); on
 * v2 under the parent of the caller's own (which holds processes already, so no child of it may
 * take controllers). Keyed as hierarchyKey. Recorded at create: later commands may run elsewhere.
 */
export function ownCgroupBase(): Record<string, string> {
  const base: Record<string, string> = {};
  for (const [key, path] of ownCgroups()) base[key] = key === "" ? path.replace(/\/[^/]*$/, "") || "/" : path;
  return base;
}

/** A container's cgroup on this host's hierarchies. */
export class Cgroup {
  constructor(
    readonly path: string,
    readonly driver: CgroupDriver = hostDriver(),
  ) {}

  create(): void {
    this.driver.create(this.path);
  }
  createAsync(): Promise<void> {
    return this.driver.createAsync(this.path);
  }
  procsFiles(): string[] {
    return this.driver.procsFiles(this.path);
  }
  entry(opts: EntryOptions): CgroupEntry {
    return this.driver.entry(this.path, opts);
  }
  apply(r: LinuxResources, opts?: { devices?: boolean }): string[] {
    return this.driver.apply(this.path, r, opts);
  }
  pids(): number[] {
    return this.driver.pids(this.path);
  }
  /** The processes in the cgroup, none when it does not exist (yet). */
  pidsIfExists(): number[] {
    try {
      return this.driver.pids(this.path);
    } catch {
      // not made (yet), or removed: no processes
      return [];
    }
  }
  freeze(frozen: boolean): void {
    this.driver.freeze(this.path, frozen);
  }
  isFrozen(): boolean {
    return this.driver.isFrozen(this.path);
  }
  frozenAt(): string | undefined {
    return this.driver.frozenAt(this.path);
  }
  /** The parents of this cgroup that do not exist yet (deepest first): what create would make. */
  missingParents(): string[] {
    const parts = this.path.split("/").filter(Boolean);
    const out: string[] = [];
    const mount = this.driver.hierarchies[0]?.mount;
    for (let i = parts.length - 1; i > 0 && mount; i--) {
      const p = "/" + parts.slice(0, i).join("/");
      if (existsSync(join(mount, p))) break;
      out.push(p);
    }
    return out;
  }
  /** Removes these cgroups (deepest first) in every hierarchy where they are empty. */
  removeIfEmpty(paths: string[]): void {
    for (const p of paths)
      for (const h of this.driver.hierarchies)
        try {
          rmdirSync(join(h.mount, p));
        } catch {
          // not empty (another container uses it) or not there
        }
  }
  stats(): Stats {
    return this.driver.stats(this.path);
  }
  oomKills(): number {
    return this.driver.oomKills(this.path);
  }
  mountSources() {
    return this.driver.mountSources(this.path);
  }
  deviceFilter(rules: LinuxResources["devices"]) {
    return this.driver.deviceFilter(this.path, rules);
  }
  /** Removes the cgroup everywhere (berth's parent stays, as docker's `/docker` does: see removeEmptyParent). */
  remove(): void {
    this.driver.remove(this.path);
  }
}

/**
 * Removes berth's parent cgroup `berth` wherever it holds no container. Containers leave it in
 * place (re-making it cost every run on v1); what wants nothing left behind (tests,
 * install's training, the bench) calls this when done.
 */
export function removeEmptyParent(): void {
  for (const h of hierarchies())
    try {
      rmdirSync(join(h.mount, "berth"));
    } catch {
      // holds containers, or was never made
    }
}

/** A cgroup by path; a relative path under base (ownCgroupBase at its create). */
export function openCgroup(path: string, base?: Record<string, string>): Cgroup {
  if (!path.startsWith("/")) {
    if (!base) throw invalid(`cgroup path ${path} is relative, and nothing says what to`);
    return new Cgroup(path, hostDriver().rebased(base));
  }
  return new Cgroup(path);
}

/**
 * After a quiet spell, the first move of a process between cgroups waits for an RCU grace period
 * (the kernel's cgroup threadgroup lock switching to writer mode: an RCU grace period, paid by
 * runc and crun alike); for a while after a move, further moves are cheap. A no-op move of
 * this process into the cgroup it is already in, started in a worker thread as a container's
 * creation begins, pays that wait while berth prepares the rest, so the helper's move of the
 * container's init finds the lock ready. Nothing changes membership; failures are ignored (it is
 * only a head start). Only for moves (CgroupEntry.procs, see movesAfterClone): a container's init
 * is cloned into v2 cgroups and born in v1 cgroups its helper joined first.
 */
/** The cgroup.procs files a container's init is moved in through (under the kernel's global lock). */
export function movesAfterClone(e: CgroupEntry): string[] {
  return e.procs.filter((f) => !e.cloneInto || f !== join(e.cloneInto, "cgroup.procs"));
}

let primed = false;
export function primeAttach(): void {
  if (primed) return; // once per process: the first start of a wait is the one that helps
  primed = true;
  try {
    const h = hierarchies().find((x) => x.v2 === (layout() === "v2")) ?? hierarchies()[0];
    if (!h) return;
    const want = h.v2 ? "" : h.controllers.join(",");
    const line = readFileSync("/proc/self/cgroup", "utf8")
      .split("\n")
      .find((l) => l.split(":")[1] === want);
    if (!line) return;
    const own = line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1);
    // a thread of its own: the wait starts now, and no pool thread is held (or pool made) for it
    // a failure costs only the head start: the container's own move still works (or says why)
    writeDetached(join(h.mount, own, "cgroup.procs"), String(process.pid)).catch((e: Error) => trace(`prime attach: ${e.message}`));
  } catch (e) {
    trace(`prime attach: ${(e as Error).message}`); // only a head start, as above
  }
}
