/**
 * `berth build` and POST /build: the builder (src/build) over this engine. RUN steps run in the
 * runtime's containers as BuildKit runs them, without the engine's records (src/engine/buildstep.ts:
 * the same spec, networks, DNS, user lookup and limits as `berth run`).
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { invalid } from "../common/errors.js";
import { Builder, StepFailed, type BuildEvent, type BuildExecutor, type BuildOptions, type BuildResult, type RunStep } from "../build/index.js";
import { extractLayer, pullImage, type ImageRecord } from "../images/index.js";
import { removeTree, treeBytes } from "../common/sys.js";
import type { Engine } from "./engine.js";
import { defaultContainerConfig, defaultHostConfig } from "./types.js";
import { runStep } from "./buildstep.js";

export { StepFailed, type BuildEvent, type BuildResult };
export { parseSshFlags } from "../build/index.js";

export interface BuildRequest extends Omit<BuildOptions, "context" | "onEvent" | "dockerfile"> {
  /** The Dockerfile's text; undefined: `dockerfileName` (default Dockerfile) read from the context. */
  dockerfile?: string;
  /** The context: a directory, or a tar stream (plain or compressed) unpacked to a temporary one. */
  context: { dir: string } | { tar: AsyncIterable<Buffer> } | { none: true };
  /** Where the result's files go besides the store (--output). */
  output?: { type: "local"; dest: string } | { type: "tar"; dest: string | NodeJS.WritableStream };
  /**
   * Signals this process gets go on to the running step (the CLI: ctrl-C ends the step, and the
   * build fails as docker's). A server keeps its own signals: false.
   */
  forwardSignals?: boolean;
}

function executor(engine: Engine, forwardSignals: boolean): BuildExecutor {
  return {
    async image(ref: string, pull: boolean): Promise<ImageRecord> {
      if (!pull) {
        const found = engine.images.find(ref);
        if (found) return found;
      }
      return (await pullImage(engine.images, ref)).image;
    },
    run: (step: RunStep) => runStep(engine, step, { forwardSignals }),
  };
}

/** Builds an image; events report the steps as they run. */
export async function build(engine: Engine, req: BuildRequest, onEvent?: (e: BuildEvent) => void): Promise<BuildResult> {
  let dir: string;
  let tmp: string | undefined;
  if ("dir" in req.context) {
    dir = req.context.dir;
    if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw invalid(`unable to prepare context: path "${dir}" not found`);
  } else {
    tmp = join(engine.root, "tmp", `build-context-${process.pid}-${randomBytes(4).toString("hex")}`);
    fs.mkdirSync(tmp, { recursive: true, mode: 0o700 });
    dir = tmp;
    if ("tar" in req.context) await extractLayer(req.context.tar, tmp, "into", undefined, { keepOwners: false });
  }
  try {
    const { output, context: _c, forwardSignals: _f, ...rest } = req;
    const name = req.dockerfileName ?? "Dockerfile";
    let dockerfile = req.dockerfile;
    if (dockerfile === undefined) {
      const file = join(dir, name.replace(/^\/+/, ""));
      if (!fs.existsSync(file)) throw invalid(`failed to read dockerfile: open ${name}: no such file or directory in the build context`);
      dockerfile = fs.readFileSync(file, "utf8");
    }
    let ignore = req.ignore;
    if (ignore === undefined)
      for (const f of [join(dir, `${name.replace(/^\/+/, "")}.dockerignore`), join(dir, ".dockerignore")])
        if (fs.existsSync(f)) {
          ignore = fs.readFileSync(f, "utf8");
          break;
        }
    const builder = new Builder(engine.images, executor(engine, req.forwardSignals ?? true), { ...rest, dockerfile, dockerfileName: name.split("/").pop()!, ...(ignore !== undefined ? { ignore } : {}), context: dir, ...(onEvent ? { onEvent } : {}) });
    const result = await builder.build();
    engine.events.emit("image", "build", result.image.id, { name: result.image.repoTags[0] ?? result.image.id });
    if (output) await exportImage(engine, result.image, output);
    return result;
  } finally {
    if (tmp) removeTree(tmp);
  }
}

/** --output: the image's files as a directory or a tar (the store keeps the image too). */
async function exportImage(engine: Engine, image: ImageRecord, output: NonNullable<BuildRequest["output"]>): Promise<void> {
  const { Id: id } = await engine.create({ Config: { ...defaultContainerConfig(image.id), Cmd: ["/"] }, HostConfig: defaultHostConfig(), pull: "never" }, undefined, { buildStep: true });
  try {
    await engine.exportContainer(id, async (tar) => {
      if (output.type === "local") {
        fs.mkdirSync(output.dest, { recursive: true });
        await extractLayer(tar, output.dest, "into", undefined, { keepOwners: process.getuid?.() === 0 });
        return;
      }
      const out: NodeJS.WritableStream = typeof output.dest === "string" ? fs.createWriteStream(output.dest) : output.dest;
      for await (const chunk of tar) if (!out.write(chunk)) await new Promise((r) => out.once("drain", r));
      if (typeof output.dest === "string") {
        const file = out as fs.WriteStream;
        await new Promise<void>((r, j) => {
          file.once("error", j);
          file.end(r);
        });
      }
    });
  } finally {
    await engine.remove(id, { force: true });
  }
}

/** What the build cache holds: its images (steps) and the RUN cache mounts, in bytes. */
export function cacheUsage(engine: Engine): { entries: { id: string; createdBy: string; size: number; lastUsed: string; kind: "step" | "mount" }[]; total: number } {
  const entries: { id: string; createdBy: string; size: number; lastUsed: string; kind: "step" | "mount" }[] = [];
  for (const r of engine.images.list()) {
    if (!r.intermediate || r.repoTags.length) continue;
    const cfg = engine.images.config(r);
    const h = cfg.history ?? [];
    const top = engine.images.topLayer(r);
    const last = h[h.length - 1];
    entries.push({ id: r.id, createdBy: last?.created_by ?? "", size: last?.empty_layer || !top ? 0 : (engine.images.snapshots.layer(top)?.size ?? 0), lastUsed: r.added, kind: "step" });
  }
  const mounts = join(engine.root, "buildcache", "mounts");
  for (const m of fs.existsSync(mounts) ? fs.readdirSync(mounts) : []) {
    const st = fs.statSync(join(mounts, m));
    entries.push({ id: m, createdBy: "RUN --mount=type=cache", size: treeBytes(join(mounts, m)), lastUsed: st.mtime.toISOString(), kind: "mount" });
  }
  return { entries, total: entries.reduce((n, e) => n + e.size, 0) };
}

/** `builder prune`: the build cache's images no container uses, and the RUN cache mounts. */
export async function pruneCache(engine: Engine): Promise<{ deleted: string[]; reclaimed: number }> {
  const before = cacheUsage(engine).total;
  const r = await engine.images.prune({ buildCache: true, inUse: engine.imageUsers });
  const mounts = join(engine.root, "buildcache", "mounts");
  const deleted = [...r.deleted];
  for (const m of fs.existsSync(mounts) ? fs.readdirSync(mounts) : []) {
    removeTree(join(mounts, m));
    deleted.push(m);
  }
  return { deleted, reclaimed: Math.max(before - cacheUsage(engine).total, r.reclaimed) };
}
