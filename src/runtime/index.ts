/** berth's OCI runtime: the library surface the CLI and the engine use. */
export { Runtime, defaultRoot, parseSignal, runHook, type CreateOptions, type ExecOptions, type RuntimeOptions } from "./runtime.js";
export { defaultSpec, validateSpec, validateProcess, type Spec, type Process, type Mount, type Hook } from "./spec.js";
export type { OciState, Status } from "./state.js";
export { features } from "./features.js";
export { ROOTFS_OVERLAY_ANNOTATION } from "./plan.js";
export { launchHelper, helperExecutable, type LaunchedHelper } from "./helper.js";
export { MonitorOpt, MonitorFile, ExitKey, Frame } from "./protocol.js";
