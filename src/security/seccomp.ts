/**
 * seccomp: the OCI `linux.seccomp` object, validated (errors name the entry), turned into a flat
 * rule list, compiled to BPF by berth-seccomp (libseccomp: every architecture's syscall numbers and a
 * binary-tree program), and cached by the digest of the rule list so a container start does not
 * compile again. The helper loads the program with seccomp(2).
 */
import { createHash } from "node:crypto";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { join } from "../common/path.js";
import { BerthError, invalid } from "../common/errors.js";
import { buildBinary } from "../common/paths.js";
import { constants } from "node:os";
import { K } from "../common/kernel-abi.js";

export interface SeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: string;
}
export interface SeccompSyscall {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: SeccompArg[];
}
/** A rule of a capability- and arch-aware default profile (Docker's profile format, flattened). */
export interface DefaultRule {
  names: string[];
  action: string;
  errnoRet?: number;
  args?: SeccompArg[];
  onlyArches?: string[];
  notArches?: string[];
  onlyCaps?: string[];
  notCaps?: string[];
  minKernel?: string;
}

export interface Seccomp {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: SeccompSyscall[];
}

const EPERM = constants.errno.EPERM;

/** Kernel SECCOMP_RET_* values (linux/seccomp.h). */
export function actionValue(action: string, errnoRet: number | undefined, field: string): number {
  switch (action) {
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return K.SECCOMP_RET_KILL_THREAD;
    case "SCMP_ACT_KILL_PROCESS":
      return K.SECCOMP_RET_KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return K.SECCOMP_RET_TRAP;
    case "SCMP_ACT_ERRNO":
      return (K.SECCOMP_RET_ERRNO | ((errnoRet ?? EPERM) & 0xffff)) >>> 0;
    case "SCMP_ACT_TRACE":
      return (K.SECCOMP_RET_TRACE | ((errnoRet ?? EPERM) & 0xffff)) >>> 0;
    case "SCMP_ACT_LOG":
      return K.SECCOMP_RET_LOG;
    case "SCMP_ACT_ALLOW":
      return K.SECCOMP_RET_ALLOW;
    case "SCMP_ACT_NOTIFY":
      return K.SECCOMP_RET_USER_NOTIF;
    default:
      throw invalid(`${field}: unknown action ${JSON.stringify(action)}`);
  }
}

/** libseccomp's comparison operators (its enum scmp_compare), by the spec's names. */
const compareOps: Record<string, number> = Object.fromEntries(Object.entries(K).filter(([k]) => k.startsWith("SCMP_CMP_")));

/** seccomp(2)'s filter flags the spec may name. */
const flagValues: Record<string, number> = Object.fromEntries(Object.entries(K).filter(([k]) => k.startsWith("SECCOMP_FILTER_FLAG_")));

const archNames = new Set([
  "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32", "mipsel", "mipsel64", "mipsel64n32",
  "ppc", "ppc64", "ppc64le", "s390", "s390x", "parisc", "parisc64", "riscv64",
]);

/** SCMP_ARCH_X86_64 → x86_64 (libseccomp's name). */
function archName(a: string, field: string): string {
  const name = a.replace(/^SCMP_ARCH_/, "").toLowerCase();
  if (!a.startsWith("SCMP_ARCH_") || !archNames.has(name)) throw invalid(`${field}: unknown architecture ${JSON.stringify(a)}`);
  return name;
}

export type SeccompRecord = [code: "INIT" | "ARCH" | "RULE", ...args: string[]];

/** Validates the profile and flattens it: one record per syscall name. */
export function seccompRecords(s: Seccomp): { records: SeccompRecord[]; flags: number } {
  const f = "linux.seccomp";
  if (typeof s !== "object" || s === null) throw invalid(`${f}: must be an object`);
  if (s.defaultAction === "SCMP_ACT_NOTIFY") throw invalid(`${f}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action (the agent would have to answer every syscall, including its own setup's)`);
  const def = actionValue(s.defaultAction, s.defaultErrnoRet, `${f}.defaultAction`);
  const notify = (s.syscalls ?? []).some((sc) => sc.action === "SCMP_ACT_NOTIFY");
  if (notify && !s.listenerPath) throw invalid(`${f}.listenerPath: required when a rule uses SCMP_ACT_NOTIFY`);
  if (s.listenerPath && !s.listenerPath.startsWith("/")) throw invalid(`${f}.listenerPath: must be an absolute path`);
  const records: SeccompRecord[] = [["INIT", String(def)]];
  (s.architectures ?? []).forEach((a, i) => records.push(["ARCH", archName(a, `${f}.architectures[${i}]`)]));
  // SECCOMP_FILTER_FLAG_NEW_LISTENER: loading returns the notify fd for the agent.
  let flags = notify ? 8 : 0;
  (s.flags ?? []).forEach((name, i) => {
    const v = flagValues[name];
    if (v === undefined) throw invalid(`${f}.flags[${i}]: unknown flag ${JSON.stringify(name)}`);
    flags |= v;
  });
  (s.syscalls ?? []).forEach((sc, i) => {
    const field = `${f}.syscalls[${i}]`;
    if (!Array.isArray(sc.names) || sc.names.length === 0) throw invalid(`${field}.names: must list at least one syscall`);
    const action = actionValue(sc.action, sc.errnoRet, `${field}.action`);
    const conds: string[] = [];
    (sc.args ?? []).forEach((arg, j) => {
      if (!Number.isInteger(arg.index) || arg.index < 0 || arg.index > 5) throw invalid(`${field}.args[${j}].index: must be 0..5 (got ${arg.index})`);
      const op = compareOps[arg.op];
      if (op === undefined) throw invalid(`${field}.args[${j}].op: unknown operator ${JSON.stringify(arg.op)}`);
      conds.push(String(arg.index), String(op), BigInt(arg.value ?? 0).toString(), BigInt(arg.valueTwo ?? 0).toString());
    });
    // A rule with the default action changes nothing (and libseccomp refuses it), as runc skips it.
    if (action === def) return;
    // libseccomp takes one condition per argument in a rule: with two on the same argument each
    // becomes a rule of its own (any of them matches), as runc splits them
    const indexes = (sc.args ?? []).map((a) => a.index);
    const split = indexes.some((x, k) => indexes.indexOf(x) !== k);
    const ruleConds = split ? Array.from({ length: conds.length / 4 }, (_, k) => conds.slice(k * 4, k * 4 + 4)) : [conds];
    for (const name of sc.names) {
      if (typeof name !== "string" || !name) throw invalid(`${field}.names: must be non-empty strings`);
      // the agent would be stopped writing its own answer, or the container's runtime its output (runc refuses it too)
      if (name === "write" && sc.action === "SCMP_ACT_NOTIFY") throw invalid(`${field}: SCMP_ACT_NOTIFY cannot be used for write (the container could deadlock waiting on its agent)`);
      for (const c of ruleConds) records.push(["RULE", String(action), name, ...c]);
    }
  });
  return { records, flags };
}

const codes = { INIT: 60, ARCH: 61, RULE: 62, END: 99 } as const;

function encode(records: SeccompRecord[]): Buffer {
  const parts: Buffer[] = [];
  for (const [kind, ...args] of [...records, ["END"] as unknown as SeccompRecord]) {
    const payload = Buffer.from(args.map((a) => a + "\0").join(""));
    const hdr = Buffer.alloc(8);
    hdr.writeUInt32LE(codes[kind as keyof typeof codes], 0);
    hdr.writeUInt32LE(payload.length, 4);
    parts.push(hdr, payload);
  }
  return Buffer.concat(parts);
}

export interface CompiledSeccomp {
  flags: number;
  /** Where the notify fd goes (SCMP_ACT_NOTIFY), and the metadata sent with it. */
  listenerPath?: string;
  listenerMetadata?: string;
  /** struct sock_filter[] as hex */
  program: string;
  digest: string;
}

/**
 * Compiles (or takes from the cache) the program for a profile. The cache is looked up by the
 * profile's own text first: a profile seen before skips validating and flattening it (a cost of a
 * container start, in V8's interpreter), then by its rule list (profiles that differ only in form).
 */
export function compileSeccomp(s: Seccomp, cacheDir: string): CompiledSeccomp {
  // keyed by the compiler's build too: a rebuilt berth (whose flattening may differ) starts afresh
  let built = 0;
  try {
    built = statSync(buildBinary("berth-seccomp")).mtimeMs;
  } catch {
    // compiled below, which says what is wrong
  }
  const profileDigest = createHash("sha256").update(`${process.arch}\0${built}\0${JSON.stringify(s)}`).digest("hex");
  const byProfile = join(cacheDir, `profile-${profileDigest}.bpf`);
  try {
    const program = readFileSync(byProfile, "utf8");
    const flags = (s.syscalls ?? []).some((sc) => sc.action === "SCMP_ACT_NOTIFY") ? 8 : 0;
    const all = (s.flags ?? []).reduce((acc, name) => acc | (flagValues[name] ?? 0), flags);
    return { flags: all, program, digest: profileDigest, ...(all & 8 ? { listenerPath: s.listenerPath, listenerMetadata: s.listenerMetadata ?? "" } : {}) };
  } catch {
    // not seen before
  }
  const { records, flags } = seccompRecords(s);
  const digest = createHash("sha256").update(JSON.stringify(records)).digest("hex");
  const cached = join(cacheDir, `${digest}.bpf`);
  const listener = flags & 8 ? { listenerPath: s.listenerPath, listenerMetadata: s.listenerMetadata ?? "" } : {};
  const remember = (program: string) => {
    try {
      mkdirSync(cacheDir, { recursive: true });
      const tmp = `${byProfile}.${process.pid}.tmp`;
      writeFileSync(tmp, program);
      renameSync(tmp, byProfile);
    } catch {
      // only a shortcut
    }
  };
  try {
    const program = readFileSync(cached, "utf8");
    remember(program);
    return { flags, program, digest, ...listener };
  } catch {
    // not compiled yet
  }
  const r = spawnSync(buildBinary("berth-seccomp"), ["0", "1"], { input: encode(records), maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw new BerthError("System", `cannot run berth-seccomp: ${r.error.message}`);
  const out = r.stdout;
  if (out.length < 8) throw new BerthError("System", `berth-seccomp failed (${r.status}): ${r.stderr.toString()}`);
  const code = out.readUInt32LE(0);
  const args = out.subarray(8, 8 + out.readUInt32LE(4)).toString().split("\0");
  if (code !== 105) throw new BerthError("System", `seccomp: ${args[0]}: ${args[2]}`);
  const program = args[0]!;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  writeFileSync(tmp, program);
  renameSync(tmp, cached);
  remember(program);
  return { flags, program, digest, ...listener };
}
