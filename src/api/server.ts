/**
 * The Docker Engine API over HTTP, on the same engine as the berth CLI: the real docker CLI,
 * docker-compose, dockerode and testcontainers talk to it unchanged. Paths are served with and
 * without the /v1.NN prefix (1.24 to 1.50), errors are {"message": ...} with dockerd's statuses,
 * and attach and exec take over the connection as dockerd does (101 Upgrade: tcp, then a raw or
 * stdcopy-multiplexed stream). No lock is held across a request: each one is engine calls.
 */
import { randomBytes } from "node:crypto";
import * as http from "node:http";
import * as os from "node:os";
import { bodyFault, type BodyName } from "./body-check.js";
import type { Socket } from "node:net";
import { BerthError, errorMessage, invalid, notFound, unsupported, withHint } from "../common/errors.js";
import {
  build,
  containerInspect,
  containers,
  familiar,
  shortId,
  parseReference,
  defaultContainerConfig,
  defaultHostConfig,
  demuxAttach,
  detachBytes,
  detachWatcher,
  images,
  networks,
  system,
  type ContainerConfig,
  type CreateRequest,
  type Engine,
  type ImageRecord,
  type HostConfig,
} from "../engine/index.js";

export const API_VERSION = "1.50";
export const MIN_API_VERSION = "1.24";
const BERTH_VERSION = "0.1.0";
/** The largest JSON body read (a create request is a few KB). */
const MAX_JSON = 4 << 20;

type Query = URLSearchParams;
interface Ctx {
  req: http.IncomingMessage;
  res: http.ServerResponse;
  params: string[];
  query: Query;
  engine: Engine;
}
type Handler = (c: Ctx) => Promise<void> | void;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const statusOf: Record<string, number> = { InvalidArgument: 400, NotFound: 404, AlreadyExists: 409, FailedPrecondition: 409, Unsupported: 501, System: 500 };

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: http.ServerResponse, e: unknown): void {
  const status = e instanceof HttpError ? e.status : e instanceof BerthError ? (statusOf[e.kind] ?? 500) : 500;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  // the API has no hint line: a hint follows the message, in parentheses
  sendJson(res, status, { message: withHint(e) });
}

async function readBody(req: http.IncomingMessage, limit = MAX_JSON): Promise<Buffer> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > limit) throw new HttpError(413, `request body is larger than ${limit} bytes`);
    parts.push(c as Buffer);
  }
  return Buffer.concat(parts);
}

/** A JSON body (undefined when empty), checked against the API's schema of the named body. */
async function readJson<T>(req: http.IncomingMessage, name?: BodyName): Promise<T | undefined> {
  return parseJson<T>(await readBody(req), name);
}

function parseJson<T>(body: Buffer, name?: BodyName): T | undefined {
  if (!body.length) return undefined;
  let value: T;
  try {
    value = JSON.parse(body.toString("utf8")) as T;
  } catch (e) {
    throw invalid(`invalid JSON in the request body: ${(e as Error).message}`);
  }
  if (name) checkBody(name, value);
  return value;
}

const bool = (q: Query, k: string, dflt = false) => {
  const v = q.get(k);
  if (v === null) return dflt;
  return v === "1" || v === "true" || v === "True";
};

/** The API's `filters` query: JSON of {key: [values]} or {key: {value: true}}, as key=value strings. */
function filtersOf(q: Query): string[] {
  const raw = q.get("filters");
  if (!raw) return [];
  let f: Record<string, string[] | Record<string, boolean>>;
  try {
    f = JSON.parse(raw);
  } catch {
    // a filter that is not JSON is the client's error, said as dockerd says it
    throw invalid(`invalid filters: ${raw.slice(0, 200)}`);
  }
  const out: string[] = [];
  for (const [k, v] of Object.entries(f ?? {})) for (const x of Array.isArray(v) ? v : Object.keys(v).filter((y) => v[y])) out.push(`${k}=${x}`);
  return out;
}

/**
 * Writes a chunk of a streamed response; when the client's buffer is full, waits until it drains
 * (back-pressure) — or until the client is gone: false, and the stream's producer should stop.
 */
function send(res: http.ServerResponse, chunk: string | Buffer): boolean | Promise<boolean> {
  if (res.destroyed) return false;
  if (res.write(chunk)) return true;
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      res.off("drain", drained);
      res.off("close", closed);
      resolve(ok);
    };
    const drained = () => done(true);
    const closed = () => done(false);
    res.once("drain", drained);
    res.once("close", closed);
  });
}

/** An AbortSignal that fires when the client goes away: ends the follows (logs, events) it reads. */
function clientGone(res: http.ServerResponse): AbortSignal {
  const ac = new AbortController();
  res.once("close", () => ac.abort());
  return ac.signal;
}

/** Sends a stream (a tar) as the response body, waiting on the client as it reads (back-pressure). */
async function sendStream(res: http.ServerResponse, headers: http.OutgoingHttpHeaders, body: AsyncIterable<Buffer>): Promise<void> {
  res.writeHead(200, headers);
  // a client gone: the loop's end closes the producer (the tar being made)
  for await (const chunk of body) if (!(await send(res, chunk))) break;
  res.end();
}

/** An image as GET /images/json and /system/df list it. */
function imageSummary(engine: Engine, r: ImageRecord): Record<string, unknown> {
  // names as dockerd writes them (busybox:latest, not docker.io/library/busybox:latest)
  return { Id: r.id, ParentId: "", RepoTags: r.repoTags.map(familiar), RepoDigests: r.repoDigests.map(familiar), Created: Math.floor(Date.parse(r.created ?? r.added) / 1000), Size: r.size, SharedSize: -1, VirtualSize: r.size, Labels: engine.images.config(r).config?.Labels ?? {}, Containers: engine.imageUsers(r.id).length };
}

/** A docker stdcopy frame: stream 1 stdout, 2 stderr. */
function frame(stream: 1 | 2, body: Buffer): Buffer {
  const h = Buffer.alloc(8);
  h[0] = stream;
  h.writeUInt32BE(body.length, 4);
  return Buffer.concat([h, body]);
}

// ---- request shapes

/** A body that does not fit the API's schema: a 400 naming the field, before the engine sees it. */
function checkBody(name: BodyName, body: unknown, what = "request body"): void {
  const fault = bodyFault(name, body);
  if (!fault) return;
  const field = fault.path.replace(/^\//, "").replace(/\//g, ".") || "the body";
  throw invalid(`invalid ${what}: ${field} ${fault.message}`);
}

const configKeys: (keyof ContainerConfig)[] = ["Hostname", "Domainname", "User", "AttachStdin", "AttachStdout", "AttachStderr", "ExposedPorts", "Tty", "OpenStdin", "StdinOnce", "Env", "Cmd", "Healthcheck", "Image", "Volumes", "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal", "StopTimeout"];

/** POST /containers/create's body as the engine's request; clients send zero values for what they leave unset. */
function createRequest(body: Record<string, unknown>, name: string | null, platform: string | null): CreateRequest {
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw invalid("the request body must be a JSON object");
  checkBody("ContainerCreate", body, "container configuration");
  if (typeof body.Image !== "string" || !body.Image) throw invalid("Config.Image: an image is required");
  const config: ContainerConfig = defaultContainerConfig(body.Image);
  for (const k of configKeys) if (body[k] !== undefined && body[k] !== null) (config as unknown as Record<string, unknown>)[k] = body[k];
  config.Env ??= [];
  config.Labels ??= {};
  const hc: HostConfig = { ...defaultHostConfig() };
  for (const [k, v] of Object.entries((body.HostConfig ?? {}) as Record<string, unknown>)) if (v !== null && v !== undefined) (hc as unknown as Record<string, unknown>)[k] = v;
  if (!hc.LogConfig?.Type) hc.LogConfig = { Type: "json-file", Config: hc.LogConfig?.Config ?? {} };
  hc.LogConfig.Config ??= {};
  if (!hc.RestartPolicy?.Name) hc.RestartPolicy = { Name: "no", MaximumRetryCount: hc.RestartPolicy?.MaximumRetryCount ?? 0 };
  if (!hc.NetworkMode) hc.NetworkMode = "default";
  if (!hc.IpcMode) hc.IpcMode = "private";
  const unsupportedSet = (["VolumeDriver", "Isolation", "CgroupParent", "Runtime"] as const).filter((k) => {
    const v = (hc as unknown as Record<string, unknown>)[k];
    return v !== undefined && v !== "" && !(k === "Isolation" && v === "default");
  });
  if (unsupportedSet.length) throw invalid(`HostConfig.${unsupportedSet[0]} is not supported by berth`);
  const req: CreateRequest = { Config: config, HostConfig: hc, pull: "never" };
  if (name) req.name = name;
  if (platform) req.platform = platform;
  const net = body.NetworkingConfig as CreateRequest["NetworkingConfig"] | undefined;
  if (net?.EndpointsConfig) req.NetworkingConfig = net;
  // clients before API 1.44 (docker 20.10's --mac-address) send the address in the container's
  // config: it is the primary network's endpoint's, unless that names its own
  if (typeof body.MacAddress === "string" && body.MacAddress) {
    if (["host", "none"].includes(hc.NetworkMode) || hc.NetworkMode.startsWith("container:")) throw invalid(`conflicting options: mac-address and the network mode (${hc.NetworkMode})`);
    if (!/^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/.test(body.MacAddress)) throw invalid(`invalid MAC address: ${body.MacAddress}`);
    const primary = hc.NetworkMode === "default" ? "bridge" : hc.NetworkMode;
    const eps = { ...(req.NetworkingConfig?.EndpointsConfig ?? {}) };
    eps[primary] = { ...eps[primary], MacAddress: eps[primary]?.MacAddress || body.MacAddress };
    req.NetworkingConfig = { EndpointsConfig: eps };
  }
  return req;
}

// ---- the routes

const routes: [method: string, path: RegExp, handler: Handler][] = [];
// {id}: one path segment; {name}: an image (or volume) name, which may hold slashes (host:port/repo/name)
const route = (method: string, path: string, handler: Handler) => routes.push([method, new RegExp("^" + path.replace(/\{name\}/g, "(.+)").replace(/\{[a-z]+\}/g, "([^/]+)") + "$"), handler]);
const ref = (c: Ctx) => decodeURIComponent(c.params[0]!);

// Swarm: berth is a dockerd that is not part of a swarm, and answers as one (clients clean up with
// POST /swarm/leave and accept 503 there); it cannot join or start one
const NOT_A_MANAGER = 'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this node to swarm and try again.';
route("GET", "/swarm", () => {
  throw new HttpError(503, NOT_A_MANAGER);
});
route("POST", "/swarm/leave", () => {
  throw new HttpError(503, "This node is not part of a swarm");
});
for (const verb of ["init", "join", "update", "unlock"])
  route("POST", `/swarm/${verb}`, () => {
    throw new HttpError(verb === "init" || verb === "join" ? 501 : 503, verb === "init" || verb === "join" ? "berth does not run swarm mode" : NOT_A_MANAGER);
  });
// Managed plugins: berth has none and installs none. Listing answers as a dockerd without any
// (`docker plugin ls` shows none); one by name is dockerd's 404; installing is a 501
route("GET", "/plugins", ({ res }) => sendJson(res, 200, []));
for (const [method, path] of [["GET", "/plugins/{name}/json"], ["DELETE", "/plugins/{name}"], ["POST", "/plugins/{name}/enable"], ["POST", "/plugins/{name}/disable"], ["POST", "/plugins/{name}/set"], ["POST", "/plugins/{name}/push"], ["POST", "/plugins/{name}/upgrade"]] as const)
  route(method, path, (c) => {
    throw notFound(`plugin "${ref(c)}" not found`);
  });
for (const [method, path] of [["GET", "/plugins/privileges"], ["POST", "/plugins/pull"], ["POST", "/plugins/create"]] as const)
  route(method, path, () => {
    throw unsupported("berth does not install managed plugins (docker plugin install): log drivers, volume and network drivers are berth's own");
  });
route("GET", "/swarm/unlockkey", () => {
  throw new HttpError(503, NOT_A_MANAGER);
});
for (const kind of ["services", "nodes", "tasks", "secrets", "configs"]) {
  for (const method of ["GET", "POST", "DELETE"])
    for (const path of [`/${kind}`, `/${kind}/create`, `/${kind}/{id}`, `/${kind}/{id}/update`, `/${kind}/{id}/logs`])
      route(method, path, () => {
        throw new HttpError(503, NOT_A_MANAGER);
      });
}

route("GET", "/_ping", ({ res }) => {
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache, no-store, must-revalidate", Pragma: "no-cache" });
  res.end("OK");
});
route("HEAD", "/_ping", ({ res }) => {
  res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": 0, "Cache-Control": "no-cache, no-store, must-revalidate", Pragma: "no-cache" });
  res.end();
});
route("GET", "/version", ({ res }) =>
  sendJson(res, 200, {
    Platform: { Name: "berth" },
    Components: [{ Name: "Engine", Version: BERTH_VERSION, Details: { ApiVersion: API_VERSION, MinAPIVersion: MIN_API_VERSION, Os: "linux", Arch: archName() } }],
    Version: BERTH_VERSION,
    ApiVersion: API_VERSION,
    MinAPIVersion: MIN_API_VERSION,
    GitCommit: "",
    GoVersion: `node ${process.version}`,
    Os: "linux",
    Arch: archName(),
    KernelVersion: os.release(),
    BuildTime: "",
  }),
);
route("GET", "/info", async ({ res, engine }) => {
  const i = await system.info(engine);
  sendJson(res, 200, { ...i, Swarm: { LocalNodeState: "inactive", NodeID: "", NodeAddr: "", ControlAvailable: false, Error: "", RemoteManagers: null }, Plugins: { Volume: ["local"], Network: ["bridge", "host", "none"], Log: ["json-file", "local", "none"] }, RegistryConfig: { IndexConfigs: {}, InsecureRegistryCIDRs: ["127.0.0.0/8"] }, Runtimes: { "berth-runtime": { path: "berth-runtime" } }, Warnings: [] });
});
route("GET", "/system/df", async ({ res, engine }) => {
  const du = await system.diskUsage(engine);
  const views = await engine.list();
  sendJson(res, 200, {
    LayersSize: du.images.size,
    Images: du.images.list.map((r) => imageSummary(engine, r)),
    Containers: views.map((v) => ({ ...containers.listEntry(v), SizeRw: du.containers.sizes[v.rec.Id] ?? 0, SizeRootFs: 0 })),
    Volumes: engine.volumes.list().map((v) => ({ ...v, UsageData: { Size: system.treeBytes(v.Mountpoint), RefCount: engine.volumeUsers(v.Name).length } })),
    BuildCache: [],
  });
});
route("GET", "/events", async ({ res, query, engine }) => {
  const source = system.events(engine, { ...(query.get("since") ? { since: query.get("since")! } : {}), ...(query.get("until") ? { until: query.get("until")! } : {}), filters: filtersOf(query), signal: clientGone(res) });
  res.writeHead(200, { "Content-Type": "application/json" });
  res.flushHeaders();
  for await (const e of source) if (!(await send(res, JSON.stringify({ ...e, status: e.Action, id: e.Actor.ID, from: e.Actor.Attributes.image }) + "\n"))) break;
  res.end();
});

// containers
route("GET", "/containers/json", async ({ res, query, engine }) => {
  const list = await containers.listEntries(engine, { all: bool(query, "all"), filters: filtersOf(query), size: bool(query, "size") });
  const limit = Number(query.get("limit") ?? -1);
  sendJson(res, 200, limit > 0 ? list.slice(0, limit) : list);
});
route("POST", "/containers/create", async ({ req, res, query, engine }) => {
  const body = (await readJson<Record<string, unknown>>(req)) ?? {};
  if (process.env.BERTH_API_TRACE) process.stderr.write(`create ${JSON.stringify(body)}\n`);
  const r = await engine.create(createRequest(body, query.get("name"), query.get("platform")));
  sendJson(res, 201, r);
});
route("POST", "/containers/prune", async ({ res, query, engine }) => {
  const { deleted, reclaimed } = await system.pruneContainers(engine, filtersOf(query));
  sendJson(res, 200, { ContainersDeleted: deleted, SpaceReclaimed: reclaimed });
});
route("GET", "/containers/{id}/json", async (c) => {
  const v = await c.engine.get(ref(c));
  const doc = containerInspect(v, c.engine.images, c.engine.root);
  if (bool(c.query, "size")) Object.assign(doc, { SizeRw: system.containerSize(c.engine, v.rec.Id), SizeRootFs: 0 });
  sendJson(c.res, 200, doc);
});
route("GET", "/containers/{id}/top", async (c) => {
  const v = await c.engine.get(ref(c));
  if (!v.state.Running) throw new BerthError("FailedPrecondition", `Container ${v.rec.Id} is not running`);
  sendJson(c.res, 200, await containers.top(c.engine, v, c.query.get("ps_args") ?? "-ef"));
});
// the websocket attach is served on the upgrade; a plain GET is not a websocket handshake
route("GET", "/containers/{id}/attach/ws", async (c) => {
  await c.engine.get(ref(c));
  throw new HttpError(400, "websocket attach needs a websocket handshake (Upgrade: websocket)");
});
route("GET", "/containers/{id}/changes", async (c) => sendJson(c.res, 200, await system.changes(c.engine, ref(c))));
route("GET", "/containers/{id}/export", async (c) => {
  await c.engine.exportContainer(ref(c), (tar) => sendStream(c.res, { "Content-Type": "application/x-tar" }, tar));
});
/**
 * Attach requests that came before their container's start (docker run attaches, then starts):
 * they are connected to the monitor between create and start, so no early output is lost.
 */
const pendingAttach = new Map<string, Array<(monitor: Socket | Error) => void>>();

route("POST", "/containers/{id}/start", async (c) => {
  const v = await c.engine.get(ref(c));
  if (v.state.Running) {
    c.res.writeHead(304).end();
    return;
  }
  const waiting = pendingAttach.get(v.rec.Id) ?? [];
  pendingAttach.delete(v.rec.Id);
  // an attached run (docker run): this server records the exit itself, through a connection of its
  // own to the monitor, as berth's CLI does — no exit command to start (a node process saved on every docker run).
  // Should the server die first, the monitor sees it (-w) and runs the exit command after all.
  let exitWatch: Socket | undefined;
  try {
    await c.engine.start(v.rec.Id, {
      ...(waiting.length
        ? {
            beforeStart: async (id: string) => {
              exitWatch = await c.engine.attach(id);
              for (const w of waiting) w(await c.engine.attach(id));
            },
            handlesExit: true,
          }
        : {}),
    });
  } catch (e) {
    exitWatch?.destroy();
    for (const w of waiting) w(e as Error);
    // dockerd removes an --rm container whose start failed (the client waits for its removal)
    if (v.rec.HostConfig.AutoRemove) await c.engine.remove(v.rec.Id, { force: true }).catch(() => {}); // the start's error is what the client is told; a failed removal leaves a container `rm` still sees
    // clients read the cause from the words (docker run exits 127 for "no such file or directory",
    // 126 for "permission denied"): strerror's capitals as Go writes them
    if (e instanceof BerthError) throw new BerthError(e.kind, e.message.replace(/No such file or directory|Permission denied|Is a directory/g, (m) => m.toLowerCase()));
    throw e;
  }
  if (exitWatch) {
    const id = v.rec.Id;
    void demuxAttach(exitWatch, { stdout: () => {}, stderr: () => {} }).then((code) =>
      // no code: the monitor is gone; the next look at the container settles it
      code === undefined ? undefined : c.engine.exited(id, { unpublishInBackground: true }).catch(() => {}), // the exit is recorded by the next look at the container if this one fails
    );
  }
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/stop", async (c) => {
  const v = await c.engine.get(ref(c));
  if (!v.state.Running) {
    c.res.writeHead(304).end();
    return;
  }
  const t = c.query.get("t") ?? c.query.get("timeout");
  await c.engine.stop(v.rec.Id, t !== null ? Number(t) : undefined, c.query.get("signal") ?? undefined);
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/restart", async (c) => {
  const v = await c.engine.get(ref(c));
  const t = c.query.get("t") ?? c.query.get("timeout");
  if (v.state.Running) await c.engine.stop(v.rec.Id, t !== null ? Number(t) : undefined);
  await c.engine.start(v.rec.Id);
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/kill", async (c) => {
  const v = await c.engine.get(ref(c));
  if (!v.state.Running) throw new BerthError("FailedPrecondition", `Cannot kill container: ${ref(c)}: Container ${v.rec.Id} is not running`);
  await c.engine.kill(v.rec.Id, c.query.get("signal") ?? "SIGKILL");
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/pause", async (c) => {
  await c.engine.pause(ref(c), true);
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/unpause", async (c) => {
  await c.engine.pause(ref(c), false);
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/rename", async (c) => {
  const name = c.query.get("name");
  if (!name) throw invalid("the new name is required (?name=)");
  await c.engine.rename(ref(c), name);
  c.res.writeHead(204).end();
});
route("POST", "/containers/{id}/resize", async (c) => {
  await c.engine.resize(ref(c), Number(c.query.get("h") ?? 0), Number(c.query.get("w") ?? 0));
  c.res.writeHead(200).end();
});
route("POST", "/containers/{id}/update", async (c) => {
  const v = await c.engine.get(ref(c));
  const body = (await readJson<Partial<HostConfig>>(c.req, "ContainerUpdate")) ?? {};
  const hc = { ...v.rec.HostConfig };
  // what the body sets, as dockerd reads it: clients send every field, zero where the user gave
  // nothing (docker update --memory sends CpuShares 0 and a RestartPolicy named ""), and zero
  // changes nothing — except PidsLimit, which is sent only when given (0: no limit)
  for (const [k, val] of Object.entries(body)) {
    if (val === null || val === undefined || val === "" || (Array.isArray(val) && !val.length)) continue;
    if (val === 0 && k !== "PidsLimit") continue;
    if (k === "RestartPolicy" && !(val as { Name?: string }).Name) continue;
    (hc as unknown as Record<string, unknown>)[k] = val;
  }
  await c.engine.update(v.rec.Id, hc);
  sendJson(c.res, 200, { Warnings: [] });
});
route("POST", "/containers/{id}/wait", async (c) => {
  const condition = (c.query.get("condition") || "not-running") as containers.WaitCondition;
  await c.engine.get(ref(c)); // 404 before the headers
  // the headers go first: clients start the container once they have them (docker run's order)
  c.res.writeHead(200, { "Content-Type": "application/json" });
  c.res.flushHeaders();
  let gone = false;
  c.req.socket.once("close", () => (gone = true));
  try {
    const code = await containers.waitFor(c.engine, ref(c), condition, () => gone);
    c.res.end(JSON.stringify({ StatusCode: code, Error: null }) + "\n");
  } catch (e) {
    c.res.end(JSON.stringify({ StatusCode: -1, Error: { Message: errorMessage(e) } }) + "\n");
  }
});
route("DELETE", "/containers/{id}", async (c) => {
  if (bool(c.query, "link")) await c.engine.removeLink(ref(c));
  else await c.engine.remove(ref(c), { force: bool(c.query, "force"), volumes: bool(c.query, "v") });
  c.res.writeHead(204).end();
});
// a link's name holds slashes (docker rm --link /parent/alias)
route("DELETE", "/containers/{name}", async (c) => {
  if (!bool(c.query, "link")) throw notFound(`No such container: ${ref(c)}`);
  await c.engine.removeLink(ref(c));
  c.res.writeHead(204).end();
});
route("GET", "/containers/{id}/logs", async (c) => {
  const q = c.query;
  if (!bool(q, "stdout") && !bool(q, "stderr")) throw invalid("Bad parameters: you must choose at least one stream");
  const { view, entries } = await containers.containerLogs(c.engine, ref(c), {
    follow: bool(q, "follow"),
    ...(q.get("tail") ? { tail: q.get("tail")! } : {}),
    ...(q.get("since") ? { since: q.get("since")! } : {}),
    ...(q.get("until") ? { until: q.get("until")! } : {}),
    signal: clientGone(c.res),
  });
  const tty = view.rec.Config.Tty;
  c.res.writeHead(200, { "Content-Type": tty ? "application/vnd.docker.raw-stream" : "application/vnd.docker.multiplexed-stream" });
  c.res.flushHeaders();
  for await (const e of entries) {
    if (e.stream === "stdout" ? !bool(q, "stdout") : !bool(q, "stderr")) continue;
    const text = Buffer.from(bool(q, "timestamps") ? `${e.time} ${e.line}` : e.line);
    if (!(await send(c.res, tty ? text : frame(e.stream === "stdout" ? 1 : 2, text)))) break;
  }
  c.res.end();
});
route("GET", "/containers/{id}/stats", async (c) => {
  const v = await c.engine.get(ref(c));
  const stream = bool(c.query, "stream", true) && !bool(c.query, "one-shot");
  c.res.writeHead(200, { "Content-Type": "application/json" });
  let gone = false;
  c.req.socket.once("close", () => (gone = true));
  let prev = containers.statsDocument(system.statsOf(c.engine, v), undefined);
  if (!stream) {
    // one sample's CPU needs a previous one: dockerd waits a second for it too, unless one-shot
    if (!bool(c.query, "one-shot")) {
      await new Promise((r) => setTimeout(r, 1000));
      prev = containers.statsDocument(system.statsOf(c.engine, await c.engine.get(v.rec.Id)), prev);
    }
    c.res.end(JSON.stringify(prev) + "\n");
    return;
  }
  while (!gone) {
    if (!(await send(c.res, JSON.stringify(prev) + "\n"))) break;
    await new Promise((r) => setTimeout(r, 1000));
    const cur = await c.engine.get(v.rec.Id).catch(() => undefined);
    if (!cur) break;
    prev = containers.statsDocument(system.statsOf(c.engine, cur), prev);
  }
  c.res.end();
});
route("HEAD", "/containers/{id}/archive", async (c) => {
  const path = c.query.get("path");
  if (!path) throw invalid("path is required");
  const st = await c.engine.statPath(ref(c), path);
  if (!st) throw notFound(`Could not find the file ${path} in container ${ref(c)}`);
  c.res.writeHead(200, { "X-Docker-Container-Path-Stat": Buffer.from(JSON.stringify(st)).toString("base64") }).end();
});
route("GET", "/containers/{id}/archive", async (c) => {
  const path = c.query.get("path");
  if (!path) throw invalid("path is required");
  const st = await c.engine.statPath(ref(c), path);
  if (!st) throw notFound(`Could not find the file ${path} in container ${ref(c)}`);
  await c.engine.copyFrom(ref(c), path, {}, (tar) => sendStream(c.res, { "Content-Type": "application/x-tar", "X-Docker-Container-Path-Stat": Buffer.from(JSON.stringify(st)).toString("base64") }, tar));
});
route("PUT", "/containers/{id}/archive", async (c) => {
  const path = c.query.get("path");
  if (!path) throw invalid("path is required");
  await c.engine.copyTo(ref(c), path, c.req as AsyncIterable<Buffer>, { keepOwners: bool(c.query, "copyUIDGID") });
  c.res.writeHead(200).end();
});

// exec: created as a record here, run at start (dockerd keeps them in memory too)
interface ExecRecord {
  ID: string;
  container: string;
  argv: string[];
  opts: { user?: string; workdir?: string; env?: string[] };
  tty: boolean;
  stdin: boolean;
  running: boolean;
  exitCode: number | null;
  pid: number;
  /** tty: the window size asked for, and how to change it once running */
  size?: { rows: number; cols: number };
  resize?: (rows: number, cols: number) => void;
  /** what detaches from its terminal ("" for dockerd's ctrl-p,ctrl-q) */
  detachKeys: string;
}
const execs = new Map<string, ExecRecord>();
route("POST", "/containers/{id}/exec", async (c) => {
  const v = await c.engine.get(ref(c));
  if (!v.state.Running) throw new BerthError("FailedPrecondition", `Container ${v.rec.Id} is not running`);
  if (v.state.Paused) throw new BerthError("FailedPrecondition", `Container ${v.rec.Id} is paused, unpause the container before exec`);
  const b = (await readJson<{ Cmd?: string[]; Tty?: boolean; AttachStdin?: boolean; User?: string; WorkingDir?: string; Env?: string[]; Privileged?: boolean; ConsoleSize?: [number, number] | null; DetachKeys?: string }>(c.req, "ExecCreate")) ?? {};
  if (!Array.isArray(b.Cmd) || !b.Cmd.length) throw invalid("No exec command specified");
  if (b.DetachKeys) detachBytes(b.DetachKeys); // a bad one is a 400 now, not at start
  const id = randomBytes(32).toString("hex");
  execs.set(id, {
    ID: id,
    container: v.rec.Id,
    argv: b.Cmd,
    opts: { ...(b.User ? { user: b.User } : {}), ...(b.WorkingDir ? { workdir: b.WorkingDir } : {}), ...(b.Env ? { env: b.Env } : {}) },
    tty: !!b.Tty,
    stdin: !!b.AttachStdin,
    running: false,
    exitCode: null,
    pid: 0,
    detachKeys: b.DetachKeys ?? "",
    ...(b.ConsoleSize?.[0] && b.ConsoleSize[1] ? { size: { rows: b.ConsoleSize[0], cols: b.ConsoleSize[1] } } : {}),
  });
  sendJson(c.res, 201, { Id: id });
});
route("GET", "/exec/{id}/json", (c) => {
  const e = execs.get(ref(c));
  if (!e) throw notFound(`No such exec instance: ${ref(c)}`);
  sendJson(c.res, 200, { ID: e.ID, Running: e.running, ExitCode: e.exitCode, ProcessConfig: { tty: e.tty, entrypoint: e.argv[0], arguments: e.argv.slice(1), privileged: false, user: e.opts.user ?? "" }, OpenStdin: e.stdin, OpenStderr: true, OpenStdout: true, CanRemove: false, ContainerID: e.container, DetachKeys: e.detachKeys, Pid: e.pid });
});
route("POST", "/exec/{id}/resize", (c) => {
  const e = execs.get(ref(c));
  if (!e) throw notFound(`No such exec instance: ${ref(c)}`);
  const rows = Number(c.query.get("h")),
    cols = Number(c.query.get("w"));
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0 || rows > 65535 || cols > 65535) throw invalid(`invalid size: h=${c.query.get("h")} w=${c.query.get("w")}`);
  // before the start (docker's CLI sends it early too): the size it starts with
  e.size = { rows, cols };
  e.resize?.(rows, cols);
  c.res.writeHead(200).end();
});

// images
route("GET", "/images/json", ({ res, query, engine }) => {
  // one entry per image (listImages gives one per tag); with a reference filter an image lists only
  // the tags that matched, as dockerd's (the docker CLI prints a line per RepoTag)
  const filters = filtersOf(query);
  const byReference = filters.some((f) => f.startsWith("reference="));
  const byId = new Map<string, { record: ImageRecord; tags: string[] }>();
  for (const row of images.listImages(engine, filters, { all: query.get("all") === "1" || query.get("all") === "true" })) {
    const e = byId.get(row.record.id) ?? { record: row.record, tags: [] };
    if (row.repoTag) e.tags.push(row.repoTag);
    byId.set(row.record.id, e);
  }
  const repoOf = (t: string) => t.slice(0, t.lastIndexOf(":"));
  sendJson(
    res,
    200,
    [...byId.values()].map(({ record, tags }) => {
      const summary = imageSummary(engine, record);
      if (!byReference) return summary;
      // RepoDigests too: the CLI prints a `<none>` line for a digest's repository that has no tag shown
      const repos = new Set(tags.map(repoOf));
      return { ...summary, RepoTags: tags.map(familiar), RepoDigests: record.repoDigests.filter((d) => repos.has(d.split("@")[0]!)).map(familiar) };
    }),
  );
});
route("POST", "/images/create", async ({ req, res, query, engine }) => {
  const from = query.get("fromImage");
  if (!from) {
    if (query.get("fromSrc") === "-") {
      const rec = await images.importTarball(engine, req as AsyncIterable<Buffer>, { ...(query.get("repo") ? { reference: `${query.get("repo")}${query.get("tag") ? ":" + query.get("tag") : ""}` } : {}), changes: query.getAll("changes"), ...(query.get("message") ? { message: query.get("message")! } : {}) });
      sendJson(res, 200, { status: rec.id });
      return;
    }
    throw invalid("fromImage (or fromSrc=-) is required");
  }
  const tag = query.get("tag");
  const name = tag ? (tag.startsWith("sha256:") ? `${from}@${tag}` : `${from}:${tag}`) : from;
  const auth = registryAuth(req); // a bad header is a 400, before the stream starts
  res.writeHead(200, { "Content-Type": "application/json" });
  res.flushHeaders();
  const msg = (m: unknown) => res.write(JSON.stringify(m) + "\r\n");
  try {
    // no tag at all (docker pull --all-tags): every tag the registry has, as dockerd pulls them
    let all: string[] | undefined;
    try {
      const r = parseReference(from);
      if (!tag && !r.tag && !r.digest) all = await images.tagsOf(from, auth ? { auth } : {});
    } catch (e) {
      if (!(e instanceof BerthError && e.kind === "InvalidArgument")) throw e;
    }
    for (const target of all ? all.map((t) => `${from}:${t}`) : [name]) {
      msg({ status: `Pulling from ${from}`, id: all ? target.slice(from.length + 1) : (tag ?? "latest") });
      const r = await images.pull(engine, target, {
        ...(auth ? { auth } : {}),
        ...(query.get("platform") ? { platform: query.get("platform")! } : {}),
        onProgress: (e) => msg(progressMessage(e)),
      });
      msg({ status: `Digest: ${r.digest}` });
      msg({ status: r.upToDate ? `Status: Image is up to date for ${target}` : `Status: Downloaded newer image for ${target}` });
    }
  } catch (e) {
    msg({ errorDetail: { message: errorMessage(e) }, error: errorMessage(e) });
  }
  res.end();
});
// builds: the legacy builder's JSON messages (what `docker build` without BuildKit and compose 1.29 read)
route("POST", "/build", async ({ req, res, query, engine }) => {
  const json = <T>(name: string, fallback: T): T => {
    const v = query.get(name);
    if (!v) return fallback;
    try {
      return JSON.parse(v) as T;
    } catch {
      // any parse error is the client's: named as the parameter
      throw invalid(`${name}: not valid JSON`);
    }
  };
  const buildArgs = Object.fromEntries(Object.entries(json<Record<string, string | null>>("buildargs", {})).filter((e): e is [string, string] => typeof e[1] === "string"));
  const network = query.get("networkmode") || "default";
  const remote = query.get("remote");
  if (remote) throw unsupported("remote build contexts (git or URL) are not supported by berth's API: send the context as the request body");
  const quiet = bool(query, "q");
  res.writeHead(200, { "Content-Type": "application/json" });
  res.flushHeaders();
  const msg = (m: unknown) => res.write(JSON.stringify(m) + "\r\n");
  const partial = new Map<number, string>();
  try {
    const r = await build.build(
      engine,
      {
        context: { tar: req as AsyncIterable<Buffer> },
        forwardSignals: false, // the service's signals are its own
        dockerfileName: query.get("dockerfile") || "Dockerfile",
        tags: query.getAll("t"),
        buildArgs,
        ...(query.get("target") ? { target: query.get("target")! } : {}),
        noCache: bool(query, "nocache"),
        pull: bool(query, "pull"),
        labels: json<Record<string, string>>("labels", {}),
        network: network === "bridge" ? "default" : network,
        extraHosts: (query.get("extrahosts") ?? "").split(",").filter(Boolean),
        ...(query.get("platform") ? { platform: query.get("platform")! } : {}),
        cacheFrom: json<string[]>("cachefrom", []),
      },
      quiet
        ? undefined
        : (e) => {
            if (e.kind === "step") msg({ stream: `Step ${e.name.replace(/^\[\S+ |\]$/g, "")} : ${e.text}\n` });
            else if (e.kind === "cached") msg({ stream: " ---> Using cache\n" });
            else if (e.kind === "output") {
              const text = (partial.get(e.step) ?? "") + e.data.toString("utf8");
              const cut = text.lastIndexOf("\n") + 1;
              partial.set(e.step, text.slice(cut));
              if (cut) msg({ stream: text.slice(0, cut) });
            } else if (e.kind === "done") {
              if (partial.get(e.step)) msg({ stream: partial.get(e.step) + "\n" });
              if (e.id) msg({ stream: ` ---> ${shortId(e.id)}\n` });
            } else if (e.kind === "warning") msg({ stream: `[Warning] ${e.text}\n` });
          },
    );
    msg({ aux: { ID: r.image.id } });
    if (quiet) msg({ stream: `${r.image.id}\n` }); // what `docker build -q` prints
    else {
      msg({ stream: `Successfully built ${shortId(r.image.id)}\n` });
      for (const t of r.image.repoTags) msg({ stream: `Successfully tagged ${familiar(t)}\n` });
    }
  } catch (e) {
    // the legacy builder's words for a failed RUN, with its exit code (the docker CLI exits with it)
    const code = e instanceof build.StepFailed ? e.exitCode : 1;
    const message = e instanceof build.StepFailed ? e.message.replace(/^process "(.*)" did not complete successfully: exit code: (\d+)$/, "The command '$1' returned a non-zero code: $2") : errorMessage(e);
    msg({ errorDetail: { code, message }, error: message });
  }
  res.end();
});
route("POST", "/build/prune", async ({ res, engine }) => {
  const r = await build.pruneCache(engine);
  sendJson(res, 200, { CachesDeleted: r.deleted, SpaceReclaimed: r.reclaimed });
});
route("POST", "/build/cancel", ({ res }) => void res.writeHead(200).end());
route("GET", "/images/get", ({ res, query, engine }) => sendStream(res, { "Content-Type": "application/x-tar" }, images.save(engine, query.getAll("names"), "docker-archive")));
route("GET", "/images/{name}/get", (c) => sendStream(c.res, { "Content-Type": "application/x-tar" }, images.save(c.engine, [ref(c)], "docker-archive")));
route("POST", "/images/load", async ({ req, res, query, engine }) => {
  const loaded = await images.load(engine, req as AsyncIterable<Buffer>);
  const lines = loaded.flatMap((r) => (r.repoTags.length ? r.repoTags.map((t) => `Loaded image: ${t}\n`) : [`Loaded image ID: ${r.id}\n`]));
  res.writeHead(200, { "Content-Type": "application/json" });
  res.end(bool(query, "quiet") ? "" : lines.map((l) => JSON.stringify({ stream: l })).join("\r\n") + "\r\n");
});
route("POST", "/images/prune", async ({ res, query, engine }) => {
  const filters = filtersOf(query);
  const all = filters.includes("dangling=false") || filters.includes("dangling=0");
  const r = await images.prune(engine, { all, filters: filters.filter((f) => !f.startsWith("dangling=")) });
  sendJson(res, 200, { ImagesDeleted: [...r.untagged.map((u) => ({ Untagged: u })), ...r.deleted.map((d) => ({ Deleted: d }))], SpaceReclaimed: r.reclaimed });
});
route("GET", "/images/search", () => {
  throw unsupported("image search is not available: berth has no registry index to search (offline)");
});
// the manifest a registry has for a name and its platforms, without pulling (docker-py's get_registry_data)
route("GET", "/distribution/{name}/json", async (c) => {
  const auth = registryAuth(c.req);
  const info = await images.distribution(ref(c), auth ? { auth } : {});
  sendJson(c.res, 200, { Descriptor: info.descriptor, Platforms: info.platforms });
});
route("GET", "/images/{name}/json", (c) => {
  const doc = images.inspect(c.engine, ref(c));
  if (!doc) throw notFound(`No such image: ${ref(c)}`);
  sendJson(c.res, 200, doc);
});
route("GET", "/images/{name}/history", (c) =>
  sendJson(
    c.res,
    200,
    images.history(c.engine, ref(c)).map((h) => ({ Id: h.id, Created: Math.floor(Date.parse(h.created) / 1000) || 0, CreatedBy: h.createdBy, Tags: null, Size: h.size, Comment: h.comment })),
  ),
);
route("POST", "/images/{name}/tag", async (c) => {
  const repo = c.query.get("repo");
  if (!repo) throw invalid("repo is required");
  await images.tag(c.engine, ref(c), `${repo}${c.query.get("tag") ? ":" + c.query.get("tag") : ""}`);
  c.res.writeHead(201).end();
});
route("POST", "/images/{name}/push", async (c) => {
  const tag = c.query.get("tag");
  const name = tag ? `${ref(c)}:${tag}` : ref(c);
  const auth = registryAuth(c.req);
  c.res.writeHead(200, { "Content-Type": "application/json" });
  c.res.flushHeaders();
  const msg = (m: unknown) => c.res.write(JSON.stringify(m) + "\r\n");
  try {
    const r = await images.push(c.engine, name, { onProgress: (e) => msg(progressMessage(e)), ...(auth ? { auth } : {}) });
    msg({ status: `${r.tag}: digest: ${r.digest} size: ${r.size}` });
    msg({ progressDetail: {}, aux: { Tag: r.tag, Digest: r.digest, Size: r.size } });
  } catch (e) {
    msg({ errorDetail: { message: errorMessage(e) }, error: errorMessage(e) });
  }
  c.res.end();
});
route("DELETE", "/images/{name}", async (c) => {
  const r = await images.remove(c.engine, ref(c), { force: bool(c.query, "force") });
  sendJson(c.res, 200, [...r.untagged.map((u) => ({ Untagged: u })), ...r.deleted.map((d) => ({ Deleted: d }))]);
});
/** The image config fields a commit's body may set. */
const commitKeys = new Set(["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "StopSignal", "Volumes", "Healthcheck", "OnBuild"]);
route("POST", "/commit", async (c) => {
  const q = c.query;
  const container = q.get("container");
  if (!container) throw invalid("container is required");
  // the body's config: what it sets is the image's, the rest comes from the container (dockerd's merge)
  const body = (await readJson<Record<string, unknown>>(c.req, "Commit")) ?? {};
  const set = Object.entries(body).filter(([k, v]) => commitKeys.has(k) && v !== null && v !== "" && !(Array.isArray(v) && !v.length) && !(typeof v === "object" && !Object.keys(v as object).length));
  const rec = await c.engine.commit(container, {
    ...(set.length ? { config: Object.fromEntries(set) } : {}),
    ...(q.get("repo") ? { reference: `${q.get("repo")}${q.get("tag") ? ":" + q.get("tag") : ""}` } : {}),
    changes: q.getAll("changes"),
    ...(q.get("comment") ? { message: q.get("comment")! } : {}),
    ...(q.get("author") ? { author: q.get("author")! } : {}),
    pause: bool(q, "pause", true),
  });
  sendJson(c.res, 201, { Id: rec.id });
});

route("POST", "/auth", async ({ req, res }) => {
  const b = (await readJson<{ username?: string; password?: string; serveraddress?: string }>(req, "Auth")) ?? {};
  if (!b.username) throw invalid("a username is required");
  try {
    await images.checkLogin(b.serveraddress || undefined, b.username, b.password ?? "");
  } catch (e) {
    // dockerd: 401 with the registry's reason
    throw new HttpError(401, errorMessage(e));
  }
  sendJson(res, 200, { Status: "Login Succeeded", IdentityToken: "" });
});

// volumes
route("GET", "/volumes", ({ res, query, engine }) => sendJson(res, 200, { Volumes: system.listVolumes(engine, filtersOf(query)).map(({ Anonymous: _a, ...v }) => v), Warnings: [] }));
route("POST", "/volumes/create", async ({ req, res, engine }) => {
  const b = (await readJson<{ Name?: string; Driver?: string; DriverOpts?: Record<string, string>; Labels?: Record<string, string> }>(req, "VolumeCreate")) ?? {};
  const v = system.createVolume(engine, b.Name || undefined, { ...(b.Driver ? { driver: b.Driver } : {}), labels: b.Labels ?? {}, options: b.DriverOpts ?? {} });
  sendJson(res, 201, system.inspectVolume(engine, v.Name));
});
route("POST", "/volumes/prune", ({ res, query, engine }) => {
  const all = filtersOf(query).includes("all=true") || filtersOf(query).includes("all=1");
  const r = system.pruneVolumes(engine, { all });
  sendJson(res, 200, { VolumesDeleted: r.deleted, SpaceReclaimed: r.reclaimed });
});
route("GET", "/volumes/{name}", (c) => sendJson(c.res, 200, system.inspectVolume(c.engine, ref(c))));
route("DELETE", "/volumes/{name}", (c) => {
  system.removeVolume(c.engine, ref(c), { force: bool(c.query, "force") });
  c.res.writeHead(204).end();
});

// networks
route("GET", "/networks", ({ res, query, engine }) => sendJson(res, 200, networks.listNetworks(engine, filtersOf(query))));
route("GET", "/networks/{id}", (c) => sendJson(c.res, 200, networks.inspectNetwork(c.engine, ref(c))));
route("POST", "/networks/create", async ({ req, res, engine }) => {
  const b = (await readJson<Parameters<typeof networks.createNetwork>[1]>(req, "NetworkCreate")) ?? ({} as Parameters<typeof networks.createNetwork>[1]);
  if (!b.Name) throw invalid("a network needs a Name");
  sendJson(res, 201, { Id: await networks.createNetwork(engine, b), Warning: "" });
});
route("DELETE", "/networks/{id}", async (c) => {
  await networks.removeNetwork(c.engine, ref(c));
  c.res.writeHead(204).end();
});
route("POST", "/networks/{id}/connect", async (c) => {
  type Connect = { Container: string; EndpointConfig?: { Aliases?: string[] | null; Links?: string[] | null; IPAMConfig?: { IPv4Address?: string; IPv6Address?: string; LinkLocalIPs?: string[] | null } | null } | null };
  const b = (await readJson<Connect>(c.req, "NetworkConnect")) ?? ({} as Connect);
  if (!b.Container) throw invalid("Container is required");
  const ep = b.EndpointConfig ?? {};
  const ipam = ep.IPAMConfig ?? {};
  await c.engine.connectNetwork(b.Container, ref(c), {
    ...(ep.Aliases ? { aliases: ep.Aliases } : {}),
    ...(ep.Links?.length ? { links: ep.Links } : {}),
    ...(ipam.IPv4Address ? { ip: ipam.IPv4Address } : {}),
    ...(ipam.IPv6Address ? { ip6: ipam.IPv6Address } : {}),
    ...(ipam.LinkLocalIPs?.length ? { linkLocal: ipam.LinkLocalIPs } : {}),
  });
  c.res.writeHead(200).end();
});
route("POST", "/networks/{id}/disconnect", async (c) => {
  const b = (await readJson<{ Container: string }>(c.req, "NetworkDisconnect")) ?? ({} as { Container: string });
  if (!b.Container) throw invalid("Container is required");
  await c.engine.disconnectNetwork(b.Container, ref(c));
  c.res.writeHead(200).end();
});
route("POST", "/networks/prune", async ({ res, engine }) => sendJson(res, 200, { NetworksDeleted: await networks.pruneNetworks(engine) }));

/** The X-Registry-Auth header: base64url JSON of {username, password, serveraddress}; none when absent or empty. */
function registryAuth(req: http.IncomingMessage): images.RegistryAuth | undefined {
  const h = req.headers["x-registry-auth"];
  if (typeof h !== "string" || !h) return undefined;
  let doc: { username?: string; password?: string; identitytoken?: string };
  try {
    doc = JSON.parse(Buffer.from(h.replace(/-/g, "+").replace(/_/g, "/"), "base64").toString("utf8"));
  } catch {
    // any decoding error is the client's: said as dockerd says it
    throw invalid("X-Registry-Auth is not base64-encoded JSON");
  }
  if (doc.identitytoken) throw unsupported("identity tokens in X-Registry-Auth are not supported: give a username and password");
  return doc.username ? { username: doc.username, password: doc.password ?? "" } : undefined;
}

function progressMessage(e: { id?: string; status?: string; current?: number; total?: number } | unknown): unknown {
  const p = e as { id?: string; status?: string; current?: number; total?: number; action?: string };
  return { status: p.status ?? p.action ?? "", ...(p.id ? { id: p.id.replace(/^sha256:/, "").slice(0, 12) } : {}), progressDetail: p.total ? { current: p.current ?? 0, total: p.total } : {} };
}

function archName(): string {
  return process.arch === "x64" ? "amd64" : process.arch;
}


// ---- hijacked streams: attach and exec start

/** The 101 (Upgrade: tcp) or, for a client that did not ask to upgrade, 200 that hands the connection over. */
function hijack(socket: Socket, upgrade: boolean, contentType: string): void {
  socket.write(
    upgrade
      ? `HTTP/1.1 101 UPGRADED\r\nContent-Type: ${contentType}\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n`
      : `HTTP/1.1 200 OK\r\nContent-Type: ${contentType}\r\n\r\n`,
  );
}

/**
 * One attached client, whatever carries it (a hijacked connection, a websocket): where the
 * container's output goes, where the client's input comes from, and its end.
 */
interface AttachClient {
  /** What the container writes: 1 stdout, 2 stderr. False: the client's buffer is full, wait for onDrain. */
  write(stream: 1 | 2, b: Buffer): boolean;
  onDrain(fn: () => void): void;
  onInput(data: (b: Buffer) => void, end: () => void): void;
  onGone(fn: () => void): void;
  gone(): boolean;
  end(): void;
}

/**
 * Back-pressure: a chunk for a client that reads slowly (or not at all) pauses its producer (the
 * monitor's stream, an exec's output) until the client drains, so it holds the producer, not this
 * server's memory.
 */
function passOn(client: { write(n: 1 | 2, b: Buffer): boolean; onDrain(fn: () => void): void }, producer: NodeJS.ReadableStream, n: 1 | 2, b: Buffer): void {
  if (client.write(n, b) || producer.isPaused()) return;
  producer.pause();
  client.onDrain(() => producer.resume());
}

/**
 * A hijacked connection as an attach client: stdcopy frames unless the stream is a terminal's.
 * Its input is held (paused) until onInput takes it: what the client sends while the process is
 * being started or the container waited for is kept, not dropped by a flowing socket.
 */
function socketClient(socket: Socket, head: Buffer, raw: boolean): AttachClient {
  socket.pause();
  return {
    write: (n, b) => socket.write(raw ? b : frame(n, b)),
    onDrain: (fn) => void socket.once("drain", fn),
    onInput: (data, end) => {
      // what came with the request is the input's first bytes
      if (head.length) data(head);
      socket.on("data", data);
      socket.on("end", end);
      socket.resume();
    },
    onGone: (fn) => {
      socket.on("error", fn);
      socket.on("close", fn);
    },
    gone: () => socket.destroyed,
    end: () => void socket.end(),
  };
}

/**
 * A client's input into a container's stdin. With keys (a terminal) the detach keys are watched
 * for: they are not passed on, and onDetach runs instead of the stdin's end. Returns whether the
 * client detached.
 */
function clientInput(client: AttachClient, keys: number[] | undefined, sink: NodeJS.WritableStream, onDetach: () => void): () => boolean {
  let detached = false;
  const write = (b: Buffer) => void sink.write(b);
  const input = keys
    ? detachWatcher(keys, write, () => {
        detached = true;
        onDetach();
      })
    : write;
  client.onInput(input, () => !detached && sink.end());
  return () => detached;
}

/**
 * The monitor's attach stream of a container that is not running yet: joined when it starts
 * (between create and start when this server starts it, so no early output is lost). Undefined
 * when the client went first or the container was started elsewhere and already ended.
 */
async function monitorAtStart(engine: Engine, id: string, client: AttachClient): Promise<Socket | undefined> {
  const got = await new Promise<Socket | Error | undefined>((resolve) => {
    const list = pendingAttach.get(id) ?? [];
    list.push(resolve);
    pendingAttach.set(id, list);
    // started by someone else (the CLI), or the client gave up: stop waiting
    const poll = setInterval(async () => {
      const cur = await engine.get(id).catch(() => undefined);
      if (client.gone() || !cur || cur.state.Running) {
        clearInterval(poll);
        const l = pendingAttach.get(id);
        if (l?.includes(resolve)) {
          l.splice(l.indexOf(resolve), 1);
          resolve(cur?.state.Running && !client.gone() ? await engine.attach(id).catch((e: Error) => e) : undefined);
        }
      }
    }, 200);
    client.onGone(() => clearInterval(poll));
  });
  return got instanceof Error ? undefined : got;
}

interface AttachWants {
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  logs: boolean;
  stream: boolean;
  detachKeys: string;
}

function attachWants(q: Query): AttachWants {
  return {
    stdin: bool(q, "stdin"),
    stdout: bool(q, "stdout"),
    stderr: bool(q, "stderr"),
    logs: bool(q, "logs"),
    stream: bool(q, "stream"),
    detachKeys: q.get("detachKeys") || "ctrl-p,ctrl-q",
  };
}

/**
 * Serves one attached client: logs=1 first (what the container wrote before), then, with
 * stream=1, what it writes until it ends or the client goes; the client's input goes to stdin.
 * `opened` is the response that opens the stream (the 101), sent once the container is known.
 */
async function serveAttach(engine: Engine, id: string, want: AttachWants, client: AttachClient, opened: () => void): Promise<void> {
  const v = await engine.get(id);
  const tty = v.rec.Config.Tty;
  // a terminal's input is watched for the detach keys (dockerd's default ctrl-p,ctrl-q or the client's)
  const keys = tty ? detachBytes(want.detachKeys) : undefined;
  let mon: Socket | undefined;
  if (want.stream && v.state.Running) mon = await engine.attach(v.rec.Id);
  opened();
  if (want.stream && !mon) {
    // not started yet: the stream is open now, the monitor is joined when the container starts
    mon = await monitorAtStart(engine, v.rec.Id, client);
    if (!mon) return client.end();
  }
  // logs=1: what the container wrote before, then what it writes (docker attach --logs, compose's attach)
  if (want.logs && (want.stdout || want.stderr)) {
    const { entries } = await containers.containerLogs(engine, v.rec.Id, {});
    for await (const e of entries) {
      if (e.stream === "stdout" && want.stdout) client.write(1, Buffer.from(e.line));
      if (e.stream === "stderr" && want.stderr) client.write(2, Buffer.from(e.line));
    }
  }
  if (!mon) return client.end();
  const monitor = mon;
  // detached: the client goes, the container runs on (its stdin stays open)
  if (want.stdin && v.rec.Config.OpenStdin) clientInput(client, keys, monitor, () => monitor.destroy());
  else client.onInput(() => {}, () => {}); // input not asked for: read and dropped, so the client's close is seen
  client.onGone(() => monitor.destroy());
  // back-pressure: a client that reads slowly (or not at all) holds the monitor's stream, not this
  // server's memory
  const pass = (n: 1 | 2, b: Buffer) => passOn(client, monitor, n, b);
  await demuxAttach(monitor, {
    stdout: (b) => want.stdout && pass(1, b),
    stderr: (b) => want.stderr && pass(2, b),
  });
  client.end();
}

async function attach(engine: Engine, id: string, q: Query, socket: Socket, head: Buffer, upgrade: boolean): Promise<void> {
  const v = await engine.get(id);
  const tty = v.rec.Config.Tty;
  const client = socketClient(socket, head, tty);
  await serveAttach(engine, v.rec.Id, attachWants(q), client, () =>
    hijack(socket, upgrade, tty ? "application/vnd.docker.raw-stream" : "application/vnd.docker.multiplexed-stream"),
  );
}

/**
 * GET /containers/{id}/attach/ws: attach over a websocket (RFC 6455), as dockerd's: never
 * multiplexed (stdout and stderr both come as messages), stdin from the client's messages. Before
 * API 1.42 dockerd attached all three streams whatever was asked and sent text frames; from 1.42
 * the stdin/stdout/stderr parameters count and frames are binary.
 */
async function attachWebsocket(engine: Engine, id: string, q: Query, version: string | undefined, req: http.IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
  const v = await engine.get(id);
  const modern = !version || versionAtLeast(version, "1.42");
  const want = attachWants(q);
  if (!modern) want.stdin = want.stdout = want.stderr = true;
  const { WebSocketServer } = await import("ws");
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: MAX_JSON });
  const ws = await new Promise<import("ws").WebSocket>((resolve) => wss.handleUpgrade(req, socket, head, resolve));
  let closed = false;
  ws.on("close", () => (closed = true));
  ws.on("error", () => (closed = true));
  // the client may type before the container's stream is joined: its first messages are kept
  const early: Buffer[] = [];
  let input: ((b: Buffer) => void) | undefined;
  ws.on("message", (m: Buffer | ArrayBuffer | Buffer[]) => {
    const b = Array.isArray(m) ? Buffer.concat(m) : Buffer.from(m as Buffer);
    if (input) input(b);
    else early.push(b);
  });
  // what was sent and not yet written to the socket: over 1 MiB the stream waits (back-pressure)
  let pending = 0;
  const drains: (() => void)[] = [];
  const client: AttachClient = {
    write: (_n, b) => {
      if (ws.readyState !== ws.OPEN) return true;
      pending += b.length;
      ws.send(b, { binary: modern }, () => {
        pending -= b.length;
        if (pending < 1 << 20) for (const fn of drains.splice(0)) fn();
      });
      return pending < 1 << 20;
    },
    onDrain: (fn) => void drains.push(fn),
    onInput: (data, end) => {
      for (const b of early.splice(0)) data(b);
      input = data;
      ws.on("close", end);
    },
    onGone: (fn) => {
      ws.on("close", fn);
      ws.on("error", fn);
    },
    gone: () => closed,
    end: () => ws.close(1000),
  };
  await serveAttach(engine, v.rec.Id, want, client, () => {});
}

async function execStart(engine: Engine, id: string, body: { Detach?: boolean; Tty?: boolean }, socket: Socket, head: Buffer, upgrade: boolean): Promise<void> {
  const e = execs.get(id);
  if (!e) throw notFound(`No such exec instance: ${id}`);
  if (e.running || e.exitCode !== null) throw new BerthError("FailedPrecondition", `Exec ${id} has already started`);
  e.running = true;
  // attached: the stream opens before the process starts, as dockerd's does, so nothing the
  // process writes arrives with the 101 (clients that read the answer through a buffer, like
  // docker-py, would take those bytes with its headers and lose them); a failure to start is then
  // told in the stream, as dockerd tells it
  if (!body.Detach) hijack(socket, upgrade, e.tty ? "application/vnd.docker.raw-stream" : "application/vnd.docker.multiplexed-stream");
  // (with a terminal the stream is raw: one stream, as the container's terminal writes it)
  const client = body.Detach ? undefined : socketClient(socket, head, e.tty);
  let s: Awaited<ReturnType<Engine["execStreams"]>>;
  try {
    s = await engine.execStreams(e.container, e.argv, { ...e.opts, stdin: e.stdin && !body.Detach, tty: e.tty, ...(e.size ? { size: e.size } : {}) });
  } catch (err) {
    e.running = false;
    e.exitCode = 126;
    if (body.Detach) throw err;
    socket.end(`${errorMessage(err)}\r\n`);
    return;
  }
  e.pid = s.pid;
  if (s.resize) e.resize = s.resize;
  const done = s.exit.then(
    (code) => {
      e.running = false;
      e.exitCode = code;
    },
    () => {
      e.running = false;
      e.exitCode = 126;
    },
  );
  if (body.Detach) {
    s.stdout.resume();
    s.stderr.resume();
    socket.end("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    return;
  }
  if (!client) return;
  if (s.stdin) {
    const stdin = s.stdin;
    // detached: the client leaves, the process runs on
    const detached = clientInput(client, e.tty ? detachBytes(e.detachKeys || "ctrl-p,ctrl-q") : undefined, stdin, () => socket.end());
    socket.on("error", () => !detached() && stdin.destroy());
  } else client.onInput(() => {}, () => {});
  const pump = (r: NodeJS.ReadableStream, n: 1 | 2) =>
    new Promise<void>((res) => {
      r.on("data", (b: Buffer) => passOn(client, r, n, b));
      r.on("end", res);
      r.on("error", () => res());
    });
  await Promise.all([pump(s.stdout, 1), pump(s.stderr, 2), done]);
  socket.end();
}

// ---- the server

export interface ServeOptions {
  /** Seconds without a request or connection after which the server exits; 0: never. */
  idleSeconds?: number;
  log?: (line: string) => void;
}

/** An error answered on a connection taken from the HTTP server (before its stream opened). */
function rawError(socket: Socket, e: unknown): void {
  const status = e instanceof HttpError ? e.status : e instanceof BerthError ? (statusOf[e.kind] ?? 500) : 500;
  const text = JSON.stringify({ message: withHint(e) });
  if (socket.writable) socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`);
}

/** Whether API version a (1.NN) is at least b. */
function versionAtLeast(a: string, b: string): boolean {
  const [am, an] = a.split(".").map(Number) as [number, number];
  const [bm, bn] = b.split(".").map(Number) as [number, number];
  return am !== bm ? am > bm : an >= bn;
}

/** Splits /v1.NN/path into the version and the path; refuses versions outside 1.24..1.50. */
function versioned(url: string): { path: string; version?: string } {
  const m = /^\/v(\d+\.\d+)(\/.*)$/.exec(url);
  if (!m) return { path: url };
  const [maj, min] = m[1]!.split(".").map(Number) as [number, number];
  if (maj !== 1 || min < 24) throw new HttpError(400, `client version ${m[1]} is too old. Minimum supported API version is ${MIN_API_VERSION}, please upgrade your client to a newer version`);
  if (min > 50) throw new HttpError(400, `client version ${m[1]} is too new. Maximum supported API version is ${API_VERSION}`);
  return { path: m[2]!, version: m[1]! };
}

export function createServer(engine: Engine, opts: ServeOptions = {}): http.Server {
  const log = opts.log;
  // idle connections stay open as long as a Go client (docker, compose) keeps them (90 s): a server that
  // closes first races the client's next request on them, which fails for a POST
  const server = http.createServer({ requestTimeout: 0, headersTimeout: 60_000, keepAliveTimeout: 120_000 });
  const headers = (res: http.ServerResponse) => {
    res.setHeader("Api-Version", API_VERSION);
    res.setHeader("Docker-Experimental", "false");
    res.setHeader("Ostype", "linux");
    res.setHeader("Server", `Docker/${BERTH_VERSION} (linux) berth`);
    res.setHeader("Builder-Version", "1");
  };
  const hijacking = (method: string, path: string): { kind: "attach" | "exec"; id: string } | undefined => {
    if (method !== "POST") return undefined;
    let m = /^\/containers\/([^/]+)\/attach$/.exec(path);
    if (m) return { kind: "attach", id: decodeURIComponent(m[1]!) };
    m = /^\/exec\/([^/]+)\/start$/.exec(path);
    if (m) return { kind: "exec", id: decodeURIComponent(m[1]!) };
    return undefined;
  };
  const takeOver = async (req: http.IncomingMessage, socket: Socket, head: Buffer, upgrade: boolean): Promise<boolean> => {
    const url = new URL(req.url ?? "/", "http://berth");
    let path: string;
    try {
      path = versioned(url.pathname).path;
    } catch (e) {
      return false;
    }
    const h = hijacking(req.method ?? "", path);
    if (!h) return false;
    try {
      // an upgraded request's body (exec start's JSON) arrives with the stream's first bytes
      let raw: Buffer;
      if (upgrade) {
        const len = Number(req.headers["content-length"] ?? 0);
        while (head.length < len) {
          const more = await new Promise<Buffer | undefined>((res) => {
            socket.once("data", res);
            socket.once("end", () => res(undefined));
          });
          if (!more) break;
          head = Buffer.concat([head, more]);
        }
        raw = head.subarray(0, len);
        head = head.subarray(len);
      } else raw = await readBody(req);
      if (h.kind === "attach") await attach(engine, h.id, url.searchParams, socket, head, upgrade);
      else {
        const body = parseJson<{ Detach?: boolean; Tty?: boolean }>(raw, "ExecStart") ?? {};
        await execStart(engine, h.id, body, socket, head, upgrade);
      }
    } catch (e) {
      log?.(`${req.method} ${req.url}: ${errorMessage(e)}`);
      rawError(socket, e);
    }
    return true;
  };
  const websocket = async (req: http.IncomingMessage, socket: Socket, head: Buffer): Promise<boolean> => {
    if (req.method !== "GET" || String(req.headers.upgrade).toLowerCase() !== "websocket") return false;
    const url = new URL(req.url ?? "/", "http://berth");
    try {
      const { path, version } = versioned(url.pathname);
      const m = /^\/containers\/([^/]+)\/attach\/ws$/.exec(path);
      if (!m) return false;
      await attachWebsocket(engine, decodeURIComponent(m[1]!), url.searchParams, version, req, socket, head);
    } catch (e) {
      log?.(`${req.method} ${req.url}: ${errorMessage(e)}`);
      // before the handshake: an HTTP error; after it the websocket is closed
      rawError(socket, e);
    }
    return true;
  };
  server.on("upgrade", (req: http.IncomingMessage, socket: Socket, head: Buffer) => {
    void websocket(req, socket, head).then(async (served) => {
      if (served) return;
      const taken = await takeOver(req, socket, head, true);
      if (!taken) socket.end("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    });
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Socket) => {
    log?.(`client error: ${err.code ?? ""} ${err.message}`);
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
  });
  const trace = !!process.env.BERTH_API_TRACE;
  server.on("request", (req: http.IncomingMessage, res: http.ServerResponse) => {
    headers(res);
    if (trace) log?.(`${req.method} ${req.url}`);
    void (async () => {
      const url = new URL(req.url ?? "/", "http://berth");
      const { path } = versioned(url.pathname);
      if (hijacking(req.method ?? "", path)) {
        // a client that did not ask to upgrade gets the stream after a 200 (older docker-py)
        res.detachSocket(req.socket);
        await takeOver(req, req.socket, Buffer.alloc(0), false);
        return;
      }
      for (const [method, re, handler] of routes) {
        const m = re.exec(path);
        if (!m || method !== req.method) continue;
        await handler({ req, res, params: m.slice(1), query: url.searchParams, engine });
        return;
      }
      const known = routes.some(([, re]) => re.test(path));
      throw known ? new HttpError(405, `${req.method} is not allowed on ${path}`) : new HttpError(404, `page not found`);
    })().catch((e) => {
      opts.log?.(`${req.method} ${req.url}: ${errorMessage(e)}`);
      sendError(res, e);
    });
  });
  return server;
}
