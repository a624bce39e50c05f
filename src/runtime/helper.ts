/**
 * Drives one run of berth-helper: sends the plan, reads the helper's messages, and turns its
 * errors into typed errors. One expectation per step (PID, then READY or ERROR), as youki's
 * channel does: an unexpected message is an error, not a hang.
 */
import { spawn, type ChildProcess, type StdioOptions } from "node:child_process";
import { closeSync, fstatSync, openSync, writeSync } from "node:fs";
import { Socket } from "node:net";
import { constants } from "node:os";
import * as sys from "../common/sys.js";
import type { Readable, Writable } from "node:stream";
import { BerthError, HelperError } from "../common/errors.js";
import { buildBinary } from "../common/paths.js";
import { encodePlan, type PlanOp } from "./plan.js";
import { Msg, Op, codeNames } from "./protocol.js";
import { trace } from "../common/trace.js";

export function helperPath(): string {
  return process.env.BERTH_HELPER ?? buildBinary("berth-helper");
}

let sealed: { pid: number; fd: number; ino: number } | undefined;
/**
 * The fd of this process's sealed copy of the helper, made at the first use (undefined: no memfds
 * here). Checked at each use to be that copy still (by inode), so a stray close elsewhere in a
 * long-lived process can never make us exec whatever file took its number.
 */
function sealedHelper(): number | undefined {
  if (sealed?.pid === process.pid) {
    if (sealed.fd < 0) return undefined;
    try {
      if (fstatSync(sealed.fd).ino === sealed.ino) return sealed.fd;
    } catch {
      /* closed: made again below */
    }
  }
  try {
    const fd = sys.sealedCopy(helperPath());
    sealed = { pid: process.pid, fd, ino: fstatSync(fd).ino };
  } catch {
    sealed = { pid: process.pid, fd: -1, ino: 0 };
  }
  return sealed.fd >= 0 ? sealed.fd : undefined;
}

/**
 * What the helper is exec'd from: a sealed in-memory copy this process made once (through
 * /proc/PID/fd/N: posix_spawn closes the child's other fds before its exec), so no container can
 * reach the helper's file through /proc/self/exe and the helper need not copy and re-exec itself at
 * every start (an exec and a dynamic link, ~3 ms here). Without memfds: the file, which re-execs.
 */
export function helperExecutable(): string {
  const fd = sealedHelper();
  return fd === undefined ? helperPath() : `/proc/${process.pid}/fd/${fd}`;
}

export type StdioEntry = "inherit" | "pipe" | "ignore" | number;

export interface HelperOptions {
  /** The container's stdio: fds (or "inherit"/"ignore") for 0, 1, 2. */
  stdio?: [StdioEntry, StdioEntry, StdioEntry] | "inherit";
  /** Extra fds 3..3+n-1 of this process passed through to the container (--preserve-fds). */
  preserveFds?: number;
  /**
   * In a warm process of `berth system warm --runtime`: the client (the caller's own process)
   * becomes the helper, so the container is the caller's descendant as `runc init` is; the helper
   * exits with this process's exit status, sent as it ends. Only for the command's own container.
   */
  inClient?: { foreground: boolean };
  /** Called when the helper waits at the hook point (child cloned, not yet released). */
  onHookPoint?: (pid: number) => Promise<void>;
  /** The child's pid as soon as it exists (its new namespaces too), before its setup is done. */
  onPid?: (pid: number) => void;
  /**
   * A program that starts the helper and stays (the engine's per-container monitor): it is run in
   * a new session as `launcher... HELPER PLANFD REPORTFD`, must fork its long-lived part away and
   * exit at once (berth-monitor -D; it is reaped when the container is ready), and our part ends
   * when the container is ready.
   */
  launcher?: string[] | LaunchedHelper;
  /**
   * How long the helper may take to set the container up (hooks not counted: they have their own
   * timeouts). A helper that neither reports nor exits by then is killed and the run fails, so no
   * caller waits forever (e.g. on a process asleep in a cgroup frozen meanwhile).
   */
  setupTimeoutMs?: number;
  /**
   * Start the helper with posix_spawn instead of Node's spawn (which forks this process, copying
   * its page tables) and await its exit on the thread pool. Its pid (helperPid) is then known only
   * once it started. Not with piped stdio.
   */
  direct?: boolean;
}

/** BERTH_HELPER_TIMEOUT (seconds) overrides it. */
export const defaultSetupTimeoutMs = 60_000;

/**
 * A launcher started before its plan exists (launchHelper): the monitor and helper exec and load
 * while the caller builds the container's spec. Handed to runHelper as `launcher`; abort() when
 * the plan never comes (the helper exits quietly on a plan that ends before its first record,
 * and the monitor with it, leaving no exit record).
 */
export interface LaunchedHelper {
  readonly io: LauncherIo;
  abort(): void;
}

/** Starts `launcher... HELPER PLANFD REPORTFD` now; the plan follows through runHelper. */
export function launchHelper(launcher: string[], stdio: HelperOptions["stdio"], preserveFds = 0): LaunchedHelper {
  const base = stdio === undefined || stdio === "inherit" ? ["inherit", "inherit", "inherit"] : stdio;
  const io = spawnLauncher(launcher, base as StdioEntry[], preserveFds);
  return {
    io,
    abort: () => {
      io.report.destroy();
      io.endPlan();
      io.reap();
    },
  };
}

export interface HelperRun {
  /** The child's pid once setup finished (READY); rejects with HelperError. */
  ready: Promise<number>;
  /** The helper's exit: its code and, in foreground mode, the container's wait status. */
  exited: Promise<{ code: number; waitStatus?: number }>;
  /** The helper's pid; none under a launcher (the launcher's is not the helper's). */
  helperPid?: number;
  /** The container's stdin when stdio[0] was "pipe". */
  stdin?: Writable;
}

export function runHelper(ops: PlanOp[], opts: HelperOptions = {}): HelperRun {
  const n = opts.preserveFds ?? 0;
  const base = opts.stdio === undefined || opts.stdio === "inherit" ? ["inherit", "inherit", "inherit"] : opts.stdio;
  const launcher = opts.launcher;
  trace("runtime: spawning");
  const inClient = opts.inClient && !launcher && globalThis.berthExecInClient && (base as StdioEntry[]).every((e) => e === "inherit") ? opts.inClient : undefined;
  const plan = encodePlan(inClient ? [...ops, [Op.LAST_WORD]] : ops);
  trace("runtime: plan encoded");
  const direct = !launcher && !!opts.direct && !(base as StdioEntry[]).includes("pipe");
  const io = inClient ? execInClient(n) : Array.isArray(launcher) ? spawnLauncher(launcher, base as StdioEntry[], n) : launcher ? launcher.io : direct ? spawnLauncher([], base as StdioEntry[], n) : spawnHelper(base, n);
  let directPid: number | undefined;
  io.writePlan(plan);
  trace("runtime: plan sent");

  let pid = 0;
  let waitStatus: number | undefined;
  let settled = false;
  let resolveReady!: (pid: number) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<number>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  ready.catch(() => {}); // awaited by the caller; this keeps an early failure from being unhandled
  const fail = (e: Error) => {
    if (!settled) {
      settled = true;
      clearTimeout(deadline);
      rejectReady(e);
    }
  };
  const limit = opts.setupTimeoutMs ?? (Number(process.env.BERTH_HELPER_TIMEOUT) * 1000 || defaultSetupTimeoutMs);
  let stage = "starting";
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const armDeadline = () => {
    deadline = setTimeout(() => {
      fail(new BerthError("System", `berth-helper did not finish setting up the container within ${limit / 1000} s (last step: ${stage}); it was killed`));
      try {
        if (pid) process.kill(pid, 9);
      } catch {
        // the child is gone already
      }
      if (io.kind === "helper") io.child.kill("SIGKILL");
      else if (io.kind === "client") return; // the helper reports the child's death, then waits for our last word
      else if (direct && directPid) process.kill(directPid, 9);
      else io.endPlan();
    }, limit);
    deadline.unref?.();
  };
  armDeadline();

  let buf = Buffer.alloc(0);
  const reportStream = io.report;
  reportStream.on("data", (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    while (buf.length >= 8) {
      const code = buf.readUInt32LE(0);
      const len = buf.readUInt32LE(4);
      if (buf.length < 8 + len) break;
      const args = buf.subarray(8, 8 + len).toString("utf8").split("\0").slice(0, -1);
      buf = buf.subarray(8 + len);
      switch (code) {
        case Msg.PID:
          stage = "the container's setup";
          pid = Number(args[0]);
          opts.onPid?.(pid);
          break;
        case Msg.HOOK_POINT: {
          clearTimeout(deadline);
          const cont = () => {
            if (settled) return;
            stage = "the container's setup after its hooks";
            armDeadline();
            io.writePlan(planRecord(Msg.CONTINUE));
          };
          (opts.onHookPoint ? opts.onHookPoint(pid) : Promise.resolve()).then(cont, (e: Error) => {
            fail(e);
            io.endPlan(); // the helper sees EOF instead of CONTINUE and kills the child
          });
          break;
        }
        case Msg.READY:
          if (!settled) {
            settled = true;
            clearTimeout(deadline);
            resolveReady(pid);
          }
          break;
        case Msg.ERROR:
          fail(new HelperError(args[0] ?? "?", Number(args[1] ?? 0), helperMessage(args[2] ?? "", Number(args[1] ?? 0))));
          break;
        case Msg.EXIT:
          waitStatus = Number(args[0]);
          break;
        default:
          fail(new BerthError("System", `berth-helper sent an unexpected message ${codeNames[code] ?? code}`));
      }
    }
  });
  reportStream.on("error", () => {});
  // The helper's last records (READY, ERROR, EXIT) are written before it exits, but its exit can be
  // seen before the event loop has read them: once it is gone, they are read first — to the pipe's
  // end in the foreground (the helper held the last copy), else until the helper's word is in
  // (a detached init waiting on the fifo still holds the pipe), at most 2 s.
  const foreground = ops.some((op) => op[0] === Op.FOREGROUND);
  const recordsRead = () =>
    new Promise<void>((done) => {
      if (reportStream.readableEnded || reportStream.destroyed) return done();
      const t = setTimeout(done, 2000);
      const end = () => {
        clearTimeout(t);
        done();
      };
      reportStream.once("end", end);
      reportStream.once("close", end);
      if (!foreground) ready.then(end, end);
    });
  const exited = new Promise<{ code: number; waitStatus?: number }>((res) => {
    if (io.kind === "client") {
      // the helper waits for our last word wherever it ends: its end is what it reports (READY in
      // the background, the container's EXIT in the foreground, an ERROR), not its exit
      ready.then(
        () => {
          if (!inClient!.foreground) res({ code: 0 });
        },
        () => res({ code: 1, waitStatus }),
      );
      reportStream.on("data", () => {
        if (waitStatus !== undefined) res({ code: 0, waitStatus });
      });
      reportStream.on("close", () => {
        if (!settled) fail(new BerthError("System", "berth-helper exited before the container was ready"));
        res({ code: 255, waitStatus });
      });
      return;
    }
    if (io.kind === "launcher" && direct) {
      // the helper itself, posix_spawned: its exit is awaited on the thread pool
      io.started.then(
        async (pid) => {
          directPid = pid;
          const code = await sys.waitChildAsync(pid);
          await recordsRead();
          reportStream.destroy();
          io.endPlan();
          // said as Node's spawn says it: a signal by name (SIGKILL: the OOM killer, for one)
          const how = code > 128 ? (Object.entries(constants.signals).find(([, n]) => n === code - 128)?.[0] ?? code) : code;
          if (!settled) fail(new BerthError("System", `berth-helper exited (${how}) before the container was ready`));
          res({ code, waitStatus });
        },
        (e: Error) => {
          fail(new BerthError("System", `cannot run berth-helper: ${e.message}`));
          res({ code: 127 });
        },
      );
      return;
    }
    if (io.kind === "launcher") {
      // the launcher stays as the container's parent: our part ends when the container is ready
      // (the waiting init keeps the report pipe open until start, so its close cannot be awaited)
      const done = (code: number) => {
        reportStream.destroy();
        io.endPlan();
        io.reap();
        res({ code, waitStatus });
      };
      ready.then(
        () => done(0),
        () => done(1),
      );
      // a launcher that could not start says so, rather than its report pipe's end
      io.started.then(
        () =>
          reportStream.on("close", () => {
            if (!settled) fail(new BerthError("System", "berth-helper exited before the container was ready (see the container's log)"));
          }),
        (e: Error) => fail(e),
      );
      return;
    }
    const child = io.child;
    child.on("exit", async (code, signal) => {
      // The child can still be running (it holds the report pipe while it waits on the fifo).
      await recordsRead();
      reportStream.destroy();
      io.endPlan();
      if (!settled) fail(new BerthError("System", `berth-helper exited (${signal ?? code}) before the container was ready`));
      res({ code: code ?? 128 + 9, waitStatus });
    });
    child.on("error", (e) => {
      fail(new BerthError("System", `cannot run berth-helper: ${e.message}`));
      res({ code: 127 });
    });
  });
  if (direct)
    return {
      ready,
      exited,
      get helperPid() {
        return directPid;
      },
    };
  return { ready, exited, ...(io.kind === "helper" ? { helperPid: io.pid, stdin: io.child.stdin ?? undefined } : {}) };
}

/** The helper as the caller's own process (a warm berth-runtime's client exec'd it). */
interface ClientIo {
  kind: "client";
  report: Readable;
  writePlan(b: Buffer): void;
  endPlan(): void;
}

/** A plan record to the helper: code, length, then the NUL-terminated strings. */
function planRecord(code: number, ...strs: string[]): Buffer {
  const body = Buffer.from(strs.map((x) => `${x}\0`).join(""));
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(code, 0);
  hdr.writeUInt32LE(body.length, 4);
  return Buffer.concat([hdr, body]);
}

/**
 * The client becomes the helper (berth-client's EXEC): the helper's executable, its plan pipe and
 * its report pipe go to it, placed after the caller's --preserve-fds; the helper exits with our
 * exit status, sent as this process ends (exitNow emits "exit" first; so does any other end).
 */
function execInClient(n: number): ClientIo {
  const [planRead, planWrite] = sys.pipe();
  const [reportRead, reportWrite] = sys.pipe();
  const sealedFd = sealedHelper();
  const exe = sealedFd ?? openSync(helperPath(), "r");
  try {
    globalThis.berthExecInClient!([exe, planRead, reportWrite], 3 + n);
  } finally {
    if (sealedFd === undefined) closeSync(exe);
    closeSync(planRead);
    closeSync(reportWrite);
  }
  globalThis.berthExecInClient = undefined; // one helper per client
  let planOpen = true;
  const write = (b: Buffer) => {
    if (planOpen)
      try {
        writeSync(planWrite, b);
      } catch {
        /* EPIPE: the helper is gone, and its report pipe says why */
      }
  };
  process.once("exit", (code) => {
    write(planRecord(Msg.LAST_WORD, String(code ?? process.exitCode ?? 0)));
    planOpen = false;
  });
  trace("runtime: the client became the helper");
  return { kind: "client", report: new Socket({ fd: reportRead, readable: true, writable: false }), writePlan: write, endPlan: () => {} };
}

interface HelperIo {
  kind: "helper";
  child: ChildProcess;
  pid: number;
  report: Readable;
  writePlan(b: Buffer): void;
  endPlan(): void;
}
export interface LauncherIo {
  kind: "launcher";
  /** The launcher's pid once its exec is done (it is started on the thread pool); rejects with
   * the reason it could not start. */
  started: Promise<number>;
  report: Readable;
  writePlan(b: Buffer): void;
  endPlan(): void;
  /** Reaps the launcher (it exits once it has forked its long-lived part), in the background. */
  reap(): void;
}

/** The helper as our child (runtime commands): Node's spawn, whose exit we await. */
function spawnHelper(base: unknown[], n: number): HelperIo {
  const stdio: unknown[] = [...base];
  for (let i = 0; i < n; i++) stdio.push(3 + i);
  stdio.push("pipe", "pipe");
  const planFd = 3 + n;
  const child = spawn(helperExecutable(), [String(planFd), String(planFd + 1)], { stdio: stdio as StdioOptions, argv0: helperPath() });
  const plan = child.stdio[planFd] as Writable;
  plan.on("error", () => {}); // the helper may exit before reading CONTINUE
  return { kind: "helper", child, pid: child.pid ?? 0, report: child.stdio[planFd + 1] as Readable, writePlan: (b) => plan.write(b), endPlan: () => plan.destroy() };
}

/**
 * The helper under a launcher that forks its long-lived part away and exits (berth-monitor -D):
 * started with posix_spawn (Node's spawn forks, copying this process's page tables: milliseconds of a
 * `berth run`), the plan written straight into its pipe, the launcher reaped once the container
 * is ready or failed.
 */
function spawnLauncher(launcher: string[], base: StdioEntry[], n: number): LauncherIo {
  const fds = base.map((e, i) => {
    if (e === "ignore") return -1;
    if (e === "inherit") return i;
    if (typeof e === "number") return e;
    throw new BerthError("InvalidArgument", "a launched helper cannot have piped stdio");
  });
  for (let i = 0; i < n; i++) fds.push(3 + i);
  const [planRead, planWrite] = sys.pipe();
  const [reportRead, reportWrite] = sys.pipe();
  fds.push(planRead, reportWrite);
  const planFd = 3 + n;
  // on the thread pool: the launcher's exec overlaps what the caller does next; the fds
  // are duplicated by the call, so ours close now
  // no launcher: the helper itself
  const argv = [...launcher, launcher.length ? helperExecutable() : helperPath(), String(planFd), String(planFd + 1)];
  const started = sys.spawnAsync(launcher.length ? argv[0]! : helperExecutable(), argv, fds).catch((e: Error) => {
    throw new BerthError("System", `cannot run ${argv[0]}: ${e.message}`);
  });
  started.catch(() => {}); // reported by runHelper (or by nobody, for an aborted launch)
  trace("runtime: launcher spawned");
  closeSync(planRead);
  closeSync(reportWrite);
  let planOpen = true;
  const report = new Socket({ fd: reportRead, readable: true, writable: false });
  trace("runtime: report socket open");
  let reaped = false;
  return {
    kind: "launcher",
    started,
    report,
    writePlan: (b) => {
      // a plan is far below a pipe's buffer; a helper already gone just means EPIPE, reported by the report pipe's end
      if (planOpen)
        try {
          writeSync(planWrite, b);
        } catch {
          /* EPIPE: the helper is gone, and its report pipe says why */
        }
    },
    endPlan: () => {
      if (planOpen) closeSync(planWrite);
      planOpen = false;
    },
    reap: () => {
      if (!reaped) started.then((pid) => sys.waitChildAsync(pid)).catch(() => {}); // reaped only so it is no zombie; its failure was reported through its pipe
      reaped = true;
    },
  };
}

function helperMessage(msg: string, errno: number): string {
  if (!errno || msg.includes("executable file not found") || msg.startsWith("exec: ")) return msg;
  return `${msg}: ${sys.strerror(errno)}`;
}

declare global {
  /**
   * Set in a warm process of `berth system warm --runtime` (src/cli/warm-spare.ts): sends the
   * client EXEC with these fds (the helper, its plan pipe, its report pipe) and the plan fd's number.
   */
  var berthExecInClient: ((fds: number[], planFd: number) => void) | undefined;
}
