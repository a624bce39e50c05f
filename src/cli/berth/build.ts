/** `berth build` and `berth builder prune|du`, with docker's flags and BuildKit's progress (build-progress.ts). */
import * as fs from "node:fs";
import * as path from "node:path";
import { BerthError, invalid } from "../../common/errors.js";
import { build as ops, parseReference, parseSize, shortId } from "../../engine/index.js";
import { list, parse, str, UsageError } from "../pflag.js";
import { humanSize, table } from "./output.js";
import type { Context } from "./context.js";
import { PlainProgress, TtyProgress, type BuildProgress } from "./build-progress.js";
import { trace } from "../../common/trace.js";

const out = (s: string) => process.stdout.write(s);

const BUILD_FLAGS = [
  { long: "tag", short: "t", kind: "list" },
  { long: "file", short: "f", kind: "string" },
  { long: "build-arg", kind: "list" },
  { long: "target", kind: "string" },
  { long: "no-cache", kind: "bool" },
  { long: "pull", kind: "bool" },
  { long: "label", kind: "list" },
  { long: "iidfile", kind: "string" },
  { long: "quiet", short: "q", kind: "bool" },
  { long: "network", kind: "string" },
  { long: "add-host", kind: "list" },
  { long: "platform", kind: "string" },
  { long: "progress", kind: "string" },
  { long: "output", short: "o", kind: "string" },
  { long: "secret", kind: "list" },
  { long: "shm-size", kind: "string" },
  { long: "ulimit", kind: "list" },
  { long: "cache-from", kind: "list" },
  { long: "ssh", kind: "list" },
  { long: "rm", kind: "bool" },
  { long: "force-rm", kind: "bool" },
] as const;

function keyValues(items: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of items) {
    const eq = a.indexOf("=");
    if (eq < 0) {
      // docker: `--build-arg NAME` takes NAME's value from the environment
      if (what === "--build-arg") {
        if (process.env[a] !== undefined) out[a] = process.env[a]!;
        continue;
      }
      out[a] = "";
    } else out[a.slice(0, eq)] = a.slice(eq + 1);
  }
  return out;
}

/** `k=v,k=v` options (--output, --secret). */
function options(spec: string): Record<string, string> {
  const o: Record<string, string> = {};
  for (const p of spec.split(",")) {
    const eq = p.indexOf("=");
    o[(eq < 0 ? p : p.slice(0, eq)).trim()] = eq < 0 ? "" : p.slice(eq + 1);
  }
  return o;
}

function parseOutput(spec: string): ops.BuildRequest["output"] {
  if (!spec.includes("=")) return { type: "local", dest: spec };
  const o = options(spec);
  const type = o.type ?? "local";
  if (!o.dest) throw invalid(`--output ${spec}: dest= is required`);
  if (type === "local") return { type, dest: o.dest };
  if (type === "tar") return { type, dest: o.dest === "-" ? process.stdout : o.dest };
  throw invalid(`--output type=${type} is not supported (local, tar)`);
}

function parseSecrets(items: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of items) {
    const o = options(s);
    const id = o.id;
    if (!id) throw invalid(`--secret ${s}: id= is required`);
    let src = o.src ?? o.source;
    if (o.env !== undefined || (!src && process.env[id] !== undefined && o.type !== "file")) {
      const name = o.env ?? id;
      if (process.env[name] === undefined) throw invalid(`--secret ${s}: environment variable ${name} is not set`);
      // the engine binds files: an env secret is written to a private file for the build
      const dir = fs.mkdtempSync(path.join(process.env.TMPDIR ?? "/tmp", "berth-secret-"));
      src = path.join(dir, id);
      fs.writeFileSync(src, process.env[name]!, { mode: 0o600 });
      process.once("exit", () => fs.rmSync(dir, { recursive: true, force: true }));
    }
    if (!src) throw invalid(`--secret ${s}: src= or env= is required`);
    if (!fs.existsSync(src)) throw invalid(`--secret ${s}: ${src} does not exist`);
    out[id] = path.resolve(src);
  }
  return out;
}

/** Reads stdin whole (a Dockerfile or a small context). */
async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** Whether the bytes start a tar (plain, gzip, bzip2, xz or zstd). */
function looksLikeArchive(b: Buffer): boolean {
  if (b.length >= 262 && b.subarray(257, 262).toString("latin1") === "ustar") return true;
  return (b[0] === 0x1f && b[1] === 0x8b) || b.subarray(0, 3).toString("latin1") === "BZh" || (b[0] === 0xfd && b[1] === 0x37) || (b[0] === 0x28 && b[1] === 0xb5);
}

async function* once(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

export async function build(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [...BUILD_FLAGS], "build", { interspersed: true });
  if (args.length !== 1) throw new UsageError(`"build" requires exactly 1 argument.`, "build");
  const tags = list(flags.tag);
  for (const t of tags) {
    try {
      const r = parseReference(t);
      if (r.digest) throw new Error("digest");
    } catch {
      // any reference error (or a digest) is docker's one message for -t
      throw invalid(`invalid argument "${t}" for "-t, --tag" flag: invalid reference format`);
    }
  }
  const progress = str(flags.progress) ?? "auto";
  if (!["auto", "plain", "tty", "quiet", "rawjson"].includes(progress)) throw invalid(`invalid --progress ${progress}: auto, plain, tty or quiet`);
  const quiet = !!flags.quiet || progress === "quiet";
  const network = str(flags.network);
  if (network && !["default", "none", "host", "bridge"].includes(network)) throw invalid(`--network ${network}: a build runs on default, none or host`);
  const where = args[0]!;
  let context: ops.BuildRequest["context"];
  let dockerfile: string | undefined;
  let dockerfileName = "Dockerfile";
  let ignore: string | undefined;
  const fileFlag = str(flags.file);
  let stdinUsed = false;
  if (where === "-") {
    const input = await readStdin();
    stdinUsed = true;
    if (looksLikeArchive(input)) context = { tar: once(input) };
    else {
      context = { none: true };
      dockerfile = input.toString("utf8");
    }
  } else if (/^https?:\/\//.test(where)) {
    const res = await fetch(where).catch((e: Error) => {
      throw new BerthError("System", `unable to prepare context: ${where}: ${(e.cause as Error | undefined)?.message ?? e.message}`);
    });
    if (!res.ok) throw new BerthError("System", `unable to prepare context: ${where}: ${res.status} ${res.statusText}`);
    const body = Buffer.from(await res.arrayBuffer());
    if (looksLikeArchive(body)) context = { tar: once(body) };
    else {
      context = { none: true };
      dockerfile = body.toString("utf8");
    }
  } else {
    if (!fs.statSync(where, { throwIfNoEntry: false })?.isDirectory()) throw invalid(`unable to prepare context: path "${where}" not found`);
    context = { dir: path.resolve(where) };
  }
  if (fileFlag === "-") {
    if (stdinUsed) throw invalid("invalid argument: can't use stdin for both build context and dockerfile");
    dockerfile = (await readStdin()).toString("utf8");
  } else if (dockerfile === undefined && !("tar" in context)) {
    let file: string;
    if (fileFlag) file = path.resolve(fileFlag);
    else if ("dir" in context) {
      file = path.join(context.dir, "Dockerfile");
      if (!fs.existsSync(file) && fs.existsSync(path.join(context.dir, "dockerfile"))) file = path.join(context.dir, "dockerfile");
    } else file = "";
    if (file) {
      if (!fs.existsSync(file)) throw invalid(`failed to read dockerfile: open ${fileFlag ?? "Dockerfile"}: no such file or directory`);
      dockerfile = fs.readFileSync(file, "utf8");
      dockerfileName = path.basename(file);
      const own = `${file}.dockerignore`;
      if (fs.existsSync(own)) ignore = fs.readFileSync(own, "utf8");
    }
  }
  // the context's own .dockerignore is read by the engine (as for the API's tar contexts)
  if (dockerfile === undefined && !("tar" in context)) throw invalid("failed to read dockerfile: no Dockerfile given");
  const outputSpec = str(flags.output);
  const output = outputSpec ? parseOutput(outputSpec) : undefined;
  const shm = str(flags["shm-size"]);
  const req: ops.BuildRequest = {
    context,
    ...(dockerfile !== undefined ? { dockerfile } : {}),
    dockerfileName: "tar" in context && fileFlag && fileFlag !== "-" ? fileFlag : dockerfileName,
    ...(ignore !== undefined ? { ignore } : {}),
    tags,
    buildArgs: keyValues(list(flags["build-arg"]), "--build-arg"),
    ...(str(flags.target) ? { target: str(flags.target)! } : {}),
    noCache: !!flags["no-cache"],
    pull: !!flags.pull,
    labels: keyValues(list(flags.label), "--label"),
    ...(network ? { network: network === "bridge" ? "default" : network } : {}),
    extraHosts: list(flags["add-host"]),
    ...(str(flags.platform) ? { platform: str(flags.platform)! } : {}),
    secrets: parseSecrets(list(flags.secret)),
    ssh: ops.parseSshFlags(list(flags.ssh)),
    ...(shm ? { shmSize: parseSize(shm) } : {}),
    ulimits: list(flags.ulimit),
    cacheFrom: list(flags["cache-from"]),
    ...(output ? { output } : {}),
  };
  // progress goes to stderr, as BuildKit's: stdout stays for -q's ID and `-o type=tar,dest=-`
  const tty = progress === "tty" || (progress === "auto" && !!process.stderr.isTTY);
  const view: BuildProgress | undefined = quiet ? undefined : tty ? new TtyProgress(process.stderr) : new PlainProgress((s) => process.stderr.write(s));
  let result: ops.BuildResult;
  try {
    result = await ops.build(ctx.engine(), req, view?.event);
  } catch (e) {
    view?.fail();
    if (e instanceof ops.StepFailed) {
      process.stderr.write(`ERROR: failed to solve: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
  const id = result.image.id;
  view?.finish(id, result.image.repoTags);
  const iid = str(flags.iidfile);
  if (iid) fs.writeFileSync(iid, id);
  if (quiet) out(`${id}\n`);
  trace("build: done");
  return 0;
}

export async function builderPrune(ctx: Context, argv: string[]): Promise<number> {
  parse(argv, [{ long: "force", short: "f", kind: "bool" }, { long: "all", short: "a", kind: "bool" }, { long: "filter", kind: "list" }, { long: "keep-storage", kind: "string" }], "builder prune");
  const r = await ops.pruneCache(ctx.engine());
  for (const d of r.deleted) out(`Deleted build cache: ${shortId(d)}\n`);
  out(`Total:\t${humanSize(r.reclaimed)}\n`);
  return 0;
}

export async function builderDu(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(argv, [{ long: "verbose", kind: "bool" }, { long: "filter", kind: "list" }], "builder du");
  const u = ops.cacheUsage(ctx.engine());
  const rows = u.entries.map((e) => [shortId(e.id), e.kind === "mount" ? "true" : "false", humanSize(e.size), flags.verbose ? e.createdBy : e.createdBy.slice(0, 40)]);
  out(table([["ID", "MOUNT", "SIZE", "CREATED BY"], ...rows]));
  out(`Shared:\t\t0B\nPrivate:\t${humanSize(u.total)}\nReclaimable:\t${humanSize(u.total)}\nTotal:\t\t${humanSize(u.total)}\n`);
  return 0;
}

