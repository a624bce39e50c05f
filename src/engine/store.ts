/**
 * Containers on disk, shared by every berth process (and later the API server):
 *   <root>/containers/<id>/config.json  what the container is (written once at create)
 *   <root>/containers/<id>/state.json   what it is doing (replaced atomically on every change)
 *   <root>/containers/<id>/{pid,exit,attach.sock,<id>-json.log}  the monitor's files
 *   <root>/containers/names/<name>      the name index: created with O_EXCL, so a name is taken once
 *   <root>/containers/<id>/lock         flock for changes to one container
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { exists, invalid, notFound, withPath } from "../common/errors.js";
import { removeFile, removeTree, removeTreeAsync } from "../common/sys.js";
import { FileLock, writeFileAtomic } from "../images/index.js";
import { lockHeld } from "../common/lock.js";
import { pidAlive } from "../images/content.js";
import type { ContainerConfig, EndpointSettings, HostConfig, NetworkSettings } from "./types.js";

export interface ContainerState {
  Status: "created" | "running" | "paused" | "restarting" | "removing" | "exited" | "dead";
  Running: boolean;
  Paused: boolean;
  Restarting: boolean;
  OOMKilled: boolean;
  Dead: boolean;
  Pid: number;
  ExitCode: number;
  Error: string;
  StartedAt: string;
  FinishedAt: string;
  /** The monitor's pid and start time (to tell a live monitor from a reused pid). */
  MonitorPid?: number;
  MonitorStart?: number;
  RestartCount: number;
  /** Set by stop/kill so an on-failure or always policy does not restart what the user stopped. */
  StoppedByUser?: boolean;
  /** A health check asked for a restart (--restart-on-unhealthy). */
  RestartRequested?: boolean;
  Health?: { Status: string; FailingStreak: number; Log: Array<{ Start: string; End: string; ExitCode: number; Output: string }> };
  /** What the container got on its networks when it started (cleared when it stops). */
  NetworkSettings?: NetworkSettings;
}

/** docker's inspect "Mounts" entry; berth marks anonymous volumes. */
export interface MountPoint {
  Type: "bind" | "volume" | "tmpfs";
  Name?: string;
  Source: string;
  Destination: string;
  Driver?: string;
  Mode: string;
  RW: boolean;
  Propagation: string;
  Anonymous?: boolean;
  /** A read-only bind whose submounts stay writable (BindOptions.ReadOnlyNonRecursive); not shown by inspect. */
  NonRecursiveRO?: boolean;
  /** A bind without the source's submounts (BindOptions.NonRecursive); not shown by inspect. */
  NonRecursive?: boolean;
}

export interface ContainerRecord {
  Id: string;
  Name: string; // with docker's leading slash
  Created: string;
  Path: string;
  Args: string[];
  Image: string; // image ID
  Config: ContainerConfig;
  HostConfig: HostConfig;
  Mounts?: MountPoint[];
  /** The top layer its snapshot was prepared on. */
  SnapshotParent?: string;
  LogPath: string;
  Platform: string;
  /** A build's RUN step: the building process (a build killed with it leaves this container for repair). */
  Builder?: { Pid: number; Start: number | undefined };
  /** The networks asked for at create (aliases, addresses), as the API's NetworkingConfig. */
  NetworkingConfig?: { EndpointsConfig: Record<string, EndpointSettings> };
}

function safeReaddir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    // no directory yet: nothing in it
    return [];
  }
}

export const zeroTime = "0001-01-01T00:00:00Z";

export function initialState(): ContainerState {
  return { Status: "created", Running: false, Paused: false, Restarting: false, OOMKilled: false, Dead: false, Pid: 0, ExitCode: 0, Error: "", StartedAt: zeroTime, FinishedAt: zeroTime, RestartCount: 0 };
}

const adjectives = ["admiring", "brave", "busy", "clever", "dreamy", "eager", "focused", "gallant", "happy", "jolly", "keen", "loving", "modest", "nifty", "quirky", "serene", "sharp", "stoic", "tender", "vibrant", "wizardly", "zealous"];
const nouns = ["albattani", "babbage", "bohr", "curie", "darwin", "euclid", "fermi", "galileo", "hopper", "hypatia", "kepler", "lovelace", "meitner", "newton", "noether", "pascal", "ritchie", "shannon", "tesla", "turing", "wozniak", "yonath"];
const nameRe = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export class ContainerStore {
  readonly dir: string;
  private readonly names: string;

  constructor(root: string) {
    this.dir = join(root, "containers");
    this.names = join(this.dir, "names");
    fs.mkdirSync(this.names, { recursive: true, mode: 0o700 });
  }

  path(id: string, file = ""): string {
    return join(this.dir, id, file);
  }

  newId(): string {
    for (;;) {
      const id = randomBytes(32).toString("hex");
      if (!/^\d+$/.test(id.slice(0, 12)) && !fs.existsSync(this.path(id))) return id;
    }
  }

  /**
   * A create begins: the container's directory, and its lock held until the record is written (so
   * a name or a snapshot of a create still running is told from one a killed create left).
   */
  begin(id: string): FileLock {
    fs.mkdirSync(this.path(id), { recursive: true, mode: 0o700 });
    return FileLock.tryAcquire(this.path(id, "lock"), "exclusive")!;
  }

  /** Whether an id is a container of this store, or a create of one still running. */
  known(id: string): boolean {
    return fs.existsSync(this.path(id, "config.json")) || lockHeld(this.path(id, "lock"));
  }

  /** Take a name (docker's rules), or a generated one. Atomic: two creates cannot share a name. */
  claimName(id: string, wanted?: string): string {
    if (wanted !== undefined) {
      const name = wanted.replace(/^\//, "");
      const shown = wanted.length > 64 ? `${wanted.slice(0, 64)}…` : wanted;
      if (!nameRe.test(name)) throw invalid(`Invalid container name (${shown}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
      // a name is a file of the store's: no longer than a file name may be
      if (Buffer.byteLength(name) > 255) throw invalid(`Invalid container name (${shown}): at most 255 characters (this one has ${name.length})`);
      for (let attempt = 0; ; attempt++) {
        if (this.reserve(name, id)) return name;
        const holder = this.holder(name);
        // a name a killed create or rm left (its container is not there, and no create of it runs) is free
        if (attempt === 0 && (holder === undefined || !this.known(holder)) && this.dropName(name, holder)) continue;
        throw exists(`Conflict. The container name "/${name}" is already in use by container "${holder ?? ""}". You have to remove (or rename) that container to be able to reuse that name.`);
      }
    }
    for (let i = 0; ; i++) {
      const name = `${adjectives[Math.floor(Math.random() * adjectives.length)]}_${nouns[Math.floor(Math.random() * nouns.length)]}${i > 5 ? i : ""}`;
      if (this.reserve(name, id)) return name;
    }
  }

  /**
   * The name file, made whole or not at all: written beside and linked in (link fails if the name
   * is taken), so a crash never leaves an empty name that points at nothing.
   */
  private reserve(name: string, id: string): boolean {
    const tmp = join(this.names, `.${name}.${process.pid}`);
    try {
      fs.writeFileSync(tmp, id);
    } catch (e) {
      // a write that failed after the open (a full disk) names no path: it is this file
      removeFile(tmp);
      throw withPath(e, tmp);
    }
    try {
      fs.linkSync(tmp, join(this.names, name));
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      return false;
    } finally {
      removeFile(tmp);
    }
  }

  /** The id a name points at (undefined: an empty or unreadable name file). */
  private holder(name: string): string | undefined {
    try {
      return fs.readFileSync(join(this.names, name), "utf8") || undefined;
    } catch {
      // no such name file: the name is free
      return undefined;
    }
  }

  /** Remove a name if it still points at holder; whether it did. */
  private dropName(name: string, holder: string | undefined): boolean {
    if (this.holder(name) !== holder) return false;
    removeFile(join(this.names, name));
    return true;
  }

  /**
   * What killed commands left in the container store: names that point at no container, the
   * directories of creates that never finished, `.removing-*` directories of removals that died,
   * and reservation files. Each entry's id (when it names a container) lets the caller clean what
   * else that container held.
   */
  leftovers(): { kind: "name" | "create" | "removal" | "file"; path: string; id?: string; name?: string }[] {
    const out: { kind: "name" | "create" | "removal" | "file"; path: string; id?: string; name?: string }[] = [];
    for (const n of safeReaddir(this.names)) {
      const m = /^\.(.+)\.(\d+)$/.exec(n);
      if (m) {
        if (!pidAlive(Number(m[2]))) out.push({ kind: "file", path: join(this.names, n) });
        continue;
      }
      const holder = this.holder(n);
      if (holder === undefined || !this.known(holder)) out.push({ kind: "name", path: join(this.names, n), name: n, ...(holder ? { id: holder } : {}) });
    }
    for (const n of safeReaddir(this.dir)) {
      const removing = /^\.removing-([a-f0-9]{64})-(\d+)$/.exec(n);
      if (removing && !pidAlive(Number(removing[2]))) out.push({ kind: "removal", path: join(this.dir, n), id: removing[1]! });
      else if (/^[a-f0-9]{64}$/.test(n) && !this.known(n)) out.push({ kind: "create", path: this.path(n), id: n });
    }
    return out;
  }

  releaseName(name: string, id: string): void {
    const p = join(this.names, name.replace(/^\//, ""));
    try {
      if (fs.readFileSync(p, "utf8") === id) removeFile(p);
    } catch {
      /* already gone */
    }
  }

  renameTo(id: string, oldName: string, newName: string): void {
    this.claimName(id, newName);
    this.releaseName(oldName, id);
  }

  write(rec: ContainerRecord, state: ContainerState): void {
    fs.mkdirSync(this.path(rec.Id), { recursive: true, mode: 0o700 });
    // --rm and a build's step: a record meant to go when the container ends is not worth an fsync
    // (an fsync per run; a power loss leaves it for repair)
    writeFileAtomic(this.path(rec.Id, "config.json"), JSON.stringify(rec), !rec.HostConfig.AutoRemove && !rec.Builder);
    writeFileAtomic(this.path(rec.Id, "state.json"), JSON.stringify(state), false);
  }

  writeConfig(rec: ContainerRecord): void {
    writeFileAtomic(this.path(rec.Id, "config.json"), JSON.stringify(rec));
  }

  writeState(id: string, state: ContainerState): void {
    // a reboot makes running state stale anyway (reconcile settles it): no fsync on this hot path
    // on a full disk written over the old state's block: a container's end is recorded even there
    writeFileAtomic(this.path(id, "state.json"), JSON.stringify(state), false, { inPlaceWhenFull: true });
  }

  read(id: string): { rec: ContainerRecord; state: ContainerState } | undefined {
    try {
      const rec = JSON.parse(fs.readFileSync(this.path(id, "config.json"), "utf8")) as ContainerRecord;
      let state: ContainerState;
      try {
        state = JSON.parse(fs.readFileSync(this.path(id, "state.json"), "utf8")) as ContainerState;
      } catch {
        // a state file torn by a crash: the container is shown dead, for `rm`
        state = { ...initialState(), Status: "dead", Dead: true, Error: "state lost" };
      }
      return { rec, state };
    } catch {
      // no (or a torn) record: removed meanwhile, or a create killed half-way (repair's business)
      return undefined;
    }
  }

  ids(): string[] {
    try {
      return fs.readdirSync(this.dir).filter((n) => /^[a-f0-9]{64}$/.test(n) && fs.existsSync(this.path(n, "config.json")));
    } catch {
      // no containers directory yet: none
      return [];
    }
  }

  /** docker's lookup: full ID, exact name, then a unique ID prefix. */
  resolve(ref: string): string {
    const clean = ref.replace(/^\//, "");
    if (/^[a-f0-9]{64}$/.test(clean) && fs.existsSync(this.path(clean, "config.json"))) return clean;
    try {
      const id = fs.readFileSync(join(this.names, clean), "utf8");
      if (fs.existsSync(this.path(id, "config.json"))) return id;
    } catch {
      /* not a name */
    }
    if (/^[a-f0-9]+$/.test(clean)) {
      const matches = this.ids().filter((i) => i.startsWith(clean));
      if (matches.length === 1) return matches[0]!;
      if (matches.length > 1) throw invalid(`multiple IDs found with provided prefix: ${ref}`);
    }
    throw notFound(`No such container: ${ref}`);
  }

  lock(id: string): Promise<FileLock> {
    return FileLock.acquire(this.path(id, "lock"), "exclusive");
  }

  remove(id: string): void {
    const tmp = this.unname(id);
    // a rootfs still mounted inside (a crash mid-teardown) is detached, never deleted through
    if (tmp) removeTree(tmp, { detachMounts: true });
  }

  /** remove, the files deleted on libuv's thread pool (the record is gone at once). */
  async removeAsync(id: string): Promise<void> {
    const tmp = this.unname(id);
    if (tmp) await removeTreeAsync(tmp, { detachMounts: true });
  }

  private unname(id: string): string | undefined {
    const tmp = join(this.dir, `.removing-${id}-${process.pid}`);
    try {
      fs.renameSync(this.path(id), tmp);
      return tmp;
    } catch {
      // already moved away by a concurrent removal
      return undefined;
    }
  }
}
