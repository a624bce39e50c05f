/**
 * Rootless berth: a user made by this test (removed after) runs containers with the berth CLI —
 * its own store, a user namespace with its /etc/subuid range, the overlay mounted inside the
 * container, pasta networking with a published port reached from the host, exec, rm.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { httpGet, project, rootlessSkip, tempDir, which } from "./helpers.js";
import { berthCommand, sh } from "./image-helpers.js";

const user = "berthrle";
const skip = rootlessSkip();
const noPasta = which("pasta") ? false : "needs pasta (Debian: passt)";
const fetch = (port: number) => httpGet(port, 2000);

describe("rootless berth (the engine as an unprivileged user)", { skip }, () => {
  const home = tempDir("berth-test-rootless-engine-");
  let uid = 0;
  const saved: Record<string, string | undefined> = {};
  let tunMode: number | undefined;

  /** berth as the user, with its own HOME (its store: ~/.local/share/berth). */
  const berth = (args: string[], timeout = 60_000) => {
    // its runtime state under its home too (else /tmp/berth-<uid>): the test removes one directory
    const env: Record<string, string> = { HOME: home, XDG_RUNTIME_DIR: join(home, "run"), PATH: process.env.PATH ?? "/usr/bin:/bin", LANG: "C" };
    const r = spawnSync("runuser", ["-u", user, "--", process.execPath, ...berthCommand(), ...args], { env, encoding: "utf8", timeout, cwd: home });
    return { code: r.status ?? 128, stdout: r.stdout ?? "", stderr: (r.stderr ?? "") + (r.error ? String(r.error) : "") };
  };
  const ok = (args: string[]) => {
    const r = berth(args);
    assert.equal(r.code, 0, `berth ${args.join(" ")}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  };
  const userProcesses = () =>
    sh("ps", ["-u", user, "-o", "pid=,stat=,comm="])
      .split("\n")
      .map((l) => l.trim().split(/\s+/))
      .filter((f) => f[0] && !f[1]!.startsWith("Z"));

  before(() => {
    spawnSync("userdel", [user]); // a leftover from an interrupted run
    const r = spawnSync("useradd", ["-M", "-d", home, "-s", "/bin/sh", user], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    uid = Number(spawnSync("id", ["-u", user], { encoding: "utf8" }).stdout);
    const gid = Number(spawnSync("id", ["-g", user], { encoding: "utf8" }).stdout);
    chownSync(home, uid, gid);
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      saved[f] = existsSync(f) ? readFileSync(f, "utf8") : undefined;
      // useradd may have given the user a range already: this test's is the one it checks
      const kept = (saved[f] ?? "").split("\n").filter((l) => l && !l.startsWith(`${user}:`));
      writeFileSync(f, [...kept, `${user}:200000:65536`, ""].join("\n"));
    }
    // a standard Debian has /dev/net/tun open to all (udev's rule); this VM may not: as udev would, for the test only
    if (!noPasta && existsSync("/dev/net/tun")) {
      tunMode = statSync("/dev/net/tun").mode & 0o777;
      chmodSync("/dev/net/tun", 0o666);
    }
    const tarball = join(home, "busybox.tar");
    sh("tar", ["-C", join(project, "build/fixtures/busybox/rootfs"), "-cf", tarball, "."]);
    chownSync(tarball, uid, gid);
    ok(["import", "-c", 'CMD ["sh"]', tarball, "busybox:latest"]);
  });

  after(() => {
    // this test's user's processes only (monitors, pasta), by pid
    for (const [pid] of userProcesses()) spawnSync("kill", ["-9", pid!]);
    if (tunMode !== undefined) chmodSync("/dev/net/tun", tunMode);
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      if (saved[f] === undefined) rmSync(f, { force: true });
      else writeFileSync(f, saved[f]!);
    }
    spawnSync("userdel", [user]);
    rmSync(home, { recursive: true, force: true });
  });

  test("a container runs as the user's root, with ids 1.. from /etc/subuid, in the user's own store", () => {
    const out = ok(["run", "--rm", "--network", "none", "busybox", "sh", "-c", "id -u; cat /proc/self/uid_map"]).split("\n");
    assert.equal(out[0], "0");
    const maps = out.slice(1).map((l) => l.trim().split(/\s+/).join(" ")).filter(Boolean);
    assert.deepEqual(maps, [`0 ${uid} 1`, "1 200000 65536"]);
    assert.ok(existsSync(join(home, ".local/share/berth/containers")), "the store is under ~/.local/share/berth");
  });

  test("the rootfs is an overlay mounted inside the container, never on the host; changes land in the container's layer", () => {
    const id = ok(["run", "-d", "--network", "none", "--name", "keep", "busybox", "sleep", "60"]).trim();
    try {
      const inside = ok(["exec", "keep", "sh", "-c", "echo made > /made; grep ' / ' /proc/mounts"]);
      assert.match(inside, /^overlay \/ overlay /m);
      assert.ok(!readFileSync("/proc/self/mountinfo", "utf8").includes(home), "nothing of the user's store is mounted on the host");
      const upper = join(home, ".local/share/berth/snapshots/overlay/active", id, "upper/made");
      assert.equal(readFileSync(upper, "utf8"), "made\n");
      assert.equal(statSync(upper).uid, uid, "the container's root is the user on the host");
      // cp both ways goes through the running container's root
      ok(["cp", "keep:/made", join(home, "copied")]);
      assert.equal(readFileSync(join(home, "copied"), "utf8"), "made\n");
      ok(["cp", join(home, "copied"), "keep:/back"]);
      assert.equal(ok(["exec", "keep", "cat", "/back"]), "made\n");
    } finally {
      ok(["rm", "-f", "keep"]);
    }
  });

  test("another user inside the container: its files belong to a subordinate id, and go with the container", () => {
    const out = ok(["run", "--rm", "--network", "none", "-u", "1000", "busybox", "sh", "-c", "mkdir -p /tmp/x/y && echo z > /tmp/x/y/z && id -u && stat -c %u /tmp/x/y/z"]);
    assert.deepEqual(out.trim().split("\n"), ["1000", "1000"]);
    assert.equal(ok(["ps", "-aq"]).trim(), "", "--rm removed it");
    assert.deepEqual(readdirSync(join(home, ".local/share/berth/snapshots/overlay/active")), [], "its layer (files of uid 201000 on the host) is gone");
  });

  test("pasta: a published port reached from the host's loopback; pasta leaves with the container", { skip: noPasta }, async () => {
    const port = 20000 + (process.pid % 20000);
    ok(["run", "-d", "--name", "web", "-p", `127.0.0.1:${port}:80`, "busybox", "sh", "-c", "mkdir /www && echo rootless-ok > /www/index.html && exec httpd -f -p 80 -h /www"]);
    try {
      assert.equal(ok(["port", "web"]).trim(), `80/tcp -> 127.0.0.1:${port}`);
      let body = "";
      for (const deadline = Date.now() + 10_000; body !== "rootless-ok\n" && Date.now() < deadline; ) {
        body = await fetch(port).catch(() => "");
        if (body !== "rootless-ok\n") await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(body, "rootless-ok\n");
      assert.match(ok(["exec", "web", "ip", "-4", "addr", "show", "eth0"]), /inet /, "pasta's interface is in the container");
    } finally {
      ok(["rm", "-f", "web"]);
    }
    assert.deepEqual(userProcesses().filter((p) => /pasta|passt/.test(p[2]!)), [], "no pasta left running");
    await assert.rejects(fetch(port), "the port is closed");
  });

  test("bad input: bridge networks and cgroup limits need root, said in one line (exit 125), nothing left", () => {
    const net = berth(["network", "create", "mynet"]);
    assert.notEqual(net.code, 0);
    assert.match(net.stderr, /^Error: rootless berth cannot create bridge networks \(they need root\)/);
    const mem = berth(["run", "--rm", "--network", "none", "--memory", "32m", "busybox", "true"]);
    assert.equal(mem.code, 125);
    assert.match(mem.stderr, /rootless: cannot create cgroup/);
    assert.equal(ok(["ps", "-aq"]).trim(), "");
    ok(["create", "--name", "layers", "--network", "none", "busybox", "true"]);
    const cp = berth(["cp", "layers:/etc/passwd", "-"]);
    assert.equal(cp.code, 1);
    assert.match(cp.stderr, /^Error: rootless berth cannot mount a stopped container's layers on the host/);
    ok(["rm", "layers"]);
  });
});
