/**
 * Flag parsing with docker's rules (cobra/pflag): `--name value`, `--name=value`, `-n value`, `-nvalue`,
 * combined short booleans (`-aq`), `--bool=false`, flags anywhere among the arguments unless the
 * command takes a command line of its own (run, exec: flags stop at the first argument), and `--`.
 */
import { BerthError, ErrorCode } from "../common/errors.js";

export interface Flag {
  long: string;
  short?: string;
  kind: "bool" | "string" | "int" | "list";
  /** Shown in help. */
  help?: string;
  /** Left out of help (aliases such as --net). */
  hidden?: boolean;
  default?: string | number | boolean;
}

export type FlagValues = Record<string, string | number | boolean | string[] | undefined>;

/** A usage error: docker prints it, then "See 'docker X --help'.", and exits 125. */
export class UsageError extends BerthError {
  constructor(
    message: string,
    readonly command: string,
  ) {
    super("InvalidArgument", message, { code: ErrorCode.USAGE });
    this.name = "UsageError";
  }
}

/** Thrown by parse while a command's --help is being shown: the flags the command takes. */
export class HelpRequested extends Error {
  constructor(readonly flags: Flag[]) {
    super("help");
  }
}

let helpProbe = false;
/** Run fn with parse answering HelpRequested at once: the command's flags, without running it. */
export async function probeFlags(fn: () => Promise<unknown>): Promise<Flag[] | undefined> {
  helpProbe = true;
  try {
    await fn();
    return undefined;
  } catch (e) {
    if (e instanceof HelpRequested) return e.flags;
    return undefined;
  } finally {
    helpProbe = false;
  }
}

/** docker's Options section: one line per flag, its help or its kind. */
export function formatFlags(flags: Flag[], help: Record<string, string>): string {
  const rows = flags
    .filter((f) => !f.hidden)
    .map((f) => {
      const name = `${f.short ? `-${f.short}, ` : "    "}--${f.long}${f.kind === "bool" ? "" : ` ${f.kind === "int" ? "int" : f.kind === "list" ? "list" : "string"}`}`;
      return [name, f.help ?? help[f.long] ?? ""] as const;
    })
    .sort((a, b) => a[0].replace(/^-., /, "    ").localeCompare(b[0].replace(/^-., /, "    ")));
  const width = Math.max(...rows.map((r) => r[0].length)) + 3;
  return rows.map(([n, h]) => `  ${n.padEnd(width)}${h}`.trimEnd()).join("\n");
}

export interface Parsed {
  flags: FlagValues;
  args: string[];
}

export function parse(argv: string[], flags: Flag[], command: string, opts: { interspersed?: boolean } = {}): Parsed {
  if (helpProbe) throw new HelpRequested(flags);
  const interspersed = opts.interspersed ?? true;
  const byLong = new Map(flags.map((f) => [f.long, f]));
  const byShort = new Map(flags.filter((f) => f.short).map((f) => [f.short!, f]));
  const values: FlagValues = {};
  for (const f of flags) if (f.default !== undefined) values[f.long] = f.default;
  const args: string[] = [];
  const set = (f: Flag, raw: string | undefined, shown: string, next: () => string | undefined) => {
    if (f.kind === "bool") {
      const v = raw ?? "true";
      if (!/^(true|false|1|0|t|f|TRUE|FALSE|True|False)$/.test(v)) throw new UsageError(`invalid argument "${v}" for "${shown}" flag: strconv.ParseBool: parsing "${v}": invalid syntax`, command);
      values[f.long] = /^(true|1|t|TRUE|True)$/.test(v);
      return;
    }
    const v = raw ?? next();
    if (v === undefined) throw new UsageError(`flag needs an argument: ${shown}`, command);
    if (f.kind === "int") {
      if (!/^-?\d+$/.test(v)) throw new UsageError(`invalid argument "${v}" for "${shown}" flag: strconv.ParseInt: parsing "${v}": invalid syntax`, command);
      values[f.long] = Number(v);
    } else if (f.kind === "list") ((values[f.long] as string[] | undefined) ?? (values[f.long] = [] as string[]), (values[f.long] as string[]).push(v));
    else values[f.long] = v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => (i + 1 < argv.length ? argv[++i] : undefined);
    if (a === "--") {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
      const f = byLong.get(name);
      if (!f) throw new UsageError(`unknown flag: --${name}`, command);
      set(f, eq > 0 ? a.slice(eq + 1) : undefined, `--${name}`, next);
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const c = a[j]!;
        const f = byShort.get(c);
        if (!f) throw new UsageError(`unknown shorthand flag: '${c}' in ${a}`, command);
        if (f.kind === "bool") {
          if (a[j + 1] === "=") {
            set(f, a.slice(j + 2), `-${c}, --${f.long}`, next);
            break;
          }
          set(f, undefined, `-${c}`, next);
          continue;
        }
        const rest = a.slice(j + 1).replace(/^=/, "");
        set(f, rest || undefined, `-${c}, --${f.long}`, next);
        break;
      }
      continue;
    }
    args.push(a);
    if (!interspersed) {
      args.push(...argv.slice(i + 1));
      break;
    }
  }
  return { flags: values, args };
}

export const str = (v: FlagValues[string]): string | undefined => (typeof v === "string" ? v : undefined);
export const list = (v: FlagValues[string]): string[] => (Array.isArray(v) ? v : []);
