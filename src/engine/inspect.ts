/** docker's JSON shapes for `container inspect` and `ps`. */
import type { ImageStore } from "../images/index.js";
import { familiar } from "../images/index.js";
import type { ContainerView } from "./engine.js";

export function containerInspect(v: ContainerView, images: ImageStore, root: string): Record<string, unknown> {
  const { rec, state } = v;
  const dir = `${root}/containers/${rec.Id}`;
  const s = state;
  return {
    Id: rec.Id,
    Created: rec.Created,
    Path: rec.Path,
    Args: rec.Args,
    State: {
      Status: s.Status,
      Running: s.Running,
      Paused: s.Paused,
      Restarting: s.Restarting,
      OOMKilled: s.OOMKilled,
      Dead: s.Dead,
      Pid: s.Pid,
      ExitCode: s.ExitCode,
      Error: s.Error,
      StartedAt: s.StartedAt,
      FinishedAt: s.FinishedAt,
      ...(s.Health ? { Health: s.Health } : {}),
    },
    Image: rec.Image,
    ResolvConfPath: "",
    HostnamePath: `${dir}/hostname`,
    HostsPath: `${dir}/hosts`,
    LogPath: rec.LogPath,
    Name: rec.Name,
    RestartCount: s.RestartCount,
    Driver: images.snapshots.kind === "overlay" ? "overlay2" : "vfs",
    Platform: rec.Platform,
    MountLabel: "",
    ProcessLabel: "",
    AppArmorProfile: "",
    ExecIDs: null,
    HostConfig: rec.HostConfig,
    GraphDriver: {
      Name: images.snapshots.kind === "overlay" ? "overlay2" : "vfs",
      Data: images.snapshots.kind === "overlay" ? { UpperDir: images.snapshots.changes(rec.Id), WorkDir: images.snapshots.changes(rec.Id).replace(/upper$/, "work"), MergedDir: `${dir}/rootfs` } : { Dir: images.snapshots.changes(rec.Id) },
    },
    Mounts: (rec.Mounts ?? []).filter((m) => m.Type !== "tmpfs").map(({ Anonymous: _a, NonRecursiveRO: _n, NonRecursive: _r, ...m }) => m),
    Config: rec.Config,
    NetworkSettings: state.NetworkSettings ?? { Bridge: "", SandboxKey: "", Ports: Object.fromEntries(Object.keys(rec.Config.ExposedPorts ?? {}).map((k) => [k, null])), IPAddress: "", IPPrefixLen: 0, Gateway: "", MacAddress: "", Networks: requestedNetworks(rec) },
  };
}

export interface ContainerSummary {
  ID: string;
  Image: string;
  Command: string;
  CreatedAt: string;
  RunningFor: string;
  Ports: string;
  State: string;
  Status: string;
  Names: string;
  Labels: string;
  Mounts: string;
  Networks: string;
  Size: string;
}

export function containerSummary(v: ContainerView, ago: (iso: string) => string, duration: (ms: number) => string): ContainerSummary {
  const { rec, state } = v;
  const cmd = [rec.Path, ...rec.Args].join(" ");
  let status: string;
  if (state.Restarting) status = `Restarting (${state.ExitCode}) ${ago(state.FinishedAt)}`;
  else if (state.Running) status = `Up ${duration(Date.now() - Date.parse(state.StartedAt))}${state.Paused ? " (Paused)" : ""}${state.Health ? ` (${state.Health.Status})` : ""}`;
  else if (state.Status === "created") status = "Created";
  else status = `Exited (${state.ExitCode}) ${ago(state.FinishedAt)}`;
  return {
    ID: rec.Id,
    Image: rec.Config.Image.startsWith("sha256:") ? rec.Config.Image.slice(7, 19) : safeFamiliar(rec.Config.Image),
    Command: JSON.stringify(cmd),
    CreatedAt: rec.Created.replace("T", " ").replace(/\.\d+Z$/, " +0000 UTC"),
    RunningFor: ago(rec.Created),
    Ports: portsSummary(state.NetworkSettings?.Ports ?? {}),
    State: state.Restarting ? "restarting" : state.Paused ? "paused" : state.Status,
    Status: status,
    Names: rec.Name.replace(/^\//, ""),
    Labels: Object.entries(rec.Config.Labels ?? {}).map(([k, x]) => `${k}=${x}`).join(","),
    Mounts: "",
    Networks: networksSummary(rec.HostConfig.NetworkMode),
    Size: "",
  };
}

/** docker ps's PORTS column: 0.0.0.0:8081->80/tcp, 53/udp for exposed-only ports. */
export function portsSummary(ports: Record<string, Array<{ HostIp: string; HostPort: string }> | null>): string {
  const out: string[] = [];
  for (const [k, list] of Object.entries(ports)) {
    if (!list?.length) out.push(k);
    else for (const b of list) out.push(`${b.HostIp || "0.0.0.0"}:${b.HostPort}->${k}`);
  }
  return out.join(", ");
}

function networksSummary(mode: string): string {
  if (!mode || mode === "default") return "bridge";
  return mode.startsWith("container:") ? "" : mode;
}

function safeFamiliar(name: string): string {
  try {
    return familiar(name);
  } catch {
    // a name that is no reference (an ID): shown as it is
    return name;
  }
}

/**
 * The networks a container that has not run yet will join, as dockerd shows them before start
 * (no addresses yet): clients such as docker-compose connect only to networks not listed here.
 */
function requestedNetworks(rec: ContainerView["rec"]): Record<string, unknown> {
  const mode = rec.HostConfig.NetworkMode || "default";
  if (mode === "host" || mode === "none" || mode.startsWith("container:")) return {};
  const names = new Set<string>([mode === "default" ? "bridge" : mode, ...Object.keys(rec.NetworkingConfig?.EndpointsConfig ?? {})]);
  const empty = { IPAMConfig: null, Links: null, NetworkID: "", EndpointID: "", Gateway: "", IPAddress: "", IPPrefixLen: 0, IPv6Gateway: "", GlobalIPv6Address: "", GlobalIPv6PrefixLen: 0, MacAddress: "", DriverOpts: null };
  return Object.fromEntries([...names].map((n) => [n, { ...empty, Aliases: rec.NetworkingConfig?.EndpointsConfig?.[n]?.Aliases ?? null }]));
}
