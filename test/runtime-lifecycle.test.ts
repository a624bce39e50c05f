/** berth-runtime's lifecycle as runc's callers see it: statuses, exit codes, state JSON, errors. */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "node:child_process";
import { cli, leaks, makeBundle, newRoot, rootSkip, rt, uniqueId, waitFor, waitForSync } from "./helpers.js";

/** A runtime command that must succeed: its stderr is the failure's message. */
const ok = (r: { code: number; stderr: string }) => assert.equal(r.code, 0, r.stderr);

const root = newRoot();
after(() => rmSync(root, { recursive: true, force: true }));

describe("berth-runtime lifecycle", { skip: rootSkip }, () => {
  test("kill ID 0 is a liveness probe: success while the container runs, an error once it has stopped; flags after the id", () => {
    const b = makeBundle(["/probe", "sleep", "60"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    try {
      const r = rt(root, ["kill", id, "0"]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "running", "signal 0 sends nothing");
      ok(rt(root, ["kill", "-a", id, "0"]));
      assert.equal(rt(root, ["kill", id, "0", "--all"]).code, 0, "flags after the id, as runc takes them");
      const upd = rt(root, ["update", id, "--pids-limit", "9"]);
      assert.equal(upd.code, 0, upd.stderr);
      const v2 = readdirSync("/sys/fs/cgroup").includes("cgroup.controllers");
      const pidsMax = v2 ? `/sys/fs/cgroup/berth/${id}/pids.max` : `/sys/fs/cgroup/pids/berth/${id}/pids.max`;
      if (existsSync(pidsMax)) assert.equal(readFileSync(pidsMax, "utf8").trim(), "9");
      const killed = rt(root, ["kill", id, "KILL"]);
      assert.equal(killed.code, 0, killed.stderr);
      waitForSync(() => JSON.parse(rt(root, ["state", id]).stdout).status === "stopped", "the container to stop");
      const dead = rt(root, ["kill", id, "0"]);
      assert.equal(dead.code, 1);
      assert.match(dead.stderr, /container not running/);
    } finally {
      rt(root, ["delete", "-f", id]);
      rmSync(b, { recursive: true });
    }
  });

  test("a failed create removes the cgroups it made, the cgroupsPath's new parents too", () => {
    const parent = uniqueId("failed");
    for (const [why, edit] of [
      ["a failing mount", (s: { mounts: unknown[] }) => s.mounts.push({ destination: "/tmp", type: "nosuchfs", source: "none" }) /* a directory the fixture has: the shared rootfs stays as it is */],
      ["a missing program", (s: { process: { args: string[] } }) => (s.process.args = ["/nope"])],
      ["a resource the host refuses", (s: { linux: { resources: unknown } }) => (s.linux.resources = { cpu: { cpus: "99" } })],
    ] as const) {
      const b = makeBundle(["/probe", "id"], (s) => {
        s.linux.cgroupsPath = `/${parent}/a/ctr`;
        (edit as (s: unknown) => void)(s);
      });
      const id = uniqueId();
      const r = rt(root, ["create", "--bundle", b, id]);
      assert.equal(r.code, 1, `${why}: ${r.stderr}`);
      assert.deepEqual(readdirSync("/sys/fs/cgroup").filter((h) => existsSync(join("/sys/fs/cgroup", h, parent))), [], `${why}: no cgroup left (${r.stderr.trim()})`);
      rmSync(b, { recursive: true });
    }
    assert.deepEqual(leaks(), []);
  });

  test("a cgroupsPath in a frozen cgroup is refused (the process would sleep there), leaving nothing", () => {
    const parent = uniqueId("frozen");
    const id = uniqueId();
    // a paused container's cgroup is the frozen cgroup: the new one is asked for beside its init
    const holder = uniqueId();
    const b = makeBundle(["/probe", "sleep", "60"], (s) => (s.linux.cgroupsPath = `/${parent}/${holder}`));
    ok(rt(root, ["run", "-d", "--bundle", b, holder]));
    try {
      ok(rt(root, ["pause", holder]));
      for (const path of [`/${parent}/${holder}`, `/${parent}/${holder}/${id}`]) {
        const nb = makeBundle(["/probe", "id"], (s) => (s.linux.cgroupsPath = path));
        const r = rt(root, ["run", "--bundle", nb, id], { timeout: 20_000 });
        assert.equal(r.code, 1, `run in ${path} must fail, not hang: ${r.stderr}`);
        assert.match(r.stderr, new RegExp(`cgroup /${parent}/${holder} is frozen: a container started in it would not run until it is thawed`));
        assert.equal(existsSync(join(root, id)), false, "no state directory");
        rmSync(nb, { recursive: true });
      }
      ok(rt(root, ["resume", holder]));
      assert.equal(JSON.parse(rt(root, ["state", holder]).stdout).status, "running");
    } finally {
      rt(root, ["delete", "-f", holder]);
      rmSync(b, { recursive: true });
      // the parent is the test's own (runc leaves parents it did not make too)
      for (const h of readdirSync("/sys/fs/cgroup")) if (existsSync(join("/sys/fs/cgroup", h, parent))) rmdirSync(join("/sys/fs/cgroup", h, parent));
    }
    assert.deepEqual(leaks(), []);
    assert.deepEqual(readdirSync("/sys/fs/cgroup").filter((h) => existsSync(join("/sys/fs/cgroup", h, parent))), [], "no cgroup left");
  });

  test("a relative cgroupsPath is under the runtime's own cgroup, per v1 hierarchy (memory elsewhere than the rest), on v2 under its parent, as runc's; its later commands find it from anywhere", () => {
    // the runtimes run from a shell the test puts in cgroups of its own: BASE everywhere, BASE/mem in memory
    const base = uniqueId("reltest");
    const rel = uniqueId("rel"); // where a runtime cannot rebase (an empty v1 cpuset, the hybrid's v2 tree), it lands at the root
    const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
    const trees = v2 ? ["/sys/fs/cgroup"] : readdirSync("/sys/fs/cgroup", { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => join("/sys/fs/cgroup", d.name));
    const own = (tree: string) => (!v2 && tree.endsWith("/memory") ? `/${base}/mem` : `/${base}`);
    // where the relative path lands: v1 under each hierarchy's own cgroup, v2 under the own one's parent (runc's fs2)
    const expected = (tree: string) => (v2 ? "" : own(tree));
    for (const t of trees) mkdirSync(join(t, own(t)), { recursive: true });
    const enter = trees.map((t) => `echo $$ > ${join(t, own(t), "cgroup.procs")}`).join("; ");
    const inCgroups = (cmd: string[]) => spawnSync("sh", ["-c", `${enter}; exec "$@"`, "sh", ...cmd], { encoding: "utf8", env: { ...process.env, NODE_EXTRA_CA_CERTS: "" } });
    const runc = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).stdout.trim();
    const seen = new Map<string, string[]>();
    try {
      for (const runtime of [...(runc ? ["runc"] : []), "berth"]) {
        // no cgroup namespace: the container sees its cgroups' host paths
        const b = makeBundle(["/probe", "cat", "/proc/self/cgroup"], (spec) => {
          spec.linux.cgroupsPath = `${rel}/ctr`;
          spec.linux.namespaces = spec.linux.namespaces.filter((n: { type: string }) => n.type !== "cgroup");
        });
        const id = uniqueId();
        const rroot = runtime === "runc" ? newRoot() : root;
        const r = runtime === "runc" ? inCgroups([runc, "--root", rroot, "run", "--bundle", b, id]) : inCgroups([process.execPath, cli, "--root", root, "run", "--bundle", b, id]);
        assert.equal(r.status, 0, `${runtime}: ${r.stderr}`);
        const lines = r.stdout.trim().split("\n").map((l) => l.replace(/^\d+:/, "")).sort();
        seen.set(runtime, lines);
        const mem = lines.find((l) => /(^|,)memory(,|:)/.test(l));
        if (!v2) assert.match(mem ?? "", new RegExp(`:/${base}/mem/${rel}/ctr$`), `${runtime}: memory under the runtime's own memory cgroup`);
        if (!v2) assert.ok(lines.some((l) => /^[a-z]/.test(l) && l.endsWith(`:/${base}/${rel}/ctr`)), `${runtime}: ${lines.join(" ")}`);
        else assert.deepEqual(lines, [`:/${rel}/ctr`], runtime);
        rmSync(b, { recursive: true });
      }
      if (runc) assert.deepEqual(seen.get("berth"), seen.get("runc"), "berth-runtime puts it where runc does");
      // a container created from the base, then stopped and deleted by a runtime outside it: the record says where
      const b = makeBundle(["/probe", "sleep", "60"], (spec) => (spec.linux.cgroupsPath = `${rel}/held`));
      const id = uniqueId();
      // (its output to a file: a detached container's stdout and stderr must outlive the caller's pipes, as under runc)
      const out = join(b, "out");
      const made = spawnSync("sh", ["-c", `${enter}; exec "$@" >${out} 2>&1`, "sh", process.execPath, cli, "--root", root, "run", "-d", "--bundle", b, id], { env: { ...process.env, NODE_EXTRA_CA_CERTS: "" } });
      assert.equal(made.status, 0, readFileSync(out, "utf8"));
      const memTree = v2 ? "/sys/fs/cgroup" : "/sys/fs/cgroup/memory";
      const held = join(memTree, expected(memTree), rel, "held");
      assert.ok(existsSync(held), `${held} made`);
      const killed = rt(root, ["kill", id, "KILL"]);
      assert.equal(killed.code, 0, killed.stderr);
      waitForSync(() => JSON.parse(rt(root, ["state", id]).stdout).status === "stopped", "the container to stop");
      ok(rt(root, ["delete", id]));
      assert.ok(!existsSync(held), "delete, run from the test's own cgroups, removed it");
      rmSync(b, { recursive: true });
    } finally {
      // the test's trees, deepest first (the shells are gone, so they are empty)
      for (const t of trees)
        for (const d of [`${base}/${rel}/held`, `${base}/${rel}/ctr`, `${base}/${rel}`, `${base}/mem/${rel}/held`, `${base}/mem/${rel}/ctr`, `${base}/mem/${rel}`, `${base}/mem`, base, `${rel}/held`, `${rel}/ctr`, rel])
          if (existsSync(join(t, d))) rmdirSync(join(t, d));
    }
    assert.deepEqual(leaks(), []);
  });

  test("a cgroup that already holds processes: a warning, and they are left alive (runc kills none of them either)", async () => {
    const path = uniqueId("strangers");
    // the stranger's cgroup, in every hierarchy berth-runtime will use (v1: pids and memory suffice to hold it; v2: the one tree)
    const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
    const dirs = v2 ? [join("/sys/fs/cgroup", path)] : ["pids", "memory"].map((c) => join("/sys/fs/cgroup", c, path));
    const stranger = spawn("sleep", ["60"], { stdio: "ignore" });
    let died = "";
    stranger.on("exit", (code, sig) => (died = sig ?? String(code)));
    try {
      for (const d of dirs) {
        mkdirSync(d, { recursive: true });
        writeFileSync(join(d, "cgroup.procs"), String(stranger.pid));
      }
      const runc = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).stdout.trim();
      for (const runtime of [...(runc ? ["runc"] : []), "berth"]) {
        const b = makeBundle(["/probe", "id"], (spec) => (spec.linux.cgroupsPath = `/${path}`));
        const id = uniqueId();
        const r = runtime === "runc" ? ((x) => ({ code: x.status, stderr: x.stderr }))(spawnSync(runc, ["--root", newRoot(), "run", "--bundle", b, id], { encoding: "utf8" })) : rt(root, ["run", "--bundle", b, id]);
        assert.equal(r.code, 0, `${runtime}: ${r.stderr}`);
        await new Promise((res) => setTimeout(res, 100));
        assert.equal(died, "", `${runtime} killed a process that was in the cgroup before the container`);
        if (runtime === "berth") {
          assert.match(r.stderr, new RegExp(`container's cgroup is not empty: 1 process\\(es\\) found \\(/${path}\\)`));
          assert.match(r.stderr, /is left in place: it holds 1 process\(es\) that are not the container's/);
          assert.ok(dirs.every((d) => readFileSync(join(d, "cgroup.procs"), "utf8").trim() === String(stranger.pid)), "the cgroup and its process stay");
        }
        rmSync(b, { recursive: true });
      }
    } finally {
      stranger.kill("SIGKILL");
      await new Promise((res) => setTimeout(res, 100));
      for (const h of readdirSync("/sys/fs/cgroup")) if (existsSync(join("/sys/fs/cgroup", h, path))) rmdirSync(join("/sys/fs/cgroup", h, path));
      if (v2 && existsSync(join("/sys/fs/cgroup", path))) rmdirSync(join("/sys/fs/cgroup", path));
    }
    assert.deepEqual(leaks(), []);
  });

  test("exec --ignore-paused into a paused container starts once it is resumed (runc's behaviour); exec --cgroup enters a sub-cgroup", async () => {
    const b = makeBundle(["/probe", "sleep", "60"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    try {
      ok(rt(root, ["pause", id]));
      const refused = rt(root, ["exec", id, "/probe", "hostname"]);
      assert.equal(refused.code, 255);
      assert.match(refused.stderr, /cannot exec in a paused container \(use --ignore-paused to override\)/);
      const env = { ...process.env };
      delete env.NODE_EXTRA_CA_CERTS;
      const t0 = Date.now();
      const child = spawn(process.execPath, [cli, "--root", root, "exec", "--ignore-paused", id, "/probe", "hostname"], { env, stdio: ["ignore", "pipe", "pipe"] });
      let out = "";
      child.stdout!.on("data", (d) => (out += d));
      child.stderr!.on("data", (d) => (out += d));
      const done = new Promise<number | null>((r) => child.on("exit", r));
      await new Promise((r) => setTimeout(r, 800));
      assert.equal(out, "", "nothing runs while the container is frozen");
      ok(rt(root, ["resume", id]));
      assert.equal(await done, 0, out);
      assert.ok(Date.now() - t0 >= 800);
      assert.match(out, /^berth-test$/m);
      // --cgroup: a sub-cgroup made beforehand, in every hierarchy (plain) or one controller's (controller:path)
      const v2 = existsSync("/sys/fs/cgroup/cgroup.controllers");
      const dirs = v2 ? [`/sys/fs/cgroup/berth/${id}`] : readdirSync("/sys/fs/cgroup").map((h) => `/sys/fs/cgroup/${h}/berth/${id}`).filter((d) => existsSync(d));
      for (const d of dirs) {
        mkdirSync(join(d, "sub"));
        // a new v1 cpuset cgroup takes no task until it has cpus and mems (as under runc)
        for (const f of ["cpuset.cpus", "cpuset.mems"]) if (!v2 && existsSync(join(d, f))) writeFileSync(join(d, "sub", f), readFileSync(join(d, f)));
      }
      const inSub = rt(root, ["exec", "--cgroup", "sub", id, "/bin/cat", "/proc/self/cgroup"]);
      assert.equal(inSub.code, 0, inSub.stderr);
      const lines = inSub.stdout.trim().split("\n").filter((l) => !/:name=systemd:|^0::/.test(l) || v2);
      assert.ok(lines.length > 0 && lines.every((l) => l.endsWith("/sub")), inSub.stdout);
      if (!v2) {
        mkdirSync(`/sys/fs/cgroup/memory/berth/${id}/only`);
        const one = rt(root, ["exec", "--cgroup", "memory:only", id, "/bin/cat", "/proc/self/cgroup"]);
        assert.equal(one.code, 0, one.stderr);
        // paths as the container's cgroup namespace shows them (its root is the container's cgroup)
        assert.match(one.stdout, /:memory:\/only$/m);
        assert.match(one.stdout, /:pids:\/$/m, "other controllers stay in the container's cgroup");
      }
      for (const [arg, message] of [["../x", /cannot leave the container's cgroup/], ["nosuch", /there is no such sub-cgroup/]] as const) {
        const r = rt(root, ["exec", "--cgroup", arg, id, "/probe", "hostname"]);
        assert.equal(r.code, 255);
        assert.match(r.stderr, message);
      }
    } finally {
      rt(root, ["delete", "-f", id]);
      rmSync(b, { recursive: true });
    }
    assert.deepEqual(leaks(), []);
  });

  test("create waits for start; state, list and ps report it; kill and delete clean up", () => {
    const bundle = makeBundle(["/probe", "sleep", "60"]);
    const id = uniqueId();
    const pidFile = join(bundle, "pid");
    let r = rt(root, ["create", "--bundle", bundle, "--pid-file", pidFile, id]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(readFileSync(pidFile, "utf8"));
    assert.ok(pid > 1);
    let state = JSON.parse(rt(root, ["state", id]).stdout);
    assert.equal(state.status, "created");
    assert.equal(state.pid, pid);
    assert.equal(state.id, id);
    assert.equal(state.bundle, bundle);
    assert.equal(state.ociVersion, "1.0.2-dev");
    // Before start the process has not exec'd the user's program yet.
    assert.notEqual(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0], "/probe");

    ok(rt(root, ["start", id]));
    state = JSON.parse(rt(root, ["state", id]).stdout);
    assert.equal(state.status, "running");
    assert.equal(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, 3).join(" "), "/probe sleep 60");
    r = rt(root, ["start", id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot start an already running container/);

    const list = JSON.parse(rt(root, ["list", "--format", "json"]).stdout);
    assert.deepEqual(list.map((s: { id: string; status: string }) => [s.id, s.status]), [[id, "running"]]);
    const table = rt(root, ["list"]).stdout.split("\n");
    assert.match(table[0]!, /^ID\s+PID\s+STATUS\s+BUNDLE\s+CREATED\s+OWNER$/);
    assert.match(table[1]!, new RegExp(`^${id}\\s+${pid}\\s+running\\s+${bundle}\\s+\\S+\\s+root$`));
    assert.deepEqual(JSON.parse(rt(root, ["ps", "--format", "json", id]).stdout), [pid]);
    assert.match(rt(root, ["ps", id]).stdout, new RegExp(`\\n\\S+\\s+${pid}\\s`));

    r = rt(root, ["delete", id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot delete container .* that is not stopped: running/);
    ok(rt(root, ["kill", id, "KILL"]));
    waitForSync(() => JSON.parse(rt(root, ["state", id]).stdout).status === "stopped", "the killed container to stop");
    assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "stopped");
    r = rt(root, ["kill", id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /container not running/);
    ok(rt(root, ["delete", id]));
    r = rt(root, ["state", id]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /container .* does not exist/);
    assert.equal(existsSync(join(root, id)), false);
    rmSync(bundle, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("run in the foreground returns the container's exit status, and 128+n for a signal", async () => {
    const b1 = makeBundle(["/probe", "exit", "42"]);
    assert.equal(rt(root, ["run", "--bundle", b1, uniqueId()]).code, 42);
    // pid 1 of a namespace ignores its own signals: the signal comes from outside, as docker kill does.
    const b2 = makeBundle(["/probe", "sleep", "30"]);
    const id = uniqueId();
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const run = spawn(process.execPath, [cli, "--root", root, "run", "--bundle", b2, id], { stdio: "ignore", env });
    const exited = new Promise<number>((res) => run.on("exit", (c) => res(c ?? -1)));
    await waitFor(() => JSON.parse(rt(root, ["state", id]).stdout || "{}").status === "running", "the container to run");
    ok(rt(root, ["kill", id, "9"]));
    assert.equal(await exited, 128 + 9);
    assert.deepEqual(JSON.parse(rt(root, ["list", "--format", "json"]).stdout), [], "run removes the container when it exits");
    rmSync(b1, { recursive: true });
    rmSync(b2, { recursive: true });
  });

  test("run forwards the signals it receives to the container", async () => {
    const b = makeBundle(["/probe", "wait-signal"]);
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const run = spawn(process.execPath, [cli, "--root", root, "run", "--bundle", b, uniqueId()], { stdio: ["ignore", "pipe", "inherit"], env });
    let out = "";
    run.stdout!.on("data", (d) => (out += d));
    const exited = new Promise<number>((res) => run.on("exit", (c) => res(c ?? -1)));
    await waitFor(() => out.includes("waiting"), "the probe to wait for a signal");
    run.kill("SIGTERM");
    assert.equal(await exited, 0);
    assert.match(out, /signal 15/);
    rmSync(b, { recursive: true });
  });

  test("run --detach leaves a running container; --keep keeps a stopped one", () => {
    const b = makeBundle(["/probe", "sleep", "60"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "running");
    ok(rt(root, ["delete", "--force", id]));
    const b2 = makeBundle(["/probe", "exit", "3"]);
    const id2 = uniqueId();
    assert.equal(rt(root, ["run", "--keep", "--bundle", b2, id2]).code, 3);
    assert.equal(JSON.parse(rt(root, ["state", id2]).stdout).status, "stopped");
    ok(rt(root, ["delete", id2]));
    rmSync(b, { recursive: true });
    rmSync(b2, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("kill delivers the named signal to pid 1 of the container; --all reaches every process", () => {
    const b = makeBundle(["/probe", "wait-signal"]);
    const id = uniqueId();
    const logFile = join(b, "out");
    writeFileSync(logFile, "");
    const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
    spec.process.args = ["/bin/sh", "-c", "exec /probe wait-signal > /tmp/out"];
    spec.mounts.push({ destination: "/tmp", type: "bind", source: b, options: ["rbind", "rw"] });
    writeFileSync(join(b, "config.json"), JSON.stringify(spec));
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    waitForSync(() => readFileSync(logFile, "utf8").includes("waiting"), "the probe to wait for a signal");
    ok(rt(root, ["kill", id, "SIGUSR1"]));
    waitForSync(() => readFileSync(logFile, "utf8").includes("signal"), "the probe to report the signal");
    assert.match(readFileSync(logFile, "utf8"), /signal 10/);
    const r = rt(root, ["kill", id, "NOSUCHSIG"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown signal "NOSUCHSIG"/);
    ok(rt(root, ["delete", "-f", id]));
    rmSync(b, { recursive: true });
  });

  test("pause freezes the container and resume thaws it", () => {
    const b = makeBundle(["/probe", "sleep", "60"]);
    const id = uniqueId();
    ok(rt(root, ["run", "-d", "--bundle", b, id]));
    const pid = JSON.parse(rt(root, ["state", id]).stdout).pid;
    ok(rt(root, ["pause", id]));
    assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "paused");
    assert.match(readFileSync(`/proc/${pid}/status`, "utf8"), /State:\s+[DS]/);
    ok(rt(root, ["resume", id]));
    assert.equal(JSON.parse(rt(root, ["state", id]).stdout).status, "running");
    ok(rt(root, ["delete", "-f", id]));
    rmSync(b, { recursive: true });
    assert.deepEqual(leaks(), []);
  });

  test("--log-format json writes a level:error record engines read", () => {
    const log = join(root, "log.json");
    const r = rt(root, ["--log", log, "--log-format", "json", "state", "nope"]);
    assert.equal(r.code, 1);
    const rec = JSON.parse(readFileSync(log, "utf8").trim().split("\n").pop()!);
    assert.equal(rec.level, "error");
    assert.match(rec.msg, /container nope does not exist/);
    assert.ok(!Number.isNaN(Date.parse(rec.time)));
  });

  test("flags as urfave/cli parses them: --flag=value and single-dash long flags", () => {
    const b = makeBundle(["/probe", "exit", "7"]);
    assert.equal(rt(root, ["run", `-bundle=${b}`, uniqueId()]).code, 7);
    assert.equal(rt(root, ["run", "-bundle", b, uniqueId()]).code, 7);
    const r = rt(root, ["run", "--bogus", uniqueId()]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /flag provided but not defined: -bogus/);
    const s = rt(root, ["--systemd-cgroup", "list"]);
    assert.equal(s.code, 1);
    assert.match(s.stderr, /systemd-cgroup is not supported/);
    rmSync(b, { recursive: true });
  });

  test("spec writes runc's default config.json and features lists what is supported", () => {
    const dir = makeBundle(["x"]);
    rmSync(join(dir, "config.json"));
    ok(rt(root, ["spec", "--bundle", dir]));
    const spec = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    assert.deepEqual(spec.process.args, ["sh"]);
    assert.equal(spec.root.path, "rootfs");
    // runc's template, field for field, where runc is installed
    const runc = spawnSync("sh", ["-c", "command -v runc"], { encoding: "utf8" }).stdout.trim();
    if (runc) {
      const other = join(dir, "runc");
      mkdirSync(other);
      assert.equal(spawnSync(runc, ["spec"], { cwd: other }).status, 0);
      assert.deepEqual(spec, JSON.parse(readFileSync(join(other, "config.json"), "utf8")));
    }
    assert.equal(rt(root, ["spec", "--bundle", dir]).code, 1, "refuses to overwrite");
    const f = JSON.parse(rt(root, ["features"]).stdout);
    assert.ok(f.linux.namespaces.includes("time"));
    assert.ok(f.hooks.includes("startContainer"));
    rmSync(dir, { recursive: true });
  });
});

describe("crash safety", { skip: rootSkip }, () => {
  test("a runtime killed in the middle of create leaves a record the next command reads and removes", async () => {
    const r2 = newRoot();
    const dir = makeBundle(["/probe", "sleep", "30"]);
    const hook = join(dir, "slow-hook.sh");
    const hookPid = join(dir, "hook.pid");
    writeFileSync(hook, `#!/bin/sh\necho $$ > ${hookPid}\nexec sleep 30\n`, { mode: 0o755 });
    const spec = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    spec.hooks = { createRuntime: [{ path: hook }] };
    writeFileSync(join(dir, "config.json"), JSON.stringify(spec));
    const id = uniqueId();
    const env = { ...process.env };
    delete env.NODE_EXTRA_CA_CERTS;
    const create = spawn(process.execPath, [cli, "--root", r2, "create", "--bundle", dir, id], { stdio: "ignore", env });
    // wait until the container exists and the hook runs, then kill the runtime outright
    await waitFor(() => rt(r2, ["list", "-q"]).stdout.includes(id) && existsSync(hookPid) && readFileSync(hookPid, "utf8").endsWith("\n"), "the create hook to run");
    create.kill("SIGKILL");
    await new Promise((r) => create.on("exit", r));
    const state = JSON.parse(rt(r2, ["state", id]).stdout);
    await waitFor(() => JSON.parse(rt(r2, ["state", id]).stdout).status === "stopped", "the half-made container to show as stopped").catch(() => {});
    assert.equal(JSON.parse(rt(r2, ["state", id]).stdout).status, "stopped", `was ${state.status}: the half-made container does not run`);
    assert.equal(rt(r2, ["delete", id]).code, 0);
    assert.equal(rt(r2, ["list", "-q"]).stdout, "");
    process.kill(Number(readFileSync(hookPid, "utf8")), "SIGKILL"); // the hook we started, by pid
    assert.deepEqual(leaks(), []);
    rmSync(dir, { recursive: true });
    rmSync(r2, { recursive: true });
  });
});
