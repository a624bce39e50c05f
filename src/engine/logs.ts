/** Reading docker's json-file logs (rotated files oldest first), with --since/--until/--tail/-f. */
import * as fs from "node:fs";
import { builtin } from "../common/builtin.js";
import { invalid } from "../common/errors.js";
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
  /** Ends a follow (the reader went away): checked each time the follow looks for more. */
  signal?: AbortSignal;
}

/** Bytes read at a time: logs are streamed, never read whole (a noisy container's log may be larger than memory). */
const CHUNK = 1 << 20;

/** A log file, or a rotated one decompressed (data). */
interface LogFile {
  path: string;
  size: number;
  data?: Buffer;
}

/** The lines of a file from `start` to `end` (exclusive), without their newlines; a last unterminated line is left out. */
async function* linesOf(file: string | Buffer, start: number, end: number, onConsumed: (pos: number) => void = () => {}): AsyncGenerator<string> {
  if (Buffer.isBuffer(file)) {
    let at = start;
    for (let nl: number; at < end && (nl = file.indexOf(10, at)) >= 0 && nl < end; at = nl + 1) yield file.toString("utf8", at, nl);
    onConsumed(at);
    return;
  }
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, "r");
  } catch {
    return; // rotated away meanwhile
  }
  try {
    const buf = Buffer.alloc(CHUNK);
    let pos = start;
    let carry: Buffer = Buffer.alloc(0);
    while (pos < end) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, end - pos), pos);
      if (!bytesRead) break;
      pos += bytesRead;
      let data = carry.length ? Buffer.concat([carry, buf.subarray(0, bytesRead)]) : buf.subarray(0, bytesRead);
      let nl: number;
      let consumed = 0;
      while ((nl = data.indexOf(10, consumed)) >= 0) {
        yield data.toString("utf8", consumed, nl);
        consumed = nl + 1;
      }
      carry = Buffer.from(data.subarray(consumed));
      data = Buffer.alloc(0);
      onConsumed(pos - carry.length);
    }
  } finally {
    await fh.close();
  }
}

/**
 * Where the last `n` lines of these files (oldest first) begin: read backwards from the end in
 * chunks, so `--tail 5` of a 7 GB log reads a few KB.
 */
function tailStart(files: LogFile[], n: number): { index: number; offset: number } {
  let want = n;
  const buf = Buffer.alloc(64 << 10);
  for (let i = files.length - 1; i >= 0; i--) {
    const { path, size, data } = files[i]!;
    if (data) {
      // a decompressed file: its newlines counted in memory (the last ends its last line)
      let j = data.lastIndexOf(10, size - 1);
      if (j < 0) continue;
      // (lastIndexOf counts a negative offset from the end: stop at the start)
      while (j > 0 && (j = data.lastIndexOf(10, j - 1)) >= 0) if (--want === 0) return { index: i, offset: j + 1 };
      if (--want === 0) return { index: i, offset: 0 };
      continue;
    }
    let fd: number;
    try {
      fd = fs.openSync(path, "r");
    } catch {
      // a rotated file removed meanwhile: the others are read
      continue;
    }
    try {
      // the last newline ends the last complete line (a record being written after it is not
      // read yet): every newline before it starts a line
      let end = size;
      let last = true;
      while (end > 0) {
        const len = Math.min(buf.length, end);
        fs.readSync(fd, buf, 0, len, end - len);
        for (let j = len - 1; j >= 0; j--) {
          if (buf[j] !== 10) continue;
          if (last) {
            last = false;
            continue;
          }
          if (--want === 0) return { index: i, offset: end - len + j + 1 };
        }
        end -= len;
      }
      // the whole file is lines for the tail: its first line counts too
      if (!last && --want === 0) return { index: i, offset: 0 };
    } finally {
      fs.closeSync(fd);
    }
  }
  return { index: 0, offset: 0 };
}

export async function* readLogs(path: string, maxFiles: number, opts: LogOptions = {}): AsyncGenerator<LogEntry> {
  const keep = (e: LogEntry) => (opts.sinceNs === undefined || timeNs(e.time) >= opts.sinceNs) && (opts.untilNs === undefined || timeNs(e.time) <= opts.untilNs);
  const files: LogFile[] = [];
  for (let i = maxFiles - 1; i >= 1; i--) {
    const st = fs.statSync(`${path}.${i}`, { throwIfNoEntry: false });
    if (st) files.push({ path: `${path}.${i}`, size: st.size });
    else {
      // compressed when rotated (compress=true, the local driver): one rotated file (max-size) in memory
      const gz = `${path}.${i}.gz`;
      if (!fs.existsSync(gz)) continue;
      try {
        const data = builtin<typeof import("node:zlib")>("node:zlib").gunzipSync(fs.readFileSync(gz));
        files.push({ path: gz, size: data.length, data });
      } catch {
        /* being written, or rotated away meanwhile */
      }
    }
  }
  const cur = fs.statSync(path, { throwIfNoEntry: false });
  if (cur) files.push({ path, size: cur.size });
  // where following picks up: the current file as far as it was read
  let offset = 0;
  const ino = cur?.ino ?? 0;
  const tail = opts.tail !== undefined && opts.tail >= 0 ? opts.tail : undefined;
  const filtered = opts.sinceNs !== undefined || opts.untilNs !== undefined;
  if (tail === 0) offset = cur?.size ?? 0;
  else if (tail !== undefined && filtered) {
    // the last N of the entries that pass the time filter: a ring of N, read forwards
    const ring: LogEntry[] = [];
    for (const f of files)
      for await (const l of linesOf(f.data ?? f.path, 0, f.size, (p) => f.path === path && (offset = p))) {
        const e = l ? parseLine(l) : undefined;
        if (e && keep(e)) {
          ring.push(e);
          if (ring.length > tail) ring.shift();
        }
      }
    yield* ring;
  } else {
    const from = tail !== undefined ? tailStart(files, tail) : { index: 0, offset: 0 };
    for (let i = from.index; i < files.length; i++) {
      const f = files[i]!;
      for await (const l of linesOf(f.data ?? f.path, i === from.index ? from.offset : 0, f.size, (p) => f.path === path && (offset = p))) {
        const e = l ? parseLine(l) : undefined;
        if (e && keep(e)) yield e;
      }
    }
  }
  if (!opts.follow) return;
  let followIno = ino;
  while (!opts.signal?.aborted) {
    const st = fs.statSync(path, { throwIfNoEntry: false });
    if (st && (st.ino !== followIno || st.size < offset)) {
      offset = 0; // rotated: the new file starts afresh
      followIno = st.ino;
    }
    if (st && st.size > offset) {
      for await (const l of linesOf(path, offset, st.size, (p) => (offset = p))) {
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

/** A time as docker's --since/--until (and the API's since/until) take it: unix seconds, a duration ago (10m), or a date; in ns. */
export function logTime(s: string | undefined, what = "since"): bigint | undefined {
  if (s === undefined || s === "" || s === "0") return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return BigInt(Math.floor(Number(s) * 1e9));
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s);
  if (m) return (BigInt(Date.now()) - BigInt(Math.round(Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s"]))) * 1_000_000n;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw invalid(`invalid value for "${what}": ${s}`);
  return BigInt(t) * 1_000_000n;
}
