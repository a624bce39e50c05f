/**
 * Linux capabilities by name, as the kernel ABI numbers them (linux/capability.h), and the masks
 * the helper applies. Names the kernel does not know are reported, not silently kept.
 */
import { K } from "../common/kernel-abi.js";

/** CAP_* name → number, in the kernel's order (protocol.table's values, checked against the headers). */
const numbered = (Object.entries(K) as [string, number][]).filter(([k]) => k.startsWith("CAP_")).sort((a, b) => a[1] - b[1]);

export const capabilityNumbers: ReadonlyMap<string, number> = new Map(numbered);
export const allCapabilities: readonly string[] = numbered.map(([n]) => n);

/** Docker's default set (14 capabilities). */
export const dockerDefaultCapabilities: readonly string[] = [
  "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
  "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

/** A 64-bit mask of the named capabilities; unknown names go to `unknown` (runc warns and skips them). */
export function capabilityMask(list: readonly string[] | undefined, unknown: string[] = []): bigint {
  let mask = 0n;
  for (const raw of list ?? []) {
    const name = raw.toUpperCase().startsWith("CAP_") ? raw.toUpperCase() : `CAP_${raw.toUpperCase()}`;
    const n = capabilityNumbers.get(name);
    if (n === undefined) unknown.push(raw);
    else mask |= 1n << BigInt(n);
  }
  return mask;
}

/** Docker's default masked and read-only paths, for containers that follow Docker's posture. */
export const dockerMaskedPaths: readonly string[] = [
  "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
  "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
];
export const dockerReadonlyPaths: readonly string[] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];
