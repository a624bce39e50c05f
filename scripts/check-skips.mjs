#!/usr/bin/env node
// After `npm test`: lists every skipped test with its reason, and fails when a reason is not one
// of the documented host limits below. A skip for a missing package, image or build step means
// the project's own scripts did not install something (npm test installs them as root): that is a
// failure, not a skip.
import { existsSync, readFileSync } from "node:fs";
import { basename } from "node:path";

const root = process.getuid?.() === 0;
/** Host limits a test may skip for: [pattern, when it is acceptable, why it is a limit of the host]. */
const hostLimits = [
  [/^needs root/, !root, "not running as root: the namespaces, mounts and cgroups need it"],
  [/^needs v1 blkio with BFQ/, true, "the host's disks do not use BFQ as their only scheduler"],
  [/^this host has AppArmor/, true, "the test is of a host without the LSM"],
  [/^this host already runs cgroup v2/, true, "the v2 guest exists for hosts that do not"],
  [/^the cgroup v2 guest is built for x86_64/, true, "the guest image is x86_64 only"],
  [/^BERTH_SKIP_VM is set/, true, "the user asked to skip the qemu guest"],
  [/^already inside the guest/, true, "the guest does not boot a guest"],
  [/not searchable by others/, true, "the checkout sits under a directory other users cannot enter"],
  [/^the kernel |^this kernel |^IPv6 is disabled/, true, "a kernel feature this host lacks"],
];

const file = process.argv[2] ?? process.env.BERTH_SKIP_FILE ?? "dist/test-skips.json";
if (!existsSync(file)) {
  console.log(`check-skips: ${file} is missing (the test run did not finish)`);
  process.exit(1);
}
const skips = JSON.parse(readFileSync(file, "utf8"));
let bad = 0;
console.log(`# skipped: ${skips.length}`);
for (const s of skips) {
  const limit = hostLimits.find(([re, ok]) => ok && re.test(s.reason));
  if (!limit) bad++;
  console.log(`# ${limit ? "skip (host limit)" : "SKIP NOT ALLOWED"}: ${basename(s.file)}: ${s.name}: ${s.reason || "(no reason given)"}`);
}
if (bad) {
  console.log(`# ${bad} test(s) skipped for a reason that is not a documented host limit (scripts/check-skips.mjs): install what they need, or fix the test`);
  process.exit(1);
}
