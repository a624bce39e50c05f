/** Container statistics in the shape of runc's `events --stats` data (libcontainer's types). */
import { readFileSync } from "node:fs";
import { join } from "../common/path.js";

export interface MemoryEntry {
  limit: number;
  usage: number;
  max: number;
  failcnt: number;
}

export interface Stats {
  cpu: {
    usage: { total: number; percpu?: number[]; kernel: number; user: number };
    throttling: { periods: number; throttledPeriods: number; throttledTime: number };
  };
  memory: { cache: number; usage: MemoryEntry; swap: MemoryEntry; raw: Record<string, number> };
  pids: { current: number; limit: number };
  blkio: Record<string, unknown>;
  hugetlb: Record<string, { usage: number; max: number; failcnt: number }>;
}

const UNLIMITED = 2n ** 64n - 1n;

function num(dir: string | undefined, file: string): number {
  if (!dir) return 0;
  try {
    const t = readFileSync(join(dir, file), "utf8").trim();
    if (t === "max") return Number(UNLIMITED);
    return Number(t.split(/\s+/)[0]);
  } catch {
    // a controller file this kernel lacks: docker reports 0 too
    return 0;
  }
}

function keyed(dir: string | undefined, file: string): Record<string, number> {
  const out: Record<string, number> = {};
  if (!dir) return out;
  try {
    for (const line of readFileSync(join(dir, file), "utf8").split("\n")) {
      const [k, v] = line.split(/\s+/);
      if (k && v !== undefined) out[k] = Number(v);
    }
  } catch {
    // missing: empty
  }
  return out;
}

/** USER_HZ: cpuacct.stat counts in clock ticks. */
const nsPerTick = 1e9 / 100;

export function readStats(version: 1 | 2, dirOf: (controller: string) => string | undefined): Stats {
  if (version === 1) {
    const cpu = dirOf("cpu");
    const acct = dirOf("cpuacct");
    const mem = dirOf("memory");
    const pids = dirOf("pids");
    const cpuStat = keyed(cpu, "cpu.stat");
    const acctStat = keyed(acct, "cpuacct.stat");
    let percpu: number[] = [];
    try {
      percpu = readFileSync(join(acct!, "cpuacct.usage_percpu"), "utf8").trim().split(/\s+/).map(Number);
    } catch {
      // no cpuacct
    }
    const raw = keyed(mem, "memory.stat");
    return {
      cpu: {
        usage: { total: num(acct, "cpuacct.usage"), percpu, kernel: (acctStat.system ?? 0) * nsPerTick, user: (acctStat.user ?? 0) * nsPerTick },
        throttling: { periods: cpuStat.nr_periods ?? 0, throttledPeriods: cpuStat.nr_throttled ?? 0, throttledTime: cpuStat.throttled_time ?? 0 },
      },
      memory: {
        cache: raw.total_cache ?? raw.cache ?? 0,
        usage: { limit: num(mem, "memory.limit_in_bytes"), usage: num(mem, "memory.usage_in_bytes"), max: num(mem, "memory.max_usage_in_bytes"), failcnt: num(mem, "memory.failcnt") },
        swap: {
          limit: num(mem, "memory.memsw.limit_in_bytes"),
          usage: num(mem, "memory.memsw.usage_in_bytes"),
          max: num(mem, "memory.memsw.max_usage_in_bytes"),
          failcnt: num(mem, "memory.memsw.failcnt"),
        },
        raw,
      },
      pids: { current: num(pids, "pids.current"), limit: num(pids, "pids.max") },
      blkio: {},
      hugetlb: {},
    };
  }
  const dir = dirOf("");
  const cpuStat = keyed(dir, "cpu.stat");
  const raw = keyed(dir, "memory.stat");
  const events = keyed(dir, "memory.events");
  return {
    cpu: {
      usage: { total: (cpuStat.usage_usec ?? 0) * 1000, kernel: (cpuStat.system_usec ?? 0) * 1000, user: (cpuStat.user_usec ?? 0) * 1000 },
      throttling: { periods: cpuStat.nr_periods ?? 0, throttledPeriods: cpuStat.nr_throttled ?? 0, throttledTime: (cpuStat.throttled_usec ?? 0) * 1000 },
    },
    memory: {
      cache: raw.file ?? 0,
      usage: { limit: num(dir, "memory.max"), usage: num(dir, "memory.current"), max: num(dir, "memory.peak"), failcnt: events.max ?? 0 },
      swap: { limit: num(dir, "memory.swap.max"), usage: num(dir, "memory.swap.current"), max: num(dir, "memory.swap.peak"), failcnt: 0 },
      raw,
    },
    pids: { current: num(dir, "pids.current"), limit: num(dir, "pids.max") },
    blkio: {},
    hugetlb: {},
  };
}
