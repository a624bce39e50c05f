/**
 * Per-registry settings in podman's format (containers-registries.conf v2), read from
 * <configDir>/registries.conf (/etc/berth/registries.conf): for a repository, the first
 * `[[registry]]` whose `prefix` matches (the longest one) says where it really lives (`location`),
 * whether plain HTTP is allowed (`insecure`), whether pulls are refused (`blocked`), and the
 * mirrors to try first (`[[registry.mirror]]`, each with `location`, `insecure`, and podman's
 * `pull-from-mirror`). Docker Hub's `registry-mirrors` in daemon.json still apply, before these.
 * Not read: unqualified-search-registries (berth, as docker, completes short names with
 * docker.io) and aliases; a wildcard prefix (`*.example.com`) is refused, not ignored.
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { invalid } from "../common/errors.js";
import { parse as parseToml } from "smol-toml";

/** Where to ask for a repository: a registry host and the repository's path there. */
export interface RegistryEndpoint {
  host: string;
  path: string;
  insecure: boolean;
}

interface MirrorEntry {
  location: string;
  insecure: boolean;
  pullFrom: "all" | "digest-only" | "tag-only";
}

interface RegistryEntry {
  prefix: string;
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: MirrorEntry[];
}

let cache: { file: string; mtimeMs: number; entries: RegistryEntry[] } | undefined;

function str(v: unknown, what: string, file: string): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw invalid(`${file}: ${what} must be a string`);
  return v.replace(/\/+$/, "");
}

function bool(v: unknown, what: string, file: string): boolean {
  if (v === undefined) return false;
  if (typeof v !== "boolean") throw invalid(`${file}: ${what} must be true or false`);
  return v;
}

/** The [[registry]] entries of a registries.conf text (checked: a bad file is an error, not ignored). */
export function parseRegistriesConf(text: string, file = "registries.conf"): RegistryEntry[] {
  let doc: Record<string, unknown>;
  try {
    doc = parseToml(text) as Record<string, unknown>;
  } catch (e) {
    throw invalid(`${file}: ${(e as Error).message.split("\n")[0]}`);
  }
  const list = doc.registry ?? [];
  if (!Array.isArray(list)) throw invalid(`${file}: registry must be an array of tables ([[registry]])`);
  return list.map((r: Record<string, unknown>, i) => {
    const where = `[[registry]] #${i + 1}`;
    const location = str(r.location, `${where} location`, file) ?? "";
    const prefix = str(r.prefix, `${where} prefix`, file) ?? location;
    if (!prefix) throw invalid(`${file}: ${where} needs a location or a prefix`);
    if (prefix.includes("*")) throw invalid(`${file}: ${where}: wildcard prefixes (${prefix}) are not supported by berth`);
    const mirrors = r.mirror ?? [];
    if (!Array.isArray(mirrors)) throw invalid(`${file}: ${where} mirror must be an array of tables ([[registry.mirror]])`);
    return {
      prefix,
      location: location || prefix,
      insecure: bool(r.insecure, `${where} insecure`, file),
      blocked: bool(r.blocked, `${where} blocked`, file),
      mirrors: mirrors.map((m: Record<string, unknown>, j) => {
        const mw = `${where} mirror #${j + 1}`;
        const loc = str(m.location, `${mw} location`, file);
        if (!loc) throw invalid(`${file}: ${mw} needs a location`);
        const pullFrom = (m["pull-from-mirror"] ?? "all") as MirrorEntry["pullFrom"];
        if (!["all", "digest-only", "tag-only"].includes(pullFrom)) throw invalid(`${file}: ${mw} pull-from-mirror must be all, digest-only or tag-only`);
        return { location: loc, insecure: bool(m.insecure, `${mw} insecure`, file), pullFrom };
      }),
    };
  });
}

function entries(configDir: string): RegistryEntry[] {
  const file = join(configDir, "registries.conf");
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st) return [];
  if (cache?.file !== file || cache.mtimeMs !== st.mtimeMs) cache = { file, mtimeMs: st.mtimeMs, entries: parseRegistriesConf(fs.readFileSync(file, "utf8"), file) };
  return cache.entries;
}

/** "host/a/b" with location's host and path: the prefix's part of the name replaced. */
function endpoint(location: string, rest: string, insecure: boolean): RegistryEndpoint {
  const full = location + rest;
  const slash = full.indexOf("/");
  return { host: full.slice(0, slash), path: full.slice(slash + 1), insecure };
}

/**
 * Where to pull a repository from, in order: the mirrors registries.conf gives it, then its
 * registry (at its location). Undefined when no entry matches (the repository's own registry only).
 */
export function pullEndpoints(configDir: string, domain: string, path: string, byDigest: boolean): RegistryEndpoint[] | undefined {
  const name = `${domain}/${path}`;
  const matching = entries(configDir).filter((e) => name === e.prefix || name.startsWith(`${e.prefix}/`));
  const entry = matching.sort((a, b) => b.prefix.length - a.prefix.length)[0];
  if (!entry) return undefined;
  if (entry.blocked) throw invalid(`registry ${entry.prefix} is blocked in ${join(configDir, "registries.conf")}`);
  const rest = name.slice(entry.prefix.length);
  const mirrors = entry.mirrors.filter((m) => m.pullFrom === "all" || (m.pullFrom === "digest-only") === byDigest);
  return [...mirrors.map((m) => endpoint(m.location, rest, m.insecure)), endpoint(entry.location, rest, entry.insecure)];
}
