/** What every berth command gets: the store (opened on first use), global options, error printing. */
import { BerthError, errorMessage } from "../../common/errors.js";
import { ImageStore } from "../../images/index.js";

export interface ContainerUsage {
  total: number;
  active: number;
  size: number;
  reclaimable: number;
}

export class Context {
  private imageStore?: ImageStore;
  readonly config: { imagesFormat?: string } = {};

  constructor(readonly opts: { root?: string; debug?: boolean }) {}

  store(): ImageStore {
    return (this.imageStore ??= new ImageStore(this.opts.root ? { root: this.opts.root } : {}));
  }

  /** Containers using an image (the engine answers this once containers exist). */
  imageUsers = (_id: string): string[] => [];

  containerUsage(): ContainerUsage {
    return { total: 0, active: 0, size: 0, reclaimable: 0 };
  }

  error(e: unknown): void {
    const msg = errorMessage(e);
    process.stderr.write(`Error: ${msg}\n`);
    if (this.opts.debug && e instanceof Error && !(e instanceof BerthError)) process.stderr.write(`${e.stack}\n`);
  }
}
