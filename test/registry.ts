/**
 * Real registries for the image tests: Debian's docker-registry (distribution 2.8) on 127.0.0.1 with
 * plain HTTP, TLS (a CA the test makes), htpasswd basic auth, or bearer tokens from a token server
 * written here (RS256 JWTs with an x5c header, as distribution verifies them). Each start() gets a
 * free port and a private storage directory; stop() kills only the processes it started.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { request } from "node:http";
import { request as httpsRequest } from "node:https";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { tempDir } from "./helpers.js";

export const registryBinary = "/usr/bin/docker-registry";
export const haveRegistry = existsSync(registryBinary);
export const registrySkip = haveRegistry ? false : "needs Debian's docker-registry (npm test installs it as root)";
export const haveSkopeo = existsSync("/usr/bin/skopeo");
export const haveUmoci = existsSync("/usr/bin/umoci");

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = netServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

export interface RegistryOptions {
  tls?: boolean;
  htpasswd?: { user: string; password: string };
  token?: { user: string; password: string };
}

export interface TestRegistry {
  host: string; // 127.0.0.1:PORT
  dir: string;
  /** CA certificate (TLS registries): install under a BERTH_CONFIG_DIR's certs.d. */
  caCert?: string;
  /** The token server's record of the scopes it granted. */
  grants: string[];
  /** Requests the registry served, from the token server's view or a proxy. */
  stop(): Promise<void>;
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync("openssl", args, { cwd, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`openssl ${args.join(" ")}: ${r.stderr}`);
}

/**
 * A token server in distribution's style: basic credentials in, an RS256 JWT out. It runs in a child
 * process (test/token-server.ts): the tests call berth synchronously, which would block a server
 * in the test's own event loop. Grants are appended to <dir>/grants, one line each.
 */
async function tokenServer(dir: string, port: number, creds: { user: string; password: string }): Promise<ChildProcess> {
  const script = join(dirname(fileURLToPath(import.meta.url)), "token-server.js");
  const child = spawn(process.execPath, [script, dir, String(port), creds.user, creds.password], { stdio: ["ignore", "pipe", "inherit"] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once("data", () => resolve());
    child.once("exit", (c) => reject(new Error(`token server exited ${c}`)));
  });
  return child;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const dir = tempDir("berth-registry-");
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const lines = ["version: 0.1", "log:", "  level: error", "  accesslog:", "    disabled: true", "storage:", `  filesystem:`, `    rootdirectory: ${dir}/data`, "  delete:", "    enabled: true", "http:", `  addr: ${host}`, `  secret: ${randomBytes(8).toString("hex")}`];
  let caCert: string | undefined;
  if (opts.tls) {
    openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=berth test CA"], dir);
    writeFileSync(join(dir, "san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"], dir);
    openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext"], dir);
    lines.push("  tls:", `    certificate: ${dir}/server.crt`, `    key: ${dir}/server.key`);
    caCert = readFileSync(join(dir, "ca.crt"), "utf8");
  }
  if (opts.htpasswd) {
    const r = spawnSync("htpasswd", ["-Bbn", opts.htpasswd.user, opts.htpasswd.password], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`htpasswd: ${r.stderr}`);
    writeFileSync(join(dir, "htpasswd"), r.stdout);
    lines.push("auth:", "  htpasswd:", "    realm: berth-test", `    path: ${dir}/htpasswd`);
  }
  let tokens: ChildProcess | undefined;
  if (opts.token) {
    openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "token.key", "-out", "token.crt", "-days", "2", "-subj", "/CN=berth token issuer"], dir);
    const tport = await freePort();
    tokens = await tokenServer(dir, tport, opts.token);
    lines.push("auth:", "  token:", `    realm: http://127.0.0.1:${tport}/token`, "    service: berth-test-registry", "    issuer: berth-test-issuer", `    rootcertbundle: ${dir}/token.crt`);
  }
  mkdirSync(join(dir, "data"));
  writeFileSync(join(dir, "config.yml"), lines.join("\n") + "\n");
  const proc: ChildProcess = spawn(registryBinary, ["serve", join(dir, "config.yml")], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  proc.stderr!.on("data", (d) => (stderr += d));
  // wait until it answers
  const deadline = Date.now() + 15_000;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = (opts.tls ? httpsRequest : request)(`${opts.tls ? "https" : "http"}://${host}/v2/`, { rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on("error", () => resolve(false));
      req.end();
    });
    if (ok) break;
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`docker-registry did not start: ${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    host,
    dir,
    ...(caCert ? { caCert } : {}),
    get grants() {
      try {
        return readFileSync(join(dir, "grants"), "utf8").split("\n").filter(Boolean);
      } catch {
        return [];
      }
    },
    async stop() {
      if (proc.exitCode === null) {
        proc.kill("SIGTERM");
        await new Promise((r) => proc.once("exit", r));
      }
      if (tokens && tokens.exitCode === null) {
        tokens.kill("SIGTERM");
        await new Promise((r) => tokens!.once("exit", r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
