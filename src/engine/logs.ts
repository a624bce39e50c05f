/** Reading docker's json-file logs (rotated files oldest first), with --since/--until/--tail/-f. */
import * as fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export interface LogEntry {
  stream: "stdout" | "stderr";
  line: string;
  time: string;
}

function parseLine(l: string): LogEntry | undefined {
  try {
    const j = JSON.parse(l) as { log: string; stream: "stdout" | "stderr"; time: string };
    return { stream: j.stream, line: j.log, time: j.time };
  } catch {
    return undefined; // a record cut short by a crash
  }
}

const timeNs = (t: string): bigint => {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?Z$/.exec(t);
  if (!m) return 0n;
  return BigInt(Date.parse(m[1]! + "Z")) * 1_000_000n + BigInt((m[2] ?? "").padEnd(9, "0").slice(0, 9) || "0");
};

export interface LogOptions {
  follow?: boolean;
  tail?: number;
  sinceNs?: bigint;
  untilNs?: bigint;
  /** While following: is the container still running? */
  running?: () => Promise<boolean>;
}

export async function* readLogs(path: string, maxFiles: number, opts: LogOptions = {}): AsyncGenerator<LogEntry> {
  const keep = (e: LogEntry) => (opts.sinceNs === undefined || timeNs(e.time) >= opts.sinceNs) && (opts.untilNs === undefined || timeNs(e.time) <= opts.untilNs);
  const files = [];
  for (let i = maxFiles - 1; i >= 1; i--) if (fs.existsSync(`${path}.${i}`)) files.push(`${path}.${i}`);
  if (fs.existsSync(path)) files.push(path);
  let entries: LogEntry[] = [];
  for (const f of files)
    for (const l of fs.readFileSync(f, "utf8").split("\n"))
      if (l) {
        const e = parseLine(l);
        if (e && keep(e)) entries.push(e);
      }
  if (opts.tail !== undefined && opts.tail >= 0) entries = opts.tail === 0 ? [] : entries.slice(-opts.tail);
  yield* entries;
  if (!opts.follow) return;
  let offset = fs.existsSync(path) ? fs.statSync(path).size : 0;
  let ino = fs.existsSync(path) ? fs.statSync(path).ino : 0;
  let partial = "";
  for (;;) {
    const st = fs.statSync(path, { throwIfNoEntry: false });
    if (st && (st.ino !== ino || st.size < offset)) {
      offset = 0; // rotated: the new file starts afresh
      ino = st.ino;
    }
    if (st && st.size > offset) {
      const fd = fs.openSync(path, "r");
      const buf = Buffer.alloc(st.size - offset);
      fs.readSync(fd, buf, 0, buf.length, offset);
      fs.closeSync(fd);
      offset = st.size;
      const text = partial + buf.toString("utf8");
      const lines = text.split("\n");
      partial = lines.pop() ?? "";
      for (const l of lines) {
        const e = l ? parseLine(l) : undefined;
        if (e && keep(e)) yield e;
      }
      continue;
    }
    if (opts.running && !(await opts.running())) {
      await sleep(50); // the monitor's last records
      const last = fs.statSync(path, { throwIfNoEntry: false });
      if (!last || last.size <= offset) return;
      continue;
    }
    await sleep(100);
  }
}
