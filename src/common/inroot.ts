/**
 * Paths inside a tree that someone else may be changing at the same time (a running container's
 * root file system), walked one name at a time through file descriptors. A path string like
 * `root/a/b` is looked up again by the kernel at every use, so a directory swapped for a symlink
 * between a check and the use sends the use to the host (CVE-2018-15664, `docker cp`). Here every
 * step opens a single name relative to a directory already held open, with O_NOFOLLOW, and names
 * below a held directory are used as `/proc/self/fd/N/name`: the kernel resolves that through the
 * open directory itself, whatever happened to its path meanwhile. Symlinks are followed by hand,
 * inside the root (an absolute target restarts at the root, `..` never climbs above it), as the
 * kernel's RESOLVE_IN_ROOT does; the walk needs no syscall Node lacks and works for any user.
 */
import * as fs from "node:fs";
import { BerthError, invalid } from "./errors.js";
import { K } from "./kernel-abi.js";

/** open(2)'s O_PATH (Linux): a handle for walking and fstat, not for reading. */
export const { O_PATH } = K;
const { O_NOFOLLOW, O_DIRECTORY } = fs.constants;
const { O_CLOEXEC } = K;

/** The path through which the kernel reaches what fd refers to (and `name` below it, not followed when last). */
export const fdPath = (fd: number, name?: string): string => (name === undefined ? `/proc/self/fd/${fd}` : `/proc/self/fd/${fd}/${name}`);

/** An O_PATH fd of root, the starting point of the walks below. */
export function openRoot(root: string): number {
  return fs.openSync(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

const errno = (code: string, message: string) => Object.assign(new Error(message), { code });

/**
 * An O_PATH fd of `path` resolved inside the directory rootFd as the container would resolve it:
 * symlinks on the way are followed inside the root; the last one too when followLast. Throws
 * ENOENT/ENOTDIR/ELOOP errors (with `code`) as open(2) would. The caller closes the fd.
 */
export function openInRoot(rootFd: number, path: string, followLast: boolean): number {
  return openInRootAt(rootFd, path, followLast).fd;
}

/**
 * The directory that holds the last name of `path` (resolved inside the root, held open) and that
 * name, following a last symlink inside the root when followLast. name is "" when the path names
 * the root itself (or ends in ..): dirFd is then that directory.
 */
export function openParentInRoot(rootFd: number, path: string, followLast: boolean): { dirFd: number; name: string } {
  let p = path;
  for (let hops = 0; ; hops++) {
    const parts = p.split("/").filter((x) => x && x !== ".");
    const name = parts.pop();
    if (name === undefined || name === "..") return { dirFd: openInRoot(rootFd, p, true), name: "" };
    const parent = openInRootAt(rootFd, parts.join("/"), true);
    if (!followLast) return { dirFd: parent.fd, name };
    const st = fs.lstatSync(fdPath(parent.fd, name), { throwIfNoEntry: false });
    if (!st?.isSymbolicLink()) return { dirFd: parent.fd, name };
    const target = readlinkOrUndefined(fdPath(parent.fd, name));
    if (target === undefined) return { dirFd: parent.fd, name }; // no longer a link
    fs.closeSync(parent.fd);
    if (hops >= 40) throw errno("ELOOP", `too many levels of symbolic links: ${path}`);
    p = target.startsWith("/") ? target : `${parent.path}/${target}`;
  }
}

/** A link's target; undefined when the name is no longer a link (EINVAL: swapped meanwhile). */
function readlinkOrUndefined(path: string): string | undefined {
  try {
    return fs.readlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EINVAL") return undefined;
    throw e;
  }
}

/** openInRoot, with the path inside the root it resolved to. */
function openInRootAt(rootFd: number, path: string, followLast: boolean): { fd: number; path: string } {
  const stack: number[] = [];
  const names: string[] = [];
  const top = () => (stack.length ? stack[stack.length - 1]! : rootFd);
  let parts = path.split("/").filter((p) => p && p !== ".");
  let hops = 0;
  try {
    while (parts.length) {
      const name = parts.shift()!;
      if (name === "..") {
        if (stack.length) fs.closeSync(stack.pop()!);
        names.pop();
        continue;
      }
      const fd = fs.openSync(fdPath(top(), name), O_PATH | O_NOFOLLOW | O_CLOEXEC);
      const st = fs.fstatSync(fd);
      if (st.isSymbolicLink() && (parts.length || followLast)) {
        fs.closeSync(fd);
        if (++hops > 40) throw errno("ELOOP", `too many levels of symbolic links: ${path}`);
        // read by name under the held parent: a link swapped meanwhile is still read inside the root,
        // and a name that is no longer a link is looked at again
        const target = readlinkOrUndefined(fdPath(top(), name));
        if (target === undefined) {
          parts.unshift(name);
          continue;
        }
        if (target.startsWith("/")) {
          while (stack.length) fs.closeSync(stack.pop()!);
          names.length = 0;
        }
        parts = [...target.split("/").filter((p) => p && p !== "."), ...parts];
        continue;
      }
      if (parts.length && !st.isDirectory()) {
        fs.closeSync(fd);
        throw errno("ENOTDIR", `not a directory: ${name} in ${path}`);
      }
      stack.push(fd);
      names.push(name);
    }
    const resolved = "/" + names.join("/");
    return { fd: stack.length ? stack.pop()! : fs.openSync(fdPath(rootFd), O_PATH | O_DIRECTORY | O_CLOEXEC), path: resolved };
  } finally {
    for (const fd of stack) fs.closeSync(fd);
  }
}

/**
 * An O_PATH fd of the directory `parts` below dirFd, refusing every symlink on the way (the tree's
 * own included): for writing into a live tree, where a link could only be a way out. Missing
 * directories are made (mode 0755) when `create`; `madeOne` hears of each.
 */
export function openDirBeneath(dirFd: number, parts: string[], create: boolean, madeOne?: (rel: string) => void): number {
  let cur = fs.openSync(fdPath(dirFd), O_PATH | O_DIRECTORY | O_CLOEXEC);
  try {
    for (let i = 0; i < parts.length; i++) {
      const name = parts[i]!;
      if (name === "." || name === ".." || !name || name.includes("/")) throw invalid(`bad path component ${JSON.stringify(name)}`);
      let next: number;
      try {
        next = fs.openSync(fdPath(cur, name), O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        const rel = parts.slice(0, i + 1).join("/");
        if (code === "ENOENT" && create) {
          try {
            fs.mkdirSync(fdPath(cur, name), 0o755);
          } catch (m) {
            if ((m as NodeJS.ErrnoException).code !== "EEXIST") throw m;
          }
          madeOne?.(rel);
          next = fs.openSync(fdPath(cur, name), O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
        } else if (code === "ENOTDIR" || code === "ELOOP") {
          const st = fs.lstatSync(fdPath(cur, name), { throwIfNoEntry: false });
          throw new BerthError("InvalidArgument", `${rel} is ${st?.isSymbolicLink() ? "a symlink (a write through it could leave the tree)" : "not a directory"}`);
        } else throw e;
      }
      fs.closeSync(cur);
      cur = next;
    }
    return cur;
  } catch (e) {
    fs.closeSync(cur);
    throw e;
  }
}

/** chmod/utimes of the entry `name` in the held directory dirFd, never through a symlink. */
export function setModeAndTimes(dirFd: number, name: string, mode: number | undefined, times?: [number, number]): void {
  const fd = fs.openSync(fdPath(dirFd, name), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  try {
    if (fs.fstatSync(fd).isSymbolicLink()) return; // links have no mode of their own; their times are set with lutimes
    // through the magic link the kernel changes the inode fd holds, not whatever the name is now
    if (mode !== undefined) fs.chmodSync(fdPath(fd), mode);
    if (times) fs.utimesSync(fdPath(fd), times[0], times[1]);
  } finally {
    fs.closeSync(fd);
  }
}
