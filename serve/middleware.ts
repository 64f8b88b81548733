/**
 * Middleware factories (Hono style: an options object in, a named middleware out) and the error
 * renderer that turns every failure into an OpenAI error body.
 * @module
 */
import type { Context, MiddlewareHandler, Next } from "hono";
import { cors } from "hono/cors";
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

/** Options of {@link originGuard}. */
export interface OriginGuardOptions {
  /** Web origins allowed besides the server's own (`"*"`: any). */
  allow: readonly string[];
}

/** Whether a browser's `Origin` is the server's own (same host and port as the request's URL). */
function sameOrigin(origin: string, c: Context): boolean {
  try {
    return new URL(origin).host === new URL(c.req.url).host;
  } catch {
    return false; // "null" (a sandboxed frame, a file:// page) or garbage
  }
}

/**
 * Lets browsers call the API only from the server's own page and the allowed origins (CORS
 * headers for those); a request whose `Origin` is another site gets 403 before anything runs.
 * Requests without an `Origin` (curl, SDKs, servers) pass. Like Ollama's `OLLAMA_ORIGINS`.
 *
 * @param options the allowed origins
 * @returns the middleware
 */
export function originGuard(options: OriginGuardOptions): MiddlewareHandler {
  const any = options.allow.includes("*");
  const allowed = new Set(options.allow.map((o) => o.replace(/\/+$/, "")));
  const corsHeaders = cors({
    origin: any ? "*" : (o) => allowed.has(o) ? o : null,
    allowHeaders: ["Authorization", "Content-Type"],
    allowMethods: ["GET", "POST", "OPTIONS"],
  });
  return async function originGuardMiddleware(c: Context, next: Next): Promise<Response | void> {
    const origin = c.req.header("origin");
    if (origin === undefined || (!any && !allowed.has(origin) && sameOrigin(origin, c))) {
      return await next();
    }
    if (any || allowed.has(origin)) return await corsHeaders(c, next);
    throw new ApiError(
      403,
      `Requests from the web origin ${origin} are not allowed: the API answers its own page and ` +
        `non-browser clients; start the server with --cors ${origin} to let that site call it`,
      { code: "origin_not_allowed" },
    );
  };
}

/**
 * Answers 415 to a POST whose body is not declared JSON (`application/json` or `…+json`): a
 * web page can send `text/plain` to any address without asking first, JSON it cannot.
 *
 * @returns the middleware
 */
export function jsonOnly(): MiddlewareHandler {
  return async function jsonOnlyMiddleware(c: Context, next: Next): Promise<void> {
    if (c.req.method === "POST") {
      const type = c.req.header("content-type") ?? "";
      if (!/^application\/([\w.-]+\+)?json\s*(;|$)/i.test(type)) {
        throw new ApiError(
          415,
          `Unsupported Content-Type ${
            type ? JSON.stringify(type) : "(none)"
          }: send the body as application/json`,
          { code: "unsupported_media_type" },
        );
      }
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
