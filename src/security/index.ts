/** Security: capabilities now; seccomp, default profiles, masked paths and user namespaces grow here. */
export { allCapabilities, capabilityMask, capabilityNumbers, dockerDefaultCapabilities } from "./capabilities.js";
