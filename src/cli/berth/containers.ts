/** berth's container commands, with docker's flags, output and exit codes. */
import { trace } from "../../common/trace.js";
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { basename, dirname } from "node:path";
import { BerthError, ErrorCode, fsCause, invalid } from "../../common/errors.js";
import {
  archiveHostPath,
  containerInspect,
  containerSummary,
  defaultContainerConfig,
  defaultHostConfig,
  demuxAttach,
  detachBytes,
  detachWatcher,
  extractToHost,
  images,
  parsePublish,
  parseReference,
  parseSize,
  parseUlimit,
  readLogs,
  seccompFromProfile,
  system,
  type CreateRequest,
} from "../../engine/index.js";
import { list, parse, str, UsageError, type Flag, type FlagValues } from "../pflag.js";
import { printInspect } from "./images.js";
import { ago, humanDuration, humanSize, render } from "./output.js";
import { ProgressView } from "./progress.js";
import type { Context } from "./context.js";

const out = (s: string) => process.stdout.write(s);

/** An error in `run`/`create`/`exec` that is berth's own: docker exits 125 for these. */
export class RunError extends BerthError {
  constructor(readonly cause: BerthError) {
    super(cause.kind, cause.message, { code: ErrorCode.RUN_FAILED, ...(cause.hint ? { hint: cause.hint } : {}) });
    this.name = "RunError";
  }
}

/** The resource flags `run`, `create` and `update` share. */
export const resourceFlags: Flag[] = [
  { long: "memory", short: "m", kind: "string" },
  { long: "memory-swap", kind: "string" },
  { long: "memory-reservation", kind: "string" },
  { long: "cpus", kind: "string" },
  { long: "cpu-shares", short: "c", kind: "int" },
  { long: "cpu-quota", kind: "int" },
  { long: "cpu-period", kind: "int" },
  { long: "cpuset-cpus", kind: "string" },
  { long: "cpuset-mems", kind: "string" },
  { long: "pids-limit", kind: "int" },
  { long: "blkio-weight", kind: "int" },
];

/** Set the HostConfig fields of the resource flags given (the others keep their values). */
export function applyResourceFlags(flags: FlagValues, hc: CreateRequest["HostConfig"], command: string): void {
  if (str(flags.memory) !== undefined) hc.Memory = size(str(flags.memory), "memory", command, "m");
  if (str(flags["memory-swap"]) !== undefined) hc.MemorySwap = size(str(flags["memory-swap"]), "memory-swap", command);
  if (str(flags["memory-reservation"]) !== undefined) hc.MemoryReservation = size(str(flags["memory-reservation"]), "memory-reservation", command);
  if (str(flags.cpus)) {
    const n = Number(str(flags.cpus));
    if (!Number.isFinite(n) || n < 0) throw new UsageError(`invalid argument "${str(flags.cpus)}" for "--cpus" flag: failed to parse ${str(flags.cpus)} as a rational number`, command);
    hc.NanoCpus = Math.round(n * 1e9);
  }
  if (typeof flags["cpu-shares"] === "number") hc.CpuShares = flags["cpu-shares"];
  if (typeof flags["cpu-quota"] === "number") hc.CpuQuota = flags["cpu-quota"];
  if (typeof flags["cpu-period"] === "number") hc.CpuPeriod = flags["cpu-period"];
  if (str(flags["cpuset-cpus"]) !== undefined) hc.CpusetCpus = str(flags["cpuset-cpus"])!;
  if (str(flags["cpuset-mems"]) !== undefined) hc.CpusetMems = str(flags["cpuset-mems"])!;
  if (typeof flags["pids-limit"] === "number") hc.PidsLimit = flags["pids-limit"];
  if (typeof flags["blkio-weight"] === "number") hc.BlkioWeight = flags["blkio-weight"];
}

const runFlags: Flag[] = [
  { long: "detach", short: "d", kind: "bool" },
  { long: "interactive", short: "i", kind: "bool" },
  { long: "tty", short: "t", kind: "bool" },
  { long: "rm", kind: "bool" },
  { long: "name", kind: "string" },
  { long: "env", short: "e", kind: "list" },
  { long: "env-file", kind: "list" },
  { long: "volume", short: "v", kind: "list" },
  { long: "mount", kind: "list" },
  { long: "tmpfs", kind: "list" },
  { long: "workdir", short: "w", kind: "string" },
  { long: "user", short: "u", kind: "string" },
  { long: "hostname", short: "h", kind: "string" },
  { long: "entrypoint", kind: "string" },
  { long: "init", kind: "bool" },
  { long: "restart", kind: "string" },
  ...resourceFlags,
  { long: "memory-swappiness", kind: "int" },
  { long: "oom-kill-disable", kind: "bool" },
  { long: "device", kind: "list" },
  { long: "device-cgroup-rule", kind: "list" },
  { long: "blkio-weight-device", kind: "list" },
  { long: "device-read-bps", kind: "list" },
  { long: "device-write-bps", kind: "list" },
  { long: "device-read-iops", kind: "list" },
  { long: "device-write-iops", kind: "list" },
  { long: "shm-size", kind: "string" },
  { long: "read-only", kind: "bool" },
  { long: "cap-add", kind: "list" },
  { long: "cap-drop", kind: "list" },
  { long: "privileged", kind: "bool" },
  { long: "security-opt", kind: "list" },
  { long: "ulimit", kind: "list" },
  { long: "pid", kind: "string" },
  { long: "ipc", kind: "string" },
  { long: "uts", kind: "string" },
  { long: "userns", kind: "string" },
  { long: "label", short: "l", kind: "list" },
  { long: "stop-signal", kind: "string" },
  { long: "stop-timeout", kind: "int" },
  { long: "health-cmd", kind: "string" },
  { long: "health-interval", kind: "string" },
  { long: "health-retries", kind: "int" },
  { long: "health-timeout", kind: "string" },
  { long: "health-start-period", kind: "string" },
  { long: "no-healthcheck", kind: "bool" },
  { long: "restart-on-unhealthy", kind: "bool" },
  { long: "log-driver", kind: "string" },
  { long: "log-opt", kind: "list" },
  { long: "pull", kind: "string" },
  { long: "platform", kind: "string" },
  { long: "network", kind: "string" },
  { long: "net", kind: "string", hidden: true },
  { long: "publish", short: "p", kind: "list" },
  { long: "publish-all", short: "P", kind: "bool" },
  { long: "expose", kind: "list" },
  { long: "network-alias", kind: "list" },
  { long: "net-alias", kind: "list", hidden: true },
  { long: "ip", kind: "string" },
  { long: "ip6", kind: "string" },
  { long: "link-local-ip", kind: "list" },
  { long: "mac-address", kind: "string" },
  { long: "dns", kind: "list" },
  { long: "dns-search", kind: "list" },
  { long: "dns-option", kind: "list" },
  { long: "add-host", kind: "list" },
  { long: "link", kind: "list" },
  { long: "sig-proxy", kind: "bool", default: true },
  { long: "quiet", short: "q", kind: "bool" },
  { long: "domainname", kind: "string" },
  { long: "group-add", kind: "list" },
];

/** docker's duration strings: 300ms, 1.5s, 2m, 1h30m. */
export function parseDuration(s: string, flag: string): number {
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g;
  let ms = 0,
    seen = "";
  for (const m of s.matchAll(re)) {
    ms += Number(m[1]) * { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s"];
    seen += m[0];
  }
  if (!s || seen !== s) throw new UsageError(`invalid argument "${s}" for "--${flag}" flag: time: invalid duration "${s}"`, "run");
  return ms;
}

function size(v: string | undefined, flag: string, command: string, short?: string): number {
  if (v === undefined) return 0;
  if (v === "-1") return -1;
  let n: number;
  try {
    n = parseSize(v);
  } catch {
    // any size error is docker's one message for the flag
    throw new UsageError(`invalid argument "${v}" for "${short ? `-${short}, ` : ""}--${flag}" flag: invalid size: '${v}'`, command);
  }
  // a cgroup limit is an int64
  if (n > 9223372036854775807) throw new UsageError(`invalid argument "${v}" for "${short ? `-${short}, ` : ""}--${flag}" flag: ${v} is more than the largest limit (8 EiB; -1 for none)`, command);
  return n;
}

/** docker's -e NAME: the caller's value of NAME where it has one, else NAME as given. */
function withCallerValues(envs: string[]): string[] {
  return envs.map((e) => (e.includes("=") ? e : process.env[e] !== undefined ? `${e}=${process.env[e]}` : e));
}

function envFiles(files: string[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = fs.readFileSync(f, "utf8");
    } catch (e) {
      throw invalid(`open ${f}: ${fsCause(e)}`);
    }
    for (const line of text.split("\n")) {
      const l = line.trim();
      if (!l || l.startsWith("#")) continue;
      out.push(l.includes("=") ? l : process.env[l] !== undefined ? `${l}=${process.env[l]}` : l);
    }
  }
  return out;
}

/** Flags → the Docker API's create request, as the docker CLI builds it. */
export function createRequest(flags: FlagValues, args: string[]): CreateRequest {
  const [image, ...cmd] = args;
  if (!image) throw new UsageError(`"run" requires at least 1 argument.`, "run");
  parseReference(image);
  const c = defaultContainerConfig(image);
  const hc = defaultHostConfig();
  const mode = str(flags.network) ?? str(flags.net);
  if (mode) hc.NetworkMode = mode;
  let networking: CreateRequest["NetworkingConfig"];
  for (const p of list(flags.publish))
    for (const b of parsePublish(p)) (hc.PortBindings ??= {})[b.key] = [...(hc.PortBindings?.[b.key] ?? []), { HostIp: b.HostIp, HostPort: b.HostPort }];
  if (flags["publish-all"]) hc.PublishAllPorts = true;
  for (const e of list(flags.expose))
    for (const b of parsePublish(e)) c.ExposedPorts = { ...(c.ExposedPorts ?? {}), [b.key]: {} };
  if (list(flags.dns).length) hc.Dns = list(flags.dns);
  if (list(flags["dns-search"]).length) hc.DnsSearch = list(flags["dns-search"]);
  if (list(flags["dns-option"]).length) hc.DnsOptions = list(flags["dns-option"]);
  if (list(flags["add-host"]).length) hc.ExtraHosts = list(flags["add-host"]).map((h) => h.replace("=", ":"));
  if (list(flags.link).length) hc.Links = list(flags.link);
  const aliases = [...list(flags["network-alias"]), ...list(flags["net-alias"])];
  const ip = str(flags.ip);
  const ip6 = str(flags.ip6);
  const mac = str(flags["mac-address"]);
  const linkLocal = list(flags["link-local-ip"]);
  if (aliases.length || ip || ip6 || mac || linkLocal.length) {
    if (aliases.length && (!mode || mode === "bridge" || mode === "default")) throw invalid("network-scoped aliases are only supported for user-defined networks");
    const net = mode && !["host", "none"].includes(mode) && !mode.startsWith("container:") ? mode : "bridge";
    if (mac && !/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(mac)) throw invalid(`invalid MAC address: ${mac}`);
    const ipam = { ...(ip ? { IPv4Address: ip } : {}), ...(ip6 ? { IPv6Address: ip6 } : {}), ...(linkLocal.length ? { LinkLocalIPs: linkLocal } : {}) };
    networking = { EndpointsConfig: { [net]: { Aliases: aliases, ...(Object.keys(ipam).length ? { IPAMConfig: ipam } : {}), ...(mac ? { MacAddress: mac } : {}) } } };
  }
  c.Tty = !!flags.tty;
  if (c.Tty && process.stdout.isTTY) hc.ConsoleSize = [process.stdout.rows || 24, process.stdout.columns || 80];
  c.OpenStdin = !!flags.interactive;
  c.AttachStdin = !!flags.interactive && !flags.detach;
  c.StdinOnce = c.AttachStdin;
  c.AttachStdout = c.AttachStderr = !flags.detach;
  c.Env = [...envFiles(list(flags["env-file"])), ...withCallerValues(list(flags.env))];
  if (cmd.length) c.Cmd = cmd;
  if (str(flags.entrypoint) !== undefined) c.Entrypoint = str(flags.entrypoint) ? [str(flags.entrypoint)!] : [];
  c.WorkingDir = str(flags.workdir) ?? "";
  if (c.WorkingDir && !c.WorkingDir.startsWith("/")) throw invalid(`the working directory '${c.WorkingDir}' is invalid, it needs to be an absolute path`);
  c.User = str(flags.user) ?? "";
  c.Hostname = str(flags.hostname) ?? "";
  c.Domainname = str(flags.domainname) ?? "";
  c.Labels = Object.fromEntries(list(flags.label).map((l) => [l.split("=")[0]!, l.includes("=") ? l.slice(l.indexOf("=") + 1) : ""]));
  if (str(flags["stop-signal"])) c.StopSignal = str(flags["stop-signal"]);
  if (typeof flags["stop-timeout"] === "number") c.StopTimeout = flags["stop-timeout"];
  if (flags["no-healthcheck"]) c.Healthcheck = { Test: ["NONE"] };
  else if (str(flags["health-cmd"])) {
    c.Healthcheck = {
      Test: ["CMD-SHELL", str(flags["health-cmd"])!],
      ...(str(flags["health-interval"]) ? { Interval: parseDuration(str(flags["health-interval"])!, "health-interval") * 1e6 } : {}),
      ...(str(flags["health-timeout"]) ? { Timeout: parseDuration(str(flags["health-timeout"])!, "health-timeout") * 1e6 } : {}),
      ...(str(flags["health-start-period"]) ? { StartPeriod: parseDuration(str(flags["health-start-period"])!, "health-start-period") * 1e6 } : {}),
      ...(typeof flags["health-retries"] === "number" ? { Retries: flags["health-retries"] } : {}),
    };
  }
  hc.RestartOnUnhealthy = !!flags["restart-on-unhealthy"];
  hc.AutoRemove = !!flags.rm;
  const restart = str(flags.restart) ?? "no";
  const [rname, rcount] = restart.split(":");
  if (!["no", "always", "unless-stopped", "on-failure"].includes(rname!)) throw invalid(`invalid restart policy '${rname}'`);
  if (rcount !== undefined && (rname !== "on-failure" || !/^\d+$/.test(rcount))) throw invalid(`invalid restart policy format: ${restart}`);
  hc.RestartPolicy = { Name: rname as "no", MaximumRetryCount: Number(rcount ?? 0) };
  hc.Binds = list(flags.volume).length ? list(flags.volume) : null;
  hc.Mounts = list(flags.mount).map((m) => {
    const kv = Object.fromEntries(m.split(",").map((p) => [p.split("=")[0]!, p.includes("=") ? p.slice(p.indexOf("=") + 1) : "true"]));
    const type = (kv.type ?? "volume") as "bind" | "volume" | "tmpfs";
    if (!["bind", "volume", "tmpfs"].includes(type)) throw invalid(`invalid mount type: ${type}`);
    const target = kv.target ?? kv.destination ?? kv.dst;
    if (!target) throw invalid(`invalid argument "${m}" for "--mount" flag: target is required`);
    const known = ["type", "source", "src", "target", "destination", "dst", "readonly", "ro", "consistency", "bind-propagation", "bind-recursive", "bind-nonrecursive", "volume-nocopy", "volume-label", "volume-driver", "volume-opt", "volume-subpath", "tmpfs-size", "tmpfs-mode"];
    for (const k of Object.keys(kv)) if (!known.includes(k)) throw invalid(`invalid argument "${m}" for "--mount" flag: unexpected key '${k}' in '${m.split(",").find((p) => p.split("=")[0] === k)}'`);
    const recursive = kv["bind-recursive"] ?? (kv["bind-nonrecursive"] === "true" ? "disabled" : "enabled");
    if (!["enabled", "disabled", "writable", "readonly"].includes(recursive)) throw invalid(`invalid argument "${m}" for "--mount" flag: invalid value for bind-recursive: ${recursive} (enabled, disabled, writable, readonly)`);
    const propagation = kv["bind-propagation"];
    if (propagation !== undefined && !["private", "rprivate", "shared", "rshared", "slave", "rslave"].includes(propagation)) throw invalid(`invalid argument "${m}" for "--mount" flag: invalid propagation mode: ${propagation}`);
    const bindOptions = type === "bind" && (propagation || recursive !== "enabled") ? { BindOptions: { ...(propagation ? { Propagation: propagation } : {}), ...(recursive === "disabled" ? { NonRecursive: true } : {}), ...(recursive === "writable" ? { ReadOnlyNonRecursive: true } : {}) } } : {};
    return {
      Type: type,
      Target: target,
      ...(kv.source ?? kv.src ? { Source: kv.source ?? kv.src } : {}),
      ReadOnly: kv.readonly === "true" || kv.ro === "true" || kv.readonly === "1",
      ...bindOptions,
      ...(type === "tmpfs" ? { TmpfsOptions: { ...(kv["tmpfs-size"] ? { SizeBytes: parseSize(kv["tmpfs-size"]) } : {}), ...(kv["tmpfs-mode"] ? { Mode: parseInt(kv["tmpfs-mode"], 8) } : {}) } } : {}),
    };
  });
  hc.Tmpfs = Object.fromEntries(list(flags.tmpfs).map((t) => [t.split(":")[0]!, t.includes(":") ? t.slice(t.indexOf(":") + 1) : ""]));
  hc.Init = !!flags.init;
  applyResourceFlags(flags, hc, "run");
  if (typeof flags["memory-swappiness"] === "number") {
    if (flags["memory-swappiness"] < -1 || flags["memory-swappiness"] > 100) throw invalid(`invalid value: ${flags["memory-swappiness"]}, valid memory swappiness range is 0-100`);
    hc.MemorySwappiness = flags["memory-swappiness"];
  }
  hc.OomKillDisable = !!flags["oom-kill-disable"];
  hc.Devices = list(flags.device).map((d) => {
    const [host, ctr, perms] = d.split(":");
    return { PathOnHost: host!, PathInContainer: ctr && !/^[rwm]+$/.test(ctr) ? ctr : host!, CgroupPermissions: perms ?? (ctr && /^[rwm]+$/.test(ctr) ? ctr : "rwm") };
  });
  if (list(flags["device-cgroup-rule"]).length) hc.DeviceCgroupRules = list(flags["device-cgroup-rule"]);
  // PATH:VALUE, as docker's: a weight, a rate in bytes (with docker's units) or in operations
  const perDevice = (flag: string, value: (v: string) => number | undefined) =>
    list(flags[flag]).map((spec) => {
      const i = spec.lastIndexOf(":");
      const v = i > 0 ? value(spec.slice(i + 1)) : undefined;
      if (i <= 0 || !spec.startsWith("/") || v === undefined || !Number.isFinite(v)) throw invalid(`invalid argument "${spec}" for "--${flag}" flag: bad format for ${flag}: ${spec}`);
      return { Path: spec.slice(0, i), value: v };
    });
  const count = (v: string) => (/^\d+$/.test(v) ? Number(v) : undefined);
  const bytes = (v: string) => (/^\d+(\.\d+)?[bkmg]?b?$/i.test(v) ? parseSize(v) : undefined);
  const weights = perDevice("blkio-weight-device", count).map((d) => ({ Path: d.Path, Weight: d.value }));
  if (weights.length) hc.BlkioWeightDevice = weights;
  for (const [flag, field, value] of [["device-read-bps", "BlkioDeviceReadBps", bytes], ["device-write-bps", "BlkioDeviceWriteBps", bytes], ["device-read-iops", "BlkioDeviceReadIOps", count], ["device-write-iops", "BlkioDeviceWriteIOps", count]] as const) {
    const rates = perDevice(flag, value).map((d) => ({ Path: d.Path, Rate: d.value }));
    if (rates.length) hc[field] = rates;
  }
  if (str(flags["shm-size"]) !== undefined) hc.ShmSize = size(str(flags["shm-size"]), "shm-size", "run");
  hc.ReadonlyRootfs = !!flags["read-only"];
  hc.CapAdd = list(flags["cap-add"]).length ? list(flags["cap-add"]) : null;
  hc.CapDrop = list(flags["cap-drop"]).length ? list(flags["cap-drop"]) : null;
  hc.Privileged = !!flags.privileged;
  const sec: string[] = [];
  for (const o of list(flags["security-opt"])) {
    const [k, v] = o.includes("=") ? [o.slice(0, o.indexOf("=")), o.slice(o.indexOf("=") + 1)] : o.split(":");
    if (k === "no-new-privileges") sec.push(`no-new-privileges${v === undefined ? "" : `:${v}`}`);
    else if (k === "seccomp") {
      if (v === "unconfined") sec.push("seccomp=unconfined");
      else {
        // as the docker CLI does: the file's content travels in the request
        let text: string;
        try {
          text = fs.readFileSync(v!, "utf8");
        } catch (e) {
          throw invalid(`opening seccomp profile (${v}) failed: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file or directory" : (e as Error).message}`);
        }
        seccompFromProfile(text, { capabilities: [] }); // bad JSON fails here, before anything is made
        sec.push(`seccomp=${text}`);
      }
    } else if (k === "label" || k === "apparmor") {
      process.stderr.write(`WARNING: --security-opt ${o} accepted but not applied: this host has no ${k === "label" ? "SELinux" : "AppArmor"}\n`);
      sec.push(o);
    } else throw invalid(`invalid --security-opt: ${JSON.stringify(o)}`);
  }
  hc.SecurityOpt = sec.length ? sec : null;
  hc.Ulimits = list(flags.ulimit).length ? list(flags.ulimit).map(parseUlimit) : null;
  hc.PidMode = str(flags.pid) ?? "";
  hc.IpcMode = str(flags.ipc) ?? "private";
  hc.UTSMode = str(flags.uts) ?? "";
  hc.UsernsMode = str(flags.userns) ?? "";
  const driver = str(flags["log-driver"]) ?? "json-file";
  hc.LogConfig = { Type: driver as "json-file", Config: Object.fromEntries(list(flags["log-opt"]).map((o) => [o.split("=")[0]!, o.slice(o.indexOf("=") + 1)])) };
  const pull = str(flags.pull) ?? "missing";
  if (!["always", "missing", "never"].includes(pull)) throw invalid(`invalid pull option: '${pull}': must be one of "always", "missing" or "never"`);
  return { ...(str(flags.name) !== undefined ? { name: str(flags.name)! } : {}), Config: c, HostConfig: hc, pull: pull as "missing", ...(str(flags.platform) ? { platform: str(flags.platform)! } : {}), ...(networking ? { NetworkingConfig: networking } : {}) };
}

/** Pipe the monitor's frames to our stdout/stderr; resolves with the exit code (frame 3). */
/** The container's output to ours; its exit code when the monitor sends one. */
const relay = (sock: import("node:net").Socket): Promise<number | undefined> => demuxAttach(sock, { stdout: (b) => process.stdout.write(b), stderr: (b) => process.stderr.write(b) });

async function createFrom(ctx: Context, flags: FlagValues, args: string[], startNext?: { handlesExit?: boolean }): Promise<string> {
  const engine = ctx.engine();
  const req = createRequest(flags, args);
  const view = new ProgressView(process.stderr);
  let announced = false;
  const r = await engine.create(req, (e) => {
    if (!announced) {
      process.stderr.write(`Unable to find image '${req.Config.Image}' locally\n`);
      announced = true;
    }
    view.update(e);
  }, startNext ? { startNext } : {});
  view.flush();
  return r.Id;
}

/** The container's command cannot run: not found (docker's 127) or not executable (126). */
export class CommandError extends BerthError {
  constructor(
    readonly cause: BerthError,
    code: typeof ErrorCode.COMMAND_NOT_FOUND | typeof ErrorCode.COMMAND_NOT_EXECUTABLE,
  ) {
    super(cause.kind, cause.message, { code });
    this.name = "CommandError";
  }
}

function wrap<T>(p: Promise<T>): Promise<T> {
  return p.catch((e) => {
    if (!(e instanceof BerthError) || e instanceof UsageError) throw e;
    if (/executable file not found|exec: .*no such file or directory/i.test(e.message)) throw new CommandError(e, ErrorCode.COMMAND_NOT_FOUND);
    if (/exec: .*permission denied|exec format error/i.test(e.message)) throw new CommandError(e, ErrorCode.COMMAND_NOT_EXECUTABLE);
    throw new RunError(e);
  });
}

export async function run(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, runFlags, "run", { interspersed: false });
  trace("run: flags parsed");
  const engine = ctx.engine();
  trace("run: engine ready");
  // the start follows at once: create starts the monitor early (attached: it leaves the exit to us)
  const id = await wrap(createFrom(ctx, flags, args, { handlesExit: !flags.detach }));
  trace("run: created");
  // a run that cannot start leaves nothing behind (docker keeps a "Created" container; berth's rule
  // is that bad input leaves no partial state: `create` + `start` keep it, for a look at it)
  if (flags.detach) {
    await wrap(engine.start(id)).catch(async (e) => {
      await engine.remove(id, { force: true }).catch(() => {}); // the start's error is what the user is told; a failed removal leaves a container `rm` still sees
      throw e;
    });
    out(`${id}\n`);
    return 0;
  }
  let sock: import("node:net").Socket | undefined;
  await wrap(
    engine.start(id, {
      beforeStart: async () => {
        sock = await engine.attach(id);
        if (flags.tty && process.stdout.isTTY) await engine.resize(id, process.stdout.rows, process.stdout.columns).catch(() => {}); // the terminal's size is set again on the next resize
      },
      handlesExit: true,
    }),
  ).catch(async (e) => {
    await engine.remove(id, { force: true }).catch(() => {}); // the start's error is what the user is told; a failed removal leaves a container `rm` still sees
    throw e;
  });
  const s = sock!;
  const raw = !!flags.tty && !!flags.interactive && process.stdin.isTTY;
  if (raw) process.stdin.setRawMode(true);
  const onResize = () => void engine.resize(id, process.stdout.rows, process.stdout.columns).catch(() => {}); // the container ended meanwhile: nothing to resize
  if (flags.tty && process.stdout.isTTY) process.stdout.on("resize", onResize);
  if (flags.interactive) process.stdin.pipe(s);
  const forward = (sig: NodeJS.Signals) => engine.kill(id, sig).catch(() => {}); // the container ended meanwhile: nothing to signal
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
  if (flags["sig-proxy"] !== false) for (const sig of signals) process.on(sig, forward);
  trace("run: started, relaying");
  const code = await relay(s);
  trace("run: exit code received");
  if (raw) process.stdin.setRawMode(false);
  process.stdout.off("resize", onResize);
  for (const sig of signals) process.off(sig, forward);
  if (flags.interactive) {
    // (without -i stdin is never touched: making the stream alone has a cost)
    process.stdin.unpipe(s);
    process.stdin.destroy();
  }
  trace("run: stdin closed");
  // record it (and remove it for --rm) now, not when the monitor's command gets to it
  await engine.exited(id, { unpublishInBackground: true });
  return code ?? (await engine.wait(id).catch(() => 255));
}

/** docker ps -s: the container's writable layer, and with the image's size "virtual". */
function containerSize(ctx: Context, id: string, image: string): string {
  const bytes = system.containerSize(ctx.engine(), id);
  const imageBytes = images.findImage(ctx.engine(), image)?.size ?? 0;
  return `${humanSize(bytes)} (virtual ${humanSize(bytes + imageBytes)})`;
}

export async function create(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, runFlags, "create", { interspersed: false });
  out(`${await wrap(createFrom(ctx, flags, args))}\n`);
  return 0;
}

async function eachContainer(ctx: Context, args: string[], cmd: string, fn: (ref: string) => Promise<string | void>): Promise<number> {
  if (!args.length) throw new UsageError(`"${cmd}" requires at least 1 argument.`, cmd);
  let rc = 0;
  for (const a of args) {
    try {
      const shown = await fn(a);
      out(`${shown ?? a}\n`);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  }
  return rc;
}

export async function start(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "attach", short: "a", kind: "bool" }, { long: "interactive", short: "i", kind: "bool" }], "start");
  const engine = ctx.engine();
  if (flags.attach) {
    if (args.length !== 1) throw invalid("you cannot start and attach multiple containers at once");
    const id = engine.containers.resolve(args[0]!);
    let sock: import("node:net").Socket | undefined;
    await engine.start(id, { beforeStart: async () => void (sock = await engine.attach(id)), handlesExit: true });
    if (flags.interactive && sock) process.stdin.pipe(sock);
    const code = sock ? await relay(sock) : undefined;
    await engine.exited(id);
    return code ?? (await engine.wait(id));
  }
  return eachContainer(ctx, args, "start", async (a) => void (await engine.start(a)));
}

export async function stop(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "time", short: "t", kind: "int" }, { long: "signal", short: "s", kind: "string" }], "stop");
  return eachContainer(ctx, args, "stop", (a) => ctx.engine().stop(a, flags.time as number | undefined, str(flags.signal)));
}

export async function restart(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "time", short: "t", kind: "int" }], "restart");
  return eachContainer(ctx, args, "restart", async (a) => {
    await ctx.engine().stop(a, flags.time as number | undefined);
    await ctx.engine().start(a);
  });
}

export async function kill(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "signal", short: "s", kind: "string", default: "KILL" }], "kill");
  return eachContainer(ctx, args, "kill", (a) => ctx.engine().kill(a, str(flags.signal)!));
}

export async function rm(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "force", short: "f", kind: "bool" }, { long: "volumes", short: "v", kind: "bool" }, { long: "link", short: "l", kind: "bool" }], "rm");
  // --link: the arguments are links (/parent/alias) to remove, not containers
  if (flags.link) return eachContainer(ctx, args, "rm", async (a) => void (await ctx.engine().removeLink(a)));
  return eachContainer(ctx, args, "rm", async (a) => void (await ctx.engine().remove(a, { force: !!flags.force, volumes: !!flags.volumes })));
}

export async function ps(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "all", short: "a", kind: "bool" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "no-trunc", kind: "bool" },
      { long: "filter", short: "f", kind: "list" },
      { long: "format", kind: "string" },
      { long: "size", short: "s", kind: "bool" },
      { long: "last", short: "n", kind: "int" },
      { long: "latest", short: "l", kind: "bool" },
    ],
    "ps",
  );
  if (args.length) throw new UsageError(`"ps" accepts no arguments.`, "ps");
  const filters = list(flags.filter);
  const all = !!flags.all || typeof flags.last === "number" || !!flags.latest;
  let views = await system.listContainers(ctx.engine(), { all, filters });
  if (typeof flags.last === "number" && flags.last >= 0) views = views.slice(0, flags.last);
  if (flags.latest) views = views.slice(0, 1);
  const noTrunc = !!flags["no-trunc"];
  const rows = views.map((v) => {
    const s = containerSummary(v, ago, humanDuration);
    const cmd = JSON.parse(s.Command) as string;
    const size = flags.size ? containerSize(ctx, v.rec.Id, v.rec.Image) : undefined;
    return { ...s, ID: noTrunc ? s.ID : s.ID.slice(0, 12), Command: noTrunc || cmd.length <= 20 ? JSON.stringify(cmd) : JSON.stringify(cmd.slice(0, 19) + "…"), ...(size ? { Size: size } : {}) };
  });
  out(
    render(
      rows,
      str(flags.format),
      [
        ["CONTAINER ID", "ID"],
        ["IMAGE", "Image"],
        ["COMMAND", "Command"],
        ["CREATED", "RunningFor"],
        ["STATUS", "Status"],
        ["PORTS", "Ports"],
        ["NAMES", "Names"],
        ...(flags.size ? [["SIZE", "Size"] as [string, "Size"]] : []),
      ],
      flags.quiet ? (r) => r.ID : undefined,
    ),
  );
  return 0;
}

export async function logs(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "follow", short: "f", kind: "bool" },
      { long: "tail", short: "n", kind: "string", default: "all" },
      { long: "since", kind: "string" },
      { long: "until", kind: "string" },
      { long: "timestamps", short: "t", kind: "bool" },
      { long: "details", kind: "bool" },
    ],
    "logs",
  );
  if (args.length !== 1) throw new UsageError(`"logs" requires exactly 1 argument.`, "logs");
  const engine = ctx.engine();
  const v = await engine.get(args[0]!);
  if (v.rec.HostConfig.LogConfig.Type === "none") throw invalid(`configured logging driver does not support reading`);
  const tail = str(flags.tail)!;
  if (tail !== "all" && !/^\d+$/.test(tail)) throw invalid(`invalid value for --tail: ${tail}`);
  const when = (s: string | undefined, flag: string): bigint | undefined => {
    if (!s) return undefined;
    if (/^\d+(\.\d+)?$/.test(s)) return BigInt(Math.floor(Number(s) * 1e9));
    const rel = /^\d/.test(s) && /[smh]$/.test(s) ? Date.now() - parseDuration(s, flag) : Date.parse(s);
    if (Number.isNaN(rel)) throw invalid(`invalid value for "${flag}": ${s}`);
    return BigInt(rel) * 1_000_000n;
  };
  const maxFiles = Number(v.rec.HostConfig.LogConfig.Config["max-file"] ?? "1") || 1;
  const it = readLogs(v.rec.LogPath, maxFiles, {
    follow: !!flags.follow,
    ...(tail !== "all" ? { tail: Number(tail) } : {}),
    ...(when(str(flags.since), "since") !== undefined ? { sinceNs: when(str(flags.since), "since")! } : {}),
    ...(when(str(flags.until), "until") !== undefined ? { untilNs: when(str(flags.until), "until")! } : {}),
    running: async () => !!(await engine.get(v.rec.Id).catch(() => undefined))?.state.Running,
  });
  for await (const e of it) (e.stream === "stderr" ? process.stderr : process.stdout).write(flags.timestamps ? `${e.time} ${e.line}` : e.line);
  return 0;
}

export async function exec(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "interactive", short: "i", kind: "bool" },
      { long: "tty", short: "t", kind: "bool" },
      { long: "detach", short: "d", kind: "bool" },
      { long: "user", short: "u", kind: "string" },
      { long: "workdir", short: "w", kind: "string" },
      { long: "env", short: "e", kind: "list" },
      { long: "env-file", kind: "list" },
      { long: "privileged", kind: "bool" },
    ],
    "exec",
    { interspersed: false },
  );
  if (args.length < 2) throw new UsageError(`"exec" requires at least 2 arguments.`, "exec");
  const [ref, ...cmd] = args;
  try {
    return await ctx.engine().exec(ref!, cmd, {
      ...(str(flags.user) !== undefined ? { user: str(flags.user)! } : {}),
      ...(str(flags.workdir) ? { workdir: str(flags.workdir)! } : {}),
      env: [...envFiles(list(flags["env-file"])), ...withCallerValues(list(flags.env))],
      tty: !!flags.tty,
      detach: !!flags.detach,
    });
  } catch (e) {
    await wrap(Promise.reject(e));
    return 1;
  }
}

export async function wait(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "wait");
  return eachContainer(ctx, args, "wait", async (a) => String(await ctx.engine().wait(a)));
}

export async function inspect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "format", short: "f", kind: "string" }, { long: "type", kind: "string" }, { long: "size", short: "s", kind: "bool" }], "inspect");
  if (!args.length) throw new UsageError(`"inspect" requires at least 1 argument.`, "inspect");
  const engine = ctx.engine();
  const type = str(flags.type);
  const found: unknown[] = [];
  let rc = 0;
  for (const a of args) {
    let item: unknown;
    if (type !== "image") {
      try {
        item = containerInspect(await engine.get(a), engine.images, engine.root);
      } catch (e) {
        if (!(e instanceof BerthError) || e.kind !== "NotFound") throw e;
      }
    }
    if (!item && (type === undefined || type === "image")) {
      item = images.inspect(engine, a);
    }
    if (!item && (type === undefined || type === "volume") && engine.volumes.has(a)) {
      item = system.inspectVolume(engine, a);
    }
    if (!item && (type === undefined || type === "network")) {
      try {
        const n = engine.network.store.get(a);
        const containers = Object.fromEntries(engine.network.store.endpointsOf(n.Id).map((e) => [e.Container, { Name: engine.containers.read(e.Container)?.rec.Name.slice(1) ?? "", EndpointID: e.EndpointID, MacAddress: e.MacAddress, IPv4Address: `${e.IPAddress}/${e.IPPrefixLen}`, IPv6Address: "" }]));
        item = { ...n, Containers: containers };
      } catch {
        /* not a network */
      }
    }
    if (!item) {
      ctx.error(new BerthError("NotFound", `No such object: ${a}`));
      rc = 1;
      continue;
    }
    found.push(item);
  }
  if (found.length || !str(flags.format)) printInspect(found, str(flags.format));
  return rc;
}

export async function exportCmd(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "output", short: "o", kind: "string" }], "export");
  if (args.length !== 1) throw new UsageError(`"export" requires exactly 1 argument.`, "export");
  const file = str(flags.output);
  if (!file && process.stdout.isTTY) throw invalid("cowardly refusing to save to a terminal. Use the -o flag or redirect");
  const fd = file ? fs.openSync(file, "w", 0o644) : 1;
  try {
    await ctx.engine().exportContainer(args[0]!, async (tar) => {
      for await (const chunk of tar) if (!(await writeAll(fd, chunk))) return; // a reader that went away ends the export quietly
    });
  } finally {
    if (file) fs.closeSync(fd);
  }
  return 0;
}

export async function commit(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "change", short: "c", kind: "list" },
      { long: "message", short: "m", kind: "string" },
      { long: "author", short: "a", kind: "string" },
      { long: "pause", short: "p", kind: "bool", default: true },
    ],
    "commit",
  );
  if (args.length < 1 || args.length > 2) throw new UsageError(`"commit" requires at least 1 and at most 2 arguments.`, "commit");
  const img = await ctx.engine().commit(args[0]!, {
    ...(args[1] ? { reference: args[1] } : {}),
    changes: list(flags.change),
    ...(str(flags.message) ? { message: str(flags.message)! } : {}),
    ...(str(flags.author) ? { author: str(flags.author)! } : {}),
    pause: flags.pause !== false,
  });
  out(`${img.id}\n`);
  return 0;
}

export async function pauseCmd(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "pause");
  return eachContainer(ctx, args, "pause", (a) => ctx.engine().pause(a, true));
}

export async function unpauseCmd(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "unpause");
  return eachContainer(ctx, args, "unpause", (a) => ctx.engine().pause(a, false));
}

export async function top(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "top", { interspersed: false });
  if (!args.length) throw new UsageError(`"top" requires at least 1 argument.`, "top");
  const v = await ctx.engine().get(args[0]!);
  if (!v.state.Running) throw new BerthError("FailedPrecondition", `Container ${v.rec.Id} is not running`);
  const pids = ctx.engine().runtime.pids(v.rec.Id);
  const psArgs = args.length > 1 ? args.slice(1) : ["-ef"];
  const r = spawnSync("ps", psArgs, { encoding: "utf8" });
  const lines = r.stdout.trimEnd().split("\n");
  const header = lines[0] ?? "";
  const pidCol = header.trim().split(/\s+/).indexOf("PID");
  out([header, ...lines.slice(1).filter((l) => pids.includes(Number(l.trim().split(/\s+/)[pidCol])))].join("\n") + "\n");
  return 0;
}

export async function rename(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "rename");
  if (args.length !== 2) throw new UsageError(`"rename" requires exactly 2 arguments.`, "rename");
  await ctx.engine().rename(args[0]!, args[1]!);
  return 0;
}

export async function containerPrune(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "force", short: "f", kind: "bool" }, { long: "filter", kind: "list" }], "container prune");
  if (!flags.force) {
    const { confirm } = await import("./images.js");
    if (!(await confirm("WARNING! This will remove all stopped containers.\nAre you sure you want to continue?"))) return 0;
  }
  const { deleted: gone, reclaimed } = await system.pruneContainers(ctx.engine(), list(flags.filter));
  if (gone.length) out(`Deleted Containers:\n${gone.map((g) => g + "\n").join("")}\n`);
  out(`Total reclaimed space: ${humanSize(reclaimed)}\n`);
  return 0;
}

/** Run by a container's monitor when the container ends. Not a user command. */
export async function internalExited(ctx: Context, argv: string[]): Promise<number> {
  const id = argv[0];
  if (!id) return 125;
  await ctx.engine().exited(id);
  return 0;
}

export async function attach(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "no-stdin", kind: "bool" }, { long: "sig-proxy", kind: "bool", default: true }, { long: "detach-keys", kind: "string", default: "ctrl-p,ctrl-q" }], "attach");
  if (args.length !== 1) throw new UsageError(`"attach" requires exactly 1 argument.`, "attach");
  const engine = ctx.engine();
  const v = await engine.get(args[0]!);
  if (!v.state.Running) throw new BerthError("FailedPrecondition", "You cannot attach to a stopped container, start it first");
  const keys = detachBytes(str(flags["detach-keys"])!);
  const sock = await engine.attach(v.rec.Id);
  const useStdin = !flags["no-stdin"] && v.rec.Config.OpenStdin;
  const raw = useStdin && v.rec.Config.Tty && process.stdin.isTTY;
  if (raw) process.stdin.setRawMode(true);
  let detached = false;
  if (useStdin) {
    process.stdin.on(
      "data",
      detachWatcher(keys, (b) => sock.write(b), () => {
        detached = true;
        sock.destroy();
      }),
    );
  }
  const forward = (sig: NodeJS.Signals) => engine.kill(v.rec.Id, sig).catch(() => {}); // the container ended meanwhile: nothing to signal
  if (flags["sig-proxy"] !== false && !v.rec.Config.Tty) for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, forward);
  const code = await relay(sock);
  if (raw) process.stdin.setRawMode(false);
  process.stdin.destroy();
  if (detached) {
    process.stderr.write("read escape sequence\n");
    return 0;
  }
  return code ?? (await engine.wait(v.rec.Id).catch(() => 0));
}

/**
 * docker cp, both directions. Container paths are resolved as the container would resolve them
 * (symlinks never lead out of its root) and copied through held file descriptors (engine/copy.ts),
 * so a running container that swaps its directories for symlinks meanwhile cannot redirect the
 * copy to the host. Copying in goes through berth's safe extractor, which refuses to write through
 * any symlink in the container's tree.
 */
export async function cp(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "archive", short: "a", kind: "bool" }, { long: "follow-link", short: "L", kind: "bool" }, { long: "quiet", short: "q", kind: "bool" }], "cp");
  if (args.length !== 2) throw new UsageError(`"cp" requires exactly 2 arguments.`, "cp");
  const split = (a: string) => {
    const m = /^([^:/][^:]*):(.*)$/.exec(a);
    return m ? { container: m[1]!, path: m[2]! || "/" } : { path: a };
  };
  const src = split(args[0]!),
    dst = split(args[1]!);
  if (src.container && dst.container) throw invalid("copying between containers is not supported");
  if (!src.container && !dst.container) throw invalid("must specify at least one container source");
  const engine = ctx.engine();
  const followLink = !!flags["follow-link"];
  if (src.container) {
    const notFound = (e: unknown) => {
      if (e instanceof BerthError && e.kind === "NotFound") throw new BerthError("NotFound", `Could not find the file ${src.path} in container ${src.container}`);
      throw e;
    };
    if (dst.path === "-")
      return engine
        .copyFrom(src.container, src.path, { followLink }, async (tar) => {
          for await (const chunk of tar) if (!(await writeAll(1, chunk))) break; // the reader went away: quietly, as docker
          return 0;
        })
        .catch(notFound);
    // SRC/. copies what is in SRC into DEST (made when missing); an existing directory DEST receives
    // the copy under its own name; any other DEST names the copy (docker's rules)
    const contents = /(^|\/)\.$/.test(src.path);
    const destIsDir = fs.existsSync(dst.path) && fs.statSync(dst.path).isDirectory();
    if (contents && !destIsDir) fs.mkdirSync(dst.path, { recursive: true });
    const into = contents || destIsDir ? dst.path : dirname(dst.path);
    if (!fs.existsSync(into)) throw new BerthError("NotFound", `destination directory ${into} does not exist`);
    const rename = contents || destIsDir ? undefined : basename(dst.path);
    // files land owned by whoever runs cp (docker's rule for copies to the host)
    return engine.copyFrom(src.container, src.path, { followLink, ...(rename ? { rename } : {}) }, (tar) => extractToHost(tar, into).then(() => 0)).catch(notFound);
  }
  const keepOwners = !!flags.archive;
  if (src.path === "-") {
    await engine.copyTo(dst.container!, dst.path, process.stdin as AsyncIterable<Buffer>, { keepOwners });
    return 0;
  }
  if (!fs.existsSync(src.path) && !isSymlink(src.path)) throw new BerthError("NotFound", `lstat ${src.path}: no such file or directory`);
  // DEST is a directory in the container: the copy goes in under its own name; otherwise DEST names it
  const at = await engine.statPath(dst.container!, dst.path);
  const destIsDir = !!at && (at.mode & 0x80000000) !== 0;
  const parent = dst.path.replace(/\/+$/, "").replace(/[^/]*$/, "") || "/";
  if (!destIsDir && !(await engine.statPath(dst.container!, parent))) throw new BerthError("NotFound", `Could not find the file ${parent} in container ${dst.container}`);
  const dir = destIsDir ? dst.path : parent;
  const name = destIsDir ? undefined : basename(dst.path);
  await engine.copyTo(dst.container!, dir, archiveHostPath(src.path, name), { keepOwners });
  return 0;
}

const isSymlink = (p: string) => {
  try {
    return fs.lstatSync(p).isSymbolicLink();
  } catch {
    // missing: not a symlink
    return false;
  }
};

/** Writes all of chunk to fd (waiting out EAGAIN on a non-blocking pipe); false when the reader has gone (EPIPE). */
async function writeAll(fd: number, chunk: Buffer): Promise<boolean> {
  let off = 0;
  while (off < chunk.length) {
    try {
      off += fs.writeSync(fd, chunk, off);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EPIPE") return false;
      if (code !== "EAGAIN") throw e;
      await new Promise((r) => setTimeout(r, 5));
    }
  }
  return true;
}

/** Run by a container's monitor every health interval. Not a user command. */
export async function internalHealth(ctx: Context, argv: string[]): Promise<number> {
  if (argv[0]) await ctx.engine().healthCheck(argv[0]);
  return 0;
}
