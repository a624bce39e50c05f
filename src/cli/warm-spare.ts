/**
 * A warm process of `berth system warm` (src/cli/berth/warm.ts), for either command — berth or
 * berth-runtime: it waits on the pool's socket for a client (helper/berth-client.c), takes the
 * client's stdio, working directory, umask and environment, and runs that one command.
 */
import { builtin } from "../common/builtin.js";
import { acceptPeer, dup, dup2, pollIn, recvFds, sendFds } from "../common/sys.js";
import { Warm } from "../common/warm-protocol.js";

type Fs = typeof import("node:fs");

/** One record to the client: u32 kind | i32 value, little endian. */
export const record = (kind: number, value: number): Buffer => {
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
export function warmSpare(listenFd: number, run: (argv: string[]) => void, takes: (argv: string[]) => boolean = () => true, program = "berth"): void {
  const fs = builtin<Fs>("node:fs");
  const net = builtin<typeof import("node:net")>("node:net");
  const os = builtin<typeof import("node:os")>("node:os");
  const header = Buffer.alloc(16);
  let conn: number, fds: number[], argv: string[], env: string[];
  const pool = process.ppid;
  // root's pool starts its warm processes at nice 19 (src/cli/berth/warm.ts): started, this one
  // waits at the normal priority (it answers a client at once, even on a busy machine) and its
  // command runs so, every thread of it
  if (process.geteuid?.() === 0 && os.getPriority() !== 0)
    for (const tid of fs.readdirSync("/proc/self/task"))
      try {
        os.setPriority(Number(tid), 0);
      } catch {
        /* a thread that ended meanwhile */
      }
  for (;;) {
    // a pool that died (even by SIGKILL) leaves no warm process behind keeping its socket alive
    while (!pollIn(listenFd, 1000)) if (process.ppid !== pool) process.exit(0);
    const peer = acceptPeer(listenFd);
    let got: { bytes: number; fds: number[] } = { bytes: 0, fds: [] };
    try {
      fs.writeSync(peer.fd, record(Warm.READY, 0));
      // a client sends its request at once; one that does not cannot hold this process
      if (!pollIn(peer.fd, 2000)) throw new Error("no request");
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
      if (!takes(words.slice(0, argc))) {
        // a command that must be the client's own process (it starts a container): nothing done
        fs.writeSync(peer.fd, record(Warm.FALLBACK, 0));
        throw new Error("not for a warm process");
      }
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
  process.argv.splice(1, Infinity, program, ...argv);
  globalThis.berthStart = "warm";
  // the status goes to the client as soon as the command is done (both CLIs end through exitNow);
  // the pool keeps the connection too and reports any other ending (a signal, process.exit)
  const report = dup(conn);
  let reported = false;
  globalThis.berthExitReport = (code) => {
    if (reported) return;
    reported = true;
    try {
      fs.writeSync(report, record(Warm.EXIT, code));
    } catch {
      /* the client is gone */
    }
  };
  // berth-runtime create/run: the client execs the container's helper with these fds (EXEC), so the
  // container is its caller's descendant; the report fd stays ours to send them on
  if (program === "berth-runtime") globalThis.berthExecInClient = (helperFds, planFd) => sendFds(report, record(Warm.EXEC, planFd), helperFds);
  process.send?.("taken", new net.Socket({ fd: conn }));
  // the channel to the pool must not keep this process alive once its command is done
  process.channel?.unref();
  run(argv);
}

declare global {
  /** "warm" when a warm process of `berth system warm` runs the command. */
  var berthStart: string | undefined;
}

