/** The engine: containers over images and the runtime. `import { Engine } from "berth"`. */
export { Engine, parseBind, parseSize, type EngineOptions, type ContainerView } from "./engine.js";
export { type ContainerRecord, type ContainerState } from "./store.js";
export { defaultContainerConfig, defaultHostConfig, type ContainerConfig, type HostConfig, type CreateRequest, type MountSpec } from "./types.js";
export { readLogs, type LogEntry } from "./logs.js";
export { resolveInRoot } from "./spec.js";
export type { PathStat } from "./copy.js";
export { containerInspect, containerSummary, type ContainerSummary } from "./inspect.js";
export { EventLog, type BerthEvent } from "./events.js";
