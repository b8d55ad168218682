/** Error kinds a caller can act on. The daemon maps them to HTTP statuses in one table, the CLI to exit codes in one place. */
export type ErrorCode =
  | "NotFound"
  | "AlreadyExists"
  | "InvalidArgument"
  | "NotSupported"
  | "Conflict"
  | "Unavailable"
  | "Timeout"
  | "Cancelled"
  | "Backend"
  | "Internal";

/** Base of every error Convoy raises on purpose. */
export class ConvoyError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ConvoyError";
    this.code = code;
  }
}

/** The named object does not exist. */
export class NotFoundError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NotFound", message, options);
    this.name = "NotFoundError";
  }
}

/** An object with that name exists already. */
export class AlreadyExistsError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("AlreadyExists", message, options);
    this.name = "AlreadyExistsError";
  }
}

/** Bad input: a name, a size, an option, a URL. */
export class InvalidArgumentError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("InvalidArgument", message, options);
    this.name = "InvalidArgumentError";
  }
}

/** The driver does not offer this operation. */
export class NotSupportedError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NotSupported", message, options);
    this.name = "NotSupportedError";
  }
}

/** The object is in a state that forbids the operation (mounted, in use, busy). */
export class ConflictError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Conflict", message, options);
    this.name = "ConflictError";
  }
}

/** A storage backend or external command failed. */
export class BackendError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Backend", message, options);
    this.name = "BackendError";
  }
}

/** An external command or operation took longer than allowed. */
export class TimeoutError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Timeout", message, options);
    this.name = "TimeoutError";
  }
}

/** The caller cancelled the operation. */
export class CancelledError extends ConvoyError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("Cancelled", message, options);
    this.name = "CancelledError";
  }
}

/** True when `err` is a ConvoyError with the given code. */
export function isErrorCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof ConvoyError && err.code === code;
}

/** The message of any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * `err` with context for a caller: a ConvoyError other than BackendError as is; anything else
 * (a failed command, a plain error) as a BackendError `<prefix>: <message>` caused by `err`.
 */
export function wrapError(err: unknown, prefix: string): unknown {
  if (err instanceof ConvoyError && !(err instanceof BackendError)) return err;
  return new BackendError(`${prefix}: ${errorMessage(err)}`, { cause: err });
}
