/**
 * Container operations the front ends share beyond the Engine's own methods: logs with docker's
 * time forms, waiting on docker's conditions, and the list entry of GET /containers/json.
 */
import { builtin } from "../common/builtin.js";
import { setTimeout as sleep } from "node:timers/promises";
import { BerthError, invalid } from "../common/errors.js";
import { familiar } from "../images/index.js";
import { humanDuration } from "../common/units.js";
import type { ContainerView, Engine } from "./engine.js";
import { logTime, readLogs, type LogEntry } from "./logs.js";

export { logTime };
import { containerSummary } from "./inspect.js";


/** A container's log entries (json-file), from `since` to `until`, the last `tail`, followed while it runs. */
export async function containerLogs(engine: Engine, ref: string, opts: { follow?: boolean; tail?: string; since?: string; until?: string; signal?: AbortSignal } = {}): Promise<{ view: ContainerView; entries: AsyncIterable<LogEntry> }> {
  const v = await engine.get(ref);
  if (v.rec.HostConfig.LogConfig.Type === "none") throw invalid("configured logging driver does not support reading");
  const tail = opts.tail ?? "all";
  if (tail !== "all" && !/^-?\d+$/.test(tail)) throw invalid(`invalid value for --tail: ${tail}`);
  const sinceNs = logTime(opts.since, "since"),
    untilNs = logTime(opts.until, "until");
  const maxFiles = Number(v.rec.HostConfig.LogConfig.Config["max-file"] ?? "1") || 1;
  const entries = readLogs(v.rec.LogPath, maxFiles, {
    follow: !!opts.follow,
    ...(tail !== "all" && Number(tail) >= 0 ? { tail: Number(tail) } : {}),
    ...(sinceNs !== undefined ? { sinceNs } : {}),
    ...(untilNs !== undefined ? { untilNs } : {}),
    running: async () => !!(await engine.get(v.rec.Id).catch(() => undefined))?.state.Running,
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  return { view: v, entries };
}

export type WaitCondition = "not-running" | "next-exit" | "removed";

/**
 * Waits as POST /containers/{id}/wait does: `not-running` returns at once for a container that is
 * not running; `next-exit` waits for the container's next exit (a created one must start first);
 * `removed` waits until it is gone. Resolves with its exit code. `cancelled` stops the wait.
 */
export async function waitFor(engine: Engine, ref: string, condition: WaitCondition = "not-running", cancelled: () => boolean = () => false): Promise<number> {
  if (!["not-running", "next-exit", "removed"].includes(condition)) throw invalid(`invalid condition: "${condition}"`);
  const began = BigInt(Date.now() - 1000) * 1_000_000n;
  let v = await engine.get(ref);
  const id = v.rec.Id;
  const startedAt = v.state.StartedAt;
  const isRunning = (x: ContainerView) => x.state.Running || x.state.Restarting;
  const wasRunning = isRunning(v);
  let code = v.state.ExitCode;
  // polled often at first (a short-lived container is the common case: docker run), then every 100 ms
  for (let pause = 5, waited = 0; !cancelled(); waited += pause, pause = waited < 2000 ? 10 : 100) {
    const running = isRunning(v);
    if (condition === "not-running" && !running) return v.state.ExitCode;
    // next-exit: it ran since the wait began (started anew, or was running then) and has stopped
    if (condition === "next-exit" && !running && (v.state.StartedAt !== startedAt || wasRunning)) return v.state.ExitCode;
    await sleep(pause);
    try {
      v = await engine.get(id);
      code = v.state.ExitCode;
    } catch (e) {
      // gone: removed (--rm after its exit) is the end of every wait; its exit code is in its die event
      if (e instanceof BerthError && e.kind === "NotFound") return (await lastExitCode(engine, id, began)) ?? code;
      throw e;
    }
  }
  return code;
}

/** The exit code of a container's last die event since sinceNs (a removed container has no state left). */
async function lastExitCode(engine: Engine, id: string, sinceNs: bigint): Promise<number | undefined> {
  let code: number | undefined;
  for await (const e of engine.events.read({ sinceNs, follow: false }))
    if (e.Type === "container" && e.Action === "die" && e.Actor.ID === id) code = Number(e.Actor.Attributes.exitCode ?? 0);
  return code;
}

/** The entry of GET /containers/json for a container. */
export function listEntry(v: ContainerView): Record<string, unknown> {
  const { rec, state } = v;
  const ports: { IP?: string; PrivatePort: number; PublicPort?: number; Type: string }[] = [];
  for (const [k, list] of Object.entries(state.NetworkSettings?.Ports ?? {})) {
    const [port, type] = k.split("/");
    if (!list?.length) ports.push({ PrivatePort: Number(port), Type: type ?? "tcp" });
    else for (const b of list) ports.push({ IP: b.HostIp || "0.0.0.0", PrivatePort: Number(port), PublicPort: Number(b.HostPort), Type: type ?? "tcp" });
  }
  const { Status: status, State: stateName } = containerSummary(v, (iso) => `${humanDuration(Date.now() - Date.parse(iso))} ago`, humanDuration);
  let image = rec.Config.Image;
  try {
    if (!image.startsWith("sha256:")) image = familiar(image);
  } catch {
    // a name as given
  }
  return {
    Id: rec.Id,
    Names: [rec.Name],
    Image: image,
    ImageID: rec.Image,
    Command: [rec.Path, ...rec.Args].join(" "),
    Created: Math.floor(Date.parse(rec.Created) / 1000),
    Ports: ports,
    Labels: rec.Config.Labels ?? {},
    State: stateName,
    Status: status,
    HostConfig: { NetworkMode: rec.HostConfig.NetworkMode || "default" },
    NetworkSettings: { Networks: state.NetworkSettings?.Networks ?? {} },
    Mounts: (rec.Mounts ?? []).map((m) => ({ ...m })),
  };
}

/** GET /containers/json: list entries, with SizeRw when asked. */
export async function listEntries(engine: Engine, opts: { all?: boolean; filters?: string[]; size?: boolean } = {}): Promise<Record<string, unknown>[]> {
  const { listContainers, containerSize } = await import("./system.js");
  const views = await listContainers(engine, { all: !!opts.all, filters: opts.filters ?? [] });
  return views.map((v) => ({ ...listEntry(v), ...(opts.size ? { SizeRw: containerSize(engine, v.rec.Id), SizeRootFs: 0 } : {}) }));
}

/** docker top: `ps` with these arguments, its rows limited to the container's processes. */
export async function top(engine: Engine, v: ContainerView, psArgs: string): Promise<{ Titles: string[]; Processes: string[][] }> {
  const { spawnSync } = builtin<typeof import("node:child_process")>("node:child_process");
  const pids = engine.runtime.pids(v.rec.Id);
  const r = spawnSync("ps", psArgs.split(/\s+/).filter(Boolean), { encoding: "utf8" });
  if (r.status !== 0) throw invalid(`ps ${psArgs}: ${r.stderr.trim()}`);
  const lines = r.stdout.trimEnd().split("\n");
  const titles = (lines[0] ?? "").trim().split(/\s+/);
  const pidCol = titles.indexOf("PID");
  if (pidCol < 0) throw invalid(`ps ${psArgs}: no PID column in its output`);
  const rows = lines.slice(1).map((l) => {
    const f = l.trim().split(/\s+/);
    // the last column (the command) keeps its spaces
    return [...f.slice(0, titles.length - 1), f.slice(titles.length - 1).join(" ")];
  });
  return { Titles: titles, Processes: rows.filter((f) => pids.includes(Number(f[pidCol]))) };
}

/** A stats sample in dockerd's JSON (GET /containers/{id}/stats), with the previous one as precpu_stats. */
export function statsDocument(s: import("./system.js").StatsSample, prev: Record<string, unknown> | undefined): Record<string, unknown> {
  const now = new Date().toISOString();
  const cpus = (globalThis.process.getBuiltinModule?.("node:os") as typeof import("node:os") | undefined)?.cpus().length ?? 1;
  const systemUsage = (() => {
    try {
      const f = (require_fs().readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "").trim().split(/\s+/).slice(1, 8).map(Number);
      return Math.round((f.reduce((a, b) => a + b, 0) * 1e9) / 100); // clock ticks (USER_HZ 100) to ns
    } catch {
      // no /proc/stat: no CPU total to report, as docker's stats then
      return 0;
    }
  })();
  const cpu = { cpu_usage: { total_usage: s.cpuTotalNs, usage_in_kernelmode: 0, usage_in_usermode: 0 }, system_cpu_usage: systemUsage, online_cpus: cpus, throttling_data: { periods: 0, throttled_periods: 0, throttled_time: 0 } };
  return {
    read: now,
    preread: (prev?.read as string | undefined) ?? "0001-01-01T00:00:00Z",
    id: s.id,
    name: `/${s.name}`,
    pids_stats: { current: s.pids },
    cpu_stats: cpu,
    precpu_stats: (prev?.cpu_stats as object | undefined) ?? { cpu_usage: { total_usage: 0 }, throttling_data: {} },
    memory_stats: { usage: s.memoryUsage, limit: s.memoryLimit, stats: {} },
    blkio_stats: { io_service_bytes_recursive: [{ major: 0, minor: 0, op: "read", value: s.blockRead }, { major: 0, minor: 0, op: "write", value: s.blockWrite }] },
    networks: { eth0: { rx_bytes: s.netRx, tx_bytes: s.netTx, rx_packets: 0, tx_packets: 0, rx_errors: 0, tx_errors: 0, rx_dropped: 0, tx_dropped: 0 } },
    num_procs: 0,
    storage_stats: {},
  };
}

function require_fs(): typeof import("node:fs") {
  return globalThis.process.getBuiltinModule!("node:fs") as typeof import("node:fs");
}
