/**
 * Dockerfile words as BuildKit's shell lexer reads them: single quotes are literal, double quotes
 * expand variables and take the escape character before `"`, `$` and itself, the escape character
 * outside quotes makes the next character literal, and `$VAR`, `${VAR}`, `${VAR:-word}`,
 * `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, `${VAR#pat}`,
 * `${VAR##pat}`, `${VAR%pat}`, `${VAR%%pat}`, `${VAR/pat/repl}` and `${VAR//pat/repl}` expand.
 */
import { invalid } from "../common/errors.js";
import { bracketClass } from "./ignore.js";

export type Vars = ReadonlyMap<string, string | undefined>;

/** Splits on whitespace outside quotes and escapes; quotes and escapes stay in the words. */
export function splitWords(text: string, escape = "\\"): string[] {
  const words: string[] = [];
  let cur = "";
  let inWord = false;
  let quote: string | undefined;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quote) {
      cur += ch;
      if (ch === escape && quote === '"' && i + 1 < text.length) cur += text[++i];
      else if (ch === quote) quote = undefined;
      continue;
    }
    if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = "";
      inWord = false;
      continue;
    }
    inWord = true;
    cur += ch;
    if (ch === escape && i + 1 < text.length) cur += text[++i];
    else if (ch === '"' || ch === "'") quote = ch;
  }
  if (quote) throw invalid(`unexpected end of statement while looking for matching ${quote}`);
  if (inWord) words.push(cur);
  return words;
}

/** One word with its quotes removed and its variables expanded. `used` collects the names read. */
export function expandWord(word: string, vars: Vars, escape = "\\", used?: Set<string>): string {
  const lx = new Lexer(word, vars, escape, used);
  return lx.until(() => false);
}

class Lexer {
  pos = 0;
  constructor(
    readonly s: string,
    readonly vars: Vars,
    readonly escape: string,
    readonly used?: Set<string>,
  ) {}

  /** Reads until stop(ch) is true at an unquoted character (the character is not consumed). */
  until(stop: (ch: string) => boolean): string {
    let out = "";
    while (this.pos < this.s.length) {
      const ch = this.s[this.pos]!;
      if (stop(ch)) break;
      this.pos++;
      if (ch === this.escape) {
        if (this.pos < this.s.length) out += this.s[this.pos++];
        else out += ch; // a lone escape at the end stays (as BuildKit)
      } else if (ch === "'") {
        const end = this.s.indexOf("'", this.pos);
        if (end < 0) throw invalid("unexpected end of statement while looking for matching '");
        out += this.s.slice(this.pos, end);
        this.pos = end + 1;
      } else if (ch === '"') out += this.doubleQuoted();
      else if (ch === "$") out += this.dollar();
      else out += ch;
    }
    return out;
  }

  private doubleQuoted(): string {
    let out = "";
    for (;;) {
      if (this.pos >= this.s.length) throw invalid('unexpected end of statement while looking for matching "');
      const ch = this.s[this.pos++]!;
      if (ch === '"') return out;
      if (ch === this.escape && this.pos < this.s.length && ['"', "$", this.escape].includes(this.s[this.pos]!)) out += this.s[this.pos++];
      else if (ch === "$") out += this.dollar();
      else out += ch;
    }
  }

  private lookup(name: string): string | undefined {
    this.used?.add(name);
    return this.vars.get(name);
  }

  private dollar(): string {
    const s = this.s;
    if (s[this.pos] !== "{") {
      const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(this.pos));
      if (!m) return "$";
      this.pos += m[0].length;
      return this.lookup(m[0]) ?? "";
    }
    this.pos++; // {
    const m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(s.slice(this.pos));
    if (!m) throw invalid(`bad substitution: \${${s.slice(this.pos).split("}")[0]}}`);
    const name = m[0];
    this.pos += name.length;
    const value = this.lookup(name);
    if (s[this.pos] === "}") {
      this.pos++;
      return value ?? "";
    }
    let op = s[this.pos]!;
    this.pos++;
    if (op === ":" && "-+?".includes(s[this.pos] ?? "")) op += s[this.pos++];
    else if ((op === "#" && s[this.pos] === "#") || (op === "%" && s[this.pos] === "%") || (op === "/" && s[this.pos] === "/")) op += s[this.pos++];
    else if (op === ":") throw invalid(`unsupported modifier (${s[this.pos] ?? ""}) in substitution`);
    const word = () => {
      const w = this.until((c) => c === "}");
      if (s[this.pos] !== "}") throw invalid(`missing '}' in substitution of ${name}`);
      this.pos++;
      return w;
    };
    switch (op) {
      case ":-":
        return value ? (word(), value) : word();
      case "-":
        return value !== undefined ? (word(), value) : word();
      case ":+": {
        const w = word();
        return value ? w : "";
      }
      case "+": {
        const w = word();
        return value !== undefined ? w : "";
      }
      case ":?":
      case "?": {
        const w = word();
        if (value === undefined || (op === ":?" && !value)) throw invalid(`${name}: ${w || "is not allowed to be unset"}`);
        return value;
      }
      case "#":
      case "##":
      case "%":
      case "%%": {
        const pat = globRegex(word(), op.length === 2);
        const v = value ?? "";
        const re = op[0] === "#" ? new RegExp(`^(?:${pat})`, "s") : new RegExp(`(?:${pat})$`, "s");
        if (op[0] === "#") return v.replace(re, "");
        // shortest suffix: try from the end
        if (op === "%") for (let k = v.length; k >= 0; k--) if (new RegExp(`^(?:${pat})$`, "s").test(v.slice(k))) return v.slice(0, k);
        return v.replace(re, "");
      }
      case "/":
      case "//": {
        const pat = this.until((c) => c === "/" || c === "}");
        let repl = "";
        if (s[this.pos] === "/") {
          this.pos++;
          repl = word();
        } else word();
        const re = new RegExp(globRegex(pat, true), op === "//" ? "gs" : "s");
        return (value ?? "").replace(re, () => repl);
      }
      default:
        throw invalid(`unsupported modifier (${op}) in substitution of ${name}`);
    }
  }
}

/** A shell pattern (`*`, `?`, `[...]`) as a regular expression; greedy or shortest `*`. */
function globRegex(pat: string, greedy: boolean): string {
  let out = "";
  for (let i = 0; i < pat.length; i++) {
    const c = pat[i]!;
    if (c === "*") out += greedy ? ".*" : ".*?";
    else if (c === "?") out += ".";
    else if (c === "[") {
      const cls = bracketClass(pat, i);
      out += cls.re;
      i = cls.end;
    } else out += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return out;
}

/**
 * `key=value key2="v 2"` pairs (ENV, LABEL, ARG), or the legacy `ENV key value with spaces` form
 * when the first word has no `=`. Values are expanded; keys are taken as written (unquoted).
 */
export function parseKeyValues(args: string, vars: Vars, escape: string, opts: { legacy: boolean; requireValue: boolean; used?: Set<string> }): [string, string | undefined][] {
  const words = splitWords(args, escape);
  if (!words.length) return [];
  if (opts.legacy && !words[0]!.includes("=")) {
    const key = words[0]!;
    const rest = args.trim().slice(key.length).trim();
    if (!rest) throw invalid(`${key}: a value is missing (ENV ${key}=VALUE)`);
    return [[key, expandWord(rest, vars, escape, opts.used)]];
  }
  return words.map((w) => {
    const eq = w.indexOf("=");
    if (eq < 0) {
      if (opts.requireValue) throw invalid(`${w}: a value is missing (KEY=VALUE)`);
      return [expandWord(w, vars, escape, opts.used), undefined];
    }
    const key = expandWord(w.slice(0, eq), vars, escape, opts.used);
    if (!key) throw invalid(`${w}: the name before = is empty`);
    return [key, expandWord(w.slice(eq + 1), vars, escape, opts.used)];
  });
}
