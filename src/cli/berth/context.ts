/** What every berth command gets: the engine (opened on first use), global options, error printing. */
import { BerthError, errorMessage } from "../../common/errors.js";
import { Engine } from "../../engine/index.js";

export class Context {
  private eng?: Engine;
  readonly config: { imagesFormat?: string } = {};

  constructor(readonly opts: { root?: string; debug?: boolean }) {}

  engine(): Engine {
    return (this.eng ??= new Engine(this.opts.root ? { root: this.opts.root } : {}));
  }

  error(e: unknown): void {
    const msg = errorMessage(e);
    process.stderr.write(`Error: ${msg}\n`);
    if (this.opts.debug && e instanceof Error && !(e instanceof BerthError)) process.stderr.write(`${e.stack}\n`);
  }
}
