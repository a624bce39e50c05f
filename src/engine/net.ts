/**
 * docker's network settings of a container (NetworkMode, PortBindings …) as requests to the network
 * layer (src/network/attach.ts), its answer as docker's NetworkSettings, and the /etc files berth
 * writes for a container.
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { invalid } from "../common/errors.js";
import type { Mount } from "../runtime/index.js";
import type { Endpoint, NetMode, NetworkRecord, PortBinding, PortRequest } from "../network/index.js";
import type { ContainerRecord } from "./store.js";
import type { HostConfig, NetworkSettings } from "./types.js";


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

/** The files berth writes for a container (hostname, hosts, resolv.conf) into dir, as the bind mounts over its /etc ones. */
export function etcMounts(dir: string, files: Array<[name: string, text: string]>, readonly: boolean): Mount[] {
  return files.map(([name, text]) => {
    fs.writeFileSync(join(dir, name), text);
    return { destination: `/etc/${name}`, type: "bind", source: join(dir, name), options: ["rbind", "rprivate", readonly ? "ro" : "rw"] };
  });
}
