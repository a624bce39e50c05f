/**
 * Networks, their endpoints (a container's address on a network) and published ports, in one
 * JSON document replaced atomically under a flock: every allocation sees every other, so an
 * address or a host port is never handed out twice, whatever runs concurrently. Endpoints of
 * containers that no longer run (a crash, a reboot) are reclaimed by the next allocation.
 */
import * as fs from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "../common/path.js";
import { BerthError, exists, invalid, notFound, precondition } from "../common/errors.js";
import { FileLock, writeFileAtomic } from "../common/lock.js";
import { portFree } from "../common/sys.js";
import { processStartTime } from "../common/proc.js";
import { bigToIp6, contains, contains6, freeAddress, formatSubnet, formatSubnet6, hostRoutes, ip6ToBig, ipToNum, macFor, numToIp, overlaps, overlaps6, parseSubnet, parseSubnet6, subnet6Size, subnetSize, type Subnet } from "./addr.js";

export interface NetworkRecord {
  Name: string;
  Id: string;
  Created: string;
  Scope: "local";
  Driver: "bridge";
  EnableIPv6: boolean;
  /** IPRange: where addresses are handed out from (a part of the subnet); AuxiliaryAddresses: never handed out */
  IPAM: { Driver: "default"; Options: Record<string, string>; Config: Array<{ Subnet: string; Gateway: string; IPRange?: string; AuxiliaryAddresses?: Record<string, string> }> };
  Internal: boolean;
  Attachable: boolean;
  Ingress: boolean;
  ConfigOnly: boolean;
  Options: Record<string, string>;
  Labels: Record<string, string>;
}

export interface Endpoint {
  Container: string;
  Network: string;
  EndpointID: string;
  IPAddress: string;
  IPPrefixLen: number;
  Gateway: string;
  MacAddress: string;
  Aliases: string[];
  /** on networks with --ipv6 */
  GlobalIPv6Address?: string;
  GlobalIPv6PrefixLen?: number;
  IPv6Gateway?: string;
  /** names the DNS server answers for (the container's name, short id, aliases) */
  DNSNames: string[];
  /** link-local addresses on the interface (169.254.0.0/16, fe80::/64), as asked */
  LinkLocalIPs?: string[];
  /** the host side of the veth pair */
  HostIf: string;
  /** the interface in the container (eth0, eth1, ...) */
  ContainerIf: string;
}

export interface PortBinding {
  Container: string;
  Proto: "tcp" | "udp";
  HostIp: string;
  HostPort: number;
  ContainerIp: string;
  ContainerPort: number;
}

/**
 * The holder of ports whose map elements a background process is deleting (Networking's
 * releaseInBackground): `releasing:PID:START`. Its ports stay taken, and their container
 * addresses unused, while that process lives; then they are reclaimed like a stopped container's.
 */
export function releaserHolder(pid: number, start: number): string {
  return `releasing:${pid}:${start}`;
}

export function isReleaser(holder: string): boolean {
  return holder.startsWith("releasing:");
}

/** Whether the process a releaser holder names still runs (same pid, same start time). */
export function releaserAlive(holder: string): boolean {
  const [, pid, start] = holder.split(":");
  const p = processStartTime(Number(pid));
  return !!p && !p.zombie && String(p.start) === start;
}

/** The start time of a process, as releaserHolder records it; 0 when gone. */
export function processStart(pid: number): number {
  return processStartTime(pid)?.start ?? 0;
}

interface Doc {
  networks: NetworkRecord[];
  endpoints: Endpoint[];
  ports: PortBinding[];
  /** bumped when the firewall's table must be rewritten (networks made or removed); published ports are map elements, changed one by one */
  generation: number;
}

export interface EndpointRequest {
  network: string;
  ip?: string;
  ip6?: string;
  mac?: string;
  aliases?: string[];
  /** link-local addresses the interface gets besides its own (docker's --link-local-ip) */
  linkLocal?: string[];
  /** what the network's DNS answers for besides the aliases: the container's name and short id */
  names?: string[];
}

export interface PortRequest {
  proto: "tcp" | "udp";
  hostIp: string;
  /** 0: any free port */
  hostPort: number;
  containerPort: number;
}

export const DEFAULT_NETWORK = "bridge";
export const DEFAULT_BRIDGE = "berth0";

/** docker's address pools: the default bridge first, then networks of their own. */
function* candidateSubnets(): Generator<string> {
  for (let b = 17; b <= 31; b++) yield `172.${b}.0.0/16`;
  for (let c = 0; c < 256; c += 16) yield `192.168.${c}.0/20`;
}

/** The bridge interface of a network (15 characters at most, berth's own prefix). */
export function bridgeName(n: NetworkRecord): string {
  return n.Options["com.docker.network.bridge.name"] ?? `berth-${n.Id.slice(0, 9)}`;
}

/** Ten characters of the container that name its host-side veth: its id's, or a hash of a name that is no hex id (a build's step). */
const hostIfTag = (container: string): string => (/^[0-9a-f]{10}/.test(container) ? container.slice(0, 10) : createHash("sha256").update(container).digest("hex").slice(0, 10));

export class NetworkStore {
  readonly dir: string;
  private readonly file: string;

  /** defaultBridge: the default network's interface (berth0 for the default store) */
  constructor(
    root: string,
    readonly defaultBridge = DEFAULT_BRIDGE,
  ) {
    this.dir = join(root, "network");
    this.file = join(this.dir, "networks.json");
  }

  read(): Doc {
    try {
      return JSON.parse(fs.readFileSync(this.file, "utf8")) as Doc;
    } catch {
      // no store file yet: no networks
      return { networks: [], endpoints: [], ports: [], generation: 0 };
    }
  }

  /** Change the document under the lock; what fn returns is returned. */
  async update<T>(fn: (doc: Doc) => T | Promise<T>): Promise<T> {
    fs.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const lock = await FileLock.acquire(join(this.dir, "lock"), "exclusive");
    try {
      const doc = this.read();
      const before = JSON.stringify(doc);
      const out = await fn(doc);
      if (JSON.stringify(doc) !== before) writeFileAtomic(this.file, JSON.stringify(doc, null, 1), false);
      return out;
    } finally {
      lock.release();
    }
  }

  list(): NetworkRecord[] {
    const doc = this.read();
    return doc.networks.some((n) => n.Name === DEFAULT_NETWORK) ? doc.networks : [this.defaultPreview(doc), ...doc.networks];
  }

  /** A network by name, full id or id prefix (docker's rules: an exact name first). */
  find(doc: Doc, ref: string): NetworkRecord {
    const byName = doc.networks.find((n) => n.Name === ref);
    if (byName) return byName;
    const byId = doc.networks.filter((n) => n.Id.startsWith(ref));
    if (byId.length === 1) return byId[0]!;
    if (byId.length > 1) throw invalid(`network ${ref} is ambiguous (${byId.length} matches found based on ID prefix)`);
    throw notFound(`network ${ref} not found`);
  }

  get(ref: string): NetworkRecord {
    const doc = this.read();
    if (ref === DEFAULT_NETWORK && !doc.networks.some((n) => n.Name === ref)) return this.defaultPreview(doc);
    return this.find(doc, ref);
  }

  endpointsOf(networkId: string): Endpoint[] {
    return this.read().endpoints.filter((e) => e.Network === networkId);
  }

  async create(opts: CreateOptions): Promise<NetworkRecord> {
    if (!/^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/.test(opts.Name)) throw invalid(`invalid network name "${opts.Name}": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed`);
    if (["host", "none", "default"].includes(opts.Name)) throw precondition(`${opts.Name} is a pre-defined network and cannot be created`);
    if (opts.Gateway && !opts.Subnet) throw invalid("--gateway needs --subnet");
    if (opts.Gateway6 && !opts.Subnet6) throw invalid("an IPv6 --gateway needs an IPv6 --subnet");
    if (opts.Subnet6 && !opts.EnableIPv6) throw invalid("an IPv6 --subnet needs --ipv6");
    return this.update((doc) => {
      if (doc.networks.some((n) => n.Name === opts.Name)) throw exists(`network with name ${opts.Name} already exists`);
      return createIn(doc, opts, this.defaultBridge);
    });
  }

  private defaultOptions(): Record<string, string> {
    return { "com.docker.network.bridge.name": this.defaultBridge, "com.docker.network.bridge.default_bridge": "true" };
  }

  /** The default network before its first use (it is made then): what `network ls` shows. */
  private defaultPreview(doc: Doc): NetworkRecord {
    const probe: Doc = JSON.parse(JSON.stringify(doc));
    return { ...createIn(probe, { Name: DEFAULT_NETWORK, Options: this.defaultOptions() }, this.defaultBridge), Id: "0".repeat(64) };
  }

  async remove(ref: string): Promise<NetworkRecord> {
    return this.update((doc) => {
      const n = this.find(doc, ref);
      if (n.Name === DEFAULT_NETWORK) throw precondition(`${n.Name} is a pre-defined network and cannot be removed`);
      const users = doc.endpoints.filter((e) => e.Network === n.Id);
      if (users.length) throw precondition(`error while removing network: network ${n.Name} id ${n.Id} has active endpoints`);
      doc.networks = doc.networks.filter((x) => x.Id !== n.Id);
      doc.generation++;
      return n;
    });
  }

  /**
   * A container's endpoints and published ports, allocated together: addresses from each
   * network's subnet (or the one asked for), host ports checked against berth's other containers
   * and against the host itself. `active` says whether a container still runs; anything held by
   * one that does not is reclaimed first.
   */
  async attach(container: string, requests: EndpointRequest[], ports: PortRequest[], active: (id: string) => boolean): Promise<{ endpoints: Endpoint[]; ports: PortBinding[]; reclaimed: PortBinding[]; generation: number }> {
    return this.update(async (doc) => {
      const reclaimed = reclaim(doc, active, container);
      const endpoints: Endpoint[] = [];
      // interfaces are numbered after those the container has already (network connect)
      const held = doc.endpoints.filter((x) => x.Container === container).length;
      for (const [i, r] of requests.entries()) {
        let n: NetworkRecord;
        if (r.network === DEFAULT_NETWORK && !doc.networks.some((x) => x.Name === DEFAULT_NETWORK)) n = createIn(doc, { Name: DEFAULT_NETWORK, Options: this.defaultOptions() }, this.defaultBridge);
        else n = this.find(doc, r.network);
        if (endpoints.some((e) => e.Network === n.Id) || doc.endpoints.some((e) => e.Network === n.Id && e.Container === container))
          throw exists(`container ${container.slice(0, 12)} is already connected to network ${n.Name}`);
        const cfg = n.IPAM.Config[0]!;
        const subnet = parseSubnet(cfg.Subnet);
        const gateway = ipToNum(cfg.Gateway);
        const used = new Set(doc.endpoints.filter((e) => e.Network === n.Id).map((e) => ipToNum(e.IPAddress)));
        // an address a port being unpublished still forwards to is not handed out meanwhile
        for (const p of doc.ports) if (isReleaser(p.Container) && contains(subnet, ipToNum(p.ContainerIp))) used.add(ipToNum(p.ContainerIp));
        let ip: number | undefined;
        if (r.ip) {
          if (n.Name === DEFAULT_NETWORK) throw invalid("user specified IP address is supported on user defined networks only");
          ip = ipToNum(r.ip);
          if (!contains(subnet, ip) || ip === subnet.base || ip === subnet.base + subnetSize(subnet) - 1) throw invalid(`no configured subnet contains IP address ${r.ip} (network ${n.Name}: ${cfg.Subnet})`);
          if (ip === gateway || used.has(ip)) throw exists(`Address already in use: ${r.ip} on network ${n.Name}`);
        } else {
          ip = freeAddress({ subnet, gateway, used, aux: Object.values(cfg.AuxiliaryAddresses ?? {}).map(ipToNum), ...(cfg.IPRange ? { range: parseSubnet(cfg.IPRange) } : {}) });
          if (ip === undefined) throw precondition(`no available IPv4 addresses on network ${n.Name} (${cfg.IPRange ?? cfg.Subnet})`);
        }
        const address = numToIp(ip);
        const v6 = n.EnableIPv6 ? allocate6(doc, n, r.ip6) : undefined;
        const e: Endpoint = {
          Container: container,
          Network: n.Id,
          EndpointID: randomBytes(32).toString("hex"),
          IPAddress: address,
          IPPrefixLen: subnet.prefix,
          Gateway: cfg.Gateway,
          MacAddress: r.mac ?? macFor(address),
          Aliases: r.aliases ?? [],
          ...(v6 ? { GlobalIPv6Address: v6.address, GlobalIPv6PrefixLen: v6.prefix, IPv6Gateway: v6.gateway } : {}),
          DNSNames: [...(r.names ?? []), ...(r.aliases ?? [])],
          ...(r.linkLocal?.length ? { LinkLocalIPs: r.linkLocal } : {}),
          HostIf: `bv${hostIfTag(container)}${held + i}`,
          ContainerIf: `eth${held + i}`,
        };
        endpoints.push(e);
        doc.endpoints.push(e);
      }
      const bound: PortBinding[] = [];
      const ip = endpoints[0]?.IPAddress;
      if (ports.length && !ip) throw invalid("published ports need a network with addresses (not --network none or host)");
      for (const p of ports) {
        const clashes = (b: PortBinding, port: number) => b.Proto === p.proto && b.HostPort === port && (b.HostIp === p.hostIp || b.HostIp === "0.0.0.0" || p.hostIp === "0.0.0.0");
        // a port still being unpublished (its container just ended): wait for that (an RCU grace period), then take it
        for (const b of p.hostPort ? doc.ports.filter((x) => isReleaser(x.Container) && clashes(x, p.hostPort!)) : []) {
          for (let i = 0; i < 5000 && releaserAlive(b.Container); i++) await new Promise((r) => setTimeout(r, 1));
          if (releaserAlive(b.Container)) continue; // still held: reported as allocated below
          const done = doc.ports.filter((x) => x.Container === b.Container);
          doc.ports = doc.ports.filter((x) => x.Container !== b.Container);
          reclaimed.push(...done);
        }
        const taken = (port: number) => [...doc.ports, ...bound].some((b) => clashes(b, port));
        let hostPort = p.hostPort;
        if (hostPort && taken(hostPort)) throw new BerthError("AlreadyExists", `Bind for ${p.hostIp}:${hostPort} failed: port is already allocated`);
        for (let tries = 0; ; tries++) {
          const got = portFree(p.proto, p.hostIp, hostPort ?? 0);
          if (got === undefined) {
            if (p.hostPort) throw new BerthError("AlreadyExists", `Bind for ${p.hostIp}:${p.hostPort} failed: port is already in use on the host`);
            if (tries > 20) throw precondition("no free host port to publish on");
            continue;
          }
          if (!p.hostPort && taken(got)) continue;
          hostPort = got;
          break;
        }
        bound.push({ Container: container, Proto: p.proto, HostIp: p.hostIp, HostPort: hostPort, ContainerIp: ip!, ContainerPort: p.containerPort });
      }
      doc.ports.push(...bound);
      return { endpoints, ports: bound, reclaimed, generation: doc.generation };
    });
  }

  /** Give back what a container holds (all its networks, or one). */
  async release(container: string, networkRef?: string): Promise<{ endpoints: Endpoint[]; ports: PortBinding[]; generation: number }> {
    return this.update((doc) => {
      const netId = networkRef ? this.find(doc, networkRef).Id : undefined;
      const endpoints = doc.endpoints.filter((e) => e.Container === container && (!netId || e.Network === netId));
      const ports = netId ? [] : doc.ports.filter((p) => p.Container === container);
      doc.endpoints = doc.endpoints.filter((e) => !endpoints.includes(e));
      doc.ports = doc.ports.filter((p) => !ports.includes(p));
      return { endpoints, ports, generation: doc.generation };
    });
  }

  /**
   * Gives back a container's endpoints now, and hands its ports to `holder` (a releaser: the
   * process deleting their map elements), which keeps them taken until it has ended.
   */
  async releasePortsTo(container: string, holder: string): Promise<{ endpoints: Endpoint[]; ports: PortBinding[] }> {
    return this.update((doc) => {
      const endpoints = doc.endpoints.filter((e) => e.Container === container);
      doc.endpoints = doc.endpoints.filter((e) => e.Container !== container);
      const ports = doc.ports.filter((p) => p.Container === container);
      for (const p of ports) p.Container = holder;
      return { endpoints, ports };
    });
  }

  /** A renamed container is found by its new name (its DNS names follow). */
  async renameEndpoints(container: string, oldName: string, newName: string): Promise<void> {
    if (!this.read().endpoints.some((e) => e.Container === container)) return;
    await this.update((doc) => {
      for (const e of doc.endpoints) if (e.Container === container) e.DNSNames = (e.DNSNames ?? []).map((n) => (n === oldName ? newName : n));
    });
  }

  /** What a container holds now. */
  held(container: string): { endpoints: Endpoint[]; ports: PortBinding[] } {
    const doc = this.read();
    return { endpoints: doc.endpoints.filter((e) => e.Container === container), ports: doc.ports.filter((p) => p.Container === container) };
  }
}

/** Drop what containers that no longer run hold; the ports dropped are returned (their map elements must go). */
function reclaim(doc: Doc, active: (id: string) => boolean, except: string): PortBinding[] {
  const stale = new Set([...doc.endpoints.map((e) => e.Container), ...doc.ports.map((p) => p.Container)].filter((c) => c !== except && !(isReleaser(c) ? releaserAlive(c) : active(c))));
  if (!stale.size) return [];
  doc.endpoints = doc.endpoints.filter((e) => !stale.has(e.Container));
  const dropped = doc.ports.filter((p) => stale.has(p.Container));
  doc.ports = doc.ports.filter((p) => !stale.has(p.Container));
  return dropped;
}

/** An IPv6 address on a --ipv6 network: the one asked for, or the lowest free after the gateway. */
function allocate6(doc: Doc, n: NetworkRecord, want?: string): { address: string; prefix: number; gateway: string } {
  const cfg = n.IPAM.Config.find((c) => c.Subnet.includes(":"))!;
  const subnet = parseSubnet6(cfg.Subnet);
  const gateway = ip6ToBig(cfg.Gateway);
  const used = new Set(doc.endpoints.filter((e) => e.Network === n.Id && e.GlobalIPv6Address).map((e) => ip6ToBig(e.GlobalIPv6Address!)));
  let ip: bigint | undefined;
  if (want) {
    ip = ip6ToBig(want);
    if (!contains6(subnet, ip) || ip === subnet.base) throw invalid(`no configured subnet contains IP address ${want} (network ${n.Name}: ${cfg.Subnet})`);
    if (ip === gateway || used.has(ip)) throw exists(`Address already in use: ${want} on network ${n.Name}`);
  } else
    for (let c = subnet.base + 1n; c < subnet.base + subnet6Size(subnet); c++)
      if (c !== gateway && !used.has(c)) {
        ip = c;
        break;
      }
  if (ip === undefined) throw precondition(`no available IPv6 addresses on network ${n.Name}`);
  return { address: bigToIp6(ip), prefix: subnet.prefix, gateway: cfg.Gateway };
}

export interface CreateOptions {
  Name: string;
  Subnet?: string;
  Gateway?: string;
  /** IPv4: hand out addresses from this part of the subnet only (docker's --ip-range) */
  IPRange?: string;
  /** IPv4: addresses never handed out (docker's --aux-address name=ip) */
  AuxiliaryAddresses?: Record<string, string>;
  /** with EnableIPv6: the IPv6 subnet (a random ULA /64 when not given) and its gateway */
  Subnet6?: string;
  Gateway6?: string;
  EnableIPv6?: boolean;
  Internal?: boolean;
  Labels?: Record<string, string>;
  Options?: Record<string, string>;
}

function createIn(doc: Doc, opts: CreateOptions, defaultBridge: string): NetworkRecord {
  const own = new Set([defaultBridge, ...doc.networks.map(bridgeName)]);
  const taken: Array<{ s: Subnet; what: string }> = [
    ...doc.networks.map((n) => ({ s: parseSubnet(n.IPAM.Config[0]!.Subnet), what: `network ${n.Name}` })),
    ...hostRoutes(own).map((s) => ({ s, what: "a route of this host" })),
  ];
  let subnet: Subnet;
  if (opts.Subnet) {
    subnet = parseSubnet(opts.Subnet);
    if (subnet.prefix > 30) throw invalid(`subnet ${opts.Subnet} is too small for containers`);
    const clash = taken.find((t) => overlaps(t.s, subnet));
    if (clash) throw precondition(`invalid pool request: Pool overlaps with other one on this address space (${formatSubnet(subnet)} overlaps ${formatSubnet(clash.s)}, ${clash.what})`);
  } else {
    const free = [...candidateSubnets()].map(parseSubnet).find((c) => !taken.some((t) => overlaps(t.s, c)));
    if (!free) throw precondition("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network");
    subnet = free;
  }
  let gateway = subnet.base + 1;
  if (opts.Gateway) {
    gateway = ipToNum(opts.Gateway);
    if (!contains(subnet, gateway) || gateway === subnet.base || gateway === subnet.base + subnetSize(subnet) - 1) throw invalid(`no matching subnet for gateway ${opts.Gateway} (subnet ${formatSubnet(subnet)})`);
  }
  const config: NetworkRecord["IPAM"]["Config"] = [{ Subnet: formatSubnet(subnet), Gateway: numToIp(gateway) }];
  if (opts.IPRange) {
    if (!opts.Subnet) throw invalid("--ip-range needs --subnet");
    const range = parseSubnet(opts.IPRange);
    if (range.base < subnet.base || range.base + subnetSize(range) > subnet.base + subnetSize(subnet)) throw invalid(`invalid ip range ${opts.IPRange}: it is not within the subnet ${formatSubnet(subnet)}`);
    config[0]!.IPRange = formatSubnet(range);
  }
  for (const [name, ip] of Object.entries(opts.AuxiliaryAddresses ?? {})) {
    if (!opts.Subnet) throw invalid("--aux-address needs --subnet");
    const a = ipToNum(ip);
    if (!contains(subnet, a)) throw invalid(`invalid auxiliary address ${name}=${ip}: it is not in the subnet ${formatSubnet(subnet)}`);
    (config[0]!.AuxiliaryAddresses ??= {})[name] = numToIp(a);
  }
  if (opts.EnableIPv6) {
    const s6 = opts.Subnet6 ? parseSubnet6(opts.Subnet6) : parseSubnet6(`fd${randomBytes(5).toString("hex").replace(/^(..)(....)(....)$/, "$1:$2:$3")}::/64`);
    if (s6.prefix > 120) throw invalid(`subnet ${opts.Subnet6} is too small for containers`);
    const clash = doc.networks.flatMap((x) => x.IPAM.Config.filter((c) => c.Subnet.includes(":")).map((c) => ({ s: parseSubnet6(c.Subnet), name: x.Name }))).find((t) => overlaps6(t.s, s6));
    if (clash) throw precondition(`invalid pool request: Pool overlaps with other one on this address space (${formatSubnet6(s6)} overlaps network ${clash.name})`);
    const gw6 = opts.Gateway6 ? ip6ToBig(opts.Gateway6) : s6.base + 1n;
    if (!contains6(s6, gw6) || gw6 === s6.base) throw invalid(`no matching subnet for gateway ${opts.Gateway6} (subnet ${formatSubnet6(s6)})`);
    config.push({ Subnet: formatSubnet6(s6), Gateway: bigToIp6(gw6) });
  }
  const n: NetworkRecord = {
    Name: opts.Name,
    Id: randomBytes(32).toString("hex"),
    Created: new Date().toISOString(),
    Scope: "local",
    Driver: "bridge",
    EnableIPv6: !!opts.EnableIPv6,
    IPAM: { Driver: "default", Options: {}, Config: config },
    Internal: !!opts.Internal,
    Attachable: false,
    Ingress: false,
    ConfigOnly: false,
    Options: opts.Options ?? {},
    Labels: opts.Labels ?? {},
  };
  doc.networks.push(n);
  doc.generation++;
  return n;
}

/** Bind the port on the host for a moment: the port it got (port 0 picks one), or undefined if taken. */

