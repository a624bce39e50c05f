/**
 * Go's fmt verbs as BuildKit uses them in image history (`created_by`): `%q` of a string list, of a
 * rune and of a time.Duration, so `berth history` reads as docker's for the same Dockerfile.
 */

const ESCAPES: Record<number, string> = { 7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f", 13: "\\r" };

function escapeRune(code: number, quote: string): string {
  const ch = String.fromCodePoint(code);
  if (ch === quote || ch === "\\") return `\\${ch}`;
  if (ESCAPES[code]) return ESCAPES[code]!;
  if (code < 0x20 || code === 0x7f) return `\\x${code.toString(16).padStart(2, "0")}`;
  if (code >= 0x80 && code < 0xa0) return `\\u${code.toString(16).padStart(4, "0")}`;
  return ch;
}

/** strconv.Quote */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) out += escapeRune(ch.codePointAt(0)!, '"');
  return out + '"';
}

/** fmt's %q of a []string: `["a" "b"]` */
export function goQuoteList(xs: readonly string[]): string {
  return `[${xs.map(goQuote).join(" ")}]`;
}

/** strconv.QuoteRune: what %q prints for an integer */
export function goQuoteRune(n: number): string {
  return `'${escapeRune(n, "'")}'`;
}

/** time.Duration's String(): 0s, 1.5ms, 5s, 1m30s, 1h0m0s */
export function goDuration(ns: number): string {
  if (ns === 0) return "0s";
  const sign = ns < 0 ? "-" : "";
  let u = Math.abs(ns);
  const frac = (x: number) => String(Number(x.toFixed(9)));
  if (u < 1e9) {
    const [unit, div] = u < 1e3 ? ["ns", 1] : u < 1e6 ? ["µs", 1e3] : ["ms", 1e6];
    return `${sign}${frac(u / div)}${unit}`;
  }
  const h = Math.floor(u / 3600e9);
  u -= h * 3600e9;
  const m = Math.floor(u / 60e9);
  u -= m * 60e9;
  const s = `${frac(u / 1e9)}s`;
  return sign + (h ? `${h}h${m}m${s}` : m ? `${m}m${s}` : s);
}
