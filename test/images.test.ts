/**
 * The image store without a registry: layer extraction (formats, safety, whiteouts), the two
 * snapshotters against one conformance suite, and crash recovery.
 */
import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync, spawn } from "node:child_process";
import * as fs from "node:fs";
import { join } from "node:path";
import { createGzip } from "node:zlib";
import { Readable } from "node:stream";
import { rootSkip, tempDir, leaks, fixtureRootfs } from "./helpers.js";
import { CopySnapshotter, OverlaySnapshotter, extractLayer, encodeHeader, ImageStore, chainIds, type Snapshotter } from "../src/images/index.js";
import { lgetxattr, lsetxattr, writeDetached, SyscallError } from "../src/common/sys.js";
import { sha256 } from "../src/images/content.js";

type Entry = { name: string; type?: "file" | "directory" | "symlink" | "hardlink"; data?: string; linkname?: string; mode?: number };

/** A layer tar from entries (berth's writer: used only to craft hostile or exact inputs). */
function layer(entries: Entry[], end = true): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = Buffer.from(e.data ?? "");
    const type = e.type ?? "file";
    parts.push(encodeHeader({ name: e.name, type, size: type === "file" ? data.length : 0, mode: e.mode ?? (type === "directory" ? 0o755 : 0o644), linkname: e.linkname ?? "", mtime: 1_600_000_000 }));
    if (type === "file") parts.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  if (end) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

const chunks = (b: Buffer) => Readable.from([b]) as AsyncIterable<Buffer>;
const dirs: string[] = [];
const tmp = (p = "berth-img-") => {
  const d = tempDir(p);
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) {
    spawnSync("umount", ["-R", "-l", d]);
    fs.rmSync(d, { recursive: true, force: true });
  }
});

describe("layer extraction", { skip: rootSkip }, () => {
  test("GNU tar layers: files, modes, owners, times, symlinks, hardlinks, devices, binary xattrs", async () => {
    const src = tmp();
    fs.mkdirSync(join(src, "d/sub"), { recursive: true });
    fs.writeFileSync(join(src, "d/file"), "hello");
    fs.chownSync(join(src, "d/file"), 1234, 5678);
    fs.chmodSync(join(src, "d/file"), 0o4755); // after chown, which clears set-id bits
    fs.symlinkSync("../etc/passwd", join(src, "d/link"));
    fs.linkSync(join(src, "d/file"), join(src, "d/hard"));
    fs.utimesSync(join(src, "d/file"), 1_500_000_000, 1_500_000_000);
    spawnSync("mknod", [join(src, "d/null"), "c", "1", "3"]);
    // security.capability: binary bytes tar-stream would corrupt (cap_net_bind_service+ep)
    const cap = Buffer.from("0100000200040000000000000000000000000000", "hex");
    lsetxattr(join(src, "d/file"), "security.capability", cap);
    const tarFile = join(tmp(), "l.tar");
    const r = spawnSync("tar", ["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C", src, "-cf", tarFile, "."]);
    assert.equal(r.status, 0, String(r.stderr));
    const dest = tmp();
    const res = await extractLayer(fs.createReadStream(tarFile) as AsyncIterable<Buffer>, dest, "overlay");
    assert.equal(res.diffId, sha256(fs.readFileSync(tarFile)), "diff ID is the sha256 of the uncompressed tar");
    const st = fs.statSync(join(dest, "d/file"));
    assert.equal(fs.readFileSync(join(dest, "d/file"), "utf8"), "hello");
    assert.equal(st.mode & 0o7777, 0o4755, "set-uid bit survives the chown");
    assert.deepEqual([st.uid, st.gid], [1234, 5678]);
    assert.equal(st.mtimeMs, 1_500_000_000_000);
    assert.equal(fs.readlinkSync(join(dest, "d/link")), "../etc/passwd");
    assert.equal(fs.statSync(join(dest, "d/hard")).ino, st.ino, "hardlink shares the inode");
    const dev = fs.statSync(join(dest, "d/null"));
    assert.ok(dev.isCharacterDevice());
    assert.equal(dev.rdev, (1 << 8) | 3);
    assert.deepEqual(lgetxattr(join(dest, "d/file"), "security.capability"), cap, "xattr bytes exact");
  });

  test("gzip and zstd layers; archives without end-of-archive blocks (umoci's)", async () => {
    const raw = layer([{ name: "a", data: "x".repeat(5000) }, { name: "dir/", type: "directory" }, { name: "dir/b", data: "b" }], false);
    const gz = await new Promise<Buffer>((resolve) => {
      const parts: Buffer[] = [];
      const z = createGzip();
      z.on("data", (c) => parts.push(c)).on("end", () => resolve(Buffer.concat(parts)));
      z.end(raw);
    });
    const zst = spawnSync("zstd", ["-c", "-q"], { input: raw }).stdout;
    for (const [name, data] of [["plain", raw], ["gzip", gz], ["zstd", zst]] as const) {
      const dest = tmp();
      const r = await extractLayer(chunks(data), dest, "overlay");
      assert.equal(fs.readFileSync(join(dest, "dir/b"), "utf8"), "b", name);
      assert.equal(fs.statSync(join(dest, "a")).size, 5000, name);
      assert.equal(r.diffId, sha256(raw), `${name}: diff ID of the uncompressed bytes`);
    }
    // every zstd decoder gives the same bytes: Node's zlib where it has zstd, the zstd command, the JS one
    const saved = process.env.BERTH_ZSTD;
    try {
      for (const decoder of ["command", "js"]) {
        process.env.BERTH_ZSTD = decoder;
        const r = await extractLayer(chunks(zst), tmp(), "overlay");
        assert.equal(r.diffId, sha256(raw), `zstd through ${decoder}`);
        const bad = Buffer.concat([zst.subarray(0, 40), Buffer.alloc(64, 7)]);
        await assert.rejects(extractLayer(chunks(bad), tmp(), "overlay"), /corrupt zstd layer|invalid layer entry|tar/, `a corrupt stream through ${decoder}`);
      }
    } finally {
      if (saved === undefined) delete process.env.BERTH_ZSTD;
      else process.env.BERTH_ZSTD = saved;
    }
  });

  const hostile: Array<[string, Entry[], RegExp]> = [
    ["a ../ path", [{ name: "../../escaped", data: "x" }], /leaves the layer root/],
    ["a symlink then a write through it", [{ name: "evil", type: "symlink", linkname: "/tmp" }, { name: "evil/pwned", data: "x" }], /symlink/],
    ["a relative symlink out then a write through it", [{ name: "d/", type: "directory" }, { name: "d/up", type: "symlink", linkname: "../../../../.." }, { name: "d/up/tmp/pwned", data: "x" }], /symlink/],
    ["a hardlink to a file outside", [{ name: "h", type: "hardlink", linkname: "../../../etc/passwd" }], /leaves the layer root|not in the layer/],
    ["a hardlink to a file the layer lacks (/etc/shadow)", [{ name: "x", type: "hardlink", linkname: "etc/shadow" }], /invalid layer entry "x": a hardlink to etc\/shadow, which is not in the layer \(etc does not exist\)/],
    ["a hardlink through a symlink", [{ name: "s", type: "symlink", linkname: "/etc" }, { name: "h", type: "hardlink", linkname: "s/passwd" }], /symlink/],
  ];
  for (const [what, entries, why] of hostile)
    test(`refuses ${what}, writing nothing outside`, async () => {
      const base = tmp();
      const dest = join(base, "layer");
      fs.mkdirSync(dest);
      const before = fs.readdirSync("/tmp").length;
      await assert.rejects(extractLayer(chunks(layer(entries)), dest, "overlay"), why);
      assert.ok(!fs.existsSync("/tmp/pwned") && !fs.existsSync(join(base, "escaped")) && !fs.existsSync("/escaped"));
      assert.ok(fs.readdirSync("/tmp").length <= before + 1);
    });

  test("a truncated layer and a corrupt gzip are refused with a clear error", async () => {
    const raw = layer([{ name: "big", data: "y".repeat(20000) }]);
    await assert.rejects(extractLayer(chunks(raw.subarray(0, 5000)), tmp(), "overlay"), /truncated tar archive/);
    const gz = spawnSync("gzip", ["-c"], { input: raw }).stdout as Buffer;
    const bad = Buffer.from(gz);
    bad[bad.length - 20] ^= 0xff;
    await assert.rejects(extractLayer(chunks(bad), tmp(), "overlay"), /corrupt gzip|checksum|invalid/i);
    await assert.rejects(extractLayer(chunks(Buffer.from("<html>not a layer</html>".padEnd(600))), tmp(), "overlay"), /not a tar archive/);
  });
});

/** Two layers: the second deletes a file, replaces a directory's content (opaque), adds a file. */
const lower = layer([
  { name: "etc/", type: "directory" },
  { name: "etc/keep", data: "keep" },
  { name: "etc/gone", data: "gone" },
  { name: "opaque/", type: "directory" },
  { name: "opaque/old", data: "old" },
  { name: "lib", type: "symlink", linkname: "usr/lib" },
]);
const upper = layer([
  { name: "etc/", type: "directory" },
  { name: "etc/.wh.gone" },
  { name: "etc/new", data: "new" },
  { name: "opaque/", type: "directory" },
  { name: "opaque/.wh..wh..opq" },
  { name: "opaque/fresh", data: "fresh" },
]);

for (const kind of ["overlay", "copy"] as const)
  describe(`${kind} snapshotter conformance`, { skip: rootSkip }, () => {
    const make = (): Snapshotter => (kind === "overlay" ? new OverlaySnapshotter(join(tmp(), kind)) : new CopySnapshotter(join(tmp(), kind)));

    test("layers stack: whiteouts hide, opaque directories replace, the container writes above", async () => {
      const s = make();
      const [c1, c2] = chainIds([sha256(lower), sha256(upper)]) as [string, string];
      await s.applyLayer(c1, undefined, chunks(lower), sha256(lower));
      await s.applyLayer(c2, c1, chunks(upper), sha256(upper));
      assert.ok(s.hasLayer(c1) && s.hasLayer(c2));
      assert.equal(s.layer(c2)?.parent, c1);
      s.prepare("ctr1", c2);
      const mnt = tmp();
      s.mount("ctr1", mnt);
      try {
        assert.deepEqual(fs.readdirSync(join(mnt, "etc")).sort(), ["keep", "new"]);
        assert.deepEqual(fs.readdirSync(join(mnt, "opaque")), ["fresh"]);
        assert.equal(fs.readlinkSync(join(mnt, "lib")), "usr/lib");
        fs.writeFileSync(join(mnt, "etc/keep"), "changed");
        fs.rmSync(join(mnt, "etc/new"));
        assert.equal(fs.readFileSync(join(mnt, "etc/keep"), "utf8"), "changed");
      } finally {
        spawnSync("umount", [mnt]);
      }
      // the layers are untouched by the container's writes; a second container sees the image as it was
      s.prepare("ctr2", c2);
      const mnt2 = tmp();
      s.mount("ctr2", mnt2);
      try {
        assert.equal(fs.readFileSync(join(mnt2, "etc/keep"), "utf8"), "keep");
        assert.ok(fs.existsSync(join(mnt2, "etc/new")));
      } finally {
        spawnSync("umount", [mnt2]);
      }
      assert.ok(fs.existsSync(s.changes("ctr1")));
      s.remove("ctr1");
      s.remove("ctr2");
      assert.deepEqual(s.actives(), []);
      s.removeLayer(c2);
      assert.ok(!s.hasLayer(c2) && s.hasLayer(c1));
    });

    test("committing the same layer twice (two pulls racing) keeps one", async () => {
      const s = make();
      const [c1] = chainIds([sha256(lower)]) as [string];
      await Promise.all([s.applyLayer(c1, undefined, chunks(lower)), s.applyLayer(c1, undefined, chunks(lower))]);
      assert.equal(s.layers().length, 1);
      assert.deepEqual(fs.readdirSync(join(s.root, "layers")).filter((n) => n.startsWith("tmp-")), []);
    });

    test("a failed unpack leaves no snapshot and no temporary directory", async () => {
      const s = make();
      const bad = layer([{ name: "x", type: "symlink", linkname: "/" }, { name: "x/y", data: "z" }]);
      await assert.rejects(s.applyLayer(sha256(bad), undefined, chunks(bad)));
      assert.deepEqual(s.layers(), []);
      assert.deepEqual(fs.readdirSync(join(s.root, "layers")).filter((n) => n.startsWith("tmp-")), []);
    });
  });

for (const kind of ["overlay", "copy"] as const)
  describe(`commit with the ${kind} snapshotter`, { skip: rootSkip }, () => {
    test("a container's additions, changes and deletions become a layer; the new image has them", async () => {
      const store = new ImageStore({ root: tmp(), snapshotter: kind });
      const src = tmp();
      fs.mkdirSync(join(src, "etc"));
      fs.mkdirSync(join(src, "data/sub"), { recursive: true });
      fs.writeFileSync(join(src, "etc/keep"), "keep");
      fs.writeFileSync(join(src, "etc/change"), "before");
      fs.writeFileSync(join(src, "etc/remove"), "bye");
      fs.writeFileSync(join(src, "data/sub/x"), "x");
      const tarFile = join(tmp(), "base.tar");
      spawnSync("tar", ["-C", src, "-cf", tarFile, "."]);
      const { importImage, commitSnapshot, imageHistory } = await import("../src/images/index.js");
      const base = await importImage(store, fs.createReadStream(tarFile) as AsyncIterable<Buffer>, { reference: "base:1", changes: ["CMD [\"sh\"]"] });
      store.snapshots.prepare("c1", store.topLayer(base));
      const mnt = tmp();
      store.snapshots.mount("c1", mnt);
      try {
        fs.writeFileSync(join(mnt, "etc/change"), "after!");
        fs.rmSync(join(mnt, "etc/remove"));
        fs.rmSync(join(mnt, "data"), { recursive: true });
        fs.mkdirSync(join(mnt, "data"));
        fs.writeFileSync(join(mnt, "data/new"), "fresh");
        fs.mkdirSync(join(mnt, "added/deep"), { recursive: true });
        fs.writeFileSync(join(mnt, "added/deep/file"), "new file");
      } finally {
        spawnSync("umount", [mnt]);
      }
      const img = await commitSnapshot(store, { snapshot: "c1", parent: base, changes: ["ENV COMMITTED=yes"], message: "a test commit", author: "tester", reference: "committed:1" });
      assert.equal(img.parent, base.id);
      const cfg = store.config(img);
      assert.equal(cfg.rootfs.diff_ids.length, 2);
      assert.deepEqual(cfg.config?.Cmd, ["sh"]);
      assert.deepEqual(cfg.config?.Env, ["COMMITTED=yes"]);
      assert.equal(imageHistory(store, img)[0]!.comment, "a test commit");
      store.snapshots.prepare("c2", store.topLayer(img));
      const mnt2 = tmp();
      store.snapshots.mount("c2", mnt2);
      try {
        assert.equal(fs.readFileSync(join(mnt2, "etc/keep"), "utf8"), "keep");
        assert.equal(fs.readFileSync(join(mnt2, "etc/change"), "utf8"), "after!");
        assert.ok(!fs.existsSync(join(mnt2, "etc/remove")), "deleted file stays deleted");
        assert.deepEqual(fs.readdirSync(join(mnt2, "data")), ["new"], "a replaced directory hides the old content");
        assert.equal(fs.readFileSync(join(mnt2, "added/deep/file"), "utf8"), "new file");
      } finally {
        spawnSync("umount", [mnt2]);
      }
      store.snapshots.remove("c1");
      store.snapshots.remove("c2");
    });
  });

describe("overlay limits", { skip: rootSkip }, () => {
  test("an image of 120 layers mounts (short layer links keep the options under a page)", async () => {
    const s = new OverlaySnapshotter(join(tmp(), "overlay"));
    const layers = Array.from({ length: 120 }, (_x, i) => layer([{ name: `f${i}`, data: String(i) }]));
    const ids = chainIds(layers.map((l) => sha256(l)));
    for (let i = 0; i < layers.length; i++) await s.applyLayer(ids[i]!, ids[i - 1], chunks(layers[i]!));
    s.prepare("many", ids[119]);
    const mnt = tmp();
    s.mount("many", mnt);
    try {
      assert.equal(fs.readdirSync(mnt).length, 120);
      assert.equal(fs.readFileSync(join(mnt, "f0"), "utf8"), "0");
      assert.equal(fs.readFileSync(join(mnt, "f119"), "utf8"), "119");
    } finally {
      spawnSync("umount", [mnt]);
    }
  });
});

describe("crash safety", { skip: rootSkip }, () => {
  test("berth killed mid-unpack: the next command removes what it left and the store stays usable", async () => {
    const root = tmp();
    const store = new ImageStore({ root });
    // a big layer made of many files, unpacked by a child process we kill halfway
    const src = tmp();
    for (let i = 0; i < 3000; i++) fs.writeFileSync(join(src, `f${i}`), "z".repeat(2000));
    const tarFile = join(tmp(), "big.tar");
    spawnSync("tar", ["-C", src, "-cf", tarFile, "."]);
    const script = `import { ImageStore } from ${JSON.stringify(new URL("../src/images/index.js", import.meta.url).href)};
      import * as fs from "node:fs";
      const s = new ImageStore({ root: ${JSON.stringify(root)} });
      const slow = (async function* () { for await (const c of fs.createReadStream(${JSON.stringify(tarFile)}, { highWaterMark: 65536 })) { yield c; await new Promise((r) => setTimeout(r, 20)); } })();
      process.stdout.write("started\\n");
      await s.snapshots.applyLayer("sha256:${"a".repeat(64)}", undefined, slow);`;
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout!.once("data", () => resolve()));
    await new Promise((r) => setTimeout(r, 400));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    const layersDir = join(root, "snapshots/overlay/layers");
    assert.ok(fs.readdirSync(layersDir).some((n) => n.startsWith("tmp-")), "the killed unpack left its temporary directory");
    assert.equal(store.snapshots.hasLayer(`sha256:${"a".repeat(64)}`), false, "a half-unpacked layer is never visible");
    await store.gc();
    assert.deepEqual(fs.readdirSync(layersDir).filter((n) => n.startsWith("tmp-")), []);
    assert.deepEqual(store.list(), []);
  });

  test("no mounts or processes left behind", () => {
    assert.deepEqual(leaks(), []);
  });
});

export { fixtureRootfs };

test("writeDetached reports the write's outcome: done, the open's errno, the write's errno", async () => {
  const dir = tempDir("berth-wd-");
  const keep = setInterval(() => {}, 1000); // the report does not hold the process open by itself
  try {
    const f = join(dir, "f");
    fs.writeFileSync(f, "");
    await writeDetached(f, "written");
    assert.equal(fs.readFileSync(f, "utf8"), "written");
    await assert.rejects(writeDetached(join(dir, "missing", "f"), "x"), (e: unknown) => e instanceof SyscallError && e.errno === 2 && /open/.test(e.message));
    // a write the kernel refuses after the open succeeded: a FIFO with no reader is refused at open, so use /dev/full
    await assert.rejects(writeDetached("/dev/full", "x"), (e: unknown) => e instanceof SyscallError && e.errno === 28 && /^write /.test(e.message));
  } finally {
    clearInterval(keep);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
