/** What /proc says of a process. */
import { readFileSync } from "node:fs";

/** A process's start time (clock ticks since boot: with the pid, it names one process) and whether it is a zombie; undefined when gone. */
export function processStartTime(pid: number): { start: number; zombie: boolean } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { start: Number(fields[19]), zombie: fields[0] === "Z" || fields[0] === "X" };
  } catch {
    // the process is gone (or its stat unreadable): no start time
    return undefined;
  }
}
