/** The ids of build steps run without a container record (src/engine/buildstep.ts): `build-PID-HEX`. */
import { pidAlive } from "../images/content.js";

/** The builder whose step this is; undefined for any other id. */
export function stepBuilder(id: string): number | undefined {
  const m = /^build-(\d+)-[0-9a-f]+$/.exec(id);
  return m ? Number(m[1]) : undefined;
}

/** Whether an id is a step whose builder is gone (its leftovers are then repair's). */
export const orphanStep = (id: string): boolean => {
  const pid = stepBuilder(id);
  return pid !== undefined && !pidAlive(pid);
};
