import { K } from "../common/kernel-abi.js";
/**
 * A classic-BPF interpreter for seccomp programs: what verdict a filter gives a syscall. Used to
 * compare profiles syscall by syscall (test/seccomp-default.test.ts) without loading them.
 */
export interface SeccompData {
  nr: number;
  arch: number;
  args?: bigint[];
}

/** AUDIT_ARCH_* values that seccomp_data.arch carries. */
export const auditArch = { x86_64: K.AUDIT_ARCH_X86_64, x86: K.AUDIT_ARCH_I386, aarch64: K.AUDIT_ARCH_AARCH64, arm: K.AUDIT_ARCH_ARM } as const;
/** On x86_64, x32 syscalls are the x86_64 arch with this bit set in the number. */
export const x32SyscallBit = 0x40000000;

export function evaluateSeccomp(programHex: string, data: SeccompData): number {
  const prog = Buffer.from(programHex, "hex");
  const buf = Buffer.alloc(64);
  buf.writeUInt32LE(data.nr >>> 0, 0);
  buf.writeUInt32LE(data.arch >>> 0, 4);
  (data.args ?? []).forEach((a, i) => buf.writeBigUInt64LE(BigInt.asUintN(64, a), 16 + i * 8));
  const mem = new Uint32Array(16);
  let A = 0;
  let X = 0;
  for (let pc = 0, steps = 0; pc * 8 < prog.length && steps < 100_000; pc++, steps++) {
    const code = prog.readUInt16LE(pc * 8);
    const jt = prog.readUInt8(pc * 8 + 2);
    const jf = prog.readUInt8(pc * 8 + 3);
    const k = prog.readUInt32LE(pc * 8 + 4);
    const src = code & 0x08 ? X : k;
    switch (code) {
      case 0x20: // LD W ABS
        A = buf.readUInt32LE(k);
        break;
      case 0x00: // LD IMM
        A = k;
        break;
      case 0x01: // LDX IMM
        X = k;
        break;
      case 0x60: // LD MEM
        A = mem[k]!;
        break;
      case 0x61: // LDX MEM
        X = mem[k]!;
        break;
      case 0x02: // ST
        mem[k] = A;
        break;
      case 0x03: // STX
        mem[k] = X;
        break;
      case 0x07: // TAX
        X = A;
        break;
      case 0x87: // TXA
        A = X;
        break;
      case 0x05: // JA
        pc += k;
        break;
      case 0x15: case 0x1d: pc += A === src >>> 0 ? jt : jf; break; // JEQ
      case 0x25: case 0x2d: pc += A >>> 0 > src >>> 0 ? jt : jf; break; // JGT
      case 0x35: case 0x3d: pc += A >>> 0 >= src >>> 0 ? jt : jf; break; // JGE
      case 0x45: case 0x4d: pc += (A & src) !== 0 ? jt : jf; break; // JSET
      case 0x04: case 0x0c: A = (A + src) >>> 0; break;
      case 0x14: case 0x1c: A = (A - src) >>> 0; break;
      case 0x24: case 0x2c: A = Math.imul(A, src) >>> 0; break;
      case 0x44: case 0x4c: A = (A | src) >>> 0; break;
      case 0x54: case 0x5c: A = (A & src) >>> 0; break;
      case 0x64: case 0x6c: A = (A << src) >>> 0; break;
      case 0x74: case 0x7c: A = A >>> src; break;
      case 0xa4: case 0xac: A = (A ^ src) >>> 0; break;
      case 0x84: A = -A >>> 0; break;
      case 0x06: // RET K
        return k >>> 0;
      case 0x16: // RET A
        return A >>> 0;
      default:
        throw new Error(`seccomp BPF: unsupported instruction 0x${code.toString(16)} at ${pc}`);
    }
  }
  throw new Error("seccomp BPF: the program fell off its end");
}
