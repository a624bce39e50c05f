/** Security: capabilities and seccomp; default profiles, masked paths and user namespaces grow here. */
export { allCapabilities, capabilityMask, capabilityNumbers, dockerDefaultCapabilities } from "./capabilities.js";
export { compileSeccomp, seccompRecords, actionValue, type Seccomp, type CompiledSeccomp } from "./seccomp.js";
