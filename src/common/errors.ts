/**
 * One error vocabulary for all of berth, in the manner of containerd's errdefs and pnpm's coded
 * errors: every error a user can see is a BerthError with a kind (its category), a code (which
 * error it is, stable for scripts and for the transports), a one-line message that names the
 * problem and, where it helps, a hint: what to do about it. Transports map them in one place
 * each: the CLI's exit statuses by code (cli/berth/main.ts), the API's HTTP statuses by kind.
 */
export type ErrorKind =
  | "InvalidArgument" // bad input: a flag, a config.json field, a reference
  | "NotFound" // a container, image, file that does not exist
  | "AlreadyExists" // a duplicate id or name
  | "FailedPrecondition" // the object is in the wrong state ("container not running")
  | "Unsupported" // a feature this host or this berth does not have yet
  | "System"; // the kernel or the helper refused

/** What an error may carry besides its kind and message. */
export interface ErrorDetails {
  cause?: unknown;
  /** Which error this is (BERTH_…); the kind's own code when not given. */
  code?: string;
  /** What the user can do about it, one short sentence. */
  hint?: string;
}

const kindCode = (kind: ErrorKind) => `BERTH_${kind.replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase()}`;

export class BerthError extends Error {
  readonly kind: ErrorKind;
  readonly code: string;
  readonly hint?: string;
  constructor(kind: ErrorKind, message: string, details: ErrorDetails = {}) {
    super(message, details.cause !== undefined ? { cause: details.cause } : undefined);
    this.kind = kind;
    this.code = details.code ?? kindCode(kind);
    if (details.hint) this.hint = details.hint;
    this.name = `BerthError(${kind})`;
  }
}

/** The codes the front ends treat apart from their kind (the CLI's exit statuses). */
export const ErrorCode = {
  /** bad flags or arguments: docker's usage error, exit 125 */
  USAGE: "BERTH_USAGE",
  /** run/create/exec failed in the engine, not in the container's command: exit 125 */
  RUN_FAILED: "BERTH_RUN_FAILED",
  /** the container's command does not exist: exit 127 */
  COMMAND_NOT_FOUND: "BERTH_COMMAND_NOT_FOUND",
  /** the container's command cannot be executed: exit 126 */
  COMMAND_NOT_EXECUTABLE: "BERTH_COMMAND_NOT_EXECUTABLE",
  /** a file system is full */
  NO_SPACE: "BERTH_NO_SPACE",
  /** berth's C build is missing or does not load */
  NOT_BUILT: "BERTH_NOT_BUILT",
} as const;

export const invalid = (message: string, details?: ErrorDetails) => new BerthError("InvalidArgument", message, details);
export const notFound = (message: string, details?: ErrorDetails) => new BerthError("NotFound", message, details);
export const exists = (message: string, details?: ErrorDetails) => new BerthError("AlreadyExists", message, details);
export const precondition = (message: string, details?: ErrorDetails) => new BerthError("FailedPrecondition", message, details);
export const unsupported = (message: string, details?: ErrorDetails) => new BerthError("Unsupported", message, details);

/** The message and, where there is one, the hint: what a transport without a hint line shows. */
export const withHint = (e: unknown): string => (e instanceof BerthError && e.hint ? `${e.message} (${e.hint})` : errorMessage(e));

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

/** What to do about a full disk. */
export const noSpaceHint = "free space on that file system (`berth system prune` removes what berth does not need)";

export function errorMessage(err: unknown): string {
  if (err instanceof Error) {
    // a full disk reads the same whichever write met it, and says what to do
    const e = err as NodeJS.ErrnoException;
    if (e.code === "ENOSPC" && !(err instanceof BerthError)) return `no space left on device${e.path ? ` (writing ${e.path})` : ""}: ${noSpaceHint}`;
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

/** A failed fs call's error with the path it wrote (Node names none when a write after the open fails). */
export function withPath(err: unknown, path: string): unknown {
  const e = err as NodeJS.ErrnoException;
  if (e?.code && !e.path) e.path = path;
  return err;
}

/** Whether a failed fs call failed because the path does not exist. */
export const isNotFound = (err: unknown): boolean => (err as NodeJS.ErrnoException)?.code === "ENOENT" || (err as NodeJS.ErrnoException)?.code === "ENOTDIR";
