/**
 * berth's default seccomp profile: Docker's verdicts (imported from Docker 20.10's default.json),
 * specialised for a container's bounding capabilities and the host's architecture the way dockerd
 * does it — rules that need a capability appear only when the container has it (mount, unshare,
 * setns, keyctl… stay denied without CAP_SYS_ADMIN).
 */
import { release } from "node:os";
import { archMap, defaultAction, defaultRules } from "./default-seccomp.js";
import { invalid } from "../common/errors.js";
import type { DefaultRule, Seccomp } from "./seccomp.js";

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
  return specialise(defaultRules, defaultAction, archMap, undefined, opts);
}

/** A rule set with docker's includes/excludes, kept to what applies to these capabilities, arch and kernel. */
function specialise(rules: DefaultRule[], action: string, arches: Record<string, string[]>, errnoRet: number | undefined, opts: { capabilities: readonly string[]; arch?: string; kernel?: string }): Seccomp {
  const arch = archs[opts.arch ?? process.arch];
  const kernel = opts.kernel ?? release();
  const caps = new Set(opts.capabilities);
  const syscalls = rules
    .filter((r) => {
      if (r.notArches && arch && r.notArches.includes(arch.docker)) return false;
      if (r.notCaps?.some((c) => caps.has(c))) return false;
      if (r.onlyArches && (!arch || !r.onlyArches.includes(arch.docker))) return false;
      if (r.onlyCaps && !r.onlyCaps.every((c) => caps.has(c))) return false;
      if (r.minKernel && !kernelAtLeast(r.minKernel, kernel)) return false;
      return true;
    })
    .map((r) => ({ names: r.names, action: r.action, ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}), ...(r.args ? { args: r.args } : {}) }));
  const profile: Seccomp = { defaultAction: action, ...(errnoRet !== undefined ? { defaultErrnoRet: errnoRet } : {}), syscalls };
  if (arch && arches[arch.seccomp]) profile.architectures = [arch.seccomp, ...arches[arch.seccomp]!];
  return profile;
}

/**
 * A profile file as docker takes it (`--security-opt seccomp=FILE`): docker's format (archMap,
 * syscalls with includes/excludes, the old single "name") or the OCI one, specialised like the
 * default profile.
 */
export function seccompFromProfile(text: string, opts: { capabilities: readonly string[]; arch?: string; kernel?: string }): Seccomp {
  type DockerRule = { names?: string[]; name?: string; action: string; errnoRet?: number; args?: DefaultRule["args"]; includes?: { arches?: string[]; caps?: string[]; minKernel?: string }; excludes?: { arches?: string[]; caps?: string[] } };
  let p: { defaultAction?: string; defaultErrnoRet?: number; archMap?: Array<{ architecture: string; subArchitectures?: string[] }>; architectures?: string[]; syscalls?: DockerRule[] };
  try {
    p = JSON.parse(text);
  } catch (e) {
    throw invalid(`the seccomp profile is not JSON: ${(e as Error).message}`);
  }
  if (!p || typeof p.defaultAction !== "string") throw invalid("the seccomp profile has no defaultAction");
  const rules: DefaultRule[] = (p.syscalls ?? []).map((r) => {
    const names = r.names ?? (r.name ? [r.name] : []);
    if (!names.length || typeof r.action !== "string") throw invalid(`a seccomp rule needs names and an action: ${JSON.stringify(r)}`);
    return {
      names,
      action: r.action,
      ...(r.errnoRet !== undefined ? { errnoRet: r.errnoRet } : {}),
      ...(r.args?.length ? { args: r.args } : {}),
      ...(r.includes?.arches?.length ? { onlyArches: r.includes.arches } : {}),
      ...(r.includes?.caps?.length ? { onlyCaps: r.includes.caps } : {}),
      ...(r.includes?.minKernel ? { minKernel: r.includes.minKernel } : {}),
      ...(r.excludes?.arches?.length ? { notArches: r.excludes.arches } : {}),
      ...(r.excludes?.caps?.length ? { notCaps: r.excludes.caps } : {}),
    };
  });
  const arches = Object.fromEntries((p.archMap ?? []).map((a) => [a.architecture, a.subArchitectures ?? []]));
  const out = specialise(rules, p.defaultAction, arches, p.defaultErrnoRet, opts);
  if (!p.archMap && p.architectures?.length) out.architectures = p.architectures;
  return out;
}
