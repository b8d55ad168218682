import type { ErrorCode } from "../api/errors.ts";

/** The one table from error code to HTTP status. */
export const STATUS_BY_CODE: Record<ErrorCode, number> = {
  NotFound: 404,
  AlreadyExists: 409,
  Conflict: 409,
  InvalidArgument: 400,
  NotSupported: 400,
  Cancelled: 499,
  Unavailable: 503,
  Timeout: 504,
  Backend: 500,
  Internal: 500,
};

/** The error code of any thrown value: ConvoyErrors (also from other module copies) carry one. */
export function codeOf(err: unknown): ErrorCode {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code in STATUS_BY_CODE ? code as ErrorCode : "Internal";
}

/** HTTP status for any thrown value. */
export function statusOf(err: unknown): number {
  return STATUS_BY_CODE[codeOf(err)];
}
