/** berth doctor: what this host offers berth, and exactly how to fix what is missing. */
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "../../common/path.js";
import { release } from "node:os";
import { buildBinary } from "../../common/paths.js";
import type { Context } from "./context.js";
import { warmSocketPath } from "./warm.js";

type Level = "ok" | "warn" | "fail";
interface Check {
  level: Level;
  what: string;
  fix?: string;
}

const read = (p: string): string | undefined => {
  try {
    return fs.readFileSync(p, "utf8");
  } catch {
    // doctor reports what it cannot read as absent
    return undefined;
  }
};
const onPath = (cmd: string) => spawnSync("sh", ["-c", `command -v ${cmd}`], { encoding: "utf8" }).stdout.trim();

export function diagnose(root: string): Check[] {
  const out: Check[] = [];
  const add = (level: Level, what: string, fix?: string) => out.push({ level, what, ...(fix ? { fix } : {}) });
  const [major = 0, minor = 0] = release().split(/[.-]/).map(Number);
  if (major > 5 || (major === 5 && minor >= 6)) add("ok", `kernel ${release()}`);
  else add("warn", `kernel ${release()}: berth needs 5.6+ for openat2 (mount resolution) and close_range`, "upgrade the kernel");
  const ns = fs.readdirSync("/proc/self/ns");
  const want = ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];
  const missing = want.filter((n) => !ns.includes(n));
  if (missing.length) add("fail", `namespaces missing: ${missing.join(", ")}`, "use a kernel built with CONFIG_*_NS for them");
  else add("ok", `namespaces: ${want.join(", ")}`);
  const maxUserNs = Number(read("/proc/sys/user/max_user_namespaces")?.trim() ?? "0");
  if (maxUserNs > 0) add("ok", `user namespaces enabled (max ${maxUserNs})`);
  else add("warn", "user namespaces are disabled: rootless containers and --userns cannot work", "sysctl -w user.max_user_namespaces=15000");
  const mounts = read("/proc/self/mountinfo") ?? "";
  const v2 = /\s\/sys\/fs\/cgroup\s.*\scgroup2\s/.test(mounts);
  const v1 = /\scgroup\s/.test(mounts.split("\n").filter((l) => l.includes("/sys/fs/cgroup/")).join("\n"));
  if (v2 && !v1) {
    const ctrls = read("/sys/fs/cgroup/cgroup.controllers")?.trim().split(/\s+/) ?? [];
    const need = ["cpu", "cpuset", "memory", "pids", "io"].filter((c) => !ctrls.includes(c));
    if (need.length) add("warn", `cgroup v2 without controllers: ${need.join(", ")}`, `echo "+${need.join(" +")}" > /sys/fs/cgroup/cgroup.subtree_control`);
    else add("ok", "cgroup v2 (unified) with cpu, cpuset, memory, pids, io");
  } else if (v1) {
    const have = fs.readdirSync("/sys/fs/cgroup").filter((d) => !["unified", "systemd"].includes(d));
    const need = ["cpu", "cpuset", "memory", "pids", "blkio", "devices", "freezer"].filter((c) => !have.some((h) => h.split(",").includes(c)));
    if (need.length) add("warn", `cgroup v1 without controllers: ${need.join(", ")}`, "mount them under /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1 for v2)");
    else add("ok", `cgroup v1${v2 || fs.existsSync("/sys/fs/cgroup/unified") ? " (hybrid layout)" : ""} with cpu, cpuset, memory, pids, blkio, devices, freezer`);
  } else add("fail", "no cgroup file system at /sys/fs/cgroup", "mount -t cgroup2 none /sys/fs/cgroup");
  if (/\toverlay$/m.test(read("/proc/filesystems") ?? "")) add("ok", "overlayfs");
  else add("warn", "no overlayfs: images use the copy snapshotter (slower, more disk)", "modprobe overlay");
  const seccomp = /^Seccomp:/m.test(read("/proc/self/status") ?? "");
  if (seccomp) add("ok", "seccomp filters");
  else add("fail", "no seccomp in this kernel: berth's default profile cannot be applied", "use a kernel with CONFIG_SECCOMP_FILTER");
  const caps = BigInt(`0x${/^CapEff:\s+([0-9a-f]+)/m.exec(read("/proc/self/status") ?? "")?.[1] ?? "0"}`);
  if (process.getuid?.() !== 0) add("ok", `rootless: store ${root}, containers in user namespaces (cgroup limits need a delegated cgroup; bridge networks need root)`);
  if (!(caps & (1n << 24n))) add("warn", "no CAP_SYS_RESOURCE: containers cannot raise rlimits above this process's hard limits (podman's and docker's defaults do)", "run berth with CAP_SYS_RESOURCE (outside a restricted container)");
  else add("ok", "CAP_SYS_RESOURCE");
  const nofile = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(read("/proc/self/limits") ?? "");
  if (nofile) add(Number(nofile[2]) >= 65536 || nofile[2] === "unlimited" ? "ok" : "warn", `open files limit ${nofile[1]} (hard ${nofile[2]})`, Number(nofile[2]) >= 65536 ? undefined : "raise it: ulimit -n 1048576 (or LimitNOFILE= for a service)");
  const user = process.env.SUDO_USER ?? process.env.USER ?? "root";
  const sub = (f: string) => (read(f) ?? "").split("\n").some((l) => l.startsWith(`${user}:`));
  if (user === "root") add("ok", "running as root: subuid/subgid ranges are needed only for rootless users");
  else if (sub("/etc/subuid") && sub("/etc/subgid")) add("ok", `subuid/subgid ranges for ${user}`);
  else add("warn", `no /etc/subuid and /etc/subgid ranges for ${user}: rootless containers get only your own uid`, `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ${user}`);
  if (onPath("newuidmap") && onPath("newgidmap")) add("ok", "newuidmap/newgidmap (uidmap)");
  else add("warn", "newuidmap/newgidmap missing: rootless containers cannot use subuid ranges", "apt-get install uidmap");
  // rootless networking: pasta in the container's namespaces, with a tap device from /dev/net/tun
  if (onPath("pasta")) add("ok", "pasta (rootless networking)");
  else add(process.getuid?.() === 0 ? "warn" : "fail", "no pasta: rootless containers get no network (--network none only)", "apt-get install passt");
  try {
    fs.accessSync("/dev/net/tun", fs.constants.R_OK | fs.constants.W_OK);
    if ((fs.statSync("/dev/net/tun").mode & 0o006) === 0o006 || process.getuid?.() !== 0) add("ok", "/dev/net/tun open to users (rootless networking)");
    else add("warn", "/dev/net/tun is not open to other users: rootless containers cannot get a network", "chmod 0666 /dev/net/tun (as Debian's udev rule does)");
  } catch {
    // missing or not open to us: exactly what the line reports
    add(process.getuid?.() === 0 ? "warn" : "fail", "/dev/net/tun is missing or not open to you: rootless containers cannot get a network", "modprobe tun; chmod 0666 /dev/net/tun (as Debian's udev rule does)");
  }
  const nft = onPath("nft"),
    ipt = onPath("iptables");
  if (nft) add("ok", `packet filter: nftables${ipt ? " (iptables too)" : ""}`);
  else add("fail", "no nft: bridge networks (the default), published ports and NAT need berth's nftables table", "apt-get install nftables (or run --network none|host)");
  if (fs.existsSync("/usr/lib/cni/bridge") || fs.existsSync("/opt/cni/bin/bridge")) add("ok", "CNI plugins (for networks made with -d cni)");
  else add("warn", "no CNI plugins: only berth's own bridge networks", "apt-get install containernetworking-plugins (if you use CNI networks)");
  let forward = "1";
  try {
    forward = fs.readFileSync("/proc/sys/net/ipv4/ip_forward", "utf8").trim();
  } catch {
    /* no IPv4 */
  }
  if (forward === "1") add("ok", "IPv4 forwarding on (containers reach beyond this host)");
  else add("warn", "IPv4 forwarding is off: containers reach this host, not the networks beyond", "sysctl -w net.ipv4.ip_forward=1 (and in /etc/sysctl.d to keep it)");
  for (const bin of ["berth-helper", "berth-monitor", "berth-init", "berth-seccomp", "berth-net", "berth-sys.node"]) {
    try {
      const p = buildBinary(bin);
      fs.accessSync(p, fs.constants.X_OK);
      add("ok", `${bin} built (${p})`);
    } catch (e) {
      add("fail", `${bin}: ${(e as Error).message}`, "run ./install.sh (or sh scripts/build-helper.sh)");
    }
  }
  try {
    fs.mkdirSync(root, { recursive: true });
    fs.accessSync(root, fs.constants.W_OK);
    const fsType = spawnSync("stat", ["-f", "-c", "%T", root], { encoding: "utf8" }).stdout.trim();
    add(fsType === "overlayfs" ? "warn" : "ok", `store ${root} (${fsType})`, fsType === "overlayfs" ? "put the store on a real file system: overlay cannot stack on overlay" : undefined);
  } catch (e) {
    add("fail", `store ${root}: ${(e as Error).message}`, "run berth as root, or set BERTH_ROOT to a writable directory");
  }
  const warmSocket = warmSocketPath();
  if (globalThis.berthStart === "warm") add("ok", `warm processes (berth system warm on ${warmSocket}): commands start no Node`);
  else if (process.env.BERTH_WARM === "0") add("ok", "warm processes turned off for this command (BERTH_WARM=0)");
  else if (warmSocket && fs.existsSync(warmSocket)) add("warn", `${warmSocket} is there, but this command was not handed to a warm process (see the pool's log for why)`);
  else add("ok", "no warm processes: each command starts Node (berth system warm takes that start away)");
  try {
    const probe = join(root, "tmp");
    fs.mkdirSync(probe, { recursive: true });
  } catch {
    /* reported above */
  }
  return out;
}

export async function doctor(ctx: Context, _argv: string[]): Promise<number> {
  const checks = diagnose(ctx.engine().root);
  const mark = { ok: "ok  ", warn: "warn", fail: "FAIL" };
  for (const c of checks) process.stdout.write(`${mark[c.level]}  ${c.what}${c.fix ? `\n      fix: ${c.fix}` : ""}\n`);
  const fails = checks.filter((c) => c.level === "fail").length;
  const warns = checks.filter((c) => c.level === "warn").length;
  process.stdout.write(`\n${fails ? `${fails} problem${fails > 1 ? "s" : ""} stop berth from running containers here` : "berth can run containers here"}${warns ? `; ${warns} warning${warns > 1 ? "s" : ""}` : ""}.\n`);
  return fails ? 1 : 0;
}
