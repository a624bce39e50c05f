/** berth's image commands, with docker's flags, output and exit codes. */
import * as fs from "node:fs";
import { builtin } from "../../common/builtin.js";
import { invalid, notFound } from "../../common/errors.js";
import { familiar, familiarRepository, formatReference, images as ops, parseReference, shortId, system, withDefaultTag } from "../../engine/index.js";
import { list, parse, str, UsageError } from "../pflag.js";
import { Template } from "../template.js";
import { ago, humanSize, render, table } from "./output.js";
import { ProgressView } from "./progress.js";
import type { Context } from "./context.js";

const out = (s: string) => process.stdout.write(s);

export async function pull(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "all-tags", short: "a", kind: "bool" },
      { long: "platform", kind: "string" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "disable-content-trust", kind: "bool" },
    ],
    "pull",
  );
  if (args.length !== 1) throw new UsageError(`"pull" requires exactly 1 argument.`, "pull");
  const name = args[0]!;
  const ref = parseReference(name);
  const quiet = !!flags.quiet;
  const repo = familiarRepository(ref).includes("/") || ref.domain !== "docker.io" ? familiarRepository(ref) : `library/${familiarRepository(ref)}`;
  // --all-tags: every tag the registry lists, one pull each (docker's output for each)
  const tags = flags["all-tags"] ? await ops.tagsOf(name) : undefined;
  if (tags && !tags.length) throw invalid(`${name}: the repository has no tags`);
  if (!quiet && !tags && !ref.tag && !ref.digest) out("Using default tag: latest\n");
  const targets = tags ? tags.map((t) => `${name}:${t}`) : [name];
  let reference = "";
  for (const target of targets) {
    const full = withDefaultTag(parseReference(target));
    const view = new ProgressView(process.stdout);
    if (!quiet) out(`${full.digest ?? full.tag}: Pulling from ${repo}\n`);
    const r = await ops.pull(ctx.engine(), target, {
      ...(str(flags.platform) ? { platform: str(flags.platform)! } : {}),
      ...(quiet ? {} : { onProgress: view.update }),
    });
    view.flush();
    if (!quiet) {
      out(`Digest: ${r.digest}\n`);
      out(r.upToDate ? `Status: Image is up to date for ${familiar(r.reference)}\n` : `Status: Downloaded newer image for ${familiar(r.reference)}\n`);
    }
    reference = r.reference;
  }
  // docker prints the repository after -a, the reference after a single pull
  out(`${tags ? reference.replace(/:[^:/]+$/, "") : reference}\n`);
  return 0;
}

export async function push(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "all-tags", short: "a", kind: "bool" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "disable-content-trust", kind: "bool" },
    ],
    "push",
  );
  if (args.length !== 1) throw new UsageError(`"push" requires exactly 1 argument.`, "push");
  const ref = withDefaultTag(parseReference(args[0]!));
  const view = new ProgressView(process.stdout);
  if (!flags.quiet) out(`The push refers to repository [${formatReference({ domain: ref.domain, path: ref.path })}]\n`);
  const r = await ops.push(ctx.engine(), args[0]!, flags.quiet ? {} : { onProgress: view.update });
  view.flush();
  out(flags.quiet ? `${formatReference(ref)}\n` : `${r.tag}: digest: ${r.digest} size: ${r.size}\n`);
  return 0;
}

interface ImageRow {
  Containers: string;
  CreatedAt: string;
  CreatedSince: string;
  Digest: string;
  ID: string;
  Repository: string;
  SharedSize: string;
  Size: string;
  Tag: string;
  UniqueSize: string;
  VirtualSize: string;
}

export async function images(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "all", short: "a", kind: "bool" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "digests", kind: "bool" },
      { long: "no-trunc", kind: "bool" },
      { long: "filter", short: "f", kind: "list" },
      { long: "format", kind: "string" },
      { long: "tree", kind: "bool" },
    ],
    "images",
  );
  if (args.length > 1) throw new UsageError(`"images" requires at most 1 argument.`, "images");
  const filters = list(flags.filter);
  if (args[0]) filters.push(`reference=${args[0]}`);
  const noTrunc = !!flags["no-trunc"];
  const rows: ImageRow[] = ops.listImages(ctx.engine(), filters, { all: !!flags.all }).map(({ record: r, repository, tag, digest }) => ({
      Containers: "N/A",
      CreatedAt: r.created ? new Date(r.created).toISOString().replace("T", " ").replace(/\.\d+Z$/, " +0000 UTC") : "",
      CreatedSince: ago(r.created),
      ID: noTrunc ? r.id : shortId(r.id),
      SharedSize: "N/A",
      Size: humanSize(r.size),
      UniqueSize: "N/A",
      VirtualSize: humanSize(r.size),
      Repository: repository,
      Tag: tag,
      Digest: digest,
  }));
  if (flags.quiet) {
    out([...new Set(rows.map((r) => r.ID))].map((id) => id + "\n").join(""));
    return 0;
  }
  const columns: Array<[string, keyof ImageRow]> = [
    ["REPOSITORY", "Repository"],
    ["TAG", "Tag"],
    ...(flags.digests ? ([["DIGEST", "Digest"]] as Array<[string, keyof ImageRow]>) : []),
    ["IMAGE ID", "ID"],
    ["CREATED", "CreatedSince"],
    ["SIZE", "Size"],
  ];
  out(render(rows, str(flags.format) ?? ctx.config.imagesFormat, columns));
  return 0;
}

export async function rmi(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "force", short: "f", kind: "bool" },
      { long: "no-prune", kind: "bool" },
    ],
    "rmi",
  );
  if (!args.length) throw new UsageError(`"rmi" requires at least 1 argument.`, "rmi");
  let rc = 0;
  for (const a of args) {
    try {
      const r = await ops.remove(ctx.engine(), a, { force: !!flags.force });
      for (const u of r.untagged) out(`Untagged: ${u}\n`);
      for (const d of r.deleted) out(`Deleted: ${d}\n`);
    } catch (e) {
      ctx.error(e);
      rc = 1;
    }
  }
  return rc;
}

export async function tag(ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "tag");
  if (args.length !== 2) throw new UsageError(`"tag" requires exactly 2 arguments.`, "tag");
  await ops.tag(ctx.engine(), args[0]!, args[1]!);
  return 0;
}

/** docker prints inspect output as a JSON array indented by four spaces. */
export function printInspect(items: unknown[], format: string | undefined): void {
  if (format) {
    const t = new Template(format);
    for (const i of items) out(t.execute(i) + "\n");
  } else out(JSON.stringify(items, null, 4) + "\n");
}

export async function imageInspect(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(argv, [{ long: "format", short: "f", kind: "string" }], "image inspect");
  if (!args.length) throw new UsageError(`"inspect" requires at least 1 argument.`, "image inspect");
  const found: unknown[] = [];
  let rc = 0;
  for (const a of args) {
    const r = ops.inspect(ctx.engine(), a);
    if (!r) {
      ctx.error(notFound(`No such image: ${a}`));
      rc = 1;
      continue;
    }
    found.push(r);
  }
  if (found.length || !str(flags.format)) printInspect(found, str(flags.format));
  return rc;
}

export async function history(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "human", short: "H", kind: "bool", default: true },
      { long: "no-trunc", kind: "bool" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "format", kind: "string" },
    ],
    "history",
  );
  if (args.length !== 1) throw new UsageError(`"history" requires exactly 1 argument.`, "history");
  const noTrunc = !!flags["no-trunc"],
    human = flags.human !== false;
  const rows = ops.history(ctx.engine(), args[0]!).map((h) => {
    const by = h.createdBy.replace(/\s+/g, " ");
    return {
      ID: h.id === "<missing>" || noTrunc ? h.id : shortId(h.id),
      CreatedSince: human ? ago(h.created) : h.created,
      CreatedAt: h.created,
      CreatedBy: noTrunc || by.length <= 45 ? by : by.slice(0, 44) + "…",
      Size: human ? humanSize(h.size) : String(h.size),
      Comment: h.comment,
    };
  });
  out(
    render(
      rows,
      str(flags.format),
      [
        ["IMAGE", "ID"],
        ["CREATED", "CreatedSince"],
        ["CREATED BY", "CreatedBy"],
        ["SIZE", "Size"],
        ["COMMENT", "Comment"],
      ],
      flags.quiet ? (r) => r.ID : undefined,
    ),
  );
  return 0;
}

export async function save(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "output", short: "o", kind: "string" },
      { long: "format", kind: "string", default: "docker-archive" },
      { long: "platform", kind: "string" },
    ],
    "save",
  );
  if (!args.length) throw new UsageError(`"save" requires at least 1 argument.`, "save");
  const format = str(flags.format) as ops.ArchiveFormat;
  const file = str(flags.output);
  if (!file && process.stdout.isTTY) throw invalid("cowardly refusing to save to a terminal. Use the -o flag or redirect");
  const archive = ops.save(ctx.engine(), args, format); // every name must exist before anything is written
  const tmp = file ? `${file}.berth-${process.pid}` : undefined;
  const fd = tmp ? fs.openSync(tmp, "w", 0o644) : 1;
  try {
    for await (const chunk of archive) {
      let off = 0;
      while (off < chunk.length) {
        try {
          off += fs.writeSync(fd, chunk, off);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    }
    if (tmp) {
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.renameSync(tmp, file!);
    }
  } catch (e) {
    if (tmp) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
    }
    throw e;
  }
  return 0;
}

const inputStream = (file: string | undefined) => (file && file !== "-" ? fs.createReadStream(file, { highWaterMark: 1 << 20 }) : process.stdin);

export async function load(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "input", short: "i", kind: "string" },
      { long: "quiet", short: "q", kind: "bool" },
      { long: "platform", kind: "string" },
    ],
    "load",
  );
  if (args.length) throw new UsageError(`"load" accepts no arguments.`, "load");
  const file = str(flags.input);
  if (!file && process.stdin.isTTY) throw invalid("requested load from stdin, but stdin is empty");
  if (file && !fs.existsSync(file)) throw notFound(`open ${file}: no such file or directory`);
  const loaded = await ops.load(ctx.engine(), inputStream(file) as AsyncIterable<Buffer>);
  for (const r of loaded) {
    if (r.repoTags.length) for (const t of r.repoTags) out(`Loaded image: ${familiar(t)}\n`);
    else out(`Loaded image ID: ${r.id}\n`);
  }
  return 0;
}

export async function importCmd(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "change", short: "c", kind: "list" },
      { long: "message", short: "m", kind: "string" },
      { long: "platform", kind: "string" },
    ],
    "import",
  );
  if (args.length < 1 || args.length > 2) throw new UsageError(`"import" requires at least 1 and at most 2 arguments.`, "import");
  const src = args[0]!;
  if (/^https?:\/\//.test(src)) throw invalid("importing from a URL is not supported: download the file and import it");
  if (src !== "-" && !fs.existsSync(src)) throw notFound(`open ${src}: no such file or directory`);
  if (args[1]) parseReference(args[1]); // a bad name fails before anything is read
  const rec = await ops.importTarball(ctx.engine(), inputStream(src) as AsyncIterable<Buffer>, {
    ...(args[1] ? { reference: args[1] } : {}),
    changes: list(flags.change),
    ...(str(flags.message) ? { message: str(flags.message)! } : {}),
    ...(str(flags.platform) ? { platform: str(flags.platform)! } : {}),
  });
  out(`${rec.id}\n`);
  return 0;
}

/** docker's y/N prompt; a non-interactive stdin with no answer means no. */
export async function confirm(question: string): Promise<boolean> {
  process.stdout.write(`${question} [y/N] `);
  const rl = builtin<typeof import("node:readline")>("node:readline").createInterface({ input: process.stdin });
  const answer = await new Promise<string>((resolve) => {
    rl.once("line", resolve);
    rl.once("close", () => resolve(""));
  });
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

export async function imagePrune(ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "all", short: "a", kind: "bool" },
      { long: "force", short: "f", kind: "bool" },
      { long: "filter", kind: "list" },
    ],
    "image prune",
  );
  if (args.length) throw new UsageError(`"prune" accepts no arguments.`, "image prune");
  const all = !!flags.all;
  if (!flags.force) {
    const warning = all ? "WARNING! This will remove all images without at least one container associated to them." : "WARNING! This will remove all dangling images.";
    if (!(await confirm(`${warning}\nAre you sure you want to continue?`))) return 0;
  }
  const r = await ops.prune(ctx.engine(), { all, filters: list(flags.filter) });
  if (r.deleted.length) {
    out("Deleted Images:\n");
    for (const u of r.untagged) out(`untagged: ${u}\n`);
    for (const d of r.deleted) out(`deleted: ${d}\n`);
    out("\n");
  }
  out(`Total reclaimed space: ${humanSize(r.reclaimed)}\n`);
  return 0;
}

export async function systemDf(ctx: Context, argv: string[]): Promise<number> {
  const { flags } = parse(
    argv,
    [
      { long: "verbose", short: "v", kind: "bool" },
      { long: "format", kind: "string" },
    ],
    "system df",
  );
  const du = await system.diskUsage(ctx.engine());
  const imgs = du.images.list;
  const pct = (part: number, whole: number) => (whole ? ` (${Math.round((part / whole) * 100)}%)` : "");
  const row = (Type: string, u: { total: number; active: number; size: number; reclaimable: number }) => ({ Type, TotalCount: String(u.total), Active: String(u.active), Size: humanSize(u.size), Reclaimable: humanSize(u.reclaimable) + pct(u.reclaimable, u.size) });
  const rows = [row("Images", du.images), row("Containers", du.containers), row("Local Volumes", du.volumes), row("Build Cache", du.buildCache)];
  out(
    render(rows, str(flags.format), [
      ["TYPE", "Type"],
      ["TOTAL", "TotalCount"],
      ["ACTIVE", "Active"],
      ["SIZE", "Size"],
      ["RECLAIMABLE", "Reclaimable"],
    ]),
  );
  if (flags.verbose) {
    out("\nImages space usage:\n\n");
    out(table([["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"], ...imgs.flatMap((r) => (r.repoTags.length ? r.repoTags : ["<none>:<none>"]).map((t) => { const i = t.lastIndexOf(":"); return [t === "<none>:<none>" ? "<none>" : familiar(t.slice(0, i)), t.slice(i + 1), shortId(r.id), ago(r.created), humanSize(r.size)]; }))]));
  }
  return 0;
}

async function readSecret(prompt: string, hidden: boolean): Promise<string> {
  process.stdout.write(prompt);
  const stdin = process.stdin;
  if (hidden && stdin.isTTY) stdin.setRawMode(true);
  const rl = builtin<typeof import("node:readline")>("node:readline").createInterface({ input: stdin, terminal: false });
  const line = await new Promise<string>((resolve) => {
    rl.once("line", resolve);
    rl.once("close", () => resolve(""));
  });
  rl.close();
  if (hidden && stdin.isTTY) {
    stdin.setRawMode(false);
    process.stdout.write("\n");
  }
  return line.replace(/\r$/, "");
}

export async function login(_ctx: Context, argv: string[]): Promise<number> {
  const { flags, args } = parse(
    argv,
    [
      { long: "username", short: "u", kind: "string" },
      { long: "password", short: "p", kind: "string" },
      { long: "password-stdin", kind: "bool" },
    ],
    "login",
  );
  if (args.length > 1) throw new UsageError(`"login" requires at most 1 argument.`, "login");
  let username = str(flags.username);
  let password = str(flags.password);
  if (password !== undefined) process.stderr.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n");
  if (flags["password-stdin"]) {
    if (password !== undefined) throw invalid("--password and --password-stdin are mutually exclusive");
    if (!username) throw invalid("Must provide --username with --password-stdin");
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    password = Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "");
  }
  const saved = ops.savedUsername(args[0]);
  if (!username) username = (await readSecret(`Username${saved ? ` (${saved})` : ""}: `, false)) || saved;
  if (!username) throw invalid("Error: Non-null Username Required");
  if (password === undefined) password = await readSecret("Password: ", true);
  if (!password) throw invalid("Error: Password Required");
  await ops.login(args[0], username, password);
  out("Login Succeeded\n");
  return 0;
}

export async function logout(_ctx: Context, argv: string[]): Promise<number> {
  const { args } = parse(argv, [], "logout");
  if (args.length > 1) throw new UsageError(`"logout" requires at most 1 argument.`, "logout");
  const domain = ops.registryDomain(args[0]);
  const shown = domain === "docker.io" ? "https://index.docker.io/v1/" : domain;
  if (!ops.logout(args[0])) {
    out(`Not logged in to ${shown}\n`);
    return 0;
  }
  out(`Removing login credentials for ${shown}\n`);
  return 0;
}

export { withDefaultTag };
