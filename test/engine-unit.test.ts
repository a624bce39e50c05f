/** The engine's pure parts: container paths resolved inside a root, docker's size and -v syntax. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import * as fs from "node:fs";
import { join } from "node:path";
import { tempDir } from "./helpers.js";
import { detachBytes, detachWatcher, parseBind, parseSize, resolveInRoot } from "../src/engine/index.js";
import { readInRoot, resolveUser } from "../src/engine/spec.js";

test("paths resolve inside the root: absolute and ../ symlinks never leave it", () => {
  const root = tempDir("berth-img-");
  fs.mkdirSync(join(root, "etc"));
  fs.writeFileSync(join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n");
  fs.writeFileSync(join(root, "etc/group"), "root:x:0:\nstaff:x:50:app\n");
  fs.symlinkSync("/etc", join(root, "abs"));
  fs.symlinkSync("../../../../..", join(root, "up"));
  fs.symlinkSync("/nonexistent/shadow", join(root, "dangling"));
  assert.equal(resolveInRoot(root, "/abs/passwd", true), join(root, "etc/passwd"));
  assert.equal(resolveInRoot(root, "/up/etc/passwd", true), join(root, "etc/passwd"), "../ above the root stays at the root");
  assert.equal(resolveInRoot(root, "/../../etc/passwd"), join(root, "etc/passwd"));
  assert.equal(resolveInRoot(root, "/abs", false), join(root, "abs"), "the last link is kept unless asked to follow");
  assert.equal(readInRoot(root, "/up/etc/passwd")?.split("\n")[0], "root:x:0:0:root:/root:/bin/sh");
  assert.equal(readInRoot(root, "/dangling"), undefined, "never the host's file");
  fs.symlinkSync("loop", join(root, "loop"));
  assert.equal(readInRoot(root, "/loop"), undefined);
  assert.deepEqual(resolveUser(root, "app"), { uid: 1000, gid: 1000, additionalGids: [50], home: "/home/app" });
  assert.deepEqual(resolveUser(root, "1000:staff"), { uid: 1000, gid: 50, additionalGids: [], home: "/home/app" });
  assert.throws(() => resolveUser(root, "nobody-here"), /unable to find user nobody-here/);
});

test("docker's size strings and -v specifications", () => {
  assert.equal(parseSize("1024"), 1024);
  assert.equal(parseSize("30m"), 30 * 1024 * 1024);
  assert.equal(parseSize("1.5g"), 1.5 * 1024 ** 3);
  assert.equal(parseSize("64MB"), 64 * 1024 * 1024);
  assert.throws(() => parseSize("12q"), /invalid size: '12q'/);
  assert.deepEqual(parseBind("/host:/ctr:ro"), { Type: "bind", Source: "/host", Target: "/ctr", ReadOnly: true });
  assert.deepEqual(parseBind("data:/var/lib/data"), { Type: "volume", Source: "data", Target: "/var/lib/data", ReadOnly: false });
  assert.deepEqual(parseBind("/anon"), { Type: "volume", Target: "/anon" });
  assert.throws(() => parseBind("/a:relative"), /mount path must be absolute/);
  assert.throws(() => parseBind("/a:/b:bogus"), /invalid mode: bogus/);
});

test("the events log is rotated at its size limit, and read across the rotation", async () => {
  const { EventLog } = await import("../src/engine/index.js");
  const root = tempDir("berth-events-");
  const log = new EventLog(root, 2000);
  for (let i = 0; i < 40; i++) log.emit("container", "start", `id${i}`);
  assert.ok(fs.existsSync(join(root, "events.log.1")), "rotated");
  assert.ok(fs.statSync(join(root, "events.log")).size <= 2000 + 400);
  const seen: string[] = [];
  for await (const e of log.read({})) seen.push(e.Actor.ID);
  // what the two files hold, oldest first, without gaps between them
  const first = Number(seen[0]!.slice(2));
  assert.deepEqual(seen, Array.from({ length: 40 - first }, (_, i) => `id${first + i}`));
  assert.ok(seen.length > 5);
  fs.rmSync(root, { recursive: true });
});

test("berth's path join gives path.join's result for every shape of part", async () => {
  const { join: fastJoin } = await import("../src/common/path.js");
  const parts = ["/", "", ".", "..", "a", "/a", "a/", "a//b", "./a", "a/.", "a/..", "../a", ".a", "..a", "a..", "...", "/var/lib/berth", "x/./y", "é", "a b"];
  let checked = 0;
  for (const p of parts)
    for (const q of parts)
      for (const r of ["", "c", "..", "c/"]) {
        assert.equal(fastJoin(p, q, r), join(p, q, r), JSON.stringify([p, q, r]));
        checked++;
      }
  assert.equal(fastJoin(), join());
  assert.ok(checked > 1000);
});

test("logs are streamed: --tail reads from the end across rotated files, --since/--until filter, a partial last record waits", async () => {
  const { readLogs } = await import("../src/engine/logs.js");
  const dir = tempDir("berth-img-");
  const log = join(dir, "c-json.log");
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  const rec = (i: number) => JSON.stringify({ log: `line ${i}\n`, stream: i % 2 ? "stderr" : "stdout", time: new Date(t0 + i * 1000).toISOString() }) + "\n";
  // three files, oldest first: .2 holds 0..99, .1 100..199, the current one 200..299 and half a record
  fs.writeFileSync(`${log}.2`, Array.from({ length: 100 }, (_, i) => rec(i)).join(""));
  fs.writeFileSync(`${log}.1`, Array.from({ length: 100 }, (_, i) => rec(100 + i)).join(""));
  fs.writeFileSync(log, Array.from({ length: 100 }, (_, i) => rec(200 + i)).join("") + rec(300).slice(0, 20));
  const read = async (opts: Parameters<typeof readLogs>[2]) => {
    const out: string[] = [];
    for await (const e of readLogs(log, 3, opts)) out.push(e.line.trim());
    return out;
  };
  assert.equal((await read({})).length, 300);
  assert.deepEqual(await read({ tail: 3 }), ["line 297", "line 298", "line 299"]);
  assert.deepEqual((await read({ tail: 150 }))[0], "line 150", "the tail reaches into a rotated file");
  assert.equal((await read({ tail: 1000 })).length, 300);
  assert.deepEqual(await read({ tail: 0 }), []);
  const ns = (i: number) => BigInt(t0 + i * 1000) * 1_000_000n;
  assert.deepEqual(await read({ sinceNs: ns(298) }), ["line 298", "line 299"]);
  assert.deepEqual(await read({ sinceNs: ns(10), untilNs: ns(12) }), ["line 10", "line 11", "line 12"]);
  assert.deepEqual(await read({ untilNs: ns(50), tail: 2 }), ["line 49", "line 50"], "tail counts what passes the filter");
  // rotated files compressed (compress=true, the local driver): read the same
  for (const n of [1, 2]) {
    fs.writeFileSync(`${log}.${n}.gz`, gzipSync(fs.readFileSync(`${log}.${n}`)));
    fs.rmSync(`${log}.${n}`);
  }
  assert.equal((await read({})).length, 300);
  assert.deepEqual((await read({ tail: 150 }))[0], "line 150", "the tail reaches into a compressed rotated file");
  assert.deepEqual((await read({ tail: 250 }))[0], "line 50");
  assert.deepEqual(await read({ sinceNs: ns(10), untilNs: ns(12) }), ["line 10", "line 11", "line 12"]);
});

test("logs --tail of a log larger than the memory it may take reads only its end", async () => {
  const { readLogs } = await import("../src/engine/logs.js");
  const log = join(tempDir("berth-img-"), "big-json.log");
  const line = JSON.stringify({ log: "x".repeat(1000) + "\n", stream: "stdout", time: "2026-01-01T00:00:00.000000000Z" }) + "\n";
  const block = line.repeat(1024); // ~1 MB
  const fd = fs.openSync(log, "w");
  for (let i = 0; i < 128; i++) fs.writeSync(fd, block);
  fs.writeSync(fd, JSON.stringify({ log: "the last line\n", stream: "stdout", time: "2026-01-01T00:00:01.000000000Z" }) + "\n");
  fs.closeSync(fd);
  global.gc?.();
  const before = process.memoryUsage().rss;
  const out: string[] = [];
  for await (const e of readLogs(log, 1, { tail: 1 })) out.push(e.line);
  assert.deepEqual(out, ["the last line\n"]);
  assert.ok(process.memoryUsage().rss - before < 32 << 20, `tail of a 128 MB log took ${(process.memoryUsage().rss - before) >> 20} MB`);
  let n = 0;
  for await (const _e of readLogs(log, 1, {})) n++;
  assert.equal(n, 128 * 1024 + 1);
  assert.ok(process.memoryUsage().rss - before < 96 << 20, `streaming a 128 MB log took ${(process.memoryUsage().rss - before) >> 20} MB`);
});

test("detach keys: what comes before them is passed on, the keys are not, a partial match held across chunks", () => {
  const run = (keys: string, chunks: string[]) => {
    const out: string[] = [];
    let detached = false;
    const feed = detachWatcher(detachBytes(keys), (b) => out.push(b.toString("latin1")), () => (detached = true));
    for (const c of chunks) feed(Buffer.from(c, "latin1"));
    return { out: out.join(""), detached };
  };
  assert.deepEqual(run("ctrl-p,ctrl-q", ["ls\r", "\x10\x11", "after"]), { out: "ls\r", detached: true });
  assert.deepEqual(run("ctrl-p,ctrl-q", ["ab\x10", "\x11cd"]), { out: "ab", detached: true }, "split across chunks");
  assert.deepEqual(run("ctrl-p,ctrl-q", ["a\x10b", "\x10", "c"]), { out: "a\x10b\x10c", detached: false }, "a held prefix that was data after all");
  assert.deepEqual(run("ctrl-p,ctrl-q", ["\x10\x10\x11"]), { out: "\x10", detached: true });
  assert.deepEqual(run("ctrl-a,x", ["1\x01y\x01x"]), { out: "1\x01y", detached: true });
  assert.throws(() => detachBytes("ctrl-pp"), /invalid detach keys/);
});

test("a log follow ends when its reader goes away (the signal), though the container runs on and writes nothing", async () => {
  const { readLogs } = await import("../src/engine/logs.js");
  const dir = tempDir("berth-follow-");
  const log = join(dir, "c-json.log");
  fs.writeFileSync(log, JSON.stringify({ log: "first\n", stream: "stdout", time: new Date().toISOString() }) + "\n");
  const ac = new AbortController();
  const seen: string[] = [];
  const reading = (async () => {
    for await (const e of readLogs(log, 1, { follow: true, running: async () => true, signal: ac.signal })) seen.push(e.line);
    return "ended";
  })();
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(seen, ["first\n"]);
  ac.abort();
  const outcome = await Promise.race([reading, new Promise((r) => setTimeout(() => r("still following"), 2000))]);
  assert.equal(outcome, "ended");
});
