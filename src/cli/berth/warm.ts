/**
 * Warm processes: `berth system warm` keeps a few Node processes that have started and loaded
 * berth, waiting on a unix socket; the installed `berth` (helper/berth-client.c) hands its command
 * to one of them — arguments, environment, umask, and its stdio and working directory as passed
 * fds — so a command costs no Node start (what BuildKit's and dockerd's clients get from a daemon).
 * Each warm process runs one command, exactly as the CLI would, then exits; the pool starts another.
 * With --runtime the same for berth-runtime (its commands that start no container process).
 * The exchange is in helper/protocol.table (`warm` rows); the warm side is src/cli/warm-spare.ts.
 */
import { builtin } from "../../common/builtin.js";
import { BerthError, ErrorCode } from "../../common/errors.js";
import { listenUnix } from "../../common/sys.js";
import { Warm } from "../../common/warm-protocol.js";
import { parse, UsageError } from "../pflag.js";
import { record } from "../warm-spare.js";
import type { Context } from "./context.js";

type Fs = typeof import("node:fs");
type ChildProcess = import("node:child_process").ChildProcess;
type Socket = import("node:net").Socket;

/** Where berth-client looks (the same rule as its socket_path): berth's, or berth-runtime's. */
export function warmSocketPath(env: NodeJS.ProcessEnv = process.env, program: "berth" | "berth-runtime" = "berth"): string | undefined {
  const chosen = program === "berth" ? env.BERTH_WARM_SOCKET : env.BERTH_RUNTIME_WARM_SOCKET;
  if (chosen) return chosen;
  if ((process.geteuid?.() ?? 0) === 0) return `/run/${program}/warm.sock`;
  return env.XDG_RUNTIME_DIR ? `${env.XDG_RUNTIME_DIR}/${program}/warm.sock` : undefined;
}

/**
 * How a warm process starts: berth's from its start-up snapshot as the installed launcher does (the
 * same trained bytecode, the same V8 flags) when this node made it, else from the bundle;
 * berth-runtime's from its bundle (scripts/warm-spare.cjs).
 */
function spareCommand(fs: Fs, dist: string, runtime: boolean): { args: string[]; env: Record<string, string> } {
  const blob = `${dist}/berth.blob`;
  if (!runtime)
    try {
      const made = Math.floor(fs.statSync(`${blob}.node`).mtimeMs / 1000);
      if (made === Math.floor(fs.statSync(process.execPath).mtimeMs / 1000)) {
        const flags = fs.readFileSync(`${blob}.flags`, "utf8").trim().split(/\s+/).filter(Boolean);
        return { args: ["--snapshot-blob", blob, ...flags, "--"], env: { BERTH_WARM_SPARE_FD: "4" } };
      }
    } catch {
      /* no snapshot: the bundle */
    }
  const entry = `${dist}/../scripts/warm-spare.cjs`;
  if (!globalThis.berthBuildDir || !fs.existsSync(entry)) throw new BerthError("NotFound", `the warm process's entry is not built (${entry})`, { code: ErrorCode.NOT_BUILT, hint: "run ./install.sh" });
  return { args: [entry, globalThis.berthBuildDir, runtime ? "runtime" : "berth"], env: {} };
}

/**
 * berth system warm: keeps SPARES warm processes waiting on the socket berth-client tries first
 * (root: /run/berth/warm.sock; others: $XDG_RUNTIME_DIR/berth/warm.sock; BERTH_WARM_SOCKET wins;
 * --runtime: berth-runtime in place of berth, BERTH_RUNTIME_WARM_SOCKET),
 * and reports each command's exit to its client. Runs in the foreground until SIGINT/SIGTERM, then
 * stops taking commands and waits for those running.
 */
export async function systemWarm(_ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "spares", kind: "int", default: 2, help: "Warm processes kept waiting (1-64)" },
      { long: "socket", kind: "string", help: "Socket to serve (default /run/berth/warm.sock, or $XDG_RUNTIME_DIR/berth/warm.sock, or $BERTH_WARM_SOCKET; with --runtime: berth-runtime and $BERTH_RUNTIME_WARM_SOCKET)" },
      { long: "runtime", kind: "bool", help: "Serve berth-runtime's commands (those that start no container process) instead of berth's" },
    ],
    "system warm",
  );
  if (args.length > 0) throw new UsageError(`"system warm" accepts no arguments.`, "system warm");
  const spares = Number(flags.spares);
  if (!(spares >= 1 && spares <= 64)) throw new UsageError(`invalid argument "${flags.spares}" for "--spares" flag: between 1 and 64`, "system warm");
  const runtime = !!flags.runtime;
  const path = (flags.socket as string | undefined) || warmSocketPath(process.env, runtime ? "berth-runtime" : "berth");
  if (!path) throw new BerthError("InvalidArgument", "no socket for the warm processes: XDG_RUNTIME_DIR is not set", { hint: "set XDG_RUNTIME_DIR or pass --socket" });
  const fs = builtin<Fs>("node:fs");
  const net = builtin<typeof import("node:net")>("node:net");
  const { spawn } = builtin<typeof import("node:child_process")>("node:child_process");
  const { dirname, join } = builtin<typeof import("node:path")>("node:path");
  const command = spareCommand(fs, join(dirname(globalThis.berthBuildDir ?? ""), "dist"), runtime);

  // 0755 as /run/berth is for its other sockets; this one is 0600 from its creation, and a warm
  // process serves only its own uid
  fs.mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
  if (fs.existsSync(path)) {
    const live = await new Promise<boolean>((resolve) => {
      const s = net.connect(path, () => (s.destroy(), resolve(true)));
      s.on("error", () => resolve(false));
    });
    if (live) throw new BerthError("AlreadyExists", `warm processes already serve ${path}`, { hint: "stop that berth system warm first, or pass --socket" });
    fs.unlinkSync(path); // a stale socket of a pool that died
  }
  const mask = process.umask(0o177);
  let listenFd: number;
  try {
    listenFd = listenUnix(path);
  } finally {
    process.umask(mask);
  }

  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS; // read by node at start: each command's own environment decides
  delete env.NODE_OPTIONS;
  const niced = (process.geteuid?.() ?? 0) === 0;
  const idle = new Set<ChildProcess>();
  const busy = new Map<ChildProcess, Socket>();
  const replaced = new Set<ChildProcess>();
  let stopping = false;
  let quickDeaths = 0;
  let failed = false;
  let done: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => (done = resolve));
  const maybeDone = () => {
    if (stopping && busy.size === 0 && idle.size === 0) done(failed ? 1 : 0);
  };

  const startSpare = () => {
    if (stopping) return;
    const started = Date.now();
    // root's warm processes start at the lowest priority (nice 19), so their start takes no CPU from
    // the commands running (on 2 cores a cold `berth-runtime run` beside two starts took 1.7x as
    // long); one that takes a command returns to 0, which only root may do
    const [file, args] = niced ? ["nice", ["-n", "19", process.execPath, ...command.args]] : [process.execPath, command.args];
    const child = spawn(file, args, { stdio: ["ignore", "ignore", "inherit", "ipc", listenFd], env: { ...env, ...command.env } });
    idle.add(child);
    child.on("message", (msg, handle) => {
      if (msg !== "taken" || !(handle instanceof net.Socket)) return;
      idle.delete(child);
      busy.set(child, handle);
      quickDeaths = 0; // warm processes work: only deaths in a row stop the pool
      // the client went away (killed) while its command runs: end the command, as its death would have
      handle.on("close", () => {
        if (busy.get(child) === handle && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      });
      handle.on("error", () => {});
      handle.resume();
      // its replacement starts when it ends (a start takes a core from the command that runs),
      // unless none is left waiting
      if (idle.size === 0) replaced.add(child);
      if (idle.size === 0) startSpare();
    });
    child.on("close", (code, signal) => {
      idle.delete(child);
      const conn = busy.get(child);
      busy.delete(child);
      if (conn) {
        // (the client has its status already when the command ended through exitNow)
        const signo = signal ? builtin<typeof import("node:os")>("node:os").constants.signals[signal] : undefined;
        if (!conn.destroyed) conn.end(signo ? record(Warm.SIGNAL, signo) : record(Warm.EXIT, code ?? 255));
        if (!replaced.delete(child)) setImmediate(startSpare);
      } else if (!stopping) {
        // a warm process that died waiting: start another, unless they keep dying at once
        if (Date.now() - started < 2000 && ++quickDeaths >= 3) {
          process.stderr.write(`berth system warm: warm processes keep dying at start (last: ${signal ?? `exit ${code}`}); stopping\n`);
          failed = true;
          stop();
          return;
        }
        startSpare();
      }
      maybeDone();
    });
  };
  const stop = () => {
    if (stopping) return;
    stopping = true;
    try {
      fs.unlinkSync(path);
    } catch {
      /* already gone */
    }
    fs.closeSync(listenFd);
    for (const child of idle) child.kill("SIGKILL");
    maybeDone();
  };
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) process.on(sig, stop);
  for (let i = 0; i < spares; i++) startSpare();
  process.stderr.write(`berth system warm: ${spares} warm ${runtime ? "berth-runtime" : "berth"} processes on ${path}\n`);
  return finished;
}
