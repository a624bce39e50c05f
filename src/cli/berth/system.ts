/** berth's volume, system and remaining container commands: volume *, diff, update, stats, port, info, version, doctor. */
import { builtin } from "../../common/builtin.js";
import { BerthError } from "../../common/errors.js";
import { buildBinary } from "../../common/paths.js";
import { execv } from "../../common/sys.js";
import { system } from "../../engine/index.js";
import { list, parse, str, UsageError } from "../pflag.js";
import { confirm, printInspect } from "./images.js";
import { humanSize, render } from "./output.js";
import type { Context } from "./context.js";

const out = (s: string) => process.stdout.write(s);

export async function volumeCreate(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "driver", short: "d", kind: "string" }, { long: "label", kind: "list" }, { long: "opt", short: "o", kind: "list" }, { long: "name", kind: "string" }], "volume create");
  if (args.length > 1) throw new UsageError(`"volume create" requires at most 1 argument.`, "volume create");
  const kv = (xs: string[]) => Object.fromEntries(xs.map((x) => [x.split("=")[0]!, x.includes("=") ? x.slice(x.indexOf("=") + 1) : ""]));
  const v = system.createVolume(ctx.engine(), args[0] ?? str(flags.name), { labels: kv(list(flags.label)), ...(str(flags.driver) ? { driver: str(flags.driver)! } : {}), options: kv(list(flags.opt)) });
  out(`${v.Name}\n`);
  return 0;
}

export async function volumeLs(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "quiet", short: "q", kind: "bool" }, { long: "filter", short: "f", kind: "list" }, { long: "format", kind: "string" }], "volume ls");
  const vols = system.listVolumes(ctx.engine(), list(flags.filter));
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
      found.push(system.inspectVolume(ctx.engine(), a));
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
      system.removeVolume(ctx.engine(), a, { force: !!flags.force });
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
  const { deleted: gone, reclaimed: bytes } = system.pruneVolumes(ctx.engine(), { all: !!flags.all });
  if (gone.length) out(`Deleted Volumes:\n${gone.map((g) => g + "\n").join("")}\n`);
  out(`Total reclaimed space: ${humanSize(bytes)}\n`);
  return 0;
}

/** docker diff: A added, C changed, D deleted — from the overlay upper dir. */
export async function diff(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "diff");
  if (args.length !== 1) throw new UsageError(`"diff" requires exactly 1 argument.`, "diff");
  const kinds = ["C", "A", "D"];
  out((await system.changes(ctx.engine(), args[0]!)).map((c) => `${kinds[c.Kind]} ${c.Path}\n`).join(""));
  return 0;
}

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
      const s = system.statsOf(engine, v);
      return {
        Container: flags["no-trunc"] ? v.rec.Id : v.rec.Id.slice(0, 12),
        ID: flags["no-trunc"] ? v.rec.Id : v.rec.Id.slice(0, 12),
        Name: s.name,
        cpuTotal: s.cpuTotalNs,
        CPUPerc: "0.00%",
        MemUsage: `${binSize(s.memoryUsage)} / ${binSize(s.memoryLimit)}`,
        MemPerc: s.memoryLimit ? `${((s.memoryUsage / s.memoryLimit) * 100).toFixed(2)}%` : "0.00%",
        NetIO: `${humanSize(s.netRx)} / ${humanSize(s.netTx)}`,
        BlockIO: `${humanSize(s.blockRead)} / ${humanSize(s.blockWrite)}`,
        PIDs: String(s.pids),
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
  const data = (await system.info(ctx.engine())) as Record<string, string | number> & { MemTotal: number };
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
  const r = await system.systemPrune(ctx.engine(), { all: !!flags.all, volumes: !!flags.volumes });
  for (const what of r.repaired) out(`Repaired: removed ${what}\n`);
  for (const c of r.containers) out(`Deleted Container: ${c}\n`);
  for (const v of r.volumes) out(`Deleted Volume: ${v}\n`);
  for (const d of r.images) out(`Deleted Image: ${d}\n`);
  out(`\nTotal reclaimed space: ${humanSize(r.reclaimed)}\n`);
  return 0;
}

/** berth system repair [--dry-run]: what killed commands left, removed (or listed), one line each. */
export async function systemRepair(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "dry-run", kind: "bool" }], "system repair");
  if (args.length) throw new UsageError(`"system repair" accepts no arguments.`, "system repair");
  const dryRun = !!flags["dry-run"];
  const found = await system.repair(ctx.engine(), { dryRun });
  for (const what of found) out(`${dryRun ? "would remove" : "removed"} ${what}\n`);
  if (!found.length) out("nothing to repair\n");
  return 0;
}

export async function events(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "since", kind: "string" }, { long: "until", kind: "string" }, { long: "filter", short: "f", kind: "list" }, { long: "format", kind: "string" }], "events");
  if (args.length) throw new UsageError(`"events" accepts no arguments.`, "events");
  const format = str(flags.format);
  const { Template } = await import("../template.js");
  const tpl = format && format !== "json" ? new Template(format) : undefined;
  const source = system.events(ctx.engine(), { ...(str(flags.since) ? { since: str(flags.since)! } : {}), ...(str(flags.until) ? { until: str(flags.until)! } : {}), filters: list(flags.filter) });
  for await (const e of source) {
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

/**
 * berth system service [URI]: the Docker Engine API server (src/api), run as a plain Node process
 * with its JIT — a long-running server, not a command started from this CLI's snapshot.
 */
export async function systemService(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "time", short: "t", kind: "int", default: 0 },
      { long: "tlsverify", kind: "bool" },
      { long: "tlscacert", kind: "string" },
      { long: "tlscert", kind: "string" },
      { long: "tlskey", kind: "string" },
      { long: "insecure-loopback", kind: "bool" },
    ],
    "system service",
  );
  if (args.length > 1) throw new UsageError(`"system service" requires at most 1 argument.`, "system service");
  const fs = builtin<typeof import("node:fs")>("node:fs");
  const { spawn } = builtin<typeof import("node:child_process")>("node:child_process");
  const build = buildBinary("berth-monitor").replace(/\/[^/]*$/, "");
  const entry = [`${build}/../dist/berth-api.cjs`, `${build}/../dist/src/api/main.js`].find((p) => fs.existsSync(p));
  if (!entry) throw new BerthError("NotFound", "the API server is not built: run ./install.sh (or npm run build)");
  const pass: string[] = ["--time", String(flags.time ?? 0)];
  if (ctx.engine().root) pass.push("--root", ctx.engine().root);
  if (flags.tlsverify) pass.push("--tlsverify");
  for (const k of ["tlscacert", "tlscert", "tlskey"]) if (str(flags[k])) pass.push(`--${k}`, str(flags[k])!);
  if (flags["insecure-loopback"]) pass.push("--insecure-loopback");
  // socket activation: systemd's listening socket (fd 3) goes to the server
  const activated = !!process.env.LISTEN_FDS && Number(process.env.LISTEN_PID) === process.pid;
  if (activated) process.env.BERTH_SOCKET_FD = "3";
  // one malloc arena: glibc's one per thread (libuv's pool, V8's compiler threads) kept ~4 MB the
  // long-running server had freed (bench/api.ts: RSS after 10,000 requests); its threads rarely contend
  process.env.MALLOC_ARENA_MAX ??= "1";
  // the service takes this process's place (same pid, for systemd and whoever started it): one
  // node process, not this CLI (~40 MB) waiting beside it; a plain Node process with the JIT
  try {
    execv(process.execPath, [process.execPath, entry, ...pass, ...args], activated ? [0, 1, 2, 3] : [0, 1, 2]);
  } catch {
    /* no berth-sys.node: the service as a child */
  }
  const child = spawn(process.execPath, [entry, ...pass, ...args], { stdio: activated ? ["inherit", "inherit", "inherit", 3] : "inherit", env: process.env });
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, () => child.kill(sig));
  return new Promise((resolve) => child.on("exit", (code, sig) => resolve(code ?? 128 + (sig === "SIGKILL" ? 9 : 15))));
}
