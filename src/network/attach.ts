/**
 * A container's network in one place: the engine says what the container asked for (its mode,
 * endpoints, ports, DNS settings) and gets back an attachment — what the container's files and
 * spec need before it exists, and the steps that join the network once its process exists
 * (bridge: the veth, rules and berth's DNS; CNI: the plugins; rootless: pasta).
 */
import * as fs from "node:fs";
import { invalid, unsupported } from "../common/errors.js";
import type { CniConflist, CniResult } from "./cni.js";
import { pastaPortsFor, startPasta } from "./pasta.js";
import type { Endpoint, EndpointRequest, NetworkStore, PortBinding, PortRequest } from "./store.js";

/** What attach needs of the store's networking (the Networking class of index.ts). */
export interface NetworkOps {
  readonly store: Pick<NetworkStore, "read">;
  cniNetwork(name: string): { file: string; list: CniConflist } | undefined;
  cniAttach(container: string, name: string, nsPath: string, ports: PortRequest[]): Promise<CniResult>;
  allocate(container: string, requests: EndpointRequest[], ports: PortRequest[], active: (id: string) => boolean): Promise<{ endpoints: Endpoint[]; ports: PortBinding[]; stale: PortBinding[]; rules: Promise<boolean> }>;
  plumb(nsPath: string, endpoints: Endpoint[], ports: { add: PortBinding[]; stale: PortBinding[]; rules: Promise<boolean> }): Promise<void>;
  ensureDns(command: string[], gateway: string): Promise<void>;
}

/** How a container is networked (docker's NetworkMode, and berth's pasta and CNI networks). */
export type NetMode = { kind: "bridge"; network: string } | { kind: "cni"; network: string } | { kind: "pasta" } | { kind: "none" } | { kind: "host" } | { kind: "container"; ref: string };

export interface AttachRequest {
  container: string;
  mode: NetMode;
  rootless: boolean;
  /** one per network (bridge mode): the primary first */
  endpoints: EndpointRequest[];
  ports: PortRequest[];
  /** whether another container still runs (what a gone one holds is reclaimed) */
  active: (id: string) => boolean;
  /** where pasta writes its pid (rootless) */
  pastaPidFile: string;
}

/** A container's network as its start uses it. */
export interface Attachment {
  /** the mode after berth's rules: rootless bridge → pasta, a CNI network's name → cni */
  mode: NetMode;
  cni?: { file: string; list: CniConflist };
  endpoints: Endpoint[];
  /** published ports: the bridge's (or pasta's) */
  ports: PortBinding[];
  /** berth's DNS server on the container's user networks */
  dns?: string[];
  /** Once the container's process exists: the veth goes into its namespace (awaited by join). */
  onPid?: (pid: number) => void;
  /** Before the container's setup, as this user: pasta joins the namespaces. */
  beforeSetup?: (pid: number) => Promise<void>;
  /** The container's network joined: the veth, rules and DNS; or CNI's plugins (their result). */
  join(pid: number, dnsCommand: string[]): Promise<CniResult | undefined>;
}

export async function attach(net: NetworkOps, req: AttachRequest): Promise<Attachment> {
  let mode = req.mode;
  if (req.rootless && mode.kind === "bridge") {
    // no bridge without root: pasta (user-mode networking, as podman) is the default network
    if (mode.network !== "bridge") throw unsupported(`rootless berth cannot join bridge network ${mode.network} (bridges need root): use --network pasta (the default) or none`);
    mode = { kind: "pasta" };
  }
  if (mode.kind === "pasta" && !req.rootless) throw unsupported("--network pasta is rootless berth's network; as root, containers use bridge networks");
  const cni = mode.kind === "bridge" && mode.network !== "bridge" ? net.cniNetwork(mode.network) : undefined;
  if (cni) mode = { kind: "cni", network: cni.list.name };
  if (mode.kind === "pasta") {
    const ports = pastaPortsFor(req.ports);
    return { mode, endpoints: [], ports, beforeSetup: (pid) => startPasta(pid, ports, req.pastaPidFile), join: async () => undefined };
  }
  if (mode.kind === "cni") {
    const name = mode.network;
    return { mode, cni: cni!, endpoints: [], ports: [], join: (pid) => net.cniAttach(req.container, name, `/proc/${pid}/ns/net`, req.ports) };
  }
  if (mode.kind !== "bridge") return { mode, endpoints: [], ports: [], join: async () => undefined };
  // addresses and ports now; the rules are written meanwhile, the veth once the namespace exists
  const a = await net.allocate(req.container, req.endpoints, req.ports, req.active);
  a.rules.catch(() => {}); // awaited in plumb; this keeps an early failure from being unhandled
  const plumb = (pid: number) => net.plumb(`/proc/${pid}/ns/net`, a.endpoints, { add: a.ports, stale: a.stale, rules: a.rules });
  let plumbing: Promise<void> | undefined;
  // user networks have berth's DNS (on their gateway): names of the other containers resolve
  // (any user network the container is on: docker's containers on one use its embedded DNS)
  const userNets = new Set(net.store.read().networks.filter((n) => n.Options["com.docker.network.bridge.default_bridge"] !== "true").map((n) => n.Id));
  const dnsEndpoint = a.endpoints.find((e) => userNets.has(e.Network));
  const dns = dnsEndpoint ? [dnsEndpoint.Gateway] : undefined;
  return {
    mode,
    endpoints: a.endpoints,
    ports: a.ports,
    ...(dns ? { dns } : {}),
    onPid: (pid) => {
      plumbing = plumb(pid);
      plumbing.catch(() => {}); // awaited in join
    },
    join: async (pid, dnsCommand) => {
      await (plumbing ?? plumb(pid));
      if (dns) await net.ensureDns(dnsCommand, dns[0]!);
      return undefined;
    },
  };
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

/** What a container asked of its resolver (docker's --dns, --dns-search, --dns-option). */
export interface DnsSettings {
  Dns?: string[] | null;
  DnsSearch?: string[] | null;
  DnsOptions?: string[] | null;
}

/**
 * /etc/resolv.conf: --dns/--dns-search/--dns-option over the host's file. A nameserver on the
 * host's loopback cannot be reached from a network namespace of its own, so such entries are left
 * out there (docker does the same).
 */
export function resolvConf(asked: DnsSettings, ownNetns: boolean, nameservers?: string[]): string {
  let host = "";
  try {
    host = fs.readFileSync("/etc/resolv.conf", "utf8");
  } catch {
    /* no resolv.conf on the host: the container's has only what it asked for */
  }
  const lines = host.split("\n").map((l) => l.trim());
  let ns = lines.filter((l) => /^nameserver\s/.test(l)).map((l) => l.split(/\s+/)[1]!);
  if (ownNetns) ns = ns.filter((a) => !/^127\./.test(a) && a !== "::1");
  if (nameservers?.length) ns = nameservers;
  if (asked.Dns?.length) ns = asked.Dns;
  const search = asked.DnsSearch?.length ? asked.DnsSearch : lines.filter((l) => /^search\s/.test(l)).flatMap((l) => l.split(/\s+/).slice(1));
  const options = asked.DnsOptions?.length ? asked.DnsOptions : lines.filter((l) => /^options\s/.test(l)).flatMap((l) => l.split(/\s+/).slice(1));
  return [...(search.length ? [`search ${search.join(" ")}`] : []), ...ns.map((a) => `nameserver ${a}`), ...(options.length ? [`options ${options.join(" ")}`] : [])].join("\n") + "\n";
}
