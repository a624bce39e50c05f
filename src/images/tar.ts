/**
 * A streaming tar reader and writer (ustar, PAX, GNU long names, base-256 numbers). Our own rather
 * than tar-stream because image layers carry binary PAX values (SCHILY.xattr.security.capability),
 * which tar-stream decodes as UTF-8 and so corrupts; and because a synchronous push parser lets the
 * extractor create files without a stream object per entry. Archives that end without the two
 * zero blocks (umoci writes them) are accepted, as docker, podman and containerd accept them.
 */
import { invalid } from "../common/errors.js";

export type EntryType = "file" | "hardlink" | "symlink" | "char" | "block" | "directory" | "fifo";

export interface TarHeader {
  name: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number; // seconds, may be fractional (PAX)
  atime?: number;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  /** Extended attributes from PAX SCHILY.xattr.* records, values byte-exact. */
  xattrs: Map<string, Buffer>;
}

export interface TarSink {
  entry(h: TarHeader): void;
  data(chunk: Buffer): void;
  end(): void;
}

const typeFlags: Record<string, EntryType> = {
  "0": "file",
  "\0": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "directory",
  "6": "fifo",
};

function cstr(b: Buffer, off: number, len: number): string {
  let end = off;
  while (end < off + len && b[end] !== 0) end++;
  return b.toString("utf8", off, end);
}

const fieldNames: Record<number, string> = { 100: "mode", 108: "uid", 116: "gid", 124: "size", 136: "mtime", 148: "checksum", 329: "devmajor", 337: "devminor" };

/** A numeric header field: octal text, or base-256; a malformed or negative one is refused. */
function num(b: Buffer, off: number, len: number): number {
  const bad = (what: string) => invalid(`invalid tar header: the ${fieldNames[off] ?? "numeric"} field is ${what}`);
  if (b[off]! & 0x80) {
    // base-256 (GNU/star): big-endian two's complement, first byte's top bit set; 0xff… is negative
    if (b[off]! & 0x40) throw bad("negative");
    let v = b[off]! & 0x3f;
    for (let i = 1; i < len; i++) v = v * 256 + b[off + i]!;
    if (!Number.isSafeInteger(v)) throw bad("too large");
    return v;
  }
  const s = cstr(b, off, len).trim();
  if (!s) return 0;
  if (!/^[0-7]+$/.test(s)) throw bad(`not an octal number (${JSON.stringify(s)})`);
  return parseInt(s, 8);
}

/** A PAX record's number (size, uid, gid: whole; times: decimal fractions). */
function paxNumber(v: string, key: string, fraction = false): number {
  if (!(fraction ? /^-?\d+(\.\d+)?$/ : /^\d+$/).test(v) || !Number.isFinite(Number(v))) throw invalid(`invalid tar header: PAX record ${key}=${JSON.stringify(v)} is not a number`);
  return Number(v);
}

function parsePax(buf: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let i = 0;
  while (i < buf.length) {
    let sp = i;
    while (sp < buf.length && buf[sp] !== 0x20) sp++;
    const len = parseInt(buf.toString("ascii", i, sp), 10);
    if (!len || sp >= buf.length) break;
    const rec = buf.subarray(sp + 1, i + len - 1); // drop trailing \n
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(rec.toString("utf8", 0, eq), Buffer.from(rec.subarray(eq + 1)));
    i += len;
  }
  return out;
}

function checksumOk(b: Buffer): boolean {
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : b[i]!;
  try {
    return sum === num(b, 148, 8);
  } catch {
    return false; // a checksum field that is no number: not a tar header (said as a mismatch)
  }
}

/** Push parser: feed chunks with write(), call finish() at end of input. */
export class TarReader {
  private pending: Buffer[] = [];
  private pendingLen = 0;
  private remaining = 0; // data bytes left in the current entry
  private padding = 0;
  private state: "header" | "data" | "meta" | "done" = "header";
  private metaKind = "";
  private metaSize = 0;
  private pax = new Map<string, Buffer>();
  private globalPax = new Map<string, Buffer>();
  private longName?: string;
  private longLink?: string;
  private zeroBlocks = 0;

  constructor(private readonly sink: TarSink) {}

  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      if (this.state === "done") return; // trailing bytes after the end blocks are ignored
      if (this.state === "data") {
        if (this.remaining > 0) {
          const n = Math.min(this.remaining, chunk.length - off);
          this.sink.data(chunk.subarray(off, off + n));
          this.remaining -= n;
          off += n;
          if (this.remaining > 0) continue;
          this.sink.end();
        }
        const skip = Math.min(this.padding, chunk.length - off);
        this.padding -= skip;
        off += skip;
        if (this.padding === 0) this.state = "header";
        continue;
      }
      // header and meta records are gathered whole
      const need = this.state === "header" ? 512 : this.metaSize + this.padding;
      const take = Math.min(need - this.pendingLen, chunk.length - off);
      this.pending.push(chunk.subarray(off, off + take));
      this.pendingLen += take;
      off += take;
      if (this.pendingLen < need) continue;
      const block = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
      this.pending = [];
      this.pendingLen = 0;
      if (this.state === "header") this.header(block);
      else this.meta(block.subarray(0, this.metaSize));
    }
  }

  finish(): void {
    // an archive that ends right after its last entry's data (no padding, no end blocks) is whole:
    // the docker CLI sends such a build context when the Dockerfile is outside it
    if (this.state === "data" && this.remaining > 0) throw invalid("truncated tar archive: the last entry's data is cut short");
    if (this.state === "meta" || this.pendingLen > 0) throw invalid("truncated tar archive: a header is cut short");
  }

  private header(b: Buffer): void {
    if (b.every((x) => x === 0)) {
      if (++this.zeroBlocks >= 2) this.state = "done";
      return;
    }
    this.zeroBlocks = 0;
    if (!checksumOk(b)) throw invalid("invalid tar header: checksum mismatch (not a tar archive, or corrupt)");
    const flag = String.fromCharCode(b[156]!);
    const size = num(b, 124, 12);
    const pad = (512 - (size % 512)) % 512;
    if (flag === "x" || flag === "g" || flag === "L" || flag === "K") {
      this.state = "meta";
      this.metaKind = flag;
      this.metaSize = size;
      this.padding = pad;
      if (size > 16 << 20) throw invalid("invalid tar header: extended header larger than 16 MiB");
      return;
    }
    const magic = b.toString("ascii", 257, 263);
    let name = cstr(b, 0, 100);
    if (magic.startsWith("ustar")) {
      const prefix = cstr(b, 345, magic === "ustar\0" ? 155 : 0);
      if (prefix) name = `${prefix}/${name}`;
    }
    let linkname = cstr(b, 157, 100);
    const pax = new Map([...this.globalPax, ...this.pax]);
    if (this.longName !== undefined) name = this.longName;
    if (this.longLink !== undefined) linkname = this.longLink;
    const text = (k: string) => pax.get(k)?.toString("utf8");
    if (pax.has("path")) name = text("path")!;
    if (pax.has("linkpath")) linkname = text("linkpath")!;
    let type = typeFlags[flag];
    if (!type) {
      if (flag === "S") throw invalid(`unsupported tar entry ${JSON.stringify(name)}: GNU sparse files`);
      throw invalid(`unsupported tar entry ${JSON.stringify(name)}: type flag ${JSON.stringify(flag)}`);
    }
    if (type === "file" && name.endsWith("/") && flag !== "0") type = "directory";
    const xattrs = new Map<string, Buffer>();
    for (const [k, v] of pax) if (k.startsWith("SCHILY.xattr.")) xattrs.set(k.slice(13), v);
    const realSize = pax.has("size") ? paxNumber(text("size")!, "size") : size;
    const h: TarHeader = {
      name,
      type,
      mode: num(b, 100, 8) & 0o7777,
      uid: pax.has("uid") ? paxNumber(text("uid")!, "uid") : num(b, 108, 8),
      gid: pax.has("gid") ? paxNumber(text("gid")!, "gid") : num(b, 116, 8),
      size: type === "file" ? realSize : 0,
      mtime: pax.has("mtime") ? paxNumber(text("mtime")!, "mtime", true) : num(b, 136, 12),
      ...(pax.has("atime") ? { atime: paxNumber(text("atime")!, "atime", true) } : {}),
      linkname,
      uname: pax.has("uname") ? text("uname")! : cstr(b, 265, 32),
      gname: pax.has("gname") ? text("gname")! : cstr(b, 297, 32),
      devmajor: num(b, 329, 8),
      devminor: num(b, 337, 8),
      xattrs,
    };
    this.pax = new Map();
    this.longName = this.longLink = undefined;
    this.sink.entry(h);
    // hardlinks and others may still carry data bytes in odd archives: skip them
    const dataSize = type === "file" ? realSize : size;
    this.remaining = type === "file" ? realSize : 0;
    this.padding = (type === "file" ? (512 - (realSize % 512)) % 512 : pad) + (type === "file" ? 0 : dataSize);
    this.state = "data";
    if (this.remaining === 0) {
      this.sink.end();
      if (this.padding === 0) this.state = "header";
    }
  }

  private meta(buf: Buffer): void {
    if (this.metaKind === "x") for (const [k, v] of parsePax(buf)) this.pax.set(k, v);
    else if (this.metaKind === "g") for (const [k, v] of parsePax(buf)) this.globalPax.set(k, v);
    else if (this.metaKind === "L") this.longName = cstr(buf, 0, buf.length);
    else if (this.metaKind === "K") this.longLink = cstr(buf, 0, buf.length);
    // the record's padding was gathered with it
    this.state = "header";
    this.padding = 0;
    this.remaining = 0;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

const typeCodes: Record<EntryType, string> = { file: "0", hardlink: "1", symlink: "2", char: "3", block: "4", directory: "5", fifo: "6" };

function octal(b: Buffer, off: number, len: number, v: number): boolean {
  const s = Math.floor(v).toString(8);
  if (s.length > len - 1) return false;
  b.write(s.padStart(len - 1, "0") + "\0", off, len, "ascii");
  return true;
}

function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`), value, Buffer.from("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function headerBlock(name: string, h: Partial<TarHeader> & { type: EntryType }, size: number, flag?: string): Buffer {
  const b = Buffer.alloc(512);
  b.write(name, 0, 100, "utf8");
  octal(b, 100, 8, h.mode ?? 0o644);
  octal(b, 108, 8, h.uid ?? 0);
  octal(b, 116, 8, h.gid ?? 0);
  octal(b, 124, 12, size);
  octal(b, 136, 12, h.mtime ?? 0);
  b.write(flag ?? typeCodes[h.type], 156, 1, "ascii");
  b.write(h.linkname ?? "", 157, 100, "utf8");
  b.write("ustar\x0000", 257, 8, "binary");
  b.write(h.uname ?? "", 265, 32, "utf8");
  b.write(h.gname ?? "", 297, 32, "utf8");
  octal(b, 329, 8, h.devmajor ?? 0);
  octal(b, 337, 8, h.devminor ?? 0);
  b.fill(32, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, "0") + "\0 ", 148, 8, "ascii");
  return b;
}

/** Encode one entry's header (PAX records added where ustar cannot hold a value). */
export function encodeHeader(h: Partial<TarHeader> & { name: string; type: EntryType }): Buffer {
  const size = h.type === "file" ? (h.size ?? 0) : 0;
  const records: Buffer[] = [];
  const name = h.type === "directory" && !h.name.endsWith("/") ? h.name + "/" : h.name;
  if (Buffer.byteLength(name) > 99) records.push(paxRecord("path", Buffer.from(name)));
  if (h.linkname && Buffer.byteLength(h.linkname) > 99) records.push(paxRecord("linkpath", Buffer.from(h.linkname)));
  if (size > 0o77777777777) records.push(paxRecord("size", Buffer.from(String(size))));
  if ((h.uid ?? 0) > 0o7777777) records.push(paxRecord("uid", Buffer.from(String(h.uid))));
  if ((h.gid ?? 0) > 0o7777777) records.push(paxRecord("gid", Buffer.from(String(h.gid))));
  for (const [k, v] of h.xattrs ?? []) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
  const main = headerBlock(Buffer.byteLength(name) > 99 ? name.slice(0, 99) : name, { ...h, linkname: h.linkname && Buffer.byteLength(h.linkname) > 99 ? "" : h.linkname }, size > 0o77777777777 ? 0 : size);
  if (!records.length) return main;
  const pax = Buffer.concat(records);
  const paxHeader = headerBlock("PaxHeaders/" + name.slice(0, 80), { type: "file", mode: 0o644 }, pax.length, "x");
  return Buffer.concat([paxHeader, pax, Buffer.alloc((512 - (pax.length % 512)) % 512), main]);
}

export const padding = (size: number): Buffer => Buffer.alloc((512 - (size % 512)) % 512);
export const END_OF_ARCHIVE = Buffer.alloc(1024);
