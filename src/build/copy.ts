/**
 * COPY and ADD: sources (the build context, another stage's or image's root, heredocs, URLs,
 * local archives) turned into tar streams whose entries carry the step's owner and mode, and
 * written into the step's root through held directories (common/inroot.ts): an image's own
 * symlinks resolve inside its root (Debian's `/bin` → `usr/bin`), never out to the host.
 * The same streams, with times zeroed, are hashed for the cache key: content, names, modes and
 * owners count; modification times do not (as docker).
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "../common/path.js";
import { BerthError, invalid, notFound } from "../common/errors.js";
import { fdPath, openInRoot, openRoot } from "../common/inroot.js";
import { spawn } from "node:child_process";
import { decompress, encodeHeader, END_OF_ARCHIVE, extractLayer, packDirectory } from "../images/index.js";
import { IgnoreMatcher, isGlob, patternRegex, cleanPattern } from "./ignore.js";

/** A file tree sources are read from: the context (with its .dockerignore) or a stage's root. */
export interface SourceTree {
  root: string;
  ignore?: IgnoreMatcher;
  /** "context" sources may not leave the root (`../x`, a symlink pointing out): an error, as docker. */
  kind: "context" | "stage";
  /** What messages call it: "build context", "stage builder". */
  label: string;
}

/** One thing to copy: a path in a tree, a heredoc's text, or a downloaded or local file. */
export type CopySource = PathSource | { kind: "inline"; name: string; content: Buffer; mode: number; mtime: number } | { kind: "archive"; file: string };

/** A path in a tree, its symlinks already resolved inside the tree (`rel`); `name` is the name it was asked by. */
export interface PathSource {
  kind: "path";
  tree: SourceTree;
  rel: string;
  isDir: boolean;
  name: string;
  /** The path as asked or matched, relative to the tree's root (links not resolved). */
  path: string;
  /** COPY --parents: the directories kept above it in the destination ("" for none). */
  parents?: string;
}

export interface CopyOwner {
  uid: number;
  gid: number;
}

/** Lists a tree's entries (relative paths) below `rel`, skipping ignored ones. */
function walk(tree: SourceTree, rel: string, out: string[]): void {
  const abs = rel ? join(tree.root, rel) : tree.root;
  let names: string[];
  try {
    names = fs.readdirSync(abs).sort();
  } catch {
    // not a directory (or gone): nothing to list, the caller reports missing sources
    return;
  }
  for (const n of names) {
    const r = rel ? `${rel}/${n}` : n;
    const ignored = tree.ignore?.ignores(r);
    if (ignored && !tree.ignore!.hasExceptions) continue;
    if (!ignored) out.push(r);
    if (fs.lstatSync(join(tree.root, r)).isDirectory()) walk(tree, r, out);
  }
}

/**
 * The sources a COPY source argument names: a path (files and directories), or a pattern with
 * `*`, `?`, `[`, `**`; errors say when .dockerignore left the source out.
 */
export function resolveSources(tree: SourceTree, arg: string): PathSource[] {
  const clean = cleanPattern(arg);
  if (tree.kind === "context" && (arg.split("/").includes("..") && normalizeUp(arg) === undefined)) throw invalid(`COPY failed: forbidden path outside the build context: ${arg}`);
  if (!isGlob(clean)) {
    const abs = clean ? join(tree.root, clean) : tree.root;
    if (clean && tree.ignore?.ignores(clean)) {
      throw notFound(`COPY failed: file not found in ${tree.label}: "${arg}" is excluded by .dockerignore (pattern ${tree.ignore.reason(clean) ?? "?"})`);
    }
    const st = statInside(tree, clean);
    if (!st) throw notFound(`COPY failed: file not found in ${tree.label}: stat ${arg}: file does not exist`);
    return [{ kind: "path", tree, rel: st.rel, isDir: st.isDir, name: abs.split("/").pop() || "", path: clean }];
  }
  const re = patternRegex(clean);
  const all: string[] = [];
  walk(tree, "", all);
  const hits = all.filter((r) => re.test(r));
  // a match inside a matched directory is copied with it
  const top = hits.filter((r) => !hits.some((o) => o !== r && r.startsWith(o + "/")));
  if (!top.length) throw notFound(`COPY failed: no source files were specified for ${arg}${tree.ignore?.patterns.length ? " (or .dockerignore excluded them)" : ""}`);
  return top.map((r) => {
    const st = statInside(tree, r)!;
    return { kind: "path" as const, tree, rel: st.rel, isDir: st.isDir, name: r.split("/").pop()!, path: r };
  });
}

/** `a/../b` stays inside; `../x` does not (undefined). */
function normalizeUp(p: string): string | undefined {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (!part || part === ".") continue;
    if (part === "..") {
      if (!out.length) return undefined;
      out.pop();
    } else out.push(part);
  }
  return out.join("/");
}

/**
 * A source's entry, its symlinks followed inside the tree (a context's symlink that points out of
 * it is an error). The path returned is the resolved one, relative to the tree's root.
 */
function statInside(tree: SourceTree, rel: string): { rel: string; isDir: boolean } | undefined {
  const rootFd = openRoot(tree.root);
  let fd = -1;
  try {
    try {
      fd = openInRoot(rootFd, rel, true);
    } catch (e) {
      if (["ENOENT", "ENOTDIR"].includes((e as NodeJS.ErrnoException).code ?? "")) {
        const link = tree.kind === "context" ? linkOnTheWay(tree.root, rel) : undefined;
        if (link) throw invalid(`COPY failed: forbidden path outside the build context: ${link.path} is a symlink to ${link.target}`);
        return undefined;
      }
      throw e;
    }
    const resolved = fs.readlinkSync(fdPath(fd));
    const rootReal = fs.readlinkSync(fdPath(rootFd));
    if (resolved !== rootReal && !resolved.startsWith(rootReal === "/" ? "/" : rootReal + "/")) throw invalid(`COPY failed: ${rel} leaves the ${tree.label}`);
    if (tree.kind === "context") {
      // openInRoot keeps a link inside the root; docker refuses a context link that points out of it
      const direct = fs.realpathSync(join(tree.root, rel));
      if (direct !== resolved) throw invalid(`COPY failed: forbidden path outside the build context: ${rel} (a symlink to ${direct})`);
    }
    return { rel: resolved === rootReal ? "" : resolved.slice(rootReal === "/" ? 1 : rootReal.length + 1), isDir: fs.fstatSync(fd).isDirectory() };
  } finally {
    if (fd >= 0) fs.closeSync(fd);
    fs.closeSync(rootFd);
  }
}

/** The first symlink on the way to rel in a context (to say why a source leads nowhere). */
function linkOnTheWay(root: string, rel: string): { path: string; target: string } | undefined {
  const parts = rel.split("/").filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const p = parts.slice(0, i).join("/");
    const st = fs.lstatSync(join(root, p), { throwIfNoEntry: false });
    if (!st) return undefined;
    if (st.isSymbolicLink()) return { path: p, target: fs.readlinkSync(join(root, p)) };
  }
  return undefined;
}

export interface CopyPlan {
  sources: CopySource[];
  /** The destination in the image, absolute. */
  dest: string;
  /** The destination is a directory (ends in `/`, several sources, or a directory in the image). */
  destIsDir: boolean;
  owner?: CopyOwner;
  chmod?: number;
  /** ADD: local archives are unpacked into the destination. */
  unpack: boolean;
  exclude: IgnoreMatcher | undefined;
}

/** The entries of one source as a tar stream, named below `prefix` ("" for the destination itself). */
async function* sourceTar(src: CopySource, prefix: string, plan: CopyPlan, forHash: boolean): AsyncGenerator<Buffer> {
  const edit = (h: { name: string; uid?: number; gid?: number; mode?: number; mtime?: number; uname?: string; gname?: string; type: string }) => {
    if (plan.owner || src.kind === "path" && src.tree.kind === "context") {
      h.uid = plan.owner?.uid ?? 0;
      h.gid = plan.owner?.gid ?? 0;
      h.uname = "";
      h.gname = "";
    }
    if (plan.chmod !== undefined && h.type !== "symlink") h.mode = plan.chmod;
    if (forHash) h.mtime = 0;
  };
  if (src.kind === "inline") {
    const h = { name: prefix, type: "file" as const, size: src.content.length, mode: src.mode, mtime: forHash ? 0 : src.mtime, uid: 0, gid: 0 };
    edit(h);
    yield encodeHeader(h);
    yield src.content;
    if (src.content.length % 512) yield Buffer.alloc(512 - (src.content.length % 512));
    return;
  }
  if (src.kind === "archive") return; // unpacked separately
  const tree = src.tree;
  const base = src.rel;
  const ignored = (rel: string) => (tree.ignore ? tree.ignore.ignores(rel) : false) || (plan.exclude ? plan.exclude.ignores(rel.slice(base ? base.length + 1 : 0)) : false);
  if (src.isDir) {
    const dir = base ? join(tree.root, base) : tree.root;
    for await (const chunk of packDirectory(dir, {
      exclude: (rel) => ignored(base ? `${base}/${rel}` : rel),
      rename: (rel) => (prefix ? `${prefix}/${rel}` : rel),
      edit,
    })) {
      if (chunk === END_OF_ARCHIVE) continue; // one archive for all sources
      yield chunk;
    }
    return;
  }
  const parts = base.split("/");
  const name = parts.pop()!;
  const dir = parts.length ? join(tree.root, parts.join("/")) : tree.root;
  for await (const chunk of packDirectory(dir, { exclude: (rel) => rel !== name, rename: () => prefix, edit })) {
    if (chunk === END_OF_ARCHIVE) continue;
    yield chunk;
  }
}

/**
 * COPY --parents: the directories to keep above a source, the part of its path after the last
 * `/./` of the argument (BuildKit's pivot), else all of them (`a/b/c.txt` lands at `dest/a/b/c.txt`).
 */
export function keptParents(arg: string, src: PathSource): string {
  const path = src.path.split("/").slice(0, -1).join("/");
  const pivot = arg.replace(/^(\.\/)+/, "").lastIndexOf("/./");
  if (pivot < 0) return path;
  const base = cleanPattern(arg.replace(/^(\.\/)+/, "").slice(0, pivot));
  return path === base ? "" : path.startsWith(base + "/") ? path.slice(base.length + 1) : path;
}

/** Where each source lands, relative to the directory it is extracted into. */
function layout(plan: CopyPlan): { dir: string; entries: { src: CopySource; prefix: string }[] } {
  const prefix = (src: CopySource) => {
    if (src.kind === "archive") return "";
    if (src.kind === "path" && src.parents !== undefined) return [src.parents, src.name].filter(Boolean).join("/");
    return src.kind === "path" && src.isDir ? "" : src.name;
  };
  if (plan.destIsDir) return { dir: plan.dest, entries: plan.sources.map((src) => ({ src, prefix: prefix(src) })) };
  const parts = plan.dest.split("/").filter(Boolean);
  const last = parts.pop() ?? "";
  const src = plan.sources[0]!;
  if (src.kind === "path" && src.isDir) return { dir: plan.dest, entries: [{ src, prefix: "" }] };
  return { dir: "/" + parts.join("/"), entries: [{ src, prefix: last }] };
}

/** The sha256 of everything a COPY would write: names, modes, owners and content (not times). */
export async function planDigest(plan: CopyPlan): Promise<string> {
  const h = createHash("sha256");
  const { dir, entries } = layout(plan);
  h.update(`${dir}\0${plan.unpack}\0`);
  for (const { src, prefix } of entries) {
    if (src.kind === "archive") {
      h.update(`archive\0`);
      await new Promise<void>((res, rej) => fs.createReadStream(src.file).on("data", (c) => h.update(c)).on("end", res).on("error", rej));
      continue;
    }
    for await (const c of sourceTar(src, prefix, plan, true)) h.update(c);
  }
  return `sha256:${h.digest("hex")}`;
}

/** Whether a file is an archive ADD unpacks: a tar, plain or gzip/zstd/bzip2/xz-compressed. */
export async function isArchive(file: string): Promise<boolean> {
  const fd = fs.openSync(file, "r");
  const head = Buffer.alloc(512);
  const n = fs.readSync(fd, head, 0, 512, 0);
  fs.closeSync(fd);
  if (n >= 6 && (head.subarray(0, 3).toString("latin1") === "BZh" || head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])))) return true;
  try {
    let seen = Buffer.alloc(0);
    for await (const c of decompress(fs.createReadStream(file, { end: 1 << 20 }) as AsyncIterable<Buffer>)) {
      seen = Buffer.concat([seen, c]);
      if (seen.length >= 512) break;
    }
    return seen.length >= 512 && seen.subarray(257, 262).toString("latin1") === "ustar";
  } catch {
    // unreadable: not a tar archive, so ADD copies it as a file
    return false;
  }
}

/** A file's contents decompressed (bzip2 and xz through the system's tools). */
async function* archiveStream(file: string): AsyncGenerator<Buffer> {
  const fd = fs.openSync(file, "r");
  const head = Buffer.alloc(6);
  fs.readSync(fd, head, 0, 6, 0);
  fs.closeSync(fd);
  const tool = head.subarray(0, 3).toString("latin1") === "BZh" ? "bzip2" : head.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) ? "xz" : undefined;
  if (!tool) {
    yield* fs.createReadStream(file) as AsyncIterable<Buffer>;
    return;
  }
  const p = spawn(tool, ["-dc", file], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  p.stderr.on("data", (c: Buffer) => (err += c));
  const exit = new Promise<number>((r) => p.on("close", (code) => r(code ?? 1)));
  p.on("error", () => {});
  yield* p.stdout as AsyncIterable<Buffer>;
  if ((await exit) !== 0) throw invalid(`ADD: cannot unpack ${file} with ${tool}: ${err.trim() || "it failed"}`);
}

/** Makes (inside the root, links followed inside it) the directory `path` and returns an O_PATH fd of it. */
export function mkdirInRoot(rootFd: number, path: string, owner?: CopyOwner): number {
  const parts = path.split("/").filter((p) => p && p !== ".");
  for (let i = 0; i <= parts.length; i++) {
    const sub = parts.slice(0, i).join("/");
    let fd: number;
    try {
      fd = openInRoot(rootFd, sub, true);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      const parent = openInRoot(rootFd, parts.slice(0, i - 1).join("/"), true);
      try {
        fs.mkdirSync(fdPath(parent, parts[i - 1]!), 0o755);
        if (owner) fs.lchownSync(fdPath(parent, parts[i - 1]!), owner.uid, owner.gid);
      } finally {
        fs.closeSync(parent);
      }
      fd = openInRoot(rootFd, sub, true);
    }
    if (i === parts.length) {
      if (!fs.fstatSync(fd).isDirectory()) {
        fs.closeSync(fd);
        throw invalid(`cannot copy to ${path}: it is not a directory in the image`);
      }
      return fd;
    }
    fs.closeSync(fd);
  }
  throw new BerthError("System", "unreachable");
}

/** Whether `path` is a directory in the root (links followed inside it). */
export function isDirInRoot(root: string, path: string): boolean {
  const rootFd = openRoot(root);
  try {
    const fd = openInRoot(rootFd, path, true);
    try {
      return fs.fstatSync(fd).isDirectory();
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    // missing or unreadable: not a directory
    return false;
  } finally {
    fs.closeSync(rootFd);
  }
}

/** Writes the plan's sources into the mounted root. */
export async function applyCopy(root: string, plan: CopyPlan): Promise<void> {
  const rootFd = openRoot(root);
  try {
    const { dir, entries } = layout(plan);
    const dirFd = mkdirInRoot(rootFd, dir, plan.owner);
    try {
      for (const { src, prefix } of entries) {
        if (src.kind === "archive") {
          await extractLayer(archiveStream(src.file), fdPath(dirFd), "into", undefined, { keepOwners: true });
          continue;
        }
        async function* one(): AsyncGenerator<Buffer> {
          yield* sourceTar(src, prefix, plan, false);
          yield Buffer.alloc(1024);
        }
        if (src.kind === "path" && src.isDir && prefix === "" && plan.owner) fs.lchownSync(fdPath(dirFd), plan.owner.uid, plan.owner.gid);
        await extractLayer(one(), fdPath(dirFd), "into", undefined, { keepOwners: true });
      }
    } finally {
      fs.closeSync(dirFd);
    }
  } finally {
    fs.closeSync(rootFd);
  }
}

/** Reads /etc/passwd and /etc/group in the root to turn `--chown=user:group` into ids. */
export function resolveOwner(root: string, spec: string): CopyOwner {
  const [u, g] = spec.split(":") as [string, string | undefined];
  const read = (f: string): string[][] => {
    const rootFd = openRoot(root);
    try {
      const fd = openInRoot(rootFd, f, true);
      try {
        return fs.readFileSync(fdPath(fd), "utf8").split("\n").map((l) => l.split(":"));
      } catch {
        // an unreadable passwd/group file names nobody: the name is reported unknown
        return [];
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      // no passwd/group file in the image: the name is reported unknown
      return [];
    } finally {
      fs.closeSync(rootFd);
    }
  };
  let uid: number, gid: number | undefined;
  if (/^\d+$/.test(u)) uid = Number(u);
  else {
    const e = read("/etc/passwd").find((l) => l[0] === u);
    if (!e) throw invalid(`unable to convert uid/gid chown string to host mapping: can't find uid for user ${u}: no such user: ${u}`);
    uid = Number(e[2]);
    if (g === undefined) gid = Number(e[3]);
  }
  if (g !== undefined && g !== "") {
    if (/^\d+$/.test(g)) gid = Number(g);
    else {
      const e = read("/etc/group").find((l) => l[0] === g);
      if (!e) throw invalid(`unable to convert uid/gid chown string to host mapping: can't find gid for group ${g}: no such group: ${g}`);
      gid = Number(e[2]);
    }
  }
  return { uid, gid: gid ?? uid };
}
