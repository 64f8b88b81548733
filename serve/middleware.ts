/**
 * Middleware factories (Hono style: an options object in, a named middleware out) and the error
 * renderer that turns every failure into an OpenAI error body.
 * @module
 */
import type { Context, MiddlewareHandler, Next } from "hono";
import { ApiError } from "./errors.ts";

/** Options of {@link apiKeyAuth}. */
export interface ApiKeyAuthOptions {
  /** The key clients must send as `Authorization: Bearer <key>`. */
  apiKey: string;
}

/** Compares two strings in time independent of where they differ. */
function sameKey(a: string, b: string): boolean {
  const x = new TextEncoder().encode(a), y = new TextEncoder().encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

/**
 * Requires `Authorization: Bearer <apiKey>`; answers 401 with an OpenAI error body otherwise.
 *
 * @param options the key
 * @returns the middleware
 */
export function apiKeyAuth(options: ApiKeyAuthOptions): MiddlewareHandler {
  const key = options.apiKey;
  return async function apiKeyAuthMiddleware(c: Context, next: Next): Promise<void> {
    if (c.req.method === "OPTIONS") return await next();
    const header = c.req.header("authorization");
    if (!header) {
      throw new ApiError(401, "Missing API key: send it as 'Authorization: Bearer <key>'", {
        code: "missing_api_key",
        headers: { "WWW-Authenticate": 'Bearer realm="minimind"' },
      });
    }
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!m || !sameKey(m[1], key)) {
      throw new ApiError(401, "Incorrect API key provided", {
        code: "invalid_api_key",
        headers: { "WWW-Authenticate": 'Bearer realm="minimind", error="invalid_token"' },
      });
    }
    await next();
  };
}

/** Options of {@link bodyLimit}. */
export interface BodyLimitOptions {
  /** Largest accepted Content-Length in bytes. */
  maxBytes: number;
}

/**
 * Refuses a request whose declared Content-Length exceeds the limit with 413 before any of it is
 * read (the JSON reader enforces the limit again while reading, for chunked bodies).
 *
 * @param options the limit
 * @returns the middleware
 */
export function bodyLimit(options: BodyLimitOptions): MiddlewareHandler {
  return async function bodyLimitMiddleware(c: Context, next: Next): Promise<void> {
    const n = c.req.header("content-length");
    if (n && Number(n) > options.maxBytes) {
      throw new ApiError(
        413,
        `Request body of ${n} bytes is larger than the limit of ${options.maxBytes} bytes`,
        { code: "request_too_large" },
      );
    }
    await next();
  };
}

/**
 * Renders any error as an OpenAI error reply: `ApiError`s with their status, anything else as a
 * 500 (logged; the message is passed on, the stack is not).
 *
 * @param err the error
 * @param c the context
 * @returns the response
 */
export function renderError(err: Error, c: Context): Response {
  if (err instanceof ApiError) {
    for (const [k, v] of Object.entries(err.headers)) c.header(k, v);
    return c.json(err.toBody(), err.status);
  }
  console.error("serve: unhandled error:", err);
  const e = new ApiError(500, `Internal server error: ${err.message}`);
  return c.json(e.toBody(), 500);
}
