/** berth network create/ls/inspect/rm/prune/connect/disconnect, with docker's flags and output. */
import { invalid } from "../../common/errors.js";
import { networks } from "../../engine/index.js";
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
      { long: "ip-range", kind: "list" },
      { long: "aux-address", kind: "list" },
      { long: "internal", kind: "bool" },
      { long: "ipv6", kind: "bool" },
      { long: "label", kind: "list" },
      { long: "opt", short: "o", kind: "list" },
      { long: "attachable", kind: "bool" },
    ],
    "network create",
  );
  if (args.length !== 1) throw new UsageError(`"network create" requires exactly 1 argument.`, "network create");
  const v6 = (x: string) => x.includes(":");
  const subnets = list(flags.subnet);
  const gateways = list(flags.gateway);
  // docker: --subnet and --gateway once per address family
  if (gateways.filter((x) => !v6(x)).length > 1 || gateways.filter(v6).length > 1) throw invalid("one --gateway per address family");
  const ranges = list(flags["ip-range"]);
  const aux = labels(list(flags["aux-address"]));
  const ipam = [false, true]
    .map((six) => ({ Subnet: subnets.find((x) => v6(x) === six), Gateway: gateways.find((x) => v6(x) === six), IPRange: ranges.find((x) => v6(x) === six), Aux: Object.fromEntries(Object.entries(aux).filter(([, ip]) => v6(ip) === six)) }))
    .filter((c) => c.Subnet || c.Gateway || c.IPRange)
    .map((c) => ({ ...(c.Subnet ? { Subnet: c.Subnet } : {}), ...(c.Gateway ? { Gateway: c.Gateway } : {}), ...(c.IPRange ? { IPRange: c.IPRange } : {}), ...(Object.keys(c.Aux).length ? { AuxiliaryAddresses: c.Aux } : {}) }));
  if (subnets.filter((x) => !v6(x)).length > 1 || subnets.filter(v6).length > 1) throw invalid("berth networks have one subnet per address family");
  const id = await networks.createNetwork(ctx.engine(), {
    Name: args[0]!,
    Driver: str(flags.driver)!,
    Internal: !!flags.internal,
    EnableIPv6: !!flags.ipv6,
    Labels: labels(list(flags.label)),
    Options: labels(list(flags.opt)),
    IPAM: { Config: ipam },
  });
  out(`${str(flags.driver) === "cni" ? args[0] : id}\n`);
  return 0;
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
  const nets = networks.listNetworks(ctx.engine(), list(flags.filter));
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
      found.push(networks.inspectNetwork(ctx.engine(), a));
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
      await networks.removeNetwork(ctx.engine(), a);
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
  const removed = await networks.pruneNetworks(ctx.engine());
  if (removed.length) out(`Deleted Networks:\n${removed.map((n) => `${n}\n`).join("")}`);
  return 0;
}

export async function connect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "alias", kind: "list" }, { long: "ip", kind: "string" }, { long: "ip6", kind: "string" }, { long: "link", kind: "list" }, { long: "link-local-ip", kind: "list" }], "network connect");
  if (args.length !== 2) throw new UsageError(`"network connect" requires exactly 2 arguments.`, "network connect");
  await ctx.engine().connectNetwork(args[1]!, args[0]!, {
    aliases: list(flags.alias),
    ...(str(flags.ip) ? { ip: str(flags.ip)! } : {}),
    ...(str(flags.ip6) ? { ip6: str(flags.ip6)! } : {}),
    ...(list(flags.link).length ? { links: list(flags.link) } : {}),
    ...(list(flags["link-local-ip"]).length ? { linkLocal: list(flags["link-local-ip"]) } : {}),
  });
  return 0;
}

export async function disconnect(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [{ long: "force", short: "f", kind: "bool" }], "network disconnect");
  if (args.length !== 2) throw new UsageError(`"network disconnect" requires exactly 2 arguments.`, "network disconnect");
  await ctx.engine().disconnectNetwork(args[1]!, args[0]!);
  return 0;
}
