/**
 * path.join, equal in result, without its cost in a fresh process: node's normalize walks the
 * whole string a character at a time (a store path's worth in V8's interpreter, and a
 * `berth run` joins ~150 of them). Parts joined as path.join joins them (empty ones skipped, one
 * "/" between) that are already normal — no empty, "." or ".." segment, no trailing slash — are
 * returned as they are; anything else goes to path.join.
 */
import { join as normalizingJoin } from "node:path";

/** Whether normalize would leave s as it is (string searches: no regular expression to run). */
function isNormal(s: string): boolean {
  return (
    !s.includes("//") &&
    !s.includes("/./") &&
    !s.includes("/../") &&
    !(s.length > 1 && s.endsWith("/")) &&
    !s.endsWith("/.") &&
    !s.endsWith("/..") &&
    !s.startsWith("./") &&
    !s.startsWith("../") &&
    s !== "." &&
    s !== ".."
  );
}

export function join(...parts: string[]): string {
  let joined = "";
  // an index loop: for-of's iterator is a cost of its own in V8's interpreter
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (!p) continue;
    // a later part's leading "/" is only a separator to path.join (a cgroup path under its mount)
    joined = !joined ? p : joined.endsWith("/") || p.startsWith("/") ? joined + p : `${joined}/${p}`;
  }
  return joined && isNormal(joined) ? joined : normalizingJoin(...parts);
}
