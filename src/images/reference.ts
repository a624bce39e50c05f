/**
 * Image references with docker's normalisation rules: `busybox` is `docker.io/library/busybox:latest`,
 * the first component is a registry only if it has a `.` or `:` or is `localhost`, and names print
 * in their familiar (shortest) form.
 */
import { invalid } from "../common/errors.js";

export interface Reference {
  /** Registry host[:port], e.g. docker.io, localhost:5000. */
  domain: string;
  /** Repository path within the registry, e.g. library/busybox. */
  path: string;
  tag?: string;
  digest?: string;
}

const pathComponent = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagRe = /^[\w][\w.-]{0,127}$/;
const digestRe = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;
const domainRe = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::\d+)?$|^\[[0-9a-fA-F:]+\](?::\d+)?$/;

export const DEFAULT_DOMAIN = "docker.io";

export function parseReference(input: string): Reference {
  const bad = (why: string) => invalid(`invalid reference format: ${JSON.stringify(input)}: ${why}`);
  if (!input) throw bad("empty");
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestRe.test(digest)) throw bad("bad digest");
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagRe.test(tag)) throw bad("bad tag");
  }
  let domain = DEFAULT_DOMAIN;
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost" || first !== first.toLowerCase()) {
      domain = first;
      path = rest.slice(slash + 1);
      if (!domainRe.test(domain)) throw bad("bad registry host");
    }
  }
  if (domain === "index.docker.io") domain = DEFAULT_DOMAIN;
  if (path !== path.toLowerCase()) throw invalid(`invalid reference format: repository name (${path}) must be lowercase`);
  if (domain === DEFAULT_DOMAIN && !path.includes("/")) path = `library/${path}`;
  if (!path || !path.split("/").every((c) => pathComponent.test(c))) throw bad("bad repository name");
  if ((domain + "/" + path).length > 255) throw bad("repository name must not be more than 255 characters");
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** A reference with `latest` filled in when it names neither tag nor digest (docker's rule). */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag || ref.digest ? ref : { ...ref, tag: "latest" };
}

/** docker.io/library/busybox */
export const repositoryName = (ref: Reference): string => `${ref.domain}/${ref.path}`;

/** The shortest name docker would print: busybox, user/repo, localhost:5000/x. */
export function familiarRepository(ref: Pick<Reference, "domain" | "path">): string {
  if (ref.domain !== DEFAULT_DOMAIN) return `${ref.domain}/${ref.path}`;
  return ref.path.startsWith("library/") && ref.path.split("/").length === 2 ? ref.path.slice(8) : ref.path;
}

export function formatReference(ref: Reference, familiar = false): string {
  const repo = familiar ? familiarRepository(ref) : repositoryName(ref);
  return repo + (ref.tag ? `:${ref.tag}` : "") + (ref.digest ? `@${ref.digest}` : "");
}

/** Split a stored full name (docker.io/library/busybox:latest) back into a Reference. */
export const familiar = (full: string): string => formatReference(parseReference(full), true);

/**
 * The host to contact for a registry domain (docker.io's API lives elsewhere; $BERTH_HUB_REGISTRY
 * replaces it, for air-gapped machines with a Hub stand-in, and for tests that must not leave it).
 */
export const registryHost = (domain: string): string => (domain === DEFAULT_DOMAIN ? process.env.BERTH_HUB_REGISTRY || "registry-1.docker.io" : domain);
