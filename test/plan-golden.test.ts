/**
 * Golden plans: the helper's plan for representative configs, compiled with a fixed description of
 * the host (PlanHost), so createPlan runs as a pure function, without root or a host like the one
 * described. The plans are kept in test/fixtures/plans/*.json with op names, one op a line, and
 * diffed in review: a change to what the helper is told to do shows there.
 * BERTH_UPDATE_GOLDEN=1 rewrites them.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { project } from "./helpers.js";
import { createPlan, type CreatePlanInput, type PlanHost, type PlanOp } from "../src/runtime/plan.js";
import { codeNames } from "../src/runtime/protocol.js";
import { defaultSpec, validateSpec, type Spec } from "../src/runtime/spec.js";

const dir = join(project, "test/fixtures/plans");
const update = process.env.BERTH_UPDATE_GOLDEN === "1";

/** A root engine's host on cgroup v2: the container's cgroup is cloned into, its devices filtered. */
const rootV2: PlanHost = {
  uid: 0,
  gid: 0,
  home: "/root",
  bindSources: { "/srv/data": "d", "/etc/berth-test.conf": "f", "/var/lib/berth/c1/hosts": "f" },
  idMapPrograms: {},
  kcore: true,
  hostProcMounts: [],
  hostNetworkPaths: [],
  cgroup: {
    entry: { joins: [], procs: ["/sys/fs/cgroup/berth/c1/cgroup.procs"], cloneInto: "/sys/fs/cgroup/berth/c1" },
    deviceFilter: { dir: "/sys/fs/cgroup/berth/c1", program: "b7000000000000009500000000000000" },
    mountSources: [{ name: "", dir: "/sys/fs/cgroup/berth/c1", v2: true }],
  },
};

/** A cgroup v1 host: the helper joins the cgroups before clone; a cgroup mount is runc's tmpfs of binds. */
const rootV1: PlanHost = {
  ...rootV2,
  cgroup: {
    entry: { joins: [{ dir: "/sys/fs/cgroup/cpu,cpuacct/berth/c1", back: "/sys/fs/cgroup/cpu,cpuacct/user.slice/tasks" }], procs: ["/sys/fs/cgroup/memory/berth/c1/cgroup.procs"] },
    mountSources: [
      { name: "cpu,cpuacct", dir: "/sys/fs/cgroup/cpu,cpuacct/berth/c1", v2: false },
      { name: "memory", dir: "/sys/fs/cgroup/memory/berth/c1", v2: false },
      { name: "unified", dir: "/sys/fs/cgroup/unified/berth/c1", v2: true },
    ],
  },
  hostProcMounts: ["/proc", "/sys"],
  hostNetworkPaths: ["/proc/1/ns/net"],
};

/** A user without root or cgroup delegation. */
const rootless: PlanHost = { ...rootV2, uid: 1000, gid: 1000, home: "/home/u", cgroup: undefined, idMapPrograms: { newuidmap: "/usr/bin/newuidmap", newgidmap: "/usr/bin/newgidmap" } };

function spec(edit: (s: Spec) => void = () => {}): Spec {
  const s = structuredClone(validateSpec(defaultSpec()));
  edit(s);
  return s;
}

const input = (s: Spec, extra: Partial<CreatePlanInput> = {}): CreatePlanInput => ({ spec: s, bundle: "/var/lib/berth/c1/bundle", rootfs: "/var/lib/berth/c1/rootfs", fifo: "/run/berth/c1/exec.fifo", ...extra });

const cases: Record<string, [CreatePlanInput, PlanHost]> = {
  // runc's `spec` template as it is: a terminal, the default mounts, masked paths
  "runc-default-v2": [input(spec()), rootV2],
  // what berth's engine sends for `docker run` with the usual options
  "docker-run-v2": [
    input(
      spec((s) => {
        const p = s.process!;
        p.terminal = false;
        p.args = ["/bin/server", "--port", "80"];
        p.env = ["PATH=/usr/bin:/bin", "A=1"];
        p.cwd = "/app";
        p.user = { uid: 1000, gid: 1000, additionalGids: [10, 20] };
        p.rlimits = [{ type: "RLIMIT_NOFILE", soft: 1024, hard: 4096 }];
        p.noNewPrivileges = true;
        p.oomScoreAdj = 100;
        p.capabilities = { bounding: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"], effective: ["CAP_NET_BIND_SERVICE"], permitted: ["CAP_CHOWN", "CAP_NET_BIND_SERVICE"], inheritable: [], ambient: [] };
        s.hostname = "web";
        s.root = { path: "rootfs", readonly: true };
        s.mounts!.push(
          { destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "ro", "rro", "rprivate"] },
          { destination: "/etc/app.conf", type: "bind", source: "/etc/berth-test.conf", options: ["bind", "rw"] },
          { destination: "/etc/hosts", type: "bind", source: "/var/lib/berth/c1/hosts", options: ["rbind", "rprivate", "ro"] },
          { destination: "/tmp", type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec", "size=65536k"] },
        );
        s.linux!.sysctl = { "net.ipv4.ip_forward": "1", "kernel.shmmax": "68719476736" };
        s.linux!.resources = { pids: { limit: 100 } };
      }),
      { seccomp: { program: "06000000000000000600ff7f", flags: 0 } as never },
    ),
    { ...rootV2, home: "/home/app" },
  ],
  // cgroup v1, namespaces joined by path, --no-pivot, a read-only /dev
  "joined-nopivot-v1": [
    input(
      spec((s) => {
        s.process!.terminal = false;
        s.linux!.namespaces = [{ type: "pid" }, { type: "mount" }, { type: "network", path: "/proc/42/ns/net" }, { type: "ipc", path: "/proc/42/ns/ipc" }, { type: "uts" }];
        s.mounts = s.mounts!.map((m) => (m.destination === "/dev" ? { ...m, options: [...(m.options ?? []), "ro"] } : m));
        s.linux!.devices = [{ path: "/dev/fuse", type: "c", major: 10, minor: 229, fileMode: 0o666, uid: 0, gid: 0 }];
      }),
      { noPivot: true },
    ),
    rootV1,
  ],
  // rootless, mapping only the user's own ids: setgroups denied before the gid map
  "rootless-own-ids": [
    input(
      spec((s) => {
        s.process!.terminal = false;
        s.linux!.namespaces!.push({ type: "user" });
        s.linux!.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
        s.linux!.gidMappings = [{ containerID: 0, hostID: 1000, size: 1 }];
        s.mounts = s.mounts!.filter((m) => m.type !== "cgroup");
        s.process!.user.additionalGids = undefined;
      }),
    ),
    rootless,
  ],
  // rootless with subordinate ids: newuidmap/newgidmap write the maps
  "rootless-subids": [
    input(
      spec((s) => {
        s.process!.terminal = false;
        s.linux!.namespaces!.push({ type: "user" });
        s.linux!.uidMappings = [{ containerID: 0, hostID: 1000, size: 1 }, { containerID: 1, hostID: 100000, size: 65536 }];
        s.linux!.gidMappings = [{ containerID: 0, hostID: 1000, size: 1 }, { containerID: 1, hostID: 100000, size: 65536 }];
      }),
    ),
    rootless,
  ],
  // root's container in a user namespace: bind sources cloned by the runtime first (mount fds)
  "userns-root-binds": [
    input(
      spec((s) => {
        s.process!.terminal = false;
        s.linux!.namespaces!.push({ type: "user" });
        s.linux!.uidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
        s.linux!.gidMappings = [{ containerID: 0, hostID: 100000, size: 65536 }];
        s.mounts!.push({ destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "ro"] }, { destination: "/etc/app.conf", type: "bind", source: "/etc/berth-test.conf", options: ["bind"] });
      }),
    ),
    rootV2,
  ],
  // hooks, an idmapped bind, a time namespace, shared propagation, a foreground run
  "hooks-idmap-time-shared": [
    input(
      spec((s) => {
        s.process!.terminal = false;
        s.linux!.namespaces!.push({ type: "time" });
        s.linux!.timeOffsets = { monotonic: { secs: 3600, nanosecs: 0 }, boottime: { secs: 60 } };
        s.linux!.rootfsPropagation = "shared";
        s.mounts!.push({ destination: "/data", type: "bind", source: "/srv/data", options: ["rbind", "idmap"], uidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }], gidMappings: [{ containerID: 0, hostID: 100000, size: 65536 }] });
        s.hooks = { createContainer: [{ path: "/usr/bin/hook", args: ["hook", "create"] }], startContainer: [{ path: "/bin/true", args: ["true"], env: ["X=1"], timeout: 5 }] };
      }),
      { hookSync: true, foreground: true, hookState: '{"pid":@@PID@@}', sessionKeyring: "c1" },
    ),
    rootV2,
  ],
};

/** One op a line, named: readable in a diff. */
function render(ops: PlanOp[]): string {
  return `[\n${ops.map(([code, ...args]) => `  ${JSON.stringify([codeNames[code] ?? code, ...args])}`).join(",\n")}\n]\n`;
}

test("plans for representative configs match their golden files (BERTH_UPDATE_GOLDEN=1 rewrites them)", () => {
  if (update) mkdirSync(dir, { recursive: true });
  for (const [name, [inp, host]] of Object.entries(cases)) {
    const text = render(createPlan(structuredClone(inp), host));
    const file = join(dir, `${name}.json`);
    if (update) writeFileSync(file, text);
    assert.ok(existsSync(file), `${file} is missing: run with BERTH_UPDATE_GOLDEN=1 and review it`);
    assert.equal(text, readFileSync(file, "utf8"), `the plan for ${name} changed: review the diff, then BERTH_UPDATE_GOLDEN=1`);
  }
});

test("createPlan is pure: the same input and host give the same plan, whatever host it runs on", () => {
  const [inp, host] = cases["docker-run-v2"]!;
  assert.equal(render(createPlan(structuredClone(inp), host)), render(createPlan(structuredClone(inp), structuredClone(host))));
  // a bind source the host description lacks is refused, without looking at this machine
  const missing = { ...host, bindSources: {} };
  assert.throws(() => createPlan(structuredClone(inp), missing), /bind source \/srv\/data for \/data does not exist/);
  // net.* sysctls in the host's own network namespace are refused from the description too
  const [v1in, v1host] = cases["joined-nopivot-v1"]!;
  const withSysctl = structuredClone(v1in);
  withSysctl.spec.linux!.namespaces = withSysctl.spec.linux!.namespaces!.map((n) => (n.type === "network" ? { type: "network", path: "/proc/1/ns/net" } : n));
  withSysctl.spec.linux!.sysctl = { "net.ipv4.ip_forward": "1" };
  assert.throws(() => createPlan(withSysctl, v1host), /not allowed in the host's network namespace/);
  // rootless with subordinate ids and no uidmap package: said so
  const [subIn] = cases["rootless-subids"]!;
  assert.throws(() => createPlan(structuredClone(subIn), { ...rootless, idMapPrograms: {} }), /newuidmap is not installed/);
});
