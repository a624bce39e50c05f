/**
 * Drives one run of berth-helper: sends the plan, reads the helper's messages, and turns its
 * errors into typed errors. One expectation per step (PID, then READY or ERROR), as youki's
 * channel does: an unexpected message is an error, not a hang.
 */
import { spawn, type StdioOptions } from "node:child_process";
import { getSystemErrorName } from "node:util";
import type { Readable, Writable } from "node:stream";
import { BerthError, HelperError } from "../common/errors.js";
import { buildBinary } from "../common/paths.js";
import { encodePlan, type PlanOp } from "./plan.js";
import { Msg, codeNames } from "./protocol.js";

export function helperPath(): string {
  return process.env.BERTH_HELPER ?? buildBinary("berth-helper");
}

export type StdioEntry = "inherit" | "pipe" | "ignore" | number;

export interface HelperOptions {
  /** The container's stdio: fds (or "inherit"/"ignore") for 0, 1, 2. */
  stdio?: [StdioEntry, StdioEntry, StdioEntry] | "inherit";
  /** Extra fds 3..3+n-1 of this process passed through to the container (--preserve-fds). */
  preserveFds?: number;
  /** Called when the helper waits at the hook point (child cloned, not yet released). */
  onHookPoint?: (pid: number) => Promise<void>;
  /** The child's pid as soon as it exists (its new namespaces too), before its setup is done. */
  onPid?: (pid: number) => void;
  /**
   * A program that starts the helper and stays (the engine's per-container monitor): it is run
   * detached as `launcher... HELPER PLANFD REPORTFD`, and the helper counts as exited when its
   * report pipe closes, not when the launcher does.
   */
  launcher?: string[];
}

export interface HelperRun {
  /** The child's pid once setup finished (READY); rejects with HelperError. */
  ready: Promise<number>;
  /** The helper's exit: its code and, in foreground mode, the container's wait status. */
  exited: Promise<{ code: number; waitStatus?: number }>;
  helperPid: number;
  /** The container's stdin when stdio[0] was "pipe". */
  stdin?: Writable;
}

export function runHelper(ops: PlanOp[], opts: HelperOptions = {}): HelperRun {
  const n = opts.preserveFds ?? 0;
  const base = opts.stdio === undefined || opts.stdio === "inherit" ? ["inherit", "inherit", "inherit"] : opts.stdio;
  const stdio: unknown[] = [...base];
  for (let i = 0; i < n; i++) stdio.push(3 + i);
  stdio.push("pipe", "pipe");
  const planFd = 3 + n;
  const launcher = opts.launcher;
  const child = launcher
    ? spawn(launcher[0]!, [...launcher.slice(1), helperPath(), String(planFd), String(planFd + 1)], { stdio: stdio as StdioOptions, detached: true })
    : spawn(helperPath(), [String(planFd), String(planFd + 1)], { stdio: stdio as StdioOptions });
  const planStream = child.stdio[planFd] as Writable;
  const reportStream = child.stdio[planFd + 1] as Readable;
  planStream.on("error", () => {}); // the helper may exit before reading CONTINUE
  planStream.write(encodePlan(ops));

  let pid = 0;
  let waitStatus: number | undefined;
  let settled = false;
  let resolveReady!: (pid: number) => void;
  let rejectReady!: (e: Error) => void;
  const ready = new Promise<number>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  ready.catch(() => {});
  const fail = (e: Error) => {
    if (!settled) {
      settled = true;
      rejectReady(e);
    }
  };

  let buf = Buffer.alloc(0);
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
          pid = Number(args[0]);
          opts.onPid?.(pid);
          break;
        case Msg.HOOK_POINT: {
          const cont = () => {
            const hdr = Buffer.alloc(8);
            hdr.writeUInt32LE(Msg.CONTINUE, 0);
            planStream.write(hdr);
          };
          (opts.onHookPoint ? opts.onHookPoint(pid) : Promise.resolve()).then(cont, (e: Error) => {
            fail(e);
            planStream.end(); // the helper sees EOF instead of CONTINUE and kills the child
          });
          break;
        }
        case Msg.READY:
          if (!settled) {
            settled = true;
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
  const exited = new Promise<{ code: number; waitStatus?: number }>((res) => {
    if (launcher) {
      // the launcher stays as the container's parent: our part ends when the container is ready
      // (the waiting init keeps the report pipe open until start, so its close cannot be awaited)
      child.unref();
      ready.then(
        () => {
          reportStream.destroy();
          planStream.destroy();
          res({ code: 0, waitStatus });
        },
        () => res({ code: 1, waitStatus }),
      );
      reportStream.on("close", () => {
        if (!settled) fail(new BerthError("System", "berth-helper exited before the container was ready"));
      });
      child.on("exit", (code) => {
        if (!settled) fail(new BerthError("System", `the container monitor exited (${code}) before the container was ready`));
      });
    }
    child.on("exit", (code, signal) => {
      if (launcher) return;
      // The child can still be running (it holds the report pipe while it waits on the fifo).
      reportStream.destroy();
      planStream.destroy();
      if (!settled) fail(new BerthError("System", `berth-helper exited (${signal ?? code}) before the container was ready`));
      res({ code: code ?? 128 + 9, waitStatus });
    });
    child.on("error", (e) => {
      fail(new BerthError("System", `cannot run berth-helper: ${e.message}`));
      res({ code: 127 });
    });
  });
  return { ready, exited, helperPid: child.pid ?? 0, stdin: child.stdin ?? undefined };
}

function helperMessage(msg: string, errno: number): string {
  if (!errno || msg.includes("executable file not found") || msg.startsWith("exec: ")) return msg;
  const name = errnoNames[errno];
  return `${msg}: ${name ?? getSystemErrorName(-errno)}`;
}

const errnoNames: Record<number, string> = {
  1: "operation not permitted", 2: "no such file or directory", 3: "no such process", 5: "input/output error",
  9: "bad file descriptor", 12: "cannot allocate memory", 13: "permission denied", 16: "device or resource busy",
  17: "file exists", 18: "invalid cross-device link", 20: "not a directory", 21: "is a directory", 22: "invalid argument",
  24: "too many open files", 28: "no space left on device", 30: "read-only file system", 36: "file name too long",
  38: "function not implemented", 40: "too many levels of symbolic links", 95: "operation not supported",
  111: "connection refused", 6: "no such device or address", 19: "no such device",
};
