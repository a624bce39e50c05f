/** berth's volume, system and remaining container commands: volume *, diff, update, stats, port, info, version, doctor. */
import * as fs from "node:fs";
import * as os from "node:os";
import { join } from "../../common/path.js";
import { BerthError, invalid } from "../../common/errors.js";
import { list, parse, str, UsageError } from "../pflag.js";
import { confirm, printInspect } from "./images.js";
import { humanSize, render } from "./output.js";
import type { Context } from "./context.js";

const out = (s: string) => process.stdout.write(s);

export async function volumeCreate(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "driver", short: "d", kind: "string" }, { long: "label", kind: "list" }, { long: "opt", short: "o", kind: "list" }, { long: "name", kind: "string" }], "volume create");
  if (args.length > 1) throw new UsageError(`"volume create" requires at most 1 argument.`, "volume create");
  const kv = (xs: string[]) => Object.fromEntries(xs.map((x) => [x.split("=")[0]!, x.includes("=") ? x.slice(x.indexOf("=") + 1) : ""]));
  const existed = args[0] !== undefined && ctx.engine().volumes.has(args[0]);
  const v = ctx.engine().volumes.create(args[0] ?? str(flags.name), { labels: kv(list(flags.label)), ...(str(flags.driver) ? { driver: str(flags.driver)! } : {}), options: kv(list(flags.opt)) });
  if (!existed) ctx.engine().events.emit("volume", "create", v.Name, { driver: "local" });
  out(`${v.Name}\n`);
  return 0;
}

export async function volumeLs(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "quiet", short: "q", kind: "bool" }, { long: "filter", short: "f", kind: "list" }, { long: "format", kind: "string" }], "volume ls");
  const engine = ctx.engine();
  let vols = engine.volumes.list();
  for (const f of list(flags.filter)) {
    const [k, val = ""] = [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)];
    if (k === "dangling") vols = vols.filter((v) => (engine.volumeUsers(v.Name).length === 0) === (val === "true" || val === "1"));
    else if (k === "name") vols = vols.filter((v) => v.Name.includes(val));
    else if (k === "driver") vols = vols.filter((v) => v.Driver === val);
    else if (k === "label") {
      const [lk, lv] = val.split("=", 2) as [string, string | undefined];
      vols = vols.filter((v) => lk in v.Labels && (lv === undefined || v.Labels[lk] === lv));
    } else throw invalid(`invalid filter '${k}'`);
  }
  const rows = vols.map((v) => ({ Driver: v.Driver, Name: v.Name, Mountpoint: v.Mountpoint, Scope: v.Scope, Labels: Object.entries(v.Labels).map(([k, x]) => `${k}=${x}`).join(",") }));
  out(render(rows, str(flags.format), [["DRIVER", "Driver"], ["VOLUME NAME", "Name"]], flags.quiet ? (r) => r.Name : undefined));
  return 0;
}

export async function volumeInspect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "format", short: "f", kind: "string" }], "volume inspect");
  if (!args.length) throw new UsageError(`"volume inspect" requires at least 1 argument.`, "volume inspect");
  const found: unknown[] = [];
  let rc = 0;
  for (const a of args)
    try {
      const { Anonymous: _x, ...v } = ctx.engine().volumes.get(a);
      found.push(v);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  if (found.length || !str(flags.format)) printInspect(found, str(flags.format));
  return rc;
}

export async function volumeRm(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "force", short: "f", kind: "bool" }], "volume rm");
  if (!args.length) throw new UsageError(`"volume rm" requires at least 1 argument.`, "volume rm");
  let rc = 0;
  for (const a of args)
    try {
      ctx.engine().volumes.remove(a, ctx.engine().volumeUsers(a), !!flags.force);
      ctx.engine().events.emit("volume", "destroy", a, { driver: "local" });
      out(`${a}\n`);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  return rc;
}

export async function volumePrune(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "force", short: "f", kind: "bool" }, { long: "all", short: "a", kind: "bool" }, { long: "filter", kind: "list" }], "volume prune");
  if (!flags.force && !(await confirm(`WARNING! This will remove ${flags.all ? "all local volumes" : "anonymous local volumes"} not used by at least one container.\nAre you sure you want to continue?`))) return 0;
  const engine = ctx.engine();
  const gone: string[] = [];
  let bytes = 0;
  for (const v of engine.volumes.list()) {
    if (!flags.all && !v.Anonymous) continue;
    if (engine.volumeUsers(v.Name).length) continue;
    bytes += duBytes(v.Mountpoint);
    engine.volumes.remove(v.Name, []);
    gone.push(v.Name);
  }
  if (gone.length) out(`Deleted Volumes:\n${gone.map((g) => g + "\n").join("")}\n`);
  out(`Total reclaimed space: ${humanSize(bytes)}\n`);
  return 0;
}

function duBytes(dir: string): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) n += fs.lstatSync(p).size;
    }
  };
  try {
    walk(dir);
  } catch {
    /* vanished */
  }
  return n;
}

/** docker diff: A added, C changed, D deleted — from the overlay upper dir. */
export async function diff(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "diff");
  if (args.length !== 1) throw new UsageError(`"diff" requires exactly 1 argument.`, "diff");
  const engine = ctx.engine();
  const v = await engine.get(args[0]!);
  if (engine.images.snapshots.kind !== "overlay") throw new BerthError("Unsupported", "diff needs the overlay snapshotter");
  const upper = engine.images.snapshots.changes(v.rec.Id);
  const lowerDirs = (() => {
    const top = v.rec.SnapshotParent;
    const dirs: string[] = [];
    for (let id = top; id; id = engine.images.snapshots.layer(id)?.parent) dirs.push(engine.images.snapshots.layerDir(id));
    return dirs;
  })();
  const inLower = (rel: string) => lowerDirs.some((d) => fs.existsSync(join(d, rel)) || isLink(join(d, rel)));
  const lines: string[] = [];
  // the mount points berth itself creates in the container are not changes, as in docker
  const ignore = new Set(["/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/dev", "/proc", "/sys", ...(v.rec.Mounts ?? []).map((m) => m.Destination)]);
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(join(upper, rel)).sort()) {
      const r = `${rel}/${name}`;
      const st = fs.lstatSync(join(upper, r));
      if (ignore.has(r)) continue;
      if (st.isCharacterDevice() && st.rdev === 0) lines.push(`D ${r}`);
      else {
        lines.push(`${inLower(r) ? "C" : "A"} ${r}`);
        if (st.isDirectory()) walk(r);
      }
    }
  };
  walk("");
  out(lines.map((l) => l + "\n").join(""));
  return 0;
}

const isLink = (p: string) => {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
};

export async function update(ctx: Context, argv: string[]): Promise<number> {
  const { applyResourceFlags, resourceFlags } = await import("./containers.js");
  const { flags, args } = parse(argv, [...resourceFlags, { long: "restart", kind: "string" }], "update");
  if (!args.length) throw new UsageError(`"update" requires at least 1 argument.`, "update");
  const engine = ctx.engine();
  let rc = 0;
  for (const a of args) {
    try {
      const v = await engine.get(a);
      const hc = { ...v.rec.HostConfig };
      applyResourceFlags(flags, hc, "update");
      if (str(flags.restart)) {
        const [n, c] = str(flags.restart)!.split(":");
        hc.RestartPolicy = { Name: n as "no", MaximumRetryCount: Number(c ?? 0) };
      }
      await engine.update(v.rec.Id, hc);
      out(`${a}\n`);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  }
  return rc;
}

export async function stats(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "all", short: "a", kind: "bool" }, { long: "no-stream", kind: "bool" }, { long: "no-trunc", kind: "bool" }, { long: "format", kind: "string" }], "stats");
  const engine = ctx.engine();
  const once = async () => {
    const views = args.length ? await Promise.all(args.map((a) => engine.get(a))) : (await engine.list()).filter((v) => flags.all || v.state.Running);
    return views.map((v) => {
      let s: ReturnType<typeof engine.runtime.stats> | undefined;
      try {
        if (v.state.Running) s = engine.runtime.stats(v.rec.Id);
      } catch {
        /* stopped meanwhile */
      }
      const mem = Math.max(0, (s?.memory?.usage?.usage ?? 0) - (s?.memory?.cache ?? 0)); // docker subtracts the page cache
      const limit = s?.memory?.usage?.limit ?? 0;
      const realLimit = limit && limit < 2 ** 62 ? limit : Number(fs.readFileSync("/proc/meminfo", "utf8").match(/MemTotal:\s+(\d+)/)?.[1] ?? 0) * 1024;
      return {
        Container: flags["no-trunc"] ? v.rec.Id : v.rec.Id.slice(0, 12),
        ID: flags["no-trunc"] ? v.rec.Id : v.rec.Id.slice(0, 12),
        Name: v.rec.Name.slice(1),
        cpuTotal: s?.cpu?.usage?.total ?? 0,
        CPUPerc: "0.00%",
        MemUsage: `${binSize(mem)} / ${binSize(realLimit)}`,
        MemPerc: realLimit ? `${((mem / realLimit) * 100).toFixed(2)}%` : "0.00%",
        NetIO: "0B / 0B",
        BlockIO: "0B / 0B",
        PIDs: String(s?.pids?.current ?? 0),
      };
    });
  };
  const columns: Array<[string, "Container" | "Name" | "CPUPerc" | "MemUsage" | "MemPerc" | "NetIO" | "BlockIO" | "PIDs"]> = [
    ["CONTAINER ID", "Container"],
    ["NAME", "Name"],
    ["CPU %", "CPUPerc"],
    ["MEM USAGE / LIMIT", "MemUsage"],
    ["MEM %", "MemPerc"],
    ["NET I/O", "NetIO"],
    ["BLOCK I/O", "BlockIO"],
    ["PIDS", "PIDs"],
  ];
  // CPU % over a short window, as docker computes it between two samples
  const sample = async () => {
    const a = await once();
    const t0 = process.hrtime.bigint();
    await new Promise((r) => setTimeout(r, flags["no-stream"] ? 500 : 1000));
    const b = await once();
    const dt = Number(process.hrtime.bigint() - t0);
    return b.map((row) => {
      const before = a.find((x) => x.ID === row.ID);
      const pct = before && dt ? ((row.cpuTotal - before.cpuTotal) / dt) * 100 : 0;
      return { ...row, CPUPerc: `${Math.max(0, pct).toFixed(2)}%` };
    });
  };
  if (flags["no-stream"] || !process.stdout.isTTY) {
    out(render(await sample(), str(flags.format), columns));
    return 0;
  }
  for (;;) {
    const rows = await sample();
    out("\x1b[2J\x1b[H" + render(rows, str(flags.format), columns));
  }
}

const binSize = (n: number): string => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${Number(n.toFixed(2))}${units[i]}`;
};

export async function port(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "port");
  if (!args.length) throw new UsageError(`"port" requires at least 1 argument.`, "port");
  const v = await ctx.engine().get(args[0]!);
  const ports = v.state.NetworkSettings?.Ports ?? {};
  const want = args[1] ? (args[1].includes("/") ? args[1] : `${args[1]}/tcp`) : undefined;
  let shown = 0;
  for (const [k, list] of Object.entries(ports)) {
    if (want && k !== want) continue;
    for (const b of list ?? []) {
      out(want ? `${b.HostIp || "0.0.0.0"}:${b.HostPort}\n` : `${k} -> ${b.HostIp || "0.0.0.0"}:${b.HostPort}\n`);
      shown++;
    }
  }
  if (want && !shown) throw new BerthError("NotFound", `No public port '${want}' published for ${args[0]}`);
  return 0;
}

export async function info(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "format", short: "f", kind: "string" }], "info");
  const engine = ctx.engine();
  const views = await engine.list();
  const { layout } = await import("../../cgroups/index.js");
  const data = {
    ID: "berth",
    Containers: views.length,
    ContainersRunning: views.filter((v) => v.state.Running && !v.state.Paused).length,
    ContainersPaused: views.filter((v) => v.state.Paused).length,
    ContainersStopped: views.filter((v) => !v.state.Running).length,
    Images: engine.images.list().length,
    Driver: engine.images.snapshots.kind === "overlay" ? "overlay2" : "vfs",
    DockerRootDir: engine.root,
    CgroupDriver: "cgroupfs",
    CgroupVersion: layout() === "v2" ? "2" : "1",
    KernelVersion: os.release(),
    OperatingSystem: (fs.readFileSync("/etc/os-release", "utf8").match(/^PRETTY_NAME="?([^"\n]*)/m) ?? [])[1] ?? "Linux",
    OSType: "linux",
    Architecture: os.machine(),
    NCPU: os.cpus().length,
    MemTotal: os.totalmem(),
    Name: os.hostname(),
    ServerVersion: "0.1.0",
    DefaultRuntime: "berth-runtime",
    LoggingDriver: "json-file",
    SecurityOptions: ["name=seccomp,profile=builtin"],
  };
  if (str(flags.format)) {
    printInspect([data], str(flags.format));
    return 0;
  }
  out(
    `Server:\n Containers: ${data.Containers}\n  Running: ${data.ContainersRunning}\n  Paused: ${data.ContainersPaused}\n  Stopped: ${data.ContainersStopped}\n Images: ${data.Images}\n Server Version: ${data.ServerVersion}\n Storage Driver: ${data.Driver}\n Logging Driver: ${data.LoggingDriver}\n Cgroup Driver: ${data.CgroupDriver}\n Cgroup Version: ${data.CgroupVersion}\n Default Runtime: ${data.DefaultRuntime}\n Security Options:\n  seccomp\n   Profile: builtin\n Kernel Version: ${data.KernelVersion}\n Operating System: ${data.OperatingSystem}\n OSType: ${data.OSType}\n Architecture: ${data.Architecture}\n CPUs: ${data.NCPU}\n Total Memory: ${(data.MemTotal / 1024 ** 3).toFixed(2)}GiB\n Name: ${data.Name}\n Docker Root Dir: ${data.DockerRootDir}\n`,
  );
  return 0;
}

export async function systemPrune(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "all", short: "a", kind: "bool" }, { long: "force", short: "f", kind: "bool" }, { long: "volumes", kind: "bool" }], "system prune");
  if (!flags.force && !(await confirm(`WARNING! This will remove:\n  - all stopped containers\n${flags.volumes ? "  - all anonymous volumes not used by at least one container\n" : ""}  - all ${flags.all ? "images without at least one container associated to them" : "dangling images"}\n\nAre you sure you want to continue?`))) return 0;
  const engine = ctx.engine();
  for (const v of await engine.list()) if (!v.state.Running && !v.state.Restarting) out(`Deleted Container: ${await engine.remove(v.rec.Id)}\n`);
  if (flags.volumes)
    for (const v of engine.volumes.list())
      if (v.Anonymous && !engine.volumeUsers(v.Name).length) {
        engine.volumes.remove(v.Name, []);
        out(`Deleted Volume: ${v.Name}\n`);
      }
  const r = await engine.images.prune({ all: !!flags.all, inUse: ctx.imageUsers });
  for (const d of r.deleted) out(`Deleted Image: ${d}\n`);
  out(`\nTotal reclaimed space: ${humanSize(r.reclaimed)}\n`);
  return 0;
}

export async function events(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "since", kind: "string" }, { long: "until", kind: "string" }, { long: "filter", short: "f", kind: "list" }, { long: "format", kind: "string" }], "events");
  if (args.length) throw new UsageError(`"events" accepts no arguments.`, "events");
  const when = (s: string | undefined): bigint | undefined => {
    if (!s) return undefined;
    if (/^\d+(\.\d+)?$/.test(s)) return BigInt(Math.floor(Number(s) * 1e9));
    const m = /^(\d+)(s|m|h)$/.exec(s);
    if (m) return (BigInt(Date.now()) - BigInt(Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s"])) * 1_000_000n;
    const t = Date.parse(s);
    if (Number.isNaN(t)) throw invalid(`invalid value for --since/--until: ${s}`);
    return BigInt(t) * 1_000_000n;
  };
  const filters = list(flags.filter).map((f) => [f.slice(0, f.indexOf("=")), f.slice(f.indexOf("=") + 1)] as const);
  for (const [k] of filters) if (!["type", "event", "container", "image", "volume", "label"].includes(k)) throw invalid(`invalid filter '${k}'`);
  const engine = ctx.engine();
  const keep = (e: import("../../engine/index.js").BerthEvent) =>
    filters.every(([k, v]) => {
      switch (k) {
        case "type":
          return filters.some(([fk, fv]) => fk === "type" && fv === e.Type);
        case "event":
          return filters.some(([fk, fv]) => fk === "event" && (fv === e.Action || e.Action.startsWith(fv + ":")));
        case "container":
        case "image":
        case "volume": {
          if (e.Type !== k && !(k === "image" && e.Type === "container")) return false;
          const vals = filters.filter(([fk]) => fk === k).map(([, fv]) => fv);
          const a = e.Actor;
          return vals.some((fv) => a.ID.startsWith(fv) || a.Attributes.name === fv || (k === "image" && a.Attributes.image === fv));
        }
        case "label": {
          const [lk, lv] = v.split("=", 2) as [string, string | undefined];
          return lk in e.Actor.Attributes && (lv === undefined || e.Actor.Attributes[lk] === lv);
        }
      }
      return true;
    });
  const format = str(flags.format);
  const { Template } = await import("../template.js");
  const tpl = format && format !== "json" ? new Template(format) : undefined;
  const follow = !str(flags.until);
  for await (const e of engine.events.read({ ...(when(str(flags.since)) !== undefined ? { sinceNs: when(str(flags.since))! } : {}), ...(when(str(flags.until)) !== undefined ? { untilNs: when(str(flags.until))! } : {}), follow })) {
    if (!keep(e)) continue;
    if (format === "json") out(JSON.stringify(e) + "\n");
    else if (tpl) out(tpl.execute(e) + "\n");
    else {
      const t = new Date(Math.floor(e.timeNano / 1e6)).toISOString().replace(/\.\d+Z$/, `.${String(e.timeNano % 1e9).padStart(9, "0")}Z`);
      const attrs = Object.entries(e.Actor.Attributes)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}=${v}`)
        .join(", ");
      out(`${t} ${e.Type} ${e.Action} ${e.Actor.ID}${attrs ? ` (${attrs})` : ""}\n`);
    }
  }
  return 0;
}
