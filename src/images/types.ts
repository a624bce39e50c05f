/** OCI image spec and Docker schema2 shapes, and their media types. */
export const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  ociLayerNondistGzip: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayer: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerForeignLayer: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

export const indexTypes: string[] = [MediaType.ociIndex, MediaType.dockerList];
export const manifestTypes: string[] = [MediaType.ociManifest, MediaType.dockerManifest];
export const layerTypes: string[] = [
  MediaType.ociLayer,
  MediaType.ociLayerGzip,
  MediaType.ociLayerZstd,
  MediaType.ociLayerNondistGzip,
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  MediaType.dockerLayer,
  MediaType.dockerForeignLayer,
  "application/vnd.docker.image.rootfs.diff.tar",
];

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  "os.version"?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  urls?: string[];
}

export interface Manifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface Index {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  annotations?: Record<string, string>;
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

export interface ContainerConfig {
  User?: string;
  ExposedPorts?: Record<string, object>;
  Env?: string[];
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Labels?: Record<string, string>;
  StopSignal?: string;
  Healthcheck?: { Test?: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; StartInterval?: number; Retries?: number };
  OnBuild?: string[];
  Shell?: string[];
}

export interface ImageConfig {
  created?: string;
  author?: string;
  architecture: string;
  os: string;
  variant?: string;
  config?: ContainerConfig;
  rootfs: { type: "layers"; diff_ids: string[] };
  history?: HistoryEntry[];
  // docker-only fields kept as they came
  [k: string]: unknown;
}

/** The platform of this machine in OCI terms. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = { x64: "amd64", arm64: "arm64", arm: "arm", ia32: "386", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" };
  const a = arch[process.arch] ?? process.arch;
  return { os: "linux", architecture: a, ...(a === "arm64" ? { variant: "v8" } : a === "arm" ? { variant: "v7" } : {}) };
}

/** Parse docker's --platform value: os[/arch[/variant]]. */
export function parsePlatform(s: string): Platform {
  const [os, architecture, variant] = s.toLowerCase().split("/");
  if (!os || (architecture === undefined && os !== "linux")) return { os: "linux", architecture: normalizeArch(os ?? "") };
  return { os, architecture: normalizeArch(architecture ?? hostPlatform().architecture), ...(variant ? { variant } : {}) };
}

function normalizeArch(a: string): string {
  return ({ x86_64: "amd64", "x86-64": "amd64", aarch64: "arm64", armhf: "arm", i386: "386" } as Record<string, string>)[a] ?? a;
}

export const formatPlatform = (p: Platform): string => [p.os, p.architecture, p.variant].filter(Boolean).join("/");

/** Does a descriptor's platform satisfy the wanted one? (variant only checked when both name one) */
export function platformMatches(have: Platform | undefined, want: Platform): boolean {
  if (!have) return false;
  if (have.os !== want.os || normalizeArch(have.architecture) !== want.architecture) return false;
  if (want.variant && have.variant && have.variant !== want.variant) return false;
  return true;
}
