/**
 * cgroup v2 device rules as an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE), with v1's semantics:
 * rules apply in order and a later rule overrides an earlier one, so the program tests them from the
 * last to the first and the first match decides. The context is struct bpf_cgroup_dev_ctx:
 * { u32 access_type (access << 16 | type); u32 major; u32 minor }.
 */
import type { DeviceRule } from "./resources.js";
import { K } from "../common/kernel-abi.js";

const { BPF_DEVCG_DEV_BLOCK: DEV_BLOCK, BPF_DEVCG_DEV_CHAR: DEV_CHAR, BPF_DEVCG_ACC_MKNOD: ACC_MKNOD, BPF_DEVCG_ACC_READ: ACC_READ, BPF_DEVCG_ACC_WRITE: ACC_WRITE } = K;

// opcodes
const LDX_W = K.BPF_LDX_MEM_W; // dst = *(u32 *)(src + off)
const AND_K = K.BPF_ALU64_AND_K; // dst &= imm (64-bit)
const RSH_K = K.BPF_ALU64_RSH_K; // dst >>= imm
const MOV_X = K.BPF_ALU64_MOV_X; // dst = src
const MOV_K = K.BPF_ALU64_MOV_K; // dst = imm
const JNE_K = K.BPF_JMP_JNE_K; // if dst != imm goto +off
const JEQ_K = K.BPF_JMP_JEQ_K; // if dst == imm goto +off
const EXIT = K.BPF_JMP_EXIT;

type Insn = [code: number, dst: number, src: number, off: number, imm: number];

function encode(insns: Insn[]): string {
  const buf = Buffer.alloc(insns.length * 8);
  insns.forEach(([code, dst, src, off, imm], i) => {
    buf.writeUInt8(code, i * 8);
    buf.writeUInt8((src << 4) | dst, i * 8 + 1);
    buf.writeInt16LE(off, i * 8 + 2);
    buf.writeInt32LE(imm, i * 8 + 4);
  });
  return buf.toString("hex");
}

const accessBits = (access = "rwm") =>
  (access.includes("m") ? ACC_MKNOD : 0) | (access.includes("r") ? ACC_READ : 0) | (access.includes("w") ? ACC_WRITE : 0);

/** The program (hex of struct bpf_insn[]) for these rules; devices no rule matches are denied
 * when the first rule denies everything (the OCI default), and allowed otherwise (v1's default). */
export function deviceFilterProgram(rules: DeviceRule[]): string {
  const insns: Insn[] = [
    [LDX_W, 2, 1, 0, 0], // r2 = access_type
    [AND_K, 2, 0, 0, 0xffff], // r2 = type
    [LDX_W, 3, 1, 0, 0],
    [RSH_K, 3, 0, 0, 16], // r3 = access
    [LDX_W, 4, 1, 4, 0], // r4 = major
    [LDX_W, 5, 1, 8, 0], // r5 = minor
  ];
  const wildcard = (v: number | null | undefined) => v === undefined || v === null || v < 0;
  let defaultAllow = true;
  let start = 0;
  const first = rules[0];
  if (first && !first.allow && (first.type === undefined || first.type === "a") && wildcard(first.major) && wildcard(first.minor)) {
    defaultAllow = false;
    start = 1;
  }
  for (let i = rules.length - 1; i >= start; i--) {
    const r = rules[i]!;
    const block: Insn[] = [];
    // Each check jumps past the rest of this block (to the next rule) when it does not match.
    const checks: ((skip: number) => Insn[])[] = [];
    if (r.type === "c" || r.type === "b") checks.push((skip) => [[JNE_K, 2, 0, skip, r.type === "c" ? DEV_CHAR : DEV_BLOCK]]);
    const acc = accessBits(r.access);
    if (acc !== 7) {
      // allow: the request must lie within the rule's access; deny: it must touch the rule's access.
      checks.push((skip) =>
        r.allow
          ? [[MOV_X, 1, 3, 0, 0], [AND_K, 1, 0, 0, ~acc & 7], [JNE_K, 1, 0, skip - 2, 0]]
          : [[MOV_X, 1, 3, 0, 0], [AND_K, 1, 0, 0, acc], [JEQ_K, 1, 0, skip - 2, 0]],
      );
    }
    if (!wildcard(r.major)) checks.push((skip) => [[JNE_K, 4, 0, skip, r.major!]]);
    if (!wildcard(r.minor)) checks.push((skip) => [[JNE_K, 5, 0, skip, r.minor!]]);
    const verdict: Insn[] = [[MOV_K, 0, 0, 0, r.allow ? 1 : 0], [EXIT, 0, 0, 0, 0]];
    // Build back to front so each check knows how many instructions follow it.
    let tail: Insn[] = verdict;
    for (let c = checks.length - 1; c >= 0; c--) {
      const probe = checks[c]!(0);
      const skip = tail.length + probe.length - 1;
      tail = [...checks[c]!(skip), ...tail];
    }
    block.push(...tail);
    insns.push(...block);
  }
  insns.push([MOV_K, 0, 0, 0, defaultAllow ? 1 : 0], [EXIT, 0, 0, 0, 0]);
  return encode(insns);
}
