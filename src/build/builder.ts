/**
 * The builder: a Dockerfile's stages as a graph (the target's dependencies only, independent
 * stages at the same time), each instruction a step whose result is an image in the store.
 * Metadata steps change the config and add a history entry; RUN runs a container (through the
 * engine, see BuildExecutor) and COPY/ADD/WORKDIR write into a mounted snapshot; either way the
 * snapshot's upper directory is moved into place as the new layer (images/commit.ts), never
 * unpacked again or rescanned as a whole tree.
 *
 * The cache: a layer step's key hashes its parent image, the config it runs under, the
 * instruction after substitution, the build args it sees, and for COPY/ADD the sources' content
 * digest. The step's image is kept with that key (an intermediate image, hidden from `images`);
 * a later build with the same key reuses it, across restarts, until `builder prune`.
 */
import * as fs from "node:fs";
import { createHash, randomBytes } from "node:crypto";
import { join } from "../common/path.js";
import { BerthError, invalid, notFound, unsupported } from "../common/errors.js";
import { commitBuildStep, formatReference, parseReference, withDefaultTag, hostPlatform, parsePlatform, formatPlatform, unmount, writeConfigImage, writeLayerImage, type HistoryEntry, type ImageConfig, type ImageRecord, type ImageStore, type ContainerConfig } from "../images/index.js";
import { checkFlags, flag, flagsAll, parseDockerfile, parseError, parseJsonForm, type Dockerfile, type Instruction } from "./parser.js";
import { expandWord, parseKeyValues, splitWords } from "./shell.js";
import { IgnoreMatcher, isGlob } from "./ignore.js";
import { trace } from "../common/trace.js";
import { goDuration, goQuote, goQuoteList, goQuoteRune } from "./gofmt.js";
import { applyCopy, isArchive, keptParents, isDirInRoot, planDigest, resolveOwner, resolveSources, mkdirInRoot, type CopyPlan, type CopySource, type SourceTree } from "./copy.js";
import { openRoot } from "../common/inroot.js";
import { SshForwarder } from "./ssh.js";

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** The predefined platform ARGs (always this host's: berth builds for its own platform). */
function platformArgs(): Record<string, string> {
  const p = hostPlatform();
  return { TARGETPLATFORM: formatPlatform(p), TARGETOS: p.os, TARGETARCH: p.architecture, TARGETVARIANT: p.variant ?? "", BUILDPLATFORM: formatPlatform(p), BUILDOS: p.os, BUILDARCH: p.architecture, BUILDVARIANT: p.variant ?? "" };
}

/** Refuses a platform other than the host's (`--platform`, `FROM --platform`). */
function checkPlatform(spec: string, what: string): void {
  const want = parsePlatform(spec);
  const host = hostPlatform();
  if (want.os !== host.os || want.architecture !== host.architecture) throw unsupported(`${what}: berth builds for this host's platform only (${formatPlatform(host)})`);
}

const PROXY_ARGS = ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"];

export type BuildEvent =
  | { kind: "step"; step: number; name: string; text: string }
  | { kind: "cached"; step: number }
  | { kind: "output"; step: number; data: Buffer }
  | { kind: "done"; step: number; seconds: number; id?: string }
  | { kind: "error"; step: number; message: string }
  | { kind: "warning"; text: string };

/** A mount of a RUN step, as the engine makes it. */
export interface StepMount {
  type: "bind" | "tmpfs";
  source?: string;
  target: string;
  readonly?: boolean;
  /** An SSH agent's socket (RUN --mount=type=ssh): the first one is SSH_AUTH_SOCK. */
  ssh?: boolean;
}

export interface RunStep {
  image: ImageRecord;
  argv: string[];
  env: string[];
  user: string;
  workdir: string;
  network: string;
  extraHosts: string[];
  mounts: StepMount[];
  shmSize?: number;
  ulimits?: string[];
  output: (data: Buffer) => void;
}

/** What the builder needs from the engine above it: images by name, and containers for RUN. */
export interface BuildExecutor {
  /** The image by name, pulled when missing (or always, with pull). */
  image(ref: string, pull: boolean): Promise<ImageRecord>;
  /** Runs a step's process in a container on `image`; its snapshot holds the changes until remove. */
  run(step: RunStep): Promise<{ exitCode: number; snapshot: string; remove(): Promise<void> }>;
}

export interface BuildOptions {
  /** The build context: a directory (a tar context is unpacked by the caller). */
  context: string;
  dockerfile: string;
  /** The Dockerfile's name in messages (and for `<name>.dockerignore`). */
  dockerfileName?: string;
  /** The .dockerignore's text (undefined: none). */
  ignore?: string;
  tags?: string[];
  buildArgs?: Record<string, string>;
  target?: string;
  noCache?: boolean;
  pull?: boolean;
  labels?: Record<string, string>;
  network?: string;
  extraHosts?: string[];
  platform?: string;
  secrets?: Record<string, string>;
  /** --ssh: agent sockets or key files by id (see parseSshFlags). */
  ssh?: Record<string, string[]>;
  shmSize?: number;
  ulimits?: string[];
  /** Images whose steps may be reused (--cache-from): their history must match step by step. */
  cacheFrom?: string[];
  onEvent?: (e: BuildEvent) => void;
}

export interface BuildResult {
  image: ImageRecord;
  /** Whether every step came from the cache. */
  cached: boolean;
  warnings: string[];
  /** How many steps were numbered. */
  steps: number;
}

/** A failed RUN: docker's message and the process's exit code (the CLI exits with it). */
export class StepFailed extends BerthError {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super("FailedPrecondition", message);
  }
}

interface Stage {
  index: number;
  name?: string;
  from: Instruction;
  instructions: Instruction[];
}

/** A stage's state as its steps run. */
interface State {
  /** The image holding the layers so far (undefined: scratch, no layers yet). */
  base?: ImageRecord;
  config: ImageConfig;
  /** History entries since base (metadata steps, not yet in an image). */
  pending: HistoryEntry[];
  /** ARGs in scope: their values (undefined: declared without a value). */
  args: Map<string, string | undefined>;
  cmdSet: boolean;
  allCached: boolean;
  /**
   * The cache key of what the stage holds so far: the base image's ID, then each layer step's key.
   * Keys chain on keys, not on the IDs of step images (which hold times), so that an image built
   * elsewhere with the same inputs has the same keys (build --cache-from).
   */
  key: string;
}

/**
 * The image config's record of the build's step keys, one per history entry (null for entries that
 * are not cached steps): what lets `--cache-from` reuse an image's steps in another store, as
 * BuildKit's inline cache (`moby.buildkit.cache.v0`) does.
 */
const CACHE_KEYS = "berth.cache.v0";
function recordedKeys(c: ImageConfig): (string | null)[] {
  const raw = (c as Record<string, unknown>)[CACHE_KEYS];
  const keys = Array.isArray(raw) ? raw.map((k) => (typeof k === "string" ? k : null)) : [];
  const n = c.history?.length ?? 0;
  return [...keys.slice(0, n), ...new Array<null>(Math.max(n - keys.length, 0)).fill(null)];
}

const hash = (v: unknown) => `sha256:${createHash("sha256").update(JSON.stringify(v)).digest("hex")}`;
const envMap = (env: string[] | undefined) => new Map((env ?? []).map((e) => [e.slice(0, e.indexOf("=") < 0 ? e.length : e.indexOf("=")), e.slice(e.indexOf("=") + 1)]));

export class Builder {
  private readonly df: Dockerfile;
  private readonly file: string;
  private readonly stages: Stage[] = [];
  private readonly globalArgs = new Map<string, string | undefined>();
  private readonly results = new Map<number, Promise<State>>();
  private readonly usedArgs = new Set<string>();
  private readonly warnings: string[] = [];
  private readonly context: SourceTree;
  private stepCounter = 0;
  private readonly buildArgs: Record<string, string>;

  private readonly ssh?: SshForwarder;

  constructor(
    private readonly store: ImageStore,
    private readonly exec: BuildExecutor,
    private readonly opts: BuildOptions,
  ) {
    this.file = opts.dockerfileName ?? "Dockerfile";
    this.df = parseDockerfile(opts.dockerfile, this.file);
    this.warnings.push(...this.df.warnings);
    this.buildArgs = opts.buildArgs ?? {};
    this.context = { root: opts.context, kind: "context", label: "build context", ...(opts.ignore !== undefined ? { ignore: IgnoreMatcher.parse(opts.ignore) } : {}) };
    if (opts.platform) checkPlatform(opts.platform, `--platform ${opts.platform}`);
    if (opts.ssh && Object.keys(opts.ssh).length) this.ssh = new SshForwarder(opts.ssh, join(store.root, "tmp"));
    this.splitStages();
  }

  private emit(e: BuildEvent): void {
    if (e.kind === "warning") this.warnings.push(e.text);
    this.opts.onEvent?.(e);
  }

  private err(ins: Instruction, message: string): BerthError {
    return parseError(this.file, ins.line, 1, message);
  }

  private splitStages(): void {
    const ins = this.df.instructions;
    if (!ins.length) throw invalid(`${this.file}: the Dockerfile has no instructions (file with no instructions)`);
    let i = 0;
    for (const [k, v] of Object.entries(platformArgs())) this.globalArgs.set(k, v);
    for (; i < ins.length && ins[i]!.keyword !== "FROM"; i++) {
      const a = ins[i]!;
      if (a.keyword !== "ARG") throw this.err(a, `no build stage in current context: ${a.keyword} must come after FROM (only ARG may come before it)`);
      for (const [k, v] of parseKeyValues(a.args, this.globalArgs, this.df.escape, { legacy: false, requireValue: false })) {
        const given = this.buildArgs[k];
        if (given !== undefined) this.usedArgs.add(k);
        this.globalArgs.set(k, given ?? v);
      }
    }
    if (i >= ins.length) throw invalid(`${this.file}: no FROM instruction (a Dockerfile needs at least one stage)`);
    for (; i < ins.length; i++) {
      const a = ins[i]!;
      if (a.keyword === "FROM") {
        checkFlags(a, ["platform"], this.file);
        const words = splitWords(a.args, this.df.escape);
        let name: string | undefined;
        if (words.length === 3 && words[1]!.toUpperCase() === "AS") name = words[2]!.toLowerCase();
        else if (words.length !== 1) throw this.err(a, "FROM requires either one argument, or three: FROM <source> [AS <name>]");
        if (name && !/^[a-z][a-z0-9-_.]*$/.test(name)) throw this.err(a, `invalid name for build stage: "${name}", name can't start with a number or contain symbols`);
        if (name && this.stages.some((s) => s.name === name)) throw this.err(a, `duplicate stage name "${name}"`);
        this.stages.push({ index: this.stages.length, ...(name ? { name } : {}), from: a, instructions: [] });
      } else this.stages[this.stages.length - 1]!.instructions.push(a);
    }
  }

  /** A stage by name or index (FROM x, COPY --from=x); undefined when x is an image. */
  private stageRef(ref: string, before: number): Stage | undefined {
    const byName = this.stages.find((s) => s.name === ref.toLowerCase() && s.index < before);
    if (byName) return byName;
    if (/^\d+$/.test(ref)) {
      const s = this.stages[Number(ref)];
      if (!s || s.index >= before) throw invalid(`invalid stage index ${ref}: a stage can only use stages before it`);
      return s;
    }
    return undefined;
  }

  private fromText(s: Stage): string {
    const word = splitWords(s.from.args, this.df.escape)[0]!;
    return expandWord(word, this.globalArgs, this.df.escape, this.usedArgs);
  }

  /** The stages a stage needs (FROM, COPY --from, RUN --mount from=), as far as they are known before it runs. */
  private deps(s: Stage): Stage[] {
    const out: Stage[] = [];
    const base = this.stageRef(this.fromText(s), s.index);
    if (base) out.push(base);
    for (const ins of s.instructions) {
      const refs = [flag(ins, "from"), ...flagsAll(ins, "mount").map((m) => /(?:^|,)from=([^,]+)/.exec(m)?.[1])];
      for (const r of refs) {
        if (!r || r.includes("$")) continue;
        const d = this.stageRef(r, s.index);
        if (d) out.push(d);
      }
    }
    return out;
  }

  async build(): Promise<BuildResult> {
    try {
      return await this.buildTarget();
    } finally {
      this.ssh?.close();
      trace("build: built");
      await Promise.all(this.removals);
      trace("build: steps' snapshots removed");
    }
  }

  /** Removals of finished steps' containers still under way. */
  private readonly removals: Promise<void>[] = [];

  private async buildTarget(): Promise<BuildResult> {
    for (const w of this.df.warnings) this.opts.onEvent?.({ kind: "warning", text: w });
    let target = this.stages[this.stages.length - 1]!;
    if (this.opts.target) {
      const t = this.stages.find((s) => s.name === this.opts.target!.toLowerCase());
      if (!t) throw notFound(`target stage "${this.opts.target}" could not be found`);
      target = t;
    }
    // every stage the target needs starts now: independent ones build side by side
    const needed = new Set<Stage>();
    const visit = (s: Stage) => {
      if (needed.has(s)) return;
      needed.add(s);
      for (const d of this.deps(s)) visit(d);
    };
    visit(target);
    for (const s of needed) void this.stageResult(s).catch(() => {}); // started early for parallelism; each stage's error surfaces where it is awaited
    const state = await this.stageResult(target);
    for (const k of Object.keys(this.buildArgs))
      if (!this.usedArgs.has(k) && !PROXY_ARGS.includes(k) && !(k in platformArgs())) this.emit({ kind: "warning", text: `One or more build-args [${k}] were not consumed` });
    const image = await this.finish(state);
    return { image, cached: state.allCached, warnings: this.warnings, steps: this.stepCounter };
  }

  private stageResult(s: Stage): Promise<State> {
    let p = this.results.get(s.index);
    if (!p) {
      p = this.buildStage(s);
      this.results.set(s.index, p);
    }
    return p;
  }

  private stageLabel(s: Stage, i: number): string {
    return `${s.name ?? `stage-${s.index}`} ${i}/${s.instructions.length + 1}`;
  }

  /** Runs fn as a numbered step (progress events around it). */
  private async step<T>(label: string, text: string, fn: (step: number) => Promise<{ value: T; cached: boolean; id?: string }>): Promise<T> {
    const step = ++this.stepCounter;
    this.emit({ kind: "step", step, name: label, text });
    const t0 = Date.now();
    try {
      const r = await fn(step);
      if (r.cached) this.emit({ kind: "cached", step });
      this.emit({ kind: "done", step, seconds: (Date.now() - t0) / 1000, ...(r.id ? { id: r.id } : {}) });
      return r.value;
    } catch (e) {
      this.emit({ kind: "error", step, message: (e as Error).message });
      throw e;
    }
  }

  private async buildStage(s: Stage): Promise<State> {
    const fromRef = this.fromText(s);
    const label = (i: number) => `[${this.stageLabel(s, i)}]`;
    const platformFlag = flag(s.from, "platform");
    if (platformFlag) checkPlatform(expandWord(platformFlag, this.globalArgs, this.df.escape, this.usedArgs), `FROM --platform=${platformFlag}`);
    const state: State = { config: this.emptyConfig(), pending: [], args: new Map(), cmdSet: false, allCached: true, key: "scratch" };
    const baseStage = this.stageRef(fromRef, s.index);
    if (baseStage) {
      const b = await this.stageResult(baseStage);
      Object.assign(state, { base: b.base, config: structuredClone(b.config), pending: [...b.pending], allCached: b.allCached, key: b.key });
    } else if (fromRef.toLowerCase() !== "scratch") {
      if (!fromRef) throw this.err(s.from, "FROM: the base image name is empty (is a build arg unset?)");
      const rec = await this.step(label(1), `FROM ${fromRef}`, async () => ({ value: await this.exec.image(fromRef, !!this.opts.pull), cached: false }));
      state.base = rec;
      state.key = rec.id;
      state.config = structuredClone(this.store.config(rec));
      state.config.config ??= {};
    }
    const env = envMap(state.config.config?.Env);
    if (!env.has("PATH")) state.config.config = { ...state.config.config, Env: [...(state.config.config?.Env ?? []), `PATH=${DEFAULT_PATH}`] };
    // ONBUILD triggers of the base run first, and are not inherited
    const triggers = state.config.config?.OnBuild ?? [];
    if (state.config.config) delete state.config.config.OnBuild;
    const instructions: Instruction[] = [];
    for (const t of triggers) {
      const parsed = parseDockerfile(t, `${fromRef} ONBUILD`).instructions;
      for (const p of parsed) {
        if (["ONBUILD", "FROM", "MAINTAINER"].includes(p.keyword)) throw invalid(`${p.keyword} isn't allowed as an ONBUILD trigger`);
        instructions.push(p);
      }
    }
    instructions.push(...s.instructions);
    let n = 1;
    for (const ins of instructions) {
      n++;
      await this.dispatch(s, state, ins, label(n));
    }
    return state;
  }

  private emptyConfig(): ImageConfig {
    const p = hostPlatform();
    return { architecture: p.architecture, os: p.os, config: {}, rootfs: { type: "layers", diff_ids: [] }, history: [] };
  }

  /** Variables for substitution: the stage's ARGs, then its ENV over them (as BuildKit). */
  private vars(state: State): Map<string, string> {
    const v = new Map<string, string>();
    for (const [k, val] of state.args) if (val !== undefined) v.set(k, val);
    for (const [k, val] of envMap(state.config.config?.Env)) v.set(k, val);
    return v;
  }

  private x(state: State, word: string): string {
    return expandWord(word, this.vars(state), this.df.escape);
  }

  private meta(state: State, createdBy: string, change: (c: ContainerConfig) => void): void {
    const c = (state.config.config ??= {});
    change(c);
    state.pending.push({ created: new Date().toISOString(), created_by: createdBy, comment: "buildkit.dockerfile.v0", empty_layer: true });
  }

  /** Exec form as given; shell form through the stage's SHELL. */
  private command(state: State, ins: Instruction): string[] {
    if (ins.json) return ins.json;
    return [...(state.config.config?.Shell ?? ["/bin/sh", "-c"]), ins.args];
  }

  private async dispatch(s: Stage, state: State, ins: Instruction, label: string): Promise<void> {
    const escape = this.df.escape;
    const c = () => (state.config.config ??= {});
    try {
      switch (ins.keyword) {
        case "ARG": {
          checkFlags(ins, [], this.file);
          for (const [k, def] of parseKeyValues(ins.args, this.vars(state), escape, { legacy: false, requireValue: false })) {
            const given = this.buildArgs[k];
            if (given !== undefined) this.usedArgs.add(k);
            const value = given ?? def ?? this.globalArgs.get(k);
            state.args.set(k, value);
            this.meta(state, `ARG ${k}${value !== undefined ? `=${value}` : ""}`, () => {});
          }
          return;
        }
        case "ENV": {
          checkFlags(ins, [], this.file);
          const pairs = parseKeyValues(ins.args, this.vars(state), escape, { legacy: true, requireValue: true });
          if (!pairs.length) throw this.err(ins, "ENV requires at least one argument");
          this.meta(state, `ENV ${pairs.map(([k, v]) => `${k}=${v}`).join(" ")}`, (cfg) => {
            const env = envMap(cfg.Env);
            for (const [k, v] of pairs) env.set(k, v ?? "");
            cfg.Env = [...env].map(([k, v]) => `${k}=${v}`);
          });
          return;
        }
        case "LABEL": {
          checkFlags(ins, [], this.file);
          const pairs = parseKeyValues(ins.args, this.vars(state), escape, { legacy: true, requireValue: true });
          if (!pairs.length) throw this.err(ins, "LABEL requires at least one argument");
          this.meta(state, `LABEL ${pairs.map(([k, v]) => `${k}=${v}`).join(" ")}`, (cfg) => {
            cfg.Labels = { ...(cfg.Labels ?? {}) };
            for (const [k, v] of pairs) cfg.Labels[k] = v ?? "";
          });
          return;
        }
        case "MAINTAINER": {
          const who = ins.args.trim();
          state.config.author = who;
          this.meta(state, `MAINTAINER ${who}`, () => {});
          return;
        }
        case "CMD":
        case "ENTRYPOINT": {
          checkFlags(ins, [], this.file);
          const cmd = this.command(state, ins);
          this.meta(state, `${ins.keyword} ${goQuoteList(cmd)}`, (cfg) => {
            if (ins.keyword === "CMD") {
              cfg.Cmd = cmd;
              state.cmdSet = true;
            } else {
              cfg.Entrypoint = cmd;
              if (!state.cmdSet) cfg.Cmd = null; // docker: an ENTRYPOINT drops the CMD the base image had
            }
          });
          return;
        }
        case "SHELL": {
          if (!ins.json || !ins.json.length) throw this.err(ins, "SHELL requires the arguments to be in JSON form");
          this.meta(state, `SHELL [${ins.json.join(" ")}]`, (cfg) => void (cfg.Shell = ins.json));
          return;
        }
        case "USER": {
          checkFlags(ins, [], this.file);
          const user = this.x(state, ins.args.trim());
          if (!user) throw this.err(ins, "USER requires an argument");
          this.meta(state, `USER ${user}`, (cfg) => void (cfg.User = user));
          return;
        }
        case "EXPOSE": {
          checkFlags(ins, [], this.file);
          const ports: string[] = [];
          for (const w of splitWords(ins.args, escape)) {
            const p = this.x(state, w);
            const m = /^(\d+)(?:-(\d+))?(?:\/(tcp|udp|sctp))?$/i.exec(p);
            if (!m) throw this.err(ins, `invalid containerPort: ${p}`);
            const lo = Number(m[1]),
              hi = m[2] ? Number(m[2]) : lo;
            if (hi < lo || hi > 65535) throw this.err(ins, `invalid port range: ${p}`);
            for (let q = lo; q <= hi; q++) ports.push(`${q}/${(m[3] ?? "tcp").toLowerCase()}`);
          }
          // Go prints a map with its keys sorted
          this.meta(state, `EXPOSE map[${[...new Set(ports)].sort().map((p) => `${p}:{}`).join(" ")}]`, (cfg) => {
            cfg.ExposedPorts = { ...(cfg.ExposedPorts ?? {}) };
            for (const p of ports) cfg.ExposedPorts[p] = {};
          });
          return;
        }
        case "VOLUME": {
          checkFlags(ins, [], this.file);
          const vols = (ins.json ?? splitWords(ins.args, escape)).map((w) => this.x(state, w)).filter(Boolean);
          if (!vols.length) throw this.err(ins, "VOLUME specified can not be an empty string");
          this.meta(state, `VOLUME [${vols.join(" ")}]`, (cfg) => {
            cfg.Volumes = { ...(cfg.Volumes ?? {}) };
            for (const v of vols) cfg.Volumes[v] = {};
          });
          return;
        }
        case "STOPSIGNAL": {
          const sig = this.x(state, ins.args.trim());
          if (!/^(SIG)?[A-Z0-9+-]+$|^\d+$/i.test(sig)) throw this.err(ins, `invalid signal: ${sig}`);
          this.meta(state, `STOPSIGNAL ${sig}`, (cfg) => void (cfg.StopSignal = sig));
          return;
        }
        case "HEALTHCHECK":
          return this.healthcheck(state, ins);
        case "ONBUILD": {
          const trigger = ins.args.trim();
          const kw = trigger.split(/\s+/)[0]!.toUpperCase();
          if (["ONBUILD", "FROM", "MAINTAINER"].includes(kw)) throw this.err(ins, `${kw} isn't allowed as an ONBUILD trigger`);
          // no history entry, as BuildKit
          c().OnBuild = [...(c().OnBuild ?? []), trigger];
          return;
        }
        case "WORKDIR": {
          checkFlags(ins, [], this.file);
          const w = this.x(state, ins.args.trim());
          if (!w) throw this.err(ins, "WORKDIR requires exactly one argument");
          const dir = w.startsWith("/") ? w : `${c().WorkingDir || "/"}/${w}`.replace(/\/+/g, "/");
          const clean = ("/" + dir.split("/").filter(Boolean).join("/")).replace(/\/$/, "") || "/";
          c().WorkingDir = clean;
          // the directory is made (a layer when it was missing), as BuildKit does: the directories
          // it creates belong to the USER in effect
          const user = c().User;
          await this.layerStep(state, label, `WORKDIR ${clean}`, { kind: "WORKDIR", dir: clean }, async (root) => {
            const rootFd = openRoot(root);
            try {
              fs.closeSync(mkdirInRoot(rootFd, clean, user ? resolveOwner(root, user) : undefined));
            } finally {
              fs.closeSync(rootFd);
            }
          }, undefined, `WORKDIR ${clean}`);
          return;
        }
        case "RUN":
          return this.run(s, state, ins, label);
        case "COPY":
        case "ADD":
          return this.copy(s, state, ins, label);
        case "FROM":
          return;
        default:
          throw this.err(ins, `unknown instruction: ${ins.keyword}`);
      }
    } catch (e) {
      if (e instanceof BerthError && /^\S+:\d+:\d+: /.test(e.message)) throw e;
      if (e instanceof StepFailed) throw e;
      if (e instanceof BerthError) throw new BerthError(e.kind, `${this.file}:${ins.line}: ${ins.keyword}: ${e.message}`);
      throw e;
    }
  }

  private healthcheck(state: State, ins: Instruction): void {
    checkFlags(ins, ["interval", "timeout", "start-period", "start-interval", "retries"], this.file);
    const rest = ins.args.trim();
    const kw = rest.split(/\s+/)[0]!.toUpperCase();
    let hc: NonNullable<ContainerConfig["Healthcheck"]>;
    if (kw === "NONE") {
      if (rest.split(/\s+/).length > 1 || ins.flags.length) throw this.err(ins, "HEALTHCHECK NONE takes no other arguments");
      hc = { Test: ["NONE"] };
    } else if (kw === "CMD") {
      const cmdText = rest.slice(3).trim();
      const json = parseJsonForm(cmdText);
      const test = json ? ["CMD", ...json] : ["CMD-SHELL", cmdText];
      const dur = (n: string) => {
        const v = flag(ins, n);
        if (v === undefined) return undefined;
        const m = /^(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)$/.exec(v);
        if (!m) throw this.err(ins, `HEALTHCHECK --${n}: invalid duration ${v}`);
        const mult = { ns: 1, us: 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9 }[m[2] as "s"];
        return Math.round(Number(m[1]) * mult);
      };
      hc = { Test: test };
      for (const [k, n] of [["Interval", "interval"], ["Timeout", "timeout"], ["StartPeriod", "start-period"], ["StartInterval", "start-interval"]] as const) {
        const d = dur(n);
        if (d !== undefined) (hc as Record<string, unknown>)[k] = d;
      }
      const r = flag(ins, "retries");
      if (r !== undefined) {
        if (!/^\d+$/.test(r)) throw this.err(ins, `HEALTHCHECK --retries: invalid number ${r}`);
        hc.Retries = Number(r);
      }
    } else throw this.err(ins, `Unknown type "${kw}" in HEALTHCHECK (try CMD)`);
    // BuildKit's %q of the config struct; StartInterval (newer docker) only where it is set
    const d = (v: number | undefined) => goQuote(goDuration(v ?? 0));
    const fields = [goQuoteList(hc.Test ?? []), d(hc.Interval), d(hc.Timeout), d(hc.StartPeriod), ...(hc.StartInterval ? [d(hc.StartInterval)] : []), goQuoteRune(hc.Retries ?? 0)];
    this.meta(state, `HEALTHCHECK &{${fields.join(" ")}}`, (cfg) => void (cfg.Healthcheck = hc));
  }

  /** The build args RUN sees as environment, `|N k=v …` in history: declared in the stage, with values, not proxies. */
  private runArgs(state: State): [string, string][] {
    const env = envMap(state.config.config?.Env);
    return [...state.args].filter((e): e is [string, string] => e[1] !== undefined && !env.has(e[0])).sort((a, b) => a[0].localeCompare(b[0]));
  }

  private async run(s: Stage, state: State, ins: Instruction, label: string): Promise<void> {
    checkFlags(ins, ["mount", "network", "security"], this.file);
    const cfg = state.config.config ?? {};
    const shell = cfg.Shell ?? ["/bin/sh", "-c"];
    const scriptFiles: string[] = [];
    const mounts: StepMount[] = [];
    let argv: string[];
    const lone = ins.heredocs.length === 1 && /^<<-?(["']?)[A-Za-z_][\w.-]*\1$/.test(ins.args.trim());
    if (lone && ins.heredocs[0]!.content.startsWith("#!")) {
      // a script with its own interpreter runs as a file (BuildKit's /dev/pipes)
      const file = join(this.store.root, "tmp", `build-script-${process.pid}-${randomBytes(4).toString("hex")}`);
      fs.mkdirSync(join(this.store.root, "tmp"), { recursive: true });
      fs.writeFileSync(file, ins.heredocs[0]!.content, { mode: 0o755 });
      scriptFiles.push(file);
      const target = `/dev/pipes/${ins.heredocs[0]!.name}`;
      mounts.push({ type: "bind", source: file, target, readonly: true });
      argv = [target];
    } else if (lone) argv = [...shell, ins.heredocs[0]!.content];
    else if (ins.heredocs.length) argv = [...shell, ins.source.replace(/^\s*RUN\s+(--\S+\s+)*/i, "")]; // the shell reads heredocs after a command as written
    else argv = this.command(state, ins);
    const network = flag(ins, "network") ?? this.opts.network ?? "default";
    if (!["default", "none", "host"].includes(network)) throw this.err(ins, `RUN --network=${network}: not one of default, none, host`);
    if (flag(ins, "security") === "insecure") throw unsupported("RUN --security=insecure is not allowed (berth grants no build entitlements)");
    const mountKeys: unknown[] = [];
    const cleanups: (() => Promise<void>)[] = [async () => scriptFiles.forEach((f) => fs.rmSync(f, { force: true }))];
    const lazy: (() => Promise<void>)[] = [];
    for (const m of flagsAll(ins, "mount")) mountKeys.push(await this.runMount(s, state, m, mounts, lazy, cleanups));
    const args = this.runArgs(state);
    const env = [...(cfg.Env ?? []), ...args.map(([k, v]) => `${k}=${v}`)];
    const agent = mounts.find((m) => m.ssh);
    if (agent && !env.some((e) => e.startsWith("SSH_AUTH_SOCK="))) env.push(`SSH_AUTH_SOCK=${agent.target}`);
    const createdBy = `RUN ${args.length ? `|${args.length} ${args.map(([k, v]) => `${k}=${v}`).join(" ")} ` : ""}${argv.join(" ")} # buildkit`;
    const key = { kind: "RUN", argv, env, user: cfg.User ?? "", workdir: cfg.WorkingDir ?? "", network, mounts: mountKeys };
    try {
      await this.layerStep(state, label, `RUN ${ins.source.replace(/^\s*RUN\s+/i, "").split("\n")[0]}`, key, undefined, async (step) => {
        for (const prepare of lazy) await prepare();
        const r = await this.exec.run({
          image: state.base!,
          argv,
          env,
          user: cfg.User ?? "",
          workdir: cfg.WorkingDir || "/",
          network,
          extraHosts: this.opts.extraHosts ?? [],
          mounts,
          ...(this.opts.shmSize ? { shmSize: this.opts.shmSize } : {}),
          ...(this.opts.ulimits ? { ulimits: this.opts.ulimits } : {}),
          output: (data) => this.emit({ kind: "output", step, data }),
        });
        if (r.exitCode !== 0) {
          await r.remove();
          throw new StepFailed(`process "${argv.join(" ")}" did not complete successfully: exit code: ${r.exitCode}`, r.exitCode);
        }
        return { snapshot: r.snapshot, remove: r.remove, stubs: mounts.map((m) => m.target) };
      }, createdBy);
    } finally {
      for (const c of cleanups) await c();
    }
  }

  /**
   * One RUN --mount: the mount for the engine, and what of it goes into the cache key. What costs
   * work only when the step runs (mounting a stage, copying an rw source) is left in `lazy`.
   */
  private async runMount(s: Stage, state: State, spec: string, mounts: StepMount[], lazy: (() => Promise<void>)[], cleanups: (() => Promise<void>)[]): Promise<unknown> {
    const o: Record<string, string> = {};
    for (const part of spec.split(",")) {
      const eq = part.indexOf("=");
      o[(eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase()] = eq < 0 ? "true" : this.x(state, part.slice(eq + 1));
    }
    const type = o.type ?? "bind";
    const target = o.target ?? o.dst ?? o.destination;
    const abs = (t: string) => (t.startsWith("/") ? t : `${state.config.config?.WorkingDir || "/"}/${t}`.replace(/\/+/g, "/"));
    switch (type) {
      case "cache": {
        if (!target) throw invalid("RUN --mount=type=cache needs a target");
        const id = o.id ?? abs(target);
        const dir = join(this.store.root, "buildcache", "mounts", createHash("sha256").update(id).digest("hex").slice(0, 32));
        if (!fs.existsSync(dir)) {
          fs.mkdirSync(dir, { recursive: true, mode: Number.parseInt(o.mode ?? "755", 8) });
          fs.chownSync(dir, Number(o.uid ?? 0), Number(o.gid ?? 0));
        }
        mounts.push({ type: "bind", source: dir, target: abs(target), readonly: o.ro === "true" || o.readonly === "true" });
        return { type, target: abs(target), id };
      }
      case "tmpfs":
        if (!target) throw invalid("RUN --mount=type=tmpfs needs a target");
        mounts.push({ type: "tmpfs", target: abs(target) });
        return { type, target: abs(target), size: o.size };
      case "secret": {
        const id = o.id ?? (target ? target.split("/").pop()! : undefined);
        if (!id) throw invalid("RUN --mount=type=secret needs an id or a target");
        const src = this.opts.secrets?.[id];
        if (!src) {
          if (o.required === "true") throw notFound(`secret ${id} not found (give it with --secret id=${id},src=FILE)`);
          return { type, id, missing: true };
        }
        mounts.push({ type: "bind", source: src, target: abs(target ?? `/run/secrets/${id}`), readonly: true });
        return { type, id, target: target ?? "" }; // a secret's content is never part of the cache key (as BuildKit)
      }
      case "bind": {
        if (!target) throw invalid("RUN --mount=type=bind needs a target");
        const source = o.source ?? o.src ?? ".";
        if (isGlob(source)) throw invalid(`RUN --mount=type=bind,source=${source}: a bind source is a path, not a pattern`);
        const rw = o.rw === "true" || o.readwrite === "true";
        // the source resolves inside its tree (a symlink out of the context is refused, one in an
        // image stays in it); writes with rw go to a throwaway copy, as BuildKit discards them
        const mount: StepMount = { type: "bind", source: "", target: abs(target), readonly: !rw };
        mounts.push(mount);
        if (o.from) {
          const st = this.stageRef(o.from, s.index);
          const rec = st ? (await this.stageResult(st)).base : await this.fromImage(o.from, "RUN --mount from");
          if (!rec) throw invalid(`RUN --mount from=${o.from}: the stage has no files`);
          lazy.push(async () => {
            const m = await this.mountImage(rec); // an overlay of its own: rw writes vanish with it
            cleanups.push(m.release);
            mount.source = join(m.root, resolveSources({ root: m.root, kind: "stage", label: `stage ${o.from}` }, source)[0]!.rel);
          });
          return { type, target: abs(target), source, from: rec.id, rw };
        }
        const src = resolveSources(this.context, source)[0]!;
        const digest = await planDigest({ sources: [src], dest: "/", destIsDir: true, unpack: false, exclude: undefined });
        mount.source = join(this.context.root, src.rel);
        if (rw)
          lazy.push(async () => {
            const copy = join(this.store.root, "tmp", `build-bind-${process.pid}-${randomBytes(4).toString("hex")}`);
            fs.cpSync(mount.source!, copy, { recursive: true, verbatimSymlinks: true });
            cleanups.push(async () => fs.rmSync(copy, { recursive: true, force: true }));
            mount.source = copy;
          });
        return { type, target: abs(target), source, digest, rw };
      }
      case "ssh": {
        const id = o.id ?? "default";
        const at = abs(target ?? `/run/buildkit/ssh_agent.${mounts.filter((m) => m.ssh).length}`);
        if (!this.ssh?.has(id)) {
          if (o.required === "true") throw notFound(`no SSH key "${id}" forwarded from the client (give it with --ssh ${id}=SOCKET|KEY)`);
          return { type, id, missing: true };
        }
        const mount: StepMount = { type: "bind", source: "", target: at, ssh: true };
        mounts.push(mount);
        const owner = { uid: Number(o.uid ?? 0), gid: Number(o.gid ?? 0), mode: Number.parseInt(o.mode ?? "600", 8) };
        if (![owner.uid, owner.gid, owner.mode].every(Number.isInteger)) throw invalid(`RUN --mount=${spec}: uid, gid and mode are numbers (mode in octal)`);
        const ssh = this.ssh;
        lazy.push(async () => {
          const sock = await ssh.open(id, owner);
          cleanups.push(sock.close);
          mount.source = sock.path;
        });
        return { type, id, target: at }; // which agent serves it is not part of the cache key (as BuildKit)
      }
      default:
        throw invalid(`RUN --mount: unknown type ${type} (bind, cache, tmpfs, secret, ssh)`);
    }
  }

  /** An image named by --from (not a stage): pulled if missing, with an error that says what was looked for. */
  private async fromImage(ref: string, what: string): Promise<ImageRecord> {
    try {
      return await this.exec.image(ref, false);
    } catch (e) {
      throw new BerthError(e instanceof BerthError ? e.kind : "NotFound", `${what}=${ref}: no stage of that name, and no such image (${(e as Error).message})`);
    }
  }

  /** A read-only view of an image's files (for COPY --from and RUN --mount from=). */
  private async mountImage(rec: ImageRecord): Promise<{ root: string; release: () => Promise<void> }> {
    const key = `build-ro-${process.pid}-${randomBytes(6).toString("hex")}`;
    await this.store.ensureUnpacked(rec);
    this.store.snapshots.prepare(key, this.store.topLayer(rec));
    const root = join(this.store.root, "tmp", key);
    fs.mkdirSync(root, { recursive: true });
    try {
      this.store.snapshots.mount(key, root);
    } catch (e) {
      fs.rmdirSync(root);
      this.store.snapshots.remove(key);
      throw e;
    }
    return {
      root,
      release: async () => {
        unmount(root);
        fs.rmdirSync(root);
        await this.store.snapshots.removeAsync(key);
      },
    };
  }

  private async copy(s: Stage, state: State, ins: Instruction, label: string): Promise<void> {
    const isAdd = ins.keyword === "ADD";
    checkFlags(ins, isAdd ? ["chown", "chmod", "link", "checksum", "keep-git-dir", "exclude", "parents"] : ["from", "chown", "chmod", "link", "exclude", "parents"], this.file);
    const parents = flag(ins, "parents") !== undefined && flag(ins, "parents") !== "false";
    const words = (ins.json ?? splitWords(ins.args, this.df.escape)).map((w) => (w.startsWith("<<") && ins.heredocs.some((h) => w.replace(/^<<-?["']?|["']?$/g, "") === h.name) ? w : this.x(state, w)));
    if (words.length < 2) throw this.err(ins, `${ins.keyword} requires at least two arguments, but only one was provided. Destination could not be determined`);
    const destArg = words.pop()!;
    const workdir = state.config.config?.WorkingDir || "/";
    const dest = destArg.startsWith("/") ? destArg : `${workdir}/${destArg}`.replace(/\/+/g, "/");
    const fromRef = flag(ins, "from") !== undefined ? this.x(state, flag(ins, "from")!) : undefined;
    let tree: SourceTree = this.context;
    let release: (() => Promise<void>) | undefined;
    const releaseAll = async () => {
      if (release) await release();
      release = undefined;
    };
    try {
      let fromId = "";
      if (fromRef) {
        const st = this.stageRef(fromRef, s.index);
        const rec = st ? (await this.stageResult(st)).base : await this.fromImage(fromRef, `${ins.keyword} --from`);
        if (!rec) throw invalid(`${ins.keyword} --from=${fromRef}: the stage has no files (FROM scratch with no layers)`);
        const m = await this.mountImage(rec);
        release = m.release;
        tree = { root: m.root, kind: "stage", label: st ? `stage ${fromRef}` : `image ${fromRef}` };
        fromId = rec.id;
      }
      const sources: CopySource[] = [];
      for (const w of words) {
        const hd = w.startsWith("<<") ? ins.heredocs.find((h) => w.replace(/^<<-?["']?|["']?$/g, "") === h.name) : undefined;
        if (hd) {
          const e = this.df.escape;
          // only $ expands in a heredoc: quotes and escapes stay as written
          const content = hd.expand ? expandWord(hd.content.replace(/["'\\`]/g, (ch) => (ch === e || ch === '"' || ch === "'" ? e + ch : ch)), this.vars(state), e) : hd.content;
          sources.push({ kind: "inline", name: hd.name, content: Buffer.from(content), mode: 0o644, mtime: Math.floor(Date.now() / 1000) });
        } else if (isAdd && /^https?:\/\//i.test(w)) {
          sources.push({ kind: "inline", mode: 0o600, ...(await this.download(w, flag(ins, "checksum"))) });
        } else if (isAdd && (/^git@|\.git(#.*)?$/.test(w) || /^git:\/\//.test(w))) {
          throw unsupported(`ADD ${w}: git sources are not supported by berth yet (clone into the context and COPY)`);
        } else {
          for (const src of resolveSources(tree, w)) {
            if (parents) src.parents = keptParents(w, src);
            if (isAdd && src.kind === "path" && !src.isDir && tree.kind === "context" && (await isArchive(join(tree.root, src.rel)))) sources.push({ kind: "archive", file: join(tree.root, src.rel) });
            else sources.push(src);
          }
        }
      }
      if (!sources.length) throw invalid(`${ins.keyword}: no source files were specified`);
      const several = sources.length > 1 || words.some((w) => /[*?[]/.test(w));
      const chown = flag(ins, "chown") !== undefined ? this.x(state, flag(ins, "chown")!) : undefined;
      const chmodArg = flag(ins, "chmod");
      let chmod: number | undefined;
      if (chmodArg !== undefined) {
        if (!/^[0-7]{3,4}$/.test(chmodArg)) throw this.err(ins, `invalid chmod parameter ${chmodArg}: berth takes octal modes (e.g. 0755)`);
        chmod = Number.parseInt(chmodArg, 8);
      }
      const excludes = flagsAll(ins, "exclude").map((e) => this.x(state, e));
      const plan: CopyPlan = {
        sources,
        dest,
        // a destination that is a directory in the image is found once the step runs (the cache
        // key holds the parent image, which decides it)
        destIsDir: destArg.endsWith("/") || several || parents || (sources.length === 1 && sources[0]!.kind === "archive"),
        ...(chmod !== undefined ? { chmod } : {}),
        unpack: isAdd,
        exclude: excludes.length ? new IgnoreMatcher(excludes) : undefined,
      };
      const digest = await planDigest(plan);
      const shown = `${ins.keyword} ${ins.source.replace(/^\s*(COPY|ADD)\s+/i, "").split("\n")[0]}`;
      // BuildKit records --parents, --chown and --chmod, in that order, and no other flag
      const recorded = ["parents", "chown", "chmod"].flatMap((n) => ins.flags.filter((f) => f.name === n).map((f) => (n === "parents" ? "--parents " : `--${n}=${f.value ?? ""} `)));
      const createdBy = `${ins.keyword} ${recorded.join("")}${words.join(" ")} ${destArg} # buildkit`;
      await this.layerStep(state, label, shown, { kind: ins.keyword, digest, dest, destIsDir: plan.destIsDir, chown, chmod, fromId }, async (root) => {
        if (several && !destArg.endsWith("/") && !isDirInRoot(root, dest)) throw this.err(ins, `When using ${ins.keyword} with more than one source file, the destination must be a directory and end with a /`);
        plan.destIsDir ||= isDirInRoot(root, dest);
        if (chown) plan.owner = resolveOwner(root, chown);
        await applyCopy(root, plan);
      }, undefined, createdBy);
    } finally {
      await releaseAll();
    }
  }

  /** ADD <url>: fetched; --checksum verified; named after the URL's last part, its time from Last-Modified. */
  private async download(url: string, checksum: string | undefined): Promise<{ content: Buffer; name: string; mtime: number }> {
    let res: Response;
    try {
      res = await fetch(url, { redirect: "follow" });
    } catch (e) {
      throw new BerthError("System", `ADD ${url}: ${(e as Error).cause ? ((e as Error).cause as Error).message : (e as Error).message}`);
    }
    if (!res.ok) throw new BerthError("System", `ADD ${url}: the server answered ${res.status} ${res.statusText}`);
    const body = Buffer.from(await res.arrayBuffer());
    if (checksum) {
      const m = /^sha256:([a-f0-9]{64})$/.exec(checksum);
      if (!m) throw invalid(`ADD --checksum=${checksum}: expected sha256:<64 hex digits>`);
      const got = createHash("sha256").update(body).digest("hex");
      if (got !== m[1]) throw invalid(`ADD ${url}: checksum mismatch: expected ${checksum}, got sha256:${got}`);
    }
    const lm = res.headers.get("last-modified");
    const name = new URL(url).pathname.split("/").filter(Boolean).pop() || "index.html";
    return { content: body, name, mtime: lm ? Math.floor(Date.parse(lm) / 1000) : Math.floor(Date.now() / 1000) };
  }

  /**
   * A step that may change files: reused from the cache when an image with its key exists, else
   * made, by writing into a mounted snapshot (`write`) or by a container (`runIn`).
   */
  private async layerStep(
    state: State,
    label: string,
    text: string,
    keyParts: unknown,
    write: ((root: string) => Promise<void>) | undefined,
    runIn?: (step: number) => Promise<{ snapshot: string; remove: () => Promise<void>; stubs: string[] }>,
    createdBy?: string,
  ): Promise<void> {
    const entry: HistoryEntry = { created: new Date().toISOString(), created_by: createdBy ?? `${text} # buildkit`, comment: "buildkit.dockerfile.v0" };
    const key = hash({ parent: state.key, config: state.config.config, pending: state.pending.map((h) => h.created_by), step: keyParts });
    await this.step(label, text, async (step) => {
      trace(`build: ${text.slice(0, 20)} begins`);
      const config: ImageConfig = structuredClone(state.config);
      config.created = entry.created!;
      config.history = [...(config.history ?? []), ...state.pending, entry];
      (config as Record<string, unknown>)[CACHE_KEYS] = [...recordedKeys(state.config), ...state.pending.map(() => null), key];
      if (!this.opts.noCache) {
        const hit = this.store.findCached(key) ?? (await this.fromCacheImages(state, key, config));
        if (hit) {
          this.adopt(state, hit, key);
          return { value: undefined, cached: true, id: hit.id };
        }
      }
      state.allCached = false;
      if (state.base) await this.store.ensureUnpacked(state.base);
      let rec: ImageRecord;
      if (runIn) {
        if (!state.base) throw invalid(`${text}: there is no shell in an empty (scratch) stage`);
        const r = await runIn(step);
        trace(`build: ${text.slice(0, 20)} ran`);
        try {
          this.cleanStubs(r.snapshot, ["etc/hosts", "etc/hostname", "etc/resolv.conf", "proc", "sys", "dev", ...r.stubs.map((t) => t.replace(/^\/+/, ""))]);
          rec = await commitBuildStep(this.store, { snapshot: r.snapshot, ...(state.base ? { parent: state.base } : {}), config, cacheKey: key, intermediate: true });
          trace(`build: committed`);
        } finally {
          // the step's container goes while the next step runs (the build waits for it at the end)
          this.removals.push(r.remove());
        }
      } else {
        const snap = `build-${process.pid}-${randomBytes(6).toString("hex")}`;
        const top = state.base ? this.store.topLayer(state.base) : undefined;
        this.store.snapshots.prepare(snap, top);
        const root = join(this.store.root, "tmp", snap);
        try {
          fs.mkdirSync(root, { recursive: true });
          this.store.snapshots.mount(snap, root, { volatile: true }); // committed at once: nothing to sync on unmount
          try {
            await write!(root);
          } finally {
            unmount(root);
            fs.rmdirSync(root);
          }
          trace(`build: ${text.slice(0, 20)} written`);
          rec = await commitBuildStep(this.store, { snapshot: snap, ...(state.base ? { parent: state.base } : {}), config, cacheKey: key, intermediate: true });
          trace(`build: committed`);
        } finally {
          await this.store.snapshots.removeAsync(snap);
        }
      }
      this.adopt(state, rec, key);
      return { value: undefined, cached: false, id: rec.id };
    });
  }

  /** The stage continues from a step's image: its config and history are the state's now. */
  private adopt(state: State, rec: ImageRecord, key: string): void {
    state.base = rec;
    state.key = key;
    state.config = structuredClone(this.store.config(rec));
    state.pending = [];
  }

  private cacheImages?: Promise<{ rec: ImageRecord; config: ImageConfig }[]>;

  /**
   * --cache-from: a step whose key an image recorded at the same place in its history, over the
   * same layers as the stage's so far, is that image's layer (no run, no copy); the step's image is
   * made of it with the stage's config. Images not in the store are skipped with a warning.
   */
  private async fromCacheImages(state: State, key: string, config: ImageConfig): Promise<ImageRecord | undefined> {
    if (!this.opts.cacheFrom?.length) return undefined;
    this.cacheImages ??= (async () => {
      const out: { rec: ImageRecord; config: ImageConfig }[] = [];
      for (const ref of this.opts.cacheFrom ?? []) {
        const rec = this.store.find(ref);
        if (!rec) this.emit({ kind: "warning", text: `--cache-from ${ref}: no such image in the store (pull it first); not used` });
        else out.push({ rec, config: this.store.config(rec) });
      }
      return out;
    })();
    const at = (config.history?.length ?? 0) - 1;
    const below = state.config.rootfs.diff_ids;
    for (const c of await this.cacheImages) {
      const history = c.config.history ?? [];
      if (recordedKeys(c.config)[at] !== key) continue;
      const layers = history.slice(0, at + 1).filter((h) => !h.empty_layer).length;
      const ids = c.config.rootfs.diff_ids;
      if (layers < below.length || layers > below.length + 1 || ids.length < layers || below.some((d, i) => ids[i] !== d)) continue;
      const made: ImageConfig = structuredClone(config);
      made.history![at] = history[at]!;
      made.created = history[at]!.created ?? made.created;
      made.rootfs = { type: "layers", diff_ids: ids.slice(0, layers) };
      await this.store.ensureUnpacked(c.rec);
      const layer = layers > below.length ? this.store.manifest(c.rec).layers[layers - 1] : undefined;
      return writeLayerImage(this.store, state.base, made, layer, { cacheKey: key, intermediate: true });
    }
    return undefined;
  }

  /**
   * Mount points the runtime made for a RUN (`/etc/hosts`, a cache mount's target …) are not the
   * step's changes: removed from its upper directory when they were new and are still empty, with
   * directories that only held them (as BuildKit's stub cleaner).
   */
  private cleanStubs(snapshot: string, stubs: string[]): void {
    if (this.store.snapshots.kind !== "overlay") return;
    const [upper, ...lowers] = this.store.snapshots.dirs(snapshot);
    const inLower = (rel: string) => lowers.some((l) => fs.lstatSync(join(l, rel), { throwIfNoEntry: false }));
    const parents = new Set<string>();
    for (const rel of stubs) {
      if (!rel || inLower(rel)) continue;
      const p = join(upper!, rel);
      const st = fs.lstatSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      try {
        if (st.isDirectory()) {
          if (fs.readdirSync(p).length) continue;
          fs.rmdirSync(p);
        } else if (st.isFile() && st.size === 0) fs.unlinkSync(p);
        else continue;
      } catch {
        // gone or changed meanwhile: left as it is, only empties are pruned
        continue;
      }
      for (let d = rel.split("/").slice(0, -1); d.length; d.pop()) parents.add(d.join("/"));
    }
    // parents deepest first: an empty copied-up directory that the lower layers have is no change
    for (const rel of [...parents].sort((a, b) => b.length - a.length)) {
      const p = join(upper!, rel);
      try {
        const st = fs.lstatSync(p);
        const lower = lowers.map((l) => fs.lstatSync(join(l, rel), { throwIfNoEntry: false })).find(Boolean);
        if (!st.isDirectory() || fs.readdirSync(p).length) continue;
        // made for a mount point (the runtime's mkdir -p), or copied up unchanged from below
        if (!lower || (lower.isDirectory() && lower.mode === st.mode && lower.uid === st.uid && lower.gid === st.gid)) fs.rmdirSync(p);
      } catch {
        /* left as it is */
      }
    }
  }

  /** The target stage's image: its config with labels added, named by the tags. */
  private async finish(state: State): Promise<ImageRecord> {
    const config: ImageConfig = structuredClone(state.config);
    const cfg = (config.config ??= {});
    if (this.opts.labels && Object.keys(this.opts.labels).length) cfg.Labels = { ...(cfg.Labels ?? {}), ...this.opts.labels };
    const tags = (this.opts.tags ?? []).map((t) => formatReference(withDefaultTag(parseReference(t))));
    if (!state.pending.length && state.base && JSON.stringify(cfg) === JSON.stringify(this.store.config(state.base).config ?? {})) {
      // the last step's image is the result
      return this.name(state.base, tags);
    }
    const key = hash({ parent: state.key, config: cfg, pending: state.pending.map((h) => h.created_by), final: true });
    const hit = this.opts.noCache ? undefined : this.store.findCached(key);
    if (hit) return this.name(hit, tags);
    config.created = new Date().toISOString();
    if (recordedKeys(config).some(Boolean)) (config as Record<string, unknown>)[CACHE_KEYS] = [...recordedKeys(config), ...state.pending.map(() => null)];
    config.history = [...(config.history ?? []), ...state.pending];
    return writeConfigImage(this.store, state.base, config, tags, { cacheKey: key });
  }

  /** Names an image the build reused as its result; it is no longer an intermediate one (one metadata write). */
  private async name(rec: ImageRecord, tags: string[]): Promise<ImageRecord> {
    if (!tags.length && !rec.intermediate) return rec;
    const { repoTags: _t, repoDigests: _d, added: _a, intermediate: _i, ...kept } = rec;
    return this.store.register(kept, tags);
  }
}
