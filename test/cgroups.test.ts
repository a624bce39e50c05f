/**
 * Resource control. A conformance suite that both drivers run against fake hierarchies (the value
 * mapping, without root), and the seeds' demonstrations on this host's real cgroups.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { V1Driver, V2Driver, layout, type CgroupDriver, type LinuxResources } from "../src/cgroups/index.js";
import { cli, leaks, makeBundle, newRoot, rootSkip, rt, tempDir, uniqueId, waitFor } from "./helpers.js";

const host = { cpus: "0-1", mems: "0" };

/** The seeds' `docker run --cpu-shares 513 --cpus 2 --cpuset-cpus 1,3 --memory 1024M --memory-swap 1234M --memory-swappiness 7`, with CPUs this host has. */
const seedResources: LinuxResources = {
  cpu: { shares: 513, quota: 200000, period: 100000, cpus: "0,1" },
  memory: { limit: 1024 * 1024 * 1024, swap: 1234 * 1024 * 1024, swappiness: 7 },
};

function fakeV1(): { driver: V1Driver; root: string } {
  const root = tempDir("berth-test-cgv1-");
  const sets = [["cpu", "cpuacct"], ["cpuset"], ["memory"], ["pids"], ["blkio"], ["devices"], ["freezer"], ["hugetlb"]];
  const hierarchies = sets.map((controllers) => {
    const mount = join(root, controllers.join(","));
    mkdirSync(mount, { recursive: true });
    if (controllers.includes("cpuset")) for (const f of ["cpuset.cpus", "cpuset.mems"]) writeFileSync(join(mount, f), f.endsWith("cpus") ? "0-1" : "0");
    return { mount, controllers, v2: false };
  });
  return { driver: new V1Driver(hierarchies, host), root };
}

function fakeV2(): { driver: V2Driver; root: string } {
  const root = tempDir("berth-test-cgv2-");
  writeFileSync(join(root, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc");
  writeFileSync(join(root, "cgroup.subtree_control"), "");
  const driver = new V2Driver(root, host);
  // A fake tree has no kernel to propagate controllers: give each new level the root's list.
  const create = driver.create.bind(driver);
  driver.create = (path: string) => {
    let cur = root;
    for (const part of path.split("/").filter(Boolean)) {
      cur = join(cur, part);
      mkdirSync(cur, { recursive: true });
      writeFileSync(join(cur, "cgroup.controllers"), "cpuset cpu io memory hugetlb pids rdma misc");
      writeFileSync(join(cur, "cgroup.subtree_control"), "");
    }
    create(path);
  };
  return { driver, root };
}

function read(root: string, file: string): string {
  return readFileSync(join(root, file), "utf8").trim();
}

/** The conformance suite every driver runs. */
function conformance(name: string, make: () => { driver: CgroupDriver; root: string }, files: (path: string) => Record<string, string>) {
  describe(`${name} driver conformance (fake hierarchy)`, () => {
    test("create makes the cgroup in every hierarchy and lists its procs files", () => {
      const { driver, root } = make();
      driver.create("/berth/c1");
      for (const f of driver.procsFiles("/berth/c1")) assert.ok(f.startsWith(root) && f.endsWith("/berth/c1/cgroup.procs"));
      for (const h of driver.hierarchies) assert.ok(existsSync(join(h.mount, "berth/c1")));
      rmSync(root, { recursive: true });
    });

    test("createAsync makes what create makes (cpuset values copied down on v1)", async () => {
      const { driver, root } = make();
      await driver.createAsync("/berth/c2");
      for (const h of driver.hierarchies) assert.ok(existsSync(join(h.mount, "berth/c2")), h.mount);
      const cpuset = driver.hierarchies.find((h) => h.controllers.includes("cpuset") && !h.v2);
      if (cpuset) assert.equal(readFileSync(join(cpuset.mount, "berth/c2/cpuset.cpus"), "utf8"), "0-1");
      await driver.createAsync("/berth/c2"); // again: nothing to make, no error
      rmSync(root, { recursive: true });
    });

    test("the seeds' resource set lands in the right files with the right values", () => {
      const { driver, root } = make();
      driver.create("/berth/c1");
      driver.apply("/berth/c1", seedResources);
      for (const [file, value] of Object.entries(files("/berth/c1"))) assert.equal(read(root, file), value, file);
      rmSync(root, { recursive: true });
    });

    test("values the host cannot honour are refused, naming the field, before anything is written", () => {
      const { driver, root } = make();
      driver.create("/berth/c1");
      const cases: [LinuxResources, RegExp][] = [
        [{ cpu: { cpus: "1,3" } }, /linux.resources.cpu.cpus: CPUs 3 do not exist on this host \(it has 0-1\)/],
        [{ memory: { limit: -5 } }, /linux.resources.memory.limit: must be -1 \(unlimited\) or a non-negative integer/],
        [{ memory: { swappiness: 101 } }, /swappiness: must be 0..100/],
        [{ cpu: { shares: 1 } }, /cpu.shares: must be 2..262144/],
        [{ cpu: { quota: 10 } }, /cpu.quota: must be -1 or at least 1000/],
        [{ blockIO: { weight: 5 } }, /blockIO.weight: must be 10..1000/],
        [{ unified: { "../etc": "x" } }, /unified: malformed key/],
        [{ devices: [{ allow: true, type: "x" }] }, /devices\[0\].type: must be a, b or c/],
        [{ hugepageLimits: [{ pageSize: "2M", limit: 1 }] }, /pageSize: malformed "2M"/],
      ];
      for (const [r, message] of cases) assert.throws(() => driver.apply("/berth/c1", { pids: { limit: 5 }, ...r }), message);
      for (const h of driver.hierarchies) assert.equal(existsSync(join(h.mount, "berth/c1/pids.max")), false, "nothing was written");
      rmSync(root, { recursive: true });
    });

    test("pids are read from every level below the cgroup", () => {
      const { driver, root } = make();
      driver.create("/berth/c1/sub");
      const dir = driver.procsFiles("/berth/c1")[driver.hierarchies.findIndex((h) => h.controllers.includes("pids") || h.v2)]!;
      writeFileSync(dir, "10\n11\n");
      writeFileSync(join(dir, "../sub/cgroup.procs"), "12\n");
      assert.deepEqual(driver.pids("/berth/c1").sort(), [10, 11, 12]);
      rmSync(root, { recursive: true });
    });
  });
}

conformance("v1", fakeV1, (p) => ({
  [`cpu,cpuacct${p}/cpu.shares`]: "513",
  [`cpu,cpuacct${p}/cpu.cfs_quota_us`]: "200000",
  [`cpu,cpuacct${p}/cpu.cfs_period_us`]: "100000",
  [`cpuset${p}/cpuset.cpus`]: "0,1",
  [`memory${p}/memory.limit_in_bytes`]: "1073741824",
  [`memory${p}/memory.memsw.limit_in_bytes`]: "1293942784",
  [`memory${p}/memory.swappiness`]: "7",
}));

conformance("v2", fakeV2, (p) => ({
  // runc's conversion: 1 + (513 - 2) * 9999 / 262142 = 20
  [`${p}/cpu.weight`]: "20",
  [`${p}/cpu.max`]: "200000 100000",
  [`${p}/cpuset.cpus`]: "0,1",
  [`${p}/memory.max`]: "1073741824",
  // OCI swap is memory+swap; v2 counts swap alone: 1234M - 1024M
  [`${p}/memory.swap.max`]: "220200960",
}));

test("v2 warns about what it cannot honour; v1 refuses unified keys", () => {
  const v2 = fakeV2();
  v2.driver.create("/c");
  assert.deepEqual(v2.driver.apply("/c", { memory: { swappiness: 7 } }), ["linux.resources.memory.swappiness is not supported on cgroup v2 and was ignored"]);
  v2.driver.apply("/c", { blockIO: { weight: 500 }, unified: { "memory.high": "1000000" } });
  assert.equal(read(v2.root, "c/io.weight"), "default 4950");
  assert.equal(read(v2.root, "c/memory.high"), "1000000");
  const v1 = fakeV1();
  v1.driver.create("/c");
  assert.throws(() => v1.driver.apply("/c", { unified: { "memory.high": "1" } }), /needs cgroup v2/);
  assert.throws(() => v1.driver.apply("/c", { network: { classID: 1 } }), /the net_cls controller is not available on this host/);
  rmSync(v1.root, { recursive: true });
  rmSync(v2.root, { recursive: true });
});

test("v1 with BFQ (blkio.bfq.weight, no blkio.weight): the weights go to BFQ's files, as runc writes them", () => {
  const v1 = fakeV1();
  v1.driver.create("/c");
  const blkio = join(v1.root, "blkio", "c");
  writeFileSync(join(blkio, "blkio.bfq.weight"), "100");
  writeFileSync(join(blkio, "blkio.bfq.weight_device"), "");
  v1.driver.apply("/c", { blockIO: { weight: 300, weightDevice: [{ major: 8, minor: 0, weight: 200 }] } });
  assert.equal(read(v1.root, "blkio/c/blkio.bfq.weight"), "300");
  assert.equal(read(v1.root, "blkio/c/blkio.bfq.weight_device"), "8:0 200");
  assert.equal(existsSync(join(blkio, "blkio.weight")), false);
  rmSync(v1.root, { recursive: true });
});

test("hybrid (v1 controllers, an empty v2 tree): unified keys of a v1 controller are refused before anything is written", () => {
  const v1 = fakeV1();
  const unified = join(v1.root, "unified");
  mkdirSync(unified);
  writeFileSync(join(unified, "cgroup.controllers"), "");
  const driver = new V1Driver([...v1.driver.hierarchies, { mount: unified, controllers: [], v2: true }], host);
  driver.create("/c");
  assert.throws(() => driver.apply("/c", { pids: { limit: 9 }, unified: { "memory.high": "1000000" } }), /invalid configuration: linux.resources.unified.memory.high: the memory controller is on cgroup v1 on this host/);
  assert.equal(existsSync(join(v1.root, "pids/c/pids.max")), false, "nothing was written");
  rmSync(v1.root, { recursive: true });
});

describe(`this host's cgroups (${layout()})`, { skip: rootSkip }, () => {
  const root = newRoot();
  after(() => rmSync(root, { recursive: true, force: true }));
  const cgfile = (id: string, controller: string, file: string) =>
    layout() === "v2" ? `/sys/fs/cgroup/berth/${id}/${file}` : `/sys/fs/cgroup/${controller}/berth/${id}/${file}`;

  test("the seeds' resource set, as config.json, lands in the container's cgroup files", () => {
    const b = makeBundle(["/probe", "sleep", "30"], (s) => (s.linux.resources = { ...s.linux.resources, ...seedResources }));
    const id = uniqueId();
    const r = rt(root, ["run", "-d", "--bundle", b, id]);
    assert.equal(r.code, 0, r.stderr);
    if (layout() === "v2") {
      assert.equal(readFileSync(cgfile(id, "cpu", "cpu.weight"), "utf8").trim(), "20");
      assert.equal(readFileSync(cgfile(id, "memory", "memory.max"), "utf8").trim(), "1073741824");
    } else {
      assert.equal(readFileSync(cgfile(id, "cpu", "cpu.shares"), "utf8").trim(), "513");
      assert.equal(readFileSync(cgfile(id, "cpu", "cpu.cfs_quota_us"), "utf8").trim(), "200000");
      assert.equal(readFileSync(cgfile(id, "cpu", "cpu.cfs_period_us"), "utf8").trim(), "100000");
      assert.equal(readFileSync(cgfile(id, "cpuset", "cpuset.cpus"), "utf8").trim(), "0-1");
      assert.equal(readFileSync(cgfile(id, "memory", "memory.limit_in_bytes"), "utf8").trim(), "1073741824");
      assert.equal(readFileSync(cgfile(id, "memory", "memory.memsw.limit_in_bytes"), "utf8").trim(), "1293942784");
      assert.equal(readFileSync(cgfile(id, "memory", "memory.swappiness"), "utf8").trim(), "7");
    }
    // update changes a live container, as `runc update` and `docker update` do
    assert.equal(rt(root, ["update", "--memory", "512m", "--memory-swap", "600m", "--pids-limit", "33", id]).code, 0);
    if (layout() !== "v2") assert.equal(readFileSync(cgfile(id, "memory", "memory.limit_in_bytes"), "utf8").trim(), String(512 * 1024 * 1024));
    assert.equal(readFileSync(cgfile(id, "pids", "pids.max"), "utf8").trim(), "33");
    assert.equal(rt(root, ["update", "-r", "-", id], { input: JSON.stringify({ pids: { limit: 44 } }) }).code, 0);
    assert.equal(readFileSync(cgfile(id, "pids", "pids.max"), "utf8").trim(), "44");
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    assert.equal(existsSync(cgfile(id, "memory", "")), false, "delete removes the cgroup in every controller");
    rmSync(b, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  // BFQ's files are at the blkio root (its statistics) where its scheduler is loaded; CFQ's blkio.weight is gone since Linux 5.0
  const bfqOnly = layout() !== "v2" && existsSync("/sys/fs/cgroup/blkio/blkio.bfq.io_service_bytes") && !existsSync("/sys/fs/cgroup/blkio/blkio.weight");
  test("blockIO.weight on a v1 host whose disks use BFQ (no blkio.weight): written to blkio.bfq.weight, the container starts", { skip: !bfqOnly && "needs v1 blkio with BFQ as the only weight (as this dev VM has)" }, () => {
    const b = makeBundle(["/probe", "sleep", "30"], (s) => (s.linux.resources = { ...s.linux.resources, blockIO: { weight: 300 } }));
    const id = uniqueId();
    const r = rt(root, ["run", "-d", "--bundle", b, id]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(cgfile(id, "blkio", "blkio.bfq.weight"), "utf8").trim().split(/\s+/).pop(), "300");
    assert.equal(rt(root, ["delete", "-f", id]).code, 0);
    rmSync(b, { recursive: true });
  });

  test("the seeds' 30 MB limit kills the 1 MB-a-step allocator near 30 MB; berth reports the OOM kill", async () => {
    const b = makeBundle(["/probe", "alloc", "1", "20"], (s) => (s.linux.resources = { ...s.linux.resources, memory: { limit: 30 * 1024 * 1024, swap: 30 * 1024 * 1024 } }));
    const id = uniqueId();
    assert.equal(rt(root, ["create", "--bundle", b, id]).code, 0);
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const events = spawn(process.execPath, [cli, "--root", root, "events", "--interval", "1s", id], { env, stdio: ["ignore", "pipe", "inherit"] });
    const eventsExited = new Promise((r) => events.on("exit", r));
    let stream = "";
    events.stdout!.on("data", (d) => (stream += d));
    await sleep(200);
    assert.equal(rt(root, ["start", id]).code, 0);
    await waitFor(() => JSON.parse(rt(root, ["state", id]).stdout).status === "stopped", "the OOM-killed container to stop", 60_000, 50);
    const state = JSON.parse(rt(root, ["state", id]).stdout);
    assert.equal(state.status, "stopped");
    assert.equal(state.oomKilled, true, "state shows the OOM kill");
    await eventsExited;
    assert.match(stream, new RegExp(`{"type":"oom","id":"${id}"}`));
    assert.equal(rt(root, ["delete", id]).code, 0);
    // And in the foreground: exit 137, the last allocation below the limit.
    const fg = rt(root, ["run", "--bundle", b, uniqueId()]);
    assert.equal(fg.code, 137);
    const last = Number(/(\d+) MiB\n$/.exec(fg.stdout)![1]);
    assert.ok(last >= 20 && last < 30, `killed after ${last} MiB`);
    assert.match(fg.stderr, /killed by the OOM killer/);
    rmSync(b, { recursive: true });
  });

  test("a fork bomb stops at pids.limit", () => {
    const b = makeBundle(["/probe", "fork", "100"], (s) => (s.linux.resources = { ...s.linux.resources, pids: { limit: 10 } }));
    const r = rt(root, ["run", "--bundle", b, uniqueId()]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), "forked 9", "the probe itself is one of the 10");
    rmSync(b, { recursive: true });
  });

  test("a cpu quota observably throttles; pause freezes a busy loop and resume continues it", async () => {
    const b = makeBundle(["/probe", "spin"], (s) => (s.linux.resources = { ...s.linux.resources, cpu: { quota: 10000, period: 100000 } }));
    const id = uniqueId();
    const started = Date.now();
    assert.equal(rt(root, ["run", "-d", "--bundle", b, id]).code, 0);
    try {
      await sleep(600);
      const stats = () => JSON.parse(rt(root, ["events", "--stats", id]).stdout).data;
      const s1 = stats();
      // against the wall time that really passed (each command is slow in an emulated guest)
      const wallNs = (Date.now() - started) * 1e6;
      assert.ok(s1.cpu.throttling.throttledPeriods > 0, `throttled ${JSON.stringify(s1.cpu.throttling)}`);
      assert.ok(s1.cpu.usage.total < wallNs * 0.5, `10% quota: far less than the wall time in cpu (${s1.cpu.usage.total / 1e6} ms of ${wallNs / 1e6} ms)`);
      assert.equal(rt(root, ["pause", id]).code, 0);
      const p1 = stats().cpu.usage.total;
      await sleep(400);
      const p2 = stats().cpu.usage.total;
      assert.ok(p2 - p1 < 5e6, `paused, yet used ${(p2 - p1) / 1e6} ms of cpu`);
      assert.equal(rt(root, ["resume", id]).code, 0);
      await sleep(400);
      assert.ok(stats().cpu.usage.total - p2 > 5e6, "runs again after resume");
    } finally {
      assert.equal(rt(root, ["delete", "-f", id]).code, 0);
      rmSync(b, { recursive: true });
    }
    assert.deepEqual(leaks(), []);
  });

  test("device rules are enforced (v1 devices files, v2 eBPF program)", () => {
    // 240:0 is in the local/experimental range: no driver behind it, so an open the cgroup allows
    // fails with ENXIO, and one it denies fails with EPERM before any driver is asked.
    const edit = (allow: boolean) => (s: any) => {
      s.linux.devices = [{ path: "/dev/berth-test", type: "c", major: 240, minor: 0, fileMode: 0o666 }];
      s.linux.resources = { ...s.linux.resources, devices: [{ allow: false, access: "rwm" }, ...(allow ? [{ allow: true, type: "c", major: 240, minor: 0, access: "r" }] : [])] };
    };
    const denied = makeBundle(["/bin/sh", "-c", "/probe open /dev/berth-test; /probe open /dev/null w; /probe open /dev/zero"], edit(false));
    let r = rt(root, ["run", "--bundle", denied, uniqueId()]);
    assert.equal(r.stdout, "error /dev/berth-test: Operation not permitted\nok\nok\n", r.stderr);
    const allowed = makeBundle(["/bin/sh", "-c", "/probe open /dev/berth-test; /probe open /dev/berth-test w"], edit(true));
    r = rt(root, ["run", "--bundle", allowed, uniqueId()]);
    assert.equal(r.stdout, "error /dev/berth-test: No such device or address\nerror /dev/berth-test: Operation not permitted\n", "read allowed, write still denied");
    rmSync(denied, { recursive: true });
    rmSync(allowed, { recursive: true });
  });

  test("bad resources: a clear error naming the field, and nothing created", () => {
    const b = makeBundle(["/probe", "id"], (s) => (s.linux.resources = { ...s.linux.resources, cpu: { cpus: "0,99" } }));
    const id = uniqueId();
    const r = rt(root, ["create", "--bundle", b, id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /linux.resources.cpu.cpus: CPUs 99 do not exist on this host \(it has [\d,-]+\)/);
    assert.equal(existsSync(cgfile(id, "memory", "")), false);
    assert.equal(existsSync(join(root, id)), false);
    rmSync(b, { recursive: true });
    assert.deepEqual(leaks(), []);
  });
});
