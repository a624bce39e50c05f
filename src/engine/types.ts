/**
 * What a container is asked to be, in the Docker Engine API's shapes (ContainerConfig and
 * HostConfig of POST /containers/create): the CLI fills them from flags, the API server will take
 * them from requests, and `inspect` shows them back.
 */
export interface HealthConfig {
  Test?: string[];
  Interval?: number; // nanoseconds
  Timeout?: number;
  StartPeriod?: number;
  Retries?: number;
}

export interface ContainerConfig {
  Hostname: string;
  Domainname: string;
  User: string;
  AttachStdin: boolean;
  AttachStdout: boolean;
  AttachStderr: boolean;
  ExposedPorts?: Record<string, object>;
  Tty: boolean;
  OpenStdin: boolean;
  StdinOnce: boolean;
  Env: string[];
  Cmd: string[] | null;
  Healthcheck?: HealthConfig;
  Image: string;
  Volumes: Record<string, object> | null;
  WorkingDir: string;
  Entrypoint: string[] | null;
  OnBuild: string[] | null;
  Labels: Record<string, string>;
  StopSignal?: string;
  StopTimeout?: number;
}

export interface MountSpec {
  Type: "bind" | "volume" | "tmpfs";
  Source?: string;
  Target: string;
  ReadOnly?: boolean;
  /**
   * NonRecursive: the source's submounts are not brought along (bind, not rbind); ReadOnlyNonRecursive:
   * a read-only bind's submounts stay writable (docker ≥ 25 makes them read-only too).
   */
  BindOptions?: { Propagation?: string; NonRecursive?: boolean; ReadOnlyNonRecursive?: boolean };
  TmpfsOptions?: { SizeBytes?: number; Mode?: number };
}

export interface Ulimit {
  Name: string;
  Soft: number;
  Hard: number;
}

export interface DeviceMapping {
  PathOnHost: string;
  PathInContainer: string;
  CgroupPermissions: string;
}

export interface HostConfig {
  Binds: string[] | null;
  Mounts?: MountSpec[];
  Tmpfs?: Record<string, string>;
  AutoRemove: boolean;
  RestartPolicy: { Name: "" | "no" | "always" | "unless-stopped" | "on-failure"; MaximumRetryCount: number };
  /** berth's addition: restart a container whose health check turns unhealthy. */
  RestartOnUnhealthy?: boolean;
  /** local: docker's local driver's limits and options; its records are written as json-file's */
  /** --link NAME[:ALIAS] (legacy links): the container's address under the alias in /etc/hosts */
  Links?: string[] | null;
  /** --shm-size: /dev/shm's size in bytes (0: docker's 64 MiB) */
  ShmSize?: number;
  /** --device-cgroup-rule: extra device cgroup rules ("c 1:3 rwm") */
  DeviceCgroupRules?: string[];
  LogConfig: { Type: "json-file" | "local" | "none"; Config: Record<string, string> };
  NetworkMode: string;
  PidMode: string;
  IpcMode: string;
  UTSMode: string;
  UsernsMode: string;
  Privileged: boolean;
  ReadonlyRootfs: boolean;
  CapAdd: string[] | null;
  CapDrop: string[] | null;
  SecurityOpt: string[] | null;
  Ulimits: Ulimit[] | null;
  Devices: DeviceMapping[] | null;
  Init?: boolean;
  Memory: number;
  MemorySwap: number;
  MemoryReservation: number;
  MemorySwappiness?: number;
  OomKillDisable?: boolean;
  NanoCpus: number;
  CpuShares: number;
  CpuQuota: number;
  CpuPeriod: number;
  CpusetCpus: string;
  CpusetMems: string;
  PidsLimit?: number;
  BlkioWeight: number;
  /** Per-device weights and throttles (docker's --blkio-weight-device, --device-read-bps …): a device path and a value. */
  BlkioWeightDevice?: { Path: string; Weight: number }[] | null;
  BlkioDeviceReadBps?: { Path: string; Rate: number }[] | null;
  BlkioDeviceWriteBps?: { Path: string; Rate: number }[] | null;
  BlkioDeviceReadIOps?: { Path: string; Rate: number }[] | null;
  BlkioDeviceWriteIOps?: { Path: string; Rate: number }[] | null;
  ExtraHosts?: string[] | null;
  /** "80/tcp" -> where it is published on the host (HostPort "" picks a free port) */
  PortBindings?: Record<string, Array<{ HostIp: string; HostPort: string }>> | null;
  PublishAllPorts?: boolean;
  DnsSearch?: string[];
  DnsOptions?: string[];
  /** The terminal's initial [height, width] (with Tty). */
  ConsoleSize?: [number, number];
  Dns?: string[];
}

export function defaultHostConfig(): HostConfig {
  return {
    Binds: null,
    AutoRemove: false,
    RestartPolicy: { Name: "no", MaximumRetryCount: 0 },
    LogConfig: { Type: "json-file", Config: {} },
    NetworkMode: "default",
    PidMode: "",
    IpcMode: "private",
    UTSMode: "",
    UsernsMode: "",
    Privileged: false,
    ReadonlyRootfs: false,
    CapAdd: null,
    CapDrop: null,
    SecurityOpt: null,
    Ulimits: null,
    Devices: null,
    Memory: 0,
    MemorySwap: 0,
    MemoryReservation: 0,
    NanoCpus: 0,
    CpuShares: 0,
    CpuQuota: 0,
    CpuPeriod: 0,
    CpusetCpus: "",
    CpusetMems: "",
    BlkioWeight: 0,
  };
}

export function defaultContainerConfig(image: string): ContainerConfig {
  return {
    Hostname: "",
    Domainname: "",
    User: "",
    AttachStdin: false,
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    OpenStdin: false,
    StdinOnce: false,
    Env: [],
    Cmd: null,
    Image: image,
    Volumes: null,
    WorkingDir: "",
    Entrypoint: null,
    OnBuild: null,
    Labels: {},
  };
}

export interface CreateRequest {
  name?: string;
  Config: ContainerConfig;
  HostConfig: HostConfig;
  /** --pull: always, missing (default), never. */
  pull?: "always" | "missing" | "never";
  platform?: string;
  /** The API's NetworkingConfig: per network, aliases, a fixed address, a MAC. */
  NetworkingConfig?: { EndpointsConfig: Record<string, EndpointSettings> };
}

export interface EndpointSettings {
  Aliases?: string[] | null;
  IPAMConfig?: { IPv4Address?: string; IPv6Address?: string; LinkLocalIPs?: string[] | null } | null;
  MacAddress?: string;
  /** Legacy links on this network (`network connect --link NAME:ALIAS`): the alias resolves from this container only. */
  Links?: string[] | null;
}

/** inspect's NetworkSettings: what the container got when it started. */
export interface NetworkSettings {
  Bridge: string;
  SandboxKey: string;
  Ports: Record<string, Array<{ HostIp: string; HostPort: string }> | null>;
  IPAddress: string;
  IPPrefixLen: number;
  Gateway: string;
  MacAddress: string;
  Networks: Record<string, { NetworkID: string; EndpointID: string; Gateway: string; IPAddress: string; IPPrefixLen: number; IPv6Gateway?: string; GlobalIPv6Address?: string; GlobalIPv6PrefixLen?: number; MacAddress: string; Aliases: string[] | null; DNSNames: string[] | null; IPAMConfig?: EndpointSettings["IPAMConfig"]; Links?: string[] | null }>;
}
