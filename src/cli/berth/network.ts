/** berth network create/ls/inspect/rm/prune/connect/disconnect, with docker's flags and output. */
import { createHash } from "node:crypto";
import { invalid, unsupported } from "../../common/errors.js";
import { isRootless } from "../../common/paths.js";
import type { NetworkRecord } from "../../engine/index.js";
import { list, parse, str, UsageError } from "../pflag.js";
import { confirm, printInspect } from "./images.js";
import { render } from "./output.js";
import type { Context } from "./context.js";

const out = (s: string) => void process.stdout.write(s);

function labels(xs: string[]): Record<string, string> {
  return Object.fromEntries(xs.map((l) => (l.includes("=") ? [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)] : [l, ""])));
}

export async function create(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "driver", short: "d", kind: "string", default: "bridge" },
      { long: "subnet", kind: "list" },
      { long: "gateway", kind: "list" },
      { long: "internal", kind: "bool" },
      { long: "ipv6", kind: "bool" },
      { long: "label", kind: "list" },
      { long: "opt", short: "o", kind: "list" },
      { long: "attachable", kind: "bool" },
    ],
    "network create",
  );
  if (args.length !== 1) throw new UsageError(`"network create" requires exactly 1 argument.`, "network create");
  if (str(flags.driver) === "cni") {
    // a CNI network: -o conflist=FILE names the plugins' configuration (its name becomes NETWORK)
    const file = labels(list(flags.opt)).conflist;
    if (!file) throw invalid("network create -d cni needs -o conflist=FILE (a CNI .conflist)");
    await ctx.engine().network.createCni(args[0]!, file);
    out(`${args[0]}\n`);
    return 0;
  }
  if (str(flags.driver) !== "bridge") throw invalid(`network driver ${str(flags.driver)}: berth has the bridge and cni drivers`);
  if (isRootless()) throw unsupported("rootless berth cannot create bridge networks (they need root): its containers use pasta (the default) or --network none");
  // docker: --subnet and --gateway once per address family
  const v6 = (x: string) => x.includes(":");
  const subnets = list(flags.subnet);
  const gateways = list(flags.gateway);
  if (subnets.filter((x) => !v6(x)).length > 1 || subnets.filter(v6).length > 1) throw invalid("berth networks have one subnet per address family");
  if (gateways.filter((x) => !v6(x)).length > 1 || gateways.filter(v6).length > 1) throw invalid("one --gateway per address family");
  const [s4, s6, g4, g6] = [subnets.find((x) => !v6(x)), subnets.find(v6), gateways.find((x) => !v6(x)), gateways.find(v6)];
  const n = await ctx.engine().network.store.create({
    Name: args[0]!,
    ...(s4 ? { Subnet: s4 } : {}),
    ...(g4 ? { Gateway: g4 } : {}),
    ...(s6 ? { Subnet6: s6 } : {}),
    ...(g6 ? { Gateway6: g6 } : {}),
    Internal: !!flags.internal,
    EnableIPv6: !!flags.ipv6,
    Labels: labels(list(flags.label)),
    Options: labels(list(flags.opt)),
  });
  out(`${n.Id}\n`);
  return 0;
}

function containersOf(ctx: Context, n: NetworkRecord): Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }> {
  const engine = ctx.engine();
  const out: Record<string, { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address: string }> = {};
  for (const e of engine.network.store.endpointsOf(n.Id)) {
    const v = engine.containers.read(e.Container);
    out[e.Container] = { Name: v?.rec.Name.slice(1) ?? "", EndpointID: e.EndpointID, MacAddress: e.MacAddress, IPv4Address: `${e.IPAddress}/${e.IPPrefixLen}`, IPv6Address: "" };
  }
  return out;
}

type Listed = NetworkRecord | { Name: string; Id: string; Driver: string; Scope: string; Created: string; Labels: Record<string, string>; Internal: boolean; EnableIPv6: boolean; ConfigFile?: string; Plugins?: unknown };
const idOf = (name: string) => createHash("sha256").update(`berth network ${name}`).digest("hex");

/** docker lists the pre-defined host and none networks beside the bridges; berth adds CNI networks. */
function all(ctx: Context): Listed[] {
  const fixed = (name: string, driver: string) => ({ Name: name, Id: idOf(name), Driver: driver, Scope: "local", Created: new Date(0).toISOString(), Labels: {}, Internal: false, EnableIPv6: false });
  const cni = ctx.engine().network.cniNetworks().map((c) => ({ ...fixed(c.list.name, "cni"), ConfigFile: c.file, Plugins: c.list.plugins }));
  return [...ctx.engine().network.store.list(), ...cni, fixed("host", "host"), fixed("none", "null")];
}

export async function ls(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(
    argv,
    [
      { long: "quiet", short: "q", kind: "bool" },
      { long: "filter", short: "f", kind: "list" },
      { long: "format", kind: "string" },
      { long: "no-trunc", kind: "bool" },
    ],
    "network ls",
  );
  let nets = all(ctx);
  for (const f of list(flags.filter)) {
    const [k, v = ""] = [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)];
    if (k === "name") nets = nets.filter((n) => n.Name.includes(v));
    else if (k === "id") nets = nets.filter((n) => n.Id.startsWith(v));
    else if (k === "driver") nets = nets.filter((n) => n.Driver === v);
    else if (k === "label") nets = nets.filter((n) => (v.includes("=") ? n.Labels[v.slice(0, v.indexOf("="))] === v.slice(v.indexOf("=") + 1) : v in n.Labels));
    else throw invalid(`invalid filter '${k}'`);
  }
  const id = (x: string) => (flags["no-trunc"] ? x : x.slice(0, 12));
  if (flags.quiet) {
    for (const n of nets) out(`${id(n.Id)}\n`);
    return 0;
  }
  const rows = nets.map((n) => ({ ID: id(n.Id), Name: n.Name, Driver: n.Driver, Scope: n.Scope, IPv6: String(n.EnableIPv6), Internal: String(n.Internal), Labels: Object.entries(n.Labels).map(([k, v]) => `${k}=${v}`).join(","), CreatedAt: n.Created }));
  out(render(rows, str(flags.format), [["NETWORK ID", "ID"], ["NAME", "Name"], ["DRIVER", "Driver"], ["SCOPE", "Scope"]]));
  return 0;
}

export async function inspect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "format", short: "f", kind: "string" }], "network inspect");
  if (!args.length) throw new UsageError(`"network inspect" requires at least 1 argument.`, "network inspect");
  const found: unknown[] = [];
  let rc = 0;
  for (const a of args) {
    try {
      const cni = all(ctx).find((n) => n.Driver === "cni" && (n.Name === a || n.Id.startsWith(a)));
      if (cni) found.push(cni);
      else {
        const n = ctx.engine().network.store.get(a);
        found.push({ ...n, Containers: containersOf(ctx, n) });
      }
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  }
  printInspect(found, str(flags.format));
  return rc;
}

export async function rm(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [{ long: "force", short: "f", kind: "bool" }], "network rm");
  if (!args.length) throw new UsageError(`"network rm" requires at least 1 argument.`, "network rm");
  let rc = 0;
  for (const a of args) {
    try {
      const net = ctx.engine().network;
      if (net.cniNetwork(a)) net.removeCni(a);
      else await net.removeNetwork(a);
      out(`${a}\n`);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  }
  return rc;
}

export async function prune(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "force", short: "f", kind: "bool" }, { long: "filter", kind: "list" }], "network prune");
  if (!flags.force && !(await confirm("WARNING! This will remove all custom networks not used by at least one container.\nAre you sure you want to continue? [y/N] "))) return 0;
  const engine = ctx.engine();
  const removed: string[] = [];
  for (const n of engine.network.store.read().networks) {
    if (n.Name === "bridge" || engine.network.store.endpointsOf(n.Id).length) continue;
    try {
      await engine.network.removeNetwork(n.Id);
      removed.push(n.Name);
    } catch {
      /* in use meanwhile */
    }
  }
  if (removed.length) out(`Deleted Networks:\n${removed.map((n) => `${n}\n`).join("")}`);
  return 0;
}

export async function connect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "alias", kind: "list" }, { long: "ip", kind: "string" }], "network connect");
  if (args.length !== 2) throw new UsageError(`"network connect" requires exactly 2 arguments.`, "network connect");
  await ctx.engine().connectNetwork(args[1]!, args[0]!, { aliases: list(flags.alias), ...(str(flags.ip) ? { ip: str(flags.ip)! } : {}) });
  return 0;
}

export async function disconnect(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [{ long: "force", short: "f", kind: "bool" }], "network disconnect");
  if (args.length !== 2) throw new UsageError(`"network disconnect" requires exactly 2 arguments.`, "network disconnect");
  await ctx.engine().disconnectNetwork(args[1]!, args[0]!);
  return 0;
}
