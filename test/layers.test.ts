/** The architecture holds: lower layers never import higher ones, and there are no import cycles. */
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { project } from "./helpers.js";

/** Rank of each top-level folder of src/: a module may import only its own rank or lower. */
const ranks: Record<string, number> = {
  common: 0,
  cgroups: 1,
  security: 1,
  runtime: 2,
  images: 3,
  network: 3,
  volumes: 3,
  build: 4,
  engine: 5,
  cli: 6,
  api: 6,
  "index.ts": 7,
};

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

const src = join(project, "src");
const files = sources(src);
const importsOf = (file: string): string[] =>
  [...readFileSync(file, "utf8").matchAll(/(?:^|\n)\s*(?:import|export)[^"';]*?from\s+["'](\.[^"']+)["']|import\(\s*["'](\.[^"']+)["']\s*\)/g)].map((m) =>
    resolve(dirname(file), (m[1] ?? m[2])!.replace(/\.js$/, ".ts")),
  );
const layerOf = (file: string) => relative(src, file).split("/")[0]!;

test("every folder of src/ has a rank", () => {
  for (const f of files) assert.ok(layerOf(f) in ranks, `${relative(project, f)}: folder ${layerOf(f)} has no rank in test/layers.test.ts`);
});

test("lower layers never import higher ones", () => {
  const bad: string[] = [];
  for (const f of files)
    for (const imp of importsOf(f))
      if (ranks[layerOf(imp)]! > ranks[layerOf(f)]!) bad.push(`${relative(src, f)} imports ${relative(src, imp)}`);
  assert.deepEqual(bad, []);
});

test("the front ends (the berth CLI, the API) use only the engine's public index and common/", () => {
  // one engine behind both: neither front end does engine work itself (src/cli/runtime is the
  // runtime's own command line, over src/runtime)
  const front = (f: string) => relative(src, f).startsWith("cli/berth/") || layerOf(f) === "api";
  const allowed = (imp: string) => {
    const rel = relative(src, imp);
    return rel === "engine/index.ts" || layerOf(imp) === "common" || layerOf(imp) === "cli" || layerOf(imp) === "api";
  };
  const bad: string[] = [];
  for (const f of files.filter(front)) for (const imp of importsOf(f)) if (!allowed(imp)) bad.push(`${relative(src, f)} imports ${relative(src, imp)}`);
  assert.deepEqual(bad, []);
});

test("no import cycles", () => {
  const graph = new Map(files.map((f) => [f, importsOf(f)]));
  const state = new Map<string, "visiting" | "done">();
  const cycles: string[] = [];
  const visit = (f: string, path: string[]) => {
    if (state.get(f) === "done") return;
    if (state.get(f) === "visiting") {
      cycles.push([...path.slice(path.indexOf(f)), f].map((p) => relative(src, p)).join(" → "));
      return;
    }
    state.set(f, "visiting");
    for (const d of graph.get(f) ?? []) visit(d, [...path, f]);
    state.set(f, "done");
  };
  for (const f of files) visit(f, []);
  assert.deepEqual(cycles, []);
});

test("the checker sees imports (it would catch a violation)", () => {
  const runtimeFiles = files.filter((f) => layerOf(f) === "runtime");
  assert.ok(runtimeFiles.some((f) => importsOf(f).some((i) => layerOf(i) === "cgroups")), "runtime imports cgroups");
});

test("the CLI's code has no dynamic import of a built-in module (it cannot run from berth's V8 start-up snapshot)", () => {
  const cli = files.filter((f) => !f.includes("/test/"));
  const bad = cli.filter((f) => /\bimport\(\s*["']node:/.test(readFileSync(f, "utf8").replace(/typeof import\("node:[a-z_/]+"\)|import\("node:[a-z_/]+"\)\./g, "")));
  assert.deepEqual(bad.map((f) => relative(src, f)), []);
});
