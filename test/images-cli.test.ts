/**
 * The image commands as a docker user sees them: output shapes, --format/--filter/-q, rmi's
 * untag-versus-delete rules, import --change, prune, system df, usage errors (exit 125), and the
 * larger Debian image through a registry.
 */
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { project, rootSkip, tempDir } from "./helpers.js";
import { berth, berthEnv, ok, runImage, sh, type BerthEnv } from "./image-helpers.js";
import { haveSkopeo, registrySkip, startRegistry } from "./registry.js";

const rootfsTar = (): string => {
  const tarball = join(tempDir("berth-img-"), "rootfs.tar");
  sh("tar", ["-C", join(project, "build/fixtures/busybox/rootfs"), "-cf", tarball, "."]);
  return tarball;
};

describe("image commands", { skip: rootSkip }, () => {
  let env: BerthEnv;
  let id: string;
  before(() => {
    env = berthEnv();
    const r = ok(berth(env, ["import", "-c", 'CMD ["/bin/sh"]', "-c", "ENV A=1 B=two", "-c", "LABEL org.example=yes", "-c", "EXPOSE 80", "-c", "WORKDIR /srv", "-m", "from the fixture", rootfsTar(), "example/app:1.0"]));
    id = r.stdout.trim();
    assert.match(id, /^sha256:[a-f0-9]{64}$/);
  });

  test("import applies --change and --message; inspect and history show them", () => {
    const insp = JSON.parse(ok(berth(env, ["image", "inspect", "example/app:1.0"])).stdout);
    assert.equal(insp.length, 1);
    assert.equal(insp[0].Id, id);
    assert.deepEqual(insp[0].RepoTags, ["example/app:1.0"]);
    assert.deepEqual(insp[0].Config.Cmd, ["/bin/sh"]);
    assert.deepEqual(insp[0].Config.Env, ["A=1", "B=two"]);
    assert.deepEqual(insp[0].Config.Labels, { "org.example": "yes" });
    assert.deepEqual(insp[0].Config.ExposedPorts, { "80/tcp": {} });
    assert.equal(insp[0].Config.WorkingDir, "/srv");
    assert.equal(insp[0].Os, "linux");
    assert.equal(insp[0].RootFS.Layers.length, 1);
    const h = ok(berth(env, ["history", "example/app:1.0"])).stdout.split("\n");
    assert.match(h[0]!, /^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$/);
    assert.match(h[1]!, new RegExp(`^${id.slice(7, 19)}\\s+(Less than a second|\\d+ seconds) ago\\s+berth import\\s+[\\d.]+[kM]B\\s+from the fixture$`));
    assert.equal(ok(berth(env, ["inspect", "--format", "{{index .Config.Labels \"org.example\"}} {{join .Config.Env \",\"}} {{len .RootFS.Layers}}", "example/app:1.0"])).stdout, "yes A=1,B=two 1\n");
  });

  test("images: table, -q, --no-trunc, --format, --filter, repository argument", () => {
    ok(berth(env, ["tag", "example/app:1.0", "example/app:latest"]));
    ok(berth(env, ["tag", id.slice(7, 19), "other.registry:5000/team/app:v9"]));
    const table = ok(berth(env, ["images"])).stdout.trimEnd().split("\n");
    assert.match(table[0]!, /^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$/);
    assert.equal(table.length, 4);
    assert.ok(table.some((l) => /^other\.registry:5000\/team\/app\s+v9\s+[a-f0-9]{12}\s/.test(l)));
    assert.equal(ok(berth(env, ["images", "-q"])).stdout, `${id.slice(7, 19)}\n`, "one ID per image");
    assert.equal(ok(berth(env, ["images", "-q", "--no-trunc"])).stdout, `${id}\n`);
    assert.equal(ok(berth(env, ["images", "--format", "{{.Repository}}:{{.Tag}}", "example/app"])).stdout.split("\n").sort().join(","), ",example/app:1.0,example/app:latest");
    assert.equal(ok(berth(env, ["images", "--filter", "reference=other*/*/*", "--format", "{{.Tag}}"])).stdout, "v9\n");
    assert.equal(ok(berth(env, ["images", "--filter", "label=org.example=yes", "-q"])).stdout, `${id.slice(7, 19)}\n`);
    assert.equal(ok(berth(env, ["images", "--filter", "dangling=true", "-q"])).stdout, "");
    const json = ok(berth(env, ["images", "--format", "json"])).stdout.trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(json[0].ID, id.slice(7, 19));
    assert.ok("CreatedSince" in json[0] && "Size" in json[0]);
    const tableFmt = ok(berth(env, ["images", "--format", "table {{.Repository}}\t{{.Tag}}", "example/app"])).stdout.split("\n");
    assert.match(tableFmt[0]!, /^REPOSITORY\s+TAG$/);
  });

  test("rmi: a name untags while others remain; an ID with several repositories needs -f; the last name deletes", () => {
    const conflict = berth(env, ["rmi", id.slice(7, 19)]);
    assert.equal(conflict.code, 1);
    assert.match(conflict.stderr, /conflict: unable to delete [a-f0-9]{12} \(must be forced\) - image is referenced in multiple repositories/);
    assert.equal(ok(berth(env, ["rmi", "other.registry:5000/team/app:v9"])).stdout, "Untagged: other.registry:5000/team/app:v9\n");
    assert.equal(ok(berth(env, ["rmi", "example/app"])).stdout, "Untagged: example/app:latest\n");
    const last = ok(berth(env, ["rmi", "example/app:1.0"])).stdout;
    assert.equal(last, `Untagged: example/app:1.0\nDeleted: ${id}\n`);
    assert.equal(ok(berth(env, ["images", "-q"])).stdout, "");
    // the layer and every blob went with it
    assert.deepEqual(fs.readdirSync(join(env.root, "snapshots/overlay/layers")), []);
    assert.deepEqual(fs.readdirSync(join(env.root, "content/blobs/sha256")), []);
    const missing = berth(env, ["rmi", "example/app:1.0"]);
    assert.equal(missing.code, 1);
    assert.equal(missing.stderr, "Error: No such image: example/app:1.0\n");
  });

  test("image prune removes dangling images only (all with -a); system df counts", () => {
    const a = ok(berth(env, ["import", rootfsTar()])).stdout.trim();
    ok(berth(env, ["import", "-c", "CMD [\"true\"]", rootfsTar(), "kept:1"]));
    assert.match(ok(berth(env, ["images", "--filter", "dangling=true"])).stdout, /<none>\s+<none>/);
    const df = ok(berth(env, ["system", "df"])).stdout.split("\n");
    assert.match(df[0]!, /^TYPE\s+TOTAL\s+ACTIVE\s+SIZE\s+RECLAIMABLE$/);
    assert.match(df[1]!, /^Images\s+2\s+0\s+[\d.]+[kM]B\s+[\d.]+[kM]B \(100%\)$/);
    const p = ok(berth(env, ["image", "prune", "-f"])).stdout;
    assert.match(p, new RegExp(`^Deleted Images:\ndeleted: ${a}\n\nTotal reclaimed space: `));
    assert.equal(ok(berth(env, ["images", "--format", "{{.Repository}}"])).stdout, "kept\n");
    const no = ok(berth(env, ["image", "prune", "-a"], { input: "n\n" })).stdout;
    assert.match(no, /WARNING! This will remove all images without at least one container associated to them\.\nAre you sure you want to continue\? \[y\/N\] $/);
    assert.equal(ok(berth(env, ["images", "-q"])).stdout.trim().length, 12, "answering no keeps them");
    ok(berth(env, ["image", "prune", "-a", "-f"]));
    assert.equal(ok(berth(env, ["images", "-q"])).stdout, "");
  });

  test("usage errors exit 125 with docker's wording; bad names and missing files are clear", () => {
    const unknown = berth(env, ["images", "--bogus"]);
    assert.equal(unknown.code, 125);
    assert.equal(unknown.stderr, "berth: unknown flag: --bogus\nSee 'berth images --help'.\n");
    const args = berth(env, ["tag", "onlyone"]);
    assert.equal(args.code, 125);
    assert.match(args.stderr, /"tag" requires exactly 2 arguments/);
    const cmd = berth(env, ["frobnicate"]);
    assert.equal(cmd.code, 125);
    const badRef = berth(env, ["pull", "example/UPPERCASE"]); // rejected before any lookup
    assert.equal(badRef.code, 1);
    assert.match(badRef.stderr, /invalid reference format: repository name \(example\/UPPERCASE\) must be lowercase/);
    const noFile = berth(env, ["import", "/nonexistent.tar", "x:1"]);
    assert.equal(noFile.code, 1);
    assert.match(noFile.stderr, /no such file/);
    const notTar = join(tempDir("berth-img-"), "junk");
    fs.writeFileSync(notTar, "this is not a tar archive at all".repeat(40));
    const junk = berth(env, ["import", notTar, "junk:1"]);
    assert.equal(junk.code, 1);
    assert.match(junk.stderr, /not a tar archive/);
    assert.equal(ok(berth(env, ["images", "-q", "junk"])).stdout, "", "a failed import leaves no image");
    const loadJunk = berth(env, ["load", "-i", notTar]);
    assert.equal(loadJunk.code, 1);
    assert.match(loadJunk.stderr, /invalid archive/);
    assert.deepEqual(fs.readdirSync(join(env.root, "tmp")), [], "nothing left from failed loads and imports");
    // (the earlier tests of this suite leave the store empty)
    if (!ok(berth(env, ["images", "-q"])).stdout) assert.deepEqual(fs.readdirSync(join(env.root, "content/blobs/sha256")), [], "no unnamed blobs");
  });

  test("login and logout keep docker's config.json format, beside other settings", () => {
    fs.mkdirSync(env.dockerConfig, { recursive: true });
    fs.writeFileSync(join(env.dockerConfig, "config.json"), JSON.stringify({ auths: { "other.example": { auth: "eDp5" } }, psFormat: "table {{.ID}}" }));
    // no registry listens at this loopback port: login fails and changes nothing
    const r = berth(env, ["login", "-u", "u", "-p", "p", "127.0.0.1:9"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot reach registry 127\.0\.0\.1:9/);
    const cfg = JSON.parse(fs.readFileSync(join(env.dockerConfig, "config.json"), "utf8"));
    assert.deepEqual(Object.keys(cfg.auths), ["other.example"]);
    assert.equal(cfg.psFormat, "table {{.ID}}");
    assert.match(ok(berth(env, ["logout", "other.example"])).stdout, /Removing login credentials for other.example/);
    assert.equal(JSON.parse(fs.readFileSync(join(env.dockerConfig, "config.json"), "utf8")).psFormat, "table {{.ID}}");
  });
});

const debianLayout = join(project, "build/cache/debian-oci");
const debianSkip = rootSkip || registrySkip || (!haveSkopeo ? "needs skopeo" : false) || (!fs.existsSync(join(debianLayout, "index.json")) ? "the Debian test image was not built (scripts/make-debian-image.sh needs debootstrap and Debian's mirror)" : false);

describe("the larger Debian image", { skip: debianSkip }, () => {
  let reg: Awaited<ReturnType<typeof startRegistry>>;
  after(async () => reg?.stop());

  test("five layers, ~300 MB: pulled through the registry, runs Debian's userland, saves and loads", async () => {
    reg = await startRegistry();
    sh("skopeo", ["--insecure-policy", "copy", "-q", "--dest-tls-verify=false", `oci:${debianLayout}:latest`, `docker://${reg.host}/debian:bookworm`]);
    const env = berthEnv();
    const r = ok(berth(env, ["pull", `${reg.host}/debian:bookworm`]));
    assert.equal((r.stdout.match(/: Pull complete$/gm) ?? []).length, 5);
    assert.match(runImage(env, `${reg.host}/debian:bookworm`, ["/bin/cat", "/etc/debian_version"]).stdout, /^12\./);
    const py = runImage(env, `${reg.host}/debian:bookworm`, ["/usr/bin/python3", "-c", "import sys, json; print(json.dumps(sys.version_info[:2]))"]);
    assert.equal(py.stdout.trim(), "[3, 11]", py.stderr);
    const size = JSON.parse(ok(berth(env, ["image", "inspect", `${reg.host}/debian:bookworm`])).stdout)[0].Size;
    assert.ok(size > 200e6, `size ${size}`);
    const dir = tempDir("berth-img-");
    ok(berth(env, ["save", "-o", join(dir, "d.tar"), `${reg.host}/debian:bookworm`]));
    const fresh = berthEnv();
    ok(berth(fresh, ["load", "-i", join(dir, "d.tar")]));
    assert.match(runImage(fresh, `${reg.host}/debian:bookworm`, ["/bin/cat", "/etc/debian_version"]).stdout, /^12\./);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
