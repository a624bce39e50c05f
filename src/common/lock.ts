/**
 * Advisory file locks (flock) shared by concurrent berth processes. The kernel drops a lock when
 * its holder dies, so a killed berth never leaves the store locked.
 */
import * as fs from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { dirname } from "node:path";
import { BerthError } from "./errors.js";
import { LOCK_EX, LOCK_SH, LOCK_UN, tryFlock } from "./sys.js";

export class FileLock {
  private constructor(private fd: number) {}

  static async acquire(path: string, mode: "shared" | "exclusive", timeoutMs = 600_000): Promise<FileLock> {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const op = mode === "shared" ? LOCK_SH : LOCK_EX;
    const deadline = Date.now() + timeoutMs;
    for (let wait = 2; !tryFlock(fd, op); wait = Math.min(wait * 2, 100)) {
      if (Date.now() > deadline) {
        fs.closeSync(fd);
        throw new Error(`timed out waiting for the lock ${path} (another berth command holds it)`);
      }
      await sleep(wait);
    }
    return new FileLock(fd);
  }

  /** Take the lock only if it is free right now. */
  static tryAcquire(path: string, mode: "shared" | "exclusive"): FileLock | undefined {
    const fd = fs.openSync(path, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    if (tryFlock(fd, mode === "shared" ? LOCK_SH : LOCK_EX)) return new FileLock(fd);
    fs.closeSync(fd);
    return undefined;
  }

  release(): void {
    if (this.fd < 0) return;
    tryFlock(this.fd, LOCK_UN);
    fs.closeSync(this.fd);
    this.fd = -1;
  }
}

export async function withLock<T>(path: string, mode: "shared" | "exclusive", fn: () => Promise<T> | T): Promise<T> {
  const lock = await FileLock.acquire(path, mode);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}

/**
 * Write a file so readers see either the old or the new content, never a mix (also after a crash).
 * durable: fsync before the rename, so the new content survives a power loss too (the image
 * metadata); state that a reboot makes stale anyway (a container's state) skips it.
 */
export function writeFileAtomic(path: string, data: string | Buffer, durable = true, opts: { inPlaceWhenFull?: boolean } = {}): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    const fd = fs.openSync(tmp, "w", 0o644);
    try {
      fs.writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
      if (durable) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
  } catch (e) {
    // no partial file stays (a full disk fails the write half-way)
    try {
      fs.unlinkSync(tmp);
    } catch {
      /* never made */
    }
    if ((e as NodeJS.ErrnoException).code === "ENOSPC" && opts.inPlaceWhenFull && overwriteInPlace(path, typeof data === "string" ? Buffer.from(data) : data)) return;
    if ((e as NodeJS.ErrnoException).code === "ENOSPC") throw new BerthError("System", `no space left on device (writing ${path}): free space on that file system (\`berth system prune\` removes what berth does not need)`, { cause: e });
    throw e;
  }
  // the rename itself survives a power loss only once its directory is on disk
  if (durable) fsyncDir(dirname(path));
}

/**
 * A full disk has no block for a new file, but the old one's blocks are there: the content is
 * written over them when it fits (not atomic: a crash during this write leaves a torn file, which
 * readers of such state must treat as lost). False when it does not fit or the file is not there.
 */
function overwriteInPlace(path: string, data: Buffer): boolean {
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, fs.constants.O_WRONLY);
    if (fs.fstatSync(fd).blocks * 512 < data.length) return false;
    fs.writeSync(fd, data, 0, data.length, 0);
    fs.ftruncateSync(fd, data.length);
    return true;
  } catch {
    return false; // the file is gone, or even this write failed: the caller reports the full disk
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** fsync a directory (its entries: a rename or a new file in it). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.fsyncSync(fd);
  } catch {
    /* a file system that cannot sync directories: the data itself was synced */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Whether some process holds the lock file at path now (a missing file: no one). Creates nothing. */
export function lockHeld(path: string): boolean {
  let fd: number;
  try {
    fd = fs.openSync(path, fs.constants.O_RDWR);
  } catch {
    // no lock file (or unreadable): nobody holds it
    return false;
  }
  try {
    if (!tryFlock(fd, LOCK_EX)) return true;
    tryFlock(fd, LOCK_UN);
    return false;
  } finally {
    fs.closeSync(fd);
  }
}
