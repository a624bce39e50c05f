/**
 * Registry credentials in docker's own file, so `docker login` and `berth login` share them:
 * $DOCKER_CONFIG/config.json (default ~/.docker/config.json), `auths.<host>.auth` = base64(user:pass),
 * Docker Hub under "https://index.docker.io/v1/". Registry settings (insecure registries, CAs) follow
 * docker's daemon.json and certs.d conventions under /etc/berth (or $BERTH_CONFIG_DIR).
 */
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { homedir } from "node:os";
import { dirname } from "node:path";
import { join } from "../common/path.js";
import { invalid } from "../common/errors.js";
import { writeFileAtomic } from "../common/lock.js";
import { DEFAULT_DOMAIN } from "./reference.js";

export interface Credentials {
  username: string;
  password: string;
}

const HUB_KEY = "https://index.docker.io/v1/";

export const dockerConfigPath = (): string => join(process.env.DOCKER_CONFIG ?? join(homedir(), ".docker"), "config.json");

const keyFor = (domain: string) => (domain === DEFAULT_DOMAIN ? HUB_KEY : domain);

function readConfig(): Record<string, any> {
  try {
    return JSON.parse(fs.readFileSync(dockerConfigPath(), "utf8"));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return {};
    throw invalid(`cannot read ${dockerConfigPath()}: ${(e as Error).message}`);
  }
}

/**
 * docker's credential helpers: `credHelpers.<registry>` or `credsStore` in config.json name a
 * program `docker-credential-NAME` that keeps the secrets (get, store, erase over stdin/stdout).
 */
function helperFor(cfg: Record<string, any>, domain: string): string | undefined {
  const helpers = cfg.credHelpers ?? {};
  const name = helpers[domain] ?? helpers[keyFor(domain)] ?? cfg.credsStore;
  return typeof name === "string" && name ? name : undefined;
}

function callHelper(name: string, action: "get" | "store" | "erase", input: string): { ok: boolean; out: string } {
  const bin = `docker-credential-${name}`;
  const r = spawnSync(bin, [action], { input, encoding: "utf8", timeout: 30_000 });
  if (r.error) throw invalid(`the credential helper ${bin} (named in ${dockerConfigPath()}) cannot be run: ${(r.error as NodeJS.ErrnoException).code === "ENOENT" ? "it is not installed (not in PATH)" : r.error.message}`);
  return { ok: r.status === 0, out: `${r.stdout ?? ""}${r.stderr ?? ""}`.trim() };
}

export function credentialsFor(domain: string): Credentials | undefined {
  const cfg = readConfig();
  const helper = helperFor(cfg, domain);
  if (helper) {
    const r = callHelper(helper, "get", keyFor(domain));
    if (!r.ok) {
      if (/credentials not found/i.test(r.out)) return undefined;
      throw invalid(`docker-credential-${helper} get ${keyFor(domain)}: ${r.out.slice(0, 300)}`);
    }
    const doc = JSON.parse(r.out) as { Username?: string; Secret?: string };
    // "<token>": an identity token, which berth does not use
    return doc.Username && doc.Username !== "<token>" && doc.Secret !== undefined ? { username: doc.Username, password: doc.Secret } : undefined;
  }
  const auths = cfg.auths ?? {};
  const candidates = [keyFor(domain), domain, `https://${domain}`, `http://${domain}`, `https://${domain}/v1/`, `https://${domain}/v2/`];
  for (const k of candidates) {
    const e = auths[k];
    if (!e) continue;
    if (e.username && e.password) return { username: e.username, password: e.password };
    if (typeof e.auth === "string" && e.auth) {
      const text = Buffer.from(e.auth, "base64").toString("utf8");
      const i = text.indexOf(":");
      if (i > 0) return { username: text.slice(0, i), password: text.slice(i + 1) };
    }
  }
  return undefined;
}

export function saveCredentials(domain: string, c: Credentials): string {
  const cfg = readConfig();
  cfg.auths ??= {};
  const helper = helperFor(cfg, domain);
  if (helper) {
    // the secret goes to the helper; config.json keeps an empty entry, as docker's CLI does
    const r = callHelper(helper, "store", JSON.stringify({ ServerURL: keyFor(domain), Username: c.username, Secret: c.password }));
    if (!r.ok) throw invalid(`docker-credential-${helper} store: ${r.out.slice(0, 300)}`);
    cfg.auths[keyFor(domain)] = {};
  } else cfg.auths[keyFor(domain)] = { auth: Buffer.from(`${c.username}:${c.password}`).toString("base64") };
  const path = dockerConfigPath();
  fs.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  writeFileAtomic(path, JSON.stringify(cfg, null, "\t") + "\n");
  fs.chmodSync(path, 0o600);
  return path;
}

/** Returns false when there was nothing to remove. */
export function removeCredentials(domain: string): boolean {
  const cfg = readConfig();
  const key = keyFor(domain);
  const helper = helperFor(cfg, domain);
  const erased = helper ? callHelper(helper, "erase", key).ok : false;
  if (!cfg.auths?.[key]) return erased;
  delete cfg.auths[key];
  writeFileAtomic(dockerConfigPath(), JSON.stringify(cfg, null, "\t") + "\n");
  return true;
}

export const configDir = (): string => process.env.BERTH_CONFIG_DIR ?? "/etc/berth";

export interface RegistrySettings {
  /** Registries that may be reached over plain HTTP or with certificates we cannot verify. */
  insecure: string[];
  /** Docker Hub's mirrors (daemon.json's registry-mirrors), tried in order before it. */
  mirrors: string[];
}

/** `log-opts` in daemon.json (dockerd's key): the log options a container gets unless it names its own. */
export function daemonLogOpts(): Record<string, string> | undefined {
  const file = join(configDir(), "daemon.json");
  try {
    const j = JSON.parse(fs.readFileSync(file, "utf8"));
    const o = j["log-opts"];
    if (o === undefined) return undefined;
    if (typeof o !== "object" || o === null || Object.values(o).some((v) => typeof v !== "string")) throw invalid(`${file}: "log-opts" must map option names to strings`);
    return o as Record<string, string>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    if (e instanceof Error && e.name.startsWith("BerthError")) throw e;
    throw invalid(`cannot read ${file}: ${(e as Error).message}`);
  }
}

export function registrySettings(): RegistrySettings {
  for (const file of [join(configDir(), "daemon.json")]) {
    try {
      const j = JSON.parse(fs.readFileSync(file, "utf8"));
      const mirrors = j["registry-mirrors"] ?? [];
      if (!Array.isArray(mirrors) || mirrors.some((m) => typeof m !== "string" || !/^https?:\/\/[^/]+\/?$/.test(m))) throw invalid(`${file}: "registry-mirrors" must list URLs such as "https://mirror.example.com" (scheme and host, no path)`);
      return { insecure: Array.isArray(j["insecure-registries"]) ? j["insecure-registries"] : [], mirrors };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw invalid(`cannot read ${file}: ${(e as Error).message}`);
    }
  }
  return { insecure: [], mirrors: [] };
}

/** Extra CA certificates for a registry: <configDir>/certs.d/<host>/*.crt (docker's layout). */
export function registryCAs(host: string): Buffer[] {
  const dirs = [join(configDir(), "certs.d", host), join("/etc/docker/certs.d", host)];
  const out: Buffer[] = [];
  for (const d of dirs) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(d);
    } catch {
      // a credentials directory that does not exist: nothing in it
      continue;
    }
    for (const n of names) if (n.endsWith(".crt")) out.push(fs.readFileSync(join(d, n)));
  }
  return out;
}
