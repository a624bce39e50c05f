/**
 * Snapshots: committed image layers (by chain ID) and writable container snapshots, behind one
 * interface with two implementations:
 *  - overlay: each layer unpacked once into its own directory, containers get an upper and work dir
 *    and mount the layers as lowerdirs. The mount names layers by short links relative to the
 *    snapshotter's directory (as docker's overlay2 does), so 120 layers still fit the kernel's
 *    one-page limit on mount options.
 *  - copy: for file systems without overlayfs: every layer is a full tree (parent copied with
 *    reflinks where the file system has them, then the layer applied), a container gets a copy.
 * Both commit by renaming a private temporary directory, so a crash never leaves half a snapshot.
 */
import * as fs from "node:fs";
import { spawnSync } from "node:child_process";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { BerthError, notFound } from "../common/errors.js";
import { mount as sysMount, mountAsync as sysMountAsync, removeTree, removeTreeAsync, umount, umountAsync, MNT_DETACH, ERRNO, SyscallError } from "../common/sys.js";
import { extractLayer, type ExtractResult } from "./layer.js";
import { pidAlive } from "./content.js";
import { writeFileAtomic } from "../common/lock.js";

export interface LayerSnapshot {
  chainId: string;
  parent?: string;
  diffId: string;
  /** Bytes of file content in this layer alone. */
  size: number;
  /** Bytes of the layer's uncompressed tar (what docker save writes). */
  tarSize?: number;
}

export interface Snapshotter {
  readonly kind: "overlay" | "copy";
  readonly root: string;
  hasLayer(chainId: string): boolean;
  layer(chainId: string): LayerSnapshot | undefined;
  layers(): LayerSnapshot[];
  /** Unpack a layer on top of parent and commit it as chainId (idempotent). */
  applyLayer(chainId: string, parent: string | undefined, input: AsyncIterable<Buffer>, diffId?: string): Promise<ExtractResult>;
  removeLayer(chainId: string): void;
  /** A writable snapshot on top of a committed layer (or empty when parent is undefined). */
  prepare(key: string, parent: string | undefined): void;
  hasActive(key: string): boolean;
  actives(): string[];
  /** Mount the writable snapshot at target. */
  /**
   * opts.volatile (a container removed when it ends, as podman does for --rm): overlayfs skips
   * every sync of the upper layer (its unmount synced it: the cost of a --rm, docs/engine.md); such a snapshot cannot be
   * mounted again, which one that is removed after its single run never is.
   */
  mount(key: string, target: string, opts?: { volatile?: boolean }): void;
  /** mount, the mount made on the thread pool where it can be (see Overlay's). */
  mountAsync(key: string, target: string, opts?: { volatile?: boolean }): Promise<void>;
  /** The directory of the snapshot's own changes (overlay's upper dir; the whole tree for copy). */
  changes(key: string): string;
  /** The snapshot's directories, topmost first (overlay: upper, then the layers), to read files without mounting. */
  dirs(key: string): string[];
  /**
   * For a rootless container: the directory to use as its root, and (overlay) the options to mount
   * there from inside its user namespace (absolute paths, user.* xattrs).
   */
  rootlessRoot(key: string, target: string): { path: string; overlay?: string };
  /** The directory tree of a committed layer chain's own files (overlay: the layer's diff dir). */
  layerDir(chainId: string): string;
  remove(key: string): void;
  /** remove, its files deleted on libuv's thread pool (the snapshot is gone from its key at once). */
  removeAsync(key: string): Promise<void>;
  /** Remove temporary directories left by processes that died. */
  /** Remove the temporary directories of writers that died (unless dryRun); what they were. */
  cleanup(dryRun?: boolean): string[];
  /**
   * Commit a writable snapshot's changes as the layer chainId (a build step's result) by moving
   * them, not unpacking its tar again; the writable snapshot is left to remove.
   */
  adopt(key: string, layer: LayerSnapshot): void;
}

/** Whether this kernel's overlayfs took the volatile option (undefined: not tried yet). */
let volatileSupported: boolean | undefined;

const hexOf = (chainId: string) => chainId.replace(/^sha256:/, "");
const tmpName = () => `tmp-${process.pid}-${randomBytes(4).toString("hex")}`;

abstract class BaseSnapshotter {
  readonly layersDir: string;
  readonly activeDir: string;

  constructor(readonly root: string) {
    this.layersDir = join(root, "layers");
    this.activeDir = join(root, "active");
    fs.mkdirSync(this.layersDir, { recursive: true });
    fs.mkdirSync(this.activeDir, { recursive: true });
  }

  protected metaPath(chainId: string): string {
    return join(this.layersDir, hexOf(chainId), "meta.json");
  }

  hasLayer(chainId: string): boolean {
    return fs.existsSync(this.metaPath(chainId));
  }

  layer(chainId: string): LayerSnapshot | undefined {
    try {
      return JSON.parse(fs.readFileSync(this.metaPath(chainId), "utf8")) as LayerSnapshot;
    } catch {
      // no (or a torn) metadata file: the layer is not there
      return undefined;
    }
  }

  layers(): LayerSnapshot[] {
    return fs
      .readdirSync(this.layersDir)
      .filter((n) => /^[a-f0-9]{64}$/.test(n))
      .map((n) => this.layer(`sha256:${n}`))
      .filter((l): l is LayerSnapshot => !!l);
  }

  hasActive(key: string): boolean {
    return fs.existsSync(join(this.activeDir, key));
  }

  actives(): string[] {
    return fs.readdirSync(this.activeDir).filter((n) => !n.startsWith("tmp-"));
  }

  protected chain(chainId: string): LayerSnapshot[] {
    const out: LayerSnapshot[] = [];
    for (let id: string | undefined = chainId; id; ) {
      const l = this.layer(id);
      if (!l) throw notFound(`layer snapshot ${id} is missing from the store (run \`berth image prune\` and pull again)`);
      out.push(l);
      id = l.parent;
    }
    return out;
  }

  /** Unpack into a fresh temporary directory and commit by rename. */
  protected async commitLayer(chainId: string, parent: string | undefined, fill: (tmp: string) => Promise<ExtractResult>, extra: (tmp: string) => void = () => {}): Promise<ExtractResult> {
    const tmp = join(this.layersDir, tmpName());
    fs.mkdirSync(tmp);
    try {
      const r = await fill(tmp);
      extra(tmp);
      const meta: LayerSnapshot = { chainId, ...(parent ? { parent } : {}), diffId: r.diffId, size: r.size, tarSize: r.tarSize };
      fs.writeFileSync(join(tmp, "meta.json"), JSON.stringify(meta));
      try {
        fs.renameSync(tmp, join(this.layersDir, hexOf(chainId)));
      } catch (e) {
        // Another process committed the same layer first: theirs is as good as ours.
        if (!["ENOTEMPTY", "EEXIST"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
        fs.rmSync(tmp, { recursive: true, force: true });
      }
      return r;
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** Names an adopted layer's directory (meta.json, then the rename that commits it). */
  protected finishAdopt(tmp: string, layer: LayerSnapshot): void {
    fs.writeFileSync(join(tmp, "meta.json"), JSON.stringify(layer));
    try {
      fs.renameSync(tmp, join(this.layersDir, hexOf(layer.chainId)));
    } catch (e) {
      if (!["ENOTEMPTY", "EEXIST"].includes((e as NodeJS.ErrnoException).code ?? "")) throw e;
      removeTree(tmp); // the same layer is already here
    }
  }

  remove(key: string): void {
    const tmp = this.unname(key);
    if (tmp) removeTree(tmp);
  }

  async removeAsync(key: string): Promise<void> {
    const tmp = this.unname(key);
    if (tmp) await removeTreeAsync(tmp);
  }

  /** Renames a snapshot away from its key (so a crash halfway through a removal never leaves a half-removed snapshot under it): its new path. */
  private unname(key: string): string | undefined {
    const dir = join(this.activeDir, key);
    if (!fs.existsSync(dir)) return undefined;
    const tmp = join(this.activeDir, tmpName());
    fs.renameSync(dir, tmp);
    return tmp;
  }

  cleanup(dryRun = false): string[] {
    const out: string[] = [];
    for (const dir of [this.layersDir, this.activeDir])
      for (const n of fs.readdirSync(dir)) {
        const m = /^tmp-(\d+)-/.exec(n);
        if (!m || pidAlive(Number(m[1]))) continue;
        out.push(`unfinished snapshot ${n}`);
        if (!dryRun) fs.rmSync(join(dir, n), { recursive: true, force: true });
      }
    return out;
  }
}

export class OverlaySnapshotter extends BaseSnapshotter implements Snapshotter {
  readonly kind = "overlay" as const;
  readonly linksDir: string;

  constructor(root: string) {
    super(root);
    this.linksDir = join(root, "l");
    fs.mkdirSync(this.linksDir, { recursive: true });
  }

  applyLayer(chainId: string, parent: string | undefined, input: AsyncIterable<Buffer>, diffId?: string): Promise<ExtractResult> {
    return this.commitLayer(
      chainId,
      parent,
      async (tmp) => {
        fs.mkdirSync(join(tmp, "diff"), 0o755);
        return extractLayer(input, join(tmp, "diff"), "overlay", diffId);
      },
      (tmp) => {
        // the short link points at the final location; it dangles until the rename commits
        const short = randomBytes(6).toString("base64url").replace(/[-_]/g, "x");
        fs.writeFileSync(join(tmp, "link"), short);
        fs.symlinkSync(`../layers/${hexOf(chainId)}/diff`, join(this.linksDir, short));
      },
    );
  }

  layerDir(chainId: string): string {
    return join(this.layersDir, hexOf(chainId), "diff");
  }

  adopt(key: string, layer: LayerSnapshot): void {
    if (this.hasLayer(layer.chainId)) return; // the same layer is here already
    const tmp = join(this.layersDir, tmpName());
    fs.mkdirSync(tmp);
    fs.renameSync(this.changes(key), join(tmp, "diff"));
    const short = randomBytes(6).toString("base64url").replace(/[-_]/g, "x");
    fs.writeFileSync(join(tmp, "link"), short);
    fs.symlinkSync(`../layers/${hexOf(layer.chainId)}/diff`, join(this.linksDir, short));
    this.finishAdopt(tmp, layer);
  }

  private shortOf(chainId: string): string {
    return fs.readFileSync(join(this.layersDir, hexOf(chainId), "link"), "utf8");
  }

  removeLayer(chainId: string): void {
    const dir = join(this.layersDir, hexOf(chainId));
    let short: string | undefined;
    try {
      short = this.shortOf(chainId);
    } catch {
      /* already half gone */
    }
    const tmp = join(this.layersDir, tmpName());
    try {
      fs.renameSync(dir, tmp);
    } catch {
      // already moved away by a concurrent removal
      return;
    }
    if (short) fs.rmSync(join(this.linksDir, short), { force: true });
    removeTree(tmp);
  }

  prepare(key: string, parent: string | undefined): void {
    if (parent) this.chain(parent);
    const tmp = join(this.activeDir, tmpName());
    try {
      fs.mkdirSync(join(tmp, "upper"), { recursive: true, mode: 0o755 });
      fs.mkdirSync(join(tmp, "work"));
      fs.writeFileSync(join(tmp, "parent"), parent ?? "");
      fs.renameSync(tmp, join(this.activeDir, key));
    } catch (e) {
      // a full disk fails it half-way: nothing of it stays
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /** The overlay's options, its paths relative to the store's root (or under `prefix`). */
  mountOptions(key: string, prefix = ""): string {
    const dir = join(this.activeDir, key);
    const parent = fs.readFileSync(join(dir, "parent"), "utf8");
    const lowers = parent ? this.chain(parent).map((l) => `${prefix}l/${this.shortOf(l.chainId)}`) : [];
    if (!lowers.length) {
      // overlay needs a lower dir: an empty one serves for images with no layers
      fs.mkdirSync(join(this.root, "empty"), { recursive: true });
      lowers.push(`${prefix}empty`);
    }
    return `lowerdir=${lowers.join(":")},upperdir=${prefix}active/${key}/upper,workdir=${prefix}active/${key}/work`;
  }

  /**
   * mount, the overlay mounted on the thread pool (its time in the kernel overlapping the caller's
   * work): with absolute paths, as a thread cannot change directory for itself alone — unless
   * they make the options longer than a page (a long chain of layers), which mount makes in place
   * with relative ones.
   */
  async mountAsync(key: string, target: string, opts: { volatile?: boolean } = {}): Promise<void> {
    if (!this.hasActive(key)) throw notFound(`snapshot ${key} does not exist`);
    const options = this.mountOptions(key, `${this.root}/`) + (opts.volatile && volatileSupported !== false ? ",volatile" : "");
    if (options.length > 4000) return this.mount(key, target, opts);
    removeTree(join(this.activeDir, key, "work", "work", "incompat")); // see mount
    try {
      await sysMountAsync("overlay", target, "overlay", 0, options);
      if (opts.volatile) volatileSupported = true;
    } catch (e) {
      if (!opts.volatile || volatileSupported || !(e instanceof SyscallError) || e.errno !== ERRNO.EINVAL) throw e;
      volatileSupported = false;
      await sysMountAsync("overlay", target, "overlay", 0, options.replace(/,volatile$/, ""));
    }
  }

  mount(key: string, target: string, opts: { volatile?: boolean } = {}): void {
    if (!this.hasActive(key)) throw notFound(`snapshot ${key} does not exist`);
    const options = this.mountOptions(key) + (opts.volatile && volatileSupported !== false ? ",volatile" : "");
    // a volatile mount leaves a mark that makes overlayfs refuse the next mount (its upper layer
    // may have missed writes in a crash): only --rm containers are mounted so, and one whose
    // start failed is mounted again (to start, or to copy from) with its upper layer as it is
    removeTree(join(this.activeDir, key, "work", "work", "incompat"));
    if (options.length > 4000) throw new BerthError("Unsupported", `image has too many layers to mount with overlayfs (${options.length} bytes of options)`);
    // relative lowerdirs resolve against the caller's working directory
    const cwd = process.cwd();
    process.chdir(this.root);
    try {
      try {
        sysMount("overlay", target, "overlay", 0, options);
        if (opts.volatile) volatileSupported = true;
      } catch (e) {
        // kernels before 5.10 know no volatile: the plain mount then
        if (!opts.volatile || volatileSupported || !(e instanceof SyscallError) || e.errno !== ERRNO.EINVAL) throw e;
        volatileSupported = false;
        sysMount("overlay", target, "overlay", 0, options.replace(/,volatile$/, ""));
      }
    } finally {
      process.chdir(cwd);
    }
  }

  changes(key: string): string {
    return join(this.activeDir, key, "upper");
  }

  dirs(key: string): string[] {
    const parent = fs.readFileSync(join(this.activeDir, key, "parent"), "utf8");
    return [this.changes(key), ...(parent ? this.chain(parent).map((l) => this.layerDir(l.chainId)) : [])];
  }

  rootlessRoot(key: string, target: string): { path: string; overlay?: string } {
    if (!this.hasActive(key)) throw notFound(`snapshot ${key} does not exist`);
    const abs = this.mountOptions(key).replace(/(lowerdir=|:|upperdir=|workdir=)(?!\/)/g, `$1${this.root}/`);
    return { path: target, overlay: `${abs},userxattr` };
  }
}

export class CopySnapshotter extends BaseSnapshotter implements Snapshotter {
  readonly kind = "copy" as const;

  applyLayer(chainId: string, parent: string | undefined, input: AsyncIterable<Buffer>, diffId?: string): Promise<ExtractResult> {
    return this.commitLayer(chainId, parent, async (tmp) => {
      const fsDir = join(tmp, "fs");
      if (parent) copyTree(this.layerDir(parent), fsDir);
      else fs.mkdirSync(fsDir, 0o755);
      return extractLayer(input, fsDir, "apply", diffId);
    });
  }

  adopt(key: string, layer: LayerSnapshot): void {
    if (this.hasLayer(layer.chainId)) return;
    const tmp = join(this.layersDir, tmpName());
    fs.mkdirSync(tmp);
    fs.renameSync(this.changes(key), join(tmp, "fs"));
    this.finishAdopt(tmp, layer);
  }

  layerDir(chainId: string): string {
    if (!this.hasLayer(chainId)) throw notFound(`layer snapshot ${chainId} is missing from the store`);
    return join(this.layersDir, hexOf(chainId), "fs");
  }

  removeLayer(chainId: string): void {
    const tmp = join(this.layersDir, tmpName());
    try {
      fs.renameSync(join(this.layersDir, hexOf(chainId)), tmp);
    } catch {
      // already moved away by a concurrent removal
      return;
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  prepare(key: string, parent: string | undefined): void {
    const tmp = join(this.activeDir, tmpName());
    fs.mkdirSync(tmp);
    try {
      if (parent) copyTree(this.layerDir(parent), join(tmp, "fs"));
      else fs.mkdirSync(join(tmp, "fs"), 0o755);
      fs.writeFileSync(join(tmp, "parent"), parent ?? "");
      fs.renameSync(tmp, join(this.activeDir, key));
    } catch (e) {
      fs.rmSync(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  mount(key: string, target: string): void {
    if (!this.hasActive(key)) throw notFound(`snapshot ${key} does not exist`);
    const MS_BIND = 4096,
      MS_REC = 16384;
    sysMount(join(this.activeDir, key, "fs"), target, null, MS_BIND | MS_REC, null);
  }

  async mountAsync(key: string, target: string): Promise<void> {
    this.mount(key, target); // a bind: no time worth a thread
  }

  changes(key: string): string {
    return join(this.activeDir, key, "fs");
  }

  dirs(key: string): string[] {
    return [this.changes(key)];
  }

  rootlessRoot(key: string): { path: string; overlay?: string } {
    if (!this.hasActive(key)) throw notFound(`snapshot ${key} does not exist`);
    return { path: this.changes(key) };
  }
}

/** cp -a with reflinks where the file system offers them: ownership, modes, times, xattrs, links. */
function copyTree(from: string, to: string): void {
  const r = spawnSync("cp", ["-a", "--reflink=auto", "--", from, to], { encoding: "utf8" });
  if (r.status !== 0) throw new BerthError("System", `copying ${from}: ${(r.stderr || r.error?.message || "").trim()}`);
}

export function unmount(target: string): void {
  umount(target, MNT_DETACH);
}

/** unmount() on a worker thread. */
export function unmountAsync(target: string): Promise<void> {
  return umountAsync(target, MNT_DETACH);
}

/**
 * overlay where the kernel has it, copy otherwise. The choice is recorded once per store (the
 * `driver` file), so snapshots made earlier stay readable; BERTH_SNAPSHOTTER or kind picks it first.
 */
export function openSnapshotter(root: string, kind?: "overlay" | "copy"): Snapshotter {
  const marker = join(root, "driver");
  let chosen = kind;
  if (!chosen) {
    try {
      chosen = fs.readFileSync(marker, "utf8").trim() as "overlay" | "copy";
    } catch {
      // no marker yet: this store chooses now
      chosen = overlayInKernel() ? "overlay" : "copy";
      fs.mkdirSync(root, { recursive: true });
      writeFileAtomic(marker, `${chosen}\n`);
    }
  }
  if (chosen !== "overlay" && chosen !== "copy") throw new BerthError("InvalidArgument", `unknown snapshotter ${JSON.stringify(chosen)} (overlay or copy)`);
  return chosen === "overlay" ? new OverlaySnapshotter(join(root, "overlay")) : new CopySnapshotter(join(root, "copy"));
}

function overlayInKernel(): boolean {
  try {
    return /\toverlay$/m.test(fs.readFileSync("/proc/filesystems", "utf8"));
  } catch {
    // no /proc/filesystems: no overlay to use
    return false;
  }
}

export { ExtractResult };
