/**
 * Image archives: `save` writes docker-archive (docker save's manifest.json layout, layers as
 * uncompressed layer.tar) or oci-archive (an OCI image layout in a tar); `load` reads either, and
 * skopeo's, podman's and docker's own; `import` turns a root file system tar into an image.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { invalid, notFound } from "../common/errors.js";
import { sha256 } from "./content.js";
import { decompress, detectCompression, extractLayer } from "./layer.js";
import { familiar, formatReference, parseReference, withDefaultTag } from "./reference.js";
import { chainIds, type ImageRecord, type ImageStore } from "./store.js";
import { encodeHeader, END_OF_ARCHIVE, padding } from "./tar.js";
import { hostPlatform, indexTypes, MediaType, platformMatches, type ContainerConfig, type Descriptor, type ImageConfig, type Index, type Manifest } from "./types.js";

export type ArchiveFormat = "docker-archive" | "oci-archive";

const hex = (d: string) => d.slice(7);

function* fileEntry(name: string, data: Buffer): Generator<Buffer> {
  yield encodeHeader({ name, type: "file", size: data.length, mode: 0o644 });
  yield data;
  yield padding(data.length);
}

/** The uncompressed size of a layer blob: recorded at unpack time, else counted. */
async function tarSize(store: ImageStore, digest: string, chainId: string): Promise<number> {
  const known = store.snapshots.layer(chainId)?.tarSize;
  if (known !== undefined) return known;
  let n = 0;
  for await (const c of decompress(store.content.stream(digest))) n += c.length;
  return n;
}

const ociType = (t: string): string =>
  ({
    [MediaType.dockerManifest]: MediaType.ociManifest,
    [MediaType.dockerConfig]: MediaType.ociConfig,
    [MediaType.dockerLayer]: MediaType.ociLayerGzip,
    [MediaType.dockerForeignLayer]: MediaType.ociLayerNondistGzip,
    "application/vnd.docker.image.rootfs.diff.tar": MediaType.ociLayer,
  })[t] ?? t;

export async function* saveImages(store: ImageStore, names: string[], format: ArchiveFormat): AsyncGenerator<Buffer> {
  if (!names.length) throw invalid('"save" requires at least 1 argument');
  const picked: Array<{ rec: ImageRecord; tags: string[] }> = [];
  for (const n of names) {
    const rec = store.get(n);
    let tags: string[] = [];
    try {
      const ref = parseReference(n);
      if (!ref.digest) {
        const full = formatReference(withDefaultTag(ref));
        // a bare repository name saves every tag of it, as docker does
        tags = !ref.tag && !n.includes(":") ? rec.repoTags.filter((t) => t.startsWith(full.replace(/:latest$/, ":"))) : rec.repoTags.includes(full) ? [full] : [];
      }
    } catch {
      /* an ID: saved without names */
    }
    const seen = picked.find((p) => p.rec.id === rec.id);
    if (seen) seen.tags.push(...tags.filter((t) => !seen.tags.includes(t)));
    else picked.push({ rec, tags });
  }
  const written = new Set<string>();
  if (format === "docker-archive") {
    const manifestJson: Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }> = [];
    for (const { rec, tags } of picked) {
      const manifest = store.manifest(rec);
      const config = store.config(rec);
      const chain = chainIds(config.rootfs.diff_ids);
      const layers: string[] = [];
      for (let i = 0; i < manifest.layers.length; i++) {
        const diff = config.rootfs.diff_ids[i]!;
        const name = `${hex(diff)}/layer.tar`;
        layers.push(name);
        if (written.has(name)) continue;
        written.add(name);
        const desc = manifest.layers[i]!;
        const size = await tarSize(store, desc.digest, chain[i]!);
        yield encodeHeader({ name: `${hex(diff)}/`, type: "directory", mode: 0o755 });
        yield encodeHeader({ name, type: "file", size, mode: 0o644 });
        let n = 0;
        for await (const c of decompress(store.content.stream(desc.digest))) {
          n += c.length;
          yield c;
        }
        if (n !== size) throw invalid(`layer ${desc.digest} changed size while being saved`);
        yield padding(size);
      }
      const cfgName = `${hex(rec.id)}.json`;
      if (!written.has(cfgName)) {
        written.add(cfgName);
        yield* fileEntry(cfgName, store.content.read(rec.id));
      }
      manifestJson.push({ Config: cfgName, RepoTags: tags.length ? tags.map(familiar) : null, Layers: layers });
    }
    yield* fileEntry("manifest.json", Buffer.from(JSON.stringify(manifestJson)));
  } else {
    const index: Index = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
    yield* fileEntry("oci-layout", Buffer.from('{"imageLayoutVersion":"1.0.0"}'));
    yield encodeHeader({ name: "blobs/", type: "directory", mode: 0o755 });
    yield encodeHeader({ name: "blobs/sha256/", type: "directory", mode: 0o755 });
    const blob = function* (digest: string, data: Buffer) {
      if (written.has(digest)) return;
      written.add(digest);
      yield* fileEntry(`blobs/sha256/${hex(digest)}`, data);
    };
    for (const { rec, tags } of picked) {
      const m = store.manifest(rec);
      const oci: Manifest = {
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { ...m.config, mediaType: ociType(m.config.mediaType) },
        layers: m.layers.map((l) => ({ ...l, mediaType: ociType(l.mediaType) })),
        ...(m.annotations ? { annotations: m.annotations } : {}),
      };
      const body = Buffer.from(JSON.stringify(oci));
      for (const l of m.layers) {
        if (written.has(l.digest)) continue;
        written.add(l.digest);
        const size = store.content.size(l.digest);
        if (size === undefined) throw notFound(`layer ${l.digest} of ${rec.repoTags[0] ?? rec.id} is not in the store`);
        yield encodeHeader({ name: `blobs/sha256/${hex(l.digest)}`, type: "file", size, mode: 0o644 });
        yield* store.content.stream(l.digest);
        yield padding(size);
      }
      yield* blob(rec.id, store.content.read(rec.id));
      yield* blob(sha256(body), body);
      const desc: Descriptor = { mediaType: MediaType.ociManifest, digest: sha256(body), size: body.length };
      const names = tags.length ? tags : [undefined];
      for (const t of names)
        index.manifests.push({
          ...desc,
          ...(t ? { annotations: { "io.containerd.image.name": t, "org.opencontainers.image.ref.name": parseReference(t).tag ?? "latest" } } : {}),
        });
    }
    yield* fileEntry("index.json", Buffer.from(JSON.stringify(index)));
  }
  yield END_OF_ARCHIVE;
}

/** Move a file into the content store under its digest (verified when one is expected). */
async function putFile(store: ImageStore, path: string, expected?: string): Promise<{ digest: string; size: number }> {
  const h = createHash("sha256");
  let size = 0;
  for await (const c of fs.createReadStream(path, { highWaterMark: 1 << 20 })) {
    h.update(c as Buffer);
    size += (c as Buffer).length;
  }
  const digest = `sha256:${h.digest("hex")}`;
  if (expected && digest !== expected) throw invalid(`archive blob ${path.split("/").slice(-1)[0]} does not match its digest ${expected}`);
  if (!store.content.has(digest)) fs.renameSync(path, store.content.path(digest));
  return { digest, size };
}

function layerMediaType(head: Buffer): string {
  const c = detectCompression(head);
  return c === "gzip" ? MediaType.ociLayerGzip : c === "zstd" ? MediaType.ociLayerZstd : MediaType.ociLayer;
}

function readHead(path: string): Buffer {
  const fd = fs.openSync(path, "r");
  try {
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 0);
    return b;
  } finally {
    fs.closeSync(fd);
  }
}

/** Within-archive path, refusing escapes. */
function inside(dir: string, rel: string): string {
  const clean = rel.split("/").filter((c) => c && c !== ".");
  if (clean.includes("..") || !clean.length) throw invalid(`archive names a path outside itself: ${rel}`);
  return join(dir, ...clean);
}

const loadName = (n: string): string => formatReference(withDefaultTag(parseReference(n)));

export async function loadImages(store: ImageStore, input: AsyncIterable<Buffer>): Promise<ImageRecord[]> {
  const tmp = join(store.root, "tmp", `load-${process.pid}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(tmp, { recursive: true });
  const lease = await store.writerLease();
  let failed = false;
  try {
    try {
      await extractLayer(input, tmp, "apply");
    } catch (e) {
      throw invalid(`invalid archive: ${(e as Error).message}`);
    }
    const out: ImageRecord[] = [];
    if (fs.existsSync(join(tmp, "manifest.json"))) {
      let entries: Array<{ Config: string; RepoTags?: string[] | null; Layers: string[] }>;
      try {
        entries = JSON.parse(fs.readFileSync(join(tmp, "manifest.json"), "utf8"));
      } catch (e) {
        throw invalid(`invalid docker archive: manifest.json: ${(e as Error).message}`);
      }
      // putFile moves a layer into the store: images that share it find it here
      const seen = new Map<string, Descriptor>();
      for (const e of entries) {
        const cfgPath = inside(tmp, e.Config);
        const cfg = await putFile(store, cfgPath);
        const config = store.content.readJSON<ImageConfig>(cfg.digest);
        if (config.rootfs?.diff_ids?.length !== e.Layers.length) throw invalid(`invalid docker archive: ${e.Config} lists ${config.rootfs?.diff_ids?.length ?? 0} layers, manifest.json ${e.Layers.length}`);
        const layers: Descriptor[] = [];
        for (const l of e.Layers) {
          const p = inside(tmp, l);
          if (seen.has(p)) {
            layers.push(seen.get(p)!);
            continue;
          }
          if (!fs.existsSync(p)) throw invalid(`invalid docker archive: layer ${l} is missing`);
          const mediaType = layerMediaType(readHead(p));
          const d = await putFile(store, p);
          const desc = { mediaType, digest: d.digest, size: d.size };
          seen.set(p, desc);
          layers.push(desc);
        }
        const manifest: Manifest = { schemaVersion: 2, mediaType: MediaType.ociManifest, config: { mediaType: MediaType.ociConfig, digest: cfg.digest, size: cfg.size }, layers };
        out.push(await store.createImage(manifest, MediaType.ociManifest, (e.RepoTags ?? []).map(loadName)));
      }
    } else if (fs.existsSync(join(tmp, "index.json"))) {
      const blobPath = (d: string) => inside(tmp, `blobs/${d.replace(":", "/")}`);
      const readBlob = <T>(d: string): T => JSON.parse(fs.readFileSync(blobPath(d), "utf8")) as T;
      const index = JSON.parse(fs.readFileSync(join(tmp, "index.json"), "utf8")) as Index;
      const want = hostPlatform();
      for (const top of index.manifests ?? []) {
        let desc = top;
        if (indexTypes.includes(desc.mediaType)) {
          const inner = readBlob<Index>(desc.digest);
          const chosen = inner.manifests.find((m) => platformMatches(m.platform, want));
          if (!chosen) throw invalid(`the archive has no image for ${want.os}/${want.architecture}`);
          desc = chosen;
        }
        const manifestPath = blobPath(desc.digest);
        if (!fs.existsSync(manifestPath)) throw invalid(`invalid OCI archive: manifest ${desc.digest} is missing`);
        const body = fs.readFileSync(manifestPath);
        if (sha256(body) !== desc.digest) throw invalid(`invalid OCI archive: manifest ${desc.digest} does not match its digest`);
        const manifest = JSON.parse(body.toString("utf8")) as Manifest;
        for (const b of [manifest.config, ...manifest.layers]) {
          if (store.content.has(b.digest)) continue;
          if (!fs.existsSync(blobPath(b.digest))) throw invalid(`invalid OCI archive: blob ${b.digest} is missing`);
          await putFile(store, blobPath(b.digest), b.digest);
        }
        const a = top.annotations ?? {};
        // ref.name is often a bare tag ("latest", as skopeo and umoci write it): that names no
        // repository, and docker loads such images unnamed
        const refName = a["org.opencontainers.image.ref.name"];
        const name = a["io.containerd.image.name"] ?? (refName && /[/:]/.test(refName) ? refName : undefined);
        let tags: string[] = [];
        if (name) {
          try {
            tags = [loadName(name)];
          } catch {
            /* a bare tag ("latest") names no repository: docker loads such images unnamed */
          }
        }
        out.push(await store.createImage(manifest, manifest.mediaType ?? desc.mediaType ?? MediaType.ociManifest, tags));
      }
    } else throw invalid("invalid archive: it has neither manifest.json (docker-archive) nor index.json (oci-archive)");
    return out;
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    lease.release();
    fs.rmSync(tmp, { recursive: true, force: true });
    if (failed) await store.gc();
  }
}

/** docker import --change: the Dockerfile instructions that set image config. */
export function applyChanges(cfg: ContainerConfig, changes: string[]): ContainerConfig {
  const out: ContainerConfig = structuredClone(cfg);
  for (const change of changes) {
    const m = /^\s*(\w+)\s+(.*)$/s.exec(change);
    if (!m) throw invalid(`invalid --change ${JSON.stringify(change)}: expected an instruction and its arguments`);
    const instr = m[1]!.toUpperCase();
    const arg = m[2]!.trim();
    const list = (): string[] => {
      if (arg.startsWith("[")) {
        try {
          const v = JSON.parse(arg);
          if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v;
        } catch {
          /* shell form */
        }
      }
      return ["/bin/sh", "-c", arg];
    };
    const pairs = (): Array<[string, string]> => {
      if (!arg.includes("=")) {
        const [k, ...v] = arg.split(/\s+/);
        return [[k!, v.join(" ")]];
      }
      return [...arg.matchAll(/([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)/g)].map((p) => [p[1]!, p[2]!.startsWith('"') ? JSON.parse(p[2]!) : p[2]!]);
    };
    switch (instr) {
      case "CMD":
        out.Cmd = list();
        break;
      case "ENTRYPOINT":
        out.Entrypoint = list();
        break;
      case "ENV":
        for (const [k, v] of pairs()) out.Env = [...(out.Env ?? []).filter((e) => !e.startsWith(`${k}=`)), `${k}=${v}`];
        break;
      case "LABEL":
        for (const [k, v] of pairs()) out.Labels = { ...(out.Labels ?? {}), [k]: v };
        break;
      case "EXPOSE":
        for (const p of arg.split(/\s+/)) out.ExposedPorts = { ...(out.ExposedPorts ?? {}), [p.includes("/") ? p : `${p}/tcp`]: {} };
        break;
      case "USER":
        out.User = arg;
        break;
      case "WORKDIR":
        out.WorkingDir = arg;
        break;
      case "VOLUME":
        for (const v of arg.startsWith("[") ? (JSON.parse(arg) as string[]) : arg.split(/\s+/)) out.Volumes = { ...(out.Volumes ?? {}), [v]: {} };
        break;
      case "STOPSIGNAL":
        out.StopSignal = arg;
        break;
      default:
        throw invalid(`${instr} is not a valid change command (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)`);
    }
  }
  return out;
}

/** docker import: one layer from a root file system tar (plain or compressed). */
export async function importImage(store: ImageStore, input: AsyncIterable<Buffer>, opts: { reference?: string; changes?: string[]; message?: string; platform?: { os: string; architecture: string; variant?: string } } = {}): Promise<ImageRecord> {
  const tags = opts.reference ? [loadName(opts.reference)] : [];
  const tmp = join(store.root, "tmp", `import-${process.pid}-${randomBytes(4).toString("hex")}`);
  fs.mkdirSync(join(store.root, "tmp"), { recursive: true });
  const lease = await store.writerLease();
  let failed = false;
  try {
    const fd = fs.openSync(tmp, "w");
    try {
      for await (const c of input) {
        let off = 0;
        while (off < c.length) off += fs.writeSync(fd, c, off);
      }
    } finally {
      fs.closeSync(fd);
    }
    const mediaType = layerMediaType(readHead(tmp));
    let diffId: string;
    {
      const h = createHash("sha256");
      for await (const c of decompress(fs.createReadStream(tmp, { highWaterMark: 1 << 20 }))) h.update(c);
      diffId = `sha256:${h.digest("hex")}`;
    }
    const layer = await putFile(store, tmp);
    const now = new Date().toISOString();
    const p = opts.platform ?? hostPlatform();
    const config: ImageConfig = {
      created: now,
      architecture: p.architecture,
      os: p.os,
      ...(p.variant ? { variant: p.variant } : {}),
      config: applyChanges({}, opts.changes ?? []),
      rootfs: { type: "layers", diff_ids: [diffId] },
      history: [{ created: now, created_by: "berth import", ...(opts.message ? { comment: opts.message } : { comment: "Imported from -" }) }],
    };
    const cfgBody = Buffer.from(JSON.stringify(config));
    const cfgDigest = store.content.put(cfgBody);
    const manifest: Manifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBody.length },
      layers: [{ mediaType, digest: layer.digest, size: layer.size }],
    };
    return await store.createImage(manifest, MediaType.ociManifest, tags);
  } catch (e) {
    failed = true;
    throw e;
  } finally {
    lease.release();
    fs.rmSync(tmp, { force: true });
    if (failed) await store.gc(); // blobs stored before the failure are named by nothing
  }
}
