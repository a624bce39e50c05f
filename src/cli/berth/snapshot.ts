/**
 * The entry of berth's V8 start-up snapshot (scripts/build-snapshot.sh): the command modules are
 * loaded and initialised when the snapshot is made, so a start deserialises them instead of
 * compiling and running them on every `berth run`. Nothing here may read the environment,
 * the clock or the file system at load time: that would be frozen into the snapshot.
 * The installed `berth` uses the snapshot only with the very node binary that made it.
 */
import { runMain } from "./main.js";
import { trace } from "../../common/trace.js";
import "./containers.js";
import "./system.js";
import "./network.js";
import "../../network/index.js";
import { warmSpare } from "../warm-spare.js";
import { prepareContainerHelper } from "../../engine/index.js";

declare global {
  var berthRun: (args?: string[]) => void;
  var berthWarmSpare: (listenFd: number) => void;
}

globalThis.berthRun = (args = process.argv.slice(2)) => {
  trace("main: entered");
  void runMain(args);
};

/** A warm process of `berth system warm` (scripts/warm-spare.cjs) waits for its command here. */
globalThis.berthWarmSpare = (listenFd) => {
  prepareContainerHelper(); // the helper's sealed copy made while waiting, not at the command's first container
  warmSpare(listenFd, (argv: string[]) => globalThis.berthRun(argv));
};
