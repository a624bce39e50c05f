// Run by scripts/snapshot-entry.cjs while berth's start-up snapshot is made: calls the Node
// built-ins berth's commands use (sync fs, buffers, hashes, a unix socket carrying data both ways,
// timers), so their functions are compiled now and their bytecode is in the snapshot. Without
// this, every start compiled ~180 functions of node:net, streams, fs and buffer again (~4 ms of a
// `berth run`). Only Node's own objects are touched, in a temporary directory removed at the end:
// nothing of berth's is initialised here, and no handle stays open (a snapshot cannot hold one).
"use strict";
const fs = require("node:fs");
const net = require("node:net");
const os = require("node:os");
const path = require("node:path");
const crypto = require("node:crypto");

module.exports = function warmUp() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "berth-snapshot-"));
  const file = path.join(dir, "a", "b.json");
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, JSON.stringify({ warm: "é" }));
  fs.appendFileSync(file, "\n");
  const fd = fs.openSync(`${file}.tmp`, "w", 0o644);
  fs.writeSync(fd, Buffer.from("x"));
  fs.writeSync(fd, "y");
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, `${file}.2`);
  fs.readFileSync(file, "utf8");
  fs.readFileSync(file).toString("latin1");
  const st = fs.statSync(file);
  st.isFile() || st.isDirectory() || st.isSymbolicLink();
  fs.statSync(path.join(dir, "missing"), { throwIfNoEntry: false });
  fs.lstatSync(file).isSymbolicLink();
  fs.realpathSync(file);
  fs.access(file, () => {});
  fs.existsSync(file);
  fs.accessSync(file);
  for (const d of fs.readdirSync(dir, { withFileTypes: true })) d.isDirectory() || d.isFile();
  fs.readdirSync(path.dirname(file));
  fs.readlinkSync("/proc/self/exe");
  fs.unlinkSync(`${file}.2`);
  try {
    fs.readFileSync(path.join(dir, "missing"));
  } catch {}
  const b = Buffer.concat([Buffer.alloc(4), Buffer.allocUnsafe(4), Buffer.allocUnsafeSlow(4), Buffer.from("abc", "latin1")]);
  b.subarray(1).toString("hex");
  b.slice(1, 3).toString("utf8", 0, 1);
  b.toString("latin1", 0, 2);
  b.readUInt32LE(0) + b.readUInt32BE(4);
  Buffer.byteLength("é");
  crypto.createHash("sha256").update("x").digest("hex");
  crypto.randomBytes(8).toString("hex");
  os.hostname();
  os.homedir();
  os.release();
  os.userInfo();
  process.hrtime.bigint();
  process.kill(process.pid, 0);
  // a pipe read as a stream (how berth reads its helper's reports); only a head start, like all
  // of this: without mkfifo the snapshot is made all the same
  try {
    const fifo = path.join(dir, "fifo");
    require("node:child_process").execFileSync("mkfifo", [fifo]);
    new net.Socket({ fd: fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK), readable: true, writable: false }).destroy();
  } catch {}
  // a unix socket, both ways: what attaching to a container's monitor does
  const sock = path.join(dir, "s");
  const server = net.createServer((c) => {
    c.on("data", (d) => c.end(d));
  });
  server.on("error", () => fs.rmSync(dir, { recursive: true, force: true }));
  server.listen(sock, () => {
    const client = net.connect(sock);
    client.setNoDelay?.(true);
    client.on("connect", () => client.write(Buffer.from("ping")));
    client.on("data", () => {});
    client.on("end", () => client.end());
    client.on("close", () =>
      server.close(() => {
        clearTimeout(setTimeout(() => {}, 1));
        setImmediate(() => fs.rmSync(dir, { recursive: true, force: true }));
      }),
    );
  });
};
