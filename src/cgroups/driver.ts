/**
 * The two cgroup drivers behind one interface. A driver works on a set of hierarchy mounts that
 * can be the host's (/sys/fs/cgroup/...) or a fake directory tree, which is how the conformance
 * suite checks the value mapping without root.
 *
 * Vocabulary: a cgroup "path" is relative to each hierarchy's root ("/berth/<id>"); a hierarchy is
 * one mounted cgroup tree: on v1 one per controller set, on v2 the single unified tree.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "../common/path.js";
import { BerthError, invalid, notFound } from "../common/errors.js";
import { mkdirsAsync } from "../common/sys.js";
import { defaultDeviceRules, v1Writes, v2Writes, validateResources, type CgroupWrite, type DeviceRule, type HostLimits, type LinuxResources } from "./resources.js";
import { deviceFilterProgram } from "./devicefilter.js";
import { readStats, type Stats } from "./stats.js";

export interface Hierarchy {
  /** Where the cgroups the driver's paths name are: the hierarchy's mount, or (rebased) a cgroup under it. */
  mount: string;
  /** The hierarchy's mount itself, when `mount` is a cgroup under it (a driver rebased on the caller's own cgroups). */
  root?: string;
  /** Controllers it carries (v1: e.g. ["cpu","cpuacct"], ["name=systemd"]); v2: those in cgroup.controllers. */
  controllers: string[];
  v2: boolean;
}

/**
 * How a container's first process gets into its cgroup, per hierarchy, cheapest first:
 * - cloneInto (v2, and the v2 mount of a hybrid host): cloned straight into the directory
 *   (clone3 CLONE_INTO_CGROUP), its cgroup.procs (also listed in procs) written only on kernels
 *   without it;
 * - joins (v1, as root): the helper moves itself in right before clone, as one thread ("0" to
 *   tasks), which the kernel does without its global cgroup lock, then moves back (to `back`,
 *   its own tasks file); the child is born in the cgroup;
 * - procs: the child's pid written to cgroup.procs after clone, a move under that lock, whose
 *   first taking after a quiet spell waits an RCU grace period.
 */
export interface CgroupEntry {
  cloneInto?: string;
  joins: { dir: string; back: string }[];
  procs: string[];
}

export interface EntryOptions {
  /** Whether the helper may join (root; the caller's own cgroups are where it returns). */
  helperJoins: boolean;
  /** Whether the pids limit leaves no room for the helper beside the process (the caller knows
   * how many the cgroup holds: a new container none, an exec's container its own) */
  pidsTight?: boolean;
  /**
   * exec --cgroup: an existing sub-cgroup of the container's to enter instead, for every hierarchy
   * ("" key) or by v1 controller ("memory" → "sub"), as runc's `[controller:]path`.
   */
  sub?: Record<string, string>;
}

/** The sub-cgroup of `dir` an exec asked for, checked: inside the container's cgroup, and made already. */
function subDir(dir: string, controllers: string[], sub: Record<string, string> | undefined): string {
  const rel = sub ? (controllers.map((c) => sub[c]).find((x) => x !== undefined) ?? sub[""]) : undefined;
  if (rel === undefined) return dir;
  if (rel.split("/").includes("..")) throw invalid(`--cgroup ${rel}: a sub-cgroup cannot leave the container's cgroup`);
  const out = join(dir, rel);
  if (!existsSync(out)) throw notFound(`--cgroup ${rel}: there is no such sub-cgroup (${out})`);
  return out;
}

/** This process's cgroup in each v1 hierarchy, by its controllers ("cpu,cpuacct"), from
 * /proc/self/cgroup; read once (berth does not move itself: should something else, a helper's
 * return to the old cgroup fails and it leaves the container's when it exits). */
let ownCache: Map<string, string> | undefined;
/** The key of a hierarchy in /proc/self/cgroup: its controllers (v1), "" for the unified tree. */
export function hierarchyKey(h: Hierarchy): string {
  return h.v2 ? "" : [...h.controllers].sort().join(",");
}

export function ownCgroups(): Map<string, string> {
  if (ownCache) return ownCache;
  const own = (ownCache = new Map<string, string>());
  try {
    for (const line of readFileSync("/proc/self/cgroup", "utf8").split("\n")) {
      const first = line.indexOf(":");
      const second = line.indexOf(":", first + 1);
      if (first < 0 || second < 0) continue;
      own.set(line.slice(first + 1, second).split(",").sort().join(","), line.slice(second + 1));
    }
  } catch {
    /* none known: every hierarchy is entered by a move */
  }
  return own;
}

export interface CgroupDriver {
  readonly version: 1 | 2;
  readonly hierarchies: Hierarchy[];
  /** Creates the cgroup (and its parents) in every hierarchy; idempotent. */
  create(path: string): void;
  /** create, its directories made on libuv's thread pool (v1: one per hierarchy, side by side). */
  createAsync(path: string): Promise<void>;
  /** The cgroup.procs file of each hierarchy. */
  procsFiles(path: string): string[];
  /** How a container's first process gets into the cgroup (see CgroupEntry). */
  entry(path: string, opts: EntryOptions): CgroupEntry;
  /** Validates and writes resources; returns warnings for fields the version cannot honour. */
  apply(path: string, r: LinuxResources, opts?: { devices?: boolean }): string[];
  pids(path: string): number[];
  freeze(path: string, frozen: boolean): void;
  isFrozen(path: string): boolean;
  /** The cgroup (this one or an existing parent) that is frozen or freezing, if any: a process put there would sleep until thawed. */
  frozenAt(path: string): string | undefined;
  stats(path: string): Stats;
  /** How many times the kernel's OOM killer killed a task of this cgroup. */
  oomKills(path: string): number;
  remove(path: string): void;
  /** v2: the eBPF device program (hex) for these rules plus runc's default allow list; v1: none (files). */
  deviceFilter(path: string, rules: DeviceRule[] | undefined): { dir: string; program: string } | undefined;
  /** Host directories to show inside the container at /sys/fs/cgroup. */
  mountSources(path: string): { name: string; dir: string; v2: boolean }[];
  /** The same driver with its paths relative to the given cgroups (by hierarchy key): runc's relative cgroupsPath. */
  rebased(base: Record<string, string>): CgroupDriver;
}

/** "/a/b/c" → ["/a/b/c", "/a/b", "/a"]. */
function selfOrParents(path: string): string[] {
  const parts = path.split("/").filter(Boolean);
  return parts.map((_, i) => "/" + parts.slice(0, parts.length - i).join("/"));
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

function writeValue(dir: string, w: CgroupWrite): void {
  const file = join(dir, w.file);
  try {
    writeFileSync(file, w.value);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new BerthError("Unsupported", `cgroup: ${w.file} does not exist on this host (the ${w.controller} controller lacks it): cannot set ${JSON.stringify(w.value)}`);
    throw new BerthError("System", `cgroup: cannot write ${JSON.stringify(w.value)} to ${file}: ${(err as Error).message}`);
  }
}

function readPids(dir: string): number[] {
  const out = new Set<number>();
  const walk = (d: string) => {
    let text: string;
    try {
      text = readFileSync(join(d, "cgroup.procs"), "utf8");
    } catch {
      // the cgroup went away during the walk: it holds no processes
      return;
    }
    for (const l of text.split("\n")) if (l) out.add(Number(l));
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return [...out];
}

/**
 * rmdir depth-first; a cgroup whose last task is exiting is briefly busy. Most cgroups have no
 * children: the directory is listed only when the first rmdir fails.
 */
/** The controllers a v2 tree offers (none when it cannot be read: the hybrid's empty tree). */
function readV2Controllers(mount: string): string[] {
  try {
    return readFileSync(join(mount, "cgroup.controllers"), "utf8").trim().split(/\s+/).filter(Boolean);
  } catch {
    // an unreadable tree offers no controllers (the hybrid's empty v2 tree)
    return [];
  }
}

function removeTree(dir: string): void {
  for (let i = 0, listed = false; ; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (!listed && (code === "ENOTEMPTY" || code === "EBUSY")) {
        listed = true;
        for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(join(dir, e.name));
        continue;
      }
      if (code !== "EBUSY" || i >= 400) throw new BerthError("System", `cannot remove cgroup ${dir}: ${(err as Error).message}`);
      sleepSync(i < 20 ? 1 : 5);
    }
  }
}

function readKeyed(file: string): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const line of readFileSync(file, "utf8").split("\n")) {
      const [k, v] = line.split(/\s+/);
      if (k && v !== undefined) out[k] = Number(v);
    }
  } catch {
    // missing file: no values
  }
  return out;
}

export class V1Driver implements CgroupDriver {
  readonly version = 1 as const;
  constructor(
    readonly hierarchies: Hierarchy[],
    private readonly host: HostLimits,
  ) {}

  private dirOf(path: string, controller: string): string | undefined {
    const h = this.hierarchies.find((x) => x.controllers.includes(controller));
    return h ? join(h.mount, path) : undefined;
  }

  create(path: string): void {
    for (const h of this.hierarchies) {
      if (!h.controllers.includes("cpuset")) {
        mkdirSync(join(h.mount, path), { recursive: true });
        continue;
      }
      // Each new v1 cpuset level starts empty and refuses tasks: copy cpus and mems down.
      let cur = h.mount;
      for (const part of path.split("/").filter(Boolean)) {
        const next = join(cur, part);
        if (!existsSync(next)) {
          mkdirSync(next);
          for (const f of ["cpuset.cpus", "cpuset.mems"]) if (existsSync(join(cur, f))) writeFileSync(join(next, f), readFileSync(join(cur, f)));
        }
        cur = next;
      }
    }
  }

  async createAsync(path: string): Promise<void> {
    // the cpuset hierarchy here, level by level (its values copied down between the mkdirs);
    // the others' directories, parents first, in one job on the thread pool
    const cpuset = this.hierarchies.filter((h) => h.controllers.includes("cpuset"));
    const levels = path.split("/").filter(Boolean).map((_, i, parts) => parts.slice(0, i + 1).join("/"));
    const others = this.hierarchies.filter((h) => !h.controllers.includes("cpuset"));
    const made = mkdirsAsync(others.flatMap((h) => levels.map((l) => join(h.mount, l))));
    made.catch(() => {}); // awaited below
    new V1Driver(cpuset, this.host).create(path);
    await made;
  }

  procsFiles(path: string): string[] {
    return this.hierarchies.map((h) => join(h.mount, path, "cgroup.procs"));
  }

  entry(path: string, opts: EntryOptions): CgroupEntry {
    const own = opts.helperJoins ? ownCgroups() : new Map<string, string>();
    const e: CgroupEntry = { joins: [], procs: [] };
    for (const c of Object.keys(opts.sub ?? {}))
      if (c && !this.hierarchies.some((h) => h.controllers.includes(c))) throw invalid(`--cgroup ${c}:…: no cgroup v1 hierarchy has the ${c} controller`);
    for (const h of this.hierarchies) {
      // the hybrid's v2 tree (no controllers) takes the sub-cgroup where it was made there too
      const mine = join(h.mount, path);
      const dir = h.v2 && !existsSync(join(mine, opts.sub?.[""] ?? "")) ? mine : subDir(mine, h.v2 ? [] : h.controllers, opts.sub);
      const back = own.get(hierarchyKey(h));
      const noRoom = h.controllers.includes("pids") && opts.pidsTight;
      if (h.v2) e.cloneInto = dir;
      else if (back !== undefined && !noRoom) {
        e.joins.push({ dir, back: join(h.root ?? h.mount, back, "tasks") });
        continue;
      }
      e.procs.push(join(dir, "cgroup.procs"));
    }
    return e;
  }

  apply(path: string, r: LinuxResources, opts: { devices?: boolean } = {}): string[] {
    validateResources(r, this.host);
    const { writes, warnings } = v1Writes(r, opts);
    const unifiedKeys = Object.keys(r.unified ?? {});
    const v2 = this.hierarchies.find((h) => h.v2);
    if (unifiedKeys.length && !v2) throw invalid(`linux.resources.unified (${unifiedKeys.join(", ")}): needs cgroup v2, and this host has only v1`);
    for (const [key, value] of Object.entries(r.unified ?? {})) writes.push({ controller: "unified", file: key, value });
    // Check every controller first, so a missing one leaves nothing half-written.
    const v2Controllers = v2 && unifiedKeys.length ? readV2Controllers(v2.mount) : [];
    for (const w of writes) {
      const onV2 = w.controller === "unified" || (w.controller === "hugetlb" && !this.dirOf(path, "hugetlb") && v2);
      if (!onV2 && !this.dirOf(path, w.controller))
        throw new BerthError("Unsupported", `cgroup: the ${w.controller} controller is not available on this host: cannot set ${w.file}`);
      // the hybrid layout's v2 tree holds no controller the v1 trees have: refused before anything is written
      const ctl = w.file.split(".")[0]!;
      if (w.controller === "unified" && ctl !== "cgroup" && !v2Controllers.includes(ctl))
        throw invalid(`invalid configuration: linux.resources.unified.${w.file}: the ${ctl} controller is on cgroup v1 on this host, not v2 (set it through linux.resources' v1 fields)`);
    }
    // BFQ: the weight files are blkio.bfq.*; blkio.weight only exists with CFQ (runc looks for BFQ's first)
    for (const w of writes)
      if (w.controller === "blkio" && (w.file === "blkio.weight" || w.file === "blkio.weight_device") && existsSync(join(this.dirOf(path, "blkio")!, "blkio.bfq.weight")))
        w.file = w.file.replace("blkio.", "blkio.bfq.");
    const memLimit = writes.find((w) => w.file === "memory.limit_in_bytes");
    const memsw = writes.find((w) => w.file === "memory.memsw.limit_in_bytes");
    for (const w of writes) {
      if (w === memsw) continue;
      const dir = this.dirOf(path, w.controller) ?? join(v2!.mount, path);
      if (w === memLimit && memsw) {
        // memory.limit must stay ≤ memsw: raise memsw first when growing, lower the limit first when shrinking.
        try {
          writeValue(dir, w);
          writeValue(dir, memsw);
        } catch {
          // the kernel refused this order (memsw below the new limit): the other order is right then
          writeValue(dir, memsw);
          writeValue(dir, w);
        }
        continue;
      }
      writeValue(dir, w);
    }
    if (memsw && !memLimit) writeValue(this.dirOf(path, "memory")!, memsw);
    return warnings;
  }

  pids(path: string): number[] {
    const dir = this.dirOf(path, "pids") ?? this.dirOf(path, "memory") ?? join(this.hierarchies[0]!.mount, path);
    return readPids(dir);
  }

  freeze(path: string, frozen: boolean): void {
    const dir = this.dirOf(path, "freezer");
    if (!dir) throw new BerthError("Unsupported", "this host has no freezer cgroup: pause is not possible");
    writeFileSync(join(dir, "freezer.state"), frozen ? "FROZEN" : "THAWED");
    // FREEZING is transient: wait until every task is frozen (or thawed) as runc does.
    for (let i = 0; i < 1000; i++) {
      const state = readFileSync(join(dir, "freezer.state"), "utf8").trim();
      if (state === (frozen ? "FROZEN" : "THAWED")) return;
      if (i % 50 === 49) writeFileSync(join(dir, "freezer.state"), frozen ? "FROZEN" : "THAWED");
      sleepSync(1);
    }
    throw new BerthError("System", `cgroup: ${path} did not become ${frozen ? "frozen" : "thawed"}`);
  }

  frozenAt(path: string): string | undefined {
    const h = this.hierarchies.find((x) => x.controllers.includes("freezer"));
    if (!h) return undefined;
    return selfOrParents(path).find((p) => {
      try {
        return /^(FROZEN|FREEZING)$/.test(readFileSync(join(h.mount, p, "freezer.state"), "utf8").trim());
      } catch {
        return false; // not made yet (or the root, which has no freezer.state)
      }
    });
  }

  isFrozen(path: string): boolean {
    const dir = this.dirOf(path, "freezer");
    try {
      return !!dir && readFileSync(join(dir, "freezer.state"), "utf8").trim() === "FROZEN";
    } catch {
      // no freezer file: the cgroup is gone or has no freezer, so it is not frozen
      return false;
    }
  }

  stats(path: string): Stats {
    return readStats(1, (controller) => this.dirOf(path, controller));
  }

  oomKills(path: string): number {
    const dir = this.dirOf(path, "memory");
    return dir ? readKeyed(join(dir, "memory.oom_control")).oom_kill ?? 0 : 0;
  }

  remove(path: string): void {
    for (const h of this.hierarchies) removeTree(join(h.mount, path));
  }

  deviceFilter(): undefined {
    return undefined;
  }

  mountSources(path: string): { name: string; dir: string; v2: boolean }[] {
    return this.hierarchies.map((h) => ({ name: h.v2 ? "unified" : h.controllers.map((c) => c.replace(/^name=/, "")).join(","), dir: join(h.mount, path), v2: h.v2 }));
  }

  rebased(base: Record<string, string>): V1Driver {
    // the hybrid's v2 tree is not rebased: runc puts a relative path at its root there
    return new V1Driver(
      this.hierarchies.map((h) => ({ ...h, root: h.root ?? h.mount, mount: join(h.root ?? h.mount, h.v2 ? "/" : (base[hierarchyKey(h)] ?? "/")) })),
      this.host,
    );
  }
}

export class V2Driver implements CgroupDriver {
  readonly version = 2 as const;
  readonly hierarchies: Hierarchy[];
  constructor(
    private readonly mount: string,
    private readonly host: HostLimits,
  ) {
    this.hierarchies = [{ mount, controllers: this.available(mount), v2: true }];
  }

  private available(dir: string): string[] {
    try {
      return readFileSync(join(dir, "cgroup.controllers"), "utf8").trim().split(/\s+/).filter(Boolean);
    } catch {
      // a cgroup without the file (gone, or the root's): none available
      return [];
    }
  }

  create(path: string): void {
    // Controllers are enabled level by level from the root: a child only gets what its parent delegates.
    let cur = this.mount;
    for (const part of path.split("/").filter(Boolean)) {
      const controllers = this.available(cur);
      const enabled = new Set(readFileSync(join(cur, "cgroup.subtree_control"), "utf8").trim().split(/\s+/).filter(Boolean));
      const missing = controllers.filter((c) => !enabled.has(c));
      if (missing.length) {
        try {
          writeFileSync(join(cur, "cgroup.subtree_control"), missing.map((c) => `+${c}`).join(" "));
        } catch (err) {
          // One at a time, so one the kernel refuses (e.g. cpuset with tasks at this level) does not block the rest.
          for (const c of missing) {
            try {
              writeFileSync(join(cur, "cgroup.subtree_control"), `+${c}`);
            } catch {
              // the kernel refuses some controllers at some levels: the rest still apply, and a missing one is reported when used
              void err;
            }
          }
        }
      }
      cur = join(cur, part);
      mkdirSync(cur, { recursive: true });
    }
  }

  async createAsync(path: string): Promise<void> {
    this.create(path); // a directory or two, and the controllers' delegation in order
  }

  procsFiles(path: string): string[] {
    return [join(this.mount, path, "cgroup.procs")];
  }

  entry(path: string, opts: EntryOptions = { helperJoins: false }): CgroupEntry {
    if (Object.keys(opts.sub ?? {}).some(Boolean)) throw invalid("--cgroup: on cgroup v2 a sub-cgroup is given without a controller");
    const dir = subDir(join(this.mount, path), [], opts.sub);
    return { cloneInto: dir, joins: [], procs: [join(dir, "cgroup.procs")] };
  }

  apply(path: string, r: LinuxResources): string[] {
    validateResources(r, this.host);
    const { writes, warnings } = v2Writes(r);
    const dir = join(this.mount, path);
    const have = new Set(this.available(dir));
    for (const w of writes)
      if (!have.has(w.controller)) throw new BerthError("Unsupported", `cgroup: the ${w.controller} controller is not enabled for ${path} on this host: cannot set ${w.file}`);
    // memory.swap.max only takes effect next to memory.max; io.weight of "default" before per-device lines.
    for (const w of writes) writeValue(dir, w);
    // Device rules are not files on v2: see deviceFilter(), which the helper attaches.
    return warnings;
  }

  pids(path: string): number[] {
    return readPids(join(this.mount, path));
  }

  freeze(path: string, frozen: boolean): void {
    const dir = join(this.mount, path);
    if (!existsSync(join(dir, "cgroup.freeze"))) throw new BerthError("Unsupported", "this kernel has no cgroup.freeze: pause is not possible");
    writeFileSync(join(dir, "cgroup.freeze"), frozen ? "1" : "0");
    for (let i = 0; i < 1000; i++) {
      if (readKeyed(join(dir, "cgroup.events")).frozen === (frozen ? 1 : 0)) return;
      sleepSync(1);
    }
    throw new BerthError("System", `cgroup: ${path} did not become ${frozen ? "frozen" : "thawed"}`);
  }

  frozenAt(path: string): string | undefined {
    return selfOrParents(path).find((p) => {
      try {
        return readFileSync(join(this.mount, p, "cgroup.freeze"), "utf8").trim() === "1" || readKeyed(join(this.mount, p, "cgroup.events")).frozen === 1;
      } catch {
        return false; // not made yet, or the root
      }
    });
  }

  isFrozen(path: string): boolean {
    try {
      return readFileSync(join(this.mount, path, "cgroup.freeze"), "utf8").trim() === "1";
    } catch {
      // no freeze file: the cgroup is gone, so it is not frozen
      return false;
    }
  }

  stats(path: string): Stats {
    return readStats(2, () => join(this.mount, path));
  }

  oomKills(path: string): number {
    return readKeyed(join(this.mount, path, "memory.events")).oom_kill ?? 0;
  }

  remove(path: string): void {
    removeTree(join(this.mount, path));
  }

  deviceFilter(path: string, rules: DeviceRule[] | undefined): { dir: string; program: string } | undefined {
    if (!rules?.length) return undefined;
    return { dir: join(this.mount, path), program: deviceFilterProgram([...rules, ...defaultDeviceRules]) };
  }

  mountSources(path: string): { name: string; dir: string; v2: boolean }[] {
    return [{ name: "", dir: join(this.mount, path), v2: true }];
  }

  rebased(base: Record<string, string>): V2Driver {
    return new V2Driver(join(this.mount, base[""] ?? "/"), this.host);
  }
}
