/** Where berth's own binaries are: the launcher sets berthBuildDir; otherwise next to the sources. */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { BerthError } from "./errors.js";

declare global {
  // Set by the installed launchers, which load a one-file bundle (no import.meta there).
  var berthBuildDir: string | undefined;
}

export function buildBinary(name: string): string {
  const dir = process.env.BERTH_BUILD_DIR ?? globalThis.berthBuildDir ?? join(dirname(fileURLToPath(import.meta.url)), "../../../build");
  const path = join(dir, name);
  if (!existsSync(path)) throw new BerthError("NotFound", `${name} not found at ${path}: run ./install.sh (or npm run build)`);
  return path;
}
