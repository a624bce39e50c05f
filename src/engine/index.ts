/** The engine: containers over images and the runtime. `import { Engine } from "berth"`. */
export { Engine, parseBind, parseSize, parseUlimit, type EngineOptions, type ContainerView } from "./engine.js";
export { type ContainerRecord, type ContainerState } from "./store.js";
export { defaultContainerConfig, defaultHostConfig, type ContainerConfig, type HostConfig, type CreateRequest, type MountSpec } from "./types.js";
export { readLogs, type LogEntry } from "./logs.js";
export { resolveInRoot } from "./spec.js";
export { archiveHostPath, extractToHost, type PathStat } from "./copy.js";
export { demuxAttach, detachBytes, detachWatcher, type AttachSinks } from "./attach.js";
// operations for the front ends (the CLI and the API), grouped by what they act on
export * as images from "./images.js";
export * as system from "./system.js";
export * as containers from "./containers.js";
export * as networks from "./networks.js";
export * as build from "./build.js";
// the pure helpers the front ends parse and format with, from the layers below
export { familiar, familiarRepository, formatReference, parseReference, withDefaultTag, shortId, type ImageRecord, type ProgressEvent, type Reference } from "../images/index.js";
export { parsePublish } from "../network/ports.js";
export type { NetworkRecord } from "../network/index.js";
export { seccompFromProfile } from "../security/index.js";
export { containerInspect, containerSummary, type ContainerSummary } from "./inspect.js";
export { EventLog, type BerthEvent } from "./events.js";
/** Makes the runtime's sealed copy of its helper now (a warm process, while it waits for a command). */
export { helperExecutable as prepareContainerHelper } from "../runtime/index.js";
