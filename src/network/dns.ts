/**
 * berth's embedded DNS for user-defined networks: one small server per store, started on demand by
 * the first container on such a network and gone when none remains. It listens on each network's
 * gateway address (port 53, UDP) — containers find it in their /etc/resolv.conf — and answers for
 * the containers on the same network (name, short id, --network-alias) from the network store.
 * Other names are relayed to the host's own resolvers, as docker's embedded DNS does.
 */
import type * as Dgram from "node:dgram";
import { builtin } from "../common/builtin.js";
import * as fs from "node:fs";
import { ip6ToBig } from "./addr.js";
import type { NetworkStore } from "./store.js";

const TTL = 600;

export interface Question {
  name: string;
  type: number;
  end: number;
}

/** The first question of a query; undefined for a message that is not one berth can answer. */
export function readQuestion(msg: Buffer): Question | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let i = 12;
  while (i < msg.length) {
    const len = msg[i]!;
    if (len === 0) {
      i++;
      break;
    }
    if (len > 63 || i + 1 + len > msg.length) return undefined;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString("latin1"));
    i += 1 + len;
  }
  if (i + 4 > msg.length) return undefined;
  return { name: labels.join(".").toLowerCase(), type: msg.readUInt16BE(i), end: i + 4 };
}

/** The answer to a query: the question echoed, and A records for `addresses`. */
export function answer(query: Buffer, q: Question, addresses: string[], rcode = 0): Buffer {
  const header = Buffer.alloc(12);
  query.copy(header, 0, 0, 2);
  const rd = query[2]! & 1;
  header[2] = 0x80 | (query[2]! & 0x78) | 0x04 | rd; // QR, opcode, AA, RD
  header[3] = 0x80 | rcode; // RA
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(addresses.length, 6);
  const question = query.subarray(12, q.end);
  const records = addresses.map((a) => {
    const v6 = a.includes(":");
    const r = Buffer.alloc(v6 ? 28 : 16);
    r.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
    r.writeUInt16BE(v6 ? 28 : 1, 2); // AAAA or A
    r.writeUInt16BE(1, 4); // IN
    r.writeUInt32BE(TTL, 6);
    r.writeUInt16BE(v6 ? 16 : 4, 10);
    if (v6) {
      const n = ip6ToBig(a);
      for (let i = 0; i < 16; i++) r[12 + i] = Number((n >> BigInt(8 * (15 - i))) & 0xffn);
    } else a.split(".").forEach((x, i) => (r[12 + i] = Number(x)));
    return r;
  });
  return Buffer.concat([header, question, ...records]);
}

/** The addresses (IPv4 and IPv6) of `name` on the network whose gateway is `gateway`; undefined when unknown. */
export function lookup(store: NetworkStore, gateway: string, name: string): string[] | undefined {
  const doc = store.read();
  const net = doc.networks.find((n) => n.IPAM.Config[0]?.Gateway === gateway);
  if (!net) return undefined;
  const hits = doc.endpoints.filter((e) => e.Network === net.Id && (e.DNSNames ?? []).some((n) => n.toLowerCase() === name || `${n.toLowerCase()}.${net.Name.toLowerCase()}` === name));
  return hits.length ? hits.flatMap((e) => [e.IPAddress, ...(e.GlobalIPv6Address ? [e.GlobalIPv6Address] : [])]) : undefined;
}

function upstreams(): string[] {
  try {
    return fs
      .readFileSync("/etc/resolv.conf", "utf8")
      .split("\n")
      .map((l) => /^\s*nameserver\s+([\d.]+)\s*$/.exec(l)?.[1])
      .filter((x): x is string => !!x);
  } catch {
    // no resolv.conf: no upstream servers, names outside berth's fail
    return [];
  }
}

/**
 * Serve until no user network has an endpoint for `idleMs`. `ready` gets the gateways served,
 * after every look at the store.
 */
export function serveDns(store: NetworkStore, opts: { idleMs?: number; ready?: (gateways: string[]) => void } = {}): Promise<void> {
  const sockets = new Map<string, Dgram.Socket>();
  const idleMs = opts.idleMs ?? 5000;
  let idleSince = Date.now();
  return new Promise((resolve) => {
    const sync = () => {
      const doc = store.read();
      const wanted = new Set(doc.networks.filter((n) => n.Options["com.docker.network.bridge.default_bridge"] !== "true").map((n) => n.IPAM.Config[0]!.Gateway));
      for (const [gw, s] of sockets)
        if (!wanted.has(gw)) {
          s.close();
          sockets.delete(gw);
        }
      const pending: Array<Promise<void>> = [];
      for (const gw of wanted) {
        if (sockets.has(gw)) continue;
        const s = builtin<typeof Dgram>("node:dgram").createSocket({ type: "udp4", reuseAddr: true });
        sockets.set(gw, s);
        s.on("message", (msg, from) => void handle(s, gw, msg, from));
        pending.push(
          new Promise((res) => {
            s.once("error", () => {
              sockets.delete(gw); // the bridge is not up yet: the next sync tries again
              res();
            });
            s.bind(53, gw, () => res());
          }),
        );
      }
      const inUse = doc.endpoints.some((e) => doc.networks.find((n) => n.Id === e.Network && n.Options["com.docker.network.bridge.default_bridge"] !== "true"));
      if (inUse) idleSince = Date.now();
      return Promise.all(pending);
    };
    const handle = async (s: Dgram.Socket, gw: string, msg: Buffer, from: Dgram.RemoteInfo) => {
      const q = readQuestion(msg);
      if (!q) return;
      const hit = lookup(store, gw, q.name.replace(/\.$/, ""));
      if (hit) return s.send(answer(msg, q, hit.filter((a) => q.type === 255 || (q.type === 1 && !a.includes(":")) || (q.type === 28 && a.includes(":")))), from.port, from.address);
      const reply = await relay(msg);
      s.send(reply ?? answer(msg, q, [], 2), from.port, from.address); // SERVFAIL when no upstream answers
    };
    const synced = () => opts.ready?.([...sockets.keys()]);
    void sync().then(synced);
    const timer = setInterval(() => {
      void sync().then(synced);
      if (Date.now() - idleSince > idleMs) {
        clearInterval(timer);
        for (const s of sockets.values()) s.close();
        resolve();
      }
    }, 500);
  });
}

/**
 * Ask the host's resolvers; the first genuine answer wins. The query goes out under an id of our
 * own choosing, and a datagram counts as the answer only when it comes from a resolver asked (its
 * address and port 53), is a response, and carries that id and the question asked: anyone else
 * who can reach the relay's socket cannot slip in a forged answer. The client's id is put back.
 */
export function relay(msg: Buffer, servers: { address: string; port: number }[] = upstreams().map((address) => ({ address, port: 53 })), timeoutMs = 3000): Promise<Buffer | undefined> {
  if (!servers.length || msg.length < 12) return Promise.resolve(undefined);
  const query = Buffer.from(msg);
  const id = builtin<typeof import("node:crypto")>("node:crypto").randomBytes(2);
  id.copy(query, 0);
  const question = questionBytes(query);
  return new Promise((resolve) => {
    const s = builtin<typeof Dgram>("node:dgram").createSocket("udp4");
    const done = (r: Buffer | undefined) => {
      clearTimeout(t);
      s.close();
      resolve(r);
    };
    const t = setTimeout(() => done(undefined), timeoutMs);
    s.on("message", (r, from) => {
      if (!servers.some((x) => x.address === from.address && x.port === from.port)) return;
      if (r.length < 12 || r[0] !== id[0] || r[1] !== id[1] || !(r[2]! & 0x80)) return;
      if (question && !questionBytes(r)?.equals(question)) return;
      msg.copy(r, 0, 0, 2); // the client's own id
      done(r);
    });
    s.on("error", () => done(undefined));
    for (const ns of servers) s.send(query, ns.port, ns.address);
  });
}

/** The question section's bytes (name, type, class) of a message with one question, lower-cased. */
function questionBytes(msg: Buffer): Buffer | undefined {
  if (msg.readUInt16BE(4) !== 1) return undefined;
  let i = 12;
  while (i < msg.length && msg[i] !== 0) {
    if (msg[i]! & 0xc0) return undefined; // no compression in a question we sent
    i += msg[i]! + 1;
  }
  if (i + 5 > msg.length) return undefined;
  return Buffer.from(msg.subarray(12, i + 5).toString("latin1").toLowerCase(), "latin1");
}
