/**
 * Pull: resolve a reference to a manifest (choosing the platform from an index), fetch config and
 * layers in parallel, verify every digest, unpack layers as soon as each is whole (overlay layers
 * unpack independently of each other), then name the image. Layers already unpacked are neither
 * downloaded nor unpacked again.
 */
import { BerthError, invalid } from "../common/errors.js";
import { configDir, credentialsFor, registrySettings, type Credentials } from "./auth.js";
import { pullEndpoints } from "./registries-conf.js";
import { sha256 } from "./content.js";
import { DEFAULT_DOMAIN, formatReference, familiar, parseReference, repositoryName, withDefaultTag, type Reference } from "./reference.js";
import { RegistryClient, RegistryError } from "./registry.js";
import { chainIds, shortId, type ImageRecord, type ImageStore } from "./store.js";
import { formatPlatform, hostPlatform, indexTypes, layerTypes, manifestTypes, MediaType, platformMatches, type Descriptor, type ImageConfig, type Index, type Manifest, type Platform } from "./types.js";

export interface ProgressEvent {
  /** Short layer id, or "" for whole-image lines. */
  id: string;
  status: string;
  current?: number;
  total?: number;
}
export type Progress = (e: ProgressEvent) => void;

export interface PullOptions {
  platform?: Platform;
  /** Credentials for this pull (the API's X-Registry-Auth); else the saved ones for the registry. */
  credentials?: Credentials;
  onProgress?: Progress;
  /** Parallel layer downloads (docker's default is 3). */
  concurrency?: number;
}

export interface PullResult {
  image: ImageRecord;
  /** The digest the reference resolved to (index or manifest): what "Digest:" prints. */
  digest: string;
  /** True when nothing new was stored. */
  upToDate: boolean;
  reference: string;
}

function parseJSON<T>(body: Buffer, what: string): T {
  try {
    return JSON.parse(body.toString("utf8")) as T;
  } catch (e) {
    throw invalid(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

async function limit<T>(n: number, jobs: Array<() => Promise<T>>): Promise<T[]> {
  const out: T[] = new Array(jobs.length);
  let next = 0;
  let failed: unknown;
  await Promise.all(
    Array.from({ length: Math.min(n, jobs.length) }, async () => {
      while (next < jobs.length && failed === undefined) {
        const i = next++;
        try {
          out[i] = await jobs[i]!();
        } catch (e) {
          failed ??= e;
        }
      }
    }),
  );
  if (failed !== undefined) throw failed;
  return out;
}

/** Where to ask for a repository: a registry client and the repository's path there. */
interface Source {
  client: RegistryClient;
  path: string;
}

/**
 * The registries to ask for a reference, in order: Docker Hub's mirrors (daemon.json), then the
 * mirrors registries.conf gives it, then the registry itself (at the location registries.conf
 * gives it). A mirror's own credentials are the saved ones for its host.
 */
function registrySources(ref: Reference, credentials: Credentials | undefined): Source[] {
  const hub = ref.domain === DEFAULT_DOMAIN ? registrySettings().mirrors.map((m) => new URL(m)) : [];
  const hubMirrors = hub.map((u) => ({ client: new RegistryClient(u.host, { insecure: u.protocol === "http:" || undefined }), path: ref.path }));
  const conf = pullEndpoints(configDir(), ref.domain, ref.path, !!ref.digest);
  if (!conf) return [...hubMirrors, { client: new RegistryClient(ref.domain, { ...(credentials ? { credentials } : {}) }), path: ref.path }];
  return [
    ...hubMirrors,
    ...conf.map((e) => {
      const creds = e.host === ref.domain ? credentials : credentialsFor(e.host);
      return { client: new RegistryClient(e.host, { ...(e.insecure ? { insecure: true } : {}), ...(creds ? { credentials: creds } : {}) }), path: e.path };
    }),
  ];
}

/**
 * The manifest a reference names, from the first of the registries that has it (a mirror that
 * fails or lacks it gives way to the next, the last word being the registry's own), verified
 * against a digest the reference or the registry names; and the client that answered.
 */
async function topManifest(ref: Reference, what: string, sources: Source[]): Promise<{ client: RegistryClient; path: string; top: Awaited<ReturnType<RegistryClient["getManifest"]>>; digest: string }> {
  for (const [i, { client, path }] of sources.entries()) {
    try {
      const top = await client.getManifest(path, ref.digest ?? ref.tag!, what);
      const digest = sha256(top.body);
      if (ref.digest && digest !== ref.digest) throw invalid(`manifest for ${what} does not match its digest: got ${digest}`);
      if (!ref.digest && top.digest && top.digest !== digest) throw invalid(`manifest for ${what} does not match the digest the registry sent (${top.digest}): got ${digest}`);
      return { client, path, top, digest };
    } catch (e) {
      if (i === sources.length - 1) throw e;
    }
  }
  throw invalid(`no registry to ask for ${what}`);
}

/** The tags a repository has (pull --all-tags), asked of the registry (Docker Hub's mirrors first). */
export async function remoteTags(input: string, opts: { credentials?: Credentials } = {}): Promise<string[]> {
  const ref = parseReference(input);
  if (ref.tag || ref.digest) throw invalid("tag can't be used with --all-tags/-a");
  const what = familiar(formatReference(ref));
  const sources = registrySources(ref, opts.credentials ?? credentialsFor(ref.domain));
  try {
    for (const [i, { client, path }] of sources.entries()) {
      try {
        return (await client.listTags(path, what)).sort();
      } catch (e) {
        if (i === sources.length - 1) throw e;
      }
    }
    return [];
  } finally {
    for (const s of sources) s.client.close();
  }
}

export interface RemoteImageInfo {
  /** The manifest (or index) the reference names. */
  descriptor: Descriptor;
  /** The platforms it has images for (an index's entries, or a single manifest's config). */
  platforms: Platform[];
}

/**
 * What a registry holds under a reference, without pulling it (the API's /distribution/{name}/json):
 * the top manifest's descriptor and its platforms.
 */
export async function remoteImageInfo(input: string, opts: { credentials?: Credentials } = {}): Promise<RemoteImageInfo> {
  const ref = withDefaultTag(parseReference(input));
  const what = familiar(formatReference(ref));
  const sources = registrySources(ref, opts.credentials ?? credentialsFor(ref.domain));
  try {
    return await describeRemote(what, await topManifest(ref, what, sources));
  } finally {
    for (const s of sources) s.client.close();
  }
}

async function describeRemote(what: string, { client, path, top, digest }: Awaited<ReturnType<typeof topManifest>>): Promise<RemoteImageInfo> {
  const doc = parseJSON<{ mediaType?: string; manifests?: Descriptor[]; config?: Descriptor }>(top.body, `manifest for ${what}`);
  const mediaType = doc.mediaType ?? top.mediaType;
  const descriptor: Descriptor = { mediaType, digest, size: top.body.length };
  if (doc.manifests && !doc.config) return { descriptor, platforms: doc.manifests.filter((m) => m.platform && m.platform.os !== "unknown").map((m) => m.platform!) };
  if (!doc.config?.digest) throw invalid(`manifest for ${what} has no config`);
  const body = await client.getSmallBlob(path, doc.config.digest);
  if (sha256(body) !== doc.config.digest) throw invalid(`the config of ${what} does not match its digest`);
  const config = parseJSON<{ architecture?: string; os?: string; variant?: string; "os.version"?: string }>(body, `config of ${what}`);
  return {
    descriptor,
    platforms: [{ architecture: config.architecture ?? "", os: config.os ?? "", ...(config.variant ? { variant: config.variant } : {}), ...(config["os.version"] ? { "os.version": config["os.version"] } : {}) }],
  };
}

export async function pullImage(store: ImageStore, input: string, opts: PullOptions = {}): Promise<PullResult> {
  const ref = withDefaultTag(parseReference(input));
  const what = familiar(formatReference(ref));
  const progress = opts.onProgress ?? (() => {});
  const want = opts.platform ?? hostPlatform();
  const credentials = opts.credentials ?? credentialsFor(ref.domain);
  const sources = registrySources(ref, credentials);
  const lease = await store.writerLease();
  try {
    // 1. the manifest the reference names, verified (Docker Hub's mirrors first, as dockerd)
    const { client, path, top, digest: topDigest } = await topManifest(ref, what, sources);
    const topDoc = parseJSON<{ mediaType?: string; manifests?: Descriptor[]; config?: Descriptor; schemaVersion?: number }>(top.body, `manifest for ${what}`);
    const topType = topDoc.mediaType ?? top.mediaType;
    let manifestBody = top.body;
    let manifestType = topType;
    let manifestDigest = topDigest;
    let index: string | undefined;
    if (indexTypes.includes(topType) || (topDoc.manifests && !topDoc.config)) {
      const idx = topDoc as Index;
      const candidates = idx.manifests.filter((m) => platformMatches(m.platform, want));
      // prefer an exact variant, then none named
      const chosen = candidates.find((m) => m.platform?.variant === want.variant) ?? candidates[0];
      if (!chosen) {
        const have = idx.manifests.map((m) => (m.platform ? formatPlatform(m.platform) : "unknown")).filter((p) => p !== "unknown/unknown");
        throw new RegistryError(`no matching manifest for ${formatPlatform(want)} in the manifest list entries of ${what} (it has: ${have.join(", ") || "none"})`, 404);
      }
      const m = await client.getManifest(path, chosen.digest, what);
      manifestDigest = sha256(m.body);
      if (manifestDigest !== chosen.digest) throw invalid(`manifest ${chosen.digest} of ${what} does not match its digest: got ${manifestDigest}`);
      manifestBody = m.body;
      manifestType = chosen.mediaType || m.mediaType;
      index = store.content.put(top.body, topDigest);
    } else if (topDoc.schemaVersion === 1 || /distribution\.manifest\.v1/.test(topType)) {
      throw invalid(`${what} uses the Docker image manifest schema 1, which berth (like docker since 20.10) does not support: push it again with a current client`);
    }
    const manifest = parseJSON<Manifest>(manifestBody, `manifest for ${what}`);
    const mt = manifest.mediaType ?? manifestType;
    if (!manifestTypes.includes(mt)) throw invalid(`unsupported manifest media type ${JSON.stringify(mt)} for ${what}`);
    if (!manifest.config?.digest || !Array.isArray(manifest.layers)) throw invalid(`manifest for ${what} has no config or layers`);
    for (const l of manifest.layers) if (!layerTypes.includes(l.mediaType)) throw invalid(`unsupported layer media type ${JSON.stringify(l.mediaType)} in ${what}`);

    const known = store.find(manifest.config.digest);
    // 2. config
    if (!store.content.has(manifest.config.digest)) {
      const ing = await store.content.openIngest(manifest.config.digest, manifest.config.size);
      if (ing)
        try {
          await client.fetchBlob(path, manifest.config.digest, ing);
          await ing.commit();
        } finally {
          ing.close();
        }
    }
    const config = store.content.readJSON<ImageConfig>(manifest.config.digest);
    const diffIds = config.rootfs?.diff_ids ?? [];
    if (diffIds.length !== manifest.layers.length) throw invalid(`image ${what} is inconsistent: ${manifest.layers.length} layers but ${diffIds.length} diff IDs in its config`);
    if (config.architecture && config.os && !platformMatches({ os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) }, { ...want, variant: undefined } as Platform))
      progress({ id: "", status: `WARNING: The requested image's platform (${formatPlatform({ os: config.os, architecture: config.architecture })}) does not match the detected host platform (${formatPlatform(want)}) and no specific platform was requested` });
    const chain = chainIds(diffIds);

    // 3. layers: download (parallel) and unpack each as it completes
    const copyMode = store.snapshots.kind === "copy";
    const committed: Array<Promise<void>> = [];
    let fetched = false;
    const jobs = manifest.layers.map((desc, i) => async () => {
      const id = shortId(desc.digest);
      if (store.snapshots.hasLayer(chain[i]!)) {
        progress({ id, status: "Already exists" });
        return;
      }
      if (!store.content.has(desc.digest)) {
        progress({ id, status: "Pulling fs layer" });
        const ing = await store.content.openIngest(desc.digest, desc.size);
        if (ing)
          try {
            let done = ing.offset;
            if (done) progress({ id, status: `Resuming download at ${done} bytes` });
            try {
              await client.fetchBlob(path, desc.digest, ing, (n) => progress({ id, status: "Downloading", current: (done += n), total: desc.size }), desc.urls ?? []);
              progress({ id, status: "Verifying Checksum" });
              await ing.commit();
            } catch (e) {
              const err = e instanceof BerthError ? e : new RegistryError((e as Error).message);
              err.message = `downloading layer ${id} of ${what}: ${err.message}`;
              throw err;
            }
            fetched = true;
          } finally {
            ing.close();
          }
        progress({ id, status: "Download complete" });
      }
      if (copyMode && i > 0) await committed[i - 1]; // each copy layer starts from its parent's tree
      let done = 0;
      const counted = (async function* () {
        for await (const c of store.content.stream(desc.digest)) {
          done += c.length;
          progress({ id, status: "Extracting", current: done, total: desc.size });
          yield c;
        }
      })();
      try {
        await store.snapshots.applyLayer(chain[i]!, chain[i - 1], counted, diffIds[i]);
      } catch (e) {
        // a corrupt blob must not stay: the next pull fetches it afresh
        store.content.delete(desc.digest);
        throw new RegistryError(`failed to register layer ${id} of ${what}: ${(e as Error).message}`);
      }
      progress({ id, status: "Pull complete" });
    });
    // the copy snapshotter needs layer i-1 committed before i starts: chain the promises
    const run = jobs.map((job, i) => () => {
      const p = job();
      committed[i] = p.catch(() => {}); // only the order is awaited here; the job's own error is reported by the pool
      return p;
    });
    await limit(copyMode ? 1 : (opts.concurrency ?? 4), run);

    let size = 0;
    for (const c of chain) size += store.snapshots.layer(c)?.size ?? 0;
    const manifestStored = store.content.put(manifestBody, manifestDigest);
    const tag = ref.digest ? [] : [formatReference({ ...ref, digest: undefined } as Reference)];
    const digestName = `${repositoryName(ref)}@${topDigest}`;
    const upToDate = !!known && !fetched && tag.every((t) => known.repoTags.includes(t)) && known.repoDigests.includes(digestName);
    const image = await store.register(
      { id: manifest.config.digest, target: { mediaType: mt, digest: manifestStored, size: manifestBody.length }, ...(index ? { index } : {}), ...(config.created ? { created: config.created } : {}), size },
      tag,
      [digestName],
    );
    return { image, digest: topDigest, upToDate, reference: formatReference(ref) };
  } finally {
    lease.release();
    for (const s of sources) s.client.close();
  }
}

export { MediaType };
