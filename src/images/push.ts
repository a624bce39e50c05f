/**
 * Push: every layer and the config, skipping blobs the registry has, mounting ones another
 * repository of the same registry has (known from where the image was pulled or pushed before),
 * uploading the rest (chunked when large), then the manifest under the tag.
 */
import { invalid, notFound } from "../common/errors.js";
import { credentialsFor, type Credentials } from "./auth.js";
import { familiar, formatReference, parseReference, repositoryName, withDefaultTag, type Reference } from "./reference.js";
import { RegistryClient } from "./registry.js";
import { shortId, type ImageStore } from "./store.js";
import type { Progress } from "./pull.js";
import type { Descriptor } from "./types.js";

export interface PushResult {
  digest: string;
  size: number;
  tag: string;
}

export async function pushImage(store: ImageStore, input: string, opts: { onProgress?: Progress; chunkSize?: number; credentials?: Credentials } = {}): Promise<PushResult> {
  const ref = withDefaultTag(parseReference(input));
  if (ref.digest) throw invalid(`cannot push a digest reference: ${input}`);
  const full = formatReference(ref);
  const rec = store.list().find((r) => r.repoTags.includes(full));
  if (!rec) throw notFound(`An image does not exist locally with the tag: ${familiar(full).replace(/:latest$/, "")}`);
  const progress = opts.onProgress ?? (() => {});
  const credentials = opts.credentials ?? credentialsFor(ref.domain);
  const client = new RegistryClient(ref.domain, { ...(credentials ? { credentials } : {}) });
  try {
    const manifestBody = store.content.read(rec.target.digest);
    const manifest = JSON.parse(manifestBody.toString("utf8")) as { config: Descriptor; layers: Descriptor[] };
    // repositories on the same registry that have this image: blobs can be mounted from them
    const sources = [...rec.repoDigests, ...rec.repoTags]
      .map((n) => parseReference(n))
      .filter((r: Reference) => r.domain === ref.domain && r.path !== ref.path)
      .map((r) => r.path);
    const pushBlob = async (desc: Descriptor, label: string) => {
      const id = shortId(desc.digest);
      if (!store.content.has(desc.digest)) throw notFound(`${label} ${desc.digest} of ${familiar(full)} is not in the store: pull the image again before pushing`);
      progress({ id, status: "Preparing" });
      if (await client.blobExists(ref.path, desc.digest)) {
        progress({ id, status: "Layer already exists" });
        return;
      }
      for (const from of sources)
        if (await client.mountBlob(ref.path, desc.digest, from)) {
          progress({ id, status: `Mounted from ${familiar(`${ref.domain}/${from}`)}` });
          return;
        }
      const size = store.content.size(desc.digest)!;
      let done = 0;
      await client.uploadBlob(
        ref.path,
        desc.digest,
        size,
        (start, end) => store.content.stream(desc.digest, start, end),
        opts.chunkSize,
        (n) => progress({ id, status: "Pushing", current: (done += n), total: size }),
      );
      progress({ id, status: "Pushed" });
    };
    const lease = await store.writerLease();
    try {
      const jobs = manifest.layers.map((l) => () => pushBlob(l, "layer"));
      let next = 0;
      await Promise.all(
        Array.from({ length: Math.min(4, jobs.length) }, async () => {
          while (next < jobs.length) await jobs[next++]!();
        }),
      );
      await pushBlob(manifest.config, "config");
    } finally {
      lease.release();
    }
    await client.putManifest(ref.path, ref.tag!, manifestBody, rec.target.mediaType);
    await store.register({ ...rec }, [], [`${repositoryName(ref)}@${rec.target.digest}`]);
    return { digest: rec.target.digest, size: manifestBody.length, tag: ref.tag! };
  } finally {
    client.close();
  }
}
