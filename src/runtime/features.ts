/** `berth-runtime features`: what this runtime supports, in the runtime-spec features.json shape. */
import { allCapabilities } from "../security/index.js";
import { hookNames, namespaceTypes } from "./spec.js";

export function features(): Record<string, unknown> {
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: "1.2.1",
    hooks: [...hookNames],
    mountOptions: [
      "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "idmap", "loud", "mand", "noatime", "nodev",
      "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime",
      "remount", "ridmap", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
      "strictatime", "suid", "sync", "tmpcopyup", "unbindable",
    ],
    linux: {
      namespaces: [...namespaceTypes],
      capabilities: [...allCapabilities],
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false },
      seccomp: {
        enabled: true,
        actions: ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
        operators: ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
        supportedFlags: ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
      },
      mountExtensions: { idmap: { enabled: true } },
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: { "org.opencontainers.runtime-spec.features": "berth-runtime" },
  };
}
