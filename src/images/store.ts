/**
 * The image store: content (blobs), snapshots (unpacked layers) and metadata (images and their
 * names) under one root, /var/lib/berth by default.
 *
 * Metadata is one JSON document, images.json, replaced atomically (write, fsync, rename) under an
 * exclusive lock; readers never lock and always see a whole version. Blobs and snapshots are
 * committed by rename before metadata names them, so a crash at any point leaves, at worst,
 * unreferenced data, which the next write command's garbage collection removes. Long writers
 * (pull, load, import, commit) hold the gc lock shared; collection takes it exclusively, so it never
 * removes what a running pull has fetched but not yet named.
 */
import * as fs from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "../common/path.js";
import { BerthError, ErrorCode, invalid, noSpaceHint, notFound, precondition } from "../common/errors.js";
import { defaultStoreRoot } from "../common/paths.js";
import { ContentStore, pidAlive, sha256 } from "./content.js";
import { MNT_DETACH, removeFile, removeTree, umount } from "../common/sys.js";
import { FileLock, withLock, writeFileAtomic } from "../common/lock.js";
import { familiar, formatReference, parseReference, repositoryName, withDefaultTag, type Reference } from "./reference.js";
import { openSnapshotter, type Snapshotter } from "./snapshot.js";
import { MediaType, type Descriptor, type ImageConfig, type Manifest } from "./types.js";

export interface ImageRecord {
  /** The config digest, docker's image ID. */
  id: string;
  /** The manifest this image was unpacked from. */
  target: Descriptor;
  /** The index (manifest list) it was chosen from, if any. */
  index?: string;
  /** Full names: docker.io/library/busybox:latest. */
  repoTags: string[];
  /** Full names with digests: docker.io/library/busybox@sha256:... */
  repoDigests: string[];
  created?: string;
  /** Bytes of file content, all layers (docker's image Size). */
  size: number;
  /** When the image entered this store. */
  added: string;
  /** The image this one was committed or built from. */
  parent?: string;
  /** A build step's cache key: the builder reuses this image for a step with the same key. */
  cacheKey?: string;
  /** A build's intermediate state (hidden from `images`, removed by `builder prune`). */
  intermediate?: boolean;
}

interface Metadata {
  version: 1;
  images: Record<string, ImageRecord>;
  /**
   * The journal of build step images recorded since this file was written (one JSON record a
   * line, appended): a build's steps add their images without rewriting the whole metadata.
   */
  journal?: string;
}

/** Step records a journal takes before the next one folds them into the metadata file. */
const JOURNAL_LIMIT = 512;

export interface StoreOptions {
  root?: string;
  snapshotter?: "overlay" | "copy";
}

export const defaultRoot = (): string => defaultStoreRoot();

/** chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)) */
export function chainIds(diffIds: string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) out.push(out.length ? sha256(`${out[out.length - 1]} ${d}`) : d);
  return out;
}

export const shortId = (id: string): string => id.replace(/^sha256:/, "").slice(0, 12);

export class ImageStore {
  readonly root: string;
  readonly content: ContentStore;
  readonly snapshots: Snapshotter;
  private readonly metaPath: string;
  private readonly locks: string;
  /** The metadata as last read or written; a rewrite makes a new inode, so (ino, mtime, size) tell a change. */
  private cache?: { ino: number; mtimeMs: number; size: number; meta: Metadata; journalAt: number; journalLines: number };

  constructor(opts: StoreOptions = {}) {
    this.root = opts.root ?? defaultRoot();
    fs.mkdirSync(this.root, { recursive: true, mode: 0o711 });
    this.content = new ContentStore(join(this.root, "content"));
    this.snapshots = openSnapshotter(join(this.root, "snapshots"), opts.snapshotter ?? (process.env.BERTH_SNAPSHOTTER as "overlay" | "copy" | undefined));
    this.metaPath = join(this.root, "images.json");
    this.locks = join(this.root, "locks");
    fs.mkdirSync(this.locks, { recursive: true });
  }

  // ---- metadata

  private read(): Metadata {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(this.metaPath);
    } catch {
      // no metadata file yet: an empty store
      return { version: 1, images: {} };
    }
    let c = this.cache;
    if (!c || c.ino !== st.ino || c.mtimeMs !== st.mtimeMs || c.size !== st.size) {
      let meta: Metadata;
      try {
        meta = JSON.parse(fs.readFileSync(this.metaPath, "utf8")) as Metadata;
      } catch (e) {
        throw new BerthError("System", `the image metadata ${this.metaPath} is unreadable (${(e as Error).message}); move it aside to start an empty store`);
      }
      // stores written before a fix held each build step's whole ancestry as its parent: its ID is meant
      for (const r of Object.values(meta.images)) if (r.parent && typeof r.parent === "object") r.parent = (r.parent as { id: string }).id;
      c = this.cache = { ino: st.ino, mtimeMs: st.mtimeMs, size: st.size, meta, journalAt: 0, journalLines: 0 };
    }
    this.readJournal(c);
    return c.meta;
  }

  /** Applies what the journal gained since it was last read (whole lines only: one being appended waits). */
  private readJournal(c: NonNullable<ImageStore["cache"]>): void {
    if (!c.meta.journal) return;
    // most reads find it unchanged (or not made yet): a stat, no open
    const path = join(this.root, c.meta.journal);
    const size = fs.statSync(path, { throwIfNoEntry: false })?.size ?? 0;
    if (size <= c.journalAt) return;
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch {
      return; // folded and removed meanwhile: the next read of the metadata file has it
    }
    try {
      const buf = Buffer.alloc(size - c.journalAt);
      const n = fs.readSync(fd, buf, 0, buf.length, c.journalAt);
      const end = buf.lastIndexOf(10, n - 1);
      if (end < 0) return;
      for (const line of buf.subarray(0, end).toString("utf8").split("\n")) {
        try {
          const rec = JSON.parse(line) as ImageRecord;
          c.meta.images[rec.id] = rec;
          c.journalLines++;
        } catch {
          /* a line a crash cut short: that step's record is lost, nothing else */
        }
      }
      c.journalAt += end + 1;
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Read-modify-write of the metadata under the exclusive metadata lock, on a copy (records handed
   * out before stay as they were); what was written is the cached copy after. The journal's
   * records are folded in, and a new journal named.
   */
  async update<T>(fn: (meta: Metadata) => T): Promise<T> {
    return withLock(join(this.locks, "metadata.lock"), "exclusive", () => this.rewrite(fn));
  }

  private rewrite<T>(fn: (meta: Metadata) => T): T {
    try {
      const meta = structuredClone(this.read());
      const out = fn(meta);
      meta.journal = `images.journal.${randomBytes(6).toString("hex")}`;
      writeFileAtomic(this.metaPath, JSON.stringify(meta));
      // the journal folded in goes, and any a crash left between the write and this removal
      for (const n of fs.readdirSync(this.root)) if (n.startsWith("images.journal.") && n !== meta.journal) fs.rmSync(join(this.root, n), { force: true });
      const st = fs.statSync(this.metaPath);
      this.cache = { ino: st.ino, mtimeMs: st.mtimeMs, size: st.size, meta, journalAt: 0, journalLines: 0 };
      return out;
    } catch (e) {
      this.cache = undefined;
      throw e;
    }
  }

  /**
   * A build step's image: one line appended to the journal, not a rewrite of every image's record
   * (which grows with the store). Not synced: a power loss may forget the last steps (their layers
   * are then unreferenced, and removed by repair), never the images recorded before.
   */
  private async recordStep(rec: ImageRecord): Promise<ImageRecord> {
    return withLock(join(this.locks, "metadata.lock"), "exclusive", () => {
      const meta = this.read();
      const c = this.cache;
      if (!c || !meta.journal || meta.images[rec.id] || c.journalLines >= JOURNAL_LIMIT)
        return this.rewrite((m) => {
          const existing = m.images[rec.id];
          m.images[rec.id] = existing ? { ...rec, added: existing.added, repoTags: existing.repoTags, repoDigests: existing.repoDigests } : rec;
          return m.images[rec.id]!;
        });
      try {
        const fd = fs.openSync(join(this.root, meta.journal), "a+");
        try {
          // a line a crash cut short is ended first, so it cannot swallow this record
          const size = fs.fstatSync(fd).size;
          const last = Buffer.alloc(1);
          const torn = size > 0 && fs.readSync(fd, last, 0, 1, size - 1) === 1 && last[0] !== 10;
          fs.writeSync(fd, (torn ? "\n" : "") + JSON.stringify(rec) + "\n");
        } finally {
          fs.closeSync(fd);
        }
      } catch (e) {
        this.cache = undefined;
        // one line, as every full disk reads (errorMessage): what to do is part of it
        if ((e as NodeJS.ErrnoException).code === "ENOSPC")
          throw new BerthError("System", `no space left on device (writing ${meta.journal}): ${noSpaceHint}`, { cause: e, code: ErrorCode.NO_SPACE });
        throw e;
      }
      this.readJournal(c);
      return rec;
    });
  }

  /** Hold while writing content that is not yet named by an image, so gc leaves it alone. */
  writerLease(): Promise<FileLock> {
    return FileLock.acquire(join(this.locks, "gc.lock"), "shared");
  }

  list(): ImageRecord[] {
    return Object.values(this.read().images).sort((a, b) => (b.created ?? "").localeCompare(a.created ?? "") || b.added.localeCompare(a.added));
  }

  /**
   * Find an image as docker does: a name (tag defaulting to latest), name@digest, a full or
   * prefixed ID (sha256:abc... or abc...).
   */
  find(nameOrId: string): ImageRecord | undefined {
    const images = this.read().images;
    const id = nameOrId.startsWith("sha256:") ? nameOrId : `sha256:${nameOrId}`;
    if (/^sha256:[a-f0-9]{64}$/.test(id) && images[id]) return images[id];
    let ref: Reference | undefined;
    try {
      ref = parseReference(nameOrId);
    } catch {
      /* not a name: maybe an id prefix */
    }
    if (ref) {
      const full = formatReference(withDefaultTag(ref));
      for (const r of Object.values(images)) {
        if (ref.digest) {
          if (r.repoDigests.includes(formatReference({ ...ref, tag: undefined } as Reference)) || (r.target.digest === ref.digest && r.repoTags.some((t) => t.startsWith(repositoryName(ref!) + ":")))) return r;
        } else if (r.repoTags.includes(full)) return r;
      }
    }
    if (/^[a-f0-9]{1,64}$/.test(nameOrId.replace(/^sha256:/, ""))) {
      const matches = Object.values(images).filter((r) => r.id.startsWith(id));
      if (matches.length === 1) return matches[0];
      if (matches.length > 1 && nameOrId.replace(/^sha256:/, "").length >= 4) throw invalid(`image ID prefix ${nameOrId} is ambiguous: it matches ${matches.length} images`);
    }
    return undefined;
  }

  /** The image a build step with this cache key made earlier, if it is still here and whole. */
  findCached(cacheKey: string): ImageRecord | undefined {
    for (const r of Object.values(this.read().images)) if (r.cacheKey === cacheKey && this.content.has(r.id)) return r;
    return undefined;
  }

  get(nameOrId: string): ImageRecord {
    const r = this.find(nameOrId);
    if (!r) throw notFound(`No such image: ${nameOrId}`);
    return r;
  }

  manifest(rec: ImageRecord): Manifest {
    return this.content.readJSON<Manifest>(rec.target.digest);
  }

  config(rec: ImageRecord): ImageConfig {
    return this.content.readJSON<ImageConfig>(rec.id);
  }

  /** The top layer's chain ID (what a container's snapshot is prepared on), or undefined for an empty image. */
  topLayer(rec: ImageRecord): string | undefined {
    const ids = chainIds(this.config(rec).rootfs.diff_ids);
    return ids[ids.length - 1];
  }

  /**
   * Record an image whose blobs and snapshots are all committed, naming it by the given tags (a tag
   * moves from whatever image had it, as in docker) and digests.
   */
  async register(rec: Omit<ImageRecord, "repoTags" | "repoDigests" | "added">, tags: string[], digests: string[] = []): Promise<ImageRecord> {
    if (rec.intermediate && !tags.length && !digests.length) return this.recordStep({ ...rec, added: new Date().toISOString(), repoTags: [], repoDigests: [] });
    return this.update((meta) => {
      for (const t of tags) for (const other of Object.values(meta.images)) other.repoTags = other.repoTags.filter((x) => x !== t);
      const existing = meta.images[rec.id];
      const merged: ImageRecord = {
        ...rec,
        ...(existing?.parent && !rec.parent ? { parent: existing.parent } : {}),
        added: existing?.added ?? new Date().toISOString(),
        repoTags: [...new Set([...(existing?.repoTags ?? []), ...tags])],
        repoDigests: [...new Set([...(existing?.repoDigests ?? []), ...digests])],
      };
      meta.images[rec.id] = merged;
      return merged;
    });
  }

  async tag(source: string, target: string): Promise<void> {
    const rec = this.get(source);
    const ref = withDefaultTag(parseReference(target));
    if (ref.digest) throw invalid(`refusing to create a tag with a digest reference: ${target}`);
    const full = formatReference(ref);
    await this.update((meta) => {
      if (!meta.images[rec.id]) throw notFound(`No such image: ${source}`);
      for (const other of Object.values(meta.images)) other.repoTags = other.repoTags.filter((t) => t !== full);
      meta.images[rec.id]!.repoTags.push(full);
    });
  }

  /**
   * docker rmi: a name untags (deleting the image when it was the last name); an ID deletes the
   * image, which needs force when several repositories name it. inUse says which containers use an
   * image (the engine fills it in).
   */
  async remove(nameOrId: string, opts: { force?: boolean; inUse?: (id: string) => string[] } = {}): Promise<{ untagged: string[]; deleted: string[] }> {
    const rec = this.get(nameOrId);
    const out = { untagged: [] as string[], deleted: [] as string[] };
    let byName: string | undefined;
    try {
      const ref = parseReference(nameOrId);
      const full = formatReference(ref.digest ? ref : withDefaultTag(ref));
      if (rec.repoTags.includes(full) || rec.repoDigests.includes(full)) byName = full;
    } catch {
      /* an ID */
    }
    const users = opts.inUse?.(rec.id) ?? [];
    await this.update((meta) => {
      const r = meta.images[rec.id];
      if (!r) return;
      const repos = new Set(r.repoTags.map((t) => t.replace(/:[^:/]+$/, "")));
      if (byName && (r.repoTags.length > 1 || (r.repoTags.length === 1 && byName.includes("@")))) {
        // just this name goes
        r.repoTags = r.repoTags.filter((t) => t !== byName);
        r.repoDigests = r.repoDigests.filter((t) => t !== byName);
        out.untagged.push(familiar(byName));
        return;
      }
      if (!byName && repos.size > 1 && !opts.force)
        throw precondition(`conflict: unable to delete ${shortId(r.id)} (must be forced) - image is referenced in multiple repositories`);
      if (users.length && !opts.force)
        throw precondition(`conflict: unable to ${byName ? `remove repository reference "${familiar(byName)}"` : `delete ${shortId(r.id)}`} (must be forced) - image is being used by container ${shortId(users[0]!)}`);
      for (const t of [...r.repoTags, ...r.repoDigests]) out.untagged.push(familiar(t));
      if (users.length) {
        r.repoTags = [];
        r.repoDigests = [];
        return; // forced: the image stays (dangling) while containers use it, as in docker
      }
      delete meta.images[rec.id];
      out.deleted.push(rec.id);
    });
    if (out.deleted.length) await this.gc();
    return out;
  }

  /** Everything images reference: blobs and layer chain IDs. */
  private references(meta: Metadata, activeParents: string[]): { blobs: Set<string>; layers: Set<string> } {
    const blobs = new Set<string>(),
      layers = new Set<string>(activeParents);
    for (const r of Object.values(meta.images)) {
      blobs.add(r.id).add(r.target.digest);
      if (r.index) blobs.add(r.index);
      try {
        for (const l of this.content.readJSON<Manifest>(r.target.digest).layers) blobs.add(l.digest);
        for (const c of chainIds(this.content.readJSON<ImageConfig>(r.id).rootfs.diff_ids)) layers.add(c);
      } catch {
        /* a broken image keeps what it has; `berth rmi` removes it */
      }
    }
    // a layer's parents are needed by whoever uses the layer
    for (const id of [...layers]) for (let p = this.snapshots.layer(id)?.parent; p && !layers.has(p); p = this.snapshots.layer(p)?.parent) layers.add(p);
    return { blobs, layers };
  }

  /**
   * Remove blobs and layer snapshots no image or container uses, and what crashed commands left
   * (temporary directories, abandoned downloads). Skipped, not waited for, while a pull runs.
   */
  async gc(opts: { keepPartials?: boolean } = {}): Promise<{ reclaimed: number; removedBlobs: number; removedLayers: number }> {
    const lock = FileLock.tryAcquire(join(this.locks, "gc.lock"), "exclusive");
    const out = { reclaimed: 0, removedBlobs: 0, removedLayers: 0 };
    if (!lock) return out;
    try {
      this.cleanLeftovers();
      this.content.cleanIngests(opts.keepPartials ?? true);
      const activeParents = this.snapshots.actives().flatMap((k) => {
        try {
          const p = fs.readFileSync(join(this.snapshots.root, "active", k, "parent"), "utf8");
          return p ? [p] : [];
        } catch {
          // no parent file: a snapshot on no image
          return [];
        }
      });
      this.cache = undefined;
      const { blobs, layers } = this.references(this.read(), activeParents);
      for (const d of this.content.list())
        if (!blobs.has(d)) {
          out.reclaimed += this.content.size(d) ?? 0;
          this.content.delete(d);
          out.removedBlobs++;
        }
      for (const l of this.snapshots.layers())
        if (!layers.has(l.chainId)) {
          out.reclaimed += l.size;
          this.snapshots.removeLayer(l.chainId);
          out.removedLayers++;
        }
    } finally {
      lock.release();
    }
    return out;
  }

  /**
   * What killed commands left: a build's snapshots (`build-PID-…`, mounted at tmp/KEY), temporary
   * files and directories of loads, imports, commits and builds (`tmp/KIND-PID-…`) and half-written
   * records (`*.tmp-PID`), for writers whose process is gone; and snapshots `orphan(key)` says no
   * container owns. Removed unless dryRun; what was (or would be) removed is returned.
   */
  cleanLeftovers(opts: { dryRun?: boolean; orphan?: (key: string) => boolean } = {}): string[] {
    const out: string[] = [...this.snapshots.cleanup(opts.dryRun), ...this.content.cleanIngests(true, opts.dryRun)];
    const dead = (pid: string) => !pidAlive(Number(pid));
    for (const key of this.snapshots.actives()) {
      const m = /^build-(?:ro-)?(\d+)-/.exec(key);
      const orphan = m ? dead(m[1]!) : opts.orphan?.(key);
      if (!orphan) continue;
      out.push(`snapshot ${key}`);
      if (opts.dryRun) continue;
      const at = join(this.root, "tmp", key);
      try {
        umount(at, MNT_DETACH);
      } catch {
        /* not mounted */
      }
      fs.rmSync(at, { recursive: true, force: true });
      this.snapshots.remove(key);
    }
    const tmp = join(this.root, "tmp");
    for (const n of fs.existsSync(tmp) ? fs.readdirSync(tmp) : []) {
      const m = /^[a-z-]+?-(\d+)-/.exec(n);
      if (!m || !dead(m[1]!)) continue;
      out.push(`temporary file tmp/${n}`);
      if (!opts.dryRun) removeTree(join(tmp, n), { detachMounts: true });
    }
    for (const n of fs.readdirSync(this.root)) {
      const m = /\.tmp-(\d+)$/.exec(n);
      if (!m || !dead(m[1]!)) continue;
      out.push(`temporary file ${n}`);
      if (!opts.dryRun) removeFile(join(this.root, n));
    }
    return out;
  }

  /** docker image prune: dangling images (no name), or with all every image no container uses. */
  async prune(opts: { all?: boolean; inUse?: (id: string) => string[]; filter?: (r: ImageRecord) => boolean; buildCache?: boolean } = {}): Promise<{ deleted: string[]; untagged: string[]; reclaimed: number }> {
    const out = { deleted: [] as string[], untagged: [] as string[], reclaimed: 0 };
    await this.update((meta) => {
      for (const r of Object.values(meta.images)) {
        if (!opts.all && r.repoTags.length) continue;
        // a build's intermediate images are its cache: `builder prune` removes them, not image prune
        if (!!r.intermediate !== !!opts.buildCache) continue;
        if (opts.inUse?.(r.id).length) continue;
        if (opts.filter && !opts.filter(r)) continue;
        for (const t of [...r.repoTags, ...r.repoDigests]) out.untagged.push(familiar(t));
        delete meta.images[r.id];
        out.deleted.push(r.id);
      }
    });
    out.reclaimed = (await this.gc({ keepPartials: false })).reclaimed;
    return out;
  }

  /** Bytes used: docker system df's images row. */
  usage(): { images: number; layersSize: number; blobsSize: number } {
    const layersSize = this.snapshots.layers().reduce((n, l) => n + l.size, 0);
    const blobsSize = this.content.list().reduce((n, d) => n + (this.content.size(d) ?? 0), 0);
    return { images: this.list().length, layersSize, blobsSize };
  }

  /** Make sure every layer of an image is unpacked (after a crash, or a gc that raced a pull). */
  async ensureUnpacked(rec: ImageRecord): Promise<void> {
    const manifest = this.manifest(rec);
    const config = this.config(rec);
    const ids = chainIds(config.rootfs.diff_ids);
    for (let i = 0; i < ids.length; i++) {
      if (this.snapshots.hasLayer(ids[i]!)) continue;
      const desc = manifest.layers[i]!;
      if (!this.content.has(desc.digest)) throw notFound(`layer ${desc.digest} of image ${shortId(rec.id)} is missing: pull the image again`);
      await this.snapshots.applyLayer(ids[i]!, ids[i - 1], this.content.stream(desc.digest), config.rootfs.diff_ids[i]);
    }
  }

  /**
   * Store a manifest, config and layer blobs already in the content store as an image: unpack its
   * layers and name it. Used by load, import and commit.
   */
  async createImage(manifest: Manifest, manifestMediaType: string, tags: string[], opts: { parent?: string; digests?: string[]; cacheKey?: string; intermediate?: boolean } = {}): Promise<ImageRecord> {
    const body = Buffer.from(JSON.stringify(manifest));
    const digest = this.content.put(body);
    const config = this.content.readJSON<ImageConfig>(manifest.config.digest);
    const ids = chainIds(config.rootfs.diff_ids);
    let size = 0;
    for (let i = 0; i < ids.length; i++) {
      if (!this.snapshots.hasLayer(ids[i]!)) await this.snapshots.applyLayer(ids[i]!, ids[i - 1], this.content.stream(manifest.layers[i]!.digest), config.rootfs.diff_ids[i]);
      size += this.snapshots.layer(ids[i]!)?.size ?? 0;
    }
    return this.register(
      {
        id: manifest.config.digest,
        target: { mediaType: manifestMediaType, digest, size: body.length },
        ...(config.created ? { created: config.created } : {}),
        size,
        ...(opts.parent ? { parent: opts.parent } : {}),
        ...(opts.cacheKey ? { cacheKey: opts.cacheKey } : {}),
        ...(opts.intermediate ? { intermediate: true } : {}),
      },
      tags,
      opts.digests ?? [],
    );
  }
}

export { MediaType };
