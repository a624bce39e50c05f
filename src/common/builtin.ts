/**
 * A Node built-in loaded on first use, not at start: what only some commands need (zlib for
 * layers, dgram for the DNS server, readline for prompts) stays out of berth's start-up snapshot,
 * which every command deserialises.
 */
import { createRequire } from "node:module";

export function builtin<T>(id: string): T {
  const p = process as unknown as { getBuiltinModule?: (id: string) => unknown };
  if (p.getBuiltinModule) return p.getBuiltinModule(id) as T;
  // built-ins resolve from anywhere: the bundle has no import.meta.url
  return createRequire(import.meta.url || "/")(id) as T;
}
