/**
 * Go's text/template as docker's --format users write it: fields (`.State.Pid`, map keys), `$`,
 * variables (`:=`, `=`), pipelines, parentheses, `if`/`else if`/`else`, `range` (with `$i, $v :=`,
 * over an integer, `break`/`continue`), `with`, `define`/`template`/`block`, trim markers and
 * comments, and docker's functions: json, index, join, split, upper, lower, title, printf, print,
 * println, len, truncate, pad, eq/ne/lt/gt/le/ge, and/or/not. test/cores-unit.test.ts holds the
 * cases of Go's exec tests that apply.
 */
import { invalid } from "../common/errors.js";

type Node =
  | { t: "text"; s: string }
  | { t: "out"; p: Pipe }
  | { t: "if"; branches: Array<{ cond: Pipe; body: Node[] }>; else: Node[] }
  | { t: "range"; p: Pipe; vars: string[]; body: Node[]; else: Node[] }
  | { t: "with"; p: Pipe; body: Node[]; else: Node[] }
  | { t: "template"; name: string; p?: Pipe }
  | { t: "break" }
  | { t: "continue" };
type Arg = { t: "field"; base: "dot" | "root" | string; path: string[] } | { t: "lit"; v: unknown } | { t: "call"; name: string; args: Arg[] } | { t: "paren"; p: Pipe };
type Pipe = { decl?: string[]; assign?: string; cmds: Arg[][] };

function tokenize(src: string): string[] {
  const out: string[] = [];
  const re = /\s+|"(?:[^"\\]|\\.)*"|`[^`]*`|'(?:[^'\\]|\\.)'|:=|[|()]|,|[^\s|()",:]+|:/g;
  for (const m of src.matchAll(re)) if (!/^\s+$/.test(m[0])) out.push(m[0]);
  return out;
}

function parseArg(toks: string[], pos: { i: number }): Arg {
  const tok = toks[pos.i++]!;
  if (tok === "(") {
    const p = parsePipe(toks, pos, ")");
    pos.i++;
    const follow = toks[pos.i];
    if (follow?.startsWith(".") && follow !== ".") {
      pos.i++;
      return { t: "call", name: "__field", args: [{ t: "paren", p }, { t: "lit", v: follow.slice(1).split(".") }] };
    }
    return { t: "paren", p };
  }
  if (tok.startsWith('"')) return { t: "lit", v: JSON.parse(tok) };
  if (tok.startsWith("`")) return { t: "lit", v: tok.slice(1, -1) };
  if (/^-?\d+(\.\d+)?$/.test(tok)) return { t: "lit", v: Number(tok) };
  if (tok === "true" || tok === "false") return { t: "lit", v: tok === "true" };
  if (tok === "nil") return { t: "lit", v: null };
  if (tok === ".") return { t: "field", base: "dot", path: [] };
  if (tok.startsWith(".")) return { t: "field", base: "dot", path: tok.slice(1).split(".") };
  if (tok.startsWith("$")) {
    const [v, ...path] = tok.split(".");
    return { t: "field", base: v === "$" ? "root" : v!, path };
  }
  return { t: "call", name: tok, args: [] };
}

function parsePipe(toks: string[], pos: { i: number }, stop?: string): Pipe {
  const pipe: Pipe = { cmds: [] };
  // variable declaration: $x := ... or $i, $v := ...
  const save = pos.i;
  const vars: string[] = [];
  while (toks[pos.i]?.startsWith("$")) {
    vars.push(toks[pos.i++]!);
    if (toks[pos.i] === ",") pos.i++;
    else break;
  }
  if (vars.length && toks[pos.i] === ":=") {
    pos.i++;
    pipe.decl = vars;
  } else if (vars.length === 1 && toks[pos.i] === "=") {
    pos.i++;
    pipe.assign = vars[0]!;
  } else pos.i = save;
  let cmd: Arg[] = [];
  while (pos.i < toks.length && toks[pos.i] !== stop) {
    if (toks[pos.i] === "|") {
      pos.i++;
      pipe.cmds.push(cmd);
      cmd = [];
      continue;
    }
    cmd.push(parseArg(toks, pos));
  }
  pipe.cmds.push(cmd);
  if (pipe.cmds.some((c) => !c.length)) throw invalid("template: missing value for command");
  return pipe;
}

function parseTemplate(src: string, defined: Map<string, Node[]>): Node[] {
  // split into text and actions, honouring trim markers
  const parts: Array<{ text?: string; action?: string }> = [];
  let i = 0;
  while (i < src.length) {
    const open = src.indexOf("{{", i);
    if (open < 0) {
      parts.push({ text: src.slice(i) });
      break;
    }
    let text = src.slice(i, open);
    let start = open + 2;
    if (src[start] === "-" && /\s/.test(src[start + 1] ?? "")) {
      text = text.replace(/\s+$/, "");
      start++;
    }
    const close = src.indexOf("}}", start);
    if (close < 0) throw invalid("template: unclosed action");
    let body = src.slice(start, close);
    let end = close + 2;
    if (/\s-$/.test(body)) {
      body = body.slice(0, -1);
      const m = /^\s*/.exec(src.slice(end))!;
      end += m[0].length;
    }
    parts.push({ text }, { action: body.trim() });
    i = end;
  }
  const pos = { i: 0 };
  let inRange = false;
  const block = (terminators: string[]): { nodes: Node[]; term: string } => {
    const nodes: Node[] = [];
    while (pos.i < parts.length) {
      const p = parts[pos.i++]!;
      if (p.text !== undefined) {
        if (p.text) nodes.push({ t: "text", s: p.text });
        continue;
      }
      const a = p.action!;
      if (a.startsWith("/*")) continue;
      const kw = a.split(/\s+/)[0]!;
      if (terminators.includes(kw) || (kw === "else" && terminators.includes("else"))) return { nodes, term: a };
      const pipeOf = (s: string) => parsePipe(tokenize(s), { i: 0 });
      if (kw === "if") {
        const node: Extract<Node, { t: "if" }> = { t: "if", branches: [], else: [] };
        let cond = pipeOf(a.slice(2));
        for (;;) {
          const r = block(["else", "end"]);
          node.branches.push({ cond, body: r.nodes });
          if (r.term === "end") break;
          const rest = r.term.slice(4).trim();
          if (rest.startsWith("if ")) {
            cond = pipeOf(rest.slice(3));
            continue;
          }
          node.else = block(["end"]).nodes;
          break;
        }
        nodes.push(node);
      } else if (kw === "range" || kw === "with") {
        const p = pipeOf(a.slice(kw.length));
        const outer = inRange;
        if (kw === "range") inRange = true;
        const r = block(["else", "end"]);
        inRange = outer; // the else branch runs outside the loop
        const els = r.term === "end" ? [] : block(["end"]).nodes;
        if (kw === "range") nodes.push({ t: "range", p, vars: p.decl ?? [], body: r.nodes, else: els });
        else nodes.push({ t: "with", p, body: r.nodes, else: els });
      } else if (kw === "define" || kw === "block") {
        const rest = tokenize(a.slice(kw.length));
        const name = rest[0]?.startsWith('"') || rest[0]?.startsWith("`") ? String((parseArg(rest, { i: 0 }) as { v: unknown }).v) : undefined;
        if (name === undefined) throw invalid(`template: ${kw} needs a template name in quotes`);
        defined.set(name, block(["end"]).nodes);
        if (kw === "block") nodes.push({ t: "template", name, ...(rest.length > 1 ? { p: parsePipe(rest, { i: 1 }) } : {}) });
      } else if (kw === "template") {
        const rest = tokenize(a.slice(kw.length));
        const name = rest[0]?.startsWith('"') || rest[0]?.startsWith("`") ? String((parseArg(rest, { i: 0 }) as { v: unknown }).v) : undefined;
        if (name === undefined) throw invalid("template: template needs a template name in quotes");
        nodes.push({ t: "template", name, ...(rest.length > 1 ? { p: parsePipe(rest, { i: 1 }) } : {}) });
      } else if ((kw === "break" || kw === "continue") && a === kw) {
        if (!inRange) throw invalid(`template: {{${kw}}} outside {{range}}`);
        nodes.push({ t: kw });
      } else if (kw === "end" || kw === "else") throw invalid(`template: unexpected {{${kw}}}`);
      else nodes.push({ t: "out", p: parsePipe(tokenize(a), { i: 0 }) });
    }
    if (terminators.length) throw invalid("template: unexpected EOF (missing {{end}})");
    return { nodes, term: "" };
  };
  return block([]).nodes;
}

const truthy = (v: unknown): boolean =>
  !(v === undefined || v === null || v === false || v === 0 || v === "" || (Array.isArray(v) && !v.length) || (typeof v === "object" && !Array.isArray(v) && !Object.keys(v as object).length));

/** Go's fmt %v rendering of a value. */
export function goString(v: unknown): string {
  if (v === undefined || v === null) return "<no value>";
  if (Array.isArray(v)) return `[${v.map(goString).join(" ")}]`;
  if (v instanceof Date) return v.toISOString();
  if (typeof v === "object") {
    const entries = Object.entries(v as object).sort(([a], [b]) => a.localeCompare(b));
    return `map[${entries.map(([k, x]) => `${k}:${goString(x)}`).join(" ")}]`;
  }
  return String(v);
}

function sprintf(fmt: string, args: unknown[]): string {
  let i = 0;
  return fmt.replace(/%([-+ 0#]*)(\d+)?(?:\.(\d+))?([vsdqfxXt%])/g, (_m, flags: string, width?: string, prec?: string, verb?: string) => {
    if (verb === "%") return "%";
    const a = args[i++];
    let s: string;
    switch (verb) {
      case "d":
        s = String(Math.trunc(Number(a)));
        break;
      case "f":
        s = Number(a).toFixed(prec ? Number(prec) : 6);
        break;
      case "q":
        s = JSON.stringify(String(a));
        break;
      case "x":
      case "X":
        s = typeof a === "number" ? a.toString(16) : Buffer.from(String(a)).toString("hex");
        if (verb === "X") s = s.toUpperCase();
        break;
      default:
        s = goString(a);
        if (prec) s = s.slice(0, Number(prec));
    }
    if (width) s = flags.includes("-") ? s.padEnd(Number(width)) : s.padStart(Number(width), flags.includes("0") && verb !== "s" ? "0" : " ");
    return s;
  });
}

const funcs: Record<string, (...a: any[]) => unknown> = {
  json: (v) => JSON.stringify(v ?? null),
  index: (v, ...keys) => keys.reduce((o, k) => (o == null ? undefined : o[k]), v),
  join: (v: unknown[], sep: string) => (Array.isArray(v) ? v.map(goString).join(sep) : goString(v)),
  split: (s: string, sep: string) => String(s).split(sep),
  upper: (s) => String(s).toUpperCase(),
  lower: (s) => String(s).toLowerCase(),
  title: (s) => String(s).replace(/\b\w/g, (c) => c.toUpperCase()),
  printf: (fmt: string, ...a) => sprintf(fmt, a),
  print: (...a) => a.map(goString).join(""),
  println: (...a) => a.map(goString).join(" ") + "\n",
  len: (v) => (Array.isArray(v) || typeof v === "string" ? v.length : v && typeof v === "object" ? Object.keys(v).length : 0),
  truncate: (s, n: number) => String(s).slice(0, n),
  pad: (s, l: number, r: number) => " ".repeat(l) + String(s) + " ".repeat(r),
  eq: (a, ...b) => b.some((x) => x === a),
  ne: (a, b) => a !== b,
  lt: (a, b) => a < b,
  le: (a, b) => a <= b,
  gt: (a, b) => a > b,
  ge: (a, b) => a >= b,
  and: (...a) => a.reduce((x, y) => (truthy(x) ? y : x)),
  or: (...a) => a.reduce((x, y) => (truthy(x) ? x : y)),
  not: (a) => !truthy(a),
  __field: (v, path: string[]) => path.reduce((o: any, k) => (o == null ? undefined : o[k]), v),
};

type Scope = { dot: unknown; root: unknown; vars: Map<string, unknown>; defined: Map<string, Node[]> };

/** {{break}} and {{continue}} unwind to their range. */
class LoopControl {
  constructor(readonly kind: "break" | "continue") {}
}

function field(v: unknown, path: string[], where: string): unknown {
  let o: any = v;
  for (const k of path) {
    if (o == null) return undefined;
    if (typeof o !== "object") throw invalid(`template: ${where}: can't evaluate field ${k} in type ${typeof o}`);
    if (!(k in o) && !Array.isArray(o)) {
      if (o.constructor === Object && Object.keys(o).some((x) => /^[A-Z]/.test(x)) && /^[A-Z]/.test(k)) throw invalid(`template: ${where}: can't evaluate field ${k}`);
      return undefined;
    }
    o = o[k];
  }
  return o;
}

function evalArg(a: Arg, s: Scope, piped: unknown[]): unknown {
  switch (a.t) {
    case "lit":
      return a.v;
    case "paren":
      return evalPipe(a.p, s);
    case "field": {
      const base = a.base === "dot" ? s.dot : a.base === "root" ? s.root : s.vars.get(a.base);
      if (a.base !== "dot" && a.base !== "root" && !s.vars.has(a.base)) throw invalid(`template: undefined variable ${a.base}`);
      return field(base, a.path, `.${a.path.join(".")}`);
    }
    case "call": {
      const f = funcs[a.name];
      if (!f) throw invalid(`template: function "${a.name}" not defined`);
      return f(...a.args.map((x) => evalArg(x, s, [])), ...piped);
    }
  }
}

function evalPipe(p: Pipe, s: Scope): unknown {
  let val: unknown;
  p.cmds.forEach((cmd, i) => {
    const piped = i ? [val] : [];
    const [head, ...rest] = cmd;
    if (head!.t === "call") {
      const f = funcs[head!.name];
      if (!f) throw invalid(`template: function "${head!.name}" not defined`);
      val = f(...head!.args.map((x) => evalArg(x, s, [])), ...rest.map((x) => evalArg(x, s, [])), ...piped);
    } else {
      if (rest.length) throw invalid("template: can't give argument to non-function");
      val = evalArg(head!, s, piped);
    }
  });
  if (p.decl?.length === 1) s.vars.set(p.decl[0]!, val);
  if (p.assign) {
    if (!s.vars.has(p.assign)) throw invalid(`template: undefined variable ${p.assign}`);
    s.vars.set(p.assign, val);
  }
  return val;
}

function run(nodes: Node[], s: Scope, out: string[]): void {
  for (const n of nodes) {
    switch (n.t) {
      case "text":
        out.push(n.s);
        break;
      case "out": {
        const v = evalPipe(n.p, s);
        if (!n.p.decl && !n.p.assign) out.push(typeof v === "string" ? v : goString(v));
        break;
      }
      case "if": {
        const b = n.branches.find((br) => truthy(evalPipe(br.cond, s)));
        run(b ? b.body : n.else, s, out);
        break;
      }
      case "with": {
        const v = evalPipe(n.p, s);
        if (truthy(v)) run(n.body, { ...s, dot: v }, out);
        else run(n.else, s, out);
        break;
      }
      case "range": {
        const v = evalPipe({ cmds: n.p.cmds }, s);
        const items: Array<[unknown, unknown]> = Array.isArray(v)
          ? v.map((x, i) => [i, x])
          : v && typeof v === "object"
            ? Object.entries(v as object).sort(([a], [b]) => a.localeCompare(b))
            : typeof v === "number"
              ? Array.from({ length: v }, (_x, i) => [i, i])
              : [];
        if (!items.length) run(n.else, s, out);
        // the loop's variables live in the loop; an assignment to an outer one ($x = …) is seen after it
        const saved = n.vars.map((v) => [v, s.vars.has(v), s.vars.get(v)] as const);
        try {
          for (const [k, x] of items) {
            if (n.vars.length === 1) s.vars.set(n.vars[0]!, x);
            if (n.vars.length === 2) s.vars.set(n.vars[0]!, k).set(n.vars[1]!, x);
            try {
              run(n.body, { ...s, dot: x }, out);
            } catch (e) {
              if (!(e instanceof LoopControl)) throw e;
              if (e.kind === "break") break;
            }
          }
        } finally {
          for (const [v, had, old] of saved) had ? s.vars.set(v, old) : s.vars.delete(v);
        }
        break;
      }
      case "break":
      case "continue":
        throw new LoopControl(n.t);
      case "template": {
        const t = s.defined.get(n.name);
        if (!t) throw invalid(`template: no such template "${n.name}"`);
        const dot = n.p ? evalPipe(n.p, s) : undefined;
        // a template sees only its dot (and $ is that dot), as in Go
        run(t, { dot, root: dot, vars: new Map(), defined: s.defined }, out);
        break;
      }
    }
  }
}

export class Template {
  private readonly nodes: Node[];
  private readonly defined = new Map<string, Node[]>();
  constructor(readonly source: string) {
    try {
      this.nodes = parseTemplate(source, this.defined);
    } catch (e) {
      throw invalid(`template parsing error: ${(e as Error).message.replace(/^template: /, "")}`);
    }
  }
  execute(data: unknown): string {
    const out: string[] = [];
    run(this.nodes, { dot: data, root: data, vars: new Map(), defined: this.defined }, out);
    return out.join("");
  }
}

/** docker's --format: "json", "table ..." or a template; returns how to render rows. */
export function formatMode(format: string | undefined): { kind: "table"; template?: Template } | { kind: "json" } | { kind: "raw"; template: Template } {
  if (!format || format === "table") return { kind: "table" };
  if (format === "json") return { kind: "json" };
  if (format.startsWith("table ")) return { kind: "table", template: new Template(format.slice(6).replace(/\\t/g, "\t")) };
  return { kind: "raw", template: new Template(format.replace(/\\t/g, "\t").replace(/\\n/g, "\n")) };
}
