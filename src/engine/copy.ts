/**
 * Copying files out of and into a container's root file system as tar streams: `berth cp` and the
 * Docker API's archive endpoints. The container may be running, and its processes may change its
 * tree while the copy runs (swap a directory for a symlink to `/`, CVE-2018-15664): every path is
 * resolved inside the root through held file descriptors (common/inroot.ts), the archive is read
 * through held directories, and extraction into the container writes through held parents, so a
 * swap can only redirect a copy to somewhere else inside the same container.
 */
import * as fs from "node:fs";
import { BerthError, invalid, notFound } from "../common/errors.js";
import { fdPath, openInRoot, openParentInRoot, openRoot } from "../common/inroot.js";
import { extractLayer, packDirectory } from "../images/index.js";

/** What the Docker API's X-Docker-Container-Path-Stat carries. */
export interface PathStat {
  name: string;
  size: number;
  /** Go's os.FileMode bits, as dockerd sends them. */
  mode: number;
  mtime: string;
  linkTarget: string;
}

const missing = (e: unknown) => ["ENOENT", "ENOTDIR"].includes((e as NodeJS.ErrnoException).code ?? "");

/** Go's os.FileMode for a stat: permission bits plus the type bits Go puts high. */
function goMode(st: fs.Stats): number {
  let m = st.mode & 0o777;
  if (st.isDirectory()) m |= 0x80000000;
  else if (st.isSymbolicLink()) m |= 0x08000000;
  else if (st.isFIFO()) m |= 0x02000000;
  else if (st.isSocket()) m |= 0x01000000;
  else if (st.isCharacterDevice()) m |= 0x04000000 | 0x00200000;
  else if (st.isBlockDevice()) m |= 0x04000000;
  if (st.mode & 0o4000) m |= 0x00800000;
  if (st.mode & 0o2000) m |= 0x00400000;
  if (st.mode & 0o1000) m |= 0x00100000;
  return m >>> 0;
}

/** The entry at `path` in the root (a last symlink not followed), or undefined when there is none. */
export function statInRoot(root: string, path: string): PathStat | undefined {
  const rootFd = openRoot(root);
  let at: { dirFd: number; name: string } | undefined;
  try {
    at = openParentInRoot(rootFd, path, false);
    const p = at.name ? fdPath(at.dirFd, at.name) : fdPath(at.dirFd);
    const st = at.name ? fs.lstatSync(p, { throwIfNoEntry: false }) : fs.statSync(p);
    if (!st) return undefined;
    const base = path.split("/").filter(Boolean).pop() ?? "/";
    let linkTarget = "";
    try {
      if (st.isSymbolicLink()) linkTarget = fs.readlinkSync(p);
    } catch {
      // no longer a link (a live tree changed meanwhile): reported as what lstat saw, without a target
    }
    return { name: base, size: st.size, mode: goMode(st), mtime: st.mtime.toISOString(), linkTarget };
  } catch (e) {
    if (missing(e)) return undefined;
    throw e;
  } finally {
    if (at) fs.closeSync(at.dirFd);
    fs.closeSync(rootFd);
  }
}

/**
 * A tar of `path` in the root, handed to `consume` while the root is held: its top entry named
 * after the path's last name (or `rename`), or, for `DIR/.` and `/`, the directory's contents.
 * followLink: a last symlink is copied as what it points to (docker cp -L).
 */
export async function copyOut<T>(root: string, path: string, opts: { followLink?: boolean; rename?: string }, consume: (tar: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
  const rootFd = openRoot(root);
  let at: { dirFd: number; name: string } | undefined;
  try {
    const contentsOnly = /(^|\/)\.$/.test(path) || path.split("/").every((p) => !p);
    try {
      at = contentsOnly ? { dirFd: openInRoot(rootFd, path, true), name: "" } : openParentInRoot(rootFd, path, !!opts.followLink);
    } catch (e) {
      if (missing(e)) throw notFound(`Could not find the file ${path} in the container`);
      throw e;
    }
    const { dirFd, name } = at;
    if (!name) {
      if (!fs.statSync(fdPath(dirFd)).isDirectory()) throw invalid(`${path}: not a directory`);
      return await consume(packDirectory(fdPath(dirFd)));
    }
    if (!fs.lstatSync(fdPath(dirFd, name), { throwIfNoEntry: false })) throw notFound(`Could not find the file ${path} in the container`);
    const top = opts.rename ?? name;
    return await consume(
      packDirectory(fdPath(dirFd), {
        exclude: (rel) => rel !== name && !rel.startsWith(name + "/"),
        rename: (rel) => top + rel.slice(name.length),
      }),
    );
  } finally {
    if (at) fs.closeSync(at.dirFd);
    fs.closeSync(rootFd);
  }
}

/**
 * Extracts a tar into the directory `dir` of the root (docker's PUT /containers/{id}/archive):
 * owned by the container's root unless keepOwners (docker cp -a); files replace files, a directory never becomes a file or the reverse, and no write goes through
 * a symlink (the container's own ones included).
 */
export async function copyIn(root: string, dir: string, tar: AsyncIterable<Buffer>, opts: { keepOwners?: boolean } = {}): Promise<void> {
  const rootFd = openRoot(root);
  let dirFd = -1;
  try {
    try {
      dirFd = openInRoot(rootFd, dir, true);
    } catch (e) {
      if (missing(e)) throw notFound(`Could not find the file ${dir} in the container`);
      throw e;
    }
    if (!fs.fstatSync(dirFd).isDirectory()) throw new BerthError("InvalidArgument", `extraction point is not a directory: ${dir}`);
    await extractLayer(tar, fdPath(dirFd), "into", undefined, { keepOwners: !!opts.keepOwners });
  } finally {
    if (dirFd >= 0) fs.closeSync(dirFd);
    fs.closeSync(rootFd);
  }
}

/** A container's root file system as a tar (docker export), without the kernel file systems mounted into it at run time. */
export function exportRootfs<T>(root: string, consume: (tar: AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
  return consume(packDirectory(root, { exclude: (rel) => rel === "proc" || rel === "sys" || rel === "dev" }));
}

/** A tar of one host path (a file, link or directory tree), its top entry named `name`; `DIR/.` gives DIR's contents. */
export async function* archiveHostPath(path: string, name?: string): AsyncGenerator<Buffer> {
  if (/\/\.$/.test(path)) {
    yield* packDirectory(path.slice(0, -2) || "/");
    return;
  }
  const parts = path.split("/");
  const top = parts.pop() || path;
  const dir = parts.join("/") || (path.startsWith("/") ? "/" : ".");
  const rename = name ?? top;
  yield* packDirectory(dir, { exclude: (rel) => rel !== top && !rel.startsWith(top + "/"), rename: (rel) => rename + rel.slice(top.length) });
}

/** Extracts a tar copied out of a container into a host directory: the files belong to whoever runs this (docker's rule). */
export async function extractToHost(tar: AsyncIterable<Buffer>, dir: string): Promise<void> {
  await extractLayer(tar, dir, "into", undefined, { keepOwners: false });
}
