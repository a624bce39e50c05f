/**
 * Named volumes, docker's "local" driver: a directory per volume, <root>/volumes/<name>/_data,
 * with its metadata beside it (meta.json). Created explicitly (`volume create`) or on first use by
 * a container (`-v name:/path`); anonymous volumes (an image's VOLUME, `-v /path`) get a random
 * 64-hex name and are marked so `volume prune` removes them by default, as docker 23+ does.
 */
import * as fs from "node:fs";
import { join } from "../common/path.js";
import { randomBytes } from "node:crypto";
import { exists, invalid, notFound } from "../common/errors.js";

export interface Volume {
  Name: string;
  Driver: "local";
  Mountpoint: string;
  CreatedAt: string;
  Labels: Record<string, string>;
  Options: Record<string, string> | null;
  Scope: "local";
  /** berth's record of an anonymous volume (docker keeps it as a label). */
  Anonymous?: boolean;
}

const nameRe = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

export class VolumeStore {
  readonly dir: string;

  constructor(root: string) {
    this.dir = join(root, "volumes");
  }

  private meta(name: string): string {
    return join(this.dir, name, "meta.json");
  }

  get(name: string): Volume {
    try {
      return JSON.parse(fs.readFileSync(this.meta(name), "utf8")) as Volume;
    } catch {
      // no (or a torn) metadata file: a volume made by another tool is adopted; none is not found
      if (fs.existsSync(join(this.dir, name, "_data"))) return this.record(name, {}, false);
      throw notFound(`get ${name}: no such volume`);
    }
  }

  has(name: string): boolean {
    return fs.existsSync(join(this.dir, name, "_data"));
  }

  private record(name: string, labels: Record<string, string>, anonymous: boolean, options: Record<string, string> | null = null): Volume {
    return { Name: name, Driver: "local", Mountpoint: join(this.dir, name, "_data"), CreatedAt: new Date().toISOString(), Labels: labels, Options: options, Scope: "local", ...(anonymous ? { Anonymous: true } : {}) };
  }

  /** docker volume create: an existing volume of that name is returned as it is. */
  create(name: string | undefined, opts: { labels?: Record<string, string>; driver?: string; options?: Record<string, string>; anonymous?: boolean } = {}): Volume {
    if (opts.driver && opts.driver !== "local") throw invalid(`error looking up volume plugin ${opts.driver}: plugin "${opts.driver}" not found`);
    if (opts.options && Object.keys(opts.options).length) throw invalid(`the local driver's options (${Object.keys(opts.options).join(", ")}) are not supported by berth yet`);
    const n = name ?? randomBytes(32).toString("hex");
    if (!nameRe.test(n)) throw invalid(`create ${n}: "${n}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`);
    if (this.has(n)) return this.get(n);
    fs.mkdirSync(join(this.dir, n, "_data"), { recursive: true, mode: 0o755 });
    const v = this.record(n, opts.labels ?? {}, !!opts.anonymous, opts.options ?? null);
    fs.writeFileSync(this.meta(n), JSON.stringify(v));
    return v;
  }

  list(): Volume[] {
    let names: string[] = [];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      // no volumes directory yet: none
      return [];
    }
    return names.filter((n) => nameRe.test(n) && this.has(n)).map((n) => this.get(n));
  }

  remove(name: string, usedBy: string[], force = false): void {
    if (!this.has(name)) {
      if (force) return;
      throw notFound(`get ${name}: no such volume`);
    }
    if (usedBy.length) throw exists(`remove ${name}: volume is in use - [${usedBy.join(", ")}]`);
    const tmp = join(this.dir, `.removing-${name}-${process.pid}`);
    fs.renameSync(join(this.dir, name), tmp);
    fs.rmSync(tmp, { recursive: true, force: true });
  }

  /** The `.removing-*` directories of removals whose process died (removed unless dryRun). */
  leftovers(dryRun = false): string[] {
    const out: string[] = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.dir);
    } catch {
      // no volumes directory yet: none
      return [];
    }
    for (const n of names) {
      const m = /^\.removing-(.+)-(\d+)$/.exec(n);
      if (!m || processAlive(Number(m[2]))) continue;
      out.push(`volume ${m[1]} (an unfinished removal)`);
      if (!dryRun) fs.rmSync(join(this.dir, n), { recursive: true, force: true });
    }
    return out;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
