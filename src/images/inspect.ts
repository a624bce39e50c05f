/** docker's JSON shapes for `image inspect` and `history`, from berth's records. */
import { familiar } from "./reference.js";
import { chainIds, shortId, type ImageRecord, type ImageStore } from "./store.js";

export interface ImageInspect {
  Id: string;
  RepoTags: string[];
  RepoDigests: string[];
  Parent: string;
  Comment: string;
  Created: string;
  DockerVersion: string;
  Author: string;
  Config: Record<string, unknown>;
  Architecture: string;
  Variant?: string;
  Os: string;
  Size: number;
  VirtualSize: number;
  GraphDriver: { Name: string; Data: Record<string, string> };
  RootFS: { Type: string; Layers: string[] };
  Metadata: { LastTagTime: string };
  Descriptor: { mediaType: string; digest: string; size: number };
}

export function inspectImage(store: ImageStore, rec: ImageRecord): ImageInspect {
  const cfg = store.config(rec);
  const chain = chainIds(cfg.rootfs.diff_ids);
  const dirs = chain.map((c) => store.snapshots.layerDir(c));
  const c = cfg.config ?? {};
  return {
    Id: rec.id,
    RepoTags: rec.repoTags.map(familiar),
    RepoDigests: rec.repoDigests.map(familiar),
    Parent: rec.parent ?? "",
    Comment: cfg.history?.[cfg.history.length - 1]?.comment ?? "",
    Created: cfg.created ?? "0001-01-01T00:00:00Z",
    DockerVersion: String(cfg.docker_version ?? ""),
    Author: cfg.author ?? "",
    Config: {
      Hostname: "",
      Domainname: "",
      User: c.User ?? "",
      AttachStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      ...(c.ExposedPorts ? { ExposedPorts: c.ExposedPorts } : {}),
      Tty: false,
      OpenStdin: false,
      StdinOnce: false,
      Env: c.Env ?? null,
      Cmd: c.Cmd ?? null,
      ...(c.Healthcheck ? { Healthcheck: c.Healthcheck } : {}),
      Image: "",
      Volumes: c.Volumes ?? null,
      WorkingDir: c.WorkingDir ?? "",
      Entrypoint: c.Entrypoint ?? null,
      OnBuild: c.OnBuild ?? null,
      Labels: c.Labels ?? null,
      ...(c.StopSignal ? { StopSignal: c.StopSignal } : {}),
      ...(c.Shell ? { Shell: c.Shell } : {}),
    },
    Architecture: cfg.architecture,
    ...(cfg.variant ? { Variant: cfg.variant } : {}),
    Os: cfg.os,
    Size: rec.size,
    VirtualSize: rec.size,
    GraphDriver: {
      Name: store.snapshots.kind === "overlay" ? "overlay2" : "vfs",
      Data:
        store.snapshots.kind === "overlay" && dirs.length
          ? { ...(dirs.length > 1 ? { LowerDir: dirs.slice(0, -1).reverse().join(":") } : {}), UpperDir: dirs[dirs.length - 1]! }
          : {},
    },
    RootFS: { Type: "layers", Layers: cfg.rootfs.diff_ids },
    Metadata: { LastTagTime: rec.added },
    Descriptor: { mediaType: rec.target.mediaType, digest: rec.target.digest, size: rec.target.size },
  };
}

export interface HistoryRow {
  id: string; // image id for the top row, "<missing>" below (as docker shows for pulled images)
  created: string;
  createdBy: string;
  size: number;
  comment: string;
  emptyLayer: boolean;
}

/** docker history: newest first; sizes from the unpacked layers. */
export function imageHistory(store: ImageStore, rec: ImageRecord): HistoryRow[] {
  const cfg = store.config(rec);
  const chain = chainIds(cfg.rootfs.diff_ids);
  const hist = cfg.history?.length ? cfg.history : cfg.rootfs.diff_ids.map(() => ({}) as NonNullable<typeof cfg.history>[number]);
  let layer = 0;
  const rows: HistoryRow[] = hist.map((h) => {
    const empty = !!h.empty_layer;
    const size = empty ? 0 : (store.snapshots.layer(chain[layer++] ?? "")?.size ?? 0);
    return { id: "<missing>", created: h.created ?? "", createdBy: h.created_by ?? "", size, comment: h.comment ?? "", emptyLayer: empty };
  });
  rows.reverse();
  if (rows[0]) rows[0].id = rec.id;
  return rows;
}

export { shortId };
