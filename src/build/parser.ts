/**
 * The Dockerfile parser, with BuildKit's rules: parser directives at the top (`# escape=`,
 * `# syntax=`, `# check=`), comments (also inside continued lines), line continuations with the
 * escape character, heredocs for RUN/COPY/ADD (`<<EOF`, `<<-EOF`, quoted names, several per line),
 * JSON (exec) and shell forms, and leading `--flag[=value]` words. Variables are not expanded here
 * (see shell.ts): which instructions expand them, and with what, is the builder's business.
 */
import { invalid } from "../common/errors.js";

export interface Heredoc {
  name: string;
  content: string;
  /** Unquoted names expand variables in COPY/ADD heredocs; quoted ones ('EOF', "EOF") do not. */
  expand: boolean;
}

export interface Instruction {
  /** The keyword, upper case: RUN, COPY, … */
  keyword: string;
  /** `--name=value` flags before the arguments, in order (a bare `--name` has value undefined). */
  flags: { name: string; value: string | undefined }[];
  /** The arguments after the flags, continuations joined, heredoc bodies removed. */
  args: string;
  /** The exec form's list, when the arguments are a JSON array of strings. */
  json?: string[];
  heredocs: Heredoc[];
  /** 1-based line of the keyword. */
  line: number;
  /** The instruction as written on its first line and continuations (for messages and history). */
  source: string;
}

export interface Dockerfile {
  directives: Record<string, string>;
  escape: "\\" | "`";
  instructions: Instruction[];
  /** Things docker warns about (an empty continuation line, an ignored syntax directive). */
  warnings: string[];
}

export const KEYWORDS = new Set(["ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"]);
const HEREDOC_KEYWORDS = new Set(["RUN", "COPY", "ADD"]);

/** A parse error naming the file, line and column, as `Dockerfile:3:1: unknown instruction: FOO`. */
export const parseError = (file: string, line: number, col: number, message: string) => invalid(`${file}:${line}:${col}: ${message}`);

const DIRECTIVE = /^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$/;

export function parseDockerfile(text: string, file = "Dockerfile"): Dockerfile {
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  const directives: Record<string, string> = {};
  const warnings: string[] = [];
  let i = 0;
  // directives: only before anything else, each key once
  for (; i < lines.length; i++) {
    const m = DIRECTIVE.exec(lines[i]!.trim());
    if (!m) break;
    const key = m[1]!.toLowerCase();
    if (!["escape", "syntax", "check"].includes(key)) break; // an ordinary comment ends them
    if (key in directives) throw parseError(file, i + 1, 1, `only one ${key} parser directive can be used`);
    directives[key] = m[2]!;
  }
  const escape = (directives.escape ?? "\\") as "\\" | "`";
  if (escape !== "\\" && escape !== "`") throw parseError(file, 1, 1, `invalid escape token '${escape}' does not match ` + "` or \\");
  if (directives.syntax) warnings.push(`the syntax directive (${directives.syntax}) is ignored: berth's own Dockerfile frontend is used`);
  const continued = new RegExp(`${escape === "\\" ? "\\\\" : "`"}[ \\t]*$`);
  const instructions: Instruction[] = [];

  while (i < lines.length) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (!trimmed || trimmed.startsWith("#")) {
      i++;
      continue;
    }
    const startLine = i + 1;
    // join continuations; comment lines inside are dropped, empty ones too (with a warning, as docker)
    let logical = raw.replace(/^\s+/, "");
    const sourceLines = [raw];
    i++;
    while (continued.test(logical)) {
      logical = logical.replace(continued, "");
      let next: string | undefined;
      while (i < lines.length) {
        const l = lines[i]!;
        i++;
        if (l.trim().startsWith("#")) continue;
        if (!l.trim()) {
          warnings.push(`${file}:${i}: empty continuation line`);
          continue;
        }
        next = l;
        break;
      }
      if (next === undefined) break; // a continuation at the end of the file
      sourceLines.push(next);
      logical += next;
    }
    const m = /^(\S+)(?:\s+([\s\S]*))?$/.exec(logical.trim());
    if (!m) continue;
    const keyword = m[1]!.toUpperCase();
    if (!KEYWORDS.has(keyword)) throw parseError(file, startLine, raw.search(/\S/) + 1, `unknown instruction: ${m[1]}`);
    let rest = m[2] ?? "";
    const flags: Instruction["flags"] = [];
    if (keyword !== "ONBUILD")
      for (;;) {
        const f = /^--([a-zA-Z][a-zA-Z0-9-]*)(?:=((?:"[^"]*"|'[^']*'|\S)*))?(?:\s+|$)/.exec(rest);
        if (!f) break;
        flags.push({ name: f[1]!, value: f[2] === undefined ? undefined : unquoteFlag(f[2]) });
        rest = rest.slice(f[0].length);
      }
    rest = rest.trim();
    const heredocs: Heredoc[] = [];
    if (HEREDOC_KEYWORDS.has(keyword)) {
      for (const h of rest.matchAll(/<<(-?)(["']?)([a-zA-Z_][a-zA-Z0-9_.-]*)\2/g)) {
        const strip = h[1] === "-";
        const body: string[] = [];
        let closed = false;
        while (i < lines.length) {
          const l = lines[i]!;
          i++;
          const cmp = strip ? l.replace(/^\t+/, "") : l;
          if (cmp === h[3]) {
            closed = true;
            sourceLines.push(l);
            break;
          }
          body.push(cmp);
          sourceLines.push(l);
        }
        if (!closed) throw parseError(file, startLine, 1, `unterminated heredoc ${h[3]} (no line "${h[3]}" after line ${startLine})`);
        heredocs.push({ name: h[3]!, content: body.length ? body.join("\n") + "\n" : "", expand: !h[2] });
      }
    }
    const json = parseJsonForm(rest);
    instructions.push({
      keyword,
      flags,
      args: rest,
      ...(json ? { json } : {}),
      heredocs,
      line: startLine,
      source: sourceLines.join("\n"),
    });
  }
  return { directives, escape, instructions, warnings };
}

function unquoteFlag(v: string): string {
  return v.replace(/"([^"]*)"|'([^']*)'/g, (_, a: string | undefined, b: string | undefined) => a ?? b ?? "");
}

/** `["a", "b"]` as a list; anything else (not JSON, or not all strings) is shell form. */
export function parseJsonForm(args: string): string[] | undefined {
  if (!args.startsWith("[") || !args.endsWith("]")) return undefined;
  try {
    const v: unknown = JSON.parse(args);
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  } catch {
    /* shell form */
  }
  return undefined;
}

/** The flag's value (the last one given), or undefined. */
export function flag(ins: Instruction, name: string): string | undefined {
  let v: string | undefined;
  for (const f of ins.flags) if (f.name === name) v = f.value ?? "";
  return v;
}

export const flagsAll = (ins: Instruction, name: string): string[] => ins.flags.filter((f) => f.name === name).map((f) => f.value ?? "");

/** Refuse flags an instruction does not take, as docker: "unknown flag: foo". */
export function checkFlags(ins: Instruction, allowed: string[], file: string): void {
  for (const f of ins.flags) if (!allowed.includes(f.name)) throw parseError(file, ins.line, 1, `${ins.keyword}: unknown flag: --${f.name}`);
}
