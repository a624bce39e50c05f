/**
 * berth's default seccomp profile gives Docker's verdict for every syscall: both are compiled with
 * libseccomp and run through a BPF interpreter for every syscall number of each architecture, with
 * and without the capabilities that widen the profile. Docker 20.10's default.json (from Debian's
 * golang-github-docker-docker-dev) is the oracle, specialised here the way dockerd's setupSeccomp does.
 * Then: what a container with Docker's default posture can and cannot do, from inside.
 */
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { release } from "node:os";
import {
  allCapabilities,
  auditArch,
  compileSeccomp,
  defaultSeccomp,
  dockerDefaultCapabilities,
  dockerMaskedPaths,
  dockerReadonlyPaths,
  evaluateSeccomp,
  x32SyscallBit,
  type Seccomp,
} from "../src/security/index.js";
import { project, rootSkip, runIn, tempDir } from "./helpers.js";

const oraclePath = [join(project, "build/cache/docker-seccomp-default.json"), "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json"].find((p) => existsSync(p));
const haveCompiler = existsSync(join(project, "build/berth-seccomp"));

/** dockerd's setupSeccomp (profiles/seccomp/seccomp_linux.go), written again for the test. */
function dockerProfile(d: any, goarch: string, seccompArch: string, bounding: readonly string[]): Seccomp {
  const kernelAtLeast = (v: string) => {
    const [a, b] = v.split(".").map(Number);
    const [c, e] = release().split(/[.-]/).map(Number);
    return c! > a! || (c === a && e! >= b!);
  };
  const syscalls = [];
  for (const call of d.syscalls) {
    const inc = call.includes ?? {};
    const exc = call.excludes ?? {};
    if (exc.arches?.includes(goarch)) continue;
    if (exc.caps?.some((c: string) => bounding.includes(c))) continue;
    if (exc.minKernel && kernelAtLeast(exc.minKernel)) continue;
    if (inc.arches?.length && !inc.arches.includes(goarch)) continue;
    if (inc.caps?.length && !inc.caps.every((c: string) => bounding.includes(c))) continue;
    if (inc.minKernel && !kernelAtLeast(inc.minKernel)) continue;
    syscalls.push({ names: call.names, action: call.action, errnoRet: call.errnoRet, args: call.args ?? undefined });
  }
  const map = d.archMap.find((a: any) => a.architecture === seccompArch);
  return { defaultAction: d.defaultAction, architectures: [map.architecture, ...map.subArchitectures], syscalls };
}

const argVectors: bigint[][] = [
  [],
  ...[8n, 0x20000n, 0x20008n, 0xffffffffn, 3n].map((p) => [p]), // personality
  [0x10000000n], // clone(CLONE_NEWUSER)
  [0x01200011n], // clone as fork(2) does
  [2n, 1n, 0n], // socket(AF_INET, SOCK_STREAM)
];

describe("berth's default seccomp profile against Docker's", { skip: !oraclePath ? "Docker's default.json is not available (npm test fetches it as root)" : !haveCompiler ? "berth-seccomp not built" : false }, () => {
  const docker = oraclePath ? JSON.parse(readFileSync(oraclePath, "utf8")) : undefined;
  const cache = tempDir();
  const targets = [
    { node: "x64", goarch: "amd64", seccomp: "SCMP_ARCH_X86_64", probes: [{ arch: auditArch.x86_64, nrs: 460, bit: 0 }, { arch: auditArch.x86_64, nrs: 560, bit: x32SyscallBit }, { arch: auditArch.x86, nrs: 460, bit: 0 }] },
    { node: "arm64", goarch: "arm64", seccomp: "SCMP_ARCH_AARCH64", probes: [{ arch: auditArch.aarch64, nrs: 460, bit: 0 }, { arch: auditArch.arm, nrs: 460, bit: 0 }] },
  ];
  const capSets: [string, readonly string[]][] = [
    ["Docker's 14 default capabilities", dockerDefaultCapabilities],
    ["the defaults plus CAP_SYS_ADMIN", [...dockerDefaultCapabilities, "CAP_SYS_ADMIN"]],
    ["every capability", allCapabilities],
  ];
  for (const t of targets)
    for (const [label, caps] of capSets)
      test(`${t.goarch}, ${label}: the same verdict for every syscall`, () => {
        const ours = compileSeccomp(defaultSeccomp({ capabilities: caps, arch: t.node }), cache);
        const theirs = compileSeccomp(dockerProfile(docker, t.goarch, t.seccomp, caps), cache);
        let compared = 0;
        const differ: string[] = [];
        for (const p of t.probes)
          for (let nr = 0; nr < p.nrs; nr++)
            for (const args of argVectors) {
              const data = { nr: nr | p.bit, arch: p.arch, args };
              const a = evaluateSeccomp(ours.program, data);
              const b = evaluateSeccomp(theirs.program, data);
              compared++;
              if (a !== b && differ.length < 10) differ.push(`arch ${p.arch.toString(16)} nr ${nr | p.bit} args ${args}: berth ${a.toString(16)} docker ${b.toString(16)}`);
            }
        assert.deepEqual(differ, []);
        assert.equal(compared, t.probes.reduce((n, p) => n + p.nrs, 0) * argVectors.length);
      });

  test("the verdicts that matter: mount, unshare and keyctl need CAP_SYS_ADMIN; getpid is allowed", () => {
    const plain = compileSeccomp(defaultSeccomp({ capabilities: dockerDefaultCapabilities, arch: "x64" }), cache);
    const admin = compileSeccomp(defaultSeccomp({ capabilities: [...dockerDefaultCapabilities, "CAP_SYS_ADMIN"], arch: "x64" }), cache);
    const x86_64 = (nr: number, args: bigint[] = []) => ({ nr, arch: auditArch.x86_64, args });
    const ALLOW = 0x7fff0000;
    const EPERM = 0x00050001;
    // x86_64 numbers: getpid 39, mount 165, unshare 272, setns 308, clone 56 (with CLONE_NEWUSER)
    assert.equal(evaluateSeccomp(plain.program, x86_64(39)), ALLOW);
    for (const nr of [165, 272, 308]) {
      assert.equal(evaluateSeccomp(plain.program, x86_64(nr)), EPERM, `syscall ${nr} without CAP_SYS_ADMIN`);
      assert.equal(evaluateSeccomp(admin.program, x86_64(nr)), ALLOW, `syscall ${nr} with CAP_SYS_ADMIN`);
    }
    assert.equal(evaluateSeccomp(plain.program, x86_64(56, [0x10000000n])), EPERM, "clone(CLONE_NEWUSER)");
    assert.equal(evaluateSeccomp(plain.program, x86_64(56, [0x01200011n])), ALLOW, "clone as fork");
    rmSync(cache, { recursive: true, force: true });
  });
});

describe("from inside a container with Docker's default posture", { skip: rootSkip || (!haveCompiler ? "berth-seccomp not built" : false) }, () => {
  const posture = (s: any) => {
    const caps = [...dockerDefaultCapabilities];
    s.process.capabilities = { bounding: caps, effective: caps, permitted: caps };
    s.process.noNewPrivileges = false;
    s.linux.seccomp = defaultSeccomp({ capabilities: caps });
    s.linux.maskedPaths = [...dockerMaskedPaths];
    s.linux.readonlyPaths = [...dockerReadonlyPaths];
  };

  test("cannot mount, unshare a user namespace, load modules, write /proc/sys or read /proc/kcore; sees only its processes", () => {
    const script = [
      "mkdir -p /tmp/m; mount -t tmpfs none /tmp/m 2>/dev/null; echo mount=$?",
      "unshare -U true 2>/dev/null; echo unshare=$?",
      "insmod /probe 2>&1 | grep -c 'Operation not permitted'",
      "/probe write /proc/sys/kernel/hostname x | cut -d: -f2",
      "cat /proc/kcore 2>/dev/null | head -c 1 | wc -c",
      "ps -o pid | tail -n +2 | wc -l",
    ].join("; ");
    const r = runIn(["/bin/sh", "-c", script], (s) => {
      posture(s);
      s.mounts.push({ destination: "/tmp", type: "tmpfs", source: "tmpfs" });
    });
    assert.equal(r.code, 0, r.stderr);
    const out = r.stdout.trim().split("\n");
    assert.equal(out[0], "mount=1");
    assert.equal(out[1], "unshare=1");
    assert.equal(out[2], "1", "init_module is refused");
    assert.equal(out[3], " Read-only file system");
    assert.equal(out[4], "0", "/proc/kcore gives nothing");
    assert.ok(Number(out[5]) <= 4, `sees ${out[5]} processes: sh, ps and its pipeline only`);
  });

  test("/proc/self/status shows exactly the default capability set and Seccomp: 2", () => {
    const r = runIn(["/probe", "status"], posture);
    assert.equal(r.code, 0, r.stderr);
    const mask = dockerDefaultCapabilities.reduce((m, c) => m | (1n << BigInt(allCapabilities.indexOf(c))), 0n);
    for (const set of ["CapEff", "CapPrm", "CapBnd"]) assert.equal(BigInt("0x" + new RegExp(`${set}:\\s+([0-9a-f]+)`).exec(r.stdout)![1]), mask, set);
    assert.match(r.stdout, /Seccomp:\s+2/);
  });
});
