/**
 * berth: the docker-compatible command line. Commands load their modules on first use, so a
 * command pays only for what it runs. Errors print as one line; exit codes follow docker's: 125
 * for usage errors (and, with containers, for berth's own failures in run), 1 for a failed command.
 */
import { BerthError, ErrorCode, errorMessage } from "../../common/errors.js";
import { flagHelp } from "../flag-help.js";
import { formatFlags, parse, probeFlags, UsageError } from "../pflag.js";
import { Context } from "./context.js";
import { trace } from "../../common/trace.js";
import { exitNow } from "../../common/sys.js";

trace("main: loaded");

type Handler = (ctx: Context, argv: string[]) => Promise<number>;
const images = () => import("./images.js");
const containers = () => import("./containers.js");
const system = () => import("./system.js");
const network = () => import("./network.js");
const builds = () => import("./build.js");

const commands: Record<string, { usage: string; summary: string; run: () => Promise<Handler> }> = {
  build: { usage: "build [OPTIONS] PATH | URL | -", summary: "Build an image from a Dockerfile", run: async () => (await builds()).build },
  pull: { usage: "pull [OPTIONS] NAME[:TAG|@DIGEST]", summary: "Download an image from a registry", run: async () => (await images()).pull },
  push: { usage: "push [OPTIONS] NAME[:TAG]", summary: "Upload an image to a registry", run: async () => (await images()).push },
  images: { usage: "images [OPTIONS] [REPOSITORY[:TAG]]", summary: "List images", run: async () => (await images()).images },
  rmi: { usage: "rmi [OPTIONS] IMAGE [IMAGE...]", summary: "Remove one or more images", run: async () => (await images()).rmi },
  tag: { usage: "tag SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]", summary: "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE", run: async () => (await images()).tag },
  history: { usage: "history [OPTIONS] IMAGE", summary: "Show the history of an image", run: async () => (await images()).history },
  save: { usage: "save [OPTIONS] IMAGE [IMAGE...]", summary: "Save one or more images to a tar archive (streamed to STDOUT by default)", run: async () => (await images()).save },
  load: { usage: "load [OPTIONS]", summary: "Load an image from a tar archive or STDIN", run: async () => (await images()).load },
  import: { usage: "import [OPTIONS] file|- [REPOSITORY[:TAG]]", summary: "Import the contents from a tarball to create a filesystem image", run: async () => (await images()).importCmd },
  login: { usage: "login [OPTIONS] [SERVER]", summary: "Log in to a registry", run: async () => (await images()).login },
  logout: { usage: "logout [SERVER]", summary: "Log out from a registry", run: async () => (await images()).logout },
  inspect: { usage: "inspect [OPTIONS] NAME|ID [NAME|ID...]", summary: "Return low-level information on berth objects", run: async () => (await containers()).inspect },
  run: { usage: "run [OPTIONS] IMAGE [COMMAND] [ARG...]", summary: "Create and run a new container from an image", run: async () => (await containers()).run },
  create: { usage: "create [OPTIONS] IMAGE [COMMAND] [ARG...]", summary: "Create a new container", run: async () => (await containers()).create },
  start: { usage: "start [OPTIONS] CONTAINER [CONTAINER...]", summary: "Start one or more stopped containers", run: async () => (await containers()).start },
  stop: { usage: "stop [OPTIONS] CONTAINER [CONTAINER...]", summary: "Stop one or more running containers", run: async () => (await containers()).stop },
  restart: { usage: "restart [OPTIONS] CONTAINER [CONTAINER...]", summary: "Restart one or more containers", run: async () => (await containers()).restart },
  kill: { usage: "kill [OPTIONS] CONTAINER [CONTAINER...]", summary: "Kill one or more running containers", run: async () => (await containers()).kill },
  rm: { usage: "rm [OPTIONS] CONTAINER [CONTAINER...]", summary: "Remove one or more containers", run: async () => (await containers()).rm },
  ps: { usage: "ps [OPTIONS]", summary: "List containers", run: async () => (await containers()).ps },
  logs: { usage: "logs [OPTIONS] CONTAINER", summary: "Fetch the logs of a container", run: async () => (await containers()).logs },
  exec: { usage: "exec [OPTIONS] CONTAINER COMMAND [ARG...]", summary: "Execute a command in a running container", run: async () => (await containers()).exec },
  wait: { usage: "wait CONTAINER [CONTAINER...]", summary: "Block until one or more containers stop, then print their exit codes", run: async () => (await containers()).wait },
  export: { usage: "export [OPTIONS] CONTAINER", summary: "Export a container's filesystem as a tar archive", run: async () => (await containers()).exportCmd },
  commit: { usage: "commit [OPTIONS] CONTAINER [REPOSITORY[:TAG]]", summary: "Create a new image from a container's changes", run: async () => (await containers()).commit },
  pause: { usage: "pause CONTAINER [CONTAINER...]", summary: "Pause all processes within one or more containers", run: async () => (await containers()).pauseCmd },
  unpause: { usage: "unpause CONTAINER [CONTAINER...]", summary: "Unpause all processes within one or more containers", run: async () => (await containers()).unpauseCmd },
  top: { usage: "top CONTAINER [ps OPTIONS]", summary: "Display the running processes of a container", run: async () => (await containers()).top },
  rename: { usage: "rename CONTAINER NEW_NAME", summary: "Rename a container", run: async () => (await containers()).rename },
  version: { usage: "version", summary: "Show the berth version information", run: async () => version },
  attach: { usage: "attach [OPTIONS] CONTAINER", summary: "Attach local standard input, output, and error streams to a running container", run: async () => (await containers()).attach },
  doctor: { usage: "doctor", summary: "Check this host for what berth needs, and say how to fix what is missing", run: async () => (await import("./doctor.js")).doctor },
  cp: { usage: "cp [OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n        berth cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH", summary: "Copy files/folders between a container and the local filesystem", run: async () => (await containers()).cp },
  diff: { usage: "diff CONTAINER", summary: "Inspect changes to files or directories on a container's filesystem", run: async () => (await system()).diff },
  update: { usage: "update [OPTIONS] CONTAINER [CONTAINER...]", summary: "Update configuration of one or more containers", run: async () => (await system()).update },
  stats: { usage: "stats [OPTIONS] [CONTAINER...]", summary: "Display a live stream of container(s) resource usage statistics", run: async () => (await system()).stats },
  port: { usage: "port CONTAINER [PRIVATE_PORT[/PROTO]]", summary: "List port mappings or a specific mapping for the container", run: async () => (await system()).port },
  events: { usage: "events [OPTIONS]", summary: "Get real time events from berth", run: async () => (await system()).events },
  info: { usage: "info [OPTIONS]", summary: "Display system-wide information", run: async () => (await system()).info },
};

/** `berth image ls` and friends map onto the top-level commands, as in docker. */
const groups: Record<string, Record<string, string | { usage: string; run: () => Promise<Handler> }>> = {
  image: {
    ls: "images",
    list: "images",
    pull: "pull",
    push: "push",
    rm: "rmi",
    remove: "rmi",
    tag: "tag",
    history: "history",
    save: "save",
    load: "load",
    import: "import",
    build: "build",
    inspect: { usage: "image inspect [OPTIONS] IMAGE [IMAGE...]", run: async () => (await images()).imageInspect },
    prune: { usage: "image prune [OPTIONS]", run: async () => (await images()).imagePrune },
  },
  builder: {
    build: "build",
    prune: { usage: "builder prune [OPTIONS]", run: async () => (await builds()).builderPrune },
    du: { usage: "builder du [OPTIONS]", run: async () => (await builds()).builderDu },
  },
  system: {
    df: { usage: "system df [OPTIONS]", run: async () => (await images()).systemDf },
    info: "info",
    events: "events",
    prune: { usage: "system prune [OPTIONS]", run: async () => (await system()).systemPrune },
    repair: { usage: "system repair [OPTIONS]", run: async () => (await system()).systemRepair },
    service: { usage: "system service [OPTIONS] [URI]", run: async () => (await system()).systemService },
    warm: { usage: "system warm [OPTIONS]", run: async () => (await import("./warm.js")).systemWarm },
  },
  volume: {
    create: { usage: "volume create [OPTIONS] [VOLUME]", run: async () => (await system()).volumeCreate },
    ls: { usage: "volume ls [OPTIONS]", run: async () => (await system()).volumeLs },
    list: { usage: "volume ls [OPTIONS]", run: async () => (await system()).volumeLs },
    inspect: { usage: "volume inspect [OPTIONS] VOLUME [VOLUME...]", run: async () => (await system()).volumeInspect },
    rm: { usage: "volume rm [OPTIONS] VOLUME [VOLUME...]", run: async () => (await system()).volumeRm },
    remove: { usage: "volume rm [OPTIONS] VOLUME [VOLUME...]", run: async () => (await system()).volumeRm },
    prune: { usage: "volume prune [OPTIONS]", run: async () => (await system()).volumePrune },
  },
  network: {
    create: { usage: "network create [OPTIONS] NETWORK", run: async () => (await network()).create },
    ls: { usage: "network ls [OPTIONS]", run: async () => (await network()).ls },
    list: { usage: "network ls [OPTIONS]", run: async () => (await network()).ls },
    inspect: { usage: "network inspect [OPTIONS] NETWORK [NETWORK...]", run: async () => (await network()).inspect },
    rm: { usage: "network rm NETWORK [NETWORK...]", run: async () => (await network()).rm },
    remove: { usage: "network rm NETWORK [NETWORK...]", run: async () => (await network()).rm },
    prune: { usage: "network prune [OPTIONS]", run: async () => (await network()).prune },
    connect: { usage: "network connect [OPTIONS] NETWORK CONTAINER", run: async () => (await network()).connect },
    disconnect: { usage: "network disconnect [OPTIONS] NETWORK CONTAINER", run: async () => (await network()).disconnect },
  },
  container: {
    ls: "ps",
    list: "ps",
    ps: "ps",
    run: "run",
    create: "create",
    start: "start",
    stop: "stop",
    restart: "restart",
    kill: "kill",
    rm: "rm",
    remove: "rm",
    logs: "logs",
    exec: "exec",
    wait: "wait",
    export: "export",
    commit: "commit",
    pause: "pause",
    unpause: "unpause",
    top: "top",
    rename: "rename",
    inspect: "inspect",
    diff: "diff",
    cp: "cp",
    attach: "attach",
    update: "update",
    stats: "stats",
    port: "port",
    prune: { usage: "container prune [OPTIONS]", run: async () => (await containers()).containerPrune },
  },
};

const VERSION = "0.1.0";

declare global {
  /** Set when berth starts from its V8 start-up snapshot (scripts/snapshot-entry.cjs). */
  var berthSnapshot: { trained: boolean } | undefined;
}

/** How this berth started: from the snapshot (trained or not), or from the bundle. */
function startup(): string {
  if (globalThis.berthStart === "warm") return "warm process (berth system warm)";
  const s = globalThis.berthSnapshot;
  if (s) return s.trained ? "snapshot (trained)" : "snapshot (untrained: ./install.sh trains it)";
  return "bundle (no start-up snapshot for this node: ./install.sh makes one)";
}

async function version(_ctx: Context, argv: string[]): Promise<number> {
  parse(argv, [], "version");
  process.stdout.write(`Client:\n Version:           ${VERSION}\n API version:       1.41\n Node version:      ${process.version}\n OS/Arch:           linux/${process.arch === "x64" ? "amd64" : process.arch}\n Start-up:          ${startup()}\n`);
  return 0;
}

function help(): string {
  const rows = Object.entries(commands).map(([n, c]) => `  ${n.padEnd(10)} ${c.summary}`);
  return `\nUsage:  berth [OPTIONS] COMMAND\n\nA container engine, daemonless and docker-compatible\n\nOptions:\n      --root string   Root of berth's store (default "/var/lib/berth", or $BERTH_ROOT)\n  -D, --debug         Print stack traces with errors\n  -v, --version       Print version information and quit\n\nManagement Commands:\n  container   Manage containers\n  image       Manage images\n  system      Manage berth\n  volume      Manage volumes\n\nCommands:\n${rows.join("\n")}\n\nRun 'berth COMMAND --help' for more information on a command.\n`;
}

export async function main(argv: string[]): Promise<number> {
  let ctx = new Context({});
  let cmdName = "";
  try {
    const global = parse(
      argv,
      [
        { long: "root", kind: "string" },
        { long: "debug", short: "D", kind: "bool" },
        { long: "version", short: "v", kind: "bool" },
        { long: "help", short: "h", kind: "bool" },
        { long: "log-level", short: "l", kind: "string" },
      ],
      "",
      { interspersed: false },
    );
    ctx = new Context({ ...(typeof global.flags.root === "string" ? { root: global.flags.root } : {}), debug: !!global.flags.debug });
    if (global.flags.version) {
      process.stdout.write(`berth version ${VERSION}\n`);
      return 0;
    }
    const [name, ...rest] = global.args;
    if (!name || global.flags.help) {
      process.stdout.write(help());
      return 0;
    }
    let handler: Handler | undefined;
    let usage = "";
    let args = rest;
    if (groups[name]) {
      const [sub, ...subArgs] = rest;
      const entry = sub ? groups[name]![sub] : undefined;
      cmdName = `${name} ${sub ?? ""}`.trim();
      if (!entry) {
        process.stdout.write(`\nUsage:  berth ${name} COMMAND\n\nCommands:\n${Object.keys(groups[name]!).map((s) => `  ${s}`).join("\n")}\n\nRun 'berth ${name} COMMAND --help' for more information on a command.\n`);
        if (sub && sub !== "--help" && sub !== "-h") throw new UsageError(`unknown command "${sub}" for "berth ${name}"`, name);
        return 0;
      }
      args = subArgs;
      if (typeof entry === "string") {
        usage = commands[entry]!.usage;
        handler = await commands[entry]!.run();
      } else {
        usage = entry.usage;
        handler = await entry.run();
      }
    } else if (name === "internal-exited") {
      return await (await containers()).internalExited(ctx, rest);
    } else if (name === "internal-dns") {
      await ctx.engine().network.serveDnsHere();
      return 0;
    } else if (name === "internal-health") {
      return await (await containers()).internalHealth(ctx, rest);
    } else if (commands[name]) {
      cmdName = name;
      usage = commands[name]!.usage;
      handler = await commands[name]!.run();
    } else throw new UsageError(`'${name}' is not a berth command.`, "");
    // --help is berth's only before the first argument that is not a flag (`run img cmd --help` is the command's)
    const firstArg = args.findIndex((a) => !a.startsWith("-"));
    const ours = firstArg < 0 ? args : args.slice(0, firstArg);
    // (for run and create, as in docker, -h is --hostname)
    const hIsHostname = cmdName === "run" || cmdName === "create" || cmdName === "container run" || cmdName === "container create";
    if (ours.includes("--help") || (!hIsHostname && ours.includes("-h"))) {
      // the command's flags, from its own parse (which answers at once, running nothing)
      const flags = await probeFlags(() => handler(ctx, []));
      const summary = commands[cmdName]?.summary ?? (typeof groups[name]?.[cmdName.split(" ")[1] ?? ""] === "string" ? commands[groups[name]![cmdName.split(" ")[1]!] as string]?.summary : undefined);
      const options = flags?.length ? `\nOptions:\n${formatFlags(flags, flagHelp)}\n` : "";
      process.stdout.write(`\nUsage:  berth ${usage}\n${summary ? `\n${summary}\n` : ""}${options}`);
      return 0;
    }
    ctx.command = cmdName;
    return await handler(ctx, args);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`berth: ${e.message}\nSee 'berth ${e.command || cmdName}${e.command || cmdName ? " " : ""}--help'.\n`.replace("berth --help", "berth --help"));
      return exitStatus[e.code]!;
    }
    if (e instanceof BerthError) {
      ctx.error(e);
      return exitStatus[e.code] ?? 1;
    }
    process.stderr.write(`Error: ${errorMessage(e)}\n`);
    if (ctx.opts.debug && e instanceof Error) process.stderr.write(`${e.stack}\n`);
    return 1;
  }
}

/**
 * Exit statuses by error code, as docker's: run, create and exec exit 125 when the failure is the
 * engine's, 126/127 when the container's command cannot run; anything else 1.
 */
const exitStatus: Record<string, number> = {
  [ErrorCode.USAGE]: 125,
  [ErrorCode.RUN_FAILED]: 125,
  [ErrorCode.COMMAND_NOT_FOUND]: 127,
  [ErrorCode.COMMAND_NOT_EXECUTABLE]: 126,
};

/** The command's whole life: run argv, exit with the code once stdout has drained (keep-alive
 * sockets and an open stdin must not hold the process), or print the error and exit 1. */
export function runMain(argv: string[]): void {
  main(argv).then(
    (code) => {
      process.exitCode = code;
      process.stdout.write("", () => exitNow(code));
    },
    (e) => {
      process.stderr.write(`Error: ${errorMessage(e)}\n`);
      process.stdout.write("", () => exitNow(1));
    },
  );
}
