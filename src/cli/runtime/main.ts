#!/usr/bin/env node
/**
 * berth-runtime: runc's command line over berth's runtime library. Only argument handling lives
 * here; every verb calls Runtime. Errors print one line on stderr (and a "level":"error" record in
 * the --log file, which containerd and podman read) and exit 1, as runc does.
 */
import { appendFileSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { BerthError, errorMessage } from "../../common/errors.js";
import { parseFlags, type FlagDef, type Parsed } from "../args.js";
import type { Process } from "../../runtime/spec.js";
import type { CreateOptions } from "../../runtime/runtime.js";
import type { LinuxResources } from "../../cgroups/resources.js";

const version = "0.1.0";
const specVersion = "1.2.1";

const globalFlags: FlagDef[] = [
  { names: ["root"], kind: "string" },
  { names: ["log"], kind: "string" },
  { names: ["log-format"], kind: "string" },
  { names: ["debug"], kind: "bool" },
  { names: ["systemd-cgroup"], kind: "bool" },
  { names: ["rootless"], kind: "string" },
  { names: ["criu"], kind: "string" },
  { names: ["help", "h"], kind: "bool" },
  { names: ["version", "v"], kind: "bool" },
];

const createFlags: FlagDef[] = [
  { names: ["bundle", "b"], kind: "string" },
  { names: ["console-socket"], kind: "string" },
  { names: ["pid-file"], kind: "string" },
  { names: ["no-pivot"], kind: "bool" },
  { names: ["no-new-keyring"], kind: "bool" },
  { names: ["preserve-fds"], kind: "int" },
];

const commandFlags: Record<string, FlagDef[]> = {
  create: createFlags,
  run: [...createFlags, { names: ["detach", "d"], kind: "bool" }, { names: ["keep"], kind: "bool" }, { names: ["no-subreaper"], kind: "bool" }],
  start: [],
  state: [],
  kill: [{ names: ["all", "a"], kind: "bool" }],
  delete: [{ names: ["force", "f"], kind: "bool" }],
  list: [{ names: ["format", "f"], kind: "string" }, { names: ["quiet", "q"], kind: "bool" }],
  ps: [{ names: ["format", "f"], kind: "string" }],
  exec: [
    { names: ["console-socket"], kind: "string" },
    { names: ["cwd"], kind: "string" },
    { names: ["env", "e"], kind: "list" },
    { names: ["tty", "t"], kind: "bool" },
    { names: ["user", "u"], kind: "string" },
    { names: ["additional-gids", "g"], kind: "list" },
    { names: ["process", "p"], kind: "string" },
    { names: ["detach", "d"], kind: "bool" },
    { names: ["pid-file"], kind: "string" },
    { names: ["process-label"], kind: "string", unsupported: "SELinux is not available on this host" },
    { names: ["apparmor"], kind: "string", unsupported: "AppArmor is not available on this host" },
    { names: ["no-new-privs"], kind: "bool" },
    { names: ["cap", "c"], kind: "list" },
    { names: ["preserve-fds"], kind: "int" },
    { names: ["cgroup"], kind: "list" },
    { names: ["ignore-paused"], kind: "bool" },
  ],
  spec: [{ names: ["bundle", "b"], kind: "string" }, { names: ["rootless"], kind: "bool" }],
  features: [],
  pause: [],
  resume: [],
  update: [
    { names: ["resources", "r"], kind: "string" },
    { names: ["blkio-weight"], kind: "int" },
    { names: ["cpu-period"], kind: "int" },
    { names: ["cpu-quota"], kind: "int" },
    { names: ["cpu-share"], kind: "int" },
    { names: ["cpu-rt-period"], kind: "int" },
    { names: ["cpu-rt-runtime"], kind: "int" },
    { names: ["cpuset-cpus"], kind: "string" },
    { names: ["cpuset-mems"], kind: "string" },
    { names: ["kernel-memory"], kind: "string" },
    { names: ["kernel-memory-tcp"], kind: "string" },
    { names: ["memory"], kind: "string" },
    { names: ["memory-reservation"], kind: "string" },
    { names: ["memory-swap"], kind: "string" },
    { names: ["pids-limit"], kind: "int" },
    { names: ["l3-cache-schema"], kind: "string", unsupported: "Intel RDT is not supported" },
    { names: ["mem-bw-schema"], kind: "string", unsupported: "Intel RDT is not supported" },
  ],
  events: [{ names: ["stats"], kind: "bool" }, { names: ["interval"], kind: "string" }],
  checkpoint: [],
  restore: [],
};

const usage = `berth-runtime - an OCI runtime (runc's command line)

USAGE: berth-runtime [global options] command [command options] [arguments...]

COMMANDS:
   create    create a container
   start     executes the user defined process in a created container
   run       create and run a container
   state     output the state of a container
   kill      kill sends the specified signal (default: SIGTERM) to the container's init process
   delete    delete any resources held by the container often used with detached container
   list      lists containers started by berth-runtime with the given root
   ps        ps displays the processes running inside a container
   exec      execute new process inside the container
   update    update container resource constraints
   events    display container events such as OOM notifications and cpu, memory, and IO usage statistics
   pause     pause suspends all processes inside the container
   resume    resumes all processes that have been previously paused
   spec      create a new specification file
   features  show the enabled features

GLOBAL OPTIONS:
   --root value        root directory for storage of container state (default: "/run/berth-runtime")
   --log value         set the log file to write berth-runtime logs to (default is stderr)
   --log-format value  set the log format ('text' (default), or 'json')
   --debug             enable debug logging
   --systemd-cgroup    use systemd cgroups (not supported on hosts without systemd)
`;

let logFile: string | undefined;
let logFormat = "text";

function log(level: "error" | "warning" | "debug", msg: string): void {
  if (!logFile) {
    process.stderr.write(level === "error" ? `${msg}\n` : `${level}: ${msg}\n`);
    return;
  }
  const time = new Date().toISOString();
  const line = logFormat === "json" ? JSON.stringify({ level, msg, time }) : `time="${time}" level=${level} msg=${JSON.stringify(msg)}`;
  try {
    appendFileSync(logFile, line + "\n");
  } catch {
    // the log is best effort; stderr still carries errors
  }
  if (level === "error") process.stderr.write(`${msg}\n`);
}

function needId(p: Parsed, cmd: string): string {
  const id = p.args[0];
  if (!id) throw new BerthError("InvalidArgument", `"${cmd}" requires a container id (usage: berth-runtime ${cmd} [options] <container-id>)`);
  return id;
}

function exactArgs(p: Parsed, cmd: string, n: number): void {
  if (p.args.length !== n) throw new BerthError("InvalidArgument", `"${cmd}" requires exactly ${n} argument(s)`);
}

/** A tab-aligned table like Go's tabwriter(minwidth 12, padding 3), as runc prints. */
function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.slice(0, -1).forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, Math.max(12, c.length + 3))));
  return rows.map((r) => r.map((c, i) => (i < r.length - 1 ? c.padEnd(widths[i]!) : c)).join("")).join("\n") + "\n";
}

function execProcess(p: Parsed, spec: { process?: Process } | undefined, validate: (p: Record<string, unknown>, field: string) => Process): Process {
  const f = p.flags;
  let proc: Process;
  if (f.process) {
    let json: Record<string, unknown>;
    try {
      json = JSON.parse(readFileSync(f.process as string, "utf8"));
    } catch (err) {
      throw new BerthError("InvalidArgument", `--process ${f.process}: ${errorMessage(err)}`);
    }
    // a process.json without a user runs as root (uid and gid 0), as runc takes it
    if (json && typeof json === "object" && json.user === undefined) json.user = { uid: 0, gid: 0 };
    proc = validate(json, "process.json");
  } else {
    const base = spec?.process;
    const args = p.args.slice(1);
    if (!args.length) throw new BerthError("InvalidArgument", "exec: process args cannot be empty (give a command after the container id, or --process)");
    proc = {
      terminal: false,
      user: { uid: base?.user.uid ?? 0, gid: base?.user.gid ?? 0, additionalGids: base?.user.additionalGids, umask: base?.user.umask },
      args,
      env: [...(base?.env ?? [])],
      cwd: base?.cwd ?? "/",
      capabilities: base?.capabilities ? JSON.parse(JSON.stringify(base.capabilities)) : undefined,
      noNewPrivileges: base?.noNewPrivileges,
      rlimits: base?.rlimits,
    };
  }
  if (f.tty) proc.terminal = true;
  if (f.cwd) proc.cwd = f.cwd as string;
  for (const e of (f.env as string[] | undefined) ?? []) {
    const key = e.split("=")[0] + "=";
    proc.env = [...(proc.env ?? []).filter((x) => !x.startsWith(key)), e];
  }
  if (f.user) {
    const [u, g] = (f.user as string).split(":");
    if (!/^\d+$/.test(u!) || (g !== undefined && !/^\d+$/.test(g))) throw new BerthError("InvalidArgument", `exec --user ${f.user}: use uid[:gid] (numbers)`);
    proc.user = { ...proc.user, uid: Number(u), gid: g !== undefined ? Number(g) : proc.user.gid };
  }
  if (f["additional-gids"]) proc.user.additionalGids = (f["additional-gids"] as string[]).map(Number);
  if (f["no-new-privs"]) proc.noNewPrivileges = true;
  for (const c of (f.cap as string[] | undefined) ?? []) {
    const caps = (proc.capabilities ??= {});
    for (const set of ["bounding", "effective", "permitted", "ambient"] as const) caps[set] = [...(caps[set] ?? []), c];
  }
  return proc;
}

/** Byte sizes as runc's update takes them: "1024", "512k", "100m", "1g"; -1 is unlimited. */
function parseBytes(v: string, flag: string): number {
  const m = /^(-1|\d+)([kmgt]?)b?$/i.exec(v.trim());
  if (!m) throw new BerthError("InvalidArgument", `invalid value for --${flag}: ${v} (use e.g. 512m, 1g, or -1)`);
  const n = Number(m[1]);
  return n < 0 ? -1 : n * 1024 ** " kmgt".indexOf((m[2] || " ").toLowerCase());
}

/** Go-style durations for --interval: "5s", "500ms", "1m". */
function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v);
  if (!m) throw new BerthError("InvalidArgument", `invalid duration for --interval: ${v} (use e.g. 5s or 500ms)`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "ms" | "s" | "m" | "h"];
}

function updateResources(f: Parsed["flags"]): LinuxResources {
  let r: LinuxResources = {};
  if (f.resources) {
    const text = f.resources === "-" ? readFileSync(0, "utf8") : readFileSync(f.resources as string, "utf8");
    try {
      r = JSON.parse(text);
    } catch (err) {
      throw new BerthError("InvalidArgument", `--resources: not valid JSON: ${errorMessage(err)}`);
    }
  }
  const mem = (r.memory ??= {});
  const cpu = (r.cpu ??= {});
  if (f.memory !== undefined) mem.limit = parseBytes(f.memory as string, "memory");
  if (f["memory-swap"] !== undefined) mem.swap = parseBytes(f["memory-swap"] as string, "memory-swap");
  if (f["memory-reservation"] !== undefined) mem.reservation = parseBytes(f["memory-reservation"] as string, "memory-reservation");
  if (f["kernel-memory"] !== undefined) mem.kernel = parseBytes(f["kernel-memory"] as string, "kernel-memory");
  if (f["kernel-memory-tcp"] !== undefined) mem.kernelTCP = parseBytes(f["kernel-memory-tcp"] as string, "kernel-memory-tcp");
  if (f["cpu-share"] !== undefined) cpu.shares = f["cpu-share"] as number;
  if (f["cpu-quota"] !== undefined) cpu.quota = f["cpu-quota"] as number;
  if (f["cpu-period"] !== undefined) cpu.period = f["cpu-period"] as number;
  if (f["cpu-rt-period"] !== undefined) cpu.realtimePeriod = f["cpu-rt-period"] as number;
  if (f["cpu-rt-runtime"] !== undefined) cpu.realtimeRuntime = f["cpu-rt-runtime"] as number;
  if (f["cpuset-cpus"] !== undefined) cpu.cpus = f["cpuset-cpus"] as string;
  if (f["cpuset-mems"] !== undefined) cpu.mems = f["cpuset-mems"] as string;
  if (f["pids-limit"] !== undefined) r.pids = { limit: f["pids-limit"] as number };
  if (f["blkio-weight"] !== undefined) r.blockIO = { ...(r.blockIO ?? {}), weight: f["blkio-weight"] as number };
  return r;
}

function createOptions(f: Parsed["flags"]): CreateOptions {
  return {
    bundle: (f.bundle as string | undefined) ?? ".",
    pidFile: f["pid-file"] as string | undefined,
    consoleSocket: f["console-socket"] as string | undefined,
    noPivot: !!f["no-pivot"],
    noNewKeyring: !!f["no-new-keyring"],
    preserveFds: (f["preserve-fds"] as number | undefined) ?? 0,
    // in a warm process: the client becomes the helper (the container is the caller's descendant)
    inClient: !!globalThis.berthExecInClient,
  };
}

async function main(argv: string[]): Promise<number> {
  const g = parseFlags(argv, globalFlags);
  logFile = g.flags.log as string | undefined;
  logFormat = (g.flags["log-format"] as string | undefined) ?? "text";
  if (!["text", "json"].includes(logFormat)) throw new BerthError("InvalidArgument", `invalid log-format: ${logFormat}`);
  if (g.flags.version) {
    process.stdout.write(`berth-runtime version ${version}\nspec: ${specVersion}\n`);
    return 0;
  }
  const [cmd, ...rest] = g.args;
  if (!cmd || g.flags.help || cmd === "help") {
    process.stdout.write(usage);
    return 0;
  }
  const defs = commandFlags[cmd];
  if (!defs) throw new BerthError("InvalidArgument", `No help topic for '${cmd}'`);
  if (g.flags["systemd-cgroup"]) throw new BerthError("Unsupported", "--systemd-cgroup is not supported: this host has no systemd; berth manages cgroupfs directly");
  // as runc: flags may follow the container id, except where a command line follows it (exec, ps)
  const p = parseFlags(rest, defs, { interspersed: !["exec", "ps"].includes(cmd) });

  if (cmd === "spec") {
    const { defaultSpec } = await import("../../runtime/spec.js");
    const dir = (p.flags.bundle as string | undefined) ?? ".";
    const path = `${dir}/config.json`;
    if (existsSync(path)) throw new BerthError("AlreadyExists", "File config.json exists. Remove it first");
    writeFileSync(path, JSON.stringify(defaultSpec({ rootless: !!p.flags.rootless }), null, "\t"));
    return 0;
  }
  if (cmd === "features") {
    const { features } = await import("../../runtime/features.js");
    process.stdout.write(JSON.stringify(features(), null, "    ") + "\n");
    return 0;
  }
  if (cmd === "checkpoint" || cmd === "restore") throw new BerthError("Unsupported", `${cmd} is not supported by berth-runtime (no CRIU integration)`);

  const { Runtime } = await import("../../runtime/runtime.js");
  const rt = new Runtime({
    root: g.flags.root as string | undefined,
    warn: (m) => log("warning", m),
    debug: g.flags.debug ? (m) => log("debug", m) : undefined,
  });
  const f = p.flags;
  switch (cmd) {
    case "create": {
      const id = needId(p, cmd);
      exactArgs(p, cmd, 1);
      await rt.create(id, createOptions(f));
      return 0;
    }
    case "run": {
      const id = needId(p, cmd);
      exactArgs(p, cmd, 1);
      return rt.run(id, {
        ...createOptions(f),
        detach: !!f.detach,
        keep: !!f.keep,
      });
    }
    case "start":
      exactArgs(p, cmd, 1);
      await rt.start(needId(p, cmd));
      return 0;
    case "state":
      exactArgs(p, cmd, 1);
      process.stdout.write(JSON.stringify(rt.state(needId(p, cmd)), null, "  ") + "\n");
      return 0;
    case "kill": {
      const id = needId(p, cmd);
      if (p.args.length > 2) throw new BerthError("InvalidArgument", `"kill" requires a container id and at most one signal`);
      rt.kill(id, p.args[1] ?? "SIGTERM", { all: !!f.all });
      return 0;
    }
    case "delete":
      exactArgs(p, cmd, 1);
      await rt.delete(needId(p, cmd), { force: !!f.force });
      return 0;
    case "list": {
      const states = rt.list();
      const format = (f.format as string | undefined) ?? "table";
      if (f.quiet) process.stdout.write(states.map((s) => s.id + "\n").join(""));
      else if (format === "json") process.stdout.write(JSON.stringify(states.map(({ annotations: _a, ...s }) => s)) + "\n");
      else if (format === "table")
        process.stdout.write(table([["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"], ...states.map((s) => [s.id, String(s.pid), s.status, s.bundle, s.created, s.owner])]));
      else throw new BerthError("InvalidArgument", `invalid format option: ${format}`);
      return 0;
    }
    case "ps": {
      const id = needId(p, cmd);
      const pids = rt.pids(id);
      const format = (f.format as string | undefined) ?? "table";
      if (format === "json") {
        if (p.args.length > 1) throw new BerthError("InvalidArgument", "ps options cannot be used with --format json");
        process.stdout.write(JSON.stringify(pids) + "\n");
        return 0;
      }
      if (format !== "table") throw new BerthError("InvalidArgument", `invalid format option: ${format}`);
      const psArgs = p.args.length > 1 ? p.args.slice(1) : ["-ef"];
      const out = spawnSync("ps", psArgs, { encoding: "utf8" });
      if (out.status !== 0) throw new BerthError("System", `ps ${psArgs.join(" ")}: ${out.stderr.trim() || out.error?.message}`);
      const lines = out.stdout.split("\n");
      const col = lines[0]!.trim().split(/\s+/).indexOf("PID");
      if (col < 0) throw new BerthError("System", "couldn't find PID field in ps output");
      const want = new Set(pids.map(String));
      process.stdout.write(lines[0] + "\n" + lines.slice(1).filter((l) => want.has(l.trim().split(/\s+/)[col]!)).map((l) => l + "\n").join(""));
      return 0;
    }
    case "exec": {
      const id = needId(p, cmd);
      /** runc's --cgroup values: `path` (every hierarchy) or `controller[,controller]:path`. */
      const cgroupSubs = (values: string[]): Record<string, string> => {
        const out: Record<string, string> = {};
        for (const v of values) {
          const i = v.indexOf(":");
          if (i < 0) out[""] = v;
          else for (const c of v.slice(0, i).split(",")) out[c] = v.slice(i + 1);
        }
        return out;
      };
      const { validateProcess } = await import("../../runtime/spec.js");
      // as runc: exec's own failures exit 255, so a caller tells them from the process's exit code
      try {
        const proc = execProcess(p, rt.store.read(id).spec, validateProcess);
        const r = await rt.exec(id, proc, {
          consoleSocket: f["console-socket"] as string | undefined,
          pidFile: f["pid-file"] as string | undefined,
          detach: !!f.detach,
          preserveFds: (f["preserve-fds"] as number | undefined) ?? 0,
          ignorePaused: !!f["ignore-paused"],
          ...(((f.cgroup as string[] | undefined) ?? []).length ? { cgroupSub: cgroupSubs(f.cgroup as string[]) } : {}),
        });
        return r.exitCode ?? 0;
      } catch (err) {
        log("error", `exec failed: ${err instanceof BerthError ? err.message : errorMessage(err)}`);
        return 255;
      }
    }
    case "update": {
      exactArgs(p, cmd, 1);
      for (const w of rt.update(needId(p, cmd), updateResources(f))) log("warning", w);
      return 0;
    }
    case "events": {
      exactArgs(p, cmd, 1);
      const id = needId(p, cmd);
      if (f.stats) {
        process.stdout.write(JSON.stringify({ type: "stats", id, data: rt.stats(id) }) + "\n");
        return 0;
      }
      const intervalMs = parseDuration((f.interval as string | undefined) ?? "5s");
      await rt.events(id, (e) => process.stdout.write(JSON.stringify(e) + "\n"), { intervalMs });
      return 0;
    }
    case "pause":
      exactArgs(p, cmd, 1);
      rt.pause(needId(p, cmd));
      return 0;
    case "resume":
      exactArgs(p, cmd, 1);
      rt.resume(needId(p, cmd));
      return 0;
  }
  return 0;
}

function runMain(argv: string[], end: (code: number) => void = (code) => (process.exitCode = code)): void {
  main(argv).then(end, (err) => {
    log("error", err instanceof BerthError ? err.message : errorMessage(err));
    if (process.env.BERTH_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    end(1);
  });
}


/**
 * What a warm process may run for its client: not the commands that start a container's process
 * (create, run, exec) or CRIU. Engines rely on those processes being the runtime's descendants —
 * containerd's shim and conmon are subreapers that inherit the container's init when the runtime
 * exits — and a warm process is not its caller's child: those the client runs itself.
 */
function takesWarm(argv: string[]): boolean {
  try {
    const cmd = parseFlags(argv, globalFlags, { interspersed: false }).args[0];
    // create and run: the client becomes the container's helper (CreateOptions.inClient); exec and
    // CRIU's commands start processes the caller must be the parent of, and are not handed over
    return !["exec", "checkpoint", "restore"].includes(cmd ?? "");
  } catch {
    return true; // the usage error is the same wherever it is said
  }
}

declare global {
  /** Set by scripts/warm-spare.cjs: this process is a warm one of `berth system warm --runtime`. */
  var berthRuntimeWarmFd: number | undefined;
}

// A warm process loads the runtime (and its own part) before it waits; a cold command loads none
// of it at start. It ends as soon as its command is done, output flushed (exitNow reports the
// status to the client), not when its event loop has drained.
if (globalThis.berthRuntimeWarmFd !== undefined)
  void Promise.all([import("../warm-spare.js"), import("../../common/sys.js"), import("../../runtime/runtime.js"), import("../../runtime/helper.js")]).then(([{ warmSpare }, { exitNow }, , { helperExecutable }]) => {
    helperExecutable(); // the helper's sealed copy made while waiting, not at the command's create
    const end = (code: number) => void process.stdout.write("", () => process.stderr.write("", () => exitNow(code)));
    warmSpare(globalThis.berthRuntimeWarmFd!, (argv) => runMain(argv, end), takesWarm, "berth-runtime");
  });
else runMain(process.argv.slice(2));
