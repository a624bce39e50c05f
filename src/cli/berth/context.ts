/** What every berth command gets: the store (opened on first use), global options, error printing. */
import { BerthError, errorMessage } from "../../common/errors.js";
import type { ImageStore } from "../../images/index.js";
import { Engine } from "../../engine/index.js";

export interface ContainerUsage {
  total: number;
  active: number;
  size: number;
  reclaimable: number;
}

export class Context {
  private eng?: Engine;
  readonly config: { imagesFormat?: string } = {};

  constructor(readonly opts: { root?: string; debug?: boolean }) {}

  engine(): Engine {
    return (this.eng ??= new Engine(this.opts.root ? { root: this.opts.root } : {}));
  }

  store(): ImageStore {
    return this.engine().images;
  }

  /** Containers using an image. */
  imageUsers = (id: string): string[] => this.engine().imageUsers(id);

  containerUsage(): ContainerUsage {
    const ids = this.engine().containers.ids();
    const running = ids.filter((i) => this.engine().containers.read(i)?.state.Running).length;
    return { total: ids.length, active: running, size: 0, reclaimable: 0 };
  }

  error(e: unknown): void {
    const msg = errorMessage(e);
    process.stderr.write(`Error: ${msg}\n`);
    if (this.opts.debug && e instanceof Error && !(e instanceof BerthError)) process.stderr.write(`${e.stack}\n`);
  }
}
