/**
 * Build progress as BuildKit shows it: plain lines (`#3 [stage-0 2/4] RUN …`) for logs and pipes,
 * and on a terminal a view redrawn in place (`[+] Building 1.2s (4/6)`, one line per step, the last
 * lines of a running step's output under it).
 */
import type { build as ops } from "../../engine/index.js";

export interface BuildProgress {
  event: (e: ops.BuildEvent) => void;
  /** The image is written: the export lines, and (on a terminal) the final view. */
  finish(id: string, tags: string[]): void;
  /** The build failed: the final view and the failing step's last output. */
  fail(): void;
}

/** BuildKit's plain progress: `#N [stage i/n] STEP`, its output lines, then CACHED or DONE. */
export class PlainProgress implements BuildProgress {
  private readonly partial = new Map<number, string>();
  private readonly started = new Map<number, number>();
  private readonly t0 = Date.now();
  private last = 0;
  constructor(private readonly write: (s: string) => void) {}

  event = (e: ops.BuildEvent): void => {
    switch (e.kind) {
      case "step":
        this.last = Math.max(this.last, e.step);
        this.started.set(e.step, Date.now());
        this.write(`#${e.step} ${e.name} ${e.text}\n`);
        break;
      case "output": {
        const text = (this.partial.get(e.step) ?? "") + e.data.toString("utf8");
        const lines = text.split("\n");
        this.partial.set(e.step, lines.pop()!);
        const t = ((Date.now() - (this.started.get(e.step) ?? Date.now())) / 1000).toFixed(3);
        for (const l of lines) this.write(`#${e.step} ${t} ${l}\n`);
        break;
      }
      case "cached":
        this.write(`#${e.step} CACHED\n`);
        break;
      case "done": {
        const rest = this.partial.get(e.step);
        if (rest) this.write(`#${e.step} ${rest}\n`);
        this.write(`#${e.step} DONE ${e.seconds.toFixed(1)}s\n\n`);
        break;
      }
      case "error": {
        const rest = this.partial.get(e.step);
        if (rest) this.write(`#${e.step} ${rest}\n`);
        this.write(`#${e.step} ERROR: ${e.message}\n\n`);
        break;
      }
      case "warning":
        this.write(`WARNING: ${e.text}\n`);
        break;
    }
  };

  finish(id: string, tags: string[]): void {
    const n = `#${this.last + 1}`;
    let s = `${n} exporting to image\n${n} writing image ${id} done\n`;
    for (const t of tags) s += `${n} naming to ${t} done\n`;
    this.write(`${s}${n} DONE ${((Date.now() - this.t0) / 1000).toFixed(1)}s\n`);
  }

  fail(): void {}
}

interface StepView {
  name: string;
  text: string;
  start: number;
  end?: number;
  cached?: boolean;
  error?: boolean;
  /** Complete output lines (the last ones kept) and the unfinished one. */
  lines: string[];
  partial: string;
}

/** Output lines shown under a running step, and under the failed step at the end (BuildKit's figures). */
const LIVE_LINES = 6;
const ERROR_LINES = 10;

/** BuildKit's terminal view, redrawn every 100 ms while the build runs. */
export class TtyProgress implements BuildProgress {
  private readonly steps = new Map<number, StepView>();
  private readonly warnings: string[] = [];
  private readonly t0 = Date.now();
  private readonly timer: NodeJS.Timeout;
  private exporting: string[] | undefined;
  private drawn = 0;
  private failed: StepView | undefined;

  constructor(private readonly out: NodeJS.WriteStream) {
    this.timer = setInterval(() => this.draw(false), 100);
    this.timer.unref();
  }

  event = (e: ops.BuildEvent): void => {
    if (e.kind === "warning") {
      this.warnings.push(e.text);
      return;
    }
    if (e.kind === "step") {
      this.steps.set(e.step, { name: e.name, text: e.text, start: Date.now(), lines: [], partial: "" });
      return;
    }
    const s = this.steps.get(e.step);
    if (!s) return;
    switch (e.kind) {
      case "output": {
        const lines = (s.partial + e.data.toString("utf8")).split("\n");
        s.partial = lines.pop()!;
        s.lines.push(...lines.map((l) => l.replace(/\r$/, "")));
        if (s.lines.length > ERROR_LINES) s.lines.splice(0, s.lines.length - ERROR_LINES);
        break;
      }
      case "cached":
        s.cached = true;
        break;
      case "done":
        s.end = Date.now();
        break;
      case "error":
        s.end = Date.now();
        s.error = true;
        this.failed = s;
        break;
    }
  };

  finish(id: string, tags: string[]): void {
    this.exporting = [`writing image ${id}`, ...tags.map((t) => `naming to ${t}`)];
    this.close();
  }

  fail(): void {
    this.close();
    const s = this.failed;
    if (!s) return;
    const lines = [...s.lines, ...(s.partial ? [s.partial] : [])].slice(-ERROR_LINES);
    this.out.write(`------\n > ${s.name} ${s.text}:\n${lines.map((l) => `${l}\n`).join("")}------\n`);
  }

  private close(): void {
    clearInterval(this.timer);
    this.draw(true);
    for (const w of this.warnings) this.out.write(`WARNING: ${w}\n`);
  }

  /** One frame: the header, each step with its time right-aligned, a running step's last lines. */
  private draw(final: boolean): void {
    const cols = Math.max(this.out.columns || 80, 40);
    const now = Date.now();
    const secs = (a: number, b: number | undefined) => `${((b ?? now) - a) / 1000 < 0.05 ? "0.0" : (((b ?? now) - a) / 1000).toFixed(1)}s`;
    const line = (left: string, right: string) => {
      const room = cols - right.length - 2;
      const l = left.length > room ? left.slice(0, Math.max(room - 1, 0)) : left;
      return right ? `${l}${" ".repeat(Math.max(cols - l.length - right.length - 1, 1))}${right}` : l;
    };
    const all = [...this.steps.values()];
    const done = all.filter((s) => s.end !== undefined).length;
    const finished = final && !this.failed && this.exporting;
    const frame: { text: string; old: boolean }[] = [
      { text: line(`[+] Building ${secs(this.t0, undefined)} (${done}/${all.length})${finished ? " FINISHED" : ""}`, ""), old: false },
    ];
    for (const s of all) {
      const state = s.error ? "ERROR " : s.cached ? "CACHED " : "";
      frame.push({ text: line(` => ${state}${s.name} ${s.text}`, secs(s.start, s.end)), old: s.end !== undefined });
      if (s.end === undefined)
        for (const l of [...s.lines, ...(s.partial ? [s.partial] : [])].slice(-LIVE_LINES)) frame.push({ text: line(` => => # ${l}`, ""), old: false });
    }
    if (this.exporting) {
      frame.push({ text: line(" => exporting to image", "0.0s"), old: true });
      for (const e of this.exporting) frame.push({ text: line(` => => ${e}`, "0.0s"), old: true });
    }
    // a frame taller than the terminal cannot be redrawn in place: finished steps give way first
    let shown = frame;
    const rows = (this.out.rows || 24) - 1;
    if (!final && frame.length > rows) {
      let drop = frame.length - rows;
      shown = frame.filter((f, i) => i === 0 || !f.old || drop-- <= 0);
      if (shown.length > rows) shown = [shown[0]!, ...shown.slice(shown.length - rows + 1)];
    }
    let s = this.drawn ? `\x1b[${this.drawn}A\r` : "";
    for (const f of shown) s += `\x1b[2K${f.text}\n`;
    s += "\x1b[J";
    this.drawn = shown.length;
    this.out.write(s);
  }
}
