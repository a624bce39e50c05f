/**
 * A client for the OCI distribution API (what Docker Hub, distribution, Harbor, GHCR and quay speak).
 * Built on Node's own http/https (no dependency on the CLI's start-up path). It handles docker's
 * rules: registries on loopback may use plain HTTP with no configuration, others only when listed
 * as insecure; bearer tokens from the realm the registry names (anonymous or with credentials)
 * and basic auth; retries with backoff; blob downloads resumed with range requests.
 */
import * as fs from "node:fs";
import type * as Http from "node:http";
import type * as Https from "node:https";
import { createRequire } from "node:module";
import { setTimeout as sleep } from "node:timers/promises";
import { BerthError } from "../common/errors.js";
import type { Credentials } from "./auth.js";
import { registryCAs, registrySettings } from "./auth.js";
import type { Ingest } from "./content.js";
import { registryHost } from "./reference.js";

export class RegistryError extends BerthError {
  constructor(
    message: string,
    readonly status?: number,
    /** The registry's own error code (MANIFEST_UNKNOWN, DENIED …). */
    readonly registryCode?: string,
  ) {
    super(status === 404 ? "NotFound" : status === 401 || status === 403 ? "FailedPrecondition" : "System", message, registryCode ? { code: `BERTH_REGISTRY_${registryCode}` } : {});
    this.name = "RegistryError";
  }
}

interface Response {
  status: number;
  headers: Http.IncomingHttpHeaders;
  body: Http.IncomingMessage;
}

const loopback = (host: string) => {
  const h = host.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
};

export interface ClientOptions {
  credentials?: Credentials;
  /** Override the insecure-registries setting for this registry. */
  insecure?: boolean;
}

/**
 * http, https and tls are loaded on first use: most commands never talk to a registry, and these
 * modules are a measurable part of the CLI's start-up (and cannot be in its start-up snapshot).
 */
const builtin = createRequire("/");
let httpLib: typeof Http | undefined;
let httpsLib: typeof Https | undefined;
const http = () => (httpLib ??= builtin("node:http") as typeof Http);
const https = () => (httpsLib ??= builtin("node:https") as typeof Https);

let plainAgent: Http.Agent | undefined;
const agents = {
  get http(): Http.Agent {
    return (plainAgent ??= new (http().Agent)({ keepAlive: true, maxSockets: 16 }));
  },
};

async function readAll(body: AsyncIterable<Buffer>, limit = 64 << 20): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const c of body) {
    parts.push(c);
    n += c.length;
    if (n > limit) throw new RegistryError(`response larger than ${limit} bytes`);
  }
  return Buffer.concat(parts);
}

function parseChallenge(h: string | undefined): { scheme: string; params: Record<string, string> } | undefined {
  if (!h) return undefined;
  const m = /^(\w+)\s*(.*)$/s.exec(h.trim());
  if (!m) return undefined;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))/g)) params[p[1]!.toLowerCase()] = p[2] ?? p[3] ?? "";
  return { scheme: m[1]!.toLowerCase(), params };
}

/** docker's wording for the errors a registry returns in its JSON body. */
async function errorText(r: Response): Promise<{ text: string; code?: string }> {
  const type = String(r.headers["content-type"] ?? "");
  const body = await readAll(r.body, 1 << 20).catch(() => Buffer.alloc(0));
  if (type.includes("html") || /^\s*<(!doctype|html)/i.test(body.toString("utf8", 0, 64)))
    return { text: `the registry answered with an HTML page (HTTP ${r.status}), not the registry API: is this address a registry?` };
  try {
    const j = JSON.parse(body.toString("utf8"));
    const e = j.errors?.[0];
    if (e) return { text: `${String(e.code ?? "").toLowerCase()}: ${e.message ?? ""}`.replace(/^: /, ""), code: e.code };
  } catch {
    /* not JSON */
  }
  return { text: `received unexpected HTTP status: ${r.status} ${http().STATUS_CODES[r.status] ?? ""}`.trim() };
}

/**
 * The certificates of NODE_EXTRA_CA_CERTS, which berth's launcher keeps from node's start (reading
 * them costs every command tens of milliseconds: docs/runtime.md) and hands over as BERTH_EXTRA_CA_CERTS: loaded here, when a
 * registry is contacted. Where node was started with the variable, it has them already.
 */
function extraCAs(): string[] {
  const file = process.env.BERTH_EXTRA_CA_CERTS;
  if (!file || process.env.NODE_EXTRA_CA_CERTS) return [];
  try {
    return fs.readFileSync(file, "utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  } catch {
    return []; // as node does: a missing file is only a warning there
  }
}

export class RegistryClient {
  readonly host: string;
  private base?: string;
  private readonly insecure: boolean;
  private httpsAgent?: Https.Agent;
  private challenge?: { scheme: string; params: Record<string, string> } | null;
  private readonly tokens = new Map<string, string>();

  constructor(
    readonly domain: string,
    private readonly opts: ClientOptions = {},
  ) {
    this.host = registryHost(domain);
    this.insecure = opts.insecure ?? (loopback(this.host) || registrySettings().insecure.includes(domain));
  }

  private agent(): Https.Agent {
    if (!this.httpsAgent) {
      const cas = registryCAs(this.domain);
      const extra = extraCAs();
      const { rootCertificates } = builtin("node:tls") as typeof import("node:tls");
      this.httpsAgent = new (https().Agent)({
        keepAlive: true,
        maxSockets: 16,
        // a custom CA replaces Node's roots: keep them, so a CDN redirect still verifies
        ...(cas.length || extra.length ? { ca: [...cas, ...extra, ...rootCertificates] } : {}),
        // a CA configured for the host is always enforced, even where plain HTTP would be allowed
        rejectUnauthorized: !this.insecure || cas.length > 0,
      });
    }
    return this.httpsAgent;
  }

  private raw(method: string, url: string, headers: Record<string, string>, body?: Buffer | AsyncIterable<Buffer>): Promise<Response> {
    const u = new URL(url);
    const mod = u.protocol === "https:" ? https() : http();
    return new Promise((resolve, reject) => {
      const req = mod.request(
        u,
        { method, headers: { "User-Agent": "berth/0.1", ...headers }, agent: u.protocol === "https:" ? this.agent() : agents.http, timeout: 60_000 },
        (res) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res }),
      );
      req.on("timeout", () => req.destroy(new Error("timed out")));
      req.on("error", reject);
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else
        (async () => {
          for await (const c of body) if (!req.write(c)) await new Promise((r) => req.once("drain", r));
          req.end();
        })().catch((e) => req.destroy(e));
    });
  }

  /** Which scheme the registry speaks: https, or http for insecure ones that do not do TLS. */
  private async resolveBase(): Promise<string> {
    if (this.base) return this.base;
    const tryBase = async (b: string) => {
      const r = await this.raw("GET", `${b}/v2/`, {});
      r.body.resume();
      this.challenge = r.status === 401 ? (parseChallenge(String(r.headers["www-authenticate"] ?? "")) ?? null) : null;
      if (r.status === 404) throw new RegistryError(`${this.domain} does not speak the registry API v2 (GET /v2/ returned 404)`, 404);
      return b;
    };
    try {
      this.base = await tryBase(`https://${this.host}`);
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      const msg = (e as Error).message;
      const tlsFailure = /EPROTO|wrong version|SSL|ECONNRESET|certificate|self.signed|socket hang up/i.test(msg + ((e as NodeJS.ErrnoException).code ?? ""));
      const certFailure = /certificate|self.signed|unable to verify/i.test(msg);
      if (!this.insecure || !tlsFailure || (certFailure && registryCAs(this.domain).length)) {
        if (certFailure)
          throw new RegistryError(`cannot verify ${this.domain}'s certificate (${msg}): put its CA in /etc/berth/certs.d/${this.domain}/ca.crt, or list it in insecure-registries`);
        throw new RegistryError(`cannot reach registry ${this.domain}: ${msg}`);
      }
      try {
        this.base = await tryBase(`http://${this.host}`);
      } catch (e2) {
        if (e2 instanceof RegistryError) throw e2;
        throw new RegistryError(`cannot reach registry ${this.domain}: ${(e2 as Error).message}`);
      }
    }
    return this.base;
  }

  private async token(scope: string, challenge: { scheme: string; params: Record<string, string> }): Promise<string | undefined> {
    const key = `${challenge.scheme} ${scope}`;
    const cached = this.tokens.get(key);
    if (cached) return cached;
    const c = this.opts.credentials;
    let value: string | undefined;
    if (challenge.scheme === "basic") {
      if (!c) return undefined;
      value = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
    } else if (challenge.scheme === "bearer") {
      const realm = challenge.params.realm;
      if (!realm) throw new RegistryError(`${this.domain} asked for a bearer token without naming a realm`);
      const u = new URL(realm);
      if (challenge.params.service) u.searchParams.set("service", challenge.params.service);
      for (const s of scope.split(" ")) if (s) u.searchParams.append("scope", s);
      const headers: Record<string, string> = {};
      if (c) headers.Authorization = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString("base64")}`;
      const r = await this.raw("GET", u.toString(), headers);
      if (r.status === 401 || r.status === 403) {
        r.body.resume();
        throw new RegistryError(c ? `authentication to ${this.domain} failed: unauthorized: incorrect username or password` : `${this.domain} requires authentication: run \`berth login ${this.domain}\``, 401);
      }
      if (r.status !== 200) throw new RegistryError(`token server ${u.host} for ${this.domain}: ${(await errorText(r)).text}`, r.status);
      const j = JSON.parse((await readAll(r.body)).toString("utf8"));
      const t = j.token ?? j.access_token;
      if (!t) throw new RegistryError(`token server ${u.host} for ${this.domain} returned no token`);
      value = `Bearer ${t}`;
    } else throw new RegistryError(`${this.domain} asks for unsupported authentication ${challenge.scheme}`);
    this.tokens.set(key, value);
    return value;
  }

  /**
   * One request with auth, redirects and retries. scope is the token scope the request needs,
   * e.g. "repository:library/busybox:pull".
   */
  async request(method: string, path: string, scope: string, opts: { headers?: Record<string, string>; body?: () => Buffer | AsyncIterable<Buffer>; okStatuses?: number[]; retries?: number } = {}): Promise<Response> {
    const base = await this.resolveBase();
    const retries = opts.retries ?? (method === "GET" || method === "HEAD" ? 3 : 0);
    let authRetried = false;
    for (let attempt = 0; ; attempt++) {
      const headers: Record<string, string> = { ...opts.headers };
      if (this.challenge) {
        const auth = await this.token(scope, this.challenge);
        if (auth) headers.Authorization = auth;
      }
      let url = path.startsWith("http") ? path : `${base}${path}`;
      let r: Response;
      try {
        r = await this.raw(method, url, headers, opts.body?.());
        // follow redirects (blob storage), without our credentials on other hosts
        for (let hops = 0; [301, 302, 303, 307, 308].includes(r.status) && hops < 5; hops++) {
          r.body.resume();
          const next = new URL(String(r.headers.location), url);
          const h = { ...headers };
          if (next.host !== new URL(url).host) delete h.Authorization;
          url = next.toString();
          r = await this.raw(r.status === 303 ? "GET" : method, url, h);
        }
      } catch (e) {
        if (attempt < retries) {
          await sleep(200 * 2 ** attempt);
          continue;
        }
        throw new RegistryError(`${method} ${url}: ${(e as Error).message}`);
      }
      if (r.status === 401 && !authRetried) {
        // a new or wider challenge (token expired, or first contact for this scope)
        const ch = parseChallenge(String(r.headers["www-authenticate"] ?? ""));
        r.body.resume();
        if (ch) {
          this.challenge = ch;
          this.tokens.clear();
          authRetried = true;
          if (ch.scheme === "basic" && !this.opts.credentials) throw new RegistryError(`${this.domain} requires authentication: run \`berth login ${this.domain}\``, 401);
          continue;
        }
      }
      if ([429, 502, 503, 504].includes(r.status) && attempt < retries) {
        r.body.resume();
        await sleep(200 * 2 ** attempt);
        continue;
      }
      return r;
    }
  }

  async ping(): Promise<void> {
    await this.resolveBase();
    if (this.challenge) {
      const r = await this.request("GET", "/v2/", "");
      r.body.resume();
      if (r.status === 401) throw new RegistryError(`login to ${this.domain} failed: unauthorized: incorrect username or password`, 401);
      if (r.status !== 200) throw new RegistryError(`login to ${this.domain}: ${(await errorText(r)).text}`, r.status);
    }
  }

  static readonly manifestAccept = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
  ].join(", ");

  async getManifest(repo: string, reference: string, what: string): Promise<{ body: Buffer; mediaType: string; digest?: string }> {
    const r = await this.request("GET", `/v2/${repo}/manifests/${reference}`, `repository:${repo}:pull`, { headers: { Accept: RegistryClient.manifestAccept } });
    if (r.status !== 200) {
      const { text, code } = await errorText(r);
      if (r.status === 404) throw new RegistryError(`manifest for ${what} not found: ${text}`, 404, code);
      if (r.status === 401 || r.status === 403)
        throw new RegistryError(`pull access denied for ${what}, repository does not exist or may require 'berth login': ${text}`, r.status, code);
      throw new RegistryError(`pulling ${what}: ${text}`, r.status, code);
    }
    const type = String(r.headers["content-type"] ?? "").split(";")[0]!.trim();
    const body = await readAll(r.body, 4 << 20);
    if (type.includes("html") || /^\s*</.test(body.toString("utf8", 0, 16))) throw new RegistryError(`pulling ${what}: the registry answered with an HTML page, not a manifest`);
    const digest = r.headers["docker-content-digest"] ? String(r.headers["docker-content-digest"]) : undefined;
    return { body, mediaType: type, ...(digest ? { digest } : {}) };
  }

  /** The repository's tags (the distribution API's tags/list, every page). */
  async listTags(repo: string, what: string): Promise<string[]> {
    const tags: string[] = [];
    let path: string | undefined = `/v2/${repo}/tags/list?n=1000`;
    for (let pages = 0; path && pages < 1000; pages++) {
      const r = await this.request("GET", path, `repository:${repo}:pull`);
      if (r.status !== 200) {
        const { text, code } = await errorText(r);
        if (r.status === 404) throw new RegistryError(`repository ${what} not found: ${text}`, 404, code);
        throw new RegistryError(`listing the tags of ${what}: ${text}`, r.status, code);
      }
      const body = JSON.parse((await readAll(r.body, 16 << 20)).toString("utf8")) as { tags?: string[] | null };
      tags.push(...(body.tags ?? []));
      // the next page, as the registry links it (RFC 5988): </v2/…/tags/list?n=…&last=…>; rel="next"
      const link = /<([^>]+)>;\s*rel="?next"?/.exec(String(r.headers.link ?? ""));
      path = link ? new URL(link[1]!, "http://registry").pathname + new URL(link[1]!, "http://registry").search : undefined;
    }
    return tags;
  }

  /** A small blob (an image config) read into memory, up to limit bytes. */
  async getSmallBlob(repo: string, digest: string, limit = 4 << 20): Promise<Buffer> {
    const r = await this.request("GET", `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull`);
    if (r.status !== 200) {
      const { text, code } = await errorText(r);
      throw new RegistryError(`blob ${digest} of ${repo}: ${text}`, r.status, code);
    }
    return readAll(r.body, limit);
  }

  /**
   * Download a blob into an ingest, resuming from ingest.offset with range requests after an
   * interruption; onBytes reports progress.
   */
  async fetchBlob(repo: string, digest: string, ingest: Ingest, onBytes: (n: number) => void = () => {}, urls: string[] = []): Promise<void> {
    const maxAttempts = 6;
    for (let attempt = 0; ; attempt++) {
      try {
        if (ingest.expectedSize !== undefined && ingest.offset === ingest.expectedSize) return;
        const headers: Record<string, string> = {};
        if (ingest.offset > 0) headers.Range = `bytes=${ingest.offset}-`;
        const path = urls[0] ?? `/v2/${repo}/blobs/${digest}`;
        const r = await this.request("GET", path, `repository:${repo}:pull`, { headers });
        if (r.status === 416) {
          r.body.resume();
          ingest.truncate();
          continue;
        }
        if (r.status !== 200 && r.status !== 206) {
          const { text, code } = await errorText(r);
          throw new RegistryError(`fetching blob ${digest}: ${text}`, r.status, code);
        }
        if (r.status === 200 && ingest.offset > 0) ingest.truncate(); // the server sent it all again
        for await (const chunk of r.body) {
          ingest.write(chunk as Buffer);
          onBytes((chunk as Buffer).length);
        }
        if (ingest.expectedSize !== undefined && ingest.offset < ingest.expectedSize) throw new Error(`connection closed after ${ingest.offset} of ${ingest.expectedSize} bytes`);
        return;
      } catch (e) {
        const permanent = e instanceof RegistryError && e.status !== undefined && e.status < 500;
        if (permanent || attempt + 1 >= maxAttempts || (e instanceof BerthError && e.kind === "InvalidArgument")) throw e;
        await sleep(Math.min(200 * 2 ** attempt, 3000));
      }
    }
  }

  async blobExists(repo: string, digest: string): Promise<boolean> {
    const r = await this.request("HEAD", `/v2/${repo}/blobs/${digest}`, `repository:${repo}:pull,push`);
    r.body.resume();
    return r.status === 200;
  }

  /** Cross-repository mount: true when the registry linked the blob without an upload. */
  async mountBlob(repo: string, digest: string, from: string): Promise<boolean> {
    const r = await this.request("POST", `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, `repository:${repo}:pull,push repository:${from}:pull`);
    r.body.resume();
    if (r.status === 201) return true;
    if (r.status === 202) {
      // the registry opened an upload instead: cancel it, the caller uploads afresh
      const loc = r.headers.location;
      if (loc) (await this.request("DELETE", new URL(String(loc), this.base).toString(), `repository:${repo}:pull,push`)).body.resume();
      return false;
    }
    return false;
  }

  /**
   * Upload a blob: one PUT when it is small, PATCHed chunks then a closing PUT when it is large
   * (what registries with request-size limits need).
   */
  async uploadBlob(repo: string, digest: string, size: number, read: (start: number, end: number) => AsyncIterable<Buffer>, chunkSize = 32 << 20, onBytes: (n: number) => void = () => {}): Promise<void> {
    const scope = `repository:${repo}:pull,push`;
    const start = await this.request("POST", `/v2/${repo}/blobs/uploads/`, scope);
    start.body.resume();
    if (start.status !== 202) throw new RegistryError(`starting upload of ${digest} to ${this.domain}/${repo}: ${(await errorText(start)).text}`, start.status);
    let location = new URL(String(start.headers.location), this.base).toString();
    const counted = (it: AsyncIterable<Buffer>) =>
      (async function* () {
        for await (const c of it) {
          onBytes(c.length);
          yield c;
        }
      })();
    const withDigest = (loc: string) => {
      const u = new URL(loc);
      u.searchParams.set("digest", digest);
      return u.toString();
    };
    if (size <= chunkSize) {
      const r = await this.request("PUT", withDigest(location), scope, {
        headers: { "Content-Type": "application/octet-stream", "Content-Length": String(size) },
        body: () => counted(read(0, size)),
      });
      if (r.status !== 201) throw new RegistryError(`uploading ${digest}: ${(await errorText(r)).text}`, r.status);
      r.body.resume();
      return;
    }
    for (let off = 0; off < size; off += chunkSize) {
      const end = Math.min(size, off + chunkSize);
      const r = await this.request("PATCH", location, scope, {
        headers: { "Content-Type": "application/octet-stream", "Content-Length": String(end - off), "Content-Range": `${off}-${end - 1}` },
        body: () => counted(read(off, end)),
      });
      if (r.status !== 202) throw new RegistryError(`uploading ${digest} (bytes ${off}-${end - 1}): ${(await errorText(r)).text}`, r.status);
      r.body.resume();
      location = new URL(String(r.headers.location), this.base).toString();
    }
    const done = await this.request("PUT", withDigest(location), scope, { headers: { "Content-Length": "0" }, body: () => Buffer.alloc(0) });
    if (done.status !== 201) throw new RegistryError(`finishing upload of ${digest}: ${(await errorText(done)).text}`, done.status);
    done.body.resume();
  }

  async putManifest(repo: string, reference: string, body: Buffer, mediaType: string): Promise<string | undefined> {
    const r = await this.request("PUT", `/v2/${repo}/manifests/${reference}`, `repository:${repo}:pull,push`, {
      headers: { "Content-Type": mediaType, "Content-Length": String(body.length) },
      body: () => body,
    });
    if (r.status !== 201 && r.status !== 200) {
      const { text } = await errorText(r);
      if (r.status === 401 || r.status === 403) throw new RegistryError(`denied: requested access to ${this.domain}/${repo} is denied (${text}): run \`berth login ${this.domain}\``, r.status);
      throw new RegistryError(`pushing manifest ${this.domain}/${repo}:${reference}: ${text}`, r.status);
    }
    r.body.resume();
    return r.headers["docker-content-digest"] ? String(r.headers["docker-content-digest"]) : undefined;
  }

  close(): void {
    this.httpsAgent?.destroy();
  }
}


/** Close idle keep-alive sockets so a CLI command can exit promptly. */
export function closeIdleConnections(): void {
  plainAgent?.destroy();
}
