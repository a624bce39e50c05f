/**
 * Commit: a writable snapshot's changes become a new layer on top of its image (docker commit).
 * With overlay the changes are the upper dir (whiteouts translated back to `.wh.` entries); with
 * the copy snapshotter they are found by comparing the tree with its parent layer's.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { builtin } from "../common/builtin.js";
import { treeBytes } from "../common/sys.js";
import { trace } from "../common/trace.js";
import { invalid } from "../common/errors.js";
import { applyChanges } from "./archive.js";
import { packDirectory } from "./pack.js";
import { encodeHeader, END_OF_ARCHIVE } from "./tar.js";
import { chainIds, type ImageRecord, type ImageStore } from "./store.js";
import { formatReference, parseReference, withDefaultTag } from "./reference.js";
import { hostPlatform, MediaType, type ContainerConfig, type Descriptor, type ImageConfig, type Manifest } from "./types.js";

export interface CommitOptions {
  /** The writable snapshot (a container's key). */
  snapshot: string;
  /** The image the snapshot was prepared from (undefined: from scratch). */
  parent?: ImageRecord;
  /** The container's config, which becomes the image's (docker keeps Cmd, Env, … of the container). */
  config?: ContainerConfig;
  /** Dockerfile instructions applied on top (commit --change). */
  changes?: string[];
  message?: string;
  author?: string;
  /** What history's created_by shows (docker: the container's command). */
  createdBy?: string;
  reference?: string;
}

/** The changes of a copy snapshot: what differs from its parent tree, deletions as whiteouts. */
async function* treeDiff(lower: string | undefined, upper: string): AsyncGenerator<Buffer> {
  const same = (a: fs.Stats, b: fs.Stats, pa: string, pb: string) =>
    a.mode === b.mode &&
    a.uid === b.uid &&
    a.gid === b.gid &&
    (a.isDirectory() || (a.size === b.size && a.mtimeMs === b.mtimeMs)) &&
    (!a.isSymbolicLink() || fs.readlinkSync(pa) === fs.readlinkSync(pb));
  const changed = new Set<string>();
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(join(upper, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const u = fs.lstatSync(join(upper, r));
      const l = lower ? fs.lstatSync(join(lower, r), { throwIfNoEntry: false }) : undefined;
      if (!l || !same(u, l, join(upper, r), join(lower!, r))) changed.add(r);
      if (u.isDirectory() && (!l || l.isDirectory())) walk(r);
      else if (u.isDirectory()) changed.add(r);
    }
  };
  walk("");
  const deleted: string[] = [];
  const walkLower = (rel: string) => {
    if (!lower) return;
    for (const name of fs.readdirSync(join(lower, rel))) {
      const r = rel ? `${rel}/${name}` : name;
      const u = fs.lstatSync(join(upper, r), { throwIfNoEntry: false });
      if (!u) deleted.push(r);
      else if (u.isDirectory() && fs.lstatSync(join(lower, r)).isDirectory()) walkLower(r);
    }
  };
  walkLower("");
  // parents of changed entries travel with them, so the layer recreates the path
  for (const r of [...changed]) for (let p = r.split("/").slice(0, -1); p.length; p.pop()) changed.add(p.join("/"));
  for await (const chunk of packDirectory(upper, { exclude: (rel) => !changed.has(rel) })) {
    if (chunk === END_OF_ARCHIVE) break;
    yield chunk;
  }
  for (const d of deleted) {
    const i = d.lastIndexOf("/");
    yield encodeHeader({ name: `${i >= 0 ? d.slice(0, i + 1) : ""}.wh.${d.slice(i + 1)}`, type: "file", size: 0, mode: 0o644 });
  }
  yield END_OF_ARCHIVE;
}

/** Layers up to this size (a build step's few files) are gzipped in one call: no stream set-up per step. */
const SMALL_LAYER = 4 << 20;

/** A layer tar gzipped into the content store while both digests are computed: the blob and its diff ID. */
async function storeLayer(store: ImageStore, tar: AsyncIterable<Buffer>): Promise<{ digest: string; diffId: string; size: number; tarSize: number }> {
  const zlib = builtin<typeof import("node:zlib")>("node:zlib");
  const diffHash = createHash("sha256");
  const head: Buffer[] = [];
  let tarSize = 0;
  const it = tar[Symbol.asyncIterator]();
  let more = true;
  while (tarSize <= SMALL_LAYER) {
    const r = await it.next();
    if (r.done) {
      more = false;
      break;
    }
    diffHash.update(r.value);
    tarSize += r.value.length;
    head.push(r.value);
  }
  if (!more) {
    const blob = zlib.gzipSync(Buffer.concat(head), { level: 6 });
    return { digest: store.content.put(blob), diffId: `sha256:${diffHash.digest("hex")}`, size: blob.length, tarSize };
  }
  const tmp = join(store.root, "tmp", `layer-${process.pid}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(join(store.root, "tmp"), { recursive: true });
  try {
    const blobHash = createHash("sha256");
    const out = fs.createWriteStream(tmp);
    const gz = zlib.createGzip({ level: 6 });
    let size = 0;
    gz.on("data", (c: Buffer) => {
      blobHash.update(c);
      size += c.length;
      if (!out.write(c)) gz.pause();
    });
    out.on("drain", () => gz.resume());
    const done = new Promise<void>((resolve, reject) => {
      gz.on("end", () => out.end(resolve));
      gz.on("error", reject);
      out.on("error", reject);
    });
    const write = async (chunk: Buffer) => {
      if (!gz.write(chunk)) await new Promise((r) => gz.once("drain", r));
    };
    for (const chunk of head) await write(chunk);
    for (let r = await it.next(); !r.done; r = await it.next()) {
      diffHash.update(r.value);
      tarSize += r.value.length;
      await write(r.value);
    }
    gz.end();
    await done;
    const digest = `sha256:${blobHash.digest("hex")}`;
    if (!store.content.has(digest)) fs.renameSync(tmp, store.content.path(digest));
    return { digest, diffId: `sha256:${diffHash.digest("hex")}`, size, tarSize };
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

/** The tar of a writable snapshot's changes (overlay: its upper dir; copy: a diff against the parent layer). */
function changesTar(store: ImageStore, snapshot: string, parentTop: string | undefined): AsyncIterable<Buffer> {
  return store.snapshots.kind === "overlay"
    ? packDirectory(store.snapshots.changes(snapshot), { form: "overlay-diff" })
    : treeDiff(parentTop ? store.snapshots.layerDir(parentTop) : undefined, store.snapshots.changes(snapshot));
}

/** Store a config and a manifest of parent's layers plus `layer`, and name the image. */
async function writeImage(store: ImageStore, parent: ImageRecord | undefined, config: ImageConfig, layer: Descriptor | undefined, tags: string[], extra: { cacheKey?: string; intermediate?: boolean } = {}): Promise<ImageRecord> {
  const cfgBody = Buffer.from(JSON.stringify(config));
  const cfgDigest = store.content.put(cfgBody);
  const parentManifest: Manifest | undefined = parent ? store.manifest(parent) : undefined;
  const manifest: Manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBody.length },
    layers: [...(parentManifest?.layers ?? []), ...(layer ? [layer] : [])],
  };
  return store.createImage(manifest, MediaType.ociManifest, tags, { ...(parent ? { parent: parent.id } : {}), ...extra });
}

/** Runs fn holding the store's writer lease (gc leaves its blobs alone); a failure's stray blobs are collected after. */
async function underLease<T>(store: ImageStore, fn: () => Promise<T>): Promise<T> {
  const lease = await store.writerLease();
  let failed = false;
  try {
    return await fn();
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    lease.release();
    if (failed) await store.gc();
  }
}

export async function commitSnapshot(store: ImageStore, opts: CommitOptions): Promise<ImageRecord> {
  if (!store.snapshots.hasActive(opts.snapshot)) throw invalid(`no such snapshot: ${opts.snapshot}`);
  const tags = opts.reference ? [formatReference(withDefaultTag(parseReference(opts.reference)))] : [];
  return underLease(store, async () => {
    const parentConfig: ImageConfig | undefined = opts.parent ? store.config(opts.parent) : undefined;
    const parentTop = opts.parent ? store.topLayer(opts.parent) : undefined;
    const layer = await storeLayer(store, changesTar(store, opts.snapshot, parentTop));
    const now = new Date().toISOString();
    const p = hostPlatform();
    const config: ImageConfig = {
      ...(parentConfig ?? { architecture: p.architecture, os: p.os }),
      created: now,
      ...(opts.author ? { author: opts.author } : {}),
      config: applyChanges(opts.config ?? parentConfig?.config ?? {}, opts.changes ?? []),
      rootfs: { type: "layers", diff_ids: [...(parentConfig?.rootfs.diff_ids ?? []), layer.diffId] },
      history: [...(parentConfig?.history ?? []), { created: now, created_by: opts.createdBy ?? "berth commit", ...(opts.author ? { author: opts.author } : {}), ...(opts.message ? { comment: opts.message } : {}) }],
    };
    // the new layer's snapshot is unpacked from the blob: exactly what a pull of the image would make
    return writeImage(store, opts.parent, config, { mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }, tags);
  });
}

export interface BuildCommit {
  /** The writable snapshot holding the step's changes (undefined: a step that changes no file). */
  snapshot?: string;
  parent?: ImageRecord;
  /** The new image's config: its history ends with this step's entry; rootfs is the parent's (the layer is added here). */
  config: ImageConfig;
  tags?: string[];
  cacheKey?: string;
  intermediate?: boolean;
}

/**
 * A build step's image: the snapshot's changes become its layer (none, and `empty_layer` in the
 * history, when it changed nothing), moved into place rather than unpacked again; the snapshot is
 * then the caller's to remove.
 */
export async function commitBuildStep(store: ImageStore, opts: BuildCommit): Promise<ImageRecord> {
  return underLease(store, async () => {
    const config: ImageConfig = structuredClone(opts.config);
    const parentTop = opts.parent ? store.topLayer(opts.parent) : undefined;
    const history = config.history ?? [];
    const last = history[history.length - 1];
    const changed = opts.snapshot !== undefined && (store.snapshots.kind !== "overlay" || fs.readdirSync(store.snapshots.changes(opts.snapshot)).length > 0);
    if (!changed || !opts.snapshot) {
      if (last) last.empty_layer = true;
      return await writeImage(store, opts.parent, config, undefined, opts.tags ?? [], stepOf(opts));
    }
    trace("commit: leased");
    const layer = await storeLayer(store, changesTar(store, opts.snapshot, parentTop));
    trace("commit: layer stored");
    if (last) delete last.empty_layer;
    config.rootfs = { type: "layers", diff_ids: [...config.rootfs.diff_ids, layer.diffId] };
    const ids = chainIds(config.rootfs.diff_ids);
    const chainId = ids[ids.length - 1]!;
    if (store.snapshots.kind === "overlay") {
      const size = treeBytes(store.snapshots.changes(opts.snapshot));
      store.snapshots.adopt(opts.snapshot, { chainId, ...(parentTop ? { parent: parentTop } : {}), diffId: layer.diffId, size, tarSize: layer.tarSize });
      trace("commit: adopted");
    }
    return writeImage(store, opts.parent, config, { mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }, opts.tags ?? [], stepOf(opts));
  });
}

/** What of a build commit's options the image record keeps (its parent is the parent's ID, never the record). */
const stepOf = (o: BuildCommit) => ({ ...(o.cacheKey ? { cacheKey: o.cacheKey } : {}), ...(o.intermediate ? { intermediate: true } : {}) });

/** A build step's image made of a layer another image already holds (build --cache-from). */
export async function writeLayerImage(store: ImageStore, parent: ImageRecord | undefined, config: ImageConfig, layer: Descriptor | undefined, extra: { cacheKey?: string; intermediate?: boolean } = {}): Promise<ImageRecord> {
  return underLease(store, () => writeImage(store, parent, config, layer, [], extra));
}

/** An image whose config changed and whose layers did not (a build's metadata-only result). */
export async function writeConfigImage(store: ImageStore, parent: ImageRecord | undefined, config: ImageConfig, tags: string[], extra: { cacheKey?: string; intermediate?: boolean } = {}): Promise<ImageRecord> {
  return underLease(store, () => writeImage(store, parent, config, undefined, tags, extra));
}
