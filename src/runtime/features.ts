/** `berth-runtime features`: what this runtime supports, in the runtime-spec features.json shape. */
import { allCapabilities } from "../security/index.js";
import { hookNames, namespaceTypes } from "./spec.js";

export function features(): Record<string, unknown> {
  return {
    ociVersionMin: "1.0.0",
    ociVersionMax: "1.2.1",
    hooks: [...hookNames],
    mountOptions: [
      "async", "atime", "bind", "defaults", "dev", "diratime", "dirsync", "exec", "loud", "mand", "noatime", "nodev",
      "nodiratime", "noexec", "nomand", "norelatime", "nostrictatime", "nosuid", "private", "rbind", "relatime",
      "remount", "ro", "rprivate", "rshared", "rslave", "runbindable", "rw", "shared", "silent", "slave",
      "strictatime", "suid", "sync", "tmpcopyup", "unbindable",
    ],
    linux: {
      namespaces: [...namespaceTypes],
      capabilities: [...allCapabilities],
      cgroup: { v1: true, v2: true, systemd: false, systemdUser: false },
      seccomp: { enabled: false },
      apparmor: { enabled: false },
      selinux: { enabled: false },
    },
    annotations: { "org.opencontainers.runtime-spec.features": "berth-runtime" },
  };
}
