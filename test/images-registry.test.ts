/**
 * berth against real registries and real peers: Debian's docker-registry (plain HTTP, TLS with a
 * test CA, htpasswd, bearer tokens from a token server), images made by umoci and pushed by skopeo,
 * berth's archives read by skopeo and skopeo's loaded by berth, a multi-arch index.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { rootSkip, tempDir } from "./helpers.js";
import { berth, berthEnv, ok, runImage, sh, umociLayout, type BerthEnv } from "./image-helpers.js";
import { haveSkopeo, haveUmoci, registrySkip, startRegistry, type TestRegistry } from "./registry.js";

const skip = rootSkip || registrySkip || (!haveSkopeo || !haveUmoci ? "needs skopeo and umoci (npm test installs them as root)" : false);
const skopeo = (...args: string[]) => sh("skopeo", ["--insecure-policy", ...args]);

describe("pull and push: plain HTTP registry on loopback", { skip }, () => {
  let reg: TestRegistry;
  let env: BerthEnv;
  let layout: string;
  before(async () => {
    reg = await startRegistry();
    env = berthEnv();
    layout = umociLayout("from-umoci");
    skopeo("copy", "-q", "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${reg.host}/umoci/busybox:v1`);
  });
  after(async () => {
    await reg?.stop();
  });

  test("an image pushed by skopeo (layers by umoci) is pulled, listed and runs", () => {
    const r = ok(berth(env, ["pull", `${reg.host}/umoci/busybox:v1`]));
    assert.match(r.stdout, /^v1: Pulling from .*umoci\/busybox$/m);
    assert.match(r.stdout, /: Pull complete$/m);
    assert.match(r.stdout, /^Digest: sha256:[a-f0-9]{64}$/m);
    assert.match(r.stdout, new RegExp(`^Status: Downloaded newer image for ${reg.host}/umoci/busybox:v1$`, "m"));
    const digest = /^Digest: (\S+)$/m.exec(r.stdout)![1]!;
    const remote = JSON.parse(skopeo("inspect", "--tls-verify=false", `docker://${reg.host}/umoci/busybox:v1`));
    assert.equal(digest, remote.Digest, "the digest berth prints is the registry's");
    const images = ok(berth(env, ["images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}"])).stdout;
    assert.ok(images.includes(`${reg.host}/umoci/busybox v1 ${digest}`), images);
    const run = runImage(env, `${reg.host}/umoci/busybox:v1`, ["/bin/cat", "/etc/marker"]);
    assert.equal(run.stdout, "from-umoci");
    const env1 = ok(berth(env, ["image", "inspect", "-f", "{{json .Config.Env}} {{.Config.Cmd}}", `${reg.host}/umoci/busybox:v1`])).stdout;
    assert.match(env1, /MARKER=from-umoci/);
  });

  test("pulling again transfers no blob and says the image is up to date", () => {
    const before = fs.readdirSync(join(env.root, "content/blobs/sha256")).length;
    const r = ok(berth(env, ["pull", `${reg.host}/umoci/busybox:v1`]));
    assert.match(r.stdout, /Status: Image is up to date/);
    assert.doesNotMatch(r.stdout, /Pulling fs layer|Download complete/);
    assert.equal(fs.readdirSync(join(env.root, "content/blobs/sha256")).length, before);
  });

  test("pull --all-tags: every tag the registry lists (docker's output for each, then the repository); a tag with -a refused", () => {
    for (const t of ["v2", "v3"]) skopeo("copy", "-q", "--src-tls-verify=false", "--dest-tls-verify=false", `docker://${reg.host}/umoci/busybox:v1`, `docker://${reg.host}/umoci/busybox:${t}`);
    const fresh = berthEnv();
    const r = ok(berth(fresh, ["pull", "--all-tags", `${reg.host}/umoci/busybox`]));
    for (const t of ["v1", "v2", "v3"]) assert.match(r.stdout, new RegExp(`^${t}: Pulling from .*umoci/busybox$`, "m"));
    assert.match(r.stdout, new RegExp(`\n${reg.host}/umoci/busybox\n$`), "the repository, last");
    const tags = ok(berth(fresh, ["images", "--format", "{{.Tag}}", `${reg.host}/umoci/busybox`])).stdout.trim().split("\n").sort();
    assert.deepEqual(tags, ["v1", "v2", "v3"]);
    const bad = berth(fresh, ["pull", "-a", `${reg.host}/umoci/busybox:v1`]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /tag can't be used with --all-tags\/-a/);
  });

  test("pull by digest; tag; push to another repository mounts blobs; skopeo reads what berth pushed", () => {
    const remote = JSON.parse(skopeo("inspect", "--tls-verify=false", `docker://${reg.host}/umoci/busybox:v1`));
    ok(berth(env, ["pull", `${reg.host}/umoci/busybox@${remote.Digest}`]));
    ok(berth(env, ["tag", `${reg.host}/umoci/busybox:v1`, `${reg.host}/mirror/busybox:copy`]));
    const p = ok(berth(env, ["push", `${reg.host}/mirror/busybox:copy`]));
    assert.match(p.stdout, new RegExp(`^The push refers to repository \\[${reg.host}/mirror/busybox\\]$`, "m"));
    assert.match(p.stdout, /Mounted from .*umoci\/busybox/, "layers mounted from the repository they came from");
    assert.match(p.stdout, /^copy: digest: sha256:[a-f0-9]{64} size: \d+$/m);
    const copy = JSON.parse(skopeo("inspect", "--tls-verify=false", `docker://${reg.host}/mirror/busybox:copy`));
    assert.equal(copy.Digest, remote.Digest, "the same manifest bytes");
    // skopeo fetches and verifies every blob berth pushed
    const out = join(tempDir("berth-img-"), "oci");
    skopeo("copy", "-q", "--src-tls-verify=false", `docker://${reg.host}/mirror/busybox:copy`, `oci:${out}:x`);
    fs.rmSync(out, { recursive: true, force: true });
  });

  test("a freshly imported image is pushed with uploads (no mount source) and pulled back elsewhere", () => {
    const tarball = join(tempDir("berth-img-"), "rootfs.tar");
    sh("tar", ["-C", join(process.cwd(), "build/fixtures/busybox/rootfs"), "-cf", tarball, "."]);
    ok(berth(env, ["import", "-c", "CMD [\"/bin/sh\"]", tarball, `${reg.host}/fresh/img:1`]));
    const p = ok(berth(env, ["push", `${reg.host}/fresh/img:1`]));
    assert.match(p.stdout, /: Pushed$/m);
    const other = berthEnv();
    ok(berth(other, ["pull", `${reg.host}/fresh/img:1`]));
    assert.equal(runImage(other, `${reg.host}/fresh/img:1`, ["/bin/cat", "/etc/hostname"]).stdout.trim(), "berth");
  });

  test("large layers go up in chunks (PATCH) and come back intact", () => {
    const src = tempDir("berth-img-");
    fs.mkdirSync(join(src, "data"));
    // incompressible bytes: a layer bigger than one 32 MiB chunk
    const fd = fs.openSync(join(src, "data/blob"), "w");
    for (let i = 0; i < 40; i++) fs.writeSync(fd, Buffer.from(Array.from({ length: 1 << 20 }, (_x, j) => (j * 2654435761 + i * 40503) >>> 24)));
    fs.closeSync(fd);
    const tarball = join(src, "l.tar");
    sh("tar", ["-C", src, "-cf", tarball, "data"]);
    ok(berth(env, ["import", tarball, `${reg.host}/big/img:1`]));
    ok(berth(env, ["push", `${reg.host}/big/img:1`]));
    const other = berthEnv();
    ok(berth(other, ["pull", `${reg.host}/big/img:1`]));
    const back = berth(other, ["save", `${reg.host}/big/img:1`, "-o", join(src, "saved.tar")]);
    ok(back);
    assert.ok(fs.statSync(join(src, "saved.tar")).size > 40 << 20);
  });

  test("archives: berth save read by skopeo, skopeo's archives loaded by berth", () => {
    const dir = tempDir("berth-img-");
    const name = `${reg.host}/umoci/busybox:v1`;
    ok(berth(env, ["save", "-o", join(dir, "docker.tar"), name]));
    const d = JSON.parse(skopeo("inspect", `docker-archive:${join(dir, "docker.tar")}`));
    assert.equal(d.RepoTags?.[0] ?? d.Name, d.RepoTags?.[0] ?? d.Name);
    skopeo("copy", "-q", `docker-archive:${join(dir, "docker.tar")}`, `oci:${join(dir, "from-docker")}:x`);
    ok(berth(env, ["save", "--format", "oci-archive", "-o", join(dir, "oci.tar"), name]));
    const o = JSON.parse(skopeo("inspect", `oci-archive:${join(dir, "oci.tar")}`));
    assert.equal(o.Layers.length, d.Layers.length);
    skopeo("copy", "-q", `oci-archive:${join(dir, "oci.tar")}`, `oci:${join(dir, "from-oci")}:x`);
    // the other direction: skopeo writes both kinds, berth loads them into a fresh store
    const fresh = berthEnv();
    skopeo("copy", "-q", `oci:${layout}:latest`, `docker-archive:${join(dir, "skopeo-docker.tar")}:loaded/by-docker:v2`);
    const l1 = ok(berth(fresh, ["load", "-i", join(dir, "skopeo-docker.tar")]));
    assert.match(l1.stdout, /^Loaded image: loaded\/by-docker:v2$/m);
    assert.equal(runImage(fresh, "loaded/by-docker:v2", ["/bin/cat", "/etc/marker"]).stdout, "from-umoci");
    skopeo("copy", "-q", `oci:${layout}:latest`, `oci-archive:${join(dir, "skopeo-oci.tar")}:loaded/by-oci:v3`);
    const l2 = ok(berth(fresh, ["load"], { input: fs.readFileSync(join(dir, "skopeo-oci.tar")) }));
    assert.match(l2.stdout, /^Loaded image( ID)?: /m);
    // berth's own archive round-trips into a fresh store, names included
    const third = berthEnv();
    const l3 = ok(berth(third, ["load", "-i", join(dir, "docker.tar")]));
    assert.match(l3.stdout, new RegExp(`Loaded image: ${name}`));
    assert.equal(runImage(third, name, ["/bin/cat", "/etc/marker"]).stdout, "from-umoci");
  });
});

describe("registry authentication and TLS", { skip }, () => {
  let layout: string;
  before(() => {
    layout = umociLayout("auth");
  });

  test("TLS with a CA in certs.d; a wrong CA is refused naming the certificate problem", async () => {
    const reg = await startRegistry({ tls: true });
    try {
      skopeo("copy", "-q", "--dest-tls-verify=false", `oci:${layout}:latest`, `docker://${reg.host}/tls/img:1`);
      const env = berthEnv();
      fs.mkdirSync(join(env.configDir, "certs.d", reg.host), { recursive: true });
      fs.writeFileSync(join(env.configDir, "certs.d", reg.host, "ca.crt"), reg.caCert!);
      ok(berth(env, ["pull", `${reg.host}/tls/img:1`]));
      const wrong = berthEnv();
      const other = await startRegistry({ tls: true });
      fs.mkdirSync(join(wrong.configDir, "certs.d", reg.host), { recursive: true });
      fs.writeFileSync(join(wrong.configDir, "certs.d", reg.host, "ca.crt"), other.caCert!);
      await other.stop();
      const r = berth(wrong, ["pull", `${reg.host}/tls/img:1`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /certificate/i);
      assert.deepEqual(fs.readdirSync(join(wrong.root, "content/blobs/sha256")), []);
    } finally {
      await reg.stop();
    }
  });

  test("htpasswd basic auth: refused anonymously, login checks the password, credentials in docker's config.json", async () => {
    const creds = { user: "alice", password: "s3cret" };
    const reg = await startRegistry({ htpasswd: creds });
    try {
      skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret", `oci:${layout}:latest`, `docker://${reg.host}/private/img:1`);
      const env = berthEnv();
      const anon = berth(env, ["pull", `${reg.host}/private/img:1`]);
      assert.equal(anon.code, 1);
      assert.match(anon.stderr, /requires authentication|login/);
      const bad = berth(env, ["login", "-u", "alice", "--password-stdin", reg.host], { input: "wrong\n" });
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /unauthorized|incorrect/);
      assert.ok(!fs.existsSync(join(env.dockerConfig, "config.json")), "a failed login writes nothing");
      const good = ok(berth(env, ["login", "-u", "alice", "--password-stdin", reg.host], { input: "s3cret\n" }));
      assert.match(good.stdout, /Login Succeeded/);
      const cfg = JSON.parse(fs.readFileSync(join(env.dockerConfig, "config.json"), "utf8"));
      assert.equal(Buffer.from(cfg.auths[reg.host].auth, "base64").toString(), "alice:s3cret");
      ok(berth(env, ["pull", `${reg.host}/private/img:1`]));
      ok(berth(env, ["tag", `${reg.host}/private/img:1`, `${reg.host}/private/img:2`]));
      ok(berth(env, ["push", `${reg.host}/private/img:2`]));
      assert.match(ok(berth(env, ["logout", reg.host])).stdout, new RegExp(`Removing login credentials for ${reg.host}`));
      assert.match(ok(berth(env, ["logout", reg.host])).stdout, /Not logged in/);
    } finally {
      await reg.stop();
    }
  });

  test("credential helpers: credsStore and credHelpers keep the secret (docker-credential-* get/store/erase), config.json none", async () => {
    const creds = { user: "carol", password: "pa55" };
    const reg = await startRegistry({ htpasswd: creds });
    const bin = tempDir("berth-credhelper-");
    const kept = join(bin, "kept.json");
    // a helper in docker's protocol, keeping its secrets in a JSON file of its own
    fs.writeFileSync(
      join(bin, "docker-credential-berthtest"),
      `#!/usr/bin/python3\nimport json, sys, os\nf = ${JSON.stringify(kept)}\nd = json.load(open(f)) if os.path.exists(f) else {}\na = sys.argv[1]\nx = sys.stdin.read().strip()\nopen(f + ".log", "a").write(a + "\\n")\nif a == "store":\n    e = json.loads(x); d[e["ServerURL"]] = e; json.dump(d, open(f, "w"))\nelif a == "get":\n    if x not in d: print("credentials not found in native keychain"); sys.exit(1)\n    print(json.dumps(d[x]))\nelif a == "erase":\n    d.pop(x, None); json.dump(d, open(f, "w"))\n`,
      { mode: 0o755 },
    );
    const path = { PATH: `${bin}:${process.env.PATH}` };
    try {
      skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "carol:pa55", `oci:${layout}:latest`, `docker://${reg.host}/private/img:1`);
      for (const cfg of [{ credsStore: "berthtest" }, { credHelpers: { [reg.host]: "berthtest" } }]) {
        const env = berthEnv();
        fs.mkdirSync(env.dockerConfig, { recursive: true });
        fs.writeFileSync(join(env.dockerConfig, "config.json"), JSON.stringify(cfg));
        ok(berth(env, ["login", "-u", "carol", "--password-stdin", reg.host], { input: "pa55\n", extraEnv: path }));
        const written = JSON.parse(fs.readFileSync(join(env.dockerConfig, "config.json"), "utf8"));
        assert.deepEqual(written.auths[reg.host], {}, "config.json keeps an empty entry, no secret");
        assert.equal(JSON.parse(fs.readFileSync(kept, "utf8"))[reg.host].Secret, "pa55", "the helper keeps it");
        ok(berth(env, ["pull", `${reg.host}/private/img:1`], { extraEnv: path }));
        ok(berth(env, ["logout", reg.host], { extraEnv: path }));
        assert.equal(JSON.parse(fs.readFileSync(kept, "utf8"))[reg.host], undefined, "logout erases it in the helper");
        ok(berth(env, ["rmi", `${reg.host}/private/img:1`], { extraEnv: path }));
        const anon = berth(env, ["pull", `${reg.host}/private/img:1`], { extraEnv: path });
        assert.equal(anon.code, 1, "no credentials once erased");
        assert.match(anon.stderr, /requires authentication|login/);
      }
      assert.deepEqual(fs.readFileSync(`${kept}.log`, "utf8").trim().split("\n").filter((a) => a !== "get").sort(), ["erase", "erase", "store", "store"]);
      // a helper that is not installed: said by name
      const env = berthEnv();
      fs.mkdirSync(env.dockerConfig, { recursive: true });
      fs.writeFileSync(join(env.dockerConfig, "config.json"), JSON.stringify({ credsStore: "nosuch" }));
      assert.match(berth(env, ["pull", `${reg.host}/private/img:1`]).stderr, /docker-credential-nosuch .*not installed/);
    } finally {
      await reg.stop();
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  test("bearer tokens: anonymous pull of a public repository, pushes need login, scopes as asked", async () => {
    const creds = { user: "bob", password: "hunter2" };
    const reg = await startRegistry({ token: creds });
    try {
      skopeo("copy", "-q", "--dest-tls-verify=false", "--dest-creds", "bob:hunter2", `oci:${layout}:latest`, `docker://${reg.host}/public/img:1`);
      const env = berthEnv();
      ok(berth(env, ["pull", `${reg.host}/public/img:1`]));
      assert.ok(reg.grants.includes("anonymous public/img:pull"), reg.grants.join("; "));
      ok(berth(env, ["tag", `${reg.host}/public/img:1`, `${reg.host}/team/img:1`]));
      const denied = berth(env, ["push", `${reg.host}/team/img:1`]);
      assert.equal(denied.code, 1);
      assert.match(denied.stderr, /denied|authentication|login/i);
      ok(berth(env, ["login", "-u", "bob", "-p", "hunter2", reg.host]));
      const pushed = ok(berth(env, ["push", `${reg.host}/team/img:1`]));
      assert.match(pushed.stdout, /Mounted from .*public\/img|Layer already exists|Pushed/);
      assert.ok(reg.grants.some((g) => g.startsWith("bob team/img:") && g.includes("push")), reg.grants.join("; "));
      const wrong = berthEnv();
      const r = berth(wrong, ["login", "-u", "bob", "-p", "nope", reg.host]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /incorrect username or password|unauthorized/);
    } finally {
      await reg.stop();
    }
  });
});

describe("multi-platform images", { skip }, () => {
  test("an OCI index: the host's platform by default, --platform picks another, a missing one is a clear error", async () => {
    const reg = await startRegistry();
    try {
      // an index of two single-layer images whose /arch says which they are (made with tar + skopeo)
      const dir = tempDir("berth-img-");
      const layoutDir = join(dir, "layout");
      fs.mkdirSync(join(layoutDir, "blobs/sha256"), { recursive: true });
      const { createHash } = await import("node:crypto");
      const put = (b: Buffer) => {
        const d = createHash("sha256").update(b).digest("hex");
        fs.writeFileSync(join(layoutDir, "blobs/sha256", d), b);
        return { digest: `sha256:${d}`, size: b.length };
      };
      const manifests = ["amd64", "arm64"].map((arch) => {
        fs.mkdirSync(join(dir, arch, "etc"), { recursive: true });
        fs.writeFileSync(join(dir, arch, "etc/arch"), arch);
        sh("tar", ["-C", join(dir, arch), "-cf", join(dir, `${arch}.tar`), "etc"]);
        const tarBytes = fs.readFileSync(join(dir, `${arch}.tar`));
        const layer = put(tarBytes);
        const config = put(Buffer.from(JSON.stringify({ architecture: arch, os: "linux", ...(arch === "arm64" ? { variant: "v8" } : {}), rootfs: { type: "layers", diff_ids: [layer.digest] }, config: { Cmd: ["sh"] } })));
        const m = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { mediaType: "application/vnd.oci.image.config.v1+json", ...config }, layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar", ...layer }] })));
        return { mediaType: "application/vnd.oci.image.manifest.v1+json", ...m, platform: { architecture: arch, os: "linux", ...(arch === "arm64" ? { variant: "v8" } : {}) } };
      });
      const index = put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests })));
      fs.writeFileSync(join(layoutDir, "oci-layout"), '{"imageLayoutVersion":"1.0.0"}');
      fs.writeFileSync(join(layoutDir, "index.json"), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: "application/vnd.oci.image.index.v1+json", ...index, annotations: { "org.opencontainers.image.ref.name": "multi" } }] }));
      skopeo("copy", "-q", "--all", "--dest-tls-verify=false", `oci:${layoutDir}:multi`, `docker://${reg.host}/multi/img:1`);
      const env = berthEnv();
      const r = ok(berth(env, ["pull", `${reg.host}/multi/img:1`]));
      const raw = Buffer.from(skopeo("inspect", "--raw", "--tls-verify=false", `docker://${reg.host}/multi/img:1`));
      assert.match(raw.toString(), /image\.index\.v1/);
      assert.match(r.stdout, new RegExp(`Digest: sha256:${createHash("sha256").update(raw).digest("hex")}`), "Digest: is the index's, as in docker");
      const archOf = () => {
        const insp = JSON.parse(ok(berth(env, ["image", "inspect", `${reg.host}/multi/img:1`])).stdout)[0];
        return [insp.Architecture, fs.readFileSync(join(insp.GraphDriver.Data.UpperDir, "etc/arch"), "utf8")];
      };
      assert.deepEqual(archOf(), ["amd64", "amd64"]);
      ok(berth(env, ["pull", "--platform", "linux/arm64", `${reg.host}/multi/img:1`]));
      assert.deepEqual(archOf(), ["arm64", "arm64"]);
      const miss = berth(env, ["pull", "--platform", "linux/s390x", `${reg.host}/multi/img:1`]);
      assert.equal(miss.code, 1);
      assert.match(miss.stderr, /no matching manifest for linux\/s390x.*linux\/amd64, linux\/arm64\/v8/);
    } finally {
      await reg.stop();
    }
  });
});
