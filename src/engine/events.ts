/**
 * Events without a daemon: every berth process appends what it did to <root>/events.log, one JSON
 * line each (docker's event shape); `berth events` reads and follows the file. Appends of a line
 * are single O_APPEND writes, so concurrent writers do not interleave.
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { setTimeout as sleep } from "node:timers/promises";

export interface BerthEvent {
  Type: "container" | "image" | "volume";
  Action: string;
  Actor: { ID: string; Attributes: Record<string, string> };
  scope: "local";
  time: number;
  timeNano: number;
}

export class EventLog {
  readonly path: string;

  /** maxBytes: the size at which the log is rotated (the previous file is kept as events.log.1) */
  constructor(
    root: string,
    private readonly maxBytes = 8 << 20,
  ) {
    this.path = join(root, "events.log");
  }

  emit(type: BerthEvent["Type"], action: string, id: string, attributes: Record<string, string> = {}): void {
    const ns = BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
    const e: BerthEvent = { Type: type, Action: action, Actor: { ID: id, Attributes: attributes }, scope: "local", time: Number(ns / 1_000_000_000n), timeNano: Number(ns) };
    let fd: number | undefined;
    let size = 0;
    try {
      fd = fs.openSync(this.path, "a");
      size = fs.fstatSync(fd).size;
      fs.writeSync(fd, JSON.stringify(e) + "\n");
      // rotated at 8 MiB: the last two files are kept (readers read both)
      if (size > this.maxBytes) fs.renameSync(this.path, `${this.path}.1`);
    } catch {
      // events are best effort: a full disk must not fail the operation, nor leave half a line
      // for the next event to be glued to
      if (fd !== undefined)
        try {
          fs.ftruncateSync(fd, size);
        } catch {
          /* nothing more to do */
        }
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  /** Events from sinceNs to untilNs; with follow, what comes after, until untilNs or the signal's abort (the reader went away). */
  async *read(opts: { sinceNs?: bigint; untilNs?: bigint; follow?: boolean; signal?: AbortSignal }): AsyncGenerator<BerthEvent> {
    // the rotated file first, then the current one (followed across rotations)
    let rotated = "";
    try {
      rotated = fs.readFileSync(`${this.path}.1`, "utf8");
    } catch {
      /* not rotated yet */
    }
    for (const l of rotated.split("\n")) {
      const e = parseEvent(l);
      if (!e || (opts.sinceNs !== undefined && BigInt(e.timeNano) < opts.sinceNs)) continue;
      if (opts.untilNs !== undefined && BigInt(e.timeNano) > opts.untilNs) return;
      yield e;
    }
    let offset = 0;
    let partial = "";
    let ino: number | undefined;
    for (;;) {
      const st = fs.statSync(this.path, { throwIfNoEntry: false });
      if (st && ino !== undefined && st.ino !== ino) {
        offset = 0; // rotated while we followed
        partial = "";
      }
      if (st) ino = st.ino;
      if (st && st.size > offset) {
        const fd = fs.openSync(this.path, "r");
        const buf = Buffer.alloc(st.size - offset);
        fs.readSync(fd, buf, 0, buf.length, offset);
        fs.closeSync(fd);
        offset = st.size;
        const lines = (partial + buf.toString("utf8")).split("\n");
        partial = lines.pop() ?? "";
        for (const l of lines) {
          const e = parseEvent(l);
          if (!e) continue;
          if (opts.sinceNs !== undefined && BigInt(e.timeNano) < opts.sinceNs) continue;
          if (opts.untilNs !== undefined && BigInt(e.timeNano) > opts.untilNs) return;
          yield e;
        }
        continue;
      }
      if (!opts.follow || opts.signal?.aborted) return;
      if (opts.untilNs !== undefined && BigInt(Date.now()) * 1_000_000n > opts.untilNs) return;
      await sleep(100);
    }
  }
}


function parseEvent(line: string): BerthEvent | undefined {
  try {
    return line ? (JSON.parse(line) as BerthEvent) : undefined;
  } catch {
    // a torn last line (a writer killed mid-write): skipped
    return undefined;
  }
}
