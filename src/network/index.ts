/**
 * Container networking: bridge networks (berth's default one and user-defined ones), an address
 * per container and network, veth pairs into the container's network namespace (configured by
 * build/berth-net over rtnetlink), published ports and outbound NAT in an nftables table of
 * berth's own. A container's veth goes away with its network namespace; its addresses and ports
 * are given back when it stops — or, after a crash, by the next allocation.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { BerthError } from "../common/errors.js";
import { buildBinary } from "../common/paths.js";
import { FileLock } from "../common/lock.js";
import { nftMapElemAsync, runToEnd, spawn as spawnProcess, waitChildAsync } from "../common/sys.js";
import { serveDns } from "./dns.js";
import { cniAdd, cniDel, conflists, findConflist, readConflist, type CniConflist, type CniPortMapping, type CniResult } from "./cni.js";
import { applyRuleset, removeRuleset, rulesCurrent } from "./rules.js";
import { bridgeName, DEFAULT_BRIDGE, isReleaser, NetworkStore, processStart, releaserHolder, type Endpoint, type EndpointRequest, type NetworkRecord, type PortBinding, type PortRequest } from "./store.js";

export { NetworkStore, bridgeName, DEFAULT_NETWORK, isReleaser, processStart, releaserHolder, type NetworkRecord, type Endpoint, type PortBinding, type PortRequest, type EndpointRequest } from "./store.js";
export { parsePublish, type PublishSpec } from "./ports.js";
export { ruleset } from "./rules.js";
export { readConflist, type CniConflist, type CniResult } from "./cni.js";
export { attach, hostsFile, resolvConf, type AttachRequest, type Attachment, type DnsSettings, type NetMode } from "./attach.js";
export { stopPasta } from "./pasta.js";

const MTU = 1500;

/** A store's default bridge and nftables table: berth's own names for the default store, names of its root's hash for others. */
export function networkNames(root: string): { bridge: string; table: string } {
  const tag = root === "/var/lib/berth" ? "" : createHash("sha256").update(root).digest("hex").slice(0, 6);
  return { bridge: tag ? `berth${tag}` : DEFAULT_BRIDGE, table: tag ? `berth_${tag}` : "berth" };
}

export class Networking {
  readonly store: NetworkStore;
  /** this store's nftables table */
  readonly table: string;
  private readonly marker: string;
  private readonly runDir: string;

  /**
   * root: the store's directory. runDir: tmpfs state (the rules marker). Stores other than the
   * default one (tests, a second root) get their own bridge and table names, so they never touch
   * each other's.
   */
  constructor(
    readonly root: string,
    runDir: string,
  ) {
    const names = networkNames(root);
    this.store = new NetworkStore(root, names.bridge);
    this.table = names.table;
    fs.mkdirSync(runDir, { recursive: true });
    this.runDir = runDir;
    this.marker = join(runDir, `rules-${this.table}`);
  }

  /**
   * Allocate a container's endpoints and ports. `rules` settles when the table is current (most
   * starts: at once); plumb() then adds the ports' map elements.
   */
  async allocate(container: string, requests: EndpointRequest[], ports: PortRequest[], active: (id: string) => boolean): Promise<{ endpoints: Endpoint[]; ports: PortBinding[]; stale: PortBinding[]; rules: Promise<boolean> }> {
    const r = await this.store.attach(container, requests, ports, active);
    return { endpoints: r.endpoints, ports: r.ports, stale: r.reclaimed, rules: this.syncRules(r.generation) };
  }

  /**
   * Bring the table to the store's generation; true when it was written whole (it then holds
   * every port of the store already). `force` rewrites it whatever the marker says.
   */
  async syncRules(generation = this.store.read().generation, force = false): Promise<boolean> {
    if (!force && rulesCurrent(this.marker, generation)) return false;
    const doc = this.store.read();
    // ports being unpublished are left out: their elements are on their way out
    await applyRuleset({ table: this.table, networks: doc.networks.map((net) => ({ net, bridge: bridgeName(net) })), ports: doc.ports.filter((p) => !isReleaser(p.Container)) });
    fs.writeFileSync(this.marker, String(doc.generation));
    return true;
  }

  /** berth-net operations that add (or delete) the map elements of published ports. */
  private elems(ports: PortBinding[]): Array<{ map: string; key: string; data: string }> {
    return ports.map((p) => {
      const any = !p.HostIp || p.HostIp === "0.0.0.0";
      const key = any ? hexPort(p.HostPort) : `${hexIp(p.HostIp)}${hexPort(p.HostPort)}0000`;
      return { map: `published_${p.Proto}${any ? "" : "_ip"}`, key, data: `${hexIp(p.ContainerIp)}${hexPort(p.ContainerPort)}0000` };
    });
  }

  private elemOps(op: "add" | "del", ports: PortBinding[]): string[] {
    return this.elems(ports).flatMap((e) => ["elem", op, this.table, e.map, e.key, op === "add" ? e.data : "-"]);
  }


  /**
   * Plumb endpoints into the network namespace at nsPath: bridge (made if missing), veth, address,
   * routes; publish `ports` and unpublish `stale` ones (after `rules` settled: the table exists).
   */
  async plumb(nsPath: string, endpoints: Endpoint[], ports: { add: PortBinding[]; stale: PortBinding[]; rules: Promise<boolean> } = { add: [], stale: [], rules: Promise.resolve(false) }): Promise<void> {
    if (!endpoints.length) return;
    const args: string[] = [];
    const rewritten = await ports.rules;
    // a table written whole already has every port of the store, and none of the stale ones
    if (!rewritten) args.push(...this.elemOps("del", ports.stale), ...this.elemOps("add", ports.add));
    const nets = new Map(this.store.read().networks.map((n) => [n.Id, n]));
    for (const e of endpoints) {
      const n = nets.get(e.Network);
      if (!n) throw new BerthError("NotFound", `network ${e.Network} is gone`);
      const br = bridgeName(n);
      args.push("bridge", br, `${n.IPAM.Config[0]!.Gateway}/${e.IPPrefixLen}`, String(MTU));
      if (e.IPv6Gateway) args.push("addr", br, `${e.IPv6Gateway}/${e.GlobalIPv6PrefixLen}`);
      args.push("veth", nsPath, e.HostIf, e.ContainerIf, br, String(MTU), e.MacAddress);
    }
    args.push("enter", nsPath, "up", "lo");
    for (const [i, e] of endpoints.entries()) {
      args.push("addr", e.ContainerIf, `${e.IPAddress}/${e.IPPrefixLen}`);
      if (e.GlobalIPv6Address) args.push("addr", e.ContainerIf, `${e.GlobalIPv6Address}/${e.GlobalIPv6PrefixLen}`);
      for (const ip of e.LinkLocalIPs ?? []) args.push("addr", e.ContainerIf, `${ip}/${ip.includes(":") ? 64 : 16}`);
      args.push("up", e.ContainerIf);
      if (i === 0 && !nets.get(e.Network)!.Internal) args.push("route", "default", e.Gateway);
      if (e.IPv6Gateway && !endpoints.slice(0, i).some((x) => x.IPv6Gateway) && !nets.get(e.Network)!.Internal) args.push("route", "default", e.IPv6Gateway);
    }
    try {
      await run(buildBinary("berth-net"), args);
    } catch (e) {
      // a map element that was there already (or missing): the table is rewritten from the store
      if (!/map element/.test((e as Error).message)) throw e;
      await this.syncRules(undefined, true);
      await run(buildBinary("berth-net"), args.filter((_, i) => !isElemArg(args, i)));
    }
    // the host's loopback may reach published ports (DNAT from 127.0.0.1 to the bridge)
    for (const e of endpoints) {
      try {
        fs.writeFileSync(`/proc/sys/net/ipv4/conf/${bridgeName(nets.get(e.Network)!)}/route_localnet`, "1");
      } catch {
        /* no such sysctl: loopback access to published ports will not work */
      }
    }
  }

  /**
   * The DNS server of this store's user networks runs (started by `command`, which must end up
   * in serveDnsHere()). Returns once it answers.
   */
  async ensureDns(command: string[], gateway: string): Promise<void> {
    const lockPath = join(this.runDir, `dns-${this.table}.lock`);
    const ready = join(this.runDir, `dns-${this.table}.ready`);
    const probe = FileLock.tryAcquire(lockPath, "exclusive");
    if (probe) {
      // none runs: start one
      probe.release();
      fs.rmSync(ready, { force: true });
      const child = spawn(command[0]!, command.slice(1), { detached: true, stdio: "ignore" });
      child.unref();
    }
    const serving = () => {
      try {
        return fs.readFileSync(ready, "utf8").split("\n").includes(gateway);
      } catch {
        // no ready file yet: not serving
        return false;
      }
    };
    for (let i = 0; i < 300 && !serving(); i++) await new Promise((r) => setTimeout(r, 10));
  }

  /** Run the DNS server in this process until it is idle (the `internal-dns` command). */
  async serveDnsHere(): Promise<void> {
    const lock = FileLock.tryAcquire(join(this.runDir, `dns-${this.table}.lock`), "exclusive");
    if (!lock) return; // another one serves
    const ready = join(this.runDir, `dns-${this.table}.ready`);
    try {
      await serveDns(this.store, { ready: (gateways) => fs.writeFileSync(ready, gateways.join("\n")) });
    } finally {
      fs.rmSync(ready, { force: true });
      lock.release();
    }
  }

  /**
   * Give back a container's endpoints and ports. Its veths go with its network namespace; with
   * `links` (a disconnect from a running container) they are deleted here.
   */
  async release(container: string, networkRef?: string, opts: { links?: boolean } = {}): Promise<void> {
    // ports go over netlink from this process, on worker threads (each delete waits for an RCU grace period in the
    // kernel); when all go, their elements are gone before the store frees them, so a port handed
    // out again never meets its old element
    const key = (p: PortBinding) => `${p.Proto}/${p.HostIp}/${p.HostPort}`;
    const early = networkRef ? [] : this.store.held(container).ports;
    const unpublish = (ports: PortBinding[]) => Promise.all(this.elems(ports).map((e) => nftMapElemAsync(false, this.table, e.map, Buffer.from(e.key, "hex"))));
    const first = await unpublish(early).catch((e: Error) => e);
    const r = await this.store.release(container, networkRef);
    const links = opts.links ? r.endpoints.map((e) => e.HostIf).filter((l) => fs.existsSync(`/sys/class/net/${l}`)) : [];
    const errors = [first, await unpublish(r.ports.filter((p) => !early.some((q) => key(q) === key(p)))).catch((e: Error) => e)];
    const err = errors.find((e): e is Error => e instanceof Error);
    if (err) {
      if (!/map element/.test(err.message)) throw err;
      // missing already (the table was rewritten meanwhile): write it whole from the store
      await this.syncRules(undefined, true);
    }
    if (links.length) await run(buildBinary("berth-net"), links.flatMap((l) => ["del", l]));
  }

  /**
   * release, for a container that has ended, without waiting on the kernel: deleting a map element
   * waits for an RCU grace period (longer than the rest of a `run --rm`'s teardown), so a
   * process of its own (berth-net, in a session of its own) deletes the published ports' elements,
   * and the store keeps those ports taken, and their addresses unused, until it has ended. Its
   * endpoints are given back at once (their veths went with the namespace).
   */
  async releaseInBackground(container: string): Promise<void> {
    const held = this.store.held(container);
    // up to 20 ports in one berth-net (its argv's bound); more (a range) go the waiting way
    if (!held.ports.length || held.ports.length > 20) return this.release(container);
    const pid = spawnProcess(buildBinary("berth-net"), ["berth-net", ...this.elemOps("del", held.ports)], [-1, -1, -1]);
    const start = processStart(pid); // before it is reaped: a pid whose start is 0 is taken as ended
    void waitChildAsync(pid).catch(() => {}); // reaped only so it is no zombie; its outcome is checked through the store
    await this.store.releasePortsTo(container, releaserHolder(pid, start));
  }

  /** Remove a network: its record, its bridge, its rules. */
  async removeNetwork(ref: string): Promise<NetworkRecord> {
    const n = await this.store.remove(ref);
    await run(buildBinary("berth-net"), ["del", bridgeName(n)]);
    await this.syncRules();
    return n;
  }

  // ---- CNI networks

  /** Where `network create -d cni` keeps conflists (beside /etc/cni/net.d, which is read too). */
  get cniDir(): string {
    return join(this.root, "network", "cni");
  }

  cniNetworks(): Array<{ file: string; list: CniConflist }> {
    return conflists(this.cniDir).filter((c) => !this.store.read().networks.some((n) => n.Name === c.list.name));
  }

  /** The CNI network of that name, when no bridge network has it. */
  cniNetwork(name: string): { file: string; list: CniConflist } | undefined {
    if (this.store.read().networks.some((n) => n.Name === name) || name === "bridge") return undefined;
    return findConflist(this.cniDir, name);
  }

  async createCni(name: string, conflistFile: string): Promise<CniConflist> {
    if (this.store.read().networks.some((n) => n.Name === name) || findConflist(this.cniDir, name)) throw new BerthError("AlreadyExists", `network with name ${name} already exists`);
    const list = { ...readConflist(conflistFile), name };
    fs.mkdirSync(this.cniDir, { recursive: true });
    fs.writeFileSync(join(this.cniDir, `${name}.conflist`), JSON.stringify(list, null, 2));
    return list;
  }

  removeCni(name: string): void {
    const c = findConflist(this.cniDir, name);
    if (!c) throw new BerthError("NotFound", `network ${name} not found`);
    if (!c.file.startsWith(this.cniDir)) throw new BerthError("FailedPrecondition", `network ${name} is defined by ${c.file}: remove that file to remove it`);
    if (fs.readdirSync(this.cniStateDir, { withFileTypes: true }).some((d) => d.isFile() && this.cniState(d.name.replace(/\.json$/, ""))?.network === name))
      throw new BerthError("FailedPrecondition", `error while removing network: network ${name} has active endpoints`);
    fs.rmSync(c.file);
  }

  private get cniStateDir(): string {
    const d = join(this.root, "network", "cni-state");
    fs.mkdirSync(d, { recursive: true });
    return d;
  }

  cniState(container: string): { network: string; file: string; result: CniResult; portMappings: CniPortMapping[]; netns: string } | undefined {
    try {
      return JSON.parse(fs.readFileSync(join(this.cniStateDir, `${container}.json`), "utf8"));
    } catch {
      // no (or a torn) state file: not on a CNI network
      return undefined;
    }
  }

  /** Run the network's plugins (ADD) for a container whose namespace is at nsPath; the result is kept for DEL. */
  async cniAttach(container: string, name: string, nsPath: string, ports: PortRequest[]): Promise<CniResult> {
    const c = this.cniNetwork(name);
    if (!c) throw new BerthError("NotFound", `network ${name} not found`);
    if (ports.some((p) => !p.hostPort)) throw new BerthError("InvalidArgument", `network ${name} is a CNI network: publish ports with an explicit host port (-p HOST:CONTAINER)`);
    const portMappings = ports.map((p) => ({ hostPort: p.hostPort, containerPort: p.containerPort, protocol: p.proto, ...(p.hostIp && p.hostIp !== "0.0.0.0" ? { hostIP: p.hostIp } : {}) }));
    const result = await cniAdd(c.list, { containerId: container, netns: nsPath, ifname: "eth0", portMappings });
    fs.writeFileSync(join(this.cniStateDir, `${container}.json`), JSON.stringify({ network: name, file: c.file, result, portMappings, netns: nsPath }));
    return result;
  }

  /** DEL for a container attached to a CNI network (its namespace may be gone: plugins cope). */
  async cniDetach(container: string): Promise<void> {
    const st = this.cniState(container);
    if (!st) return;
    let list: CniConflist;
    try {
      list = readConflist(st.file);
    } catch {
      // the conflist was edited or removed since: the DEL goes by its name (or with no plugins)
      list = findConflist(this.cniDir, st.network)?.list ?? { cniVersion: "1.0.0", name: st.network, plugins: [] };
    }
    try {
      await cniDel(list, { containerId: container, netns: st.netns, ifname: "eth0", prevResult: st.result, portMappings: st.portMappings });
    } finally {
      fs.rmSync(join(this.cniStateDir, `${container}.json`), { force: true });
    }
  }

  /** Everything berth made on the host for this store, gone (the last network removed, tests). */
  async removeAll(): Promise<void> {
    const doc = this.store.read();
    const links = doc.networks.map(bridgeName).filter((l) => fs.existsSync(`/sys/class/net/${l}`));
    if (links.length) await run(buildBinary("berth-net"), links.flatMap((l) => ["del", l]));
    await removeRuleset(this.table).catch(() => {}); // no ruleset (already removed): nothing to do
    fs.rmSync(this.marker, { force: true });
  }
}

const hexPort = (p: number) => p.toString(16).padStart(4, "0");
const hexIp = (ip: string) => ip.split(".").map((x) => Number(x).toString(16).padStart(2, "0")).join("");

/** Whether args[i] belongs to an `elem` operation (6 words: elem add|del TABLE MAP KEY DATA). */
function isElemArg(args: string[], i: number): boolean {
  for (let j = Math.max(0, i - 5); j <= i; j++) if (args[j] === "elem" && i - j < 6) return true;
  return false;
}

/** A berth-net (or other short) command, started off the event loop (see runToEnd). */
async function run(cmd: string, args: string[]): Promise<void> {
  const { code, stderr } = await runToEnd([cmd, ...args]);
  if (code !== 0) throw new BerthError("System", stderr.trim() || `${cmd} exited with ${code}`);
}
