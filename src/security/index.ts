/** Security: capabilities and seccomp; default profiles, masked paths and user namespaces grow here. */
export { allCapabilities, capabilityMask, capabilityNumbers, dockerDefaultCapabilities, dockerMaskedPaths, dockerReadonlyPaths } from "./capabilities.js";
export { compileSeccomp, seccompRecords, actionValue, type Seccomp, type CompiledSeccomp } from "./seccomp.js";
export { defaultSeccomp, seccompFromProfile } from "./profile.js";
export { evaluateSeccomp, auditArch, x32SyscallBit, type SeccompData } from "./bpf.js";
