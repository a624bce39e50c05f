// A node:test reporter that records the skipped tests and why (BERTH_SKIP_FILE, default
// dist/test-skips.json) for scripts/check-skips.mjs. It writes nothing to the terminal itself:
// the TAP reporter beside it does.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export default async function* skipReporter(source) {
  const skips = [];
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    const d = event.data;
    if (d.skip === undefined || d.skip === false) continue;
    skips.push({ name: d.name, file: d.file ?? "", reason: typeof d.skip === "string" ? d.skip : "" });
  }
  const file = process.env.BERTH_SKIP_FILE ?? "dist/test-skips.json";
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, JSON.stringify(skips, null, 1) + "\n");
}
