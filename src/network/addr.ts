/** IPv4 arithmetic for address management: subnets as [base, prefix], addresses as numbers. */
import { readFileSync } from "node:fs";
import { invalid } from "../common/errors.js";

export function ipToNum(ip: string): number {
  const p = ip.split(".");
  if (p.length !== 4 || p.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) throw invalid(`invalid IPv4 address: ${ip}`);
  return p.reduce((n, x) => n * 256 + Number(x), 0);
}

export function numToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

export interface Subnet {
  base: number;
  prefix: number;
}

export function parseSubnet(cidr: string): Subnet {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr);
  if (!m || Number(m[2]) > 32) throw invalid(`invalid subnet ${cidr}: expected an IPv4 CIDR such as 10.1.0.0/24`);
  const prefix = Number(m[2]);
  const size = 2 ** (32 - prefix);
  const ip = ipToNum(m[1]!);
  return { base: ip - (ip % size), prefix };
}

export const subnetSize = (s: Subnet) => 2 ** (32 - s.prefix);
export const formatSubnet = (s: Subnet) => `${numToIp(s.base)}/${s.prefix}`;
export const contains = (s: Subnet, ip: number) => ip >= s.base && ip < s.base + subnetSize(s);
export const overlaps = (a: Subnet, b: Subnet) => a.base < b.base + subnetSize(b) && b.base < a.base + subnetSize(a);

/**
 * IPAM: the lowest address of the subnet that is free — inside its ip-range where it has one,
 * never the network or broadcast address, the gateway, an auxiliary address or one in use.
 */
export function freeAddress(o: { subnet: Subnet; gateway: number; used: ReadonlySet<number>; aux?: readonly number[]; range?: Subnet }): number | undefined {
  const pool = o.range ?? o.subnet;
  const aux = new Set(o.aux ?? []);
  const first = Math.max(pool.base, o.subnet.base + 1);
  const end = Math.min(pool.base + subnetSize(pool), o.subnet.base + subnetSize(o.subnet) - 1);
  for (let c = first; c < end; c++) if (c !== o.gateway && !o.used.has(c) && !aux.has(c)) return c;
  return undefined;
}

/** The host's IPv4 routes (from /proc/net/route), but for those of `own` interfaces: a subnet for berth must not overlap one. */
export function hostRoutes(own: Set<string>): Subnet[] {
  const out: Subnet[] = [];
  try {
    for (const line of readFileSync("/proc/net/route", "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 8 || own.has(f[0]!)) continue;
      const le = (hex: string) => Buffer.from(hex, "hex").readUInt32LE(0);
      const dest = le(f[1]!);
      const mask = le(f[7]!);
      if (mask === 0) continue; // the default route covers everything: it is no conflict
      const prefix = mask.toString(2).replace(/0/g, "").length;
      out.push({ base: dest, prefix });
    }
  } catch {
    /* no IPv4 */
  }
  return out;
}

/** docker's MAC for an address: 02:42 and the address's four bytes. */
export function macFor(ip: string): string {
  return ["02", "42", ...ip.split(".").map((x) => Number(x).toString(16).padStart(2, "0"))].join(":");
}

// ---- IPv6 (addresses as bigints)

export interface Subnet6 {
  base: bigint;
  prefix: number;
}

export function ip6ToBig(ip: string): bigint {
  const bad = () => invalid(`invalid IPv6 address: ${ip}`);
  if (!/^[0-9a-fA-F:]+$/.test(ip) || ip.split("::").length > 2) throw bad();
  const [head, tail] = ip.includes("::") ? ip.split("::") : [ip, undefined];
  const h = head ? head.split(":") : [];
  const t = tail !== undefined && tail !== "" ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
  if (groups.length !== 8 || groups.some((g) => !/^[0-9a-fA-F]{1,4}$/.test(g))) throw bad();
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g, 16)), 0n);
}

/** The shortest form (RFC 5952): the longest run of zero groups becomes "::". */
export function bigToIp6(n: bigint): string {
  const g = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(16 * (7 - i))) & 0xffffn));
  let best = -1;
  let len = 0;
  for (let i = 0; i < 8; ) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > len && j - i > 1) [best, len] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + len).join(":")}`;
}

export function parseSubnet6(cidr: string): Subnet6 {
  const m = /^([0-9a-fA-F:]+)\/(\d{1,3})$/.exec(cidr);
  if (!m || Number(m[2]) > 128) throw invalid(`invalid subnet ${cidr}: expected an IPv6 CIDR such as fd00:1::/64`);
  const prefix = Number(m[2]);
  const size = 1n << BigInt(128 - prefix);
  const ip = ip6ToBig(m[1]!);
  return { base: ip - (ip % size), prefix };
}

export const subnet6Size = (s: Subnet6) => 1n << BigInt(128 - s.prefix);
export const formatSubnet6 = (s: Subnet6) => `${bigToIp6(s.base)}/${s.prefix}`;
export const contains6 = (s: Subnet6, ip: bigint) => ip >= s.base && ip < s.base + subnet6Size(s);
export const overlaps6 = (a: Subnet6, b: Subnet6) => a.base < b.base + subnet6Size(b) && b.base < a.base + subnet6Size(a);
