/**
 * Progress for pulls and pushes, as docker shows it: on a terminal one line per layer redrawn in
 * place with a bar; otherwise plain lines, one per status change (no byte counts), for logs.
 */
import type { ProgressEvent } from "../../engine/index.js";
import { humanSize } from "./output.js";

export class ProgressView {
  private readonly order: string[] = [];
  private readonly lines = new Map<string, string>();
  private readonly lastStatus = new Map<string, string>();
  private drawn = 0;
  private pending = false;

  constructor(
    private readonly out: NodeJS.WriteStream,
    private readonly tty = !!out.isTTY,
  ) {}

  update = (e: ProgressEvent): void => {
    if (!e.id) {
      this.flush();
      this.out.write(e.status + "\n");
      return;
    }
    if (!this.tty) {
      if (e.total !== undefined) return; // byte counts are for terminals, as in docker
      if (this.lastStatus.get(e.id) === e.status) return;
      this.lastStatus.set(e.id, e.status);
      this.out.write(`${e.id}: ${e.status}\n`);
      return;
    }
    if (!this.lines.has(e.id)) this.order.push(e.id);
    this.lines.set(e.id, `${e.id}: ${e.status}${e.total ? " " + bar(e.current ?? 0, e.total) : ""}`);
    if (!this.pending) {
      this.pending = true;
      setTimeout(() => this.redraw(), 100).unref();
    }
  };

  private redraw(): void {
    this.pending = false;
    const cols = this.out.columns || 80;
    let s = this.drawn ? `\x1b[${this.drawn}A` : "";
    for (const id of this.order) s += `\x1b[2K\r${this.lines.get(id)!.slice(0, cols - 1)}\n`;
    this.drawn = this.order.length;
    this.out.write(s);
  }

  /** Draw the final state (call before printing anything else). */
  flush(): void {
    if (this.tty && this.order.length) {
      this.redraw();
      this.order.length = 0;
      this.lines.clear();
      this.drawn = 0;
    }
  }
}

function bar(current: number, total: number): string {
  const width = 50;
  const filled = Math.min(width, Math.floor((current / total) * width));
  return `[${"=".repeat(Math.max(0, filled - 1))}${filled ? ">" : ""}${" ".repeat(width - filled)}] ${humanSize(current)}/${humanSize(total)}`;
}
