/**
 * Resource control: one cgroup layer over v1 (a hierarchy per controller), v2 (unified) and the
 * hybrid layout (v1 controllers plus a v2 mount holding no or few controllers), detected at run time.
 *
 * Vocabulary: a "cgroup path" is the container's path relative to each hierarchy's root (runc's
 * `linux.cgroupsPath`, e.g. "/berth/<id>"); a "Cgroup" is that path placed on this host's hierarchies.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { BerthError, invalid } from "../common/errors.js";

export type CgroupLayout = "v1" | "v2" | "hybrid";

export interface Hierarchy {
  /** Mount point of the hierarchy on the host. */
  mount: string;
  /** Controllers it carries ("" entries dropped); ["unified"] marks v2. */
  controllers: string[];
  v2: boolean;
}

let cachedHierarchies: Hierarchy[] | undefined;

/** The host's cgroup hierarchies, read from /proc/self/mountinfo. */
export function hierarchies(): Hierarchy[] {
  if (cachedHierarchies) return cachedHierarchies;
  const out: Hierarchy[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const sep = line.indexOf(" - ");
    if (sep < 0) continue;
    const pre = line.slice(0, sep).split(" ");
    const [fstype, , superOpts = ""] = line.slice(sep + 3).split(" ");
    if (pre[3] !== "/") continue; // a bind of a sub-cgroup, not a hierarchy root
    const mount = pre[4]!.replace(/\\040/g, " ");
    if (fstype === "cgroup2") out.push({ mount, controllers: ["unified"], v2: true });
    else if (fstype === "cgroup") {
      const notControllers = ["rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"];
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

/** runc's semantics: absolute paths as given; relative ones under berth's parent; default /berth/<id>. */
export function cgroupPathFor(id: string, cgroupsPath?: string): string {
  if (!cgroupsPath) return `/berth/${id}`;
  if (cgroupsPath.includes(":") && !cgroupsPath.startsWith("/"))
    throw new BerthError("Unsupported", `cgroupsPath ${JSON.stringify(cgroupsPath)} is a systemd slice path; berth uses cgroupfs (systemd cgroups are not supported on this host)`);
  const clean = join("/", cgroupsPath);
  if (clean.split("/").includes("..")) throw invalid(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)} escapes the cgroup root`);
  return cgroupsPath.startsWith("/") ? clean : join("/berth", clean);
}

export interface Cgroup {
  path: string;
  /** Absolute directories of this cgroup, one per hierarchy. */
  dirs: string[];
}

export function place(path: string): Cgroup {
  return { path, dirs: hierarchies().map((h) => join(h.mount, path)) };
}

function dirFor(cg: Cgroup, controller: string): string | undefined {
  const i = hierarchies().findIndex((h) => h.controllers.includes(controller));
  if (i >= 0) return cg.dirs[i];
  const v2 = hierarchies().findIndex((h) => h.v2);
  return v2 >= 0 && layout() === "v2" ? cg.dirs[v2] : undefined;
}

/** Creates the cgroup in every hierarchy (cpuset values copied down, as the kernel requires on v1). */
export function create(cg: Cgroup): void {
  hierarchies().forEach((h, i) => {
    const dir = cg.dirs[i]!;
    if (h.controllers.includes("cpuset")) {
      // Each new v1 cpuset level starts empty and refuses tasks: copy from the parent level.
      let cur = h.mount;
      for (const part of cg.path.split("/").filter(Boolean)) {
        const next = join(cur, part);
        if (!existsSync(next)) {
          mkdirSync(next);
          for (const f of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(next, f), readFileSync(join(cur, f)));
        }
        cur = next;
      }
    } else mkdirSync(dir, { recursive: true });
  });
}

/** The cgroup.procs files the helper writes the container's first pid into. */
export function procsFiles(cg: Cgroup): string[] {
  return cg.dirs.map((d) => join(d, "cgroup.procs"));
}

export function pids(cg: Cgroup): number[] {
  const dir = dirFor(cg, "pids") ?? dirFor(cg, "memory") ?? cg.dirs[0];
  if (!dir) return [];
  const out = new Set<number>();
  const walk = (d: string) => {
    let text = "";
    try {
      text = readFileSync(join(d, "cgroup.procs"), "utf8");
    } catch {
      return;
    }
    for (const l of text.split("\n")) if (l) out.add(Number(l));
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  walk(dir);
  return [...out];
}

export function freeze(cg: Cgroup, frozen: boolean): void {
  const v1 = dirFor(cg, "freezer");
  if (v1 && !hierarchies().find((h) => h.controllers.includes("freezer"))?.v2) {
    writeFileSync(join(v1, "freezer.state"), frozen ? "FROZEN" : "THAWED");
    return;
  }
  const v2 = cg.dirs[hierarchies().findIndex((h) => h.v2)];
  if (!v2) throw new BerthError("Unsupported", "this host has no freezer cgroup: pause is not possible");
  writeFileSync(join(v2, "cgroup.freeze"), frozen ? "1" : "0");
}

export function isFrozen(cg: Cgroup): boolean {
  try {
    const v1 = dirFor(cg, "freezer");
    if (v1 && layout() !== "v2") return readFileSync(join(v1, "freezer.state"), "utf8").trim() === "FROZEN";
    const v2 = cg.dirs[hierarchies().findIndex((h) => h.v2)];
    return v2 ? readFileSync(join(v2, "cgroup.freeze"), "utf8").trim() === "1" : false;
  } catch {
    return false;
  }
}

/** The devices every container may use, as runc allows them. */
const defaultDeviceRules = ["c *:* m", "b *:* m", "c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm"];

export interface DeviceRule {
  allow: boolean;
  type?: string;
  major?: number;
  minor?: number;
  access?: string;
}

export interface ResourceLimits {
  memory?: { limit?: number; swap?: number };
  pids?: { limit: number };
  devices?: DeviceRule[];
}

function writeIfPresent(dir: string | undefined, file: string, value: string): void {
  if (!dir) return;
  try {
    writeFileSync(join(dir, file), value);
  } catch (err) {
    throw new BerthError("System", `cgroup: cannot write ${value} to ${join(dir, file)}: ${(err as Error).message}`);
  }
}

/** Applies the limits berth's foundation needs (memory, pids, devices); the full set comes with the cgroup issue. */
export function apply(cg: Cgroup, r: ResourceLimits): void {
  const v2 = layout() === "v2";
  if (r.memory?.limit !== undefined && r.memory.limit > 0) {
    const dir = dirFor(cg, "memory");
    if (v2) writeIfPresent(dir, "memory.max", String(r.memory.limit));
    else writeIfPresent(dir, "memory.limit_in_bytes", String(r.memory.limit));
  }
  if (r.pids?.limit !== undefined) {
    const value = r.pids.limit > 0 ? String(r.pids.limit) : "max";
    writeIfPresent(dirFor(cg, "pids"), "pids.max", value);
  }
  if (r.devices && !v2) {
    const dir = dirFor(cg, "devices");
    const rule = (d: DeviceRule) =>
      `${d.type ?? "a"} ${d.major === undefined || d.major < 0 ? "*" : d.major}:${d.minor === undefined || d.minor < 0 ? "*" : d.minor} ${d.access ?? "rwm"}`;
    for (const d of r.devices) writeIfPresent(dir, d.allow ? "devices.allow" : "devices.deny", d.type === "a" || !d.type ? "a" : rule(d));
    for (const d of defaultDeviceRules) writeIfPresent(dir, "devices.allow", d);
  }
}

/** Removes the cgroup from every hierarchy; waits briefly for exiting tasks to leave. */
export function remove(cg: Cgroup): void {
  const rm = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rm(join(dir, e.name));
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === "ENOENT") return;
        if (code !== "EBUSY" || i >= 200) throw new BerthError("System", `cannot remove cgroup ${dir}: ${(err as Error).message}`);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5);
      }
    }
  };
  for (const d of cg.dirs) rm(d);
  // berth's own parent goes too once empty, so nothing named berth outlives the last container.
  if (cg.path.startsWith("/berth/"))
    for (const h of hierarchies()) {
      try {
        rmdirSync(join(h.mount, "berth"));
      } catch {
        // still holds other containers
      }
    }
}

/** Host directory of this cgroup in the hierarchy that carries `controller` (for cgroup mounts). */
export function controllerDirs(cg: Cgroup): { controllers: string[]; dir: string; v2: boolean }[] {
  return hierarchies().map((h, i) => ({ controllers: h.controllers, dir: cg.dirs[i]!, v2: h.v2 }));
}
