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

/**
 * overlay: into an empty directory, whiteouts in overlayfs form; apply: on top of a parent tree,
 * whiteouts delete; into: files copied into a live tree (berth cp), which replaces files but
 * refuses every symlink on the way, the tree's own included.
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

  constructor(
    private readonly dest: string,
    private readonly mode: ExtractMode,
  ) {
    this.root = process.getuid?.() === 0;
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
    this.parents(h, parts, true);
    const rel = parts.join("/");
    const abs = rel ? `${this.dest}/${rel}` : this.dest;
    // in overlay form the directory starts empty: only what this layer made can be in the way
    const existing = !rel ? fs.lstatSync(abs) : this.mode === "overlay" && !this.created.has(rel) ? undefined : fs.lstatSync(abs, { throwIfNoEntry: false });
    let present = existing;
    if (existing && !(existing.isDirectory() && h.type === "directory")) {
      if (!rel) this.fail(h, "the layer root must be a directory");
      if (this.mode === "into" && (h.type === "directory" || existing.isDirectory()))
        this.fail(h, `cannot overwrite ${existing.isDirectory() ? "directory" : "non-directory"} ${rel} with ${h.type === "directory" ? "directory" : "non-directory"}`);
      fs.rmSync(abs, { recursive: true, force: true });
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
        this.attributes(abs, h, false);
        this.dirTimes.push([abs, h.atime ?? h.mtime, h.mtime]);
        return;
      case "symlink":
        fs.symlinkSync(h.linkname, abs);
        this.attributes(abs, h, true);
        return;
      case "hardlink": {
        const target = cleanPath(h.linkname);
        if (!target || !target.length) this.fail(h, `hardlink target ${JSON.stringify(h.linkname)} leaves the layer root`);
        this.parents(h, target, false);
        const tabs = `${this.dest}/${target.join("/")}`;
        const st = fs.lstatSync(tabs, { throwIfNoEntry: false });
        if (!st) this.fail(h, `hardlink target ${h.linkname} is not in the layer`);
        if (st.isDirectory()) this.fail(h, `hardlink target ${h.linkname} is a directory`);
        fs.linkSync(tabs, abs);
        return;
      }
      case "char":
      case "block":
      case "fifo": {
        const kind = h.type === "char" ? S_IFCHR : h.type === "block" ? S_IFBLK : S_IFIFO;
        if (!this.root && h.type !== "fifo") return; // devices cannot be made without root; docker skips them too
        mknod(abs, kind | (h.mode & 0o7777), h.devmajor, h.devminor);
        this.attributes(abs, h, false);
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

  private attributes(path: string, h: TarHeader, link: boolean): void {
    if (this.root) fs.lchownSync(path, h.uid, h.gid);
    if (!link) fs.chmodSync(path, h.mode); // after chown, which clears set-id bits
    for (const [k, v] of h.xattrs) this.xattr(path, k, v);
    if (link) fs.lutimesSync(path, h.atime ?? h.mtime, h.mtime);
    else if (h.type !== "directory") fs.utimesSync(path, h.atime ?? h.mtime, h.mtime);
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
      if (this.root && (h.uid !== 0 || h.gid !== 0)) fs.fchownSync(this.fd, h.uid, h.gid);
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
      fs.utimesSync(p, a, m);
    }
  }

  abort(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
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
  if (kind === "gzip") {
    const gunzip = builtin<typeof import("node:zlib")>("node:zlib").createGunzip({ chunkSize: 256 << 10 });
    const src = Readable.from(rest);
    src.on("error", (e) => gunzip.destroy(e));
    src.pipe(gunzip);
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (e) {
      throw invalid(`corrupt gzip layer: ${(e as Error).message}`);
    }
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

/**
 * Unpack a layer (tar, tar+gzip or tar+zstd) into dest, verifying its diff ID when one is given.
 * On error dest is left for the caller to remove (it is always a private temporary directory).
 */
let extracting = 0;
let savedUmask = 0;

export async function extractLayer(input: AsyncIterable<Buffer>, dest: string, mode: ExtractMode, expectedDiffId?: string): Promise<ExtractResult> {
  if (extracting++ === 0) savedUmask = process.umask(0);
  try {
    return await extract(input, dest, mode, expectedDiffId);
  } finally {
    if (--extracting === 0) process.umask(savedUmask);
  }
}

async function extract(input: AsyncIterable<Buffer>, dest: string, mode: ExtractMode, expectedDiffId?: string): Promise<ExtractResult> {
  const x = new Extractor(dest, mode);
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
