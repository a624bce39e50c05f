/**
 * Image operations as the front ends need them (the CLI and the Docker API): each returns data or
 * a stream and records its event, so neither front end touches the image store, the registry
 * client or the credential files itself.
 */
import { invalid } from "../common/errors.js";
import {
  credentialsFor,
  familiar,
  formatReference,
  imageHistory,
  importImage as importArchive,
  inspectImage,
  loadImages as loadArchive,
  parsePlatform,
  parseReference,
  pullImage,
  remoteImageInfo,
  remoteTags,
  type RemoteImageInfo,
  pushImage,
  RegistryClient,
  removeCredentials,
  saveCredentials,
  saveImages as saveArchive,
  withDefaultTag,
  type ArchiveFormat,
  type HistoryRow,
  type ImageInspect,
  type ImageRecord,
  type ImageStore,
  type ProgressEvent,
  type PullResult,
  type PushResult,
} from "../images/index.js";
import type { Engine } from "./engine.js";

export type { ArchiveFormat, HistoryRow, ImageInspect, ImageRecord, ProgressEvent, PullResult, PushResult };

/** Pulls an image (reference as the user wrote it); progress events as layers move. */
/** A registry login given with a request (the API's X-Registry-Auth), instead of the saved one. */
export interface RegistryAuth {
  username: string;
  password: string;
}

export async function pull(engine: Engine, name: string, opts: { platform?: string; onProgress?: (e: ProgressEvent) => void; auth?: RegistryAuth } = {}): Promise<PullResult> {
  const r = await pullImage(engine.images, name, {
    ...(opts.auth ? { credentials: opts.auth } : {}),
    ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
  });
  engine.events.emit("image", "pull", r.reference, { name: r.reference });
  return r;
}

/** The tags of a repository (name without tag or digest), as its registry lists them. */
export async function tagsOf(name: string, opts: { auth?: RegistryAuth } = {}): Promise<string[]> {
  return remoteTags(name, opts.auth ? { credentials: opts.auth } : {});
}

/** What a registry has under a name, without pulling (GET /distribution/{name}/json). */
export async function distribution(name: string, opts: { auth?: RegistryAuth } = {}): Promise<RemoteImageInfo> {
  return remoteImageInfo(name, opts.auth ? { credentials: opts.auth } : {});
}

export async function push(engine: Engine, name: string, opts: { onProgress?: (e: ProgressEvent) => void; auth?: RegistryAuth } = {}): Promise<PushResult & { reference: string }> {
  const r = await pushImage(engine.images, name, { ...(opts.onProgress ? { onProgress: opts.onProgress } : {}), ...(opts.auth ? { credentials: opts.auth } : {}) });
  const pushed = formatReference(withDefaultTag(parseReference(name)));
  engine.events.emit("image", "push", pushed, { name: pushed });
  return { ...r, reference: pushed };
}

function glob(pattern: string, s: string): boolean {
  const re = new RegExp("^" + pattern.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, ".") + "$");
  return re.test(s);
}

/** A test of an image (and one of its tags) against docker's image filters (`key=value` each). */
export type ImageFilter = (r: ImageRecord, repoTag: string | undefined) => boolean;

export function imageFilter(store: ImageStore, filters: string[]): ImageFilter {
  const checks: ImageFilter[] = [];
  for (const f of filters) {
    const eq = f.indexOf("=");
    if (eq < 0) throw invalid(`bad format of filter (expected name=value): ${f}`);
    const key = f.slice(0, eq),
      value = f.slice(eq + 1);
    switch (key) {
      case "dangling":
        if (!["true", "false", "1", "0"].includes(value)) throw invalid(`invalid filter 'dangling=${value}'`);
        checks.push((r) => (r.repoTags.length === 0) === (value === "true" || value === "1"));
        break;
      case "reference":
        checks.push((_r, t) => {
          if (!t) return false;
          const fam = familiar(t);
          const repo = fam.replace(/:[^:/]+$/, "");
          return glob(value, fam) || glob(value, repo) || glob(value, t);
        });
        break;
      case "label": {
        const [k, v] = value.split("=", 2) as [string, string | undefined];
        checks.push((r) => {
          const labels = store.config(r).config?.Labels ?? {};
          return k in labels && (v === undefined || labels[k] === v);
        });
        break;
      }
      case "before":
      case "since": {
        const ref = store.get(value);
        const at = ref.created ?? ref.added;
        checks.push((r) => (key === "before" ? (r.created ?? r.added) < at : (r.created ?? r.added) > at));
        break;
      }
      default:
        throw invalid(`invalid filter '${key}'`);
    }
  }
  return (r, t) => checks.every((c) => c(r, t));
}

/** One row per tag (an untagged image: one row with no tag), as `docker images` lists them. */
export interface ImageListing {
  record: ImageRecord;
  /** The full repo:tag, or undefined for an untagged image. */
  repoTag?: string;
  /** The repository (familiar form) and tag shown; "<none>" where there is none. */
  repository: string;
  tag: string;
  digest: string;
}

export function listImages(engine: Engine, filters: string[] = [], opts: { all?: boolean } = {}): ImageListing[] {
  const store = engine.images;
  const keep = imageFilter(store, filters);
  const rows: ImageListing[] = [];
  for (const r of store.list()) {
    if (r.intermediate && !r.repoTags.length && !opts.all) continue; // build cache: shown with -a, as docker's intermediate images
    const digestFor = (repo: string) => r.repoDigests.find((d) => d.startsWith(repo + "@"))?.split("@")[1] ?? "<none>";
    if (!r.repoTags.length) {
      if (!keep(r, undefined)) continue;
      const repos = r.repoDigests.map((d) => d.split("@")[0]!);
      rows.push({ record: r, repository: repos[0] ? familiar(repos[0]) : "<none>", tag: "<none>", digest: repos[0] ? digestFor(repos[0]) : "<none>" });
      continue;
    }
    for (const t of r.repoTags) {
      if (!keep(r, t)) continue;
      const i = t.lastIndexOf(":");
      rows.push({ record: r, repoTag: t, repository: familiar(t.slice(0, i)), tag: t.slice(i + 1), digest: digestFor(t.slice(0, i)) });
    }
  }
  return rows;
}

/** The image a name or id names, or undefined. */
export const findImage = (engine: Engine, ref: string): ImageRecord | undefined => engine.images.find(ref);

export function inspect(engine: Engine, ref: string): ImageInspect | undefined {
  const r = engine.images.find(ref);
  return r ? inspectImage(engine.images, r) : undefined;
}

export const history = (engine: Engine, ref: string): HistoryRow[] => imageHistory(engine.images, engine.images.get(ref));

export async function remove(engine: Engine, ref: string, opts: { force?: boolean } = {}): Promise<{ untagged: string[]; deleted: string[] }> {
  const r = await engine.images.remove(ref, { force: !!opts.force, inUse: engine.imageUsers });
  for (const u of r.untagged) engine.events.emit("image", "untag", u, { name: u });
  for (const d of r.deleted) engine.events.emit("image", "delete", d, { name: d });
  return r;
}

export async function tag(engine: Engine, source: string, target: string): Promise<void> {
  await engine.images.tag(source, target);
  engine.events.emit("image", "tag", engine.images.get(target).id, { name: target });
}

/** An archive of the named images; every name must exist before a byte is produced. */
export function save(engine: Engine, refs: string[], format: ArchiveFormat): AsyncIterable<Buffer> {
  if (format !== "docker-archive" && format !== "oci-archive") throw invalid(`unknown archive format ${JSON.stringify(format)}: docker-archive or oci-archive`);
  for (const a of refs) engine.images.get(a);
  return saveArchive(engine.images, refs, format);
}

export async function load(engine: Engine, archive: AsyncIterable<Buffer>): Promise<ImageRecord[]> {
  const loaded = await loadArchive(engine.images, archive);
  for (const r of loaded) engine.events.emit("image", "load", r.id, { name: r.repoTags[0] ?? r.id });
  return loaded;
}

/** An image from a root file system tarball (docker import); the name is checked before anything is read. */
export async function importTarball(engine: Engine, tar: AsyncIterable<Buffer>, opts: { reference?: string; changes?: string[]; message?: string; platform?: string } = {}): Promise<ImageRecord> {
  if (opts.reference) parseReference(opts.reference);
  const rec = await importArchive(engine.images, tar, {
    ...(opts.reference ? { reference: opts.reference } : {}),
    changes: opts.changes ?? [],
    ...(opts.message ? { message: opts.message } : {}),
    ...(opts.platform ? { platform: parsePlatform(opts.platform) } : {}),
  });
  engine.events.emit("image", "import", rec.id, { name: rec.repoTags[0] ?? rec.id });
  return rec;
}

export async function prune(engine: Engine, opts: { all?: boolean; filters?: string[] } = {}): Promise<{ deleted: string[]; untagged: string[]; reclaimed: number }> {
  const filter = opts.filters?.length ? imageFilter(engine.images, opts.filters) : undefined;
  const r = await engine.images.prune({ all: !!opts.all, inUse: engine.imageUsers, ...(filter ? { filter: (rec: ImageRecord) => filter(rec, rec.repoTags[0]) } : {}) });
  for (const d of r.deleted) engine.events.emit("image", "delete", d, { name: d });
  return r;
}

/** A registry host as docker names it: `docker.io` for Docker Hub in any of its spellings. */
export function registryDomain(server: string | undefined): string {
  if (!server) return "docker.io";
  const s = server.replace(/^https?:\/\//, "").replace(/\/.*$/, "");
  return s === "index.docker.io" || s === "registry-1.docker.io" ? "docker.io" : s;
}

/** The saved user name for a registry, for a login prompt. */
export const savedUsername = (server: string | undefined): string | undefined => credentialsFor(registryDomain(server))?.username;

/** Checks credentials against the registry (the API's POST /auth): throws when it refuses them. */
export async function checkLogin(server: string | undefined, username: string, password: string): Promise<void> {
  const client = new RegistryClient(registryDomain(server), { credentials: { username, password } });
  try {
    await client.ping();
  } finally {
    client.close();
  }
}

/** Checks the credentials against the registry, then saves them (docker's config.json). */
export async function login(server: string | undefined, username: string, password: string): Promise<void> {
  await checkLogin(server, username, password);
  saveCredentials(registryDomain(server), { username, password });
}

/** Forgets a registry's credentials; false when there were none. */
export const logout = (server: string | undefined): boolean => removeCredentials(registryDomain(server));
