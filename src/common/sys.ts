/**
 * The few system calls Node does not offer (flock, mount, umount2, xattrs, mknod, a terminal's
 * size), through berth's own Node-API addon (helper/berth-sys.c, built by scripts/build-helper.sh).
 * Each call returns its result or -errno; the typed errors are made here. Loaded on first use.
 */
import { constants as fsConstants, lstatSync, readdirSync, unlinkSync } from "node:fs";
import { constants, endianness } from "node:os";
import { BerthError, ErrorCode } from "./errors.js";
import { buildBinary } from "./paths.js";
import { K } from "./kernel-abi.js";
import { builtin } from "./builtin.js";

interface Addon {
  execv(file: string, argv: string[], keep: number[]): number;
  flock(fd: number, op: number): number;
  mount(src: string | null, target: string, fstype: string | null, flags: number, data: string | null): number;
  mountAsync(src: string, target: string, fstype: string, flags: number, data: string): Promise<number>;
  umount2(target: string, flags: number): number;
  umount2Async(target: string, flags: number): Promise<number>;
  lsetxattr(path: string, name: string, value: Buffer): number;
  lgetxattr(path: string, name: string, value: Buffer): number;
  llistxattr(path: string, list: Buffer): number;
  mknod(path: string, mode: number, major: number, minor: number): number;
  setWindowSize(fd: number, rows: number, cols: number): number;
  strerror(errno: number): string;
  removeTree(path: string, detachMounts: boolean): number;
  removeTreeAsync(path: string, detachMounts: boolean): Promise<number>;
  pipe(): [number, number] | number;
  openpty(): [number, number] | number;
  spawn(file: string, argv: string[], fds: number[]): number;
  spawnAsync(file: string, argv: string[], fds: number[]): Promise<number>;
  mkdirsAsync(paths: string[]): Promise<number>;
  waitpid(pid: number): number;
  waitpidAsync(pid: number): Promise<number>;
  nftMapElem(add: boolean, table: string, map: string, key: Buffer, data?: Buffer): number;
  portFree(udp: boolean, ip: string, port: number): number;
  writeDetached(path: string, data: string): number;
  pollIn(fd: number, timeoutMs: number): number;
  runAsync(argv: string[]): Promise<[number, string]>;
  exitNow(code: number): never;
  nftMapElemAsync(add: boolean, table: string, map: string, key: Buffer, data?: Buffer): Promise<number>;
  listenUnix(path: string): number;
  acceptPeer(fd: number): [number, number, number] | number;
  recvFds(fd: number, buf: Buffer): number[] | number;
  dup2(from: number, to: number): number;
  dup(fd: number): number;
  sealedCopy(path: string): number;
  sendFds(fd: number, buf: Buffer, fds: number[]): number;
}

let addon: Addon | undefined;

function load(): Addon {
  if (addon) return addon;
  const path = buildBinary("berth-sys.node");
  try {
    // process.dlopen, not require: the module loader's first use costs every command its set-up
    const m = { exports: {} as Addon };
    process.dlopen(m, path);
    addon = m.exports;
  } catch (e) {
    throw new BerthError("System", `cannot load ${path} (${(e as Error).message.split("\n")[0]})`, { code: ErrorCode.NOT_BUILT, hint: "run ./install.sh (or npm run build) to build it" });
  }
  return addon;
}

declare global {
  /** Set in a warm process of `berth system warm` (src/cli/berth/warm.ts): reports the exit status. */
  var berthExitReport: ((code: number) => void) | undefined;
}

/** errno values as this platform defines them (Node's table, not a copy of the C headers). */
export const ERRNO = constants.errno as typeof constants.errno & { ENODATA: number; ENOTSUP: number };

/** The C library's words for an errno, as Go writes them ("permission denied"). */
export function strerror(errno: number): string {
  const text = load().strerror(errno);
  return text.charAt(0).toLowerCase() + text.slice(1);
}

/** A failed system call: the call, the path, the errno and the kernel's words. */
export class SyscallError extends BerthError {
  constructor(
    readonly call: string,
    readonly errno: number,
    readonly target: string,
  ) {
    super("System", `${call} ${target}: ${load().strerror(errno)}`);
    this.name = "SyscallError";
  }
}

function check(call: string, target: string, rc: number): number {
  if (rc < 0) throw new SyscallError(call, -rc, target);
  return rc;
}

export const { LOCK_SH, LOCK_EX, LOCK_NB, LOCK_UN } = K;

/** flock(2) without blocking: true if taken, false if another process holds it. */
export function tryFlock(fd: number, op: number): boolean {
  const rc = load().flock(fd, op | LOCK_NB);
  if (rc === 0) return true;
  if (rc === -ERRNO.EAGAIN) return false;
  throw new SyscallError("flock", -rc, `fd ${fd}`);
}

export function mount(source: string, target: string, fstype: string | null, flags: number, data: string | null): void {
  check("mount", target, load().mount(source, target, fstype, flags, data));
}

/** mount on the thread pool: the mount's time in the kernel overlaps the caller's work. */
export async function mountAsync(source: string, target: string, fstype: string, flags: number, data: string): Promise<void> {
  check("mount", target, await load().mountAsync(source, target, fstype, flags, data));
}

export const { MNT_DETACH } = K;
export function umount(target: string, flags = 0): void {
  check("umount", target, load().umount2(target, flags));
}

/** umount on a worker thread: other work goes on meanwhile. */
export async function umountAsync(target: string, flags = 0): Promise<void> {
  check("umount", target, await load().umount2Async(target, flags));
}

export function lsetxattr(path: string, name: string, value: Buffer): void {
  check(`setxattr ${name}`, path, load().lsetxattr(path, name, value));
}

export function lgetxattr(path: string, name: string): Buffer | undefined {
  const buf = Buffer.alloc(65536);
  const n = load().lgetxattr(path, name, buf);
  if (n < 0) {
    const e = -n;
    if (e === ERRNO.ENODATA || e === ERRNO.ENOTSUP) return undefined;
    throw new SyscallError(`getxattr ${name}`, e, path);
  }
  return buf.subarray(0, n);
}

export function llistxattr(path: string): string[] {
  const buf = Buffer.alloc(65536);
  const n = load().llistxattr(path, buf);
  if (n < 0) {
    const e = -n;
    if (e === ERRNO.ENOTSUP) return [];
    throw new SyscallError("listxattr", e, path);
  }
  return buf
    .subarray(0, n)
    .toString("latin1")
    .split("\0")
    .filter((s) => s.length > 0);
}

export const { S_IFCHR, S_IFBLK, S_IFIFO } = fsConstants;
export function mknod(path: string, mode: number, major = 0, minor = 0): void {
  check("mknod", path, load().mknod(path, mode, major, minor));
}

/** Set a terminal's window size (any fd of the terminal: master or slave). */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  check("ioctl TIOCSWINSZ", `fd ${fd}`, load().setWindowSize(fd, rows, cols));
}

/**
 * rm -rf in one native call (several times faster than fs.rmSync on a container's few dozen
 * files), never following symlinks and never reaching into a mount: a mount point found inside
 * is detached first with `detachMounts`, else the removal fails with EXDEV. A missing path is fine.
 */
export function removeTree(path: string, opts: { detachMounts?: boolean } = {}): void {
  check("remove", path, load().removeTree(path, opts.detachMounts ?? false));
}

/**
 * Removes a file (not a directory); one that is not there is fine. Node's rmSync loads its rimraf
 * on first use (a cost paid on every start otherwise).
 */
export function removeFile(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** removeTree on libuv's thread pool: removals of independent trees overlap each other. */
export async function removeTreeAsync(path: string, opts: { detachMounts?: boolean } = {}): Promise<void> {
  check("remove", path, await load().removeTreeAsync(path, opts.detachMounts ?? false));
}

/** A new pseudo-terminal: [master, slave], both close-on-exec. */
export function openpty(): [number, number] {
  const r = load().openpty();
  if (typeof r === "number") throw new SyscallError("openpty", -r, "");
  return r;
}

/** pipe2(O_CLOEXEC): [read end, write end]. */
export function pipe(): [number, number] {
  const r = load().pipe();
  if (typeof r === "number") throw new SyscallError("pipe", -r, "");
  return r;
}

/**
 * posix_spawn in a new session: child fd i is our fds[i] (-1: /dev/null), the rest closed, signals
 * at their defaults. No copy of Node's page tables (as fork makes). Returns the pid; the caller
 * reaps it with waitChild.
 */
export function spawn(file: string, argv: string[], fds: number[]): number {
  return check("spawn", file, load().spawn(file, argv, fds));
}

/** A unix stream socket bound to path and listening; its fd (close-on-exec). */
export function listenUnix(path: string): number {
  return check("listen", path, load().listenUnix(path));
}

/** Blocks until a connection comes on the listening fd: its fd (close-on-exec) and the peer's pid and uid. */
export function acceptPeer(fd: number): { fd: number; pid: number; uid: number } {
  const r = load().acceptPeer(fd);
  if (typeof r === "number") throw new SyscallError("accept", -r, "");
  return { fd: r[0], pid: r[1], uid: r[2] };
}

/** One recvmsg into buf: the bytes read and the fds passed with them (close-on-exec). */
export function recvFds(fd: number, buf: Buffer): { bytes: number; fds: number[] } {
  const r = load().recvFds(fd, buf);
  if (typeof r === "number") throw new SyscallError("recvmsg", -r, "");
  return { bytes: r[0]!, fds: r.slice(1) };
}

/** dup2: `to` now refers to what `from` does (open across exec). */
export function dup2(from: number, to: number): void {
  check("dup2", String(to), load().dup2(from, to));
}

/** dup: another fd (close-on-exec) for what fd refers to. */
export function dup(fd: number): number {
  return check("dup", String(fd), load().dup(fd));
}

/** One sendmsg of buf with fds attached (SCM_RIGHTS). */
export function sendFds(fd: number, buf: Buffer, fds: number[]): void {
  const n = check("sendmsg", String(fd), load().sendFds(fd, buf, fds));
  if (n !== buf.length) throw new BerthError("System", `sendmsg: ${n} of ${buf.length} bytes sent`);
}

/** A sealed memfd (close-on-exec) holding the program at path: exec'd through /proc/PID/fd/N. */
export function sealedCopy(path: string): number {
  return check("copy", path, load().sealedCopy(path));
}

/** execv: this process becomes the program (same pid, environment as process.env has it, the fds in keep open); returns only by throwing. */
export function execv(file: string, argv: string[], keep: number[] = [0, 1, 2]): never {
  check("execv", file, load().execv(file, argv, keep));
  throw new BerthError("System", `execv ${file}: returned`);
}

/** mkdir (0755) of each path, in order, in one job on the thread pool; one that exists is fine. */
export async function mkdirsAsync(paths: string[]): Promise<void> {
  check("mkdir", paths.join(", "), await load().mkdirsAsync(paths));
}

/** spawn on the thread pool: the program's exec overlaps the caller's work. fds are duplicated at
 * the call (the caller may close its own at once). */
export async function spawnAsync(file: string, argv: string[], fds: number[]): Promise<number> {
  return check("spawn", file, await load().spawnAsync(file, argv, fds));
}

/** waitpid: blocks until that child of ours exits; its exit code (128+N for signal N). */
export function waitChild(pid: number): number {
  return check("waitpid", String(pid), load().waitpid(pid));
}

/** waitChild on libuv's thread pool: the exit code (128+signal) when the child ends. */
export async function waitChildAsync(pid: number): Promise<number> {
  return check("waitpid", String(pid), await load().waitpidAsync(pid));
}

/**
 * Adds (or deletes) one element of an nf_tables map of the ip family over netlink, in-process:
 * publishing a port costs no process start. KEY and DATA are the element's bytes.
 */
export function nftMapElem(add: boolean, table: string, map: string, key: Buffer, data?: Buffer): void {
  check(add ? "add map element" : "delete map element", `${table} ${map}`, load().nftMapElem(add, table, map, key, data));
}

/** Waits up to timeoutMs for fd to be readable (or for its writers to be gone): whether it is. */
export function pollIn(fd: number, timeoutMs: number): boolean {
  return check("poll", String(fd), load().pollIn(fd, timeoutMs)) > 0;
}

/**
 * Opens `path` now and writes `data` on a detached thread of its own: for a write that blocks in
 * the kernel, without holding one of libuv's pool threads (or making the pool). Settles when the
 * write is done (a SyscallError for the open's or the write's failure); it does not keep the
 * process alive, and the process may exit before it settles.
 */
export function writeDetached(path: string, data: string): Promise<void> {
  let fd: number;
  try {
    fd = check("open", path, load().writeDetached(path, data));
  } catch (e) {
    return Promise.reject(e);
  }
  // the thread's report arrives on a pipe, read through the event loop (no pool thread waits on it)
  const { Socket } = builtin<typeof import("node:net")>("node:net");
  const report = new Socket({ fd, readable: true, writable: false });
  report.unref();
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    report.on("data", (d: Buffer) => chunks.push(d));
    report.on("error", reject);
    report.on("close", () => {
      const b = Buffer.concat(chunks);
      const rc = b.length >= 4 ? (endianness() === "LE" ? b.readInt32LE(0) : b.readInt32BE(0)) : -ERRNO.EIO;
      if (rc < 0) reject(new SyscallError("write", -rc, path));
      else resolve();
    });
  });
}

/**
 * Whether a host port can be had: binds (TCP: and listens on) ip:port and lets go. The port (the
 * kernel's pick when 0 was asked), or undefined when something holds it.
 */
export function portFree(proto: "tcp" | "udp", ip: string, port: number): number | undefined {
  const rc = load().portFree(proto === "udp", ip, port);
  if (rc >= 0) return rc;
  if (rc === -98 /* EADDRINUSE */ || rc === -13 /* EACCES */ || rc === -99 /* EADDRNOTAVAIL */) return undefined;
  throw new SyscallError("bind", -rc, `${ip}:${port}/${proto}`);
}

/** nftMapElem on a worker thread: deleting an element waits for an RCU grace period in the kernel. */
export async function nftMapElemAsync(add: boolean, table: string, map: string, key: Buffer, data?: Buffer): Promise<void> {
  check(add ? "add map element" : "delete map element", `${table} ${map}`, await load().nftMapElemAsync(add, table, map, key, data));
}

/**
 * Runs a short-lived program to its end on a worker thread (posix_spawn, stderr collected,
 * waitpid): the event loop never pays for starting it. Its exit code (128+N for signal N) and stderr.
 */
export async function runToEnd(argv: string[]): Promise<{ code: number; stderr: string }> {
  const [rc, stderr] = await load().runAsync(argv);
  if (rc < 0) throw new SyscallError("spawn", -rc, argv[0]!);
  return { code: rc, stderr };
}

/**
 * Ends the process at once with `code` (_exit), after running its 'exit' listeners as Node would:
 * Node's own exit tears down its platform threads and heap first, on every command. Falls
 * back to process.exit when the addon cannot load. Output must have been flushed.
 */
export function exitNow(code: number): never {
  let addon: Addon;
  try {
    addon = load();
  } catch {
    // the addon cannot load: exit without its fast path, with the same code
    process.exit(code);
  }
  process.exitCode = code;
  process.emit("exit", code);
  // a warm process tells its client now, not after the kernel has torn down its heap (~8 ms)
  globalThis.berthExitReport?.(code);
  addon.exitNow(code);
  process.exit(code);
}

/** Bytes of regular files below dir (links and directories count nothing), for sizes docker reports. */
export function treeBytes(dir: string): number {
  let n = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = `${d}/${e.name}`;
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) n += lstatSync(p).size;
    }
  };
  try {
    walk(dir);
  } catch {
    /* removed meanwhile: what was counted */
  }
  return n;
}
