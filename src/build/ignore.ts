/**
 * `.dockerignore` with docker's semantics (moby/patternmatcher): one pattern a line, `#` comments,
 * paths cleaned and taken relative to the context root, `*` and `?` within a name, `**` across any
 * number of directories, `[...]` classes, `\` escapes, and `!` exceptions; the last matching
 * pattern decides. A pattern that matches a directory matches everything below it.
 */
export interface IgnorePattern {
  source: string;
  exclusion: boolean;
  re: RegExp;
}

export class IgnoreMatcher {
  readonly patterns: IgnorePattern[];
  /** Whether some pattern is an exception: only then can an ignored directory hold kept files. */
  readonly hasExceptions: boolean;

  constructor(lines: string[]) {
    this.patterns = [];
    for (let raw of lines) {
      raw = raw.trim();
      if (!raw || raw.startsWith("#")) continue;
      const exclusion = raw.startsWith("!");
      if (exclusion) raw = raw.slice(1).trim();
      const clean = cleanPattern(raw);
      if (!clean) continue;
      this.patterns.push({ source: raw, exclusion, re: patternRegex(clean) });
    }
    this.hasExceptions = this.patterns.some((p) => p.exclusion);
  }

  static parse(text: string): IgnoreMatcher {
    return new IgnoreMatcher(text.split(/\r?\n/));
  }

  /** Whether the context path `rel` (no leading slash) is left out of the build context. */
  ignores(rel: string): boolean {
    if (!this.patterns.length) return false;
    const parents: string[] = [];
    const parts = rel.split("/");
    for (let i = 1; i < parts.length; i++) parents.push(parts.slice(0, i).join("/"));
    let matched = false;
    for (const p of this.patterns) {
      if (p.exclusion !== matched) continue; // only a pattern that could change the answer is tried
      if (p.re.test(rel) || parents.some((d) => p.re.test(d))) matched = !p.exclusion;
    }
    return matched;
  }

  /** The pattern that leaves `rel` out (for "excluded by .dockerignore" messages). */
  reason(rel: string): string | undefined {
    let why: string | undefined;
    const parts = rel.split("/");
    const cands = [rel, ...parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join("/"))];
    for (const p of this.patterns) if (cands.some((c) => p.re.test(c))) why = p.exclusion ? undefined : p.source;
    return why;
  }
}

/** filepath.Clean, relative to the root: `./a//b/../c/` → `a/c`; `/` and `.` → "". */
export function cleanPattern(p: string): string {
  const out: string[] = [];
  for (const part of p.split("/")) {
    if (!part || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return out.join("/");
}

/** A pattern as a regular expression over whole relative paths. */
export function patternRegex(pattern: string): RegExp {
  let re = "^";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === "*") {
      if (pattern[i + 1] === "*") {
        i++;
        // `**/` matches zero or more directories; a trailing `**` everything
        if (pattern[i + 1] === "/") {
          i++;
          re += "(?:.*/)?";
        } else re += ".*";
      } else re += "[^/]*";
    } else if (c === "?") re += "[^/]";
    else if (c === "[") {
      const cls = bracketClass(pattern, i);
      re += cls.re;
      i = cls.end;
    } else if (c === "\\" && i + 1 < pattern.length) re += pattern[++i]!.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    else re += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  }
  return new RegExp(re + "$", "s");
}

/** A `[...]` class (`[!...]` negated) starting at i, as a regular expression, and where it ends; a lone `[` is literal. */
export function bracketClass(pattern: string, i: number): { re: string; end: number } {
  const end = pattern.indexOf("]", i + 2);
  if (end < 0) return { re: "\\[", end: i };
  return { re: "[" + pattern.slice(i + 1, end).replace(/^!/, "^").replace(/\\/g, "\\\\") + "]", end };
}

/** Whether a COPY source is a pattern (docker expands `*`, `?` and `[` in sources). */
export const isGlob = (s: string): boolean => /[*?[]/.test(s);
