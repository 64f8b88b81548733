/**
 * OpenAI-style errors: every failure the server answers is `{"error": {message, type, param,
 * code}}` with a matching HTTP status, the shape the official clients parse.
 * @module
 */

/** The HTTP statuses the server answers errors with. */
export type ErrorStatus = 400 | 401 | 403 | 404 | 405 | 408 | 413 | 415 | 429 | 500 | 503;

/** The JSON body of an error reply. */
export interface ErrorBody {
  /** The error. */
  error: {
    /** What went wrong, with the values involved. */
    message: string;
    /** `invalid_request_error`, `authentication_error`, `not_found_error`, … */
    type: string;
    /** The request field at fault, e.g. `messages[0].role`, or null. */
    param: string | null;
    /** A machine-readable code, e.g. `context_length_exceeded`, or null. */
    code: string | null;
  };
}

const TYPES: Record<ErrorStatus, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  405: "invalid_request_error",
  408: "invalid_request_error",
  413: "invalid_request_error",
  415: "invalid_request_error",
  429: "rate_limit_error",
  500: "server_error",
  503: "server_error",
};

/** An error that becomes an OpenAI error reply. Throw it from a handler; `onError` renders it. */
export class ApiError extends Error {
  /** HTTP status. */
  readonly status: ErrorStatus;
  /** The request field at fault, or null. */
  readonly param: string | null;
  /** Machine-readable code, or null. */
  readonly code: string | null;
  /** Error type (defaults from the status). */
  readonly type: string;
  /** Extra response headers (e.g. `Retry-After`). */
  readonly headers: Record<string, string>;

  /**
   * Creates an error reply.
   *
   * @param status HTTP status
   * @param message what went wrong, with the values involved
   * @param options the field at fault, a code, a type override, extra headers
   */
  constructor(
    status: ErrorStatus,
    message: string,
    options: {
      param?: string | null;
      code?: string | null;
      type?: string;
      headers?: Record<string, string>;
    } = {},
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.param = options.param ?? null;
    this.code = options.code ?? null;
    this.type = options.type ?? TYPES[status];
    this.headers = options.headers ?? {};
  }

  /** The JSON body for this error. */
  toBody(): ErrorBody {
    return {
      error: { message: this.message, type: this.type, param: this.param, code: this.code },
    };
  }
}

/** A 400 naming the field at fault. */
export function badRequest(param: string | null, message: string, code?: string): ApiError {
  return new ApiError(400, message, { param, code: code ?? null });
}
