/** berth as a library: the engine (containers), images, networks, and the runtime underneath. */
export * from "./runtime/index.js";
export { Engine, type EngineOptions, type CreateRequest, type ContainerConfig, type HostConfig, type ContainerRecord, type ContainerState, defaultContainerConfig, defaultHostConfig } from "./engine/index.js";
export { Networking, NetworkStore, type NetworkRecord, type Endpoint, type PortBinding } from "./network/index.js";
export { ImageStore, pullImage, pushImage, saveImages, loadImages, importImage, type ImageRecord } from "./images/index.js";
export { BerthError, HelperError, type ErrorKind } from "./common/errors.js";
