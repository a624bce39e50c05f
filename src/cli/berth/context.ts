/** What every berth command gets: the engine (opened on first use), global options, error printing. */
import { BerthError, errorMessage } from "../../common/errors.js";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultStoreRoot } from "../../common/paths.js";
import { Engine } from "../../engine/index.js";

/** Commands that only read the store (and repair, which has nothing to do without one): where it does not exist yet, they see an empty one and make nothing. */
const READERS = new Set(["ps", "container ls", "container list", "images", "image ls", "image list", "inspect", "container inspect", "image inspect", "logs", "container logs", "history", "image history", "top", "port", "diff", "stats", "events", "system events", "info", "system info", "system df", "volume ls", "volume list", "volume inspect", "network ls", "network list", "network inspect", "builder du", "wait", "system repair"]);

export class Context {
  private eng?: Engine;
  readonly config: { imagesFormat?: string } = {};
  /** The command being run ("ps", "network ls"), set before it runs. */
  command = "";

  constructor(readonly opts: { root?: string; debug?: boolean }) {}

  engine(): Engine {
    if (this.eng) return this.eng;
    const root = this.opts.root ?? defaultStoreRoot();
    if (READERS.has(this.command) && !fs.existsSync(root)) {
      // an empty store of the command's own, gone when it ends: `--root /typo ps` makes no store
      const empty = fs.mkdtempSync(join(tmpdir(), "berth-empty-"));
      process.once("exit", () => fs.rmSync(empty, { recursive: true, force: true }));
      return (this.eng = new Engine({ root: join(empty, "store"), runtimeRoot: join(empty, "run") }));
    }
    return (this.eng = new Engine(this.opts.root ? { root: this.opts.root } : {}));
  }

  error(e: unknown): void {
    const msg = errorMessage(e);
    process.stderr.write(`Error: ${msg}\n`);
    // what to do, on a line of its own (pnpm's way): the first line stays docker's
    if (e instanceof BerthError && e.hint) process.stderr.write(`hint: ${e.hint}\n`);
    if (this.opts.debug && e instanceof Error && !(e instanceof BerthError)) process.stderr.write(`${e.stack}\n`);
  }
}
