/**
 * The monitor's attach stream, as the front ends read it: frames of a 1-byte kind (1 stdout, 2
 * stderr, 3 the container's exit code, berth's own), 3 bytes of padding and a big-endian u32
 * length — docker's stdcopy framing, with one kind more.
 */
import { invalid } from "../common/errors.js";
import type { Socket } from "node:net";
import { Frame } from "../runtime/index.js";

export interface AttachSinks {
  stdout(chunk: Buffer): void;
  stderr(chunk: Buffer): void;
}

/** Demultiplexes an attach socket into the sinks; resolves with the exit code when the stream ends (undefined when none came). */
export function demuxAttach(sock: Socket, sinks: AttachSinks): Promise<number | undefined> {
  return new Promise((resolve) => {
    let buf: Buffer = Buffer.alloc(0);
    let code: number | undefined;
    sock.on("data", (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 8) {
        const len = buf.readUInt32BE(4);
        if (buf.length < 8 + len) break;
        const kind = buf[0],
          body = buf.subarray(8, 8 + len);
        if (kind === Frame.STDOUT) sinks.stdout(body);
        else if (kind === Frame.STDERR) sinks.stderr(body);
        else if (kind === Frame.EXIT) code = Number(body.toString());
        buf = buf.subarray(8 + len);
      }
    });
    sock.on("close", () => resolve(code));
    sock.on("error", () => resolve(code));
  });
}

/** docker's detach keys: "ctrl-p,ctrl-q" → the bytes that detach. */
export function detachBytes(spec: string): number[] {
  return spec.split(",").map((k) => {
    const m = /^ctrl-([a-z@\[\\\]^_])$/.exec(k);
    if (m) return m[1]!.charCodeAt(0) & 0x1f;
    if (k.length === 1) return k.charCodeAt(0);
    throw invalid(`invalid detach keys (${spec})`);
  });
}

/**
 * A terminal's input, watched for the detach keys (as dockerd's escape proxy): what comes before
 * them is passed on, the keys themselves are not, and onDetach runs once they are whole. Bytes of
 * a partial match are held until the next byte decides.
 */
export function detachWatcher(keys: number[], pass: (b: Buffer) => void, onDetach: () => void): (d: Buffer) => void {
  let held: number[] = [];
  let done = false;
  return (d: Buffer) => {
    if (done) return;
    const out: number[] = [];
    for (const byte of d) {
      if (byte === keys[held.length]) {
        held.push(byte);
        if (held.length === keys.length) {
          if (out.length) pass(Buffer.from(out));
          done = true;
          onDetach();
          return;
        }
        continue;
      }
      // the held prefix was data after all
      out.push(...held);
      held = byte === keys[0] ? [byte] : [];
      if (!held.length) out.push(byte);
    }
    if (out.length) pass(Buffer.from(out));
  };
}
