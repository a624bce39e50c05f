// esbuild turns each `import * as fs from "node:fs"` of the ESM sources into
// `__toESM(require("node:fs"))`: a new object per importing module, with a getter closure (and its
// context) for every export of the built-in — 26 copies of fs alone, ~2,600 closures, a third of
// berth's start-up snapshot and a getter call on every fs.x(). Node's built-ins need no wrapper
// (berth never takes their `default`): the bundle requires them directly.
//   node scripts/unwrap-builtins.mjs BUNDLE...
import { readFileSync, writeFileSync } from "node:fs";
for (const file of process.argv.slice(2)) {
  const text = readFileSync(file, "utf8");
  const out = text.replace(/__toESM\(require\("(node:[a-z_/]+)"\)(?:, ?1)?\)/g, 'require("$1")');
  if (out !== text) writeFileSync(file, out);
}
