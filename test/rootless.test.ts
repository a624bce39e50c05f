/**
 * Rootless: a non-root user (created by this test, removed after) runs containers with
 * berth-runtime — mapping only its own id, and a range from /etc/subuid through newuidmap.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, chownSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, leaks, makeBundle, rootlessSkip, tempDir, which, type AnySpec } from "./helpers.js";

const user = "berthrl";
const skip = rootlessSkip();

describe("rootless berth-runtime", { skip }, () => {
  let uid = 0;
  let gid = 0;
  const saved: Record<string, string | undefined> = {};
  const home = tempDir("berth-test-rootless-");

  before(() => {
    spawnSync("userdel", [user]); // a leftover from an interrupted run
    const r = spawnSync("useradd", ["-M", "-d", home, "-s", "/bin/sh", user], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    uid = Number(spawnSync("id", ["-u", user], { encoding: "utf8" }).stdout);
    gid = Number(spawnSync("id", ["-g", user], { encoding: "utf8" }).stdout);
    chownSync(home, uid, gid);
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      saved[f] = existsSync(f) ? readFileSync(f, "utf8") : undefined;
      writeFileSync(f, (saved[f] ?? "") + `${user}:300000:65536\n`);
    }
  });

  after(() => {
    for (const f of ["/etc/subuid", "/etc/subgid"]) {
      if (saved[f] === undefined) rmSync(f, { force: true });
      else writeFileSync(f, saved[f]!);
    }
    spawnSync("userdel", [user]);
    rmSync(home, { recursive: true, force: true });
  });

  /** A bundle the user owns, in the shape `berth-runtime spec --rootless` gives. */
  function bundle(args: string[], maps: "own" | "subuid"): string {
    const b = makeBundle(args, (s: AnySpec) => {
      s.linux.namespaces.push({ type: "user" });
      const m =
        maps === "own"
          ? { u: [{ containerID: 0, hostID: uid, size: 1 }], g: [{ containerID: 0, hostID: gid, size: 1 }] }
          : { u: [{ containerID: 0, hostID: uid, size: 1 }, { containerID: 1, hostID: 300000, size: 65535 }], g: [{ containerID: 0, hostID: gid, size: 1 }, { containerID: 1, hostID: 300000, size: 65535 }] };
      s.linux.uidMappings = m.u;
      s.linux.gidMappings = m.g;
      s.mounts = s.mounts.filter((x: { type: string }) => x.type !== "cgroup");
      // as `spec --rootless`: gid 5 (tty) is not mapped when only the user's own id is
      if (maps === "own") for (const x of s.mounts) if (x.type === "devpts") x.options = x.options.filter((o: string) => o !== "gid=5");
      s.mounts.push({ destination: "/sys/fs/cgroup", type: "bind", source: "/sys/fs/cgroup", options: ["rbind", "nosuid", "noexec", "nodev", "ro"] });
      delete s.linux.resources;
    });
    chownSync(b, uid, gid);
    chownSync(join(b, "config.json"), uid, gid);
    return b;
  }

  /** Output through files, not pipes: a detached container keeps its stdio (see rt() in helpers). */
  function asUser(args: string[]) {
    const env = { PATH: "/usr/bin:/bin", HOME: home };
    const out = join(home, "out");
    const err = join(home, "err");
    const fds = [openSync(out, "w+"), openSync(err, "w+")];
    const r = spawnSync(which("runuser"), ["-u", user, "--", process.execPath, cli, "--root", join(home, "state"), ...args], { stdio: ["ignore", fds[0]!, fds[1]!], env, timeout: 30_000 });
    fds.forEach((fd) => closeSync(fd));
    return { code: r.status ?? 128, stdout: readFileSync(out, "utf8"), stderr: readFileSync(err, "utf8") };
  }

  test("the /tmp fallback for state (no XDG_RUNTIME_DIR) is used only when it is the user's own, mode 0700", () => {
    const dir = `/tmp/berth-runtime-${uid}`;
    rmSync(dir, { recursive: true, force: true });
    const list = () => {
      const r = spawnSync(which("runuser"), ["-u", user, "--", process.execPath, cli, "list"], { env: { PATH: "/usr/bin:/bin", HOME: home }, encoding: "utf8", timeout: 30_000 });
      return { code: r.status ?? 128, stderr: r.stderr };
    };
    try {
      // planted by someone else (root here), open to all
      mkdirSync(dir, { mode: 0o777 });
      chmodSync(dir, 0o777);
      let r = list();
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`${dir} belongs to uid 0, not a private directory of uid ${uid}: remove it, or set XDG_RUNTIME_DIR`));
      assert.equal(existsSync(join(dir, "berth")), false, "nothing was written into it");
      rmSync(dir, { recursive: true });
      symlinkSync(home, dir);
      assert.match(list().stderr, /is a symlink, not a private directory/);
      rmSync(dir);
      // missing: made 0700 and used
      r = list();
      assert.equal(r.code, 0, r.stderr);
      const st = statSync(dir);
      assert.equal(st.uid, uid);
      assert.equal(st.mode & 0o777, 0o700);
      chmodSync(dir, 0o755);
      assert.match(list().stderr, /has mode 755, not a private directory/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("maps only the user's own id: root inside, the user outside", () => {
    const b = bundle(["/bin/sh", "-c", "/probe id; cat /proc/self/uid_map; /probe hostname | head -1"], "own");
    const r = asUser(["run", "--bundle", b, "rl1"]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split("\n");
    assert.match(lines[0]!, /^uid=0 gid=0 euid=0 egid=0/);
    assert.match(lines[1]!, new RegExp(`^\\s*0\\s+${uid}\\s+1$`));
    assert.equal(lines[2], "berth-test");
    rmSync(b, { recursive: true });
  });

  test("maps a range from /etc/subuid and /etc/subgid through newuidmap and newgidmap", () => {
    const b = bundle(["/bin/sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map; /probe id"], "subuid");
    const r = asUser(["run", "--bundle", b, "rl2"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^\\s*0\\s+${uid}\\s+1\\n\\s*1\\s+300000\\s+65535\\n`));
    assert.match(r.stdout, /uid=0 gid=0/);
    rmSync(b, { recursive: true });
  });

  test("create, start, exec, kill and delete as the user; nothing left behind", () => {
    const b = bundle(["/probe", "sleep", "30"], "subuid");
    const r = asUser(["run", "-d", "--bundle", b, "rl3"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(asUser(["state", "rl3"]).stdout).status, "running", r.stderr);
    const e = asUser(["exec", "rl3", "/probe", "id"]);
    assert.equal(e.code, 0, e.stderr);
    assert.match(e.stdout, /^uid=0 /);
    assert.equal(asUser(["delete", "-f", "rl3"]).code, 0);
    assert.equal(asUser(["list", "-q"]).stdout, "");
    assert.deepEqual(leaks(), []);
    rmSync(b, { recursive: true });
  });

  test("clear errors: ids the user may not map, and limits without a delegated cgroup", () => {
    const b = bundle(["/probe", "id"], "own");
    const spec = JSON.parse(readFileSync(join(b, "config.json"), "utf8"));
    spec.linux.uidMappings = [{ containerID: 0, hostID: 0, size: 1 }];
    writeFileSync(join(b, "config.json"), JSON.stringify(spec));
    let r = asUser(["run", "--bundle", b, "rl4"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /newuidmap .* failed .* check \/etc\/subuid and \/etc\/subgid/);
    spec.linux.uidMappings = [{ containerID: 0, hostID: uid, size: 1 }];
    spec.linux.resources = { memory: { limit: 64 * 1024 * 1024 } };
    writeFileSync(join(b, "config.json"), JSON.stringify(spec));
    r = asUser(["run", "--bundle", b, "rl5"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /rootless: cannot create cgroup .* linux.resources cannot be applied/);
    assert.equal(asUser(["list", "-q"]).stdout, "");
    rmSync(b, { recursive: true });
  });
});
