/**
 * Directory trees to tar streams: for `save`, `export`, `commit`, `import` of the default image.
 * In "overlay-diff" form an overlay upper dir becomes a layer: 0/0 char devices turn into `.wh.`
 * whiteouts and trusted.overlay.opaque into `.wh..wh..opq`, as docker's overlay2 driver writes them.
 */
import * as fs from "node:fs";
import { BerthError } from "../common/errors.js";
import { fdPath } from "../common/inroot.js";
import { lgetxattr, llistxattr } from "../common/sys.js";
import { encodeHeader, END_OF_ARCHIVE, padding, type EntryType, type TarHeader } from "./tar.js";

export interface PackOptions {
  form?: "plain" | "overlay-diff";
  /** Relative paths (no leading slash) to leave out, with everything below them. */
  exclude?: (rel: string) => boolean;
  /** Include extended attributes (security.capability and user.*). */
  xattrs?: boolean;
  /** The name an entry gets in the archive (default: its path below dir). */
  rename?: (rel: string) => string;
  /** Changes an entry's header before it is written (a build's --chown and --chmod). */
  edit?: (h: Partial<TarHeader> & { name: string; type: EntryType }) => void;
}

const names = new Map<number, string>();

function headerFor(abs: string, rel: string, st: fs.Stats, hardlinks: Map<string, string>, opts: PackOptions): { h: Partial<TarHeader> & { name: string; type: EntryType }; file: boolean } {
  const base = { name: rel, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtime: Math.floor(st.mtimeMs / 1000), uname: names.get(st.uid) ?? "", gname: "" };
  const xattrs = new Map<string, Buffer>();
  if (opts.xattrs !== false && !st.isSymbolicLink())
    for (const k of llistxattr(abs))
      if (k === "security.capability" || k.startsWith("user.")) {
        const v = lgetxattr(abs, k);
        if (v) xattrs.set(k, v);
      }
  if (st.isDirectory()) return { h: { ...base, type: "directory", xattrs }, file: false };
  if (st.isSymbolicLink()) return { h: { ...base, type: "symlink", linkname: readlinkStill(abs) }, file: false };
  if (st.isFile()) {
    if (st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = hardlinks.get(key);
      if (first) return { h: { ...base, type: "hardlink", linkname: first }, file: false };
      hardlinks.set(key, rel);
    }
    return { h: { ...base, type: "file", size: st.size, xattrs }, file: true };
  }
  const major = Number((BigInt(st.rdev) >> 8n) & 0xfffn),
    minor = Number((BigInt(st.rdev) & 0xffn) | ((BigInt(st.rdev) >> 12n) & 0xfff00n));
  if (st.isCharacterDevice()) return { h: { ...base, type: "char", devmajor: major, devminor: minor }, file: false };
  if (st.isBlockDevice()) return { h: { ...base, type: "block", devmajor: major, devminor: minor }, file: false };
  if (st.isFIFO()) return { h: { ...base, type: "fifo" }, file: false };
  return { h: { ...base, type: "file", size: 0 }, file: false }; // sockets: an empty placeholder, as docker does
}

/**
 * Tar a directory tree, sorted by name for reproducible output. The tree may be changing (a running
 * container's): each directory is held open while it is read and every entry is reached through
 * it (`/proc/self/fd/N/name`) and opened with O_NOFOLLOW, so a directory swapped for a symlink
 * meanwhile is archived as that link, never followed out of the tree.
 */
export async function* packDirectory(dir: string, opts: PackOptions = {}): AsyncGenerator<Buffer> {
  const hardlinks = new Map<string, string>();
  const buf = Buffer.allocUnsafe(1 << 20);
  async function* walk(dirFd: number, rel: string): AsyncGenerator<Buffer> {
    const entries = fs.readdirSync(fdPath(dirFd)).sort();
    for (const name of entries) {
      const childRel = rel ? `${rel}/${name}` : name;
      if (opts.exclude?.(childRel)) continue;
      const childAbs = fdPath(dirFd, name);
      const st = fs.lstatSync(childAbs, { throwIfNoEntry: false });
      if (!st) continue; // removed since the directory was read
      if (opts.form === "overlay-diff" && st.isCharacterDevice() && st.rdev === 0) {
        const dirPart = rel ? `${rel}/` : "";
        yield encodeHeader({ name: `${dirPart}.wh.${name}`, type: "file", size: 0, mode: 0o644, mtime: Math.floor(st.mtimeMs / 1000) });
        continue;
      }
      const { h, file } = headerFor(childAbs, opts.rename ? opts.rename(childRel) : childRel, st, hardlinks, opts);
      opts.edit?.(h);
      yield encodeHeader(h);
      if (file) {
        const fd = openSame(childAbs, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK, st);
        try {
          let left = st.size;
          for (let off = 0; left > 0; ) {
            const n = fs.readSync(fd, buf, 0, Math.min(buf.length, left), off);
            if (n <= 0) throw new Error(`${childAbs} shrank while being archived`);
            yield Buffer.from(buf.subarray(0, n));
            off += n;
            left -= n;
          }
        } finally {
          fs.closeSync(fd);
        }
        yield padding(st.size);
      }
      if (st.isDirectory()) {
        if (opts.form === "overlay-diff" && lgetxattr(childAbs, "trusted.overlay.opaque")?.toString() === "y")
          yield encodeHeader({ name: `${childRel}/.wh..wh..opq`, type: "file", size: 0, mode: 0o644 });
        const sub = openSame(childAbs, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY, st);
        try {
          yield* walk(sub, childRel);
        } finally {
          fs.closeSync(sub);
        }
      }
    }
  }
  const top = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  try {
    yield* walk(top, "");
  } finally {
    fs.closeSync(top);
  }
  yield END_OF_ARCHIVE;
}

/** A link's target; the entry swapped for something else since lstat (a live tree) is an error. */
function readlinkStill(path: string): string {
  try {
    return fs.readlinkSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EINVAL") throw new BerthError("FailedPrecondition", `${path} changed while being archived`);
    throw e;
  }
}

/** Opens an entry without following a link, and only when it is still the one lstat saw. */
function openSame(path: string, flags: number, st: fs.Stats): number {
  const fd = fs.openSync(path, flags | fs.constants.O_NOFOLLOW);
  const now = fs.fstatSync(fd);
  if (now.ino !== st.ino || now.dev !== st.dev) {
    fs.closeSync(fd);
    throw new BerthError("FailedPrecondition", `${path} changed while being archived`);
  }
  return fd;
}
