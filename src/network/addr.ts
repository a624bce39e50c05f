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
