/**
 * RUN --mount=type=ssh: the build's SSH agents (`--ssh default`, `--ssh id=SOCKET|KEY…`) reached
 * from a RUN step through a socket of the builder's own, as BuildKit forwards them: the step sees
 * a socket owned by the mount's uid/gid with its mode, never the host's agent path, and it lives
 * only while the step runs. Key files are loaded into an `ssh-agent` started for the build.
 */
import * as fs from "node:fs";
import * as net from "node:net";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { join } from "../common/path.js";
import { invalid, notFound, BerthError } from "../common/errors.js";

export class SshForwarder {
  private readonly agents = new Map<string, string>();
  private readonly started: ChildProcess[] = [];
  private readonly dirs: string[] = [];

  /** sources: each id's sockets or key files (--ssh id=PATH[,PATH…]); tmp: where sockets are made. */
  constructor(
    private readonly sources: Record<string, string[]>,
    private readonly tmp: string,
  ) {}

  has(id: string): boolean {
    return id in this.sources;
  }

  /** The agent socket that serves an id: its socket, or an agent started for its key files. */
  private async agent(id: string): Promise<string> {
    const known = this.agents.get(id);
    if (known) return known;
    const paths = this.sources[id] ?? [];
    const sockets = paths.filter((p) => fs.statSync(p, { throwIfNoEntry: false })?.isSocket());
    let sock: string;
    if (sockets.length === paths.length && sockets.length === 1) sock = sockets[0]!;
    else if (sockets.length) throw invalid(`--ssh ${id}: give either one agent socket or key files, not both`);
    else sock = await this.keyAgent(id, paths);
    this.agents.set(id, sock);
    return sock;
  }

  /** An ssh-agent of the build's own holding the key files (ssh-add checks and loads them). */
  private async keyAgent(id: string, keys: string[]): Promise<string> {
    const dir = fs.mkdtempSync(join(this.tmp, "build-ssh-agent-"));
    this.dirs.push(dir);
    const sock = join(dir, "agent.sock");
    const agent = spawn("ssh-agent", ["-D", "-a", sock], { stdio: "ignore" });
    this.started.push(agent);
    const failed = new Promise<never>((_, reject) => agent.once("error", () => reject(notFound(`--ssh ${id}: key files need ssh-agent (Debian's openssh-client), which is not installed`))));
    for (let i = 0; !fs.existsSync(sock); i++) {
      if (i > 500 || agent.exitCode !== null) throw new BerthError("System", `--ssh ${id}: ssh-agent did not start`);
      await Promise.race([failed, new Promise((r) => setTimeout(r, 10))]);
    }
    for (const key of keys) {
      const r = spawnSync("ssh-add", ["-q", key], { env: { ...process.env, SSH_AUTH_SOCK: sock, SSH_ASKPASS: "", DISPLAY: "" }, stdio: ["ignore", "pipe", "pipe"], encoding: "utf8", timeout: 10_000 });
      if (r.status !== 0) throw invalid(`--ssh ${id}: cannot load ${key}: ${(r.stderr || r.error?.message || "ssh-add failed").trim()}`);
    }
    return sock;
  }

  /**
   * A socket for one step that relays each connection to the id's agent, owned and moded as the
   * mount asks; close() removes it.
   */
  async open(id: string, owner: { uid: number; gid: number; mode: number }): Promise<{ path: string; close: () => Promise<void> }> {
    const upstream = await this.agent(id);
    const dir = fs.mkdtempSync(join(this.tmp, "build-ssh-"));
    const path = join(dir, "agent.sock");
    const conns = new Set<net.Socket>();
    const server = net.createServer((c) => {
      const up = net.connect(upstream);
      conns.add(c).add(up);
      const end = () => {
        c.destroy();
        up.destroy();
        conns.delete(c);
        conns.delete(up);
      };
      c.on("error", end).on("close", end);
      up.on("error", end).on("close", end);
      c.pipe(up);
      up.pipe(c);
    });
    await new Promise<void>((resolve, reject) => server.once("error", reject).listen(path, resolve));
    fs.chmodSync(path, owner.mode);
    fs.chownSync(path, owner.uid, owner.gid);
    return {
      path,
      close: async () => {
        for (const c of conns) c.destroy();
        await new Promise<void>((r) => server.close(() => r()));
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  /** Stops the agents started for key files. */
  close(): void {
    for (const a of this.started) if (a.exitCode === null) a.kill("SIGTERM");
    for (const d of this.dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

/**
 * `--ssh` values: `default` (the caller's $SSH_AUTH_SOCK), `ID=PATH[,PATH…]` (a socket or key
 * files); `default` without a path and no agent running is an error, as with docker buildx.
 */
export function parseSshFlags(values: string[], env: NodeJS.ProcessEnv = process.env): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const v of values) {
    const eq = v.indexOf("=");
    const id = eq < 0 ? v : v.slice(0, eq);
    if (!id) throw invalid(`invalid --ssh ${v}: ID[=SOCKET|KEY[,KEY]]`);
    let paths = eq < 0 ? [] : v.slice(eq + 1).split(",").filter(Boolean);
    if (!paths.length) {
      if (!env.SSH_AUTH_SOCK) throw invalid(`--ssh ${v}: SSH_AUTH_SOCK is not set (start ssh-agent, or give ${id}=SOCKET or key files)`);
      paths = [env.SSH_AUTH_SOCK];
    }
    for (const p of paths) if (!fs.existsSync(p)) throw invalid(`--ssh ${v}: ${p} does not exist`);
    out[id] = paths.map((p) => (p.startsWith("/") ? p : join(process.cwd(), p)));
  }
  return out;
}
