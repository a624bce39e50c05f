/**
 * The image store's metadata without root: a build's step images go to an append-only journal
 * (not a rewrite of every record, which grows with the store), other processes see them, a line a
 * crash cut short costs only that record, and the next named image folds the journal in.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import * as fs from "node:fs";
import { join } from "node:path";
import { ImageStore, TarReader, encodeHeader, type ImageRecord } from "../src/images/index.js";
import { parseRegistriesConf, pullEndpoints } from "../src/images/registries-conf.js";
import { tempDir } from "./helpers.js";

const record = (n: number, extra: Partial<ImageRecord> = {}) => ({
  id: `sha256:${n.toString(16).padStart(64, "0")}`,
  target: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: `sha256:${(n + 1000).toString(16).padStart(64, "0")}`, size: 1 },
  size: 10,
  ...extra,
});
const journals = (root: string) => fs.readdirSync(root).filter((n) => n.startsWith("images.journal."));

test("step images are appended to a journal that another store instance reads; a named image folds it in", async () => {
  const root = tempDir("berth-meta-");
  const store = new ImageStore({ root, snapshotter: "copy" });
  await store.register(record(1), ["docker.io/library/base:latest"]);
  const metaPath = join(root, "images.json");
  const written = fs.readFileSync(metaPath, "utf8");
  for (let i = 2; i < 12; i++) await store.register(record(i, { intermediate: true, cacheKey: `key-${i}`, parent: record(i - 1).id }), []);
  assert.equal(fs.readFileSync(metaPath, "utf8"), written, "the metadata file is not rewritten for step images");
  assert.equal(journals(root).length, 1);
  assert.equal(fs.readFileSync(join(root, journals(root)[0]!), "utf8").trim().split("\n").length, 10);
  // what another process sees
  const other = new ImageStore({ root, snapshotter: "copy" });
  assert.equal(other.list().length, 11);
  assert.equal(other.get(record(7).id).parent, record(6).id);
  // a record a crash cut short: the others stay
  fs.appendFileSync(join(root, journals(root)[0]!), '{"id":"sha256:000');
  assert.equal(new ImageStore({ root, snapshotter: "copy" }).list().length, 11);
  // the same instance sees what another appended since it last read
  await other.register(record(20, { intermediate: true, cacheKey: "key-20" }), []);
  assert.ok(store.list().some((r) => r.id === record(20).id));
  // a named image rewrites the file with every record, and the journal goes
  await store.register(record(30), ["docker.io/library/app:latest"]);
  const meta = JSON.parse(fs.readFileSync(metaPath, "utf8")) as { images: Record<string, ImageRecord>; journal: string };
  assert.equal(Object.keys(meta.images).length, 13);
  assert.deepEqual(journals(root), [], "the folded journal is removed (its successor is made on the next append)");
  assert.equal(new ImageStore({ root, snapshotter: "copy" }).list().length, 13);
});

test("old stores whose step images named their parent by the whole record read as IDs", () => {
  const root = tempDir("berth-meta-");
  const parent = { ...record(1), repoTags: [], repoDigests: [], added: "2026-01-01T00:00:00Z" };
  const child = { ...record(2), repoTags: [], repoDigests: [], added: "2026-01-01T00:00:00Z", parent };
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(join(root, "images.json"), JSON.stringify({ version: 1, images: { [parent.id]: parent, [child.id]: child } }));
  assert.equal(new ImageStore({ root, snapshotter: "copy" }).get(record(2).id).parent, record(1).id);
});

test("tar: an archive that ends right after its last entry's data reads whole (the docker CLI's out-of-context Dockerfile); one cut inside the data is refused", () => {
  const read = (archive: Buffer) => {
    const files: Record<string, string> = {};
    let name = "";
    const r = new TarReader({ entry: (h) => ((name = h.name), (files[name] = "")), data: (c) => (files[name] += c.toString()), end: () => {} });
    // fed in small pieces, as a request body arrives
    for (let i = 0; i < archive.length; i += 100) r.write(archive.subarray(i, i + 100));
    r.finish();
    return files;
  };
  const entry = (name: string, text: string) => [encodeHeader({ name, type: "file", size: text.length, mode: 0o644 }), Buffer.from(text), Buffer.alloc((512 - (text.length % 512)) % 512)];
  const whole = Buffer.concat([...entry("f", "hi\n"), ...entry(".dockerfile.abc", "FROM busybox\n"), Buffer.alloc(1024)]);
  assert.deepEqual(read(whole), { f: "hi\n", ".dockerfile.abc": "FROM busybox\n" });
  const unpadded = whole.subarray(0, 512 + 512 + 512 + "FROM busybox\n".length);
  assert.deepEqual(read(unpadded), { f: "hi\n", ".dockerfile.abc": "FROM busybox\n" });
  assert.throws(() => read(whole.subarray(0, 512 + 512 + 512 + 5)), /truncated tar archive: the last entry's data is cut short/);
});

test("registries.conf (podman's format): the longest prefix decides; mirrors first (pull-from-mirror), then the location; blocked and bad files refused", () => {
  const dir = tempDir("berth-regconf-");
  const conf = (text: string) => fs.writeFileSync(join(dir, "registries.conf"), text);
  conf(`
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "docker.io"
[[registry.mirror]]
location = "mirror.local:5000/hub"
insecure = true
[[registry.mirror]]
location = "digests.local"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "example.com/team"
location = "127.0.0.1:5000/moved"

[[registry]]
prefix = "blocked.example"
blocked = true
`);
  assert.deepEqual(pullEndpoints(dir, "docker.io", "library/busybox", false), [
    { host: "mirror.local:5000", path: "hub/library/busybox", insecure: true },
    { host: "docker.io", path: "library/busybox", insecure: false },
  ]);
  assert.deepEqual(
    pullEndpoints(dir, "docker.io", "library/busybox", true)?.map((e) => e.host),
    ["mirror.local:5000", "digests.local", "docker.io"],
  );
  assert.deepEqual(pullEndpoints(dir, "example.com", "team/app", false), [{ host: "127.0.0.1:5000", path: "moved/app", insecure: false }]);
  assert.equal(pullEndpoints(dir, "example.com", "teamster/app", false), undefined, "a prefix matches whole path components");
  assert.equal(pullEndpoints(dir, "quay.io", "x/y", false), undefined);
  assert.throws(() => pullEndpoints(dir, "blocked.example", "x", false), /registry blocked.example is blocked in .*registries.conf/);
  assert.throws(() => parseRegistriesConf('[[registry]]\nprefix = "*.example.com"\n'), /wildcard prefixes/);
  assert.throws(() => parseRegistriesConf('[[registry]]\nlocation = "x"\ninsecure = "yes"\n'), /insecure must be true or false/);
  assert.throws(() => parseRegistriesConf("[[registry]\n"), /registries.conf: /);
});
