/**
 * Container records on disk: <root>/<id>/state.json, written atomically (temp file + rename).
 * The directory is claimed with mkdir, so two creates of one id cannot both win. Status is never
 * stored as truth: it is derived from the init process (alive, same start time, not a zombie),
 * the exec fifo (created) and the freezer (paused).
 */
import { mkdirSync, readFileSync, readdirSync, renameSync, writeFileSync, existsSync } from "node:fs";
import { join } from "../common/path.js";
import { exists, invalid, isNotFound, notFound } from "../common/errors.js";
import { removeTree } from "../common/sys.js";
import * as cgroups from "../cgroups/index.js";
import { processStartTime } from "../common/proc.js";
import type { NamespaceType, Spec } from "./spec.js";

export { processStartTime };

export type Status = "creating" | "created" | "running" | "paused" | "stopped";

export interface ContainerRecord {
  ociVersion: string;
  id: string;
  pid: number;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
  /** "creating" until the helper reported ready; afterwards derived. */
  phase: "creating" | "created";
  /** Start time of the init process (jiffies, /proc/<pid>/stat field 22) to notice pid reuse. */
  pidStartTime: number;
  cgroupPath?: string;
  /** A relative cgroupPath's base: the creating runtime's own cgroups, by hierarchy (runc's relative cgroupsPath). */
  cgroupBase?: Record<string, string>;
  /** Processes that were in the cgroup before the container (pid and start time): never the container's to kill. */
  strangers?: { pid: number; start: number }[];
  /** Namespaces the init lives in that differ from the host's: exec joins these. */
  namespaces: NamespaceType[];
  spec: Spec;
}

/** The state JSON of the runtime spec (what `state` prints and hooks read on stdin). */
export interface OciState {
  ociVersion: string;
  id: string;
  pid: number;
  status: Status;
  bundle: string;
  rootfs: string;
  created: string;
  owner: string;
  annotations?: Record<string, string>;
  /** berth's addition (engines ignore unknown fields): the kernel's OOM killer struck in the container. */
  oomKilled?: boolean;
}

const idPattern = /^[\w+\-.]+$/;

export function checkId(id: string): void {
  if (!id) throw invalid("container id cannot be empty");
  if (!idPattern.test(id) || id === "." || id === "..") throw invalid(`invalid container id ${JSON.stringify(id)}: use letters, digits, _ + - .`);
}

export class StateStore {
  constructor(readonly root: string) {}

  dir(id: string): string {
    return join(this.root, id);
  }

  fifo(id: string): string {
    return join(this.root, id, "exec.fifo");
  }

  /** Claims the id; AlreadyExists if another container has it. */
  claim(id: string): void {
    checkId(id);
    mkdirSync(this.root, { recursive: true, mode: 0o711 });
    try {
      mkdirSync(this.dir(id), { mode: 0o711 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") throw exists(`container with id exists: ${id}`);
      throw err;
    }
  }

  write(rec: ContainerRecord): void {
    const tmp = join(this.dir(rec.id), ".state.json.tmp");
    writeFileSync(tmp, JSON.stringify(rec));
    renameSync(tmp, join(this.dir(rec.id), "state.json"));
  }

  read(id: string): ContainerRecord {
    checkId(id);
    let text: string;
    try {
      text = readFileSync(join(this.dir(id), "state.json"), "utf8");
    } catch (e) {
      if (isNotFound(e)) throw notFound(`container ${id} does not exist`);
      throw e;
    }
    return JSON.parse(text) as ContainerRecord;
  }

  has(id: string): boolean {
    return existsSync(this.dir(id));
  }

  list(): string[] {
    try {
      return readdirSync(this.root).filter((n) => idPattern.test(n) && existsSync(join(this.root, n, "state.json")));
    } catch {
      // no state directory yet: no containers
      return [];
    }
  }

  remove(id: string): void {
    removeTree(this.dir(id));
  }

  status(rec: ContainerRecord): Status {
    if (rec.phase === "creating") return processAlive(rec) ? "creating" : "stopped";
    if (!processAlive(rec)) return "stopped";
    if (existsSync(this.fifo(rec.id))) return "created";
    if (rec.cgroupPath && cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).isFrozen()) return "paused";
    return "running";
  }

  ociState(rec: ContainerRecord): OciState {
    const status = this.status(rec);
    const s: OciState = {
      ociVersion: rec.ociVersion,
      id: rec.id,
      pid: status === "stopped" ? 0 : rec.pid,
      status,
      bundle: rec.bundle,
      rootfs: rec.rootfs,
      created: rec.created,
      owner: rec.owner,
    };
    if (rec.annotations && Object.keys(rec.annotations).length) s.annotations = rec.annotations;
    try {
      if (rec.cgroupPath && cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).oomKills() > 0) s.oomKilled = true;
    } catch {
      // no cgroup (left already): nothing to report
    }
    return s;
  }
}

function processAlive(rec: ContainerRecord): boolean {
  if (!rec.pid) return false;
  const st = processStartTime(rec.pid);
  return !!st && !st.zombie && st.start === rec.pidStartTime;
}
