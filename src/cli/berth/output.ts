/** docker's output conventions: tabwriter tables, human sizes and durations, --format rendering. */
import { formatMode, Template } from "../template.js";
import { humanDuration } from "../../common/units.js";

/** docker's units.HumanSizeWithPrecision(size, 3): decimal units, three significant digits. */
export function humanSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
  let v = bytes,
    i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${Number(v.toPrecision(3))}${units[i]}`;
}

export { humanDuration };

export const ago = (iso: string | undefined): string => (iso && !iso.startsWith("0001") ? `${humanDuration(Date.now() - Date.parse(iso))} ago` : "N/A");

/** Go's tabwriter as docker configures it: min width 10, padding 3. */
export function table(rows: string[][]): string {
  if (!rows.length) return "";
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(Math.max(10, widths[i]! + 3))))
        .join("")
        .replace(/\s+$/, ""),
    )
    .join("\n")
    .concat("\n");
}

/**
 * Render rows with docker's --format rules: a default table, `table <template>` (headers from the
 * field names), `json` (one JSON object a line), or a bare template (one line a row).
 */
export function render<T extends object>(items: T[], format: string | undefined, columns: Array<[header: string, field: keyof T & string]>, quiet?: (t: T) => string): string {
  if (quiet) return items.map((i) => quiet(i) + "\n").join("");
  const mode = formatMode(format);
  if (mode.kind === "json") return items.map((i) => JSON.stringify(i) + "\n").join("");
  if (mode.kind === "raw") return items.map((i) => mode.template.execute(i) + "\n").join("");
  const tpl = mode.template;
  if (!tpl) return table([columns.map((c) => c[0]), ...items.map((i) => columns.map((c) => String(i[c[1]] ?? "")))]);
  const headerOf = (name: string) => columns.find((c) => c[1] === name)?.[0] ?? name.replace(/([a-z])([A-Z])/g, "$1 $2").toUpperCase();
  const header = new Template(tpl.source.replace(/\{\{\s*\.(\w+)\s*\}\}/g, (_m, f: string) => headerOf(f))).execute({});
  const lines = [header, ...items.map((i) => tpl.execute(i))];
  return table(lines.map((l) => l.split("\t")));
}
