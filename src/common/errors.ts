/**
 * One error vocabulary for all of berth, in the manner of containerd's errdefs: every error a
 * user can see is a BerthError with a kind, a one-line message that names the problem, and,
 * where it helps, what to do about it. Transports (the CLI's exit codes, later the API's HTTP
 * statuses) map kinds in exactly one place each.
 */
export type ErrorKind =
  | "InvalidArgument" // bad input: a flag, a config.json field, a reference
  | "NotFound" // a container, image, file that does not exist
  | "AlreadyExists" // a duplicate id or name
  | "FailedPrecondition" // the object is in the wrong state ("container not running")
  | "Unsupported" // a feature this host or this berth does not have yet
  | "System"; // the kernel or the helper refused

export class BerthError extends Error {
  readonly kind: ErrorKind;
  constructor(kind: ErrorKind, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.name = `BerthError(${kind})`;
  }
}

export const invalid = (message: string) => new BerthError("InvalidArgument", message);
export const notFound = (message: string) => new BerthError("NotFound", message);
export const exists = (message: string) => new BerthError("AlreadyExists", message);
export const precondition = (message: string) => new BerthError("FailedPrecondition", message);
export const unsupported = (message: string) => new BerthError("Unsupported", message);

/** A step inside berth-helper failed: which step, the errno, and the helper's words. */
export class HelperError extends BerthError {
  readonly stage: string;
  readonly errno: number;
  constructor(stage: string, errno: number, message: string) {
    super("System", message);
    this.stage = stage;
    this.errno = errno;
    this.name = "HelperError";
  }
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    // a full disk reads the same whichever write met it, and says what to do
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOSPC" && !(err instanceof BerthError)) return `no space left on device${e.path ? ` (writing ${e.path})` : ""}: free space on that file system (\`berth system prune\` removes what berth does not need)`;
    return err.message;
  }
  return String(err);
}

/** The kernel's words in a failed fs call ("no such file or directory", "permission denied"), as Go's errors print them. */
export function fsCause(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  if (!e?.code) return errorMessage(err);
  return e.message.replace(/^E[A-Z0-9]+: /, "").replace(/, \w+ '.*'$/s, "");
}

/** Whether a failed fs call failed because the path does not exist. */
export const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === "ENOENT" || (err as NodeJS.ErrnoException)?.code === "ENOTDIR";
