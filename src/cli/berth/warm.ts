/**
 * Warm processes: `berth system warm` keeps a few Node processes that have started and loaded
 * berth, waiting on a unix socket; the installed `berth` (helper/berth-client.c) hands its command
 * to one of them — arguments, environment, umask, and its stdio and working directory as passed
 * fds — so a command costs no Node start (what BuildKit's and dockerd's clients get from a daemon).
 * Each warm process runs one command, exactly as the CLI would, then exits; the pool starts another.
 * The exchange is in helper/protocol.table (`warm` rows).
 */
import { builtin } from "../../common/builtin.js";
import { BerthError, ErrorCode } from "../../common/errors.js";
import { acceptPeer, dup, dup2, listenUnix, pollIn, recvFds } from "../../common/sys.js";
import { Warm } from "../../common/warm-protocol.js";
import { parse, UsageError } from "../pflag.js";
import type { Context } from "./context.js";

type Fs = typeof import("node:fs");
type ChildProcess = import("node:child_process").ChildProcess;
type Socket = import("node:net").Socket;

/** Where berth-client looks (the same rule as its socket_path). */
export function warmSocketPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.BERTH_WARM_SOCKET) return env.BERTH_WARM_SOCKET;
  if ((process.geteuid?.() ?? 0) === 0) return "/run/berth/warm.sock";
  return env.XDG_RUNTIME_DIR ? `${env.XDG_RUNTIME_DIR}/berth/warm.sock` : undefined;
}

const record = (kind: number, value: number): Buffer => {
  const b = Buffer.alloc(8);
  b.writeUInt32LE(kind, 0);
  b.writeInt32LE(value, 4);
  return b;
};

/** The namespaces a command's paths, processes and addresses depend on. */
const NAMESPACES = ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"];

/** Why this process cannot run the peer's command as the peer would have (undefined: it can). */
function declineReason(fs: Fs, pid: number, uid: number, header: Buffer, bytes: number, fds: number[]): string | undefined {
  if (bytes !== 16 || header.readUInt32LE(0) !== Warm.REQUEST) return "another version of the exchange";
  if (fds.length !== 4) return "not the four fds";
  if (uid !== process.geteuid?.()) return "another user";
  try {
    for (const ns of NAMESPACES) if (fs.readlinkSync(`/proc/${pid}/ns/${ns}`) !== fs.readlinkSync(`/proc/self/ns/${ns}`)) return `another ${ns} namespace`;
    if (fs.readlinkSync(`/proc/${pid}/root`) !== "/") return "another root directory";
  } catch {
    return "its namespaces cannot be read";
  }
  return undefined;
}

function readExactly(fs: Fs, fd: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = fs.readSync(fd, buf, got, length - got, null);
    if (n === 0) throw new Error("the client went away");
    got += n;
  }
  return buf;
}

/**
 * A warm process: blocks in accept on the pool's listening socket (fd listenFd) until a client
 * comes whose command it can run as the client would; takes that client's stdio, working
 * directory, umask and environment, hands the connection to the pool (which reports the exit),
 * and runs the command. Nothing of the client's is touched before the PID record is sent.
 */
export function warmSpare(listenFd: number, run: (argv: string[]) => void): void {
  const fs = builtin<Fs>("node:fs");
  const net = builtin<typeof import("node:net")>("node:net");
  const header = Buffer.alloc(16);
  let conn: number, fds: number[], argv: string[], env: string[];
  const pool = process.ppid;
  for (;;) {
    // a pool that died (even by SIGKILL) leaves no warm process behind keeping its socket alive
    while (!pollIn(listenFd, 1000)) if (process.ppid !== pool) process.exit(0);
    const peer = acceptPeer(listenFd);
    let got: { bytes: number; fds: number[] } = { bytes: 0, fds: [] };
    try {
      got = recvFds(peer.fd, header);
      const reason = declineReason(fs, peer.pid, peer.uid, header, got.bytes, got.fds);
      if (reason) {
        // the pool's log (this process's fd 2 until it takes a command) says why; not through
        // process.stderr, whose kind (file, pipe, terminal) would stay the pool's after the take
        fs.writeSync(2, `berth system warm: pid ${peer.pid} runs its command itself: ${reason}\n`);
        fs.writeSync(peer.fd, record(Warm.FALLBACK, 0));
        throw new Error(reason);
      }
      const words = readExactly(fs, peer.fd, header.readUInt32LE(12)).toString("utf8").split("\0");
      words.pop(); // after the last NUL
      const argc = header.readUInt32LE(8);
      [conn, fds, argv, env] = [peer.fd, got.fds, words.slice(0, argc), words.slice(argc)];
      break;
    } catch {
      /* declined or broken: the client runs the ordinary launcher; wait for the next */
      for (const fd of [...got.fds, peer.fd]) fs.closeSync(fd);
    }
  }
  fs.closeSync(listenFd); // a command's long-lived children must not keep the pool's socket listening
  fs.writeSync(conn, record(Warm.PID, process.pid));
  const [stdin, stdout, stderr, cwd] = fds as [number, number, number, number];
  [stdin, stdout, stderr].forEach((fd, i) => dup2(fd, i));
  for (const fd of [stdin, stdout, stderr]) fs.closeSync(fd);
  process.chdir(`/proc/self/fd/${cwd}`);
  fs.closeSync(cwd);
  process.umask(header.readUInt32LE(4));
  for (const k of Object.keys(process.env)) delete process.env[k];
  for (const e of env) {
    const i = e.indexOf("=");
    if (i > 0) process.env[e.slice(0, i)] = e.slice(i + 1);
  }
  // as the ordinary launcher: node's start never read these CAs; the registry client loads them
  if (process.env.NODE_EXTRA_CA_CERTS) {
    process.env.BERTH_EXTRA_CA_CERTS = process.env.NODE_EXTRA_CA_CERTS;
    delete process.env.NODE_EXTRA_CA_CERTS;
  }
  process.argv.splice(1, Infinity, "berth", ...argv);
  globalThis.berthStart = "warm";
  // the status goes to the client as soon as the command is done (exitNow); the pool keeps the
  // connection too and reports how this process ended when it ends otherwise (a signal, process.exit)
  const report = dup(conn);
  globalThis.berthExitReport = (code) => {
    try {
      fs.writeSync(report, record(Warm.EXIT, code));
    } catch {
      /* the client is gone */
    }
  };
  process.send?.("taken", new net.Socket({ fd: conn }));
  run(argv);
}

declare global {
  /** "warm" when a warm process of `berth system warm` runs the command. */
  var berthStart: string | undefined;
}

/**
 * How a warm process starts: from berth's start-up snapshot as the installed launcher does (the
 * same trained bytecode, the same V8 flags) when this node made it, else from the bundle.
 */
function spareCommand(fs: Fs, dist: string): { args: string[]; env: Record<string, string> } {
  const blob = `${dist}/berth.blob`;
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
  return { args: [entry, globalThis.berthBuildDir], env: {} };
}

/**
 * berth system warm: keeps SPARES warm processes waiting on the socket berth-client tries first
 * (root: /run/berth/warm.sock; others: $XDG_RUNTIME_DIR/berth/warm.sock; BERTH_WARM_SOCKET wins),
 * and reports each command's exit to its client. Runs in the foreground until SIGINT/SIGTERM, then
 * stops taking commands and waits for those running.
 */
export async function systemWarm(_ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "spares", kind: "int", default: 2, help: "Warm processes kept waiting (1-64)" },
      { long: "socket", kind: "string", help: "Socket to serve (default /run/berth/warm.sock, or $XDG_RUNTIME_DIR/berth/warm.sock, or $BERTH_WARM_SOCKET)" },
    ],
    "system warm",
  );
  if (args.length > 0) throw new UsageError(`"system warm" accepts no arguments.`, "system warm");
  const spares = Number(flags.spares);
  if (!(spares >= 1 && spares <= 64)) throw new UsageError(`invalid argument "${flags.spares}" for "--spares" flag: between 1 and 64`, "system warm");
  const path = (flags.socket as string | undefined) || warmSocketPath();
  if (!path) throw new BerthError("InvalidArgument", "no socket for the warm processes: XDG_RUNTIME_DIR is not set", { hint: "set XDG_RUNTIME_DIR or pass --socket" });
  const fs = builtin<Fs>("node:fs");
  const net = builtin<typeof import("node:net")>("node:net");
  const { spawn } = builtin<typeof import("node:child_process")>("node:child_process");
  const { dirname, join } = builtin<typeof import("node:path")>("node:path");
  const command = spareCommand(fs, join(dirname(globalThis.berthBuildDir ?? ""), "dist"));

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
    const child = spawn(process.execPath, command.args, { stdio: ["ignore", "ignore", "inherit", "ipc", listenFd], env: { ...env, ...command.env } });
    idle.add(child);
    child.on("message", (msg, handle) => {
      if (msg !== "taken" || !(handle instanceof net.Socket)) return;
      idle.delete(child);
      busy.set(child, handle);
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
  process.stderr.write(`berth system warm: ${spares} warm processes on ${path}\n`);
  return finished;
}
