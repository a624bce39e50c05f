/**
 * berth's default seccomp profile: Docker's verdicts (imported from Docker 20.10's default.json),
 * specialised for a container's bounding capabilities and the host's architecture the way dockerd
 * does it — rules that need a capability appear only when the container has it (mount, unshare,
 * setns, keyctl… stay denied without CAP_SYS_ADMIN).
 */
import { release } from "node:os";
import { archMap, defaultAction, defaultRules } from "./default-seccomp.js";
import type { Seccomp } from "./seccomp.js";

/** Node's process.arch → Docker's arch names in the profile, and the seccomp arch with sub-arches. */
const archs: Record<string, { docker: string; seccomp: string }> = {
  x64: { docker: "amd64", seccomp: "SCMP_ARCH_X86_64" },
  arm64: { docker: "arm64", seccomp: "SCMP_ARCH_AARCH64" },
  arm: { docker: "arm", seccomp: "SCMP_ARCH_ARM" },
  ia32: { docker: "x86", seccomp: "SCMP_ARCH_X86" },
  ppc64: { docker: "ppc64le", seccomp: "SCMP_ARCH_PPC64LE" },
  s390x: { docker: "s390x", seccomp: "SCMP_ARCH_S390X" },
  riscv64: { docker: "riscv64", seccomp: "SCMP_ARCH_RISCV64" },
};

function kernelAtLeast(want: string, have: string): boolean {
  const [a = 0, b = 0] = want.split(".").map(Number);
  const [c = 0, d = 0] = have.split(/[.-]/).map(Number);
  return c > a || (c === a && d >= b);
}

export function defaultSeccomp(opts: { capabilities: readonly string[]; arch?: string; kernel?: string }): Seccomp {
  const arch = archs[opts.arch ?? process.arch];
  const kernel = opts.kernel ?? release();
  const caps = new Set(opts.capabilities);
  const syscalls = defaultRules
    .filter((r) => {
      if (r.notArches && arch && r.notArches.includes(arch.docker)) return false;
      if (r.notCaps?.some((c) => caps.has(c))) return false;
      if (r.onlyArches && (!arch || !r.onlyArches.includes(arch.docker))) return false;
      if (r.onlyCaps && !r.onlyCaps.every((c) => caps.has(c))) return false;
      if (r.minKernel && !kernelAtLeast(r.minKernel, kernel)) return false;
      return true;
    })
    .map((r) => ({ names: r.names, action: r.action, ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}), ...(r.args ? { args: r.args } : {}) }));
  const profile: Seccomp = { defaultAction, syscalls };
  if (arch && archMap[arch.seccomp]) profile.architectures = [arch.seccomp, ...archMap[arch.seccomp]!];
  return profile;
}
