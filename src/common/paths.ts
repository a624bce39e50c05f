/** Where berth's own binaries are: the launcher sets berthBuildDir; otherwise next to the sources. */
import { existsSync } from "node:fs";
import { dirname } from "node:path";
import { join } from "./path.js";
import { fileURLToPath } from "node:url";
import { BerthError } from "./errors.js";

declare global {
  // Set by the installed launchers, which load a one-file bundle (no import.meta there).
  var berthBuildDir: string | undefined;
}

declare const __dirname: string | undefined;

/** build/ beside dist/: from dist/src/common in the ES modules, from dist/ in the one-file bundles. */
function defaultBuildDir(): string {
  if (import.meta.url) return join(dirname(fileURLToPath(import.meta.url)), "../../../build");
  return join(typeof __dirname === "string" ? __dirname : process.cwd(), "../build");
}

export function buildBinary(name: string): string {
  const dir = process.env.BERTH_BUILD_DIR ?? globalThis.berthBuildDir ?? defaultBuildDir();
  const path = join(dir, name);
  if (!existsSync(path)) throw new BerthError("NotFound", `${name} not found at ${path}: run ./install.sh (or npm run build)`);
  return path;
}

/** berth runs rootless when its user is not root: a per-user store, user namespaces, no host mounts. */
export const isRootless = (): boolean => (process.getuid?.() ?? 0) !== 0;

/** The store: /var/lib/berth for root, $XDG_DATA_HOME/berth (~/.local/share/berth) rootless; $BERTH_ROOT wins. */
export function defaultStoreRoot(): string {
  if (process.env.BERTH_ROOT) return process.env.BERTH_ROOT;
  if (!isRootless()) return "/var/lib/berth";
  const home = process.env.HOME || `/tmp/berth-${process.getuid!()}`;
  return join(process.env.XDG_DATA_HOME || join(home, ".local/share"), "berth");
}

/** The runtime's state: /run/berth/runtime for root, $XDG_RUNTIME_DIR/berth/runtime rootless; $BERTH_RUNTIME_ROOT wins. */
export function defaultRuntimeRoot(): string {
  if (process.env.BERTH_RUNTIME_ROOT) return process.env.BERTH_RUNTIME_ROOT;
  if (!isRootless()) return "/run/berth/runtime";
  return join(process.env.XDG_RUNTIME_DIR || `/tmp/berth-${process.getuid!()}`, "berth/runtime");
}
