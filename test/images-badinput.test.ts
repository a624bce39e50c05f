/**
 * Pulls from a misbehaving registry (a server written here, serving exactly the bytes each case
 * needs): wrong digests, corrupt and hostile layers, unknown media types, 404/500/HTML answers,
 * dropped connections (resumed with range requests), and berth killed mid-pull. Each time: a
 * clear error naming the image and the cause, exit code 1, and a store that stays consistent.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import * as fs from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { rootSkip } from "./helpers.js";
import { berthBundle, berthEnv, type BerthEnv } from "./image-helpers.js";
import { encodeHeader } from "../src/images/tar.js";

const sha = (b: Buffer | string) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

function tarOf(entries: Array<{ name: string; data?: string; type?: "file" | "symlink"; linkname?: string }>): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const d = Buffer.from(e.data ?? "");
    const type = e.type ?? "file";
    parts.push(encodeHeader({ name: e.name, type, size: type === "file" ? d.length : 0, mode: 0o644, linkname: e.linkname ?? "" }));
    if (type === "file") parts.push(d, Buffer.alloc((512 - (d.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

interface FakeImage {
  manifest: Buffer;
  blobs: Map<string, Buffer>;
}

function image(layerTar: Buffer, opts: { layerBytes?: Buffer; layerType?: string; diffId?: string } = {}): FakeImage {
  const layer = opts.layerBytes ?? gzipSync(layerTar);
  const config = Buffer.from(JSON.stringify({ architecture: "amd64", os: "linux", rootfs: { type: "layers", diff_ids: [opts.diffId ?? sha(layerTar)] }, config: {} }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(config), size: config.length },
      layers: [{ mediaType: opts.layerType ?? "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha(layer), size: layer.length }],
    }),
  );
  return { manifest, blobs: new Map([[sha(config), config], [sha(layer), layer]]) };
}

type Handler = (req: IncomingMessage, res: ServerResponse, fallback: () => void) => void;

/** A registry serving images by "repo:tag"; handler may intercept any request. */
async function fakeRegistry(images: Record<string, FakeImage>, handler?: Handler): Promise<{ host: string; requests: Array<{ url: string; range?: string }>; close: () => Promise<void> }> {
  const requests: Array<{ url: string; range?: string }> = [];
  const server = createServer((req, res) => {
    requests.push({ url: req.url ?? "", ...(req.headers.range ? { range: String(req.headers.range) } : {}) });
    const fallback = () => {
      const url = req.url ?? "";
      if (url === "/v2/") return void res.writeHead(200, { "content-type": "application/json" }).end("{}");
      const m = /^\/v2\/(.+)\/(manifests|blobs)\/(.+)$/.exec(url);
      if (!m) return void res.writeHead(404).end();
      const [, repo, kind, ref] = m;
      if (kind === "manifests") {
        const img = images[`${repo}:${ref}`] ?? Object.values(images).find((i) => sha(i.manifest) === ref);
        if (!img) return void res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ errors: [{ code: "MANIFEST_UNKNOWN", message: "manifest unknown" }] }));
        return void res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": sha(img.manifest) }).end(img.manifest);
      }
      const blob = Object.values(images)
        .map((i) => i.blobs.get(ref!))
        .find(Boolean);
      if (!blob) return void res.writeHead(404).end();
      const range = /^bytes=(\d+)-$/.exec(String(req.headers.range ?? ""));
      if (range) {
        const start = Number(range[1]);
        return void res.writeHead(206, { "content-length": blob.length - start, "content-range": `bytes ${start}-${blob.length - 1}/${blob.length}` }).end(blob.subarray(start));
      }
      res.writeHead(200, { "content-length": blob.length }).end(blob);
    };
    if (handler) handler(req, res, fallback);
    else fallback();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  return { host: `127.0.0.1:${port}`, requests, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) };
}

/** berth run asynchronously, so the in-process fake registry keeps serving. */
function berthAsync(env: BerthEnv, args: string[], onStdout?: (s: string, kill: () => void) => void): Promise<{ code: number | null; signal: string | null; stdout: string; stderr: string }> {
  const e: Record<string, string> = { ...(process.env as Record<string, string>), BERTH_ROOT: env.root, BERTH_CONFIG_DIR: env.configDir, DOCKER_CONFIG: env.dockerConfig };
  delete e.NODE_EXTRA_CA_CERTS;
  const child = spawn(process.execPath, [berthBundle, ...args], { env: e, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "",
    stderr = "";
  child.stdout.on("data", (d) => {
    stdout += d;
    onStdout?.(stdout, () => child.kill("SIGKILL"));
  });
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, stdout, stderr })));
}

/** The store holds no image, no snapshot and no temporary files. */
function assertClean(env: BerthEnv): void {
  const imagesJson = join(env.root, "images.json");
  if (fs.existsSync(imagesJson)) assert.deepEqual(JSON.parse(fs.readFileSync(imagesJson, "utf8")).images, {});
  const layers = join(env.root, "snapshots/overlay/layers");
  if (fs.existsSync(layers)) assert.deepEqual(fs.readdirSync(layers), [], "no layer snapshot, finished or not");
}

const good = tarOf([{ name: "hello", data: "world" }]);

describe("pulls from a misbehaving registry", { skip: rootSkip }, () => {
  const closers: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of closers) await c();
  });
  const serve = async (images: Record<string, FakeImage>, handler?: Handler) => {
    const r = await fakeRegistry(images, handler);
    closers.push(r.close);
    return r;
  };

  const cases: Array<[string, () => FakeImage | undefined, RegExp, Handler?]> = [
    ["an unknown repository (404)", () => undefined, /manifest for .*nothing\/here:latest not found: manifest_unknown/],
    ["a 500 from the registry", () => image(good), /received unexpected HTTP status: 500 Internal Server Error/, (req, res, fb) => (req.url?.includes("/manifests/") ? res.writeHead(500).end() : fb())],
    ["an HTML page instead of the API", () => image(good), /HTML page/, (_req, res) => res.writeHead(200, { "content-type": "text/html" }).end("<!doctype html><html><body>Welcome to nginx!</body></html>")],
    ["a manifest that does not match its digest", () => image(good), /does not match the digest/, (req, res, fb) => (req.url?.includes("/manifests/") ? res.writeHead(200, { "content-type": "application/vnd.oci.image.manifest.v1+json", "docker-content-digest": sha("other") }).end(image(good).manifest) : fb())],
    ["a layer whose bytes do not match its digest", () => image(good), /does not match its digest/, (req, res, fb) => {
        const real = gzipSync(good);
        if (!req.url?.endsWith(sha(real))) return fb();
        const tampered = Buffer.from(real);
        tampered[20] ^= 0x55; // same length, different bytes
        res.writeHead(200, { "content-length": tampered.length }).end(tampered);
      }],
    ["a truncated gzip layer", () => image(good, { layerBytes: gzipSync(good).subarray(0, 40) }), /failed to register layer .*(corrupt gzip|truncated|unexpected end)/i],
    ["a layer with ../ paths", () => image(tarOf([{ name: "../../../tmp/berth-escape", data: "x" }])), /failed to register layer .*leaves the layer root/],
    ["a layer writing through a symlink that points outside", () => image(tarOf([{ name: "out", type: "symlink", linkname: "/tmp" }, { name: "out/berth-escape", data: "x" }])), /failed to register layer .*symlink/],
    ["an unknown layer media type", () => image(good, { layerType: "application/x-berth-unknown" }), /unsupported layer media type "application\/x-berth-unknown"/],
    ["a layer that does not match its diff ID", () => image(good, { diffId: sha("not the layer") }), /does not match its diff ID/],
  ];
  for (const [what, make, why, handler] of cases)
    test(`${what}: a clear error, exit 1, nothing half-written`, async () => {
      const img = make();
      const reg = await serve(img ? { "bad/img:latest": img } : {}, handler);
      const env = berthEnv();
      const ref = img ? `${reg.host}/bad/img` : `${reg.host}/nothing/here`;
      const r = await berthAsync(env, ["pull", ref]);
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, why);
      assert.match(r.stderr, /^Error: /);
      assert.equal(r.stderr.trim().split("\n").length, 1, "one line");
      assert.ok(!fs.existsSync("/tmp/berth-escape"));
      assertClean(env);
      const images = await berthAsync(env, ["images", "-q"]);
      assert.equal(images.code, 0);
      assert.equal(images.stdout, "");
    });

  test("a dropped connection is resumed with a range request, not restarted", async () => {
    const big = tarOf([{ name: "big", data: "r".repeat(3 << 20) }]);
    const img = image(big, { layerBytes: big, layerType: "application/vnd.oci.image.layer.v1.tar" });
    const layerDigest = sha(big);
    let dropped = false;
    const reg = await serve({ "resume/img:latest": img }, (req, res, fb) => {
      if (!dropped && req.url?.endsWith(layerDigest)) {
        dropped = true;
        res.writeHead(200, { "content-length": big.length });
        res.write(big.subarray(0, 1 << 20), () => res.destroy());
        return;
      }
      fb();
    });
    const env = berthEnv();
    const r = await berthAsync(env, ["pull", `${reg.host}/resume/img`]);
    assert.equal(r.code, 0, r.stderr);
    const ranges = reg.requests.filter((q) => q.url.endsWith(layerDigest)).map((q) => q.range ?? "none");
    assert.equal(ranges[0], "none");
    assert.match(ranges[1] ?? "", /^bytes=\d+-$/);
    assert.ok(Number(/\d+/.exec(ranges[1]!)![0]) > 0, "resumed from where the data stopped");
  });

  test("berth killed mid-download: the store still reads, and the next pull resumes the partial blob", async () => {
    const big = tarOf([{ name: "big", data: "k".repeat(4 << 20) }]);
    const img = image(big, { layerBytes: big, layerType: "application/vnd.oci.image.layer.v1.tar" });
    const layerDigest = sha(big);
    let slow = true;
    const reg = await serve({ "kill/img:latest": img }, (req, res, fb) => {
      if (slow && req.url?.endsWith(layerDigest)) {
        // trickle the first megabyte, then stall: berth is killed meanwhile
        res.writeHead(200, { "content-length": big.length });
        let off = 0;
        const t = setInterval(() => {
          if (off >= 1 << 20 || res.destroyed) return clearInterval(t);
          res.write(big.subarray(off, off + 65536));
          off += 65536;
        }, 5);
        return;
      }
      fb();
    });
    const env = berthEnv();
    let killedAt = 0;
    const first = await berthAsync(env, ["pull", `${reg.host}/kill/img`], (_s, kill) => {
      if (killedAt) return;
      killedAt = Date.now();
      setTimeout(kill, 600);
    });
    assert.equal(first.signal, "SIGKILL");
    const list = await berthAsync(env, ["images", "--format", "{{.Repository}}"]);
    assert.equal(list.code, 0, list.stderr);
    assert.equal(list.stdout, "", "no half-pulled image is listed");
    slow = false;
    const second = await berthAsync(env, ["pull", `${reg.host}/kill/img`]);
    assert.equal(second.code, 0, second.stderr);
    const last = reg.requests.filter((q) => q.url.endsWith(layerDigest)).pop()!;
    assert.match(last.range ?? "", /^bytes=[1-9]\d*-$/, "the second berth resumed the first one's download");
    const after = await berthAsync(env, ["images", "--format", "{{.Repository}}"]);
    assert.equal(after.stdout.trim(), `${reg.host}/kill/img`);
  });
});
