/**
 * Compiles a validated spec into the helper's flat list of operations (helper/protocol.table).
 * All policy lives here: which namespaces to create or join, the order of mounts, default devices,
 * how options turn into mount flags. The helper only executes.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { join } from "../common/path.js";
import { invalid, unsupported } from "../common/errors.js";
import { capabilityMask, type CompiledSeccomp } from "../security/index.js";
import * as cgroups from "../cgroups/index.js";
import { Op } from "./protocol.js";
import type { Mount, NamespaceType, Process, Spec } from "./spec.js";
import { K } from "../common/kernel-abi.js";

export type PlanOp = [code: number, ...args: string[]];

export const cloneFlag: Record<NamespaceType, number> = {
  mount: K.CLONE_NEWNS,
  uts: K.CLONE_NEWUTS,
  ipc: K.CLONE_NEWIPC,
  user: K.CLONE_NEWUSER,
  pid: K.CLONE_NEWPID,
  network: K.CLONE_NEWNET,
  cgroup: K.CLONE_NEWCGROUP,
  time: K.CLONE_NEWTIME,
};
/** Order in which existing namespaces are joined: user first, as nsenter does; mount last. */
const joinOrder: NamespaceType[] = ["user", "cgroup", "ipc", "uts", "network", "pid", "time", "mount"];
export const procNsName: Record<NamespaceType, string> = {
  mount: "mnt",
  uts: "uts",
  ipc: "ipc",
  user: "user",
  pid: "pid",
  network: "net",
  cgroup: "cgroup",
  time: "time",
};

const MS = {
  RDONLY: K.MS_RDONLY, NOSUID: K.MS_NOSUID, NODEV: K.MS_NODEV, NOEXEC: K.MS_NOEXEC, SYNCHRONOUS: K.MS_SYNCHRONOUS, REMOUNT: K.MS_REMOUNT, MANDLOCK: K.MS_MANDLOCK, DIRSYNC: K.MS_DIRSYNC,
  NOATIME: K.MS_NOATIME, NODIRATIME: K.MS_NODIRATIME, BIND: K.MS_BIND, MOVE: K.MS_MOVE, REC: K.MS_REC, SILENT: K.MS_SILENT,
  UNBINDABLE: K.MS_UNBINDABLE, PRIVATE: K.MS_PRIVATE, SLAVE: K.MS_SLAVE, SHARED: K.MS_SHARED, RELATIME: K.MS_RELATIME, STRICTATIME: K.MS_STRICTATIME,
} as const;

/** mount(8) option → [flags to set, flags to clear]. */
const flagOptions: Record<string, [number, number]> = {
  ro: [MS.RDONLY, 0], rw: [0, MS.RDONLY], nosuid: [MS.NOSUID, 0], suid: [0, MS.NOSUID], nodev: [MS.NODEV, 0],
  dev: [0, MS.NODEV], noexec: [MS.NOEXEC, 0], exec: [0, MS.NOEXEC], sync: [MS.SYNCHRONOUS, 0], async: [0, MS.SYNCHRONOUS],
  remount: [MS.REMOUNT, 0], mand: [MS.MANDLOCK, 0], nomand: [0, MS.MANDLOCK], dirsync: [MS.DIRSYNC, 0],
  noatime: [MS.NOATIME, 0], atime: [0, MS.NOATIME], nodiratime: [MS.NODIRATIME, 0], diratime: [0, MS.NODIRATIME],
  relatime: [MS.RELATIME, 0], norelatime: [0, MS.RELATIME], strictatime: [MS.STRICTATIME, 0], nostrictatime: [0, MS.STRICTATIME],
  bind: [MS.BIND, 0], rbind: [MS.BIND | MS.REC, 0], silent: [MS.SILENT, 0], loud: [0, MS.SILENT], defaults: [0, 0],
};
const propagationOptions: Record<string, number> = {
  private: MS.PRIVATE, rprivate: MS.PRIVATE | MS.REC, shared: MS.SHARED, rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE, rslave: MS.SLAVE | MS.REC, unbindable: MS.UNBINDABLE, runbindable: MS.UNBINDABLE | MS.REC,
};
/** mount_setattr's MOUNT_ATTR_* bits (linux/mount.h). */
const ATTR = { RDONLY: K.MOUNT_ATTR_RDONLY, NOSUID: K.MOUNT_ATTR_NOSUID, NODEV: K.MOUNT_ATTR_NODEV, NOEXEC: K.MOUNT_ATTR_NOEXEC, ATIME: K.MOUNT_ATTR_ATIME, RELATIME: K.MOUNT_ATTR_RELATIME, NOATIME: K.MOUNT_ATTR_NOATIME, STRICTATIME: K.MOUNT_ATTR_STRICTATIME, NODIRATIME: K.MOUNT_ATTR_NODIRATIME, NOSYMFOLLOW: K.MOUNT_ATTR_NOSYMFOLLOW } as const;
/**
 * runc's recursive options → [attributes to set, to clear] on the mount and all below it. An atime
 * mode is set whole (the kernel takes the three atime bits together); clearing one means relatime.
 */
const recursiveOptions: Record<string, [number, number]> = {
  rro: [ATTR.RDONLY, 0], rrw: [0, ATTR.RDONLY], rnosuid: [ATTR.NOSUID, 0], rsuid: [0, ATTR.NOSUID], rnodev: [ATTR.NODEV, 0], rdev: [0, ATTR.NODEV],
  rnoexec: [ATTR.NOEXEC, 0], rexec: [0, ATTR.NOEXEC], rnodiratime: [ATTR.NODIRATIME, 0], rdiratime: [0, ATTR.NODIRATIME],
  rrelatime: [ATTR.RELATIME, ATTR.ATIME], rnorelatime: [ATTR.RELATIME, ATTR.ATIME], rnoatime: [ATTR.NOATIME, ATTR.ATIME], ratime: [ATTR.RELATIME, ATTR.ATIME],
  rstrictatime: [ATTR.STRICTATIME, ATTR.ATIME], rnostrictatime: [ATTR.RELATIME, ATTR.ATIME], rnosymfollow: [ATTR.NOSYMFOLLOW, 0], rsymfollow: [0, ATTR.NOSYMFOLLOW],
};

/** Options runc accepts that have no mount flag and are handled elsewhere or not at all. */
const ignoredOptions = new Set(["tmpcopyup", "nocopyup", "z", "Z"]);

export function parseMountOptions(options: string[] = []): { flags: number; propagation: number[]; data: string[]; attrSet: number; attrClear: number } {
  let flags = 0;
  let attrSet = 0,
    attrClear = 0;
  const propagation: number[] = [];
  const data: string[] = [];
  for (const o of options) {
    const f = flagOptions[o];
    const r = recursiveOptions[o];
    if (f) flags = (flags | f[0]) & ~f[1];
    else if (r) {
      attrSet = (attrSet & ~r[1]) | r[0];
      attrClear = (attrClear & ~r[0]) | r[1];
    } else if (propagationOptions[o] !== undefined) propagation.push(propagationOptions[o]!);
    else if (o === "idmap" || o === "ridmap") continue; // handled by mountOps with the mount's mappings
    else if (!ignoredOptions.has(o)) data.push(o);
  }
  return { flags, propagation, data, attrSet, attrClear };
}

const defaultDevices = [
  { path: "/dev/null", major: 1, minor: 3 },
  { path: "/dev/zero", major: 1, minor: 5 },
  { path: "/dev/full", major: 1, minor: 7 },
  { path: "/dev/random", major: 1, minor: 8 },
  { path: "/dev/urandom", major: 1, minor: 9 },
  { path: "/dev/tty", major: 5, minor: 0 },
];

const rlimitNumbers: Record<string, number> = Object.fromEntries(Object.entries(K).filter(([k]) => k.startsWith("RLIMIT_")));

const u64 = (n: number) => (n < 0 || n >= 2 ** 64 - 1 ? "unlimited" : BigInt(n).toString());

/** Which Linux security modules this host enforces (the runtime refuses labels it cannot apply). */
export interface HostLsm {
  apparmor: boolean;
  selinux: boolean;
}

function credentialOps(p: Process, home: string, preserveFds: number, seccomp?: CompiledSeccomp, setgroupsDenied = false, listenerState?: string, lsm?: HostLsm, startHooks: PlanOp[] = []): PlanOp[] {
  const ops: PlanOp[] = [];
  // labels for the exec, set while still privileged (as runc, before the user and capabilities change)
  if (p.apparmorProfile && lsm?.apparmor) ops.push([Op.LSM_EXEC, "apparmor/exec", `exec ${p.apparmorProfile}`]);
  if (p.selinuxLabel && lsm?.selinux) ops.push([Op.LSM_EXEC, "exec", p.selinuxLabel]);
  // A notify filter's fd goes to the agent (runc's ContainerProcessState, @@PID@@ filled in by the helper).
  if (seccomp?.listenerPath) ops.push([Op.SECCOMP_LISTENER, seccomp.listenerPath, listenerState ?? "{}"]);
  // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it before the user and
  // capabilities change. With it, load it last, after the exec fifo, right before execve (as runc).
  const early = seccomp && !p.noNewPrivileges;
  if (p.oomScoreAdj !== undefined) ops.push([Op.OOM_SCORE_ADJ, String(p.oomScoreAdj)]);
  for (const r of p.rlimits ?? []) {
    const n = rlimitNumbers[r.type];
    if (n === undefined) throw invalid(`config.json: process.rlimits: unknown rlimit type ${r.type}`);
    ops.push([Op.RLIMIT, String(n), u64(r.soft), u64(r.hard)]);
  }
  if (early) ops.push([Op.SECCOMP, String(seccomp.flags), seccomp.program, "now"]);
  // the cwd first while still privileged (a directory only root may enter, as runc), again as the user if refused
  ops.push([Op.CWD, p.cwd, "early"]);
  ops.push([Op.UMASK, (p.user.umask ?? 0o022).toString(8)]);
  if (setgroupsDenied && p.user.additionalGids?.length)
    throw invalid("config.json: process.user.additionalGids: a rootless container that maps only its own ids cannot set groups (map more ids through /etc/subgid)");
  if (!setgroupsDenied) ops.push([Op.GROUPS, ...(p.user.additionalGids ?? []).map(String)]);
  ops.push([Op.USER, String(p.user.uid), String(p.user.gid)]);
  if (p.capabilities) {
    const c = p.capabilities;
    const mask = (l: string[] | undefined, set: string) => {
      const unknown: string[] = [];
      const m = capabilityMask(l, unknown);
      if (unknown.length) throw invalid(`config.json: process.capabilities.${set}[${l!.indexOf(unknown[0]!)}]: unknown capability ${JSON.stringify(unknown[0])}`);
      return "0x" + m.toString(16);
    };
    ops.push([Op.CAPS, mask(c.bounding, "bounding"), mask(c.effective, "effective"), mask(c.permitted, "permitted"), mask(c.inheritable, "inheritable"), mask(c.ambient, "ambient")]);
  }
  if (p.noNewPrivileges) ops.push([Op.NO_NEW_PRIVS]);
  if (seccomp && !early) ops.push([Op.SECCOMP, String(seccomp.flags), seccomp.program, "exec"]);
  ops.push([Op.CWD, p.cwd]);
  if (preserveFds > 0) ops.push([Op.PRESERVE_FDS, String(preserveFds)]);
  const env = p.env ?? [];
  for (const e of env) ops.push([Op.ENV, e]);
  if (!env.some((e) => e.startsWith("HOME="))) ops.push([Op.ENV, `HOME=${home}`]);
  ops.push(...startHooks);
  ops.push([Op.EXEC, p.args![0]!, ...p.args!]);
  return ops;
}

/** The home directory of uid in the container's /etc/passwd, "/" when there is none (as runc). */
function homeOf(rootfs: string | undefined, uid: number): string {
  if (!rootfs) return "/";
  try {
    for (const line of readFileSync(join(rootfs, "etc/passwd"), "utf8").split("\n")) {
      const f = line.split(":");
      if (f.length >= 6 && Number(f[2]) === uid) return f[5] || "/";
    }
  } catch {
    // no passwd file: "/" as runc
  }
  return "/";
}

export interface CreatePlanInput {
  spec: Spec;
  bundle: string;
  rootfs: string;
  fifo?: string;
  consoleSocket?: string;
  noPivot?: boolean;
  preserveFds?: number;
  cgroup?: cgroups.Cgroup;
  /** How the process enters that cgroup, when the caller has worked it out already. */
  cgroupEntry?: cgroups.CgroupEntry;
  hookSync?: boolean;
  foreground?: boolean;
  seccomp?: CompiledSeccomp;
  /** Idmapped mounts planned so far (their user namespaces are numbered in order). */
  idmapCount?: number;
  /** The JSON sent to a seccomp agent with the notify fd. */
  listenerState?: string;
  /** runc gives each container a session keyring of its own (named after it) unless --no-new-keyring. */
  sessionKeyring?: string;
  /** The LSMs the host enforces: the process's labels are applied where one is. */
  lsm?: HostLsm;
  /** The state JSON startContainer hooks read (@@PID@@ for the pid). */
  hookState?: string;
}

/**
 * What a container's plan needs to know about the host and its rootfs. planHost gathers it (the
 * only part that reads them); createPlan given one is a pure function of its arguments, so plans
 * are golden-tested (test/plan-golden.test.ts) without root or a host like the one they describe.
 */
export interface PlanHost {
  /** The runtime's own ids: root writes id maps itself, others map only their own ids or use newuidmap. */
  uid: number;
  gid: number;
  /** HOME for the process's uid, from the container's /etc/passwd ("/" when it has none, as runc). */
  home: string;
  /** The kind of each bind source that exists: a directory or a file. */
  bindSources: Record<string, "d" | "f">;
  /** newuidmap and newgidmap (Debian's uidmap), where installed. */
  idMapPrograms: { newuidmap?: string; newgidmap?: string };
  /** Whether the host has /proc/kcore (linked as /dev/core, as runc). */
  kcore: boolean;
  /** The host's full proc and sysfs mounts outside the rootfs (--no-pivot hides them). */
  hostProcMounts: string[];
  /** Joined network namespaces that are the host's own (no net.* sysctls there). */
  hostNetworkPaths: string[];
  /** The container's cgroup: how the process enters it, its v2 device filter, what a cgroup mount shows. */
  cgroup?: { entry: cgroups.CgroupEntry; deviceFilter?: { dir: string; program: string }; mountSources: { name: string; dir: string; v2: boolean }[] };
}

const bindSource = (m: Mount, bundle: string): string | undefined => {
  const isBind = m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
  if (!isBind) return undefined;
  const source = m.source ?? "";
  return isAbsolute(source) ? source : resolve(bundle, source);
};

/** Reads what createPlan needs of the host (see PlanHost). */
export function planHost(input: CreatePlanInput): PlanHost {
  const { spec, rootfs } = input;
  const linux = spec.linux ?? {};
  const uid = process.getuid?.() ?? 0;
  const bindSources: Record<string, "d" | "f"> = {};
  for (const m of spec.mounts ?? []) {
    const src = bindSource(m, input.bundle);
    if (src === undefined) continue;
    const st = statSync(src, { throwIfNoEntry: false });
    if (st) bindSources[src] = st.isDirectory() ? "d" : "f";
  }
  const newUserNs = (linux.namespaces ?? []).some((n) => n.type === "user" && !n.path);
  const cg = input.cgroup;
  return {
    uid,
    gid: process.getgid?.() ?? 0,
    home: homeOf(rootfs, spec.process?.user.uid ?? 0),
    bindSources,
    idMapPrograms: newUserNs && uid !== 0 ? { ...optional("newuidmap", findIdMapProgram("newuidmap")), ...optional("newgidmap", findIdMapProgram("newgidmap")) } : {},
    kcore: existsSync("/proc/kcore"),
    hostProcMounts: input.noPivot ? hostProcMounts(rootfs) : [],
    // looked at only for net.* sysctls (an unreadable namespace is an error there)
    hostNetworkPaths: Object.keys(linux.sysctl ?? {}).some((k) => k.startsWith("net.") || k.startsWith("net/"))
      ? (linux.namespaces ?? []).filter((n) => n.type === "network" && n.path && sameNamespace(n.path, "/proc/self/ns/net")).map((n) => n.path!)
      : [],
    ...(cg
      ? {
          cgroup: {
            // a new container's pids limit of 1 leaves no room for the helper beside its init
            entry: input.cgroupEntry ?? cg.entry({ helperJoins: uid === 0, pidsTight: linux.resources?.pids?.limit === 1 }),
            ...optional("deviceFilter", cg.deviceFilter(linux.resources?.devices)),
            mountSources: (spec.mounts ?? []).some((m) => m.type === "cgroup" || m.type === "cgroup2") ? cg.mountSources() : [],
          },
        }
      : {}),
  };
}

const optional = <K extends string, V>(key: K, v: V | undefined): Partial<Record<K, V>> => (v === undefined ? {} : ({ [key]: v } as Record<K, V>));

/** newuidmap/newgidmap from Debian's uidmap package: setuid helpers that apply /etc/subuid and /etc/subgid. */
/**
 * `rm -rf PATH` as root of a new user namespace with these maps (rootless: what the container's
 * other users made belongs to subordinate ids the user may not delete as itself).
 */
export function removalPlan(path: string, uidMappings: IdMap[], gidMappings: IdMap[]): PlanOp[] {
  const triples = (maps: IdMap[]) => maps.flatMap((m) => [String(m.containerID), String(m.hostID), String(m.size)]);
  return [
    [Op.CLONE, String(cloneFlag.user)],
    [Op.ID_MAP_CMD, idMapProgram("newuidmap", findIdMapProgram("newuidmap")), ...triples(uidMappings)],
    [Op.ID_MAP_CMD, idMapProgram("newgidmap", findIdMapProgram("newgidmap")), ...triples(gidMappings)],
    [Op.FOREGROUND],
    [Op.ENV, "PATH=/usr/bin:/bin"],
    [Op.EXEC, "/bin/rm", "rm", "-rf", "--", path],
  ];
}

type IdMap = { containerID: number; hostID: number; size: number };

function findIdMapProgram(name: string): string | undefined {
  for (const dir of ["/usr/bin", "/bin", "/usr/sbin"]) if (existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  return undefined;
}

function idMapProgram(name: "newuidmap" | "newgidmap", found: string | undefined): string {
  if (found) return found;
  throw unsupported(`rootless: ${name} is not installed (apt-get install uidmap), and mapping more than your own id needs it`);
}

function mapText(maps: { containerID: number; hostID: number; size: number }[]): string {
  return maps.map((m) => `${m.containerID} ${m.hostID} ${m.size}\n`).join("");
}

/** How the process enters its cgroup (cgroups.CgroupEntry) as plan records; only root's helper joins. */
function cgroupEntryOps(e: cgroups.CgroupEntry | undefined): PlanOp[] {
  if (!e) return [];
  const ops: PlanOp[] = [...e.joins.map((j): PlanOp => [Op.CGROUP_JOIN, j.dir, j.back]), ...e.procs.map((f): PlanOp => [Op.CGROUP_PROCS, f])];
  if (e.cloneInto) ops.push([Op.CLONE_INTO_CGROUP, e.cloneInto]);
  return ops;
}

/**
 * Full proc and sysfs mounts of the host outside the rootfs. chroot leaves them reachable in the
 * container's mount namespace, and the kernel lets a new user namespace mount a fresh procfs
 * (unmasked) wherever a full one is visible: --no-pivot hides them first, as runc does.
 */
function hostProcMounts(rootfs: string): string[] {
  const out: string[] = [];
  const unescape = (p: string) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    const f = line.split(" ");
    const sep = f.indexOf("-");
    if (sep < 0 || f[3] !== "/" || (f[sep + 1] !== "proc" && f[sep + 1] !== "sysfs")) continue;
    const mountpoint = unescape(f[4]!);
    if (mountpoint === rootfs || mountpoint.startsWith(rootfs.endsWith("/") ? rootfs : rootfs + "/")) continue;
    out.push(mountpoint);
  }
  return out;
}

/** sysctls in the IPC namespace (runc's list): the only kernel.* keys a container may set. */
const ipcSysctls = new Set(["kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall", "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"]);

/**
 * The /proc/sys path of a sysctl the container may set: only keys the kernel keeps per namespace,
 * and only when the container has that namespace of its own (as runc's validator). Anything else
 * (kernel.core_pattern, vm.*, a net.* key in the host's network namespace) would change the host.
 */
export function sysctlPath(key: string, namespaces: { type: NamespaceType; path?: string }[], hostNetworkPaths: readonly string[]): string {
  const bad = (why: string) => invalid(`config.json: linux.sysctl: ${JSON.stringify(key.slice(0, 100))} ${why}`);
  // runc accepts both spellings: kernel.msgmax and kernel/msgmax
  const name = key.replace(/\//g, ".");
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_:@+-]+)+$/.test(name)) throw bad("is not a sysctl name");
  const has = (t: NamespaceType) => namespaces.some((n) => n.type === t);
  if (ipcSysctls.has(name) || name.startsWith("fs.mqueue.")) {
    if (!has("ipc")) throw bad("is not allowed in the host's IPC namespace (add an ipc namespace)");
  } else if (name.startsWith("net.")) {
    const net = namespaces.find((n) => n.type === "network");
    if (!net || (net.path && hostNetworkPaths.includes(net.path))) throw bad("is not allowed in the host's network namespace (add a network namespace)");
  } else if (name === "kernel.hostname" || name === "kernel.domainname") {
    if (!has("uts")) throw bad("is not allowed in the host's UTS namespace (add a uts namespace)");
  } else throw bad("is not namespaced: setting it would change the host (only kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.* and kernel.hostname/domainname are)");
  // the slash form keeps dots inside a name (net.ipv4.conf.eth0/100.forwarding is eth0.100's)
  return key.includes("/") ? key : key.replace(/\./g, "/");
}

function sameNamespace(a: string, b: string): boolean {
  try {
    const x = statSync(a),
      y = statSync(b);
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    // any error: the namespace cannot be read, as said
    throw invalid(`config.json: linux.namespaces: cannot read the network namespace ${a}`);
  }
}

export function createPlan(input: CreatePlanInput, host: PlanHost = planHost(input)): PlanOp[] {
  const { spec, rootfs } = input;
  const linux = spec.linux ?? {};
  const p = spec.process!;
  const ops: PlanOp[] = [];
  const namespaces = linux.namespaces ?? [];
  const newNs = new Set(namespaces.filter((n) => !n.path).map((n) => n.type));
  const joined = namespaces.filter((n) => n.path);

  if (input.fifo) ops.push([Op.MKFIFO, input.fifo, "622"], [Op.EXEC_FIFO, input.fifo]);
  if (input.consoleSocket) ops.push([Op.CONSOLE_SOCKET, input.consoleSocket]);
  // Host paths are opened before any namespace is joined.
  const filter = host.cgroup?.deviceFilter;
  if (filter) ops.push([Op.DEVICE_FILTER, filter.dir, filter.program]);
  ops.push(...cgroupEntryOps(host.cgroup?.entry));
  for (const t of joinOrder)
    for (const n of joined) if (n.type === t) ops.push([Op.SETNS, n.path!, String(cloneFlag[t])]);
  if (newNs.has("time")) {
    const offsets = Object.entries(linux.timeOffsets ?? {})
      .map(([clock, o]) => `${clock} ${o.secs ?? 0} ${o.nanosecs ?? 0}\n`)
      .join("");
    ops.push([Op.UNSHARE_TIME, offsets]);
  }
  // a container in a new user namespace binds what its mapped root may not reach (a source under a
  // directory only root enters): the runtime clones each source's mount tree first, as itself, and
  // the child attaches the clone (runc's mount fds). Rootless, the user reaches its own sources.
  const trees = new Map<Mount, number>();
  if (newNs.has("user") && host.uid === 0)
    for (const m of spec.mounts ?? []) {
      const src = bindSource(m, input.bundle);
      const opts = m.options ?? [];
      if (src === undefined || m.uidMappings || m.gidMappings || opts.includes("idmap") || opts.includes("ridmap")) continue;
      if (!host.bindSources[src]) continue; // refused with its name when the mount is planned
      trees.set(m, trees.size);
      ops.push([Op.BIND_SOURCE, src, opts.includes("rbind") ? "r" : ""]);
    }
  let flags = 0;
  for (const t of newNs) if (t !== "time" && t !== "cgroup") flags |= cloneFlag[t];
  ops.push([Op.CLONE, String(flags)]);
  let setgroupsDenied = false;
  if (newNs.has("user")) {
    if (!linux.uidMappings?.length || !linux.gidMappings?.length)
      throw invalid("config.json: linux.uidMappings and linux.gidMappings are required with a new user namespace");
    const { uid, gid } = host;
    const ownOnly = (maps: { hostID: number; size: number }[], id: number) => maps.length === 1 && maps[0]!.hostID === id && maps[0]!.size === 1;
    if (uid === 0) ops.push([Op.UID_MAP, mapText(linux.uidMappings)], [Op.GID_MAP, mapText(linux.gidMappings)]);
    else if (ownOnly(linux.uidMappings, uid) && ownOnly(linux.gidMappings, gid)) {
      // An unprivileged user may map only its own ids, and only after giving up setgroups.
      ops.push([Op.UID_MAP, mapText(linux.uidMappings)], [Op.SETGROUPS_DENY], [Op.GID_MAP, mapText(linux.gidMappings)]);
      setgroupsDenied = true;
    } else {
      const triples = (maps: { containerID: number; hostID: number; size: number }[]) => maps.flatMap((m) => [String(m.containerID), String(m.hostID), String(m.size)]);
      ops.push([Op.ID_MAP_CMD, idMapProgram("newuidmap", host.idMapPrograms.newuidmap), ...triples(linux.uidMappings)], [Op.ID_MAP_CMD, idMapProgram("newgidmap", host.idMapPrograms.newgidmap), ...triples(linux.gidMappings)]);
    }
  }
  if (input.hookSync) ops.push([Op.HOOK_SYNC]);
  if (input.foreground) ops.push([Op.FOREGROUND]);

  // --- the child, in order ---
  if (newNs.has("cgroup")) ops.push([Op.UNSHARE, String(cloneFlag.cgroup)]);
  const mountNs = newNs.has("mount") || joined.some((n) => n.type === "mount");
  if (!mountNs) throw invalid("config.json: linux.namespaces: a mount namespace is required (berth will not pivot the host's root)");
  const prop = linux.rootfsPropagation ? propagationOptions[linux.rootfsPropagation] ?? MS.PRIVATE : MS.SLAVE | MS.REC;
  if (input.sessionKeyring) ops.push([Op.KEYRING, input.sessionKeyring]);
  ops.push([Op.PROPAGATION, String(prop & ~MS.REC)]);
  // berth's own annotation (rootless engine): the rootfs is an overlay only this user namespace may mount
  const overlay = spec.annotations?.[ROOTFS_OVERLAY_ANNOTATION];
  if (overlay) {
    if (!newNs.has("mount")) throw invalid(`config.json: annotation ${ROOTFS_OVERLAY_ANNOTATION} needs a new mount namespace`);
    ops.push([Op.ROOTFS_MOUNT, rootfs, "overlay", overlay]);
  }
  // a shared parent makes pivot_root fail (EINVAL): runc makes it private, and applies the
  // propagation to the new root once it is "/"
  const shared = (prop & MS.SHARED) !== 0;
  if (shared && !input.noPivot) ops.push([Op.PARENT_PRIVATE, rootfs]);
  ops.push([Op.ROOTFS, rootfs]);
  let devIsTmpfs = false;
  let devReadOnly: number | undefined;
  for (const m of spec.mounts ?? []) {
    if (m.destination === "/dev" && m.type !== "bind" && !(m.options ?? []).some((o) => o === "bind" || o === "rbind")) {
      devIsTmpfs = true;
      // a read-only /dev is mounted writable, filled, then made read-only (as runc's finalizeRootfs)
      const { flags } = parseMountOptions(m.options);
      if (flags & MS.RDONLY) {
        devReadOnly = flags & ~MS.RDONLY & ~MS.REMOUNT;
        ops.push(...mountOps({ ...m, options: (m.options ?? []).filter((o) => o !== "ro") }, input, host, trees.get(m)));
        continue;
      }
    }
    ops.push(...mountOps(m, input, host, trees.get(m)));
  }
  if (devIsTmpfs) {
    const devices = [...defaultDevices.filter((d) => !(linux.devices ?? []).some((x) => x.path === d.path))];
    for (const d of devices) ops.push([Op.MKNOD, d.path, "c", String(d.major), String(d.minor), "438", "0", "0"]);
    for (const d of linux.devices ?? [])
      ops.push([Op.MKNOD, d.path, d.type === "u" ? "c" : d.type, String(d.major ?? 0), String(d.minor ?? 0), String(d.fileMode ?? 0o666), String(d.uid ?? 0), String(d.gid ?? 0)]);
    const links: [string, string][] = [["/proc/self/fd", "/dev/fd"], ["/proc/self/fd/0", "/dev/stdin"], ["/proc/self/fd/1", "/dev/stdout"], ["/proc/self/fd/2", "/dev/stderr"]];
    if (host.kcore) links.push(["/proc/kcore", "/dev/core"]);
    if ((spec.mounts ?? []).some((m) => m.destination === "/dev/pts")) links.push(["pts/ptmx", "/dev/ptmx"]);
    for (const [target, link] of links) ops.push([Op.SYMLINK, target, link]);
  } else {
    for (const d of linux.devices ?? [])
      ops.push([Op.MKNOD, d.path, d.type === "u" ? "c" : d.type, String(d.major ?? 0), String(d.minor ?? 0), String(d.fileMode ?? 0o666), String(d.uid ?? 0), String(d.gid ?? 0)]);
  }
  if (devReadOnly !== undefined) ops.push([Op.REMOUNT_RO, "/dev", String(devReadOnly)]);
  if (input.noPivot) for (const path of host.hostProcMounts) ops.push([Op.HIDE_MOUNT, path]);
  ops.push(input.noPivot ? [Op.CHROOT] : [Op.PIVOT_ROOT]);
  if (shared) ops.push([Op.PROPAGATION, String(prop), "exact"]);
  ops.push([Op.SETSID]);
  if (p.terminal) ops.push([Op.TERMINAL, String(p.user.uid)]);
  if (spec.hostname !== undefined && spec.hostname !== "") {
    // a uts namespace of the container's own, made or joined (runc sets it in a joined one too)
    if (!namespaces.some((n) => n.type === "uts")) throw invalid("config.json: hostname: unable to set the hostname without a private uts namespace");
    ops.push([Op.HOSTNAME, spec.hostname]);
  }
  if (spec.domainname) {
    if (!namespaces.some((n) => n.type === "uts")) throw invalid("config.json: domainname: unable to set the domainname without a private uts namespace");
    ops.push([Op.DOMAINNAME, spec.domainname]);
  }
  for (const [k, v] of Object.entries(linux.sysctl ?? {})) ops.push([Op.SYSCTL, sysctlPath(k, namespaces, host.hostNetworkPaths), v]);
  for (const path of linux.readonlyPaths ?? []) ops.push([Op.READONLY_PATH, path]);
  for (const path of linux.maskedPaths ?? []) ops.push([Op.MASK_PATH, path]);
  if (spec.root?.readonly) ops.push([Op.REMOUNT_ROOT_RO]);
  // startContainer hooks run from the container's process (after seccomp, before execve); the
  // state they read names the process by its pid there, as runc's
  const startHooks = (spec.hooks?.startContainer ?? []).map((h): PlanOp => [Op.START_HOOK, h.path, String(h.timeout ?? 0), input.hookState ?? "{}", String(h.args?.length ?? 0), ...(h.args ?? []), ...(h.env ?? [])]);
  ops.push(...credentialOps(p, host.home, input.preserveFds ?? 0, input.seccomp, setgroupsDenied, input.listenerState, input.lsm, startHooks));
  return ops;
}

function mountOps(m: Mount, input: CreatePlanInput, host: PlanHost, tree?: number): PlanOp[] {
  const parsed = parseMountOptions(m.options);
  const { attrSet, attrClear } = parsed;
  const ops = mountOpsOnly(m, input, host, parsed, tree);
  // rro and the other recursive options: on the mount just made and every mount below it
  if (attrSet || attrClear) ops.push([Op.MOUNT_SETATTR, m.destination, String(attrSet), String(attrClear)]);
  return ops;
}

function mountOpsOnly(m: Mount, input: CreatePlanInput, host: PlanHost, { flags, propagation, data }: ReturnType<typeof parseMountOptions>, tree?: number): PlanOp[] {
  const type = m.type ?? "";
  const dest = m.destination;
  if (dest.split("/").includes("..")) throw invalid(`config.json: mounts: destination ${dest} contains ".."`);
  const isBind = type === "bind" || (flags & MS.BIND) !== 0;
  const prop = propagation.length ? propagation[propagation.length - 1]! : 0;
  if (isBind) {
    const source = m.source ?? "";
    const src = isAbsolute(source) ? source : resolve(input.bundle, source);
    const kind = host.bindSources[src];
    if (!kind) throw invalid(`config.json: mounts: bind source ${src} for ${dest} does not exist`);
    const opts = m.options ?? [];
    if (m.uidMappings || m.gidMappings || opts.includes("idmap") || opts.includes("ridmap")) {
      // An idmapped bind mount (runtime-spec 1.1): a user namespace lends its mapping to the mount.
      if (!m.uidMappings?.length || !m.gidMappings?.length) throw invalid(`config.json: mounts: idmapped mount ${dest} needs both uidMappings and gidMappings`);
      const index = input.idmapCount ?? 0;
      input.idmapCount = index + 1;
      const recursive = opts.includes("ridmap") || (flags & MS.REC) !== 0;
      return [
        [Op.IDMAP_USERNS, mapText(m.uidMappings), mapText(m.gidMappings)],
        [Op.MOUNT, src, dest, "", String(flags | MS.BIND), String(prop), data.join(","), kind, String(index), recursive ? "r" : ""],
      ];
    }
    if (tree !== undefined) return [[Op.MOUNT, src, dest, "", String(flags | MS.BIND), String(prop), data.join(","), kind, "", "", String(tree)]];
    return [[Op.MOUNT, src, dest, "", String(flags | MS.BIND), String(prop), data.join(","), kind]];
  }
  if (type === "cgroup" || type === "cgroup2") return cgroupMountOps(dest, flags, input, host);
  return [[Op.MOUNT, m.source ?? type, dest, type, String(flags), String(prop), data.join(","), "d"]];
}

/** v2: a cgroup2 mount (the container's own view through its cgroup namespace). v1: runc's layout,
 * a tmpfs holding a bind of the container's cgroup from each hierarchy. */
function cgroupMountOps(dest: string, flags: number, input: CreatePlanInput, host: PlanHost): PlanOp[] {
  const cg = host.cgroup;
  const newCgroupNs = (input.spec.linux?.namespaces ?? []).some((n) => n.type === "cgroup" && !n.path);
  const sources = cg?.mountSources ?? [];
  if (!cg || (sources.length === 1 && sources[0]!.v2)) {
    // v2: a cgroup namespace shows the container's own cgroup as the root of a fresh cgroup2 mount.
    if (newCgroupNs || !cg) return [[Op.MOUNT, "cgroup", dest, "cgroup2", String(flags), "0", "", "d"]];
    return [[Op.MOUNT, sources[0]!.dir, dest, "", String(flags | MS.BIND | MS.REC), "0", "", "d"]];
  }
  const ops: PlanOp[] = [[Op.MOUNT, "tmpfs", dest, "tmpfs", String(MS.NOSUID | MS.NODEV | MS.NOEXEC), "0", "mode=755", "d"]];
  // As runc: one read-only bind per v1 hierarchy; the hybrid layout's v2 mount is not shown.
  for (const h of sources) {
    if (h.v2) continue;
    ops.push([Op.MOUNT, h.dir, `${dest}/${h.name}`, "", String((flags & ~MS.REC) | MS.BIND), "0", "", "d"]);
    const parts = h.name.split(",");
    if (parts.length > 1) for (const c of parts) ops.push([Op.SYMLINK, h.name, `${dest}/${c}`]);
  }
  return ops;
}

/** Plan for `exec`: join every namespace of the container's init, its cgroup and its root. */
export function execPlan(input: {
  pid: number;
  namespaces: NamespaceType[];
  process: Process;
  rootfs: string;
  cgroup?: cgroups.Cgroup;
  /** exec --cgroup: the sub-cgroup to enter (see cgroups' EntryOptions.sub). */
  cgroupSub?: Record<string, string>;
  /** The container's pids limit (its cgroup's). */
  pidsLimit?: number;
  consoleSocket?: string;
  foreground: boolean;
  preserveFds?: number;
  seccomp?: CompiledSeccomp;
  listenerState?: string;
  lsm?: HostLsm;
}): PlanOp[] {
  const ops: PlanOp[] = [];
  if (input.consoleSocket) ops.push([Op.CONSOLE_SOCKET, input.consoleSocket]);
  // the seccomp agent's socket is the host's: connected before the container's mount namespace is joined
  const credentials = credentialOps(input.process, homeOf(input.rootfs, input.process.user.uid), input.preserveFds ?? 0, input.seccomp, false, input.listenerState, input.lsm);
  const listener = credentials.findIndex((o) => o[0] === Op.SECCOMP_LISTENER);
  if (listener >= 0) ops.push(...credentials.splice(listener, 1));
  // Opened in the host before joining; the child chroots into it (pivot_root and no-pivot alike).
  ops.push([Op.ROOT_OF, String(input.pid)]);
  // a running container's processes already count against its pids limit
  ops.push(...cgroupEntryOps(input.cgroup?.entry({ helperJoins: process.getuid?.() === 0, pidsTight: (input.pidsLimit ?? 0) > 0, ...(input.cgroupSub ? { sub: input.cgroupSub } : {}) })));
  for (const t of joinOrder)
    if (input.namespaces.includes(t)) {
      const path = `/proc/${input.pid}/ns/${procNsName[t]}`;
      ops.push([Op.SETNS, path, String(cloneFlag[t])]);
    }
  ops.push([Op.CLONE, "0"]);
  if (input.foreground) ops.push([Op.FOREGROUND]);
  ops.push([Op.SETSID]);
  if (input.process.terminal) ops.push([Op.TERMINAL, String(input.process.user.uid)]);
  ops.push(...credentials);
  return ops;
}

/** Records on the wire: u32 code, u32 length, NUL-terminated strings. */
/**
 * An annotation berth's engine sets for rootless containers: overlayfs options (absolute paths)
 * to mount on root.path inside the container's mount namespace, where an unprivileged user may.
 */
export const ROOTFS_OVERLAY_ANNOTATION = "org.berth.rootfs.overlay";

export function encodePlan(ops: PlanOp[]): Buffer {
  // Built as one latin1 string, encoded once: this runs once per container start, mostly in V8's
  // interpreter, where a Buffer (or a native call) per record costs more than the whole plan's string.
  // Arguments become their UTF-8 bytes as latin1 characters (unchanged when ASCII, as nearly all are).
  // One check of all the arguments: nearly every plan is ASCII, and a regular expression run per
  // record costs more than the records (V8 runs them in its interpreter).
  const u32 = (n: number) => String.fromCharCode(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, n >>> 24);
  const payloads: string[] = [];
  let all = "";
  for (let i = 0; i <= ops.length; i++) {
    const op = i < ops.length ? ops[i]! : ([Op.END] as PlanOp);
    let payload = "";
    for (let j = 1; j < op.length; j++) payload += op[j] + "\0";
    payloads.push(payload);
    all += payload;
  }
  // eslint-disable-next-line no-control-regex
  const utf8 = /[^\x00-\x7f]/.test(all);
  let text = "";
  for (let i = 0; i <= ops.length; i++) {
    const payload = utf8 ? Buffer.from(payloads[i]!, "utf8").toString("latin1") : payloads[i]!;
    text += u32(i < ops.length ? (ops[i]![0] as number) : Op.END) + u32(payload.length) + payload;
  }
  return Buffer.from(text, "latin1");
}
