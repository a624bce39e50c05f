/**
 * Layer extraction. Every entry is placed by a cleaned path under the layer root; an entry whose
 * path leaves the root, or whose parent is a symlink the layer itself made, is refused (the
 * classic tar-slip and symlink-then-write escapes); hardlinks must point inside the root. Files are
 * written with synchronous calls as the decompressed bytes arrive, while zlib inflates on the
 * thread pool, so decompression and file creation overlap and layers unpack in parallel.
 *
 * Two forms: "overlay" writes whiteouts as overlayfs does (0/0 char devices, trusted.overlay.opaque)
 * into an empty directory; "apply" deletes what whiteouts name, on top of a copy of the parent.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { builtin } from "../common/builtin.js";
import { Readable } from "node:stream";
import { BerthError, invalid } from "../common/errors.js";
import { lsetxattr, mknod, S_IFBLK, S_IFCHR, S_IFIFO } from "../common/sys.js";
import { TarReader, type TarHeader, type TarSink } from "./tar.js";
import { fdPath, openDirBeneath, openRoot, setModeAndTimes } from "../common/inroot.js";

/**
 * overlay: into an empty directory, whiteouts in overlayfs form; apply: on top of a parent tree,
 * whiteouts delete; into: files copied into a live tree (berth cp), which replaces files but
 * refuses every symlink on the way, the tree's own included. A live tree may change while it is
 * written (a running container's processes), so "into" reaches every entry through its parent
 * directory held open (common/inroot.ts) and changes nothing through a name that could be a link.
 */
export type ExtractMode = "overlay" | "apply" | "into";

export interface ExtractResult {
  /** sha256 of the uncompressed tar: the layer's diff ID. */
  diffId: string;
  /** Bytes of file content written. */
  size: number;
  /** Bytes of the uncompressed tar. */
  tarSize: number;
  entries: number;
}

const WHITEOUT = ".wh.";
const OPAQUE = ".wh..wh..opq";
const { O_WRONLY, O_CREAT, O_TRUNC, O_NOFOLLOW, O_EXCL } = fs.constants;

/** Clean a tar path to components below the root; undefined if it escapes. */
export function cleanPath(name: string): string[] | undefined {
  const out: string[] = [];
  for (const c of name.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") {
      if (!out.length) return undefined;
      out.pop();
    } else out.push(c);
  }
  return out;
}

class Extractor implements TarSink {
  private fd = -1;
  private current?: TarHeader;
  private currentPath = "";
  private readonly dirs = new Set<string>([""]); // rel paths known to be real directories
  private readonly created = new Set<string>(); // rel paths this layer made (for apply's opaque rule)
  private readonly dirTimes: Array<[string, number, number]> = [];
  size = 0;
  entries = 0;
  private readonly root: boolean;
  private readonly chown: boolean;
  /** "into": the destination and the parent directory of the current entry, held open. */
  private destFd = -1;
  private heldFd = -1;
  private heldRel: string | undefined;

  constructor(
    private readonly dest: string,
    private readonly mode: ExtractMode,
    chown = true,
  ) {
    // owners are kept only by root (and not when the caller wants its own: docker cp without -a)
    this.root = process.getuid?.() === 0;
    this.chown = this.root && chown;
    if (mode === "into") this.destFd = openRoot(dest);
  }

  /** "into": an fd of the directory parts (below the destination), made where missing, links refused. */
  private parentFd(h: TarHeader, parts: string[]): number {
    const rel = parts.join("/");
    if (this.heldRel === rel && this.heldFd >= 0) return this.heldFd;
    if (this.heldFd >= 0) fs.closeSync(this.heldFd);
    this.heldFd = -1;
    try {
      this.heldFd = openDirBeneath(this.destFd, parts, true, (made) => this.created.add(made));
    } catch (e) {
      this.fail(h, `its parent ${e instanceof BerthError ? e.message : (e as Error).message}`);
    }
    this.heldRel = rel;
    return this.heldFd;
  }

  /** The path through which an entry is made: in "into" form below its held parent, not followed when a link. */
  private locate(h: TarHeader, parts: string[]): { abs: string; at?: { fd: number; name: string } } {
    if (this.mode !== "into") {
      this.parents(h, parts, true);
      const rel = parts.join("/");
      return { abs: rel ? `${this.dest}/${rel}` : this.dest };
    }
    if (!parts.length) return { abs: fdPath(this.destFd) };
    const fd = this.parentFd(h, parts.slice(0, -1));
    const name = parts[parts.length - 1]!;
    return { abs: fdPath(fd, name), at: { fd, name } };
  }

  private fail(h: TarHeader, why: string): never {
    throw invalid(`invalid layer entry ${JSON.stringify(h.name)}: ${why}`);
  }

  /** Make sure every parent of rel exists as a real directory, refusing symlinks the layer made. */
  private parents(h: TarHeader, parts: string[], create: boolean): void {
    let rel = "";
    for (let i = 0; i < parts.length - 1; i++) {
      rel = rel ? `${rel}/${parts[i]}` : parts[i]!;
      if (this.dirs.has(rel)) continue;
      const abs = `${this.dest}/${rel}`;
      const st = fs.lstatSync(abs, { throwIfNoEntry: false });
      if (st?.isDirectory()) {
        this.dirs.add(rel);
        continue;
      }
      if (st?.isSymbolicLink() && (this.mode !== "apply" || this.created.has(rel))) this.fail(h, `its parent ${rel} is a symlink (a write through it could leave the layer)`);
      if (st && this.mode !== "apply") this.fail(h, `its parent ${rel} is not a directory`);
      if (!create) this.fail(h, `${rel} does not exist`);
      if (st) fs.rmSync(abs, { recursive: true, force: true }); // apply: a lower layer's file or link gives way, as in overlayfs
      fs.mkdirSync(abs, 0o755);
      this.dirs.add(rel);
      this.created.add(rel);
    }
  }

  entry(h: TarHeader): void {
    this.entries++;
    const parts = cleanPath(h.name);
    if (!parts) this.fail(h, "the path leaves the layer root");
    const base = parts[parts.length - 1] ?? "";
    if (base.startsWith(WHITEOUT) && this.mode !== "into") return this.whiteout(h, parts, base);
    const { abs, at } = this.locate(h, parts);
    const rel = parts.join("/");
    // in overlay form the directory starts empty: only what this layer made can be in the way
    const existing = !rel ? fs.statSync(abs) : this.mode === "overlay" && !this.created.has(rel) ? undefined : fs.lstatSync(abs, { throwIfNoEntry: false });
    let present = existing;
    if (existing && !(existing.isDirectory() && h.type === "directory")) {
      if (!rel) this.fail(h, "the layer root must be a directory");
      if (this.mode === "into" && (h.type === "directory" || existing.isDirectory()))
        this.fail(h, `cannot overwrite ${existing.isDirectory() ? "directory" : "non-directory"} ${rel} with ${h.type === "directory" ? "directory" : "non-directory"}`);
      // "into" replaces only non-directories: unlink, which never follows or recurses
      if (this.mode === "into") fs.unlinkSync(abs);
      else fs.rmSync(abs, { recursive: true, force: true });
      this.dirs.delete(rel);
      present = undefined;
    }
    this.created.add(rel);
    switch (h.type) {
      case "file":
        // created with its final permission bits (the umask is cleared while extracting), so only
        // set-id and sticky bits, which chown would clear, need a chmod afterwards
        this.fd = fs.openSync(abs, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_EXCL, h.mode & 0o777);
        this.current = h;
        this.currentPath = abs;
        return;
      case "directory":
        if (!present) fs.mkdirSync(abs, 0o700);
        this.dirs.add(rel);
        this.attributes(abs, h, false, at);
        this.dirTimes.push([this.mode === "into" ? rel : abs, h.atime ?? h.mtime, h.mtime]);
        return;
      case "symlink":
        fs.symlinkSync(h.linkname, abs);
        this.attributes(abs, h, true);
        return;
      case "hardlink": {
        const target = cleanPath(h.linkname);
        if (!target || !target.length) this.fail(h, `hardlink target ${JSON.stringify(h.linkname)} leaves the layer root`);
        let targetDir = -1;
        try {
          let tabs: string;
          if (this.mode === "into") {
            try {
              targetDir = openDirBeneath(this.destFd, target.slice(0, -1), false);
            } catch (e) {
              this.fail(h, `hardlink target ${h.linkname}: ${(e as Error).message}`);
            }
            tabs = fdPath(targetDir, target[target.length - 1]!);
          } else {
            try {
              this.parents(h, target, false);
            } catch (e) {
              // name the link and what it points at, not only the directory that is missing
              this.fail(h, `a hardlink to ${h.linkname}, which is not in the layer (${(e as Error).message.replace(/^invalid layer entry "[^"]*": /, "")})`);
            }
            tabs = `${this.dest}/${target.join("/")}`;
          }
          const st = fs.lstatSync(tabs, { throwIfNoEntry: false });
          if (!st) this.fail(h, `a hardlink to ${h.linkname}, which is not in the layer`);
          if (st.isDirectory()) this.fail(h, `hardlink target ${h.linkname} is a directory`);
          fs.linkSync(tabs, abs); // link(2) does not follow a symlink it is given
        } finally {
          if (targetDir >= 0) fs.closeSync(targetDir);
        }
        return;
      }
      case "char":
      case "block":
      case "fifo": {
        const kind = h.type === "char" ? S_IFCHR : h.type === "block" ? S_IFBLK : S_IFIFO;
        if (!this.root && h.type !== "fifo") return; // devices cannot be made without root; docker skips them too
        mknod(abs, kind | (h.mode & 0o7777), h.devmajor, h.devminor);
        this.attributes(abs, h, false, at);
        return;
      }
    }
  }

  private whiteout(h: TarHeader, parts: string[], base: string): void {
    this.parents(h, parts, true);
    const dirRel = parts.slice(0, -1).join("/");
    const dir = dirRel ? `${this.dest}/${dirRel}` : this.dest;
    if (base === OPAQUE) {
      // rootless: overlayfs mounted in a user namespace with userxattr reads user.overlay.*
      if (this.mode === "overlay") lsetxattr(dir, this.root ? "trusted.overlay.opaque" : "user.overlay.opaque", Buffer.from("y"));
      else
        for (const name of fs.readdirSync(dir)) {
          const rel = dirRel ? `${dirRel}/${name}` : name;
          if (!this.created.has(rel)) fs.rmSync(`${dir}/${name}`, { recursive: true, force: true });
        }
      return;
    }
    if (base.startsWith(WHITEOUT + WHITEOUT)) return; // aufs metadata (.wh..wh.plnk and the like)
    const name = base.slice(WHITEOUT.length);
    if (!name || name === "." || name === "..") this.fail(h, "a whiteout names no file");
    const abs = `${dir}/${name}`;
    if (this.mode === "overlay") {
      fs.rmSync(abs, { recursive: true, force: true });
      mknod(abs, S_IFCHR | 0o600, 0, 0);
      if (this.root) fs.lchownSync(abs, h.uid, h.gid);
    } else fs.rmSync(abs, { recursive: true, force: true });
  }

  /** Owner, mode, xattrs and times; `at` (the "into" form) sets mode and times through an fd, never a followed name. */
  private attributes(path: string, h: TarHeader, link: boolean, at?: { fd: number; name: string }): void {
    if (this.chown) fs.lchownSync(path, h.uid, h.gid);
    // after chown, which clears set-id bits
    if (!link) at ? setModeAndTimes(at.fd, at.name, h.mode) : fs.chmodSync(path, h.mode);
    for (const [k, v] of h.xattrs) this.xattr(path, k, v);
    if (link) fs.lutimesSync(path, h.atime ?? h.mtime, h.mtime);
    else if (h.type !== "directory") at ? setModeAndTimes(at.fd, at.name, undefined, [h.atime ?? h.mtime, h.mtime]) : fs.utimesSync(path, h.atime ?? h.mtime, h.mtime);
  }

  private xattr(path: string, key: string, value: Buffer): void {
    // trusted.* and security.* need root; user namespaces cannot set trusted.*: skip, as docker does
    if (!this.root && (key.startsWith("trusted.") || key.startsWith("security."))) return;
    try {
      lsetxattr(path, key, value);
    } catch (e) {
      if (!(e instanceof BerthError) || !/not supported/i.test(e.message)) throw e;
    }
  }

  data(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) off += fs.writeSync(this.fd, chunk, off, chunk.length - off);
    this.size += chunk.length;
  }

  end(): void {
    const h = this.current;
    if (!h || this.fd < 0) return;
    try {
      if (this.chown && (h.uid !== 0 || h.gid !== 0)) fs.fchownSync(this.fd, h.uid, h.gid);
      if (h.mode & 0o7000 || extracting === 0) fs.fchmodSync(this.fd, h.mode);
      for (const [k, v] of h.xattrs) this.xattr(this.currentPath, k, v);
      fs.futimesSync(this.fd, h.atime ?? h.mtime, h.mtime);
    } finally {
      fs.closeSync(this.fd);
      this.fd = -1;
      this.current = undefined;
    }
  }

  finish(): void {
    // directory times last (creating entries inside changed them), deepest first
    for (let i = this.dirTimes.length - 1; i >= 0; i--) {
      const [p, a, m] = this.dirTimes[i]!;
      if (this.mode !== "into") fs.utimesSync(p, a, m);
      else if (!p) fs.utimesSync(fdPath(this.destFd), a, m);
      else {
        // "into": reached again through held directories (the tree may have changed since)
        const parts = p.split("/");
        const dir = openDirBeneath(this.destFd, parts.slice(0, -1), false);
        try {
          setModeAndTimes(dir, parts[parts.length - 1]!, undefined, [a, m]);
        } finally {
          fs.closeSync(dir);
        }
      }
    }
  }

  abort(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    for (const fd of [this.heldFd, this.destFd]) if (fd >= 0) fs.closeSync(fd);
    this.heldFd = this.destFd = -1;
  }
}

export type Compression = "gzip" | "zstd" | "none";

export function detectCompression(head: Buffer): Compression {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return "zstd";
  return "none";
}

/** The uncompressed bytes of a (possibly compressed) layer, as chunks. */
export async function* decompress(input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const it = input[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const head = first.value as Buffer;
  const rest = (async function* () {
    yield head;
    for (let r = await it.next(); !r.done; r = await it.next()) yield r.value as Buffer;
  })();
  const kind = detectCompression(head);
  if (kind === "none") {
    yield* rest;
    return;
  }
  const zlib = builtin<typeof import("node:zlib") & { createZstdDecompress?: (o?: object) => import("node:stream").Transform }>("node:zlib");
  // zstd natively where it can be had: Node's zlib (22.15 and later), else the zstd command (a
  // pure-JS decoder is ~15x slower, and more under the CLI's --jitless snapshot)
  const native = kind === "gzip" ? zlib.createGunzip({ chunkSize: 256 << 10 }) : zlib.createZstdDecompress && process.env.BERTH_ZSTD !== "js" && process.env.BERTH_ZSTD !== "command" ? zlib.createZstdDecompress({ chunkSize: 256 << 10 }) : undefined;
  if (native) {
    const src = Readable.from(rest);
    src.on("error", (e) => native.destroy(e));
    src.pipe(native);
    try {
      for await (const chunk of native) yield chunk as Buffer;
    } catch (e) {
      throw invalid(`corrupt ${kind} layer: ${(e as Error).message}`);
    }
    return;
  }
  const command = process.env.BERTH_ZSTD === "js" ? undefined : zstdCommand();
  if (command) {
    yield* zstdThroughCommand(command, rest);
    return;
  }
  const { Decompress } = await import("fzstd");
  const out: Buffer[] = [];
  const d = new Decompress((chunk: Uint8Array) => out.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)));
  try {
    for await (const chunk of rest) {
      d.push(chunk);
      while (out.length) yield out.shift()!;
    }
    d.push(new Uint8Array(0), true);
  } catch (e) {
    throw invalid(`corrupt zstd layer: ${(e as Error).message}`);
  }
  while (out.length) yield out.shift()!;
}

let zstdPath: string | null | undefined;
/** The zstd command (Debian's zstd), or undefined. */
function zstdCommand(): string | undefined {
  if (zstdPath === undefined) zstdPath = ["/usr/bin/zstd", "/bin/zstd", "/usr/local/bin/zstd"].find((p) => fs.existsSync(p)) ?? null;
  return zstdPath ?? undefined;
}

/** zstd -dc over a stream: the input written as the output is read (the pipe applies back-pressure). */
async function* zstdThroughCommand(command: string, input: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const child = builtin<typeof import("node:child_process")>("node:child_process").spawn(command, ["-dcq"], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number>((res) => child.on("close", (code) => res(code ?? 1)));
  const feed = (async () => {
    try {
      for await (const chunk of input) if (!child.stdin!.write(chunk)) await new Promise((r) => child.stdin!.once("drain", r));
      child.stdin!.end();
    } catch (e) {
      child.kill();
      throw e;
    }
  })();
  child.stdin!.on("error", () => {}); // zstd stopped reading: its exit status says why
  feed.catch(() => {}); // the feed's failure shows as zstd's exit status, reported below
  let complete = false;
  try {
    for await (const chunk of child.stdout!) yield chunk as Buffer;
    complete = true;
  } finally {
    // the consumer stopped early (an error downstream): zstd is not needed any more
    if (!complete) child.kill();
  }
  await feed;
  const code = await exited;
  if (code !== 0) throw invalid(`corrupt zstd layer: ${stderr.trim() || `zstd exited ${code}`}`);
}

/**
 * Unpack a layer (tar, tar+gzip or tar+zstd) into dest, verifying its diff ID when one is given.
 * On error dest is left for the caller to remove (it is always a private temporary directory).
 */
let extracting = 0;
let savedUmask = 0;

export async function extractLayer(input: AsyncIterable<Buffer>, dest: string, mode: ExtractMode, expectedDiffId?: string, opts: { keepOwners?: boolean } = {}): Promise<ExtractResult> {
  if (extracting++ === 0) savedUmask = process.umask(0);
  try {
    return await extract(input, dest, mode, expectedDiffId, opts.keepOwners ?? true);
  } finally {
    if (--extracting === 0) process.umask(savedUmask);
  }
}

async function extract(input: AsyncIterable<Buffer>, dest: string, mode: ExtractMode, expectedDiffId: string | undefined, chown: boolean): Promise<ExtractResult> {
  const x = new Extractor(dest, mode, chown);
  const reader = new TarReader(x);
  const hash = createHash("sha256");
  let tarSize = 0;
  try {
    for await (const chunk of decompress(input)) {
      hash.update(chunk);
      tarSize += chunk.length;
      reader.write(chunk);
    }
    reader.finish();
    x.finish();
  } finally {
    x.abort();
  }
  const diffId = `sha256:${hash.digest("hex")}`;
  if (expectedDiffId && diffId !== expectedDiffId) throw invalid(`layer content does not match its diff ID: expected ${expectedDiffId}, got ${diffId}`);
  return { diffId, size: x.size, tarSize, entries: x.entries };
}
