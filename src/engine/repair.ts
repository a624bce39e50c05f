/**
 * `berth system repair`: finds and removes what commands killed half-way (kill -9, a crash, a power
 * loss) left in the store, each thing named as it goes. Safe beside running commands: only what
 * belongs to a dead process, or to a container with no record that no create is making, is taken.
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { removeFile } from "../common/sys.js";
import { unmountAsync } from "../images/index.js";
import { isReleaser } from "../network/index.js";
import { isMountpoint, type Engine } from "./engine.js";
import { sweepSteps } from "./buildstep.js";

export async function repair(engine: Engine, opts: { dryRun?: boolean } = {}): Promise<string[]> {
  const dry = !!opts.dryRun;
  const out: string[] = [];
  // the container store: names that point at nothing, creates and removals that never finished
  const containerLeftovers = engine.containers.leftovers();
  for (const l of containerLeftovers) {
    if (l.kind === "name") {
      out.push(`container name ${l.name} (it named no container)`);
      if (!dry) removeFile(l.path);
    } else if (l.kind === "file") {
      out.push(`temporary file ${l.path.slice(engine.root.length + 1)}`);
      if (!dry) removeFile(l.path);
    } else {
      out.push(`container ${l.id!.slice(0, 12)} (an unfinished ${l.kind})`);
      if (!dry) await engine.discardLeftover(l.id!, l.path);
    }
  }
  // snapshots no container owns, and the images' temporary files
  const removing = new Set(containerLeftovers.flatMap((l) => (l.id ? [l.id] : [])));
  out.push(...engine.images.cleanLeftovers({ dryRun: dry, orphan: (key) => /^[a-f0-9]{64}$/.test(key) && !engine.containers.known(key) && !(dry && removing.has(key)) }));
  // the step containers of builds that were killed
  for (const id of engine.containers.ids()) {
    const v = engine.containers.read(id);
    if (!v || !engine.orphanBuildStep(v.rec)) continue;
    out.push(`container ${id.slice(0, 12)} (a step of a build that was killed)`);
    if (!dry) await engine.remove(id, { force: true }).catch(() => {}); // repair goes on with the rest; what stays is listed again next time
  }
  // the runtime's containers of killed builds' steps (their snapshots went with the store's sweep above)
  out.push(...(await sweepSteps(engine, { dryRun: dry })));
  // stopped containers: a rootfs still mounted, addresses and ports still held
  for (const id of engine.containers.ids()) {
    if (engine.isActive(id)) continue;
    const rootfs = engine.containers.path(id, "rootfs");
    if (isMountpoint(rootfs)) {
      out.push(`mount of container ${id.slice(0, 12)}'s rootfs`);
      if (!dry) await unmountAsync(rootfs).catch(() => {}); // repair goes on with the rest; what stays is listed again next time
    }
  }
  if (fs.existsSync(join(engine.root, "network"))) {
    const doc = engine.network.store.read();
    const holders = new Set([...doc.endpoints.map((e) => e.Container), ...doc.ports.map((p) => p.Container)]);
    for (const c of holders) {
      if (isReleaser(c) || engine.isActive(c)) continue;
      out.push(`network addresses and ports held by ${c.slice(0, 12)} (not running)`);
      if (!dry) await engine.network.release(c).catch(() => {}); // repair goes on with the rest; what stays is listed again next time
    }
  }
  out.push(...engine.volumes.leftovers(dry));
  return out;
}
