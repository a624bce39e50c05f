/** Where berth's own binaries are: the launcher sets berthBuildDir; otherwise next to the sources. */
import { existsSync, lstatSync, mkdirSync } from "node:fs";
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
  const home = process.env.HOME || privateTmpDir();
  return join(process.env.XDG_DATA_HOME || join(home, ".local/share"), "berth");
}

/** The runtime's state: /run/berth/runtime for root, $XDG_RUNTIME_DIR/berth/runtime rootless; $BERTH_RUNTIME_ROOT wins. */
export function defaultRuntimeRoot(): string {
  if (process.env.BERTH_RUNTIME_ROOT) return process.env.BERTH_RUNTIME_ROOT;
  if (!isRootless()) return "/run/berth/runtime";
  return join(process.env.XDG_RUNTIME_DIR || privateTmpDir(), "berth/runtime");
}

/**
 * /tmp/PREFIX-UID, the rootless fallback when neither HOME nor XDG_RUNTIME_DIR is set. /tmp is
 * everyone's: another user could have made that name first (a directory of theirs, or a symlink)
 * to read or plant the state. Made 0700 when missing; used only when it is a real directory that
 * this user owns and nobody else can enter.
 */
export function privateTmpDir(prefix = "berth"): string {
  const uid = process.getuid!();
  const dir = `/tmp/${prefix}-${uid}`;
  try {
    mkdirSync(dir, 0o700);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw new BerthError("System", `cannot create ${dir}: ${(e as Error).message}`);
  }
  const st = lstatSync(dir);
  const problem = st.isSymbolicLink() ? "is a symlink" : !st.isDirectory() ? "is not a directory" : st.uid !== uid ? `belongs to uid ${st.uid}` : st.mode & 0o077 ? `has mode ${(st.mode & 0o777).toString(8)}` : "";
  if (problem) throw new BerthError("FailedPrecondition", `${dir} ${problem}, not a private directory of uid ${uid}: remove it, or set XDG_RUNTIME_DIR (and HOME) to a directory of your own`);
  return dir;
}
