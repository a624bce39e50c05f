/**
 * A container's OCI spec from its Config and HostConfig, with docker's defaults: the 14 default
 * capabilities, the default seccomp profile specialised to them, docker's masked and read-only
 * paths, /dev/shm of 64 MiB, private pid/ipc/uts/mount/network namespaces (cgroup too on v2).
 */
import { availableParallelism } from "node:os";
import * as fs from "node:fs";
import { fsCause, invalid, isNotFound, notFound, unsupported } from "../common/errors.js";
import { parseCpuList, type LinuxResources } from "../cgroups/index.js";
import { allCapabilities, defaultSeccomp, dockerDefaultCapabilities, dockerMaskedPaths, dockerReadonlyPaths, type Seccomp } from "../security/index.js";
import type { Mount, Spec } from "../runtime/index.js";
import type { ContainerRecord } from "./store.js";
import type { HostConfig } from "./types.js";

/**
 * A path inside a root file system as the container sees it: symlinks on the way are followed
 * the way the container would follow them, never out of the root. The last component is followed
 * only when followLast. Returns the host path (which may not exist).
 */
export function resolveInRoot(root: string, path: string, followLast = false): string {
  let parts = path.split("/").filter(Boolean);
  const done: string[] = [];
  // joined by hand: the parts are single names, and path.join walks the whole string char by char
  // (a fresh process's regex work, several per lookup)
  const base = root.endsWith("/") ? root.slice(0, -1) : root;
  const under = (names: string[]) => (names.length ? `${base}/${names.join("/")}` : root);
  for (let hops = 0; parts.length; ) {
    const c = parts.shift()!;
    if (c === ".") continue;
    if (c === "..") {
      done.pop();
      continue;
    }
    done.push(c);
    const abs = under(done);
    done.pop();
    const st = fs.lstatSync(abs, { throwIfNoEntry: false });
    if (st?.isSymbolicLink() && (parts.length || followLast)) {
      if (++hops > 40) throw invalid(`too many levels of symbolic links: ${path}`);
      const target = fs.readlinkSync(abs);
      if (target.startsWith("/")) done.length = 0;
      parts = [...target.split("/").filter(Boolean), ...parts];
      continue;
    }
    done.push(c);
  }
  return under(done);
}

/** Read a file inside a root file system, following symlinks as the container would (never out). */
export function readInRoot(root: string, path: string): string | undefined {
  try {
    const p = resolveInRoot(root, path, true);
    return fs.lstatSync(p).isFile() ? fs.readFileSync(p, "utf8") : undefined;
  } catch {
    return undefined; // missing, or a symlink loop
  }
}

export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

/** A file of the container's tree, read from its mounted rootfs or from its layers (rootless). */
export type RootReader = (path: string) => string | undefined;

/** Reads through a snapshot's directories, topmost first (an overlay whiteout hides what is below). */
export function layeredReader(dirs: string[]): RootReader {
  return (path) => {
    for (const d of dirs) {
      try {
        const st = fs.lstatSync(resolveInRoot(d, path, true), { throwIfNoEntry: false });
        if (st?.isCharacterDevice() && st.rdev === 0) return undefined; // whiteout
      } catch {
        /* a symlink loop: try the next layer */
      }
      const text = readInRoot(d, path);
      if (text !== undefined) return text;
    }
    return undefined;
  };
}

/** docker's -u: name|uid[:group|gid], looked up in the container's /etc/passwd and /etc/group. */
export function resolveUser(root: string | RootReader, user: string): ResolvedUser {
  const read: RootReader = typeof root === "string" ? (p) => readInRoot(root, p) : root;
  const [u = "", g] = user ? user.split(":") : ["0"];
  const passwd = (read("/etc/passwd") ?? "").split("\n").map((l) => l.split(":"));
  const groups = (read("/etc/group") ?? "").split("\n").map((l) => l.split(":"));
  let uid: number, gid: number, home = "/", name: string | undefined;
  const byName = passwd.find((p) => p[0] === u);
  const byId = /^\d+$/.test(u) ? passwd.find((p) => p[2] === u) : undefined;
  if (/^\d+$/.test(u)) {
    uid = Number(u);
    gid = byId ? Number(byId[3]) : 0;
    home = byId?.[5] ?? "/";
    name = byId?.[0];
  } else if (byName) {
    uid = Number(byName[2]);
    gid = Number(byName[3]);
    home = byName[5] ?? "/";
    name = u;
  } else throw invalid(`unable to find user ${u}: no matching entries in passwd file`);
  if (g !== undefined) {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const grp = groups.find((x) => x[0] === g);
      if (!grp) throw invalid(`unable to find group ${g}: no matching entries in group file`);
      gid = Number(grp[2]);
    }
  }
  const additionalGids = name ? groups.filter((x) => (x[3] ?? "").split(",").includes(name!) && Number(x[2]) !== gid).map((x) => Number(x[2])) : [];
  return { uid, gid, additionalGids, home };
}

export function capabilitiesFor(hc: HostConfig): string[] {
  if (hc.Privileged) return [...allCapabilities];
  const norm = (c: string) => {
    const up = c.toUpperCase();
    if (up === "ALL") return "ALL";
    const n = up.startsWith("CAP_") ? up : `CAP_${up}`;
    if (!allCapabilities.includes(n)) throw invalid(`unknown capability: "${c}"`);
    return n;
  };
  const add = (hc.CapAdd ?? []).map(norm);
  const drop = (hc.CapDrop ?? []).map(norm);
  let caps = add.includes("ALL") ? [...allCapabilities] : [...dockerDefaultCapabilities];
  if (drop.includes("ALL")) caps = [];
  caps = caps.filter((c) => !drop.includes(c));
  for (const c of add) if (c !== "ALL" && !caps.includes(c)) caps.push(c);
  return caps;
}

/** linux.resources from docker's flags, with docker's checks. */
export function resourcesFor(hc: HostConfig): LinuxResources {
  const r: LinuxResources = {};
  const mem: NonNullable<LinuxResources["memory"]> = {};
  if (hc.Memory) {
    if (hc.Memory < 6 * 1024 * 1024) throw invalid("Minimum memory limit allowed is 6MB");
    mem.limit = hc.Memory;
  }
  if (hc.MemorySwap) {
    if (hc.MemorySwap > 0 && hc.Memory && hc.MemorySwap < hc.Memory) throw invalid("Minimum memoryswap limit should be larger than memory limit, see usage");
    if (hc.MemorySwap > 0 && !hc.Memory) throw invalid("You should always set the Memory limit when using Memoryswap limit, see usage");
    mem.swap = hc.MemorySwap;
  } else if (hc.Memory) mem.swap = hc.Memory * 2; // docker: swap defaults to twice the memory
  if (hc.MemoryReservation) mem.reservation = hc.MemoryReservation;
  if (hc.MemorySwappiness !== undefined && hc.MemorySwappiness >= 0) mem.swappiness = hc.MemorySwappiness;
  if (hc.OomKillDisable) mem.disableOOMKiller = true;
  if (Object.keys(mem).length) r.memory = mem;
  const cpu: NonNullable<LinuxResources["cpu"]> = {};
  if (hc.NanoCpus) {
    if (hc.CpuQuota || hc.CpuPeriod) throw invalid("Conflicting options: Nano CPUs and CPU Period cannot both be set");
    // docker's range: from 0.01 to the host's CPU count
    const ncpu = availableParallelism();
    if (hc.NanoCpus < 1e7 || hc.NanoCpus > ncpu * 1e9) throw invalid(`Range of CPUs is from 0.01 to ${ncpu}.00, as there are only ${ncpu} CPUs available`);
    cpu.period = 100000;
    cpu.quota = Math.round((hc.NanoCpus / 1e9) * 100000);
  }
  if (hc.CpuQuota) cpu.quota = hc.CpuQuota;
  if (hc.CpuPeriod) cpu.period = hc.CpuPeriod;
  if (hc.CpuShares) cpu.shares = hc.CpuShares;
  if (hc.CpusetCpus) {
    const online = onlineCpus();
    const want = parseCpuList(hc.CpusetCpus, "--cpuset-cpus");
    const bad = want.filter((c) => !online.includes(c));
    if (bad.length) throw invalid(`Requested CPUs are not available - requested ${hc.CpusetCpus}, available: ${formatCpus(online)}`);
    cpu.cpus = hc.CpusetCpus;
  }
  if (hc.CpusetMems) cpu.mems = hc.CpusetMems;
  if (Object.keys(cpu).length) r.cpu = cpu;
  if (hc.PidsLimit !== undefined && hc.PidsLimit !== 0) r.pids = { limit: hc.PidsLimit };
  const blockIO: NonNullable<LinuxResources["blockIO"]> = {};
  if (hc.BlkioWeight) {
    if (hc.BlkioWeight < 10 || hc.BlkioWeight > 1000) throw invalid("Range of blkio weight is from 10 to 1000");
    blockIO.weight = hc.BlkioWeight;
  }
  for (const d of hc.BlkioWeightDevice ?? []) {
    if (d.Weight < 10 || d.Weight > 1000) throw invalid(`invalid weight for device ${d.Path}: ${d.Weight} (the range is 10 to 1000)`);
    (blockIO.weightDevice ??= []).push({ ...blockDevice(d.Path), weight: d.Weight });
  }
  const throttles = [
    ["BlkioDeviceReadBps", "throttleReadBpsDevice"],
    ["BlkioDeviceWriteBps", "throttleWriteBpsDevice"],
    ["BlkioDeviceReadIOps", "throttleReadIOPSDevice"],
    ["BlkioDeviceWriteIOps", "throttleWriteIOPSDevice"],
  ] as const;
  for (const [field, key] of throttles)
    for (const d of hc[field] ?? []) {
      if (!Number.isInteger(d.Rate) || d.Rate < 0) throw invalid(`invalid rate for device ${d.Path}: ${d.Rate}`);
      (blockIO[key] ??= []).push({ ...blockDevice(d.Path), rate: d.Rate });
    }
  if (Object.keys(blockIO).length) r.blockIO = blockIO;
  return r;
}

/** A block device's numbers, as dockerd finds them for the blkio flags. */
function blockDevice(path: string): { major: number; minor: number } {
  let st: fs.BigIntStats | undefined;
  try {
    st = fs.statSync(path, { bigint: true });
  } catch (e) {
    throw invalid(isNotFound(e) ? `${path}: no such device` : `${path}: ${fsCause(e)}`);
  }
  if (!st.isBlockDevice()) throw invalid(`${path} is not a block device`);
  const rdev = st.rdev;
  return { major: Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn)), minor: Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn)) };
}

function onlineCpus(): number[] {
  try {
    return parseCpuList(fs.readFileSync("/sys/devices/system/cpu/online", "utf8").trim(), "cpu/online");
  } catch {
    // no cpu/online (a restricted /sys): assume one CPU
    return [0];
  }
}

function formatCpus(cpus: number[]): string {
  const out: string[] = [];
  for (let i = 0; i < cpus.length; ) {
    let j = i;
    while (j + 1 < cpus.length && cpus[j + 1] === cpus[j]! + 1) j++;
    out.push(i === j ? `${cpus[i]}` : `${cpus[i]}-${cpus[j]}`);
    i = j + 1;
  }
  return out.join(",");
}

/** A container's cgroup (under berth's parent, /berth). */
export const containerCgroup = (id: string): string => `/berth/${id}`;

/** docker's --device-cgroup-rule: `TYPE MAJOR:MINOR ACCESS` (c, b or a; a number or *; r, w, m). */
export function parseDeviceCgroupRule(rule: string): { allow: true; type: string; major?: number; minor?: number; access: string } {
  const m = /^([abc])\s+(\d+|\*):(\d+|\*)\s+([rwm]{1,3})$/.exec(rule.trim());
  if (!m || new Set(m[4]).size !== m[4]!.length) throw invalid(`invalid device cgroup rule ${JSON.stringify(rule)}: use "TYPE MAJOR:MINOR ACCESS", e.g. "c 1:3 rwm" (TYPE a, b or c; * for any number)`);
  return { allow: true, type: m[1]!, ...(m[2] !== "*" ? { major: Number(m[2]) } : {}), ...(m[3] !== "*" ? { minor: Number(m[3]) } : {}), access: m[4]! };
}

export interface SpecInput {
  rec: ContainerRecord;
  rootfs: string;
  user: ResolvedUser;
  /** Extra mounts (binds, volumes, tmpfs, /etc/hosts, …) already resolved to sources. */
  mounts: Mount[];
  /** Namespaces to join: type → path (for --pid/--ipc/--uts container:<x> and host). */
  joinNamespaces: Record<string, string | "host">;
  /** The seccomp profile from --security-opt seccomp=FILE, or "unconfined". */
  seccomp?: Seccomp | "unconfined";
  noNewPrivileges: boolean;
  initPath?: string;
}

export function buildSpec(input: SpecInput): Spec {
  const { rec, rootfs, user } = input;
  const c = rec.Config,
    hc = rec.HostConfig;
  const caps = capabilitiesFor(hc);
  const env = [...c.Env];
  if (!env.some((e) => e.startsWith("PATH="))) env.unshift("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  if (!env.some((e) => e.startsWith("HOSTNAME="))) env.splice(1, 0, `HOSTNAME=${c.Hostname}`);
  if (c.Tty && !env.some((e) => e.startsWith("TERM="))) env.push("TERM=xterm");
  if (!env.some((e) => e.startsWith("HOME="))) env.push(`HOME=${user.home || "/"}`);
  const args = [...rec.Path ? [rec.Path] : [], ...rec.Args];
  if (input.initPath) args.unshift("/sbin/berth-init", "--");
  const mounts: Mount[] = [
    { destination: "/proc", type: "proc", source: "proc", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", hc.Privileged ? "rw" : "ro"] },
    { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", hc.Privileged ? "rw" : "ro"] },
    { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
    { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", `size=${hc.ShmSize || 67108864}`] },
    ...input.mounts,
  ];
  if (input.initPath) mounts.push({ destination: "/sbin/berth-init", type: "bind", source: input.initPath, options: ["bind", "ro", "nosuid", "nodev"] });
  const namespaces: Array<{ type: string; path?: string }> = [];
  for (const t of ["pid", "ipc", "uts", "mount", "network"]) {
    const j = input.joinNamespaces[t];
    if (j === "host") continue;
    namespaces.push(j ? { type: t, path: j } : { type: t });
  }
  // a private cgroup namespace on v1 too (docker keeps the host's there): the container never sees
  // the host's cgroup paths, and it is one of the six namespaces the seeds check
  namespaces.push({ type: "cgroup" });
  const resources = resourcesFor(hc);
  const devices: Array<Record<string, unknown>> = [];
  const deviceRules: Array<Record<string, unknown>> = [{ allow: false, access: "rwm" }];
  // docker's default device rules: the standard nodes and ptys
  for (const [type, major, minor] of [["c", 1, 3], ["c", 1, 5], ["c", 1, 7], ["c", 1, 8], ["c", 1, 9], ["c", 5, 0], ["c", 5, 1], ["c", 5, 2], ["c", 136, -1], ["c", 10, 200]] as const)
    deviceRules.push({ allow: true, type, major, ...(minor >= 0 ? { minor } : {}), access: "rwm" });
  for (const d of hc.Devices ?? []) {
    let st: fs.Stats;
    try {
      st = fs.statSync(d.PathOnHost);
    } catch (e) {
      throw (isNotFound(e) ? notFound : invalid)(`error gathering device information while adding custom device "${d.PathOnHost}": ${fsCause(e)}`);
    }
    if (!st.isCharacterDevice() && !st.isBlockDevice()) throw invalid(`${d.PathOnHost} is not a device node`);
    const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn),
      minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
    const type = st.isCharacterDevice() ? "c" : "b";
    devices.push({ path: d.PathInContainer || d.PathOnHost, type, major, minor, fileMode: st.mode & 0o777, uid: 0, gid: 0 });
    deviceRules.push({ allow: true, type, major, minor, access: d.CgroupPermissions || "rwm" });
  }
  for (const rule of hc.DeviceCgroupRules ?? []) deviceRules.push(parseDeviceCgroupRule(rule));
  if (hc.Privileged) deviceRules.splice(0, deviceRules.length, { allow: true, access: "rwm" });
  let seccomp: Seccomp | undefined;
  if (input.seccomp === "unconfined" || hc.Privileged) seccomp = undefined;
  else seccomp = input.seccomp ?? defaultSeccomp({ capabilities: caps });
  const rlimits = (hc.Ulimits ?? []).map((u) => ({ type: `RLIMIT_${u.Name.toUpperCase()}`, soft: u.Soft, hard: u.Hard }));
  const spec: Spec = {
    ociVersion: "1.0.2",
    process: {
      terminal: c.Tty,
      ...(c.Tty && hc.ConsoleSize?.[0] ? { consoleSize: { height: hc.ConsoleSize[0], width: hc.ConsoleSize[1] } } : {}),
      user: { uid: user.uid, gid: user.gid, ...(user.additionalGids.length ? { additionalGids: user.additionalGids } : {}) },
      args,
      env,
      cwd: c.WorkingDir || "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps },
      ...(rlimits.length ? { rlimits } : {}),
      noNewPrivileges: input.noNewPrivileges,
      oomScoreAdj: 0,
    },
    root: { path: rootfs, readonly: hc.ReadonlyRootfs },
    hostname: c.Hostname,
    ...(c.Domainname ? { domainname: c.Domainname } : {}),
    mounts,
    linux: {
      namespaces,
      resources: { ...resources, devices: deviceRules },
      ...(devices.length ? { devices } : {}),
      ...(seccomp ? { seccomp } : {}),
      ...(hc.Privileged ? {} : { maskedPaths: [...dockerMaskedPaths], readonlyPaths: [...dockerReadonlyPaths] }),
      cgroupsPath: containerCgroup(rec.Id),
    },
  } as unknown as Spec;
  if (hc.UsernsMode && hc.UsernsMode !== "host") throw unsupported(`--userns ${hc.UsernsMode} is not supported yet (host is)`);
  return spec;
}

/** An id range from /etc/subuid or /etc/subgid for this user (by name or uid), if any. */
function subordinateRange(file: string, name: string, id: number): { start: number; count: number } | undefined {
  try {
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
      const [who, start, count] = line.trim().split(":");
      if ((who === name || who === String(id)) && Number(count) > 0) return { start: Number(start), count: Number(count) };
    }
  } catch {
    /* no such file */
  }
  return undefined;
}

type IdMap = { containerID: number; hostID: number; size: number };

/**
 * A rootless container's id maps: the user is root, and ids 1.. map to the user's range in
 * /etc/subuid and /etc/subgid when it has both and newuidmap is installed (ranged).
 */
export function rootlessIdMappings(): { uid: IdMap[]; gid: IdMap[]; ranged: boolean } {
  const uid = process.getuid!(),
    gid = process.getgid!();
  const name = (() => {
    try {
      return fs.readFileSync("/etc/passwd", "utf8").split("\n").find((l) => l.split(":")[2] === String(uid))?.split(":")[0] ?? "";
    } catch {
      // no /etc/passwd: the user has no name
      return "";
    }
  })();
  const newuidmap = ["/usr/bin/newuidmap", "/bin/newuidmap"].some((p) => fs.existsSync(p));
  const subu = newuidmap ? subordinateRange("/etc/subuid", name, uid) : undefined;
  const subg = newuidmap ? subordinateRange("/etc/subgid", name, uid) : undefined;
  const ranged = !!(subu && subg);
  return {
    uid: [{ containerID: 0, hostID: uid, size: 1 }, ...(ranged ? [{ containerID: 1, hostID: subu!.start, size: subu!.count }] : [])],
    gid: [{ containerID: 0, hostID: gid, size: 1 }, ...(ranged ? [{ containerID: 1, hostID: subg!.start, size: subg!.count }] : [])],
    ranged,
  };
}

/**
 * The spec made rootless, as podman does: a user namespace where the user is root (and, when
 * /etc/subuid and /etc/subgid give the user a range and newuidmap is installed, ids 1.. mapped to
 * it), no cgroup mount or device rules (no delegated cgroup), no oom_score_adj, /sys bound from
 * the host when the network namespace is the host's, and the rootfs an overlay the container's own
 * mount namespace mounts (root.path and the annotation from the snapshotter).
 */
export function rootlessSpec(spec: Spec, root: { path: string; overlay?: string }, overlayAnnotation: string): Spec {
  const s = spec as unknown as {
    process: { oomScoreAdj?: number };
    root: { path: string };
    mounts: Mount[];
    annotations?: Record<string, string>;
    linux: { namespaces: Array<{ type: string; path?: string }>; uidMappings?: unknown[]; gidMappings?: unknown[]; resources?: Record<string, unknown> };
  };
  const maps = rootlessIdMappings();
  const ranged = maps.ranged;
  s.linux.uidMappings = maps.uid;
  s.linux.gidMappings = maps.gid;
  s.linux.namespaces.unshift({ type: "user" });
  const ownNet = s.linux.namespaces.some((n) => n.type === "network" && !n.path);
  s.mounts = s.mounts
    .filter((m) => m.type !== "cgroup")
    .map((m) => {
      if (m.type === "devpts" && !ranged) return { ...m, options: (m.options ?? []).filter((o) => o !== "gid=5") }; // gid 5 (tty) is not mapped
      if (m.type === "sysfs" && !ownNet) return { destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] };
      return m;
    });
  if (s.linux.resources) delete s.linux.resources.devices; // cgroup device rules need a cgroup of our own
  delete s.process.oomScoreAdj;
  s.root.path = root.path;
  if (root.overlay) s.annotations = { ...s.annotations, [overlayAnnotation]: root.overlay };
  return spec;
}
