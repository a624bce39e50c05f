/**
 * Networking as a docker user sees it: the seeds' `-p 8081:80` (busybox httpd) reached from the
 * host's loopback; a server reached by name (and alias) from another container on a user network;
 * UDP; port conflicts; the network modes; bad input; and nothing left behind — veths, addresses,
 * rules — also after a crash. Traffic stays on loopback and inside the namespaces made here.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import * as dgram from "node:dgram";
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { httpGet, project, rootSkip, tempDir, waitFor } from "./helpers.js";
import { berth, berthEnv, importBusybox, ok, removeNetworking, type BerthEnv } from "./image-helpers.js";
import { NetworkStore, processStart, releaserHolder } from "../src/network/index.js";

let env: BerthEnv;
let runtimeRoot: string;
let www: string;
const b = (args: string[], input?: string) => berth(env, args, { extraEnv: { BERTH_RUNTIME_ROOT: runtimeRoot }, ...(input !== undefined ? { input } : {}) });
const nftMissing = spawnSync("sh", ["-c", "command -v nft"]).status !== 0 ? "nft is not installed (Debian's nftables; ./install.sh installs it)" : false;
const links = () => fs.readdirSync("/sys/class/net");
/** This store's nftables table and default bridge (named after its root: see src/network). */
const tag = () => createHash("sha256").update(env.root).digest("hex").slice(0, 6);
const portElements = () => spawnSync("nft", ["list", "table", "ip", `berth_${tag()}`], { encoding: "utf8" }).stdout.match(/elements = \{[^}]*\}/g) ?? [];


/** A free TCP/UDP port on the host's loopback (the suite must not collide with what runs there). */
function freePort(): number {
  const r = spawnSync(process.execPath, ["-e", "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"], { encoding: "utf8" });
  return Number(r.stdout.trim());
}

test("a port being unpublished in the background stays taken, its address unused, while its releaser runs", async () => {
  const store = new NetworkStore(tempDir("berth-netstore-"), "berthnst0");
  const id = (n: number) => String(n).repeat(64);
  const port = freePort();
  const want = [{ proto: "tcp" as const, hostIp: "127.0.0.1", hostPort: port, containerPort: 80 }];
  const a = await store.attach(id(1), [{ network: "bridge", aliases: [], names: ["one"] }], want, () => true);
  // container 1 ended: a process of ours stands in for berth-net deleting its port's element
  const releaser = spawn("sleep", ["30"], { stdio: "ignore" });
  await new Promise((r) => releaser.once("spawn", r));
  await store.releasePortsTo(id(1), releaserHolder(releaser.pid!, processStart(releaser.pid!)));
  assert.deepEqual(store.held(id(1)), { endpoints: [], ports: [] }, "the container holds nothing any more");
  // meanwhile another container does not get the address the element may still forward to
  const b2 = await store.attach(id(2), [{ network: "bridge", aliases: [], names: ["two"] }], [], () => false);
  assert.notEqual(b2.endpoints[0]!.IPAddress, a.endpoints[0]!.IPAddress);
  // and one asking for the port waits for the releaser to end, then gets it (the old binding to delete again, harmlessly)
  setTimeout(() => releaser.kill(), 100);
  const t = Date.now();
  const c3 = await store.attach(id(3), [{ network: "bridge", aliases: [], names: ["three"] }], want, () => false);
  assert.ok(Date.now() - t >= 90, "it waited for the releaser");
  assert.equal(c3.ports[0]!.HostPort, port);
  assert.ok(c3.reclaimed.some((p) => p.HostPort === port));
  assert.ok(!store.read().ports.some((p) => p.Container.startsWith("releasing:")), "the releaser's hold is gone");
});

describe("networking", { skip: rootSkip || nftMissing }, () => {
  before(() => {
    env = berthEnv();
    runtimeRoot = tempDir("berth-test-rt-");
    importBusybox(env);
    www = tempDir("berth-www-");
    fs.writeFileSync(join(www, "index.html"), "hello from berth httpd\n");
  });
  after(async () => {
    const ids = b(["ps", "-aq"]).stdout.trim().split("\n").filter(Boolean);
    if (ids.length) b(["rm", "-f", ...ids]);
    for (const n of ["appnet", "isolated", "fixed", "v6net"]) b(["network", "rm", n]);
    await removeNetworking(env, runtimeRoot);
    // the DNS server goes by itself once no container is on a user network: nothing left running
    const dnsOf = () => fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p) && (() => { try { return fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes(env.root) && fs.readFileSync(`/proc/${p}/cmdline`, "utf8").includes("internal-dns"); } catch { return false; } })());
    await waitFor(() => dnsOf().length === 0, "berth's DNS server to exit", 20_000, 100);
    // nothing of the suite's is left on the host: no table, no bridge, no veth
    assert.notEqual(spawnSync("nft", ["list", "table", "ip", `berth_${tag()}`]).status, 0, "the suite's nftables table is gone");
    assert.ok(!links().some((l) => l === `berth${tag()}` || l.startsWith("bv")), `links left: ${links().join(" ")}`);
  });

  test("run --rm -p: the port's element goes right after the run returns, and the port can be published again at once", async () => {
    const port = freePort();
    const run = () => ok(b(["run", "--rm", "-p", `127.0.0.1:${port}:80`, "busybox", "true"]));
    run();
    run(); // back to back: waits for the first run's unpublishing if it is still going
    await waitFor(() => !portElements().join(" ").includes(`. ${port} `), "the element of the port to go", 5000, 5);
    assert.deepEqual(portElements(), [], "no DNAT element is left");
  });

  test("the seeds' -p 8081:80: busybox httpd reached at 127.0.0.1 from the host; port, ps and inspect show it", async () => {
    const port = freePort();
    const id = ok(b(["run", "-d", "--name", "web", "-p", `${port}:80`, "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"])).stdout.trim();
    let body = "";
    for (let i = 0; i < 50 && !body; i++) body = await httpGet(port).catch(() => "");
    assert.equal(body, "hello from berth httpd\n");
    assert.equal(ok(b(["port", "web"])).stdout, `80/tcp -> 0.0.0.0:${port}\n`);
    assert.equal(ok(b(["port", "web", "80"])).stdout, `0.0.0.0:${port}\n`);
    assert.match(ok(b(["ps", "--format", "{{.Ports}}"])).stdout, new RegExp(`0\\.0\\.0\\.0:${port}->80/tcp`));
    const ns = JSON.parse(ok(b(["inspect", "--format", "{{json .NetworkSettings}}", "web"])).stdout);
    assert.match(ns.IPAddress, /^\d+\.\d+\.\d+\.\d+$/);
    assert.equal(ns.Networks.bridge.IPAddress, ns.IPAddress);
    // inside: eth0 with that address, a default route via the gateway, /etc/hosts names it
    const inside = ok(b(["exec", "web", "sh", "-c", "ip -4 addr show eth0; ip route; cat /etc/hosts"])).stdout;
    assert.match(inside, new RegExp(`inet ${ns.IPAddress.replace(/\./g, "\\.")}/${ns.IPPrefixLen}`));
    assert.match(inside, new RegExp(`default via ${ns.Gateway.replace(/\./g, "\\.")} dev eth0`));
    assert.match(inside, new RegExp(`^${ns.IPAddress.replace(/\./g, "\\.")}\\s+${id.slice(0, 12)}$`, "m"));
    // another container reaches it on the bridge by address
    assert.equal(ok(b(["run", "--rm", "busybox", "wget", "-qO-", `http://${ns.IPAddress}/`])).stdout, "hello from berth httpd\n");
    // stats reads the container's interface counters: the requests served show as NET I/O
    const netIO = ok(b(["stats", "--no-stream", "--format", "{{.NetIO}}", "web"])).stdout.trim();
    const [rx, tx] = netIO.split(" / ");
    assert.ok(rx !== "0B" && tx !== "0B", `NET I/O after serving requests: ${netIO}`);
    // a second container asking for the same host port: docker's error, exit 125, nothing left
    const dup = b(["run", "-p", `${port}:80`, "busybox", "true"]);
    assert.equal(dup.code, 125);
    assert.match(dup.stderr, new RegExp(`Bind for 0\\.0\\.0\\.0:${port} failed: port is already allocated`));
    assert.deepEqual(ok(b(["ps", "-aq"])).stdout.trim().split("\n"), [id.slice(0, 12)]);
    ok(b(["rm", "-f", "web"]));
    assert.equal(await httpGet(port).catch(() => "refused"), "refused", "the port is unpublished with the container");
    assert.deepEqual(portElements(), [], "no DNAT element is left");
    assert.ok(!links().some((l) => l.startsWith(`bv${id.slice(0, 10)}`)), "the veth is gone");
  });

  test("a server is reached by name and by alias from another container on a user network (berth's DNS)", () => {
    ok(b(["network", "create", "appnet"]));
    ok(b(["run", "-d", "--name", "api", "--network", "appnet", "--network-alias", "backend", "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"]));
    const r = ok(b(["run", "--rm", "--network", "appnet", "busybox", "sh", "-c", "cat /etc/resolv.conf; wget -qO- http://api/; wget -qO- http://backend/; nslookup api"]));
    const gw = JSON.parse(ok(b(["network", "inspect", "appnet"])).stdout)[0].IPAM.Config[0].Gateway;
    assert.match(r.stdout, new RegExp(`^nameserver ${gw.replace(/\./g, "\\.")}$`, "m"), "the network's DNS is the container's resolver");
    assert.equal(r.stdout.match(/hello from berth httpd/g)?.length, 2);
    const ip = ok(b(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "api"])).stdout.trim();
    assert.match(r.stdout, new RegExp(`Address:? ${ip.replace(/\./g, "\\.")}`));
    // network inspect lists it; rm of a network in use is refused, nothing changes
    const inspected = JSON.parse(ok(b(["network", "inspect", "appnet"])).stdout)[0];
    assert.deepEqual(Object.values(inspected.Containers).map((c) => (c as { Name: string }).Name), ["api"]);
    const busy = b(["network", "rm", "appnet"]);
    assert.equal(busy.code, 1);
    assert.match(busy.stderr, /has active endpoints/);
    // renamed, it is found by its new name
    ok(b(["rename", "api", "api2"]));
    assert.equal(ok(b(["run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", "http://api2/"])).stdout, "hello from berth httpd\n");
    // a stopped container connected to a network gets it when it starts
    ok(b(["create", "--name", "late", "busybox", "sleep", "100"]));
    ok(b(["network", "connect", "appnet", "late"]));
    ok(b(["start", "late"]));
    assert.deepEqual(ok(b(["exec", "late", "ls", "/sys/class/net"])).stdout.split("\n").filter(Boolean).sort(), ["eth0", "eth1", "lo"]);
    assert.equal(ok(b(["exec", "late", "wget", "-qO-", "http://api2/"])).stdout, "hello from berth httpd\n", "and resolves names on it");
    ok(b(["rm", "-f", "late"]));
    ok(b(["rm", "-f", "api2"]));
    ok(b(["network", "rm", "appnet"]));
    assert.ok(!ok(b(["network", "ls", "--format", "{{.Name}}"])).stdout.includes("appnet"));
  });

  test("udp: a published udp port delivers datagrams to the container", async () => {
    const port = freePort();
    ok(b(["run", "-d", "--name", "udp", "-p", `${port}:9999/udp`, "busybox", "/probe", "udp-echo", "9999"]));
    const s = dgram.createSocket("udp4");
    let reply = "";
    s.on("message", (m) => (reply += m));
    for (let i = 0; i < 50 && !reply; i++) {
      s.send("ping over udp\n", port, "127.0.0.1");
      await new Promise((r) => setTimeout(r, 100));
    }
    s.close();
    assert.equal(reply.split("\n")[0], "ping over udp", "the container's answer came back");
    assert.match(b(["logs", "udp"]).stdout, /ping over udp/);
    ok(b(["rm", "-f", "udp"]));
  });

  test("modes: none has only loopback, host shares the host's interfaces, container: shares another's", () => {
    assert.equal(ok(b(["run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net"])).stdout, "lo\n");
    const hostLinks = links().sort().join(" ");
    assert.equal(ok(b(["run", "--rm", "--network", "host", "busybox", "sh", "-c", "ls /sys/class/net | sort | tr '\\n' ' '"])).stdout.trim(), hostLinks);
    ok(b(["run", "-d", "--name", "first", "busybox", "sleep", "100"]));
    const ip = ok(b(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "first"])).stdout.trim();
    assert.match(ok(b(["run", "--rm", "--network", "container:first", "busybox", "ip", "-4", "addr", "show", "eth0"])).stdout, new RegExp(`inet ${ip.replace(/\./g, "\\.")}/`));
    ok(b(["rm", "-f", "first"]));
  });

  test("--ip, --mac-address, --add-host, --dns on a network with --subnet and --gateway", () => {
    ok(b(["network", "create", "--subnet", "10.213.77.0/24", "--gateway", "10.213.77.254", "fixed"]));
    const r = ok(b(["run", "--rm", "--network", "fixed", "--ip", "10.213.77.50", "--mac-address", "02:aa:bb:cc:dd:ee", "--add-host", "db.local:10.1.2.3", "--dns", "10.213.77.254", "--hostname", "box", "busybox", "sh", "-c", "ip addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf"])).stdout;
    assert.match(r, /inet 10\.213\.77\.50\/24/);
    assert.match(r, /link\/ether 02:aa:bb:cc:dd:ee/);
    assert.match(r, /default via 10\.213\.77\.254/);
    assert.match(r, /^10\.1\.2\.3\s+db\.local$/m);
    assert.match(r, /^10\.213\.77\.50\s+box$/m);
    assert.match(r, /^nameserver 10\.213\.77\.254$/m);
    // bad input: a clear error, nothing half-made
    const outside = b(["run", "--rm", "--network", "fixed", "--ip", "10.9.9.9", "busybox", "true"]);
    assert.equal(outside.code, 125);
    assert.match(outside.stderr, /no configured subnet contains IP address 10\.9\.9\.9/);
    const overlap = b(["network", "create", "--subnet", "10.213.77.128/25", "other"]);
    assert.equal(overlap.code, 1);
    assert.match(overlap.stderr, /Pool overlaps with other one on this address space/);
    const unknown = b(["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert.equal(unknown.code, 125);
    assert.match(unknown.stderr, /network nope not found/);
    const badSubnet = b(["network", "create", "--subnet", "10.0.0.0/33", "bad"]);
    assert.equal(badSubnet.code, 1);
    assert.match(badSubnet.stderr, /invalid subnet/);
    assert.equal(ok(b(["ps", "-aq"])).stdout, "", "no container was left by the failures");
    ok(b(["network", "rm", "fixed"]));
  });

  test("--ip-range hands out addresses from a part of the subnet, --aux-address ones are never handed out; inspect shows both", () => {
    ok(b(["network", "create", "--subnet", "10.213.78.0/24", "--ip-range", "10.213.78.128/28", "--aux-address", "router=10.213.78.129", "ranged"]));
    try {
      const ipam = JSON.parse(ok(b(["network", "inspect", "-f", "{{json .IPAM.Config}}", "ranged"])).stdout);
      assert.deepEqual(ipam, [{ Subnet: "10.213.78.0/24", Gateway: "10.213.78.1", IPRange: "10.213.78.128/28", AuxiliaryAddresses: { router: "10.213.78.129" } }]);
      const first = ok(b(["run", "--rm", "--network", "ranged", "busybox", "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'"])).stdout.trim();
      assert.equal(first, "inet 10.213.78.128", "the range's first address");
      ok(b(["run", "-d", "--name", "ranged-1", "--network", "ranged", "busybox", "sleep", "60"]));
      const second = ok(b(["inspect", "-f", "{{.NetworkSettings.Networks.ranged.IPAddress}}", "ranged-1"])).stdout.trim();
      const third = ok(b(["run", "--rm", "--network", "ranged", "busybox", "sh", "-c", "ip -4 addr show eth0 | grep -o 'inet [0-9.]*'"])).stdout.trim();
      assert.equal(second, "10.213.78.128");
      assert.equal(third, "inet 10.213.78.130", "the auxiliary address .129 is skipped");
      // a static address anywhere in the subnet still works
      assert.match(ok(b(["run", "--rm", "--network", "ranged", "--ip", "10.213.78.20", "busybox", "ip", "-4", "addr", "show", "eth0"])).stdout, /inet 10\.213\.78\.20\//);
      const outside = b(["network", "create", "--subnet", "10.213.79.0/24", "--ip-range", "10.213.80.0/28", "badrange"]);
      assert.equal(outside.code, 1);
      assert.match(outside.stderr, /invalid ip range 10\.213\.80\.0\/28: it is not within the subnet 10\.213\.79\.0\/24/);
    } finally {
      b(["rm", "-f", "ranged-1"]);
      ok(b(["network", "rm", "ranged"]));
    }
  });

  test("-P publishes exposed ports on free host ports; ranges and a host address; connect and disconnect a running container; --internal has no way out", async () => {
    // -P with --expose: a free host port, shown by port
    ok(b(["run", "-d", "--name", "pall", "-P", "--expose", "80", "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"]));
    const m = /^80\/tcp -> 0\.0\.0\.0:(\d+)$/.exec(ok(b(["port", "pall"])).stdout.trim());
    assert.ok(m, "a host port was chosen");
    let body = "";
    for (let i = 0; i < 50 && !body; i++) body = await httpGet(Number(m[1])).catch(() => "");
    assert.equal(body, "hello from berth httpd\n");
    ok(b(["rm", "-f", "pall"]));
    // a range, on the host's loopback address only
    const p = freePort();
    ok(b(["run", "-d", "--name", "ranged", "-p", `127.0.0.1:${p}-${p + 1}:80-81`, "-v", `${www}:/www`, "busybox", "sh", "-c", "httpd -p 80 -h /www; httpd -f -p 81 -h /www"]));
    assert.equal(ok(b(["port", "ranged"])).stdout, `80/tcp -> 127.0.0.1:${p}\n81/tcp -> 127.0.0.1:${p + 1}\n`);
    body = "";
    for (let i = 0; i < 50 && !body; i++) body = await httpGet(p + 1).catch(() => "");
    assert.equal(body, "hello from berth httpd\n", "the second port of the range");
    ok(b(["rm", "-f", "ranged"]));
    // network connect: a second interface at once; disconnect takes it away
    ok(b(["network", "create", "--internal", "isolated"]));
    ok(b(["run", "-d", "--name", "multi", "busybox", "sleep", "100"]));
    ok(b(["network", "connect", "--alias", "m2", "isolated", "multi"]));
    const ifs = ok(b(["exec", "multi", "ls", "/sys/class/net"])).stdout.split("\n").filter(Boolean).sort();
    assert.deepEqual(ifs, ["eth0", "eth1", "lo"]);
    const nets = JSON.parse(ok(b(["inspect", "-f", "{{json .NetworkSettings.Networks}}", "multi"])).stdout);
    assert.deepEqual(Object.keys(nets).sort(), ["bridge", "isolated"]);
    // an internal network: reachable inside, no default route out of it
    const r = ok(b(["run", "--rm", "--network", "isolated", "busybox", "sh", "-c", `ip route; wget -qO- -T 2 http://m2:1/ 2>&1; ping -c 1 -W 2 ${nets.isolated.IPAddress} >/dev/null && echo reached`])).stdout;
    assert.doesNotMatch(r, /^default/m, "no default route on an internal network");
    assert.match(r, /reached/);
    const dup = b(["network", "connect", "isolated", "multi"]);
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /already exists in network isolated/);
    ok(b(["network", "disconnect", "isolated", "multi"]));
    assert.deepEqual(ok(b(["exec", "multi", "ls", "/sys/class/net"])).stdout.split("\n").filter(Boolean).sort(), ["eth0", "lo"]);
    const notThere = b(["network", "disconnect", "isolated", "multi"]);
    assert.equal(notThere.code, 1);
    assert.match(notThere.stderr, /is not connected to network isolated/);
    ok(b(["rm", "-f", "multi"]));
    ok(b(["network", "rm", "isolated"]));
  });

  const noIPv6 = (() => {
    try {
      return fs.readFileSync("/proc/sys/net/ipv6/conf/all/disable_ipv6", "utf8").trim() === "1" ? "IPv6 is disabled on this host" : false;
    } catch {
      return "this kernel has no IPv6";
    }
  })();
  test("IPv6: a network made with --ipv6 gives containers addresses, a route and AAAA answers", { skip: noIPv6 }, () => {
    ok(b(["network", "create", "--ipv6", "--subnet", "fd00:be:47:1::/64", "v6net"]));
    const cfg = JSON.parse(ok(b(["network", "inspect", "v6net"])).stdout)[0];
    assert.equal(cfg.EnableIPv6, true);
    assert.deepEqual(cfg.IPAM.Config[1], { Subnet: "fd00:be:47:1::/64", Gateway: "fd00:be:47:1::1" });
    ok(b(["run", "-d", "--name", "v6srv", "--network", "v6net", "--ip6", "fd00:be:47:1::80", "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"]));
    assert.equal(ok(b(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}/{{.GlobalIPv6PrefixLen}} {{.IPv6Gateway}}{{end}}", "v6srv"])).stdout.trim(), "fd00:be:47:1::80/64 fd00:be:47:1::1");
    const r = ok(b(["run", "--rm", "--network", "v6net", "busybox", "sh", "-c", "ip -6 addr show eth0; ip -6 route; wget -qO- 'http://[fd00:be:47:1::80]/'; nslookup -type=AAAA v6srv"])).stdout;
    assert.match(r, /inet6 fd00:be:47:1::2\/64 scope global/, "the first free address after the gateway");
    assert.match(r, /default via fd00:be:47:1::1 dev eth0/);
    assert.match(r, /hello from berth httpd/, "reached over IPv6");
    assert.match(r, /Address: fd00:be:47:1::80/, "berth's DNS answers AAAA");
    const overlap = b(["network", "create", "--ipv6", "--subnet", "fd00:be:47:1:8000::/80", "v6other"]);
    assert.equal(overlap.code, 1);
    assert.match(overlap.stderr, /Pool overlaps/);
    const noflag = b(["network", "create", "--subnet", "fd00:be:48::/64", "v6noflag"]);
    assert.equal(noflag.code, 1);
    assert.match(noflag.stderr, /needs --ipv6/);
    ok(b(["rm", "-f", "v6srv"]));
    ok(b(["network", "rm", "v6net"]));
  });

  test("after a crash (monitor and container killed), the next command gives the address and port back", async () => {
    const port = freePort();
    const id = ok(b(["run", "-d", "-p", `${port}:80`, "busybox", "sleep", "1000"])).stdout.trim();
    const dir = join(env.root, "containers", id);
    const monitor = Number(fs.readFileSync(join(dir, "monitor.pid"), "utf8"));
    const pid = Number(fs.readFileSync(join(dir, "pid"), "utf8"));
    process.kill(monitor, "SIGKILL");
    process.kill(pid, "SIGKILL");
    await waitFor(() => !fs.existsSync(`/proc/${pid}`), "the container to die");
    assert.match(ok(b(["ps", "-a", "--format", "{{.Status}}"])).stdout, /^Exited \(255\)/);
    const doc = JSON.parse(fs.readFileSync(join(env.root, "network", "networks.json"), "utf8"));
    assert.deepEqual(doc.ports, [], "the published port is released");
    assert.deepEqual(doc.endpoints, [], "the address is released");
    assert.deepEqual(portElements(), [], "and its DNAT element");
    // and the same port can be published again
    ok(b(["run", "--rm", "-p", `${port}:80`, "busybox", "true"]));
    ok(b(["rm", id]));
  });
});

const nftTables = () => (spawnSync("nft", ["list", "tables"], { encoding: "utf8" }).stdout ?? "").split("\n").filter(Boolean).map((l) => l.replace(/^table /, ""));

/** iptables chains whose names start with CNI- (what the CNI plugins make), per table. */
function cniChains(): string[] {
  const r = spawnSync("iptables-save", [], { encoding: "utf8" });
  let table = "";
  const out: string[] = [];
  for (const l of (r.stdout ?? "").split("\n")) {
    if (l.startsWith("*")) table = l.slice(1);
    const m = /^:(CNI-\S+)/.exec(l);
    if (m) out.push(`${table} ${m[1]}`);
  }
  return out;
}

/** Remove CNI chains the test made (the plugins leave their top-level chains): jumps first, then the chains. */
function removeChains(chains: string[]): void {
  for (const c of chains) {
    const [table, chain] = c.split(" ") as [string, string];
    const rules = spawnSync("iptables", ["-t", table, "-S"], { encoding: "utf8" }).stdout ?? "";
    for (const rule of rules.split("\n").filter((r) => r.startsWith("-A ") && r.includes(`-j ${chain}`)))
      spawnSync("sh", ["-c", `iptables -t ${table} ${rule.replace(/^-A /, "-D ")}`]);
  }
  for (const c of chains) spawnSync("iptables", ["-t", c.split(" ")[0]!, "-F", c.split(" ")[1]!]);
  for (const c of chains) spawnSync("iptables", ["-t", c.split(" ")[0]!, "-X", c.split(" ")[1]!]);
}

const cniMissing = !fs.existsSync("/usr/lib/cni/bridge") ? "Debian's containernetworking-plugins is not installed (test/setup.sh installs it)" : spawnSync("sh", ["-c", "command -v iptables-save"]).status !== 0 ? "iptables is not installed (the portmap plugin needs it)" : false;

describe("CNI networks", { skip: rootSkip || nftMissing || cniMissing }, () => {
  test("a conflist run by Debian's plugins (bridge, host-local, portmap, firewall): address, published port, DEL on rm", async () => {
    if (!env) {
      env = berthEnv();
      runtimeRoot = tempDir("berth-test-rt-");
    }
    const before = new Set(cniChains());
    const tablesBefore = new Set(nftTables());
    const dir = tempDir("berth-cni-");
    const conflist = join(dir, "test.conflist");
    fs.writeFileSync(
      conflist,
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "ignored",
        plugins: [
          { type: "bridge", bridge: "berthcni-t", isGateway: true, ipMasq: true, ipam: { type: "host-local", ranges: [[{ subnet: "10.213.90.0/24" }]], routes: [{ dst: "0.0.0.0/0" }], dataDir: join(dir, "ipam") } },
          { type: "portmap", capabilities: { portMappings: true }, snat: true },
          { type: "firewall" },
        ],
      }),
    );
    try {
      ok(b(["network", "create", "-d", "cni", "-o", `conflist=${conflist}`, "cnitest"]));
      assert.match(ok(b(["network", "ls", "--format", "{{.Name}} {{.Driver}}"])).stdout, /^cnitest cni$/m);
      const port = freePort();
      ok(b(["run", "-d", "--name", "cni1", "--network", "cnitest", "-p", `${port}:80`, "-v", `${www}:/www`, "busybox", "httpd", "-f", "-p", "80", "-h", "/www"]));
      const ip = ok(b(["inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "cni1"])).stdout.trim();
      assert.match(ip, /^10\.213\.90\.\d+$/, "host-local's address");
      assert.match(ok(b(["exec", "cni1", "ip", "-4", "addr", "show", "eth0"])).stdout, new RegExp(`inet ${ip.replace(/\./g, "\\.")}/24`));
      assert.ok(fs.existsSync(join(dir, "ipam", "cnitest", ip)), "host-local recorded the address");
      // from another container on the same CNI network, and from the host through portmap
      assert.equal(ok(b(["run", "--rm", "--network", "cnitest", "busybox", "wget", "-qO-", `http://${ip}/`])).stdout, "hello from berth httpd\n");
      let body = "";
      for (let i = 0; i < 30 && !body; i++) body = await httpGet(port).catch(() => "");
      assert.equal(body, "hello from berth httpd\n", "portmap's published port answers on 127.0.0.1");
      ok(b(["rm", "-f", "cni1"]));
      assert.ok(!fs.existsSync(join(dir, "ipam", "cnitest", ip)), "DEL gave the address back");
      assert.equal(await httpGet(port).catch(() => "refused"), "refused");
      const busy = b(["network", "rm", "nope-cni"]);
      assert.equal(busy.code, 1);
      ok(b(["network", "rm", "cnitest"]));
    } finally {
      b(["rm", "-f", "cni1"]);
      b(["network", "rm", "cnitest"]);
      spawnSync(join(project, "build/berth-net"), ["del", "berthcni-t"]);
      removeChains(cniChains().filter((c) => !before.has(c)));
      // iptables-nft made its tables for the plugins' rules: gone again if the test made them
      for (const t of nftTables()) if (!tablesBefore.has(t)) spawnSync("nft", ["delete", "table", ...t.split(" ")]);
    }
    assert.deepEqual(nftTables().filter((t) => !tablesBefore.has(t)), [], "no nftables table is left");
    assert.deepEqual(cniChains().filter((c) => !before.has(c)), [], "no iptables chain of the plugins is left");
    assert.ok(!links().includes("berthcni-t"));
  });
});
