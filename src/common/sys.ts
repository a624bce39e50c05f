/**
 * The few system calls Node does not offer (flock, mount, umount2, xattrs, mknod), called through
 * koffi. Loaded on first use only: koffi costs ~10 ms to load, and read-only commands never need it.
 */
import { createRequire } from "node:module";
import { BerthError } from "./errors.js";

interface Libc {
  flock: (fd: number, op: number) => number;
  mount: (src: string, target: string, fstype: string | null, flags: number, data: string | null) => number;
  umount2: (target: string, flags: number) => number;
  lsetxattr: (path: string, name: string, value: Buffer, size: number, flags: number) => number;
  lgetxattr: (path: string, name: string, value: Buffer | null, size: number) => number;
  llistxattr: (path: string, list: Buffer | null, size: number) => number;
  mknod: (path: string, mode: number, dev: bigint) => number;
  ioctl: (fd: number, req: number, arg: Buffer) => number;
  errno: () => number;
  strerror: (e: number) => string;
}

let libc: Libc | undefined;

function load(): Libc {
  if (libc) return libc;
  const require = createRequire(import.meta.url ?? __filename);
  const koffi = require("koffi");
  const lib = koffi.load("libc.so.6");
  const errnoLocation = lib.func("int *__errno_location(void)");
  libc = {
    flock: lib.func("int flock(int, int)"),
    mount: lib.func("int mount(const char *, const char *, const char *, unsigned long, const char *)"),
    umount2: lib.func("int umount2(const char *, int)"),
    lsetxattr: lib.func("int lsetxattr(const char *, const char *, const void *, size_t, int)"),
    lgetxattr: lib.func("long lgetxattr(const char *, const char *, _Out_ void *, size_t)"),
    llistxattr: lib.func("long llistxattr(const char *, _Out_ void *, size_t)"),
    mknod: lib.func("int mknod(const char *, uint32_t, uint64_t)"),
    ioctl: lib.func("int ioctl(int, unsigned long, void *)"),
    errno: () => koffi.decode(errnoLocation(), "int") as number,
    strerror: lib.func("const char *strerror(int)"),
  };
  return libc;
}

declare const __filename: string;

export const ERRNO = { EPERM: 1, ENOENT: 2, EINTR: 4, EAGAIN: 11, EBUSY: 16, EINVAL: 22, ENODATA: 61, ENOTSUP: 95 } as const;

/** A failed system call: the call, the path, the errno and the kernel's words. */
export class SyscallError extends BerthError {
  constructor(
    readonly call: string,
    readonly errno: number,
    target: string,
  ) {
    super("System", `${call} ${target}: ${load().strerror(errno)}`);
    this.name = "SyscallError";
  }
}

function check(call: string, target: string, rc: number | bigint): number {
  if (Number(rc) < 0) throw new SyscallError(call, load().errno(), target);
  return Number(rc);
}

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;

/** flock(2) without blocking: true if taken, false if another process holds it. */
export function tryFlock(fd: number, op: number): boolean {
  const c = load();
  const rc = c.flock(fd, op | LOCK_NB);
  if (rc === 0) return true;
  const e = c.errno();
  if (e === ERRNO.EAGAIN) return false;
  throw new SyscallError("flock", e, `fd ${fd}`);
}

export function mount(source: string, target: string, fstype: string | null, flags: number, data: string | null): void {
  check("mount", target, load().mount(source, target, fstype, flags, data));
}

export const MNT_DETACH = 2;
export function umount(target: string, flags = 0): void {
  check("umount", target, load().umount2(target, flags));
}

export function lsetxattr(path: string, name: string, value: Buffer): void {
  check(`setxattr ${name}`, path, load().lsetxattr(path, name, value, value.length, 0));
}

export function lgetxattr(path: string, name: string): Buffer | undefined {
  const c = load();
  const buf = Buffer.alloc(65536);
  const n = c.lgetxattr(path, name, buf, buf.length);
  if (n < 0) {
    const e = c.errno();
    if (e === ERRNO.ENODATA || e === ERRNO.ENOTSUP) return undefined;
    throw new SyscallError(`getxattr ${name}`, e, path);
  }
  return buf.subarray(0, n);
}

export function llistxattr(path: string): string[] {
  const c = load();
  const buf = Buffer.alloc(65536);
  const n = c.llistxattr(path, buf, buf.length);
  if (n < 0) {
    const e = c.errno();
    if (e === ERRNO.ENOTSUP) return [];
    throw new SyscallError("listxattr", e, path);
  }
  return buf
    .subarray(0, n)
    .toString("latin1")
    .split("\0")
    .filter((s) => s.length > 0);
}

export const S_IFCHR = 0o020000;
export const S_IFBLK = 0o060000;
export const S_IFIFO = 0o010000;
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major),
    mi = BigInt(minor);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) | (mi & 0xffn);
}
export function mknod(path: string, mode: number, major = 0, minor = 0): void {
  check("mknod", path, load().mknod(path, mode, makedev(major, minor)));
}

const TIOCSWINSZ = 0x5414;
/** Set a terminal's window size (any fd of the terminal: master or slave). */
export function setWindowSize(fd: number, rows: number, cols: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows, 0);
  ws.writeUInt16LE(cols, 2);
  check("ioctl TIOCSWINSZ", `fd ${fd}`, load().ioctl(fd, TIOCSWINSZ, ws));
}
