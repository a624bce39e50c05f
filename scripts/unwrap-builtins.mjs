// esbuild turns each `import * as fs from "node:fs"` of the ESM sources into
// `__toESM(require("node:fs"))`: a new object per importing module, with a getter closure (and its
// context) for every export of the built-in — 26 copies of fs alone, ~2,600 closures, a third of
// berth's start-up snapshot and a getter call on every fs.x(); in the API server, copying them was
// hot enough at load to wake the optimizing compiler (~3 MB of RSS). Node's built-ins need no
// wrapper (berth never takes their `default`): the bundle requires them directly.
// With --ascii, what non-ASCII is left (comments: esbuild escapes strings) is escaped too, so V8
// holds the bundle's source one byte per character, not two (~0.9 MB less for the API server).
//   node scripts/unwrap-builtins.mjs [--ascii] BUNDLE...
import { readFileSync, writeFileSync } from "node:fs";
const args = process.argv.slice(2);
const ascii = args.includes("--ascii");
for (const file of args.filter((a) => a !== "--ascii")) {
  const text = readFileSync(file, "utf8");
  let out = text.replace(/__toESM\(require\("(node:[a-z_/]+)"\)(?:, ?1)?\)/g, 'require("$1")');
  if (ascii) out = out.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  if (out !== text) writeFileSync(file, out);
}
