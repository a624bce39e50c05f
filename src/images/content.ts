/**
 * The content store: blobs by sha256 under blobs/sha256/<hex>, each verified as it is written and
 * committed by rename, so a blob either exists whole and correct or not at all. Downloads in
 * progress live in ingest/<hex>, locked by their writer; a later writer of the same digest resumes
 * from what is there (the registry client asks for the rest with a range request).
 */
import * as fs from "node:fs";
import { createHash, type Hash } from "node:crypto";
import { join } from "../common/path.js";
import { invalid, notFound } from "../common/errors.js";
import { FileLock } from "../common/lock.js";

export const digestRe = /^sha256:[a-f0-9]{64}$/;

export function checkDigest(digest: string): string {
  if (!digestRe.test(digest)) throw invalid(`unsupported digest ${JSON.stringify(digest)}: berth stores sha256 digests`);
  return digest.slice(7);
}

export const sha256 = (data: Buffer | string): string => `sha256:${createHash("sha256").update(data).digest("hex")}`;

/** An in-progress write of one blob, resumable across processes. */
export class Ingest {
  private hash: Hash;
  private fd: number;
  offset: number;

  constructor(
    private readonly store: ContentStore,
    readonly digest: string,
    readonly path: string,
    private readonly lock: FileLock,
    readonly expectedSize?: number,
  ) {
    this.fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    this.hash = createHash("sha256");
    this.offset = 0;
    // Re-hash what an earlier, interrupted writer left, to continue from its end.
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let n; (n = fs.readSync(this.fd, buf, 0, buf.length, this.offset)) > 0; this.offset += n) this.hash.update(buf.subarray(0, n));
    if (expectedSize !== undefined && this.offset > expectedSize) this.truncate();
  }

  /** Start over (the server ignored our range request, or the partial data is bad). */
  truncate(): void {
    fs.ftruncateSync(this.fd, 0);
    this.offset = 0;
    this.hash = createHash("sha256");
  }

  write(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) off += fs.writeSync(this.fd, chunk, off, chunk.length - off, this.offset + off);
    this.offset += chunk.length;
    this.hash.update(chunk);
    if (this.expectedSize !== undefined && this.offset > this.expectedSize) throw invalid(`blob ${this.digest} is larger than its descriptor says (${this.expectedSize} bytes)`);
  }

  /**
   * Verify size and digest, then make the blob visible. A mismatch discards the data. The fsync
   * runs on the thread pool: a pull keeps unpacking other layers meanwhile.
   */
  async commit(): Promise<string> {
    const got = `sha256:${this.hash.copy().digest("hex")}`;
    try {
      if (this.expectedSize !== undefined && this.offset !== this.expectedSize)
        throw invalid(`blob ${this.digest} is truncated: got ${this.offset} of ${this.expectedSize} bytes`);
      if (got !== this.digest) {
        fs.rmSync(this.path, { force: true }); // bad data must not be resumed from
        throw invalid(`blob content does not match its digest: expected ${this.digest}, got ${got}`);
      }
      const fd = this.fd;
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(e) : resolve())));
      fs.renameSync(this.path, this.store.path(this.digest));
      return got;
    } finally {
      this.close();
    }
  }

  /** Stop writing, keeping the partial data for a later resume. */
  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
    this.lock.release();
  }
}

export class ContentStore {
  readonly blobs: string;
  readonly ingest: string;

  constructor(readonly root: string) {
    this.blobs = join(root, "blobs", "sha256");
    this.ingest = join(root, "ingest");
    fs.mkdirSync(this.blobs, { recursive: true });
    fs.mkdirSync(this.ingest, { recursive: true });
  }

  path(digest: string): string {
    return join(this.blobs, checkDigest(digest));
  }

  has(digest: string): boolean {
    return fs.existsSync(this.path(digest));
  }

  size(digest: string): number | undefined {
    return fs.statSync(this.path(digest), { throwIfNoEntry: false })?.size;
  }

  read(digest: string): Buffer {
    try {
      return fs.readFileSync(this.path(digest));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") throw notFound(`blob ${digest} is not in the store`);
      throw e;
    }
  }

  /**
   * A JSON blob (manifests, configs), parsed afresh each time (callers may change what they get);
   * its text is kept for the next read: content by digest never changes, and a container start
   * read the image's config four times.
   */
  readJSON<T>(digest: string): T {
    let text = this.jsonTexts.get(digest);
    if (text === undefined) {
      text = this.read(digest).toString("utf8");
      if (this.jsonTexts.size >= 64) this.jsonTexts.clear();
      this.jsonTexts.set(digest, text);
    }
    return JSON.parse(text) as T;
  }

  private readonly jsonTexts = new Map<string, string>();

  /** Bytes [start, end) of a blob. */
  async *stream(digest: string, start = 0, end?: number): AsyncGenerator<Buffer> {
    if (end !== undefined && end <= start) return;
    const s = fs.createReadStream(this.path(digest), { highWaterMark: 1 << 20, start, ...(end !== undefined ? { end: end - 1 } : {}) });
    for await (const chunk of s) yield chunk as Buffer;
  }

  /** Store a small blob from memory (manifests, configs), verifying it when the digest is known. */
  put(data: Buffer, expected?: string): string {
    const digest = sha256(data);
    if (expected && digest !== expected) throw invalid(`content does not match its digest: expected ${expected}, got ${digest}`);
    if (this.has(digest)) return digest;
    const tmp = join(this.ingest, `put-${process.pid}-${Math.random().toString(36).slice(2)}`);
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, this.path(digest));
    return digest;
  }

  /**
   * Open the ingest for a digest, waiting while another process writes it. Returns undefined when
   * the blob is (or became) present.
   */
  async openIngest(digest: string, size?: number): Promise<Ingest | undefined> {
    const hex = checkDigest(digest);
    if (this.has(digest)) return undefined;
    const path = join(this.ingest, hex);
    const lock = await FileLock.acquire(`${path}.lock`, "exclusive");
    if (this.has(digest)) {
      lock.release();
      return undefined;
    }
    return new Ingest(this, digest, path, lock, size);
  }

  delete(digest: string): void {
    this.jsonTexts.delete(digest);
    fs.rmSync(this.path(digest), { force: true });
  }

  list(): string[] {
    return fs.readdirSync(this.blobs).filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Remove ingests nobody is writing (their writer died or gave up). */
  cleanIngests(keepPartials: boolean, dryRun = false): string[] {
    const out: string[] = [];
    for (const name of fs.readdirSync(this.ingest)) {
      const p = join(this.ingest, name);
      if (name.startsWith("put-")) {
        const pid = Number(name.split("-")[1]);
        if (pidAlive(pid)) continue;
        out.push(`unfinished blob ${name}`);
        if (!dryRun) fs.rmSync(p, { force: true });
        continue;
      }
      if (dryRun) continue;
      if (name.endsWith(".lock")) {
        const l = FileLock.tryAcquire(p, "exclusive");
        if (!l) continue;
        const data = p.slice(0, -5);
        if (!keepPartials) fs.rmSync(data, { force: true });
        if (!fs.existsSync(data)) fs.rmSync(p, { force: true });
        l.release();
      }
    }
    return out;
  }
}

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
