/** The embedded DNS's relay to upstream resolvers: only the resolver asked can answer (loopback only). */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createSocket, type Socket } from "node:dgram";
import { relay } from "../src/network/dns.js";

/** A query for `name` (type A) with this id. */
function query(id: number, name: string): Buffer {
  const header = Buffer.alloc(12);
  header.writeUInt16BE(id, 0);
  header.writeUInt16BE(0x0100, 2); // recursion desired
  header.writeUInt16BE(1, 4);
  const labels = name.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** The reply to `q` with one A record `addr`, under `id` (default: the query's). */
function reply(q: Buffer, addr: string, id = q.readUInt16BE(0)): Buffer {
  const r = Buffer.from(q);
  r.writeUInt16BE(id, 0);
  r.writeUInt16BE(0x8180, 2);
  r.writeUInt16BE(1, 6);
  const rr = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ...addr.split(".").map(Number)]);
  return Buffer.concat([r, rr]);
}

const bind = (s: Socket) => new Promise<number>((res) => s.bind(0, "127.0.0.1", () => res(s.address().port)));
const answerOf = (r: Buffer | undefined) => (r ? [...r.subarray(r.length - 4)].join(".") : undefined);

test("a forged answer from another port, a wrong id or another question is dropped; the resolver's is taken", async () => {
  const upstream = createSocket("udp4");
  const forger = createSocket("udp4");
  const upstreamPort = await bind(upstream);
  await bind(forger);
  const seen: number[] = [];
  upstream.on("message", (q, from) => {
    seen.push(q.readUInt16BE(0));
    // the forger races the resolver: from the wrong port, then with a wrong id, then with another question
    forger.send(reply(q, "6.6.6.6"), from.port, from.address);
    upstream.send(reply(q, "6.6.6.7", q.readUInt16BE(0) ^ 0xffff), from.port, from.address);
    upstream.send(reply(query(q.readUInt16BE(0), "evil.test"), "6.6.6.8"), from.port, from.address);
    setTimeout(() => upstream.send(reply(q, "192.0.2.10"), from.port, from.address), 20);
  });
  try {
    const q = query(0x1234, "example.test");
    const r = await relay(q, [{ address: "127.0.0.1", port: upstreamPort }], 2000);
    assert.equal(answerOf(r), "192.0.2.10", "the resolver's own answer is relayed");
    assert.equal(r!.readUInt16BE(0), 0x1234, "under the client's id");
    assert.equal(seen.length, 1);
    assert.notEqual(seen[0], 0x1234, "the upstream query carries an id of the relay's own");
  } finally {
    upstream.close();
    forger.close();
  }
});

test("only forged answers: the relay times out with none", async () => {
  const upstream = createSocket("udp4");
  const forger = createSocket("udp4");
  const upstreamPort = await bind(upstream);
  await bind(forger);
  upstream.on("message", (q, from) => forger.send(reply(q, "6.6.6.6"), from.port, from.address));
  try {
    assert.equal(await relay(query(7, "example.test"), [{ address: "127.0.0.1", port: upstreamPort }], 300), undefined);
  } finally {
    upstream.close();
    forger.close();
  }
});
