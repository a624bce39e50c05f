/**
 * Flag parsing with urfave/cli's rules, which runc's callers rely on: `--flag value`, `--flag=value`,
 * single-dash long flags (`-bundle x`), short aliases, repeatable flags, and flags end at the first
 * positional argument (everything after it belongs to the command, e.g. a process's argv).
 */
import { invalid } from "../common/errors.js";

export interface FlagDef {
  names: string[]; // first is canonical: ["bundle", "b"]
  kind: "bool" | "string" | "int" | "list";
  /** A flag runc accepts that berth does not implement: a clear error when used. */
  unsupported?: string;
}

export type Parsed = { flags: Record<string, string | boolean | number | string[] | undefined>; args: string[] };

/** interspersed: flags may follow positional arguments too (runc's commands whose arguments are not a command line). */
export function parseFlags(argv: string[], defs: FlagDef[], opts: { interspersed?: boolean } = {}): Parsed {
  const flags: Parsed["flags"] = {};
  const byName = new Map<string, FlagDef>();
  for (const d of defs) for (const n of d.names) byName.set(n, d);
  const positional: string[] = [];
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (!a.startsWith("-") || a === "-") {
      if (!opts.interspersed) break;
      positional.push(a);
      continue;
    }
    const body = a.replace(/^--?/, "");
    const eq = body.indexOf("=");
    const name = eq >= 0 ? body.slice(0, eq) : body;
    const def = byName.get(name);
    if (!def) throw invalid(`flag provided but not defined: -${name}`);
    if (def.unsupported) throw invalid(`--${def.names[0]} is not supported by berth-runtime: ${def.unsupported}`);
    const key = def.names[0]!;
    if (def.kind === "bool") {
      const v = eq >= 0 ? body.slice(eq + 1) : "true";
      if (!["true", "false", "1", "0"].includes(v)) throw invalid(`invalid boolean value ${JSON.stringify(v)} for -${name}`);
      flags[key] = v === "true" || v === "1";
      continue;
    }
    let value: string;
    if (eq >= 0) value = body.slice(eq + 1);
    else {
      if (i + 1 >= argv.length) throw invalid(`flag needs an argument: -${name}`);
      value = argv[++i]!;
    }
    if (def.kind === "int") {
      if (!/^-?\d+$/.test(value)) throw invalid(`invalid value ${JSON.stringify(value)} for flag -${name}: parse error`);
      flags[key] = Number(value);
    } else if (def.kind === "list") {
      ((flags[key] as string[] | undefined) ?? (flags[key] = [])) as string[];
      (flags[key] as string[]).push(value);
    } else flags[key] = value;
  }
  return { flags, args: [...positional, ...argv.slice(i)] };
}
