/**
 * How a container's network settings (docker's NetworkMode, PortBindings, ExtraHosts, Dns...)
 * become requests to the network layer and files in the container: /etc/hosts, /etc/resolv.conf.
 */
import * as fs from "node:fs";
import { invalid } from "../common/errors.js";
import type { Endpoint, NetworkRecord, PortBinding, PortRequest } from "../network/index.js";
import type { ContainerRecord } from "./store.js";
import type { HostConfig, NetworkSettings } from "./types.js";

export type NetMode = { kind: "bridge"; network: string } | { kind: "cni"; network: string } | { kind: "pasta" } | { kind: "none" } | { kind: "host" } | { kind: "container"; ref: string };

export function netMode(hc: HostConfig): NetMode {
  const m = hc.NetworkMode || "default";
  if (m === "default" || m === "bridge") return { kind: "bridge", network: "bridge" };
  if (m === "none") return { kind: "none" };
  if (m === "pasta") return { kind: "pasta" };
  if (m === "host") return { kind: "host" };
  if (m.startsWith("container:")) return { kind: "container", ref: m.slice("container:".length) };
  return { kind: "bridge", network: m };
}

/** The ports to publish: -p bindings, and with -P every exposed port not bound already. */
export function portRequests(rec: ContainerRecord): PortRequest[] {
  const out: PortRequest[] = [];
  const hc = rec.HostConfig;
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = { ...(hc.PortBindings ?? {}) };
  if (hc.PublishAllPorts) for (const k of Object.keys(rec.Config.ExposedPorts ?? {})) bindings[k] ??= [{ HostIp: "", HostPort: "" }];
  for (const [key, list] of Object.entries(bindings)) {
    const [port, proto = "tcp"] = key.split("/");
    if (proto !== "tcp" && proto !== "udp") throw invalid(`invalid proto: ${proto}`);
    for (const b of list ?? [{ HostIp: "", HostPort: "" }])
      out.push({ proto, hostIp: b.HostIp || "0.0.0.0", hostPort: Number(b.HostPort || 0), containerPort: Number(port) });
  }
  return out;
}

/** /etc/hosts as docker writes it: loopback, the container's addresses under its hostname, --add-host. */
export function hostsFile(hostname: string, addresses: string[], extraHosts: string[], gateway?: string): string {
  const lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "ff00::0\tip6-mcastprefix", "ff02::1\tip6-allnodes", "ff02::2\tip6-allrouters"];
  for (const h of extraHosts) {
    const i = h.indexOf(":");
    if (i <= 0) throw invalid(`bad format for add-host: "${h}" (expected host:ip)`);
    let ip = h.slice(i + 1);
    if (ip === "host-gateway") {
      if (!gateway) throw invalid(`--add-host ${h}: host-gateway needs a bridge network`);
      ip = gateway;
    }
    lines.push(`${ip}\t${h.slice(0, i)}`);
  }
  if (addresses.length) for (const a of addresses) lines.push(`${a}\t${hostname}`);
  else lines.push(`127.0.1.1\t${hostname}`);
  return lines.join("\n") + "\n";
}

/**
 * /etc/resolv.conf: --dns/--dns-search/--dns-option over the host's file. A nameserver on the
 * host's loopback cannot be reached from a network namespace of its own, so such entries are left
 * out there (docker does the same).
 */
export function resolvConf(hc: HostConfig, ownNetns: boolean, nameservers?: string[]): string {
  let host = "";
  try {
    host = fs.readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    /* none */
  }
  const lines = host.split("\n").map((l) => l.trim());
  let ns = lines.filter((l) => /^nameserver\s/.test(l)).map((l) => l.split(/\s+/)[1]!);
  if (ownNetns) ns = ns.filter((a) => !/^127\./.test(a) && a !== "::1");
  if (nameservers?.length) ns = nameservers;
  if (hc.Dns?.length) ns = hc.Dns;
  const search = hc.DnsSearch?.length ? hc.DnsSearch : lines.filter((l) => /^search\s/.test(l)).flatMap((l) => l.split(/\s+/).slice(1));
  const options = hc.DnsOptions?.length ? hc.DnsOptions : lines.filter((l) => /^options\s/.test(l)).flatMap((l) => l.split(/\s+/).slice(1));
  return [...(search.length ? [`search ${search.join(" ")}`] : []), ...ns.map((a) => `nameserver ${a}`), ...(options.length ? [`options ${options.join(" ")}`] : [])].join("\n") + "\n";
}

export function networkSettings(pid: number, endpoints: Endpoint[], ports: PortBinding[], nets: NetworkRecord[], rec: ContainerRecord): NetworkSettings {
  const byId = new Map(nets.map((n) => [n.Id, n]));
  const settings: NetworkSettings = { Bridge: "", SandboxKey: pid ? `/proc/${pid}/ns/net` : "", Ports: {}, IPAddress: "", IPPrefixLen: 0, Gateway: "", MacAddress: "", Networks: {} };
  for (const k of Object.keys(rec.Config.ExposedPorts ?? {})) settings.Ports[k] = null;
  for (const p of ports) (settings.Ports[`${p.ContainerPort}/${p.Proto}`] ??= []).push({ HostIp: p.HostIp, HostPort: String(p.HostPort) });
  for (const e of endpoints) {
    const n = byId.get(e.Network);
    if (!n) continue;
    settings.Networks[n.Name] = {
      NetworkID: n.Id,
      EndpointID: e.EndpointID,
      Gateway: e.Gateway,
      IPAddress: e.IPAddress,
      IPPrefixLen: e.IPPrefixLen,
      IPv6Gateway: e.IPv6Gateway ?? "",
      GlobalIPv6Address: e.GlobalIPv6Address ?? "",
      GlobalIPv6PrefixLen: e.GlobalIPv6PrefixLen ?? 0,
      MacAddress: e.MacAddress,
      Aliases: e.Aliases.length ? e.Aliases : null,
      DNSNames: [rec.Name.slice(1), rec.Id.slice(0, 12), ...e.Aliases],
      // what was asked for, as dockerd echoes it
      IPAMConfig: rec.NetworkingConfig?.EndpointsConfig?.[n.Name]?.IPAMConfig ?? null,
      Links: rec.NetworkingConfig?.EndpointsConfig?.[n.Name]?.Links ?? null,
    };
    if (n.Name === "bridge") Object.assign(settings, { IPAddress: e.IPAddress, IPPrefixLen: e.IPPrefixLen, Gateway: e.Gateway, MacAddress: e.MacAddress });
  }
  const mode = rec.HostConfig.NetworkMode;
  if (mode === "host" || mode === "none") settings.Networks[mode] = { NetworkID: "", EndpointID: "", Gateway: "", IPAddress: "", IPPrefixLen: 0, MacAddress: "", Aliases: null, DNSNames: null };
  return settings;
}
