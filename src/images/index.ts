/** Images: the content store, registry client, layers, snapshots and archives. */
export { ImageStore, chainIds, shortId, defaultRoot, type ImageRecord, type StoreOptions } from "./store.js";
export { pullImage, remoteImageInfo, remoteTags, type RemoteImageInfo, type PullOptions, type PullResult, type Progress, type ProgressEvent } from "./pull.js";
export { pushImage, type PushResult } from "./push.js";
export { saveImages, loadImages, importImage, applyChanges, type ArchiveFormat } from "./archive.js";
export { inspectImage, imageHistory, type ImageInspect, type HistoryRow } from "./inspect.js";
export { packDirectory, type PackOptions } from "./pack.js";
export { commitSnapshot, commitBuildStep, writeConfigImage, writeLayerImage, type CommitOptions, type BuildCommit } from "./commit.js";
export { extractLayer, decompress, cleanPath, type ExtractMode, type ExtractResult } from "./layer.js";
export { openSnapshotter, OverlaySnapshotter, CopySnapshotter, unmount, unmountAsync, type Snapshotter, type LayerSnapshot } from "./snapshot.js";
export { parseReference, formatReference, familiar, familiarRepository, withDefaultTag, repositoryName, type Reference } from "./reference.js";
export { RegistryClient, RegistryError } from "./registry.js";
export { credentialsFor, saveCredentials, removeCredentials, dockerConfigPath, daemonLogOpts, type Credentials } from "./auth.js";
export { parsePlatform, hostPlatform, formatPlatform, MediaType, type Platform, type ImageConfig, type Manifest, type Index, type Descriptor, type ContainerConfig, type HistoryEntry } from "./types.js";
export { TarReader, encodeHeader, END_OF_ARCHIVE, type TarHeader } from "./tar.js";
export { FileLock, writeFileAtomic } from "../common/lock.js";
