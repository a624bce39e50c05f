/**
 * CNI networks: a network described by a conflist (CNI spec 0.4/1.0) and run by CNI plugins, so
 * users can bring any plugin. berth finds conflists in its own directory (network create -d cni)
 * and in /etc/cni/net.d; it runs each plugin for ADD in order (each gets the previous result) and
 * for DEL in reverse, with the container's network namespace, and passes published ports to
 * plugins that declare the portMappings capability (portmap).
 */
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { BerthError, invalid, notFound } from "../common/errors.js";

export interface CniConflist {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string; capabilities?: Record<string, boolean> }>;
  disableCheck?: boolean;
}

export interface CniResult {
  cniVersion?: string;
  interfaces?: Array<{ name: string; mac?: string; sandbox?: string }>;
  ips?: Array<{ address: string; gateway?: string; interface?: number; version?: string }>;
  routes?: unknown[];
  dns?: unknown;
}

export interface CniPortMapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

export const CNI_PATH = ["/usr/lib/cni", "/opt/cni/bin"];
const SYSTEM_DIR = "/etc/cni/net.d";

export function readConflist(file: string): CniConflist {
  let c: CniConflist;
  try {
    c = JSON.parse(fs.readFileSync(file, "utf8")) as CniConflist;
  } catch (e) {
    throw invalid(`${file}: not a CNI conflist (${(e as Error).message})`);
  }
  if (!c || typeof c.name !== "string" || !Array.isArray(c.plugins) || !c.plugins.length || c.plugins.some((p) => typeof p?.type !== "string"))
    throw invalid(`${file}: a CNI conflist needs "name" and "plugins" (each with a "type")`);
  c.cniVersion ??= "1.0.0";
  return c;
}

/** The conflists berth knows: its own (network create -d cni) first, then the system's. */
export function conflists(ownDir: string): Array<{ file: string; list: CniConflist }> {
  const out: Array<{ file: string; list: CniConflist }> = [];
  for (const dir of [ownDir, SYSTEM_DIR]) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir).filter((n) => n.endsWith(".conflist")).sort();
    } catch {
      // a configured CNI directory that does not exist: no networks there
      continue;
    }
    for (const n of names) {
      try {
        const list = readConflist(join(dir, n));
        if (!out.some((o) => o.list.name === list.name)) out.push({ file: join(dir, n), list });
      } catch {
        /* not ours to judge here: `network inspect` of it says what is wrong */
      }
    }
  }
  return out;
}

export function findConflist(ownDir: string, name: string): { file: string; list: CniConflist } | undefined {
  return conflists(ownDir).find((c) => c.list.name === name);
}

function pluginPath(type: string): string {
  if (!/^[\w.-]+$/.test(type)) throw invalid(`CNI plugin type ${JSON.stringify(type)} is not a plugin name`);
  for (const dir of (process.env.CNI_PATH?.split(":") ?? []).concat(CNI_PATH)) if (fs.existsSync(join(dir, type))) return join(dir, type);
  throw notFound(`CNI plugin ${type} not found in ${CNI_PATH.join(":")} (Debian: apt-get install containernetworking-plugins)`);
}

function invoke(command: "ADD" | "DEL", list: CniConflist, plugin: CniConflist["plugins"][number], args: { containerId: string; netns: string; ifname: string; prevResult?: CniResult; portMappings?: CniPortMapping[] }): Promise<CniResult | undefined> {
  const conf: Record<string, unknown> = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  if (args.prevResult) conf.prevResult = args.prevResult;
  if (plugin.capabilities?.portMappings && args.portMappings?.length) conf.runtimeConfig = { portMappings: args.portMappings };
  const env = { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: args.containerId, CNI_NETNS: args.netns, CNI_IFNAME: args.ifname, CNI_PATH: CNI_PATH.join(":") };
  return new Promise((resolve, reject) => {
    const p = spawn(pluginPath(plugin.type), [], { env, stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    let err = "";
    p.stdout!.on("data", (d) => (out += d));
    p.stderr!.on("data", (d) => (err += d));
    p.on("error", reject);
    p.on("close", (code) => {
      if (code === 0) return resolve(out.trim() ? (JSON.parse(out) as CniResult) : undefined);
      let msg = err.trim() || out.trim();
      try {
        const e = JSON.parse(out) as { msg?: string; details?: string };
        msg = [e.msg, e.details].filter(Boolean).join(": ");
      } catch {
        /* not the spec's error JSON */
      }
      reject(new BerthError("System", `CNI plugin ${plugin.type} (${command}) for network ${list.name}: ${msg || `exit ${code}`}`));
    });
    p.stdin!.end(JSON.stringify(conf));
  });
}

/** ADD: every plugin in order; on a failure, the ones that succeeded are deleted again. */
export async function cniAdd(list: CniConflist, args: { containerId: string; netns: string; ifname: string; portMappings?: CniPortMapping[] }): Promise<CniResult> {
  let prev: CniResult | undefined;
  const done: number[] = [];
  try {
    for (const [i, plugin] of list.plugins.entries()) {
      prev = (await invoke("ADD", list, plugin, { ...args, ...(prev ? { prevResult: prev } : {}) })) ?? prev;
      done.push(i);
    }
  } catch (e) {
    for (const i of done.reverse()) await invoke("DEL", list, list.plugins[i]!, { ...args, ...(prev ? { prevResult: prev } : {}) }).catch(() => {}); // undoing what was added: the ADD's error is the one reported
    throw e;
  }
  return prev ?? {};
}

/** DEL: every plugin in reverse order, each told the result of ADD; all are run even if one fails. */
export async function cniDel(list: CniConflist, args: { containerId: string; netns: string; ifname: string; prevResult?: CniResult; portMappings?: CniPortMapping[] }): Promise<void> {
  let first: unknown;
  for (const plugin of [...list.plugins].reverse()) await invoke("DEL", list, plugin, args).catch((e) => (first ??= e));
  if (first) throw first;
}
