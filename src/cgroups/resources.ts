/**
 * `linux.resources` of the runtime spec, and its translation into cgroup file writes for v1 and v2.
 * Pure functions: no file is touched here, so the mapping is tested without root against what runc
 * and crun write (cpu.shares → cpu.weight, blkio.weight → io.weight, memory+swap → memory.swap.max).
 */
import { invalid } from "../common/errors.js";

export interface WeightDevice {
  major: number;
  minor: number;
  weight?: number;
  leafWeight?: number;
}
export interface ThrottleDevice {
  major: number;
  minor: number;
  rate: number;
}
export interface DeviceRule {
  allow: boolean;
  type?: string;
  major?: number | null;
  minor?: number | null;
  access?: string;
}

export interface LinuxResources {
  devices?: DeviceRule[];
  memory?: {
    limit?: number;
    reservation?: number;
    swap?: number;
    kernel?: number;
    kernelTCP?: number;
    swappiness?: number;
    disableOOMKiller?: boolean;
    useHierarchy?: boolean;
    checkBeforeUpdate?: boolean;
  };
  cpu?: {
    shares?: number;
    quota?: number;
    burst?: number;
    period?: number;
    realtimeRuntime?: number;
    realtimePeriod?: number;
    cpus?: string;
    mems?: string;
    idle?: number;
  };
  pids?: { limit: number };
  blockIO?: {
    weight?: number;
    leafWeight?: number;
    weightDevice?: WeightDevice[];
    throttleReadBpsDevice?: ThrottleDevice[];
    throttleWriteBpsDevice?: ThrottleDevice[];
    throttleReadIOPSDevice?: ThrottleDevice[];
    throttleWriteIOPSDevice?: ThrottleDevice[];
  };
  hugepageLimits?: { pageSize: string; limit: number }[];
  network?: { classID?: number; priorities?: { name: string; priority: number }[] };
  rdma?: Record<string, { hcaHandles?: number; hcaObjects?: number }>;
  unified?: Record<string, string>;
}

/** One write: the controller whose hierarchy holds the file (v1), the file, and the value. */
export interface CgroupWrite {
  controller: string;
  file: string;
  value: string;
}

export interface MappingResult {
  writes: CgroupWrite[];
  warnings: string[];
}

/** What the host offers, for range checks ("cpus 1,3 on a 2-CPU host"). */
export interface HostLimits {
  cpus: string; // e.g. "0-1"
  mems: string; // e.g. "0"
}

/** "0-2,5" → [0,1,2,5]; throws on malformed lists. */
export function parseCpuList(list: string, field: string): number[] {
  const out: number[] = [];
  if (list.trim() === "") return out;
  for (const part of list.trim().split(",")) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw invalid(`${field}: malformed list ${JSON.stringify(list)} (use e.g. "0-2,5")`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw invalid(`${field}: malformed range ${part}`);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

function checkSubset(list: string | undefined, host: string, field: string, what: string): void {
  if (list === undefined || list === "") return;
  const want = parseCpuList(list, field);
  const have = new Set(parseCpuList(host, field));
  const missing = want.filter((c) => !have.has(c));
  if (missing.length) throw invalid(`${field}: ${what} ${missing.join(",")} do not exist on this host (it has ${host})`);
}

const nonNegative = (v: number | undefined, field: string) => {
  if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw invalid(`${field}: must be a non-negative integer (got ${v})`);
};
/** The largest value a cgroup limit takes (int64). */
export const MAX_LIMIT = 9223372036854775807;
const limitValue = (v: number | undefined, field: string) => {
  if (v !== undefined && (!Number.isInteger(v) || v < -1)) throw invalid(`${field}: must be -1 (unlimited) or a non-negative integer (got ${v})`);
  if (v !== undefined && v > MAX_LIMIT) throw invalid(`${field}: ${v} is out of range: at most 9223372036854775807 bytes (8 EiB), or -1 for no limit`);
};

/** Validation shared by both versions: types and ranges that do not depend on the cgroup version. */
export function validateResources(r: LinuxResources, host: HostLimits): void {
  const m = r.memory ?? {};
  limitValue(m.limit, "linux.resources.memory.limit");
  limitValue(m.reservation, "linux.resources.memory.reservation");
  limitValue(m.swap, "linux.resources.memory.swap");
  limitValue(m.kernelTCP, "linux.resources.memory.kernelTCP");
  if (m.swappiness !== undefined && (!Number.isInteger(m.swappiness) || m.swappiness < 0 || m.swappiness > 100))
    throw invalid(`linux.resources.memory.swappiness: must be 0..100 (got ${m.swappiness})`);
  if (m.limit !== undefined && m.swap !== undefined && m.limit > 0 && m.swap > 0 && m.swap < m.limit)
    throw invalid(`linux.resources.memory.swap: ${m.swap} is below memory.limit ${m.limit} (swap is memory plus swap)`);
  const c = r.cpu ?? {};
  nonNegative(c.shares, "linux.resources.cpu.shares");
  if (c.shares !== undefined && c.shares !== 0 && (c.shares < 2 || c.shares > 262144)) throw invalid(`linux.resources.cpu.shares: must be 2..262144 (got ${c.shares})`);
  if (c.quota !== undefined && (!Number.isInteger(c.quota) || (c.quota < 1000 && c.quota !== -1 && c.quota !== 0)))
    throw invalid(`linux.resources.cpu.quota: must be -1 or at least 1000 microseconds (got ${c.quota})`);
  if (c.period !== undefined && (!Number.isInteger(c.period) || (c.period !== 0 && (c.period < 1000 || c.period > 1_000_000))))
    throw invalid(`linux.resources.cpu.period: must be 1000..1000000 microseconds (got ${c.period})`);
  nonNegative(c.burst, "linux.resources.cpu.burst");
  nonNegative(c.realtimePeriod, "linux.resources.cpu.realtimePeriod");
  if (c.idle !== undefined && c.idle !== 0 && c.idle !== 1) throw invalid(`linux.resources.cpu.idle: must be 0 or 1 (got ${c.idle})`);
  checkSubset(c.cpus, host.cpus, "linux.resources.cpu.cpus", "CPUs");
  checkSubset(c.mems, host.mems, "linux.resources.cpu.mems", "memory nodes");
  if (r.pids && !Number.isInteger(r.pids.limit)) throw invalid("linux.resources.pids.limit: must be an integer");
  const b = r.blockIO ?? {};
  if (b.weight !== undefined && b.weight !== 0 && (b.weight < 10 || b.weight > 1000)) throw invalid(`linux.resources.blockIO.weight: must be 10..1000 (got ${b.weight})`);
  if (b.leafWeight !== undefined && b.leafWeight !== 0 && (b.leafWeight < 10 || b.leafWeight > 1000))
    throw invalid(`linux.resources.blockIO.leafWeight: must be 10..1000 (got ${b.leafWeight})`);
  for (const [k, list] of Object.entries(b)) {
    if (!Array.isArray(list)) continue;
    list.forEach((d: { major: number; minor: number; rate?: number; weight?: number }, i: number) => {
      if (!Number.isInteger(d.major) || !Number.isInteger(d.minor) || d.major < 0 || d.minor < 0)
        throw invalid(`linux.resources.blockIO.${k}[${i}]: major and minor must be non-negative integers`);
      if (d.rate !== undefined) nonNegative(d.rate, `linux.resources.blockIO.${k}[${i}].rate`);
      if (d.weight !== undefined && (d.weight < 10 || d.weight > 1000)) throw invalid(`linux.resources.blockIO.${k}[${i}].weight: must be 10..1000`);
    });
  }
  (r.hugepageLimits ?? []).forEach((h, i) => {
    if (!/^\d+[KMG]B$/.test(h.pageSize)) throw invalid(`linux.resources.hugepageLimits[${i}].pageSize: malformed ${JSON.stringify(h.pageSize)} (use e.g. "2MB")`);
    nonNegative(h.limit, `linux.resources.hugepageLimits[${i}].limit`);
  });
  for (const [key, value] of Object.entries(r.unified ?? {})) {
    if (!/^[a-z_]+\.[a-z_.]+$/.test(key) || key.includes("..") || key.startsWith("cgroup."))
      throw invalid(`linux.resources.unified: malformed key ${JSON.stringify(key)} (use a controller file such as "memory.high")`);
    if (typeof value !== "string" || value.includes("\n")) throw invalid(`linux.resources.unified.${key}: value must be a single-line string`);
  }
  (r.devices ?? []).forEach((d, i) => {
    if (d.type !== undefined && !["a", "b", "c"].includes(d.type)) throw invalid(`linux.resources.devices[${i}].type: must be a, b or c (got ${JSON.stringify(d.type)})`);
    // letters other than r, w, m mean nothing to the kernel: dropped, as runc takes such rules ("rwa")
    if (d.access !== undefined && typeof d.access !== "string") throw invalid(`linux.resources.devices[${i}].access: must be a string of r, w, m`);
  });
}

const w = (controller: string, file: string, value: string | number): CgroupWrite => ({ controller, file, value: String(value) });
const devRule = (d: DeviceRule) =>
  d.type === "a" || d.type === undefined
    ? "a"
    : `${d.type} ${d.major === undefined || d.major === null || d.major < 0 ? "*" : d.major}:${d.minor === undefined || d.minor === null || d.minor < 0 ? "*" : d.minor} ${d.access === undefined || d.access === "" ? "rwm" : d.access.replace(/[^rwm]/g, "")}`;

/** The devices every container may use (runc's allow list), applied after the spec's rules. */
export const defaultDeviceRules: DeviceRule[] = [
  { allow: true, type: "c", major: -1, minor: -1, access: "m" },
  { allow: true, type: "b", major: -1, minor: -1, access: "m" },
  ...[[1, 3], [1, 5], [1, 7], [1, 8], [1, 9], [5, 0], [5, 1], [5, 2], [10, 200]].map(([major, minor]) => ({ allow: true, type: "c", major, minor, access: "rwm" })),
  { allow: true, type: "c", major: 136, minor: -1, access: "rwm" },
];

/** v1: one hierarchy per controller, as runc's fs driver writes them. */
export function v1Writes(r: LinuxResources, opts: { devices?: boolean } = {}): MappingResult {
  const out: CgroupWrite[] = [];
  const warnings: string[] = [];
  const m = r.memory ?? {};
  if (m.limit !== undefined && m.limit !== 0) out.push(w("memory", "memory.limit_in_bytes", m.limit));
  if (m.swap !== undefined && m.swap !== 0) out.push(w("memory", "memory.memsw.limit_in_bytes", m.swap));
  if (m.reservation !== undefined && m.reservation !== 0) out.push(w("memory", "memory.soft_limit_in_bytes", m.reservation));
  if (m.kernelTCP !== undefined && m.kernelTCP !== 0) out.push(w("memory", "memory.kmem.tcp.limit_in_bytes", m.kernelTCP));
  if (m.kernel !== undefined && m.kernel !== 0) warnings.push("linux.resources.memory.kernel is deprecated and ignored (the kernel no longer limits kernel memory separately)");
  if (m.swappiness !== undefined) out.push(w("memory", "memory.swappiness", m.swappiness));
  if (m.disableOOMKiller) out.push(w("memory", "memory.oom_control", 1));
  const c = r.cpu ?? {};
  if (c.shares) out.push(w("cpu", "cpu.shares", c.shares));
  if (c.period) out.push(w("cpu", "cpu.cfs_period_us", c.period));
  if (c.quota) out.push(w("cpu", "cpu.cfs_quota_us", c.quota));
  if (c.burst !== undefined) out.push(w("cpu", "cpu.cfs_burst_us", c.burst));
  if (c.realtimePeriod) out.push(w("cpu", "cpu.rt_period_us", c.realtimePeriod));
  if (c.realtimeRuntime) out.push(w("cpu", "cpu.rt_runtime_us", c.realtimeRuntime));
  if (c.idle !== undefined) out.push(w("cpu", "cpu.idle", c.idle));
  if (c.cpus) out.push(w("cpuset", "cpuset.cpus", c.cpus));
  if (c.mems) out.push(w("cpuset", "cpuset.mems", c.mems));
  if (r.pids) out.push(w("pids", "pids.max", r.pids.limit > 0 ? r.pids.limit : "max"));
  const b = r.blockIO ?? {};
  if (b.weight) out.push(w("blkio", "blkio.weight", b.weight));
  if (b.leafWeight) out.push(w("blkio", "blkio.leaf_weight", b.leafWeight));
  for (const d of b.weightDevice ?? []) {
    if (d.weight) out.push(w("blkio", "blkio.weight_device", `${d.major}:${d.minor} ${d.weight}`));
    if (d.leafWeight) out.push(w("blkio", "blkio.leaf_weight_device", `${d.major}:${d.minor} ${d.leafWeight}`));
  }
  const throttles: [keyof NonNullable<LinuxResources["blockIO"]>, string][] = [
    ["throttleReadBpsDevice", "blkio.throttle.read_bps_device"],
    ["throttleWriteBpsDevice", "blkio.throttle.write_bps_device"],
    ["throttleReadIOPSDevice", "blkio.throttle.read_iops_device"],
    ["throttleWriteIOPSDevice", "blkio.throttle.write_iops_device"],
  ];
  for (const [key, file] of throttles) for (const d of (b[key] as ThrottleDevice[] | undefined) ?? []) out.push(w("blkio", file, `${d.major}:${d.minor} ${d.rate}`));
  for (const h of r.hugepageLimits ?? []) out.push(w("hugetlb", `hugetlb.${h.pageSize}.limit_in_bytes`, h.limit));
  if (r.network?.classID !== undefined) out.push(w("net_cls", "net_cls.classid", r.network.classID));
  for (const p of r.network?.priorities ?? []) out.push(w("net_prio", "net_prio.ifpriomap", `${p.name} ${p.priority}`));
  for (const [dev, l] of Object.entries(r.rdma ?? {})) out.push(w("rdma", "rdma.max", rdmaValue(dev, l)));
  if (opts.devices !== false && r.devices) {
    for (const d of r.devices) out.push(w("devices", d.allow ? "devices.allow" : "devices.deny", devRule(d)));
    for (const d of defaultDeviceRules) out.push(w("devices", "devices.allow", devRule(d)));
  }
  return { writes: out, warnings };
}

function rdmaValue(dev: string, l: { hcaHandles?: number; hcaObjects?: number }): string {
  const parts = [dev];
  if (l.hcaHandles !== undefined) parts.push(`hca_handle=${l.hcaHandles}`);
  if (l.hcaObjects !== undefined) parts.push(`hca_object=${l.hcaObjects}`);
  return parts.join(" ");
}

/** runc's conversion: shares 2..262144 onto weight 1..10000. */
export const sharesToWeight = (shares: number) => (shares === 0 ? 0 : 1 + Math.floor(((shares - 2) * 9999) / 262142));
/** runc's conversion: blkio weight 10..1000 onto io.weight 1..10000. */
export const blkioToIoWeight = (weight: number) => (weight === 0 ? 0 : 1 + Math.floor(((weight - 10) * 9999) / 990));

/** v2: the unified hierarchy, as runc's fs2 driver writes it. */
export function v2Writes(r: LinuxResources): MappingResult {
  const out: CgroupWrite[] = [];
  const warnings: string[] = [];
  const m = r.memory ?? {};
  const max = (v: number) => (v === -1 ? "max" : String(v));
  if (m.limit !== undefined && m.limit !== 0) out.push(w("memory", "memory.max", max(m.limit)));
  if (m.swap !== undefined && m.swap !== 0) {
    // OCI swap is memory+swap; v2's memory.swap.max counts swap alone.
    if (m.swap === -1) out.push(w("memory", "memory.swap.max", "max"));
    else if (m.limit !== undefined && m.limit > 0) out.push(w("memory", "memory.swap.max", m.swap - m.limit));
    else throw invalid("linux.resources.memory.swap: on cgroup v2 a swap limit needs a memory limit (swap is memory plus swap)");
  }
  if (m.reservation !== undefined && m.reservation !== 0) out.push(w("memory", "memory.low", max(m.reservation)));
  if (m.swappiness !== undefined) warnings.push("linux.resources.memory.swappiness is not supported on cgroup v2 and was ignored");
  if (m.disableOOMKiller) warnings.push("linux.resources.memory.disableOOMKiller is not supported on cgroup v2 and was ignored");
  if (m.kernelTCP) warnings.push("linux.resources.memory.kernelTCP is not supported on cgroup v2 and was ignored");
  if (m.kernel) warnings.push("linux.resources.memory.kernel is deprecated and ignored");
  const c = r.cpu ?? {};
  if (c.shares) out.push(w("cpu", "cpu.weight", sharesToWeight(c.shares)));
  if (c.quota || c.period) {
    const quota = c.quota && c.quota > 0 ? String(c.quota) : "max";
    out.push(w("cpu", "cpu.max", c.period ? `${quota} ${c.period}` : quota));
  }
  if (c.burst !== undefined) out.push(w("cpu", "cpu.max.burst", c.burst));
  if (c.idle !== undefined) out.push(w("cpu", "cpu.idle", c.idle));
  if (c.realtimeRuntime || c.realtimePeriod) throw invalid("linux.resources.cpu.realtimeRuntime/realtimePeriod: real-time CPU limits are not supported on cgroup v2");
  if (c.cpus) out.push(w("cpuset", "cpuset.cpus", c.cpus));
  if (c.mems) out.push(w("cpuset", "cpuset.mems", c.mems));
  if (r.pids) out.push(w("pids", "pids.max", r.pids.limit > 0 ? r.pids.limit : "max"));
  const b = r.blockIO ?? {};
  if (b.weight) out.push(w("io", "io.weight", `default ${blkioToIoWeight(b.weight)}`));
  if (b.leafWeight) warnings.push("linux.resources.blockIO.leafWeight is not supported on cgroup v2 and was ignored");
  for (const d of b.weightDevice ?? []) if (d.weight) out.push(w("io", "io.weight", `${d.major}:${d.minor} ${blkioToIoWeight(d.weight)}`));
  const throttles: [keyof NonNullable<LinuxResources["blockIO"]>, string][] = [
    ["throttleReadBpsDevice", "rbps"],
    ["throttleWriteBpsDevice", "wbps"],
    ["throttleReadIOPSDevice", "riops"],
    ["throttleWriteIOPSDevice", "wiops"],
  ];
  for (const [key, name] of throttles)
    for (const d of (b[key] as ThrottleDevice[] | undefined) ?? []) out.push(w("io", "io.max", `${d.major}:${d.minor} ${name}=${d.rate === 0 ? "max" : d.rate}`));
  for (const h of r.hugepageLimits ?? []) out.push(w("hugetlb", `hugetlb.${h.pageSize}.max`, h.limit));
  if (r.network?.classID !== undefined || r.network?.priorities?.length)
    warnings.push("linux.resources.network (net_cls/net_prio) does not exist on cgroup v2 and was ignored");
  for (const [dev, l] of Object.entries(r.rdma ?? {})) out.push(w("rdma", "rdma.max", rdmaValue(dev, l)));
  for (const [key, value] of Object.entries(r.unified ?? {})) out.push(w(key.split(".")[0]!, key, value));
  return { writes: out, warnings };
}
