/**
 * `berth system service [URI]`: serves the Docker Engine API until stopped. Run as plain Node with
 * its JIT (a long-running server), not from the CLI's start-up snapshot. Containers keep running
 * when the service stops or is killed (their monitors are their parents); a restarted service
 * serves them again, and at start it starts the containers whose restart policy says so, as
 * dockerd does after a reboot.
 */
import * as fs from "node:fs";
import * as https from "node:https";
import type * as http from "node:http";
import { dirname } from "node:path";
import { spawnSync } from "node:child_process";
import { connect } from "node:net";
import { BerthError, errorMessage, invalid } from "../common/errors.js";
import { Engine } from "../engine/index.js";
import { createServer } from "./server.js";

export interface ServiceOptions {
  uri: string;
  /** Exit after this many seconds without a request or an open connection; 0: never. */
  idleSeconds: number;
  root?: string;
  tls?: { verify: boolean; ca?: string; cert: string; key: string };
  /** tcp:// on a loopback address without TLS: the user's explicit choice. */
  insecureLoopback?: boolean;
}

export const DEFAULT_URI = "unix:///run/berth/berth.sock";

function parseArgs(argv: string[]): ServiceOptions {
  const o: ServiceOptions = { uri: DEFAULT_URI, idleSeconds: 0 };
  let tlsverify = false;
  const tls: { ca?: string; cert?: string; key?: string } = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const eq = a.indexOf("=");
      if (eq > 0) return a.slice(eq + 1);
      const v = argv[++i];
      if (v === undefined) throw invalid(`flag needs an argument: ${a}`);
      return v;
    };
    const name = a.replace(/=.*$/, "");
    if (name === "--time" || name === "-t") o.idleSeconds = Number(value());
    else if (name === "--root") o.root = value();
    else if (name === "--tlsverify") tlsverify = true;
    else if (name === "--tlscacert") tls.ca = value();
    else if (name === "--tlscert") tls.cert = value();
    else if (name === "--tlskey") tls.key = value();
    else if (name === "--insecure-loopback") o.insecureLoopback = true;
    else if (a.startsWith("-")) throw invalid(`unknown flag: ${a}`);
    else o.uri = a;
  }
  if (!Number.isFinite(o.idleSeconds) || o.idleSeconds < 0) throw invalid("--time takes a number of seconds (0: never exit)");
  if (tls.cert || tls.key || tlsverify) {
    if (!tls.cert || !tls.key) throw invalid("--tlscert and --tlskey are both needed for TLS");
    if (tlsverify && !tls.ca) throw invalid("--tlsverify needs --tlscacert (the CA that signs client certificates)");
    o.tls = { verify: tlsverify, cert: tls.cert, key: tls.key, ...(tls.ca ? { ca: tls.ca } : {}) };
  }
  return o;
}

/** The group that may use the socket: docker's when it exists (tools expect it), else berth's, else root's. */
function socketGroup(): number {
  for (const name of ["docker", "berth"]) {
    const r = spawnSync("getent", ["group", name], { encoding: "utf8" });
    if (r.status === 0) return Number(r.stdout.split(":")[2]);
  }
  return 0;
}

/** A stale socket file (nobody listening) is removed; a live one is someone else's: refused. */
async function clearStaleSocket(path: string): Promise<void> {
  const st = fs.lstatSync(path, { throwIfNoEntry: false });
  if (!st) return;
  if (!st.isSocket()) throw invalid(`${path} exists and is not a socket`);
  const live = await new Promise<boolean>((res) => {
    const s = connect(path);
    s.once("connect", () => (s.destroy(), res(true)));
    s.once("error", () => res(false));
  });
  if (live) throw new BerthError("AlreadyExists", `${path}: another server is listening there`);
  fs.unlinkSync(path);
}

/** Listens as asked; resolves once the server accepts connections. */
async function listen(server: http.Server, o: ServiceOptions): Promise<() => void> {
  const u = new URL(o.uri);
  if (u.protocol === "unix:") {
    const path = u.pathname;
    fs.mkdirSync(dirname(path), { recursive: true });
    await clearStaleSocket(path);
    // made under a umask that lets nobody else in, then opened to the group (as dockerd does)
    const old = process.umask(0o117);
    try {
      await new Promise<void>((res, rej) => server.once("error", rej).listen(path, () => res()));
    } finally {
      process.umask(old);
    }
    if (process.getuid?.() === 0) fs.chownSync(path, 0, socketGroup());
    fs.chmodSync(path, 0o660);
    return () => fs.rmSync(path, { force: true });
  }
  if (u.protocol === "fd:") {
    // socket activation (contrib/systemd/berth.socket): the listening socket is fd 3 (LISTEN_FDS)
    const fd = Number(process.env.BERTH_SOCKET_FD ?? (process.env.LISTEN_FDS ? 3 : NaN));
    if (!Number.isInteger(fd)) throw invalid("fd:// needs a socket from systemd (LISTEN_FDS): start it through berth.socket");
    await new Promise<void>((res, rej) => server.once("error", rej).listen({ fd }, () => res()));
    return () => {};
  }
  if (u.protocol === "tcp:") {
    const host = u.hostname.replace(/^\[|\]$/g, "");
    const loopback = host === "localhost" || host === "::1" || /^127\./.test(host);
    if (!o.tls && !(loopback && o.insecureLoopback))
      throw invalid(`refusing to serve the API on ${o.uri} without TLS: anyone who reaches it controls this host as root. Use --tlsverify --tlscacert --tlscert --tlskey, or a loopback address with --insecure-loopback`);
    await new Promise<void>((res, rej) => server.once("error", rej).listen(Number(u.port || 2375), host, () => res()));
    return () => {};
  }
  throw invalid(`unsupported URI ${o.uri}: unix:///path, tcp://host:port or fd:// (systemd socket activation)`);
}

export async function main(argv: string[]): Promise<number> {
  let o: ServiceOptions;
  try {
    o = parseArgs(argv);
  } catch (e) {
    process.stderr.write(`Error: ${errorMessage(e)}\n`);
    return 125;
  }
  const engine = new Engine(o.root ? { root: o.root } : {});
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  let server: http.Server = createServer(engine, { log });
  if (o.tls) {
    const tlsServer = https.createServer({ cert: fs.readFileSync(o.tls.cert), key: fs.readFileSync(o.tls.key), ...(o.tls.ca ? { ca: fs.readFileSync(o.tls.ca) } : {}), requestCert: o.tls.verify, rejectUnauthorized: o.tls.verify });
    // the same handlers on a TLS listener
    for (const ev of ["request", "upgrade"] as const) for (const l of server.listeners(ev)) tlsServer.on(ev, l as (...a: unknown[]) => void);
    server = tlsServer as unknown as http.Server;
  }
  let cleanup: () => void;
  try {
    cleanup = await listen(server, o);
  } catch (e) {
    process.stderr.write(`Error: ${errorMessage(e)}\n`);
    return 1;
  }
  log(`berth API listening on ${o.uri}`);
  const stop = () => {
    cleanup();
    server.close();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  await startRestartable(engine, log);
  if (o.idleSeconds > 0) {
    // idle: no request for idleSeconds and no connection open (a followed log or event stream counts as busy)
    let open = 0;
    let last = Date.now();
    server.on("connection", (s) => {
      open++;
      last = Date.now();
      s.once("close", () => {
        open--;
        last = Date.now();
      });
    });
    server.on("request", () => (last = Date.now()));
    setInterval(() => {
      if (open === 0 && Date.now() - last >= o.idleSeconds * 1000) stop();
    }, 250).unref();
  }
  await new Promise(() => {}); // serve until a signal
  return 0;
}

/** What dockerd does when it starts: containers with restart policy always, or unless-stopped and not stopped by a user, are started. */
async function startRestartable(engine: Engine, log: (l: string) => void): Promise<void> {
  for (const v of await engine.list().catch(() => [])) {
    const p = v.rec.HostConfig.RestartPolicy?.Name;
    if (v.state.Running || v.state.Restarting) continue;
    if (p === "always" || (p === "unless-stopped" && !v.state.StoppedByUser)) {
      try {
        await engine.start(v.rec.Id);
        log(`started ${v.rec.Name.slice(1)} (restart policy ${p})`);
      } catch (e) {
        log(`could not start ${v.rec.Name.slice(1)}: ${errorMessage(e)}`);
      }
    }
  }
}

// run directly (node dist/src/api/main.js, or the bundle)
const direct = typeof require !== "undefined" ? require.main === module : import.meta.url === `file://${process.argv[1]}`;
if (direct) void main(process.argv.slice(2)).then((code) => process.exit(code));
