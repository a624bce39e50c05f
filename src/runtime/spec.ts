/**
 * The OCI runtime spec (1.x) as TypeScript types, a validator whose errors name the field, and
 * runc's default spec (what `berth-runtime spec` writes).
 */
import { existsSync } from "node:fs";
import { invalid } from "../common/errors.js";
import type { LinuxResources } from "../cgroups/index.js";

export interface Spec {
  ociVersion: string;
  process?: Process;
  root?: { path: string; readonly?: boolean };
  hostname?: string;
  domainname?: string;
  mounts?: Mount[];
  hooks?: Hooks;
  annotations?: Record<string, string>;
  linux?: Linux;
}

export interface Process {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: { uid: number; gid: number; umask?: number; additionalGids?: number[] };
  args?: string[];
  commandLine?: string;
  env?: string[];
  cwd: string;
  capabilities?: Partial<Record<CapabilitySet, string[]>>;
  rlimits?: { type: string; soft: number; hard: number }[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
}

export type CapabilitySet = "bounding" | "effective" | "inheritable" | "permitted" | "ambient";

export interface Mount {
  destination: string;
  source?: string;
  type?: string;
  options?: string[];
  uidMappings?: IdMapping[];
  gidMappings?: IdMapping[];
}

export interface Hook {
  path: string;
  args?: string[];
  env?: string[];
  timeout?: number;
}

export type HookName = "prestart" | "createRuntime" | "createContainer" | "startContainer" | "poststart" | "poststop";
export type Hooks = Partial<Record<HookName, Hook[]>>;

export interface IdMapping {
  containerID: number;
  hostID: number;
  size: number;
}

export type NamespaceType = "pid" | "network" | "mount" | "ipc" | "uts" | "user" | "cgroup" | "time";

export interface Device {
  type: string;
  path: string;
  major?: number;
  minor?: number;
  fileMode?: number;
  uid?: number;
  gid?: number;
}

export interface Linux {
  namespaces?: { type: NamespaceType; path?: string }[];
  uidMappings?: IdMapping[];
  gidMappings?: IdMapping[];
  timeOffsets?: Record<string, { secs?: number; nanosecs?: number }>;
  devices?: Device[];
  cgroupsPath?: string;
  resources?: Resources;
  rootfsPropagation?: string;
  seccomp?: unknown;
  sysctl?: Record<string, string>;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  personality?: unknown;
  intelRdt?: unknown;
}

export type Resources = LinuxResources;

export const namespaceTypes: readonly NamespaceType[] = ["pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"];
export const hookNames: readonly HookName[] = ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

type Json = unknown;
const isObj = (v: Json): v is Record<string, Json> => typeof v === "object" && v !== null && !Array.isArray(v);

function need(cond: boolean, field: string, what: string): void {
  if (!cond) throw invalid(`config.json: ${field}: ${what}`);
}
const isStr = (v: Json) => typeof v === "string";
const isInt = (v: Json) => typeof v === "number" && Number.isInteger(v);
const isStrArray = (v: Json) => Array.isArray(v) && v.every(isStr);

function checkMappings(v: Json, field: string): void {
  need(Array.isArray(v), field, "must be an array");
  (v as Json[]).forEach((m, i) => {
    need(isObj(m), `${field}[${i}]`, "must be an object");
    for (const k of ["containerID", "hostID", "size"]) need(isInt((m as Record<string, Json>)[k]), `${field}[${i}].${k}`, "must be an integer");
  });
}

function checkHook(h: Json, field: string): void {
  need(isObj(h), field, "must be an object");
  const o = h as Record<string, Json>;
  need(isStr(o.path) && (o.path as string).startsWith("/"), `${field}.path`, "must be an absolute path");
  if (o.args !== undefined) need(isStrArray(o.args), `${field}.args`, "must be an array of strings");
  if (o.env !== undefined) need(isStrArray(o.env), `${field}.env`, "must be an array of strings");
  if (o.timeout !== undefined) need(isInt(o.timeout) && (o.timeout as number) > 0, `${field}.timeout`, "must be a positive integer");
}

/** Validates a parsed config.json; throws InvalidArgument naming the first bad field. */
export function validateSpec(v: Json): Spec {
  need(isObj(v), "(top level)", "must be a JSON object");
  const s = v as Record<string, Json>;
  need(isStr(s.ociVersion), "ociVersion", "is required (a string like \"1.0.2\")");
  need(/^1\./.test(s.ociVersion as string), "ociVersion", `unsupported version ${JSON.stringify(s.ociVersion)} (berth supports 1.x)`);
  need(isObj(s.root), "root", "is required");
  const root = s.root as Record<string, Json>;
  need(isStr(root.path) && (root.path as string) !== "", "root.path", "must be a non-empty string");
  if (root.readonly !== undefined) need(typeof root.readonly === "boolean", "root.readonly", "must be a boolean");
  if (s.hostname !== undefined) need(isStr(s.hostname), "hostname", "must be a string");
  if (s.domainname !== undefined) need(isStr(s.domainname), "domainname", "must be a string");
  // the kernel's HOST_NAME_MAX: said here, with the length, rather than quoted back from sethostname
  for (const k of ["hostname", "domainname"] as const) if (isStr(s[k]) && Buffer.byteLength(s[k] as string) > 64) need(false, k, `is ${Buffer.byteLength(s[k] as string)} bytes long: at most 64`);
  if (s.process !== undefined) {
    need(isObj(s.process), "process", "must be an object");
    validateProcess(s.process as Record<string, Json>, "process");
  }
  if (s.mounts !== undefined) {
    need(Array.isArray(s.mounts), "mounts", "must be an array");
    (s.mounts as Json[]).forEach((m, i) => {
      need(isObj(m), `mounts[${i}]`, "must be an object");
      const o = m as Record<string, Json>;
      need(isStr(o.destination) && (o.destination as string).startsWith("/"), `mounts[${i}].destination`, "must be an absolute path");
      if (o.source !== undefined) need(isStr(o.source), `mounts[${i}].source`, "must be a string");
      if (o.type !== undefined) need(isStr(o.type), `mounts[${i}].type`, "must be a string");
      if (o.options !== undefined) need(isStrArray(o.options), `mounts[${i}].options`, "must be an array of strings");
    });
  }
  if (s.hooks !== undefined) {
    need(isObj(s.hooks), "hooks", "must be an object");
    for (const [name, list] of Object.entries(s.hooks as Record<string, Json>)) {
      need((hookNames as string[]).includes(name), `hooks.${name}`, `unknown hook (known: ${hookNames.join(", ")})`);
      need(Array.isArray(list), `hooks.${name}`, "must be an array");
      (list as Json[]).forEach((h, i) => checkHook(h, `hooks.${name}[${i}]`));
    }
  }
  if (s.annotations !== undefined) need(isObj(s.annotations), "annotations", "must be an object");
  if (s.linux !== undefined) {
    need(isObj(s.linux), "linux", "must be an object");
    validateLinux(s.linux as Record<string, Json>);
  }
  return v as unknown as Spec;
}

export function validateProcess(p: Record<string, Json>, field: string): Process {
  need(isObj(p.user), `${field}.user`, "is required");
  const u = p.user as Record<string, Json>;
  need(isInt(u.uid) && (u.uid as number) >= 0, `${field}.user.uid`, "must be a non-negative integer");
  need(isInt(u.gid) && (u.gid as number) >= 0, `${field}.user.gid`, "must be a non-negative integer");
  if (u.umask !== undefined) need(isInt(u.umask), `${field}.user.umask`, "must be an integer");
  if (u.additionalGids !== undefined)
    need(Array.isArray(u.additionalGids) && (u.additionalGids as Json[]).every(isInt), `${field}.user.additionalGids`, "must be an array of integers");
  need(isStr(p.cwd) && (p.cwd as string).startsWith("/"), `${field}.cwd`, "must be an absolute path");
  need(isStrArray(p.args) && (p.args as string[]).length > 0, `${field}.args`, "must be a non-empty array of strings");
  if (p.env !== undefined) need(isStrArray(p.env), `${field}.env`, "must be an array of strings");
  if (p.terminal !== undefined) need(typeof p.terminal === "boolean", `${field}.terminal`, "must be a boolean");
  if (p.noNewPrivileges !== undefined) need(typeof p.noNewPrivileges === "boolean", `${field}.noNewPrivileges`, "must be a boolean");
  if (p.oomScoreAdj !== undefined)
    need(isInt(p.oomScoreAdj) && Math.abs(p.oomScoreAdj as number) <= 1000, `${field}.oomScoreAdj`, "must be an integer in -1000..1000");
  if (p.capabilities !== undefined) {
    need(isObj(p.capabilities), `${field}.capabilities`, "must be an object");
    for (const [k, list] of Object.entries(p.capabilities as Record<string, Json>)) {
      need(["bounding", "effective", "inheritable", "permitted", "ambient"].includes(k), `${field}.capabilities.${k}`, "unknown capability set");
      need(isStrArray(list), `${field}.capabilities.${k}`, "must be an array of strings");
    }
  }
  if (p.rlimits !== undefined) {
    need(Array.isArray(p.rlimits), `${field}.rlimits`, "must be an array");
    (p.rlimits as Json[]).forEach((r, i) => {
      need(isObj(r), `${field}.rlimits[${i}]`, "must be an object");
      const o = r as Record<string, Json>;
      need(isStr(o.type), `${field}.rlimits[${i}].type`, "must be a string");
      need(isInt(o.soft) && isInt(o.hard), `${field}.rlimits[${i}]`, "soft and hard must be integers");
      need((o.soft as number) <= (o.hard as number), `${field}.rlimits[${i}]`, `soft limit ${o.soft} is above hard limit ${o.hard}`);
    });
  }
  return p as unknown as Process;
}

function validateLinux(l: Record<string, Json>): void {
  if (l.namespaces !== undefined) {
    need(Array.isArray(l.namespaces), "linux.namespaces", "must be an array");
    const seen = new Map<string, Json>();
    const dups: number[] = [];
    (l.namespaces as Json[]).forEach((n, i) => {
      need(isObj(n), `linux.namespaces[${i}]`, "must be an object");
      const o = n as Record<string, Json>;
      need(
        isStr(o.type) && (namespaceTypes as string[]).includes(o.type as string),
        `linux.namespaces[${i}].type`,
        `unknown namespace type ${JSON.stringify(o.type)} (known: ${namespaceTypes.join(", ")})`,
      );
      if (o.path !== undefined) need(isStr(o.path) && (o.path as string).startsWith("/"), `linux.namespaces[${i}].path`, "must be an absolute path");
      // the same entry twice is one (as runc takes it); two that disagree are an error
      const before = seen.get(o.type as string) as Record<string, Json> | undefined;
      if (before) {
        need((before.path ?? "") === (o.path ?? ""), `linux.namespaces[${i}]`, `namespace ${o.type} is listed twice, ${before.path ? `joining ${before.path}` : "new"} and ${o.path ? `joining ${o.path}` : "new"}`);
        dups.push(i);
      } else seen.set(o.type as string, o);
    });
    if (dups.length) l.namespaces = (l.namespaces as Json[]).filter((_, i) => !dups.includes(i));
  }
  if (l.uidMappings !== undefined) checkMappings(l.uidMappings, "linux.uidMappings");
  if (l.gidMappings !== undefined) checkMappings(l.gidMappings, "linux.gidMappings");
  if (l.devices !== undefined) {
    need(Array.isArray(l.devices), "linux.devices", "must be an array");
    (l.devices as Json[]).forEach((d, i) => {
      need(isObj(d), `linux.devices[${i}]`, "must be an object");
      const o = d as Record<string, Json>;
      need(isStr(o.path) && (o.path as string).startsWith("/"), `linux.devices[${i}].path`, "must be an absolute path");
      need(["c", "b", "u", "p"].includes(o.type as string), `linux.devices[${i}].type`, "must be one of c, b, u, p");
      if (o.type !== "p") need(isInt(o.major) && isInt(o.minor), `linux.devices[${i}]`, "major and minor are required");
    });
  }
  if (l.sysctl !== undefined) {
    need(isObj(l.sysctl), "linux.sysctl", "must be an object");
    for (const [k, v] of Object.entries(l.sysctl as Record<string, Json>)) need(isStr(v), `linux.sysctl.${k}`, "must be a string");
  }
  for (const k of ["maskedPaths", "readonlyPaths"]) if (l[k] !== undefined) need(isStrArray(l[k]), `linux.${k}`, "must be an array of strings");
  if (l.cgroupsPath !== undefined) need(isStr(l.cgroupsPath), "linux.cgroupsPath", "must be a string");
  if (l.rootfsPropagation !== undefined)
    need(
      ["private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable", ""].includes(l.rootfsPropagation as string),
      "linux.rootfsPropagation",
      `unknown propagation ${JSON.stringify(l.rootfsPropagation)}`,
    );
  if (l.resources !== undefined) need(isObj(l.resources), "linux.resources", "must be an object");
}

/**
 * runc's `spec` output, so bundles made by either runtime look the same: on a host with only cgroup
 * v2 (cgroup2 mounted at /sys/fs/cgroup) runc's template has a cgroup namespace too.
 */
export function defaultSpec(opts: { rootless?: boolean; cgroupNamespace?: boolean } = {}): Spec {
  const caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
  const spec: Spec = {
    ociVersion: "1.0.2-dev",
    process: {
      terminal: true,
      user: { uid: 0, gid: 0 },
      args: ["sh"],
      env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
      cwd: "/",
      capabilities: { bounding: caps, effective: caps, permitted: caps, ambient: caps },
      rlimits: [{ type: "RLIMIT_NOFILE", hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: "rootfs", readonly: true },
    hostname: "runc",
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs", options: ["nosuid", "strictatime", "mode=755", "size=65536k"] },
      { destination: "/dev/pts", type: "devpts", source: "devpts", options: ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
      { destination: "/dev/mqueue", type: "mqueue", source: "mqueue", options: ["nosuid", "noexec", "nodev"] },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["nosuid", "noexec", "nodev", "relatime", "ro"] },
    ],
    linux: {
      resources: { devices: [{ allow: false, access: "rwm" }] },
      namespaces: [{ type: "pid" }, { type: "network" }, { type: "ipc" }, { type: "uts" }, { type: "mount" }],
      maskedPaths: [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/sys/firmware",
        "/proc/scsi",
      ],
      readonlyPaths: ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    },
  };
  if (opts.cgroupNamespace ?? existsSync("/sys/fs/cgroup/cgroup.controllers")) spec.linux!.namespaces!.push({ type: "cgroup" });
  if (opts.rootless) {
    spec.linux!.namespaces!.push({ type: "user" });
    spec.linux!.uidMappings = [{ containerID: 0, hostID: process.getuid?.() ?? 0, size: 1 }];
    spec.linux!.gidMappings = [{ containerID: 0, hostID: process.getgid?.() ?? 0, size: 1 }];
    spec.mounts = spec.mounts!.filter((m) => m.type !== "cgroup");
    // only the user's own ids are mapped: gid 5 (tty) does not exist in the namespace
    for (const m of spec.mounts!) if (m.type === "devpts") m.options = m.options!.filter((o) => o !== "gid=5");
    spec.mounts!.push({ destination: "/sys/fs/cgroup", type: "bind", source: "/sys/fs/cgroup", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] });
    spec.linux!.resources = undefined;
  }
  return spec;
}
