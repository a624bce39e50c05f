/**
 * The test token server (run as a child process by test/registry.ts): distribution's token auth,
 * basic credentials in, an RS256 JWT with an x5c header out. Anonymous callers get pull on
 * "public/" repositories only; the one user gets every action asked for. Prints "ready".
 */
import { createServer } from "node:http";
import { appendFileSync, readFileSync } from "node:fs";
import { createSign, randomBytes } from "node:crypto";
import { join } from "node:path";

const [dir, portText, user, password] = process.argv.slice(2) as [string, string, string, string];
// `node --test dist/test/` loads every file here: only serve when started with arguments
if (password !== undefined) serve();

function serve(): void {
const port = Number(portText);
const key = readFileSync(join(dir, "token.key"), "utf8");
const certDer = readFileSync(join(dir, "token.crt"), "utf8")
  .replace(/-----[^-]+-----/g, "")
  .replace(/\s+/g, "");
const b64url = (b: Buffer | string) => Buffer.from(b).toString("base64url");

createServer((req, res) => {
  const u = new URL(req.url ?? "/", `http://127.0.0.1:${port}`);
  const auth = req.headers.authorization;
  const basic = auth?.startsWith("Basic ") ? Buffer.from(auth.slice(6), "base64").toString() : undefined;
  const authed = basic === `${user}:${password}`;
  if (basic !== undefined && !authed) {
    res.writeHead(401, { "content-type": "application/json" }).end('{"details":"incorrect username or password"}');
    return;
  }
  const access = u.searchParams.getAll("scope").flatMap((s) => {
    const [type, name, actions] = s.split(":");
    const allowed = (actions ?? "").split(",").filter((a) => authed || (name!.startsWith("public/") && a === "pull"));
    return allowed.length ? [{ type, name, actions: allowed }] : [];
  });
  for (const a of access) appendFileSync(join(dir, "grants"), `${authed ? user : "anonymous"} ${a.name}:${a.actions.join(",")}\n`);
  const now = Math.floor(Date.now() / 1000);
  const header = { alg: "RS256", typ: "JWT", x5c: [certDer] };
  const claims = { iss: "berth-test-issuer", sub: authed ? user : "", aud: "berth-test-registry", exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString("hex"), access };
  const body = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const sig = createSign("RSA-SHA256").update(body).sign(key);
  res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ token: `${body}.${b64url(sig)}`, expires_in: 300 }));
}).listen(port, "127.0.0.1", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => process.exit(0));
}
