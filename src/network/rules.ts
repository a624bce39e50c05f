/**
 * The firewall side of berth's networks, in one nftables table of berth's own: outbound NAT for
 * each network's subnet, published ports as DNAT maps (reached from other hosts, from containers
 * and from this host's loopback), and isolation of --internal networks. The table is written whole
 * from the network store in one transaction, so it always says exactly what the store says — also
 * after a crash — and a container start without published ports needs no nft at all.
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { BerthError } from "../common/errors.js";
import type { NetworkRecord, PortBinding } from "./store.js";

export interface RulesInput {
  table: string;
  networks: Array<{ net: NetworkRecord; bridge: string }>;
  ports: PortBinding[];
}

const q = (s: string) => JSON.stringify(s);

export function ruleset({ table, networks, ports }: RulesInput): string {
  const bridges = networks.map((n) => q(n.bridge));
  const external = networks.filter((n) => !n.net.Internal);
  const internal = networks.filter((n) => n.net.Internal);
  const elems = (xs: string[]) => (xs.length ? ` elements = { ${xs.join(", ")} }` : "");
  const anyIp = (p: PortBinding) => p.HostIp === "0.0.0.0" || p.HostIp === "";
  const mapOf = (proto: string, byIp: boolean) =>
    ports.filter((p) => p.Proto === proto && anyIp(p) !== byIp).map((p) => `${byIp ? `${p.HostIp} . ` : ""}${p.HostPort} : ${p.ContainerIp} . ${p.ContainerPort}`);
  const lines = [
    `table ip ${table} {`,
    `  map published_tcp { type inet_service : ipv4_addr . inet_service;${elems(mapOf("tcp", false))} }`,
    `  map published_udp { type inet_service : ipv4_addr . inet_service;${elems(mapOf("udp", false))} }`,
    `  map published_tcp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service;${elems(mapOf("tcp", true))} }`,
    `  map published_udp_ip { type ipv4_addr . inet_service : ipv4_addr . inet_service;${elems(mapOf("udp", true))} }`,
    "  chain published {",
    "    meta l4proto tcp dnat ip addr . port to ip daddr . tcp dport map @published_tcp_ip",
    "    meta l4proto udp dnat ip addr . port to ip daddr . udp dport map @published_udp_ip",
    "    meta l4proto tcp dnat ip addr . port to tcp dport map @published_tcp",
    "    meta l4proto udp dnat ip addr . port to udp dport map @published_udp",
    "  }",
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    "    fib daddr type local jump published",
    "  }",
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    "    fib daddr type local jump published",
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    // the host's loopback reaching a published port: the reply must come back to an address the container can route to
    ...(bridges.length ? [`    ip saddr 127.0.0.0/8 oifname { ${bridges.join(", ")} } masquerade`] : []),
    ...external.map((n) => `    ip saddr ${n.net.IPAM.Config[0]!.Subnet} oifname != ${q(n.bridge)} masquerade`),
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    ...internal.map((n) => `    iifname ${q(n.bridge)} oifname != ${q(n.bridge)} drop`),
    ...internal.map((n) => `    oifname ${q(n.bridge)} iifname != ${q(n.bridge)} drop`),
    "  }",
    "}",
  ];
  return lines.join("\n") + "\n";
}

/**
 * IPv6 (networks made with --ipv6): outbound masquerade for their subnets and the isolation of
 * internal ones. Published ports stay IPv4 for now.
 */
export function ruleset6({ table, networks }: RulesInput): string {
  const v6 = networks.flatMap((n) => n.net.IPAM.Config.filter((c) => c.Subnet.includes(":")).map((c) => ({ ...n, subnet: c.Subnet })));
  if (!v6.length) return "";
  return [
    `table ip6 ${table} {`,
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    ...v6.filter((n) => !n.net.Internal).map((n) => `    ip6 saddr ${n.subnet} oifname != ${q(n.bridge)} masquerade`),
    "  }",
    "  chain forward {",
    "    type filter hook forward priority filter; policy accept;",
    ...v6.filter((n) => n.net.Internal).flatMap((n) => [`    iifname ${q(n.bridge)} oifname != ${q(n.bridge)} drop`, `    oifname ${q(n.bridge)} iifname != ${q(n.bridge)} drop`]),
    "  }",
    "}",
    "",
  ].join("\n");
}

/** Replace the tables in one transaction (made first so the deletes never fail). */
export function applyRuleset(input: RulesInput): Promise<void> {
  const t = input.table;
  return nft(`table ip ${t}\ndelete table ip ${t}\ntable ip6 ${t}\ndelete table ip6 ${t}\n${ruleset(input)}${ruleset6(input)}`);
}

export function removeRuleset(table: string): Promise<void> {
  return nft(`table ip ${table}\ndelete table ip ${table}\ntable ip6 ${table}\ndelete table ip6 ${table}\n`);
}

function nft(text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let p;
    try {
      p = spawn("nft", ["-f", "-"], { stdio: ["pipe", "ignore", "pipe"] });
    } catch (e) {
      return reject(e);
    }
    let err = "";
    p.stderr!.on("data", (d) => (err += d));
    p.on("error", (e) => reject(new BerthError("Unsupported", `cannot run nft (${(e as Error).message}): install Debian's nftables package (./install.sh does)`)));
    p.on("close", (code) => (code === 0 ? resolve() : reject(new BerthError("System", `nft failed: ${err.trim().split("\n")[0]}`))));
    p.stdin!.end(text);
  });
}

/** Whether the rules of this generation are in place (a marker on tmpfs: a reboot clears both). */
export function rulesCurrent(marker: string, generation: number): boolean {
  try {
    return fs.readFileSync(marker, "utf8") === String(generation);
  } catch {
    // no marker yet: the rules are not current
    return false;
  }
}
