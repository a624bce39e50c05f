/** Networks for the front ends: create (bridge or CNI), list with filters, inspect, remove, prune. */
import { createHash } from "node:crypto";
import { BerthError, invalid, unsupported } from "../common/errors.js";
import { isRootless } from "../common/paths.js";
import type { NetworkRecord } from "../network/index.js";
import type { Engine } from "./engine.js";

export type Listed = NetworkRecord | { Name: string; Id: string; Driver: string; Scope: string; Created: string; Labels: Record<string, string>; Internal: boolean; EnableIPv6: boolean; ConfigFile?: string; Plugins?: unknown };

const idOf = (name: string) => createHash("sha256").update(`berth network ${name}`).digest("hex");

/**
 * The networks: berth's bridges, CNI networks, and docker's pre-defined host and none. The CNI
 * networks of other tools (/etc/cni/net.d: podman's, say) only with othersCni: a docker user does
 * not expect them in `network ls`; named, they are used and inspected all the same.
 */
function all(engine: Engine, othersCni = true): Listed[] {
  const fixed = (name: string, driver: string) => ({ Name: name, Id: idOf(name), Driver: driver, Scope: "local", Created: new Date(0).toISOString(), Labels: {}, Internal: false, EnableIPv6: false });
  const own = `${engine.network.cniDir}/`;
  const cni = engine.network
    .cniNetworks()
    .filter((c) => othersCni || c.file.startsWith(own))
    .map((c) => ({ ...fixed(c.list.name, "cni"), ConfigFile: c.file, Plugins: c.list.plugins }));
  return [...engine.network.store.list(), ...cni, fixed("host", "host"), fixed("none", "null")];
}

/** docker's network filters (`name`, `id`, `driver`, `label`), each `key=value`; `driver=cni` lists other tools' CNI networks too. */
export function listNetworks(engine: Engine, filters: string[] = []): Listed[] {
  let nets = all(engine, filters.includes("driver=cni"));
  for (const f of filters) {
    const [k, v = ""] = [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)];
    if (k === "name") nets = nets.filter((n) => n.Name.includes(v));
    else if (k === "id") nets = nets.filter((n) => n.Id.startsWith(v));
    else if (k === "driver") nets = nets.filter((n) => n.Driver === v);
    else if (k === "label") nets = nets.filter((n) => (v.includes("=") ? n.Labels[v.slice(0, v.indexOf("="))] === v.slice(v.indexOf("=") + 1) : v in n.Labels));
    else if (k === "type") nets = nets.filter((n) => (v === "builtin") === ["bridge", "host", "none"].includes(n.Name));
    else throw invalid(`invalid filter '${k}'`);
  }
  return nets;
}

type Attached = { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string };

/** A network as `docker network inspect` shows it, with the containers on it. */
export function inspectNetwork(engine: Engine, ref: string): Listed & { Containers?: Record<string, Attached> } {
  const cni = all(engine).find((n) => n.Driver === "cni" && (n.Name === ref || n.Id.startsWith(ref)));
  if (cni) return cni;
  const fixed = all(engine).find((n) => (n.Name === "host" || n.Name === "none") && (n.Name === ref || n.Id === ref));
  if (fixed) return { ...fixed, Containers: {} };
  const n = engine.network.store.get(ref);
  const containers: Record<string, Attached> = {};
  for (const e of engine.network.store.endpointsOf(n.Id)) {
    const v = engine.containers.read(e.Container);
    containers[e.Container] = { Name: v?.rec.Name.slice(1) ?? "", EndpointID: e.EndpointID, MacAddress: e.MacAddress, IPv4Address: `${e.IPAddress}/${e.IPPrefixLen}`, IPv6Address: e.GlobalIPv6Address ? `${e.GlobalIPv6Address}/${e.GlobalIPv6PrefixLen}` : "" };
  }
  return { ...n, Containers: containers };
}

export interface NetworkCreate {
  Name: string;
  Driver?: string;
  Internal?: boolean;
  EnableIPv6?: boolean;
  Labels?: Record<string, string>;
  Options?: Record<string, string>;
  IPAM?: { Driver?: string; Config?: { Subnet?: string; Gateway?: string; IPRange?: string; AuxiliaryAddresses?: Record<string, string> }[] };
  CheckDuplicate?: boolean;
  Attachable?: boolean;
}

/** Creates a bridge network (one subnet per address family), or a CNI one (-o conflist=FILE); its id. */
export async function createNetwork(engine: Engine, req: NetworkCreate): Promise<string> {
  const driver = req.Driver || "bridge";
  if (!req.Name || /\s/.test(req.Name)) throw invalid(`invalid network name ${JSON.stringify(req.Name ?? "")}: names have no spaces`);
  if (driver === "cni") {
    const file = req.Options?.conflist;
    if (!file) throw invalid("a cni network needs the option conflist=FILE (a CNI .conflist)");
    await engine.network.createCni(req.Name, file);
    return idOf(req.Name);
  }
  if (driver !== "bridge") throw invalid(`network driver ${driver}: berth has the bridge and cni drivers`);
  if (isRootless()) throw unsupported("rootless berth cannot create bridge networks (they need root): its containers use pasta (the default) or --network none");
  if (["host", "none"].includes(req.Name)) throw new BerthError("AlreadyExists", `network with name ${req.Name} already exists`);
  const v6 = (x: string) => x.includes(":");
  const cfg = req.IPAM?.Config ?? [];
  if (cfg.filter((c) => c.Subnet && !v6(c.Subnet)).length > 1 || cfg.filter((c) => c.Subnet && v6(c.Subnet)).length > 1) throw invalid("berth networks have one subnet per address family");
  if (cfg.some((c) => c.Subnet && v6(c.Subnet) && (c.IPRange || Object.keys(c.AuxiliaryAddresses ?? {}).length))) throw unsupported("IPAM ip-range and aux addresses are IPv4-only in berth");
  const c4 = cfg.find((c) => (c.Subnet && !v6(c.Subnet)) || (c.Gateway && !v6(c.Gateway)));
  const c6 = cfg.find((c) => (c.Subnet && v6(c.Subnet)) || (c.Gateway && v6(c.Gateway)));
  const n = await engine.network.store.create({
    Name: req.Name,
    ...(c4?.Subnet ? { Subnet: c4.Subnet } : {}),
    ...(c4?.Gateway ? { Gateway: c4.Gateway } : {}),
    ...(c4?.IPRange ? { IPRange: c4.IPRange } : {}),
    ...(c4?.AuxiliaryAddresses && Object.keys(c4.AuxiliaryAddresses).length ? { AuxiliaryAddresses: c4.AuxiliaryAddresses } : {}),
    ...(c6?.Subnet ? { Subnet6: c6.Subnet } : {}),
    ...(c6?.Gateway ? { Gateway6: c6.Gateway } : {}),
    Internal: !!req.Internal,
    EnableIPv6: !!req.EnableIPv6,
    Labels: req.Labels ?? {},
    Options: req.Options ?? {},
  });
  return n.Id;
}

export async function removeNetwork(engine: Engine, ref: string): Promise<void> {
  if (["host", "none", "bridge"].includes(ref)) throw new BerthError("FailedPrecondition", `${ref} is a pre-defined network and cannot be removed`);
  const net = engine.network;
  if (net.cniNetwork(ref)) net.removeCni(ref);
  else await net.removeNetwork(ref);
}

/** Removes the user networks no container is on; their names. */
export async function pruneNetworks(engine: Engine): Promise<string[]> {
  const removed: string[] = [];
  for (const n of engine.network.store.read().networks) {
    if (n.Name === "bridge" || engine.network.store.endpointsOf(n.Id).length) continue;
    try {
      await engine.network.removeNetwork(n.Id);
      removed.push(n.Name);
    } catch {
      // a container joined it meanwhile: it stays
    }
  }
  return removed;
}


