/**
 * The OCI runtime as a library: create / start / run / state / kill / delete / list / ps / exec /
 * pause / resume, with runc's semantics. The berth-runtime CLI is a thin layer over this class, and
 * the engine calls it in-process (no new Node process per container).
 *
 * Lifecycle (an explicit state machine, as in youki): creating → created → running ⇄ paused → stopped.
 * Every step that can fail after the id was claimed undoes what it made (process, cgroup, state dir).
 */
import { trace } from "../common/trace.js";
import { spawn } from "node:child_process";
import { existsSync, openSync, readFileSync, readSync, closeSync, writeFileSync, renameSync, constants as fsc, realpathSync, statSync } from "node:fs";
import { constants as osc, userInfo } from "node:os";
import { dirname, resolve } from "node:path";
import { join } from "../common/path.js";
import { privateTmpDir } from "../common/paths.js";
import { BerthError, errorMessage, fsCause, invalid, isNotFound, notFound, precondition, unsupported } from "../common/errors.js";
import * as cgroups from "../cgroups/index.js";
import { compileSeccomp, type CompiledSeccomp, type Seccomp } from "../security/index.js";
import { runHelper, type HelperOptions, type LaunchedHelper } from "./helper.js";
import { pollIn, removeFile } from "../common/sys.js";
import { createPlan, execPlan, removalPlan, type HostLsm } from "./plan.js";
import { codeNames } from "./protocol.js";
import { hookNames, validateProcess, validateSpec, type Hook, type HookName, type NamespaceType, type Process, type Spec } from "./spec.js";
import { StateStore, processStartTime, type ContainerRecord, type OciState, type Status } from "./state.js";

/** runc's choice: /run for root; $XDG_RUNTIME_DIR (or a per-user /tmp directory) for everyone else. */
export const defaultRoot = (): string =>
  (process.getuid?.() ?? 0) === 0 ? "/run/berth-runtime" : join(process.env.XDG_RUNTIME_DIR || privateTmpDir("berth-runtime"), "berth-runtime");

export interface RuntimeOptions {
  /** Where container state lives (runc's --root). */
  root?: string;
  /** Warnings (a hook that failed after start, an unknown capability) go here. */
  warn?: (message: string) => void;
  /** Debug lines (the compiled plan) go here when set (--debug). */
  debug?: (message: string) => void;
}

export type IdMapping = { containerID: number; hostID: number; size: number };

export interface CreateOptions {
  bundle: string;
  /** The bundle's config.json as its writer just wrote it: not read back (it is validated still). */
  spec?: Spec;
  pidFile?: string;
  consoleSocket?: string;
  noPivot?: boolean;
  noNewKeyring?: boolean;
  preserveFds?: number;
  stdio?: HelperOptions["stdio"];
  /**
   * A monitor that starts the helper and stays as the container's parent (the engine's): its
   * argv, or one already started with launchHelper (so it loads while the spec is built).
   */
  launcher?: string[] | LaunchedHelper;
  /**
   * Called with the container's pid as soon as it is cloned (its namespaces exist; its mounts are
   * not done): work on its network namespace can overlap its setup.
   */
  onPid?: (pid: number) => void;
  /**
   * Called with the child's pid while it waits, before any of its setup (its user namespace and
   * maps exist, it still has the runtime's ids): what must reach its namespaces as the runtime's
   * user (rootless networking) happens here. The container's setup goes on when it settles.
   */
  beforeSetup?: (pid: number) => Promise<void>;
  /** Start the helper with posix_spawn, not Node's fork-based spawn (see HelperOptions.direct). */
  direct?: boolean;
  /** A warm berth-runtime's create/run: its client becomes the helper (HelperOptions.inClient). */
  inClient?: boolean;
}

export interface ExecOptions {
  consoleSocket?: string;
  pidFile?: string;
  detach?: boolean;
  preserveFds?: number;
  stdio?: HelperOptions["stdio"];
  /** The process's pid as soon as it exists. */
  onPid?: (pid: number) => void;
  /** The helper's pid once it is spawned (a foreground exec with a terminal resizes on its SIGWINCH). */
  onHelper?: (pid: number) => void;
  /** Foreground: forward this process's SIGINT, SIGTERM, SIGHUP and SIGQUIT to it (default; not in a server). */
  forwardSignals?: boolean;
  /** Exec into a paused container too (runc's --ignore-paused): the process starts once it is resumed. */
  ignorePaused?: boolean;
  /** A sub-cgroup of the container's to enter ("" key: every hierarchy; or by v1 controller), as runc's --cgroup. */
  cgroupSub?: Record<string, string>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Below this, a container's first process is killed by its own memory limit (docker's minimum). */
const MIN_MEMORY = 6 * 1024 * 1024;

/** Signal by name ("KILL", "SIGKILL") or number, as runc accepts it. */
export function parseSignal(sig: string | number): number {
  if (typeof sig === "number") return sig;
  if (/^\d+$/.test(sig)) {
    const n = Number(sig);
    if (n < 1 || n > 64) throw invalid(`invalid signal: ${sig}`);
    return n;
  }
  const name = sig.toUpperCase().startsWith("SIG") ? sig.toUpperCase() : `SIG${sig.toUpperCase()}`;
  const n = (osc.signals as Record<string, number>)[name];
  if (n === undefined) throw invalid(`unknown signal "${sig}"`);
  return n;
}

function nsInode(path: string): string | undefined {
  try {
    return String(statSync(path).ino);
  } catch {
    // gone: no namespace to compare
    return undefined;
  }
}

export class Runtime {
  readonly store: StateStore;
  private readonly warn: (m: string) => void;
  private readonly debug?: (m: string) => void;

  constructor(opts: RuntimeOptions = {}) {
    this.store = new StateStore(resolve(opts.root ?? defaultRoot()));
    this.warn = opts.warn ?? ((m) => process.stderr.write(`warning: ${m}\n`));
    this.debug = opts.debug;
  }

  /** Reads and validates <bundle>/config.json. */
  /** The bundle's spec (read from its config.json, unless its writer hands it over: `written`), validated, and its rootfs. */
  loadBundle(bundle: string, written?: Spec): { spec: Spec; bundle: string; rootfs: string } {
    const dir = resolve(bundle);
    let parsed: unknown = written;
    if (parsed === undefined) {
      let text: string;
      try {
        text = readFileSync(join(dir, "config.json"), "utf8");
      } catch (err) {
        throw notFound(`cannot read ${join(dir, "config.json")}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : errorMessage(err)}`);
      }
      try {
        parsed = JSON.parse(text);
      } catch (err) {
        throw invalid(`config.json is not valid JSON: ${errorMessage(err)}`);
      }
    }
    const spec = validateSpec(parsed);
    if (!spec.process) throw invalid("config.json: process: is required to create a container");
    const rootPath = resolve(dir, spec.root!.path);
    let rootfs: string;
    try {
      rootfs = realpathSync(rootPath);
    } catch (e) {
      if (isNotFound(e)) throw notFound(`rootfs ${rootPath} does not exist (config.json root.path)`);
      throw invalid(`rootfs ${rootPath}: ${fsCause(e)} (config.json root.path)`);
    }
    if (!statSync(rootfs).isDirectory()) throw notFound(`rootfs ${rootPath} is not a directory (config.json root.path)`);
    return { spec, bundle: dir, rootfs };
  }

  /**
   * Removes a tree as root of a user namespace with these maps (a rootless container's changes
   * hold files of subordinate ids that its user cannot delete as itself).
   */
  async removeInUserNamespace(path: string, uidMappings: IdMapping[], gidMappings: IdMapping[]): Promise<void> {
    const run = runHelper(removalPlan(path, uidMappings, gidMappings), { stdio: ["ignore", "ignore", "ignore"] });
    await run.ready.catch(() => {}); // the helper's own failure shows in its exit status, reported below
    const r = await run.exited;
    if (r.code !== 0 || (r.waitStatus ?? 0) !== 0) throw new BerthError("System", `cannot remove ${path} in a user namespace (exit ${r.code}, status ${r.waitStatus})`);
  }

  async create(id: string, opts: CreateOptions): Promise<OciState> {
    const { spec, bundle, rootfs } = this.loadBundle(opts.bundle, opts.spec);
    return this.createFromSpec(id, spec, bundle, rootfs, opts, false);
  }

  /**
   * Security labels fail closed, as runc: a profile or label the host cannot apply is an error, since
   * a container that asked for confinement must not run without it. The annotation
   * org.berth.lsm=optional (the user's explicit choice) turns the refusal into a warning.
   */
  private checkLabels(spec: Spec, p: Process | undefined = spec.process): HostLsm {
    // nothing asked for: no look at the host (this runs at every create and exec)
    if (!p?.apparmorProfile && !p?.selinuxLabel && !spec.linux?.mountLabel) return { apparmor: false, selinux: false };
    const lsm = hostLsm();
    const optional = spec.annotations?.[LSM_OPTIONAL_ANNOTATION] === "optional";
    const refuse = (what: string, why: string) => {
      const message = `${what} cannot be applied: ${why}`;
      if (!optional) throw invalid(`config.json: ${message} (set the annotation ${LSM_OPTIONAL_ANNOTATION}=optional to run without it)`);
      this.warn(`${message}; running without it (${LSM_OPTIONAL_ANNOTATION}=optional)`);
    };
    if (p?.apparmorProfile && !lsm.apparmor) refuse(`process.apparmorProfile ${JSON.stringify(p.apparmorProfile.slice(0, 200))}`, "AppArmor is not enabled on this host");
    if (p?.selinuxLabel && !lsm.selinux) refuse("process.selinuxLabel", "SELinux is not enabled on this host");
    if (spec.linux?.mountLabel) refuse("linux.mountLabel", lsm.selinux ? "berth does not label mounts" : "SELinux is not enabled on this host");
    return lsm;
  }

  private async createFromSpec(id: string, spec: Spec, bundle: string, rootfs: string, opts: CreateOptions, foreground: boolean, atOnce = false) {
    trace("runtime: bundle loaded");
    const lsm = this.checkLabels(spec);
    // A process joining a frozen cgroup sleeps until someone thaws it: refuse before anything is made.
    const cgPath = cgroups.cgroupPathFor(id, spec.linux?.cgroupsPath);
    // a relative cgroupsPath: under this runtime's own cgroups, as runc (recorded: later commands may run elsewhere)
    const cgBase = cgPath.startsWith("/") ? undefined : cgroups.ownCgroupBase();
    const cgHandle = cgroups.openCgroup(cgPath, cgBase);
    const frozen = cgHandle.frozenAt();
    if (frozen) throw precondition(`cgroup ${frozen} is frozen: a container started in it would not run until it is thawed`);
    // processes already there are not the container's: said, as runc says it, and never killed by its delete
    const strangers = cgHandle.pidsIfExists().map((pid) => ({ pid, start: processStartTime(pid)?.start ?? 0 }));
    if (strangers.length) this.warn(`container's cgroup is not empty: ${strangers.length} process(es) found (${cgPath}); they are left alone`);
    this.store.claim(id);
    trace("runtime: claimed");
    const rec: ContainerRecord = {
      ociVersion: spec.ociVersion,
      id,
      pid: 0,
      bundle,
      rootfs,
      created: new Date().toISOString(),
      owner: userInfo().username,
      annotations: spec.annotations,
      phase: "creating",
      pidStartTime: 0,
      namespaces: (spec.linux?.namespaces ?? []).map((n) => n.type),
      spec,
      ...(strangers.length ? { strangers } : {}),
    };
    let cg: cgroups.Cgroup | undefined;
    let madeParents: string[] = []; // a cgroupsPath's parents this create makes, removed again if it fails
    let cgEntry: cgroups.CgroupEntry | undefined; // worked out once: for the primer and the plan
    let pid = 0;
    try {
      const path = cgPath;
      cg = cgHandle;
      if (spec.linux?.cgroupsPath) madeParents = cg.missingParents();
      rec.cgroupPath = path;
      if (cgBase) rec.cgroupBase = cgBase;
      this.store.write(rec);
      trace("runtime: record written");
      const r = spec.linux?.resources;
      try {
        // made by prepareCgroup in this process meanwhile (its directories are not made twice;
        // should that have failed, create says why)
        const prepared = this.preparedCgroups.get(path);
        this.preparedCgroups.delete(path);
        if (!prepared || !(await prepared)) cg.create();
        trace("runtime: cgroup dirs made");
        // after the mkdirs: the primer holds the cgroup lock while it waits (only where the init
        // will be moved in: cloned into v2 cgroups, born in v1 ones its helper joins, it is not)
        const root = process.getuid?.() === 0;
        cgEntry = cg.entry({ helperJoins: root, pidsTight: r?.pids?.limit === 1 });
        if (root && cgroups.movesAfterClone(cgEntry).length) cgroups.primeAttach();
      } catch (err) {
        // Rootless without a delegated cgroup: run without one, as runc does, unless limits were asked for.
        if (process.getuid?.() === 0 || !isPermissionError(err)) throw err;
        if (r && hasLimits(r)) throw unsupported(`rootless: cannot create cgroup ${path} (no delegated cgroup for this user), so linux.resources cannot be applied`);
        cg = undefined;
        rec.cgroupPath = undefined;
        this.store.write(rec);
      }
      if (r && cg) for (const w of cg.apply(r as cgroups.LinuxResources, { devices: process.getuid?.() === 0 })) this.warn(w);
      trace("runtime: cgroup made");
      const seccomp = this.seccompFor(spec);
      trace("runtime: seccomp compiled");
      const hooks = spec.hooks ?? {};
      const hookSync = !!(hooks.prestart?.length || hooks.createRuntime?.length || hooks.createContainer?.length || opts.beforeSetup);
      const ops = createPlan({
        spec,
        bundle,
        rootfs,
        ...(atOnce ? {} : { fifo: this.store.fifo(id) }),
        consoleSocket: opts.consoleSocket,
        noPivot: opts.noPivot,
        preserveFds: opts.preserveFds,
        cgroup: cg,
        ...(cg && cgEntry ? { cgroupEntry: cgEntry } : {}),
        hookSync,
        foreground,
        seccomp,
        listenerState: seccomp?.listenerPath ? listenerState(seccomp, { ...this.store.ociState(rec), status: "creating" }, true) : undefined,
        sessionKeyring: opts.noNewKeyring ? undefined : id,
        lsm,
        ...(hooks.startContainer?.length ? { hookState: hookStateTemplate({ ...this.store.ociState(rec), status: "created" }) } : {}),
      });
      this.debug?.(`plan for ${id}: ${describePlan(ops)}`);
      const run = runHelper(ops, {
        stdio: opts.stdio,
        preserveFds: opts.preserveFds,
        // posix_spawned (no fork of this process) unless the helper relays a terminal to our stdio,
        // which needs it in our session
        ...(opts.direct || !spec.process?.terminal || opts.consoleSocket ? { direct: true } : {}),
        ...(opts.launcher ? { launcher: opts.launcher } : {}),
        ...(opts.inClient ? { inClient: { foreground } } : {}),
        ...(opts.onPid ? { onPid: opts.onPid } : {}),
        onHookPoint: async (childPid) => {
          await opts.beforeSetup?.(childPid);
          rec.pid = childPid;
          rec.pidStartTime = processStartTime(childPid)?.start ?? 0;
          this.store.write(rec);
          const state = { ...this.store.ociState(rec), status: "creating" as Status, pid: childPid };
          for (const h of [...(hooks.prestart ?? []), ...(hooks.createRuntime ?? [])]) await runHook("createRuntime", h, state);
          // In the container's namespaces (not yet pivoted, so paths are the runtime's), as the spec says.
          const inside = rec.namespaces.filter((t) => t !== "cgroup" && t !== "time");
          for (const h of hooks.createContainer ?? []) await this.runHookInside(childPid, inside, rec.rootfs, "createContainer", h, state);
        },
      });
      trace("runtime: helper spawned");
      try {
        pid = await run.ready;
        trace("runtime: ready");
      } catch (err) {
        await exitedWithin(run, 5000); // a helper stuck past its kill (a frozen task) is not waited for
        // killed while it set the container up, under a memory limit too small for any process
        const limit = spec.linux?.resources?.memory?.limit;
        if (limit !== undefined && limit > 0 && limit < MIN_MEMORY && /SIGKILL/.test(errorMessage(err)))
          throw new BerthError("InvalidArgument", `linux.resources.memory.limit: ${limit} bytes is below what a process needs to start (the kernel killed it setting up; docker asks for at least 6 MB)`);
        throw err;
      }
      rec.pid = pid;
      rec.pidStartTime = processStartTime(pid)?.start ?? 0;
      rec.phase = "created";
      // exec joins the namespaces the container has apart from the runtime: every new one, and
      // joined ones that are not the runtime's own (taken from the spec: the waiting init is not
      // dumpable, so its /proc/<pid>/ns links cannot be read by an unprivileged runtime).
      rec.namespaces = (spec.linux?.namespaces ?? [])
        .filter((n) => {
          if (!n.path) return true;
          const own = nsInode(`/proc/self/ns/${{ mount: "mnt", network: "net" }[n.type as string] ?? n.type}`);
          return own === undefined || nsInode(n.path) !== own;
        })
        .map((n) => n.type);
      this.store.write(rec);
      if (opts.pidFile) writePidFile(opts.pidFile, pid);
      if (!foreground) await run.exited;
      this.foregroundRun = foreground ? run : undefined;
      return this.store.ociState(rec);
    } catch (err) {
      if (pid || rec.pid) killQuietly(pid || rec.pid, 9);
      if (cg) {
        // the container's processes (the helper's too) go; what was there before it stays
        if (!(await emptyCgroup(cg, strangerTest(rec.strangers))).length)
          try {
            cg.remove();
          } catch {
            // reported by the original error
          }
        cg.removeIfEmpty(madeParents);
      }
      this.store.remove(id);
      throw err;
    }
  }

  /** The container's seccomp program, compiled once per profile (cached by digest under the root). */
  private seccompFor(spec: Spec): CompiledSeccomp | undefined {
    const profile = spec.linux?.seccomp as Seccomp | undefined;
    return profile ? compileSeccomp(profile, join(this.store.root, ".seccomp-cache")) : undefined;
  }

  /** Set by a foreground create (run without --detach): the helper that waits for the container. */
  private foregroundRun: ReturnType<typeof runHelper> | undefined;

  async start(id: string): Promise<void> {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status === "stopped") throw precondition("cannot start a container that has stopped");
    if (status !== "created") throw precondition(`cannot start an already ${status} container`);
    const state = this.store.ociState(rec);
    // startContainer hooks run in the container's process itself, after the fifo (plan START_HOOK)
    const fifo = this.store.fifo(id);
    // O_NONBLOCK so a dead init cannot hang start; the waiting writer makes the byte appear.
    const fd = openSync(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
    try {
      const byte = Buffer.alloc(1);
      const began = process.hrtime.bigint();
      const pollUntil = began + 2_000_000n;
      for (let pauses = 0; ; ) {
        try {
          if (readSync(fd, byte, 0, 1, null) === 1) break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
        }
        // the writer wakes when we open and writes within microseconds: waited for in the kernel
        // for up to 2 ms (a timer's turn costs a millisecond), then with pauses
        const now = process.hrtime.bigint();
        if (now < pollUntil && pollIn(fd, 2)) continue;
        if (this.store.status(rec) === "stopped") throw precondition("cannot start a container that has stopped");
        if (now - began > 10_000_000_000n) throw new BerthError("System", "container did not take the start signal within 10s");
        await sleep(pauses++ < 100 ? 0 : 5);
      }
    } finally {
      closeSync(fd);
    }
    removeFile(fifo);
    for (const h of rec.spec.hooks?.poststart ?? []) {
      try {
        await runHook("poststart", h, { ...state, status: "running" });
      } catch (err) {
        this.warn(errorMessage(err));
      }
    }
  }

  /** create + start; without detach, waits and returns the exit code (128+n for signal n). */
  async run(id: string, opts: CreateOptions & { detach?: boolean; keep?: boolean; forwardSignals?: boolean }): Promise<number> {
    const { spec, bundle, rootfs } = this.loadBundle(opts.bundle, opts.spec);
    if (spec.process?.terminal && !opts.consoleSocket && opts.detach)
      throw invalid("cannot allocate tty if runc will detach without setting console socket");
    // In the foreground with nothing to do between create and start (no poststart hook, no pid
    // file to write first), the process runs as soon as it is set up: no exec fifo and no start
    // round trip (~1.5 ms); no one can see it "created" in between anyway.
    const atOnce = !opts.detach && !opts.pidFile && !spec.hooks?.poststart?.length;
    await this.createFromSpec(id, spec, bundle, rootfs, opts, !opts.detach, atOnce);
    const fg = this.foregroundRun;
    this.foregroundRun = undefined;
    // forward signals from before the start: the container may run (and be signalled) before
    // start() returns
    const forward = (sig: NodeJS.Signals) => {
      try {
        if (fg?.helperPid) process.kill(fg.helperPid, sig);
      } catch {
        // helper already gone
      }
    };
    const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
    // (an engine running a build step in its own process keeps its signals: forwardSignals false)
    if (fg && !opts.detach && opts.forwardSignals !== false) for (const s of signals) process.on(s, forward);
    const unforward = () => {
      for (const s of signals) process.off(s, forward);
    };
    try {
      if (!atOnce) await this.start(id);
    } catch (err) {
      unforward();
      await this.delete(id, { force: true }).catch(() => {}); // the start's error is what the caller is told; a record left behind is `delete`d later
      throw err;
    }
    if (opts.detach || !fg) {
      unforward();
      return 0;
    }
    const { code, waitStatus } = await fg.exited;
    unforward();
    const rec = this.store.read(id);
    if (rec.cgroupPath && cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).oomKills() > 0) this.warn(`container ${id} was killed by the OOM killer (memory limit of its cgroup reached)`);
    if (!opts.keep) await this.delete(id, { force: true }).catch((e) => this.warn(errorMessage(e)));
    if (waitStatus === undefined) return code;
    return (waitStatus & 0x7f) === 0 ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f);
  }

  /**
   * Makes a container's cgroup ahead of create: an engine calls this as soon as it knows it will
   * create the container. Only a head start: failures are left for create to report.
   */
  prepareCgroup(id: string, cgroupsPath: string | undefined): void {
    if (process.getuid?.() !== 0) return;
    try {
      const path = cgroups.cgroupPathFor(id, cgroupsPath);
      if (!path.startsWith("/")) return; // relative: create works out where, under its own cgroups
      // on the thread pool: the directories (v1: ten hierarchies) are made while the
      // caller goes on; create awaits them
      this.preparedCgroups.set(
        path,
        cgroups
          .openCgroup(path)
          .createAsync()
          .then(
            () => true,
            () => false,
          ),
      );
      // root's containers are cloned into v2 cgroups and born in v1 ones (CgroupEntry): no move
      // to prime for, unless a pids limit of 1 keeps the helper out (create primes for that)
    } catch {
      /* create says what is wrong */
    }
  }

  /** Cgroups prepareCgroup makes in this process (whether it could), not yet taken by a create. */
  private readonly preparedCgroups = new Map<string, Promise<boolean>>();

  /** Undoes prepareCgroup for a container that was never created (its start failed first). */
  async discardCgroup(id: string, cgroupsPath: string | undefined): Promise<void> {
    if (process.getuid?.() !== 0 || this.store.has(id)) return;
    const path = cgroups.cgroupPathFor(id, cgroupsPath);
    const making = this.preparedCgroups.get(path);
    this.preparedCgroups.delete(path);
    await making; // its directories first, or they would be made after the removal
    try {
      cgroups.openCgroup(path).remove();
    } catch {
      /* not made, or holds processes: not ours to force */
    }
  }

  /** Whether the runtime holds any record (or the leftover directory of one) of this container. */
  has(id: string): boolean {
    return this.store.has(id);
  }

  state(id: string): OciState {
    return this.store.ociState(this.store.read(id));
  }

  list(): OciState[] {
    const out: OciState[] = [];
    for (const id of this.store.list()) {
      try {
        out.push(this.state(id));
      } catch {
        // removed meanwhile
      }
    }
    return out;
  }

  kill(id: string, signal: string | number = "SIGTERM", opts: { all?: boolean } = {}): void {
    // signal 0 sends nothing: a liveness probe (runc: success while the container runs)
    const sig = signal === 0 || signal === "0" ? 0 : parseSignal(signal);
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (opts.all && rec.cgroupPath) {
      const cg = cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase);
      const pids = cg.pids();
      if (status === "paused") cg.freeze(false);
      for (const p of pids) killQuietly(p, sig);
      return;
    }
    if (status === "stopped" || status === "creating") throw precondition("container not running");
    process.kill(rec.pid, sig);
  }

  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    let rec: ContainerRecord;
    try {
      rec = this.store.read(id);
    } catch (err) {
      if (opts.force && err instanceof BerthError && err.kind === "NotFound") {
        // A create that died before writing state leaves only the directory, and perhaps the
        // cgroup it (or its engine, ahead of it) made at the default path
        if (this.store.has(id)) this.store.remove(id);
        if (process.getuid?.() === 0)
          try {
            cgroups.openCgroup(cgroups.cgroupPathFor(id)).remove();
          } catch {
            /* not made, or holds processes */
          }
        return;
      }
      throw err;
    }
    const status = this.store.status(rec);
    if (status !== "stopped" && !opts.force) throw precondition(`cannot delete container ${id} that is not stopped: ${status}`);
    const cg = rec.cgroupPath ? cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase) : undefined;
    // everything in the container's cgroup is killed (its leftovers outlive the init without a pid
    // namespace of its own, as under runc), except what was there before the container
    const stranger = strangerTest(rec.strangers);
    if (status !== "stopped") {
      if (cg) {
        if (status === "paused") cg.freeze(false);
        for (const p of cg.pids()) if (!stranger(p)) killQuietly(p, 9);
      }
      killQuietly(rec.pid, 9);
      for (let i = 0; i < 1000 && this.store.status(rec) !== "stopped"; i++) await sleep(2);
    }
    trace("delete: stopped");
    if (cg) {
      const left = await emptyCgroup(cg, stranger);
      trace("delete: cgroup empty");
      if (left.length) this.warn(`cgroup ${rec.cgroupPath} is left in place: it holds ${left.length} process(es) that are not the container's`);
      else {
        cg.remove();
        trace("delete: cgroup removed");
      }
    }
    const state = { ...this.store.ociState(rec), status: "stopped" as Status };
    this.store.remove(id);
    for (const h of rec.spec.hooks?.poststop ?? []) {
      try {
        await runHook("poststop", h, state);
      } catch (err) {
        this.warn(errorMessage(err));
      }
    }
  }

  pids(id: string): number[] {
    const rec = this.store.read(id);
    if (!rec.cgroupPath) return this.store.status(rec) === "stopped" ? [] : [rec.pid];
    return cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).pids().sort((a, b) => a - b);
  }

  /** Changes the resources of a live container (runc update); the record keeps the merged set. */
  update(id: string, resources: cgroups.LinuxResources): string[] {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status === "stopped") throw precondition("container not running");
    if (!rec.cgroupPath) throw precondition(`container ${id} has no cgroup`);
    const warnings = cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).apply(resources, { devices: false });
    const linux = (rec.spec.linux ??= {});
    const merged = (linux.resources ??= {}) as Record<string, unknown>;
    for (const [k, v] of Object.entries(resources)) {
      if (v && typeof v === "object" && !Array.isArray(v)) merged[k] = { ...((merged[k] as object) ?? {}), ...v };
      else merged[k] = v;
    }
    this.store.write(rec);
    return warnings;
  }

  /** Statistics of the container's cgroup, in runc's `events --stats` shape. */
  stats(id: string): cgroups.Stats {
    const rec = this.store.read(id);
    if (this.store.status(rec) === "stopped") throw precondition("container not running");
    if (!rec.cgroupPath) throw precondition(`container ${id} has no cgroup`);
    return cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase).stats();
  }

  /**
   * runc's event stream: stats every `intervalMs`, and an "oom" event whenever the kernel's OOM
   * killer strikes in the container's cgroup. Ends when the container stops or `signal` aborts.
   */
  async events(id: string, onEvent: (e: { type: "stats" | "oom"; id: string; data?: cgroups.Stats }) => void, opts: { intervalMs?: number; signal?: AbortSignal } = {}): Promise<void> {
    const rec = this.store.read(id);
    if (!rec.cgroupPath) throw precondition(`container ${id} has no cgroup`);
    const cg = cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase);
    let ooms = cg.oomKills();
    let next = Date.now();
    while (!opts.signal?.aborted) {
      const now = cg.oomKills();
      if (now > ooms) onEvent({ type: "oom", id });
      ooms = now;
      if (this.store.status(rec) === "stopped") return;
      if (Date.now() >= next) {
        onEvent({ type: "stats", id, data: cg.stats() });
        next = Date.now() + (opts.intervalMs ?? 5000);
      }
      await sleep(50);
    }
  }

  pause(id: string): void {
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status !== "running" && status !== "created") throw precondition("container not running or created: " + status);
    cgroups.openCgroup(rec.cgroupPath!, rec.cgroupBase).freeze(true);
  }

  /** Whether the container's cgroup is frozen (by anyone: berth-runtime pause, or a committer). */
  isPaused(id: string): boolean {
    return this.store.status(this.store.read(id)) === "paused";
  }

  resume(id: string): void {
    const rec = this.store.read(id);
    if (this.store.status(rec) !== "paused") throw precondition("container not paused");
    cgroups.openCgroup(rec.cgroupPath!, rec.cgroupBase).freeze(false);
  }

  /** Runs a process inside the container. Detached: returns its pid; otherwise waits and returns the exit code. */
  async exec(id: string, proc: Process, opts: ExecOptions = {}): Promise<{ pid: number; exitCode?: number }> {
    validateProcess(proc as unknown as Record<string, unknown>, "process");
    const rec = this.store.read(id);
    const status = this.store.status(rec);
    if (status === "stopped") throw precondition("cannot exec in a stopped container");
    if (status === "paused" && !opts.ignorePaused) throw precondition("cannot exec in a paused container (use --ignore-paused to override)");
    if (status === "creating") throw precondition("cannot exec in a container that is being created");
    if (proc.terminal && opts.detach && !opts.consoleSocket) throw invalid("cannot allocate tty if runc will detach without setting console socket");
    const lsm = this.checkLabels(rec.spec, proc);
    const seccomp = this.seccompFor(rec.spec);
    const ops = execPlan({
      pid: rec.pid,
      namespaces: rec.namespaces,
      process: proc,
      rootfs: rec.rootfs,
      cgroup: rec.cgroupPath ? cgroups.openCgroup(rec.cgroupPath, rec.cgroupBase) : undefined,
      ...(opts.cgroupSub ? { cgroupSub: opts.cgroupSub } : {}),
      pidsLimit: rec.spec.linux?.resources?.pids?.limit,
      consoleSocket: opts.consoleSocket,
      foreground: !opts.detach,
      preserveFds: opts.preserveFds,
      seccomp,
      listenerState: seccomp?.listenerPath ? listenerState(seccomp, this.store.ociState(rec), false) : undefined,
      lsm,
    });
    this.debug?.(`exec plan for ${id}: ${describePlan(ops)}`);
    const run = runHelper(ops, { stdio: opts.stdio, preserveFds: opts.preserveFds, ...(opts.onPid ? { onPid: opts.onPid } : {}) });
    if (run.helperPid) opts.onHelper?.(run.helperPid);
    let pid: number;
    try {
      pid = await run.ready;
    } catch (err) {
      await exitedWithin(run, 5000); // a helper stuck past its kill (a frozen task) is not waited for
      throw err;
    }
    if (opts.pidFile) writePidFile(opts.pidFile, pid);
    if (opts.detach) {
      await run.exited;
      return { pid };
    }
    const forward = (sig: NodeJS.Signals) => {
      try {
        if (run.helperPid) process.kill(run.helperPid, sig);
      } catch {
        // gone
      }
    };
    const signals: NodeJS.Signals[] = opts.forwardSignals === false ? [] : ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];
    for (const s of signals) process.on(s, forward);
    const { code, waitStatus } = await run.exited;
    for (const s of signals) process.off(s, forward);
    if (waitStatus === undefined) return { pid, exitCode: code };
    return { pid, exitCode: (waitStatus & 0x7f) === 0 ? (waitStatus >> 8) & 0xff : 128 + (waitStatus & 0x7f) };
  }

  /** createContainer and startContainer hooks run inside the container's namespaces. */
  private async runHookInside(pid: number, namespaces: NamespaceType[], rootfs: string, name: HookName, h: Hook, state: OciState): Promise<void> {
    // in the container's mount namespace before pivot_root, in the rootfs (as runc's): a hook that
    // bind-mounts into ./lib there shows it in the container
    const proc: Process = { user: { uid: 0, gid: 0 }, cwd: rootfs, args: [h.path, ...(h.args ?? []).slice(1)], env: h.env ?? [] };
    const ops = execPlan({ pid, namespaces, process: proc, rootfs, foreground: true });
    const run = runHelper(ops, { stdio: ["pipe", "inherit", "inherit"] });
    run.stdin?.on("error", () => {});
    run.stdin?.end(JSON.stringify(state));
    const timer = h.timeout && run.helperPid ? setTimeout(() => killQuietly(run.helperPid!, 9), h.timeout * 1000) : undefined;
    await run.ready.catch(async (e) => {
      await run.exited;
      throw new BerthError("System", `${name} hook ${h.path}: ${errorMessage(e)}`);
    });
    const { code } = await run.exited;
    if (timer) clearTimeout(timer);
    if (code !== 0) throw new BerthError("System", `${name} hook ${h.path} failed (exit status ${code})`);
  }
}

/** The annotation by which a user accepts running without an AppArmor profile or SELinux label the host cannot apply. */
export const LSM_OPTIONAL_ANNOTATION = "org.berth.lsm";

let lsmCache: HostLsm | undefined;
function hostLsm(): HostLsm {
  if (!lsmCache) {
    let apparmor = false;
    try {
      apparmor = readFileSync("/sys/module/apparmor/parameters/enabled", "utf8").trim() === "Y" && existsSync("/sys/kernel/security/apparmor");
    } catch {
      // no AppArmor module
    }
    lsmCache = { apparmor, selinux: existsSync("/sys/fs/selinux/enforce") };
  }
  return lsmCache;
}

/** The state a startContainer hook reads, its pid left for the container's process to fill in. */
const hookStateTemplate = (state: OciState): string => withPidToken({ ...state, pid: PID_MARK });

/** A number JSON keeps where the pid goes; replaced by @@PID@@, which the helper fills in. */
const PID_MARK = 987654321;
const withPidToken = (doc: unknown): string => JSON.stringify(doc).replaceAll(String(PID_MARK), "@@PID@@");

/** runc's ContainerProcessState for a seccomp agent; the helper puts the process's pid at @@PID@@. */
function listenerState(seccomp: CompiledSeccomp, state: OciState, isInit: boolean): string {
  return withPidToken({
    ociVersion: state.ociVersion,
    fds: ["seccompFd"],
    pid: PID_MARK,
    metadata: seccomp.listenerMetadata ?? "",
    state: { ...state, pid: isInit ? PID_MARK : state.pid },
  });
}

function isPermissionError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === "EACCES" || code === "EPERM" || code === "EROFS";
}

/** Any resource limit beyond device rules (which rootless containers cannot enforce anyway). */
function hasLimits(r: Spec["linux"] extends infer L ? (L extends { resources?: infer R } ? NonNullable<R> : never) : never): boolean {
  return Object.entries(r).some(([k, v]) => k !== "devices" && v !== undefined && v !== null && (typeof v !== "object" || Object.keys(v).length > 0));
}

function describePlan(ops: [number, ...string[]][]): string {
  return ops.map(([code, ...args]) => `${codeNames[code]}(${args.map((a) => JSON.stringify(a)).join(", ")})`).join(" ");
}

function killQuietly(pid: number, sig: number): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** The helper's exit, or nothing after ms: a failed run's cleanup never waits forever. */
async function exitedWithin(run: { exited: Promise<unknown> }, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([run.exited, new Promise((res) => (timer = setTimeout(res, ms)))]);
  clearTimeout(timer);
}

/** Whether a pid is one of the processes that were in the cgroup before the container (same start time: not a reused pid). */
function strangerTest(strangers: { pid: number; start: number }[] | undefined): (pid: number) => boolean {
  if (!strangers?.length) return () => false;
  return (pid) => strangers.some((s) => s.pid === pid && (processStartTime(pid)?.start ?? 0) === s.start);
}

/** Kills what is in a container's cgroup but the strangers, until only they are left; returns them. */
async function emptyCgroup(cg: cgroups.Cgroup, stranger: (pid: number) => boolean): Promise<number[]> {
  let left: number[] = [];
  for (let i = 0; i < 500; i++) {
    let pids: number[];
    try {
      pids = cg.pids();
    } catch {
      // the cgroup is gone: no processes
      return [];
    }
    const ours = pids.filter((p) => !stranger(p));
    left = pids.filter(stranger);
    if (!ours.length) return left;
    for (const p of ours) killQuietly(p, 9);
    await sleep(2);
  }
  return left;
}

function writePidFile(path: string, pid: number): void {
  const abs = resolve(path);
  const tmp = join(dirname(abs), `.${Date.now()}.pid`);
  writeFileSync(tmp, String(pid));
  renameSync(tmp, abs);
}

/** Runs one hook on the host with the state JSON on stdin, honouring its timeout. */
export function runHook(name: HookName, h: Hook, state: OciState): Promise<void> {
  if (!hookNames.includes(name)) throw invalid(`unknown hook ${name}`);
  return new Promise((res, rej) => {
    const [argv0, ...rest] = h.args?.length ? h.args : [h.path];
    const child = spawn(h.path, rest, { argv0, env: Object.fromEntries((h.env ?? []).map((e) => [e.slice(0, e.indexOf("=")), e.slice(e.indexOf("=") + 1)])), stdio: ["pipe", "inherit", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d) => (stderr += d));
    child.stdin!.on("error", () => {});
    child.stdin!.end(JSON.stringify(state));
    const timer = h.timeout ? setTimeout(() => child.kill("SIGKILL"), h.timeout * 1000) : undefined;
    child.on("error", (e) => rej(new BerthError("System", `${name} hook ${h.path}: ${e.message}`)));
    child.on("exit", (code, signal) => {
      if (timer) clearTimeout(timer);
      if (code === 0) res();
      else if (signal === "SIGKILL" && h.timeout) rej(new BerthError("System", `${name} hook ${h.path} timed out after ${h.timeout}s`));
      else rej(new BerthError("System", `${name} hook ${h.path} failed (${signal ?? `exit status ${code}`}): ${stderr.trim()}`));
    });
  });
}

