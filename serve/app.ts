/**
 * `createApp(deps)`: the Hono app of the OpenAI-compatible server and the chat page. It binds no
 * port (`serve.ts` does); test it with `app.request()`.
 * @module
 */
import { Hono } from "hono";
import type { Tokenizer } from "../data/tokenizer.ts";
import { ApiError } from "./errors.ts";
import { MiniMindEngine, type PrefixCacheStats, type ServeModel } from "./engine.ts";
import { apiKeyAuth, bodyLimit, jsonOnly, originGuard, renderError } from "./middleware.ts";
import {
  chatCompletions,
  completions,
  detokenize,
  modelEntry,
  type RouteDeps,
  tokenize,
} from "./openai.ts";
import { responses } from "./responses.ts";
import { CHAT_PAGE_HTML } from "./page.ts";
import { type Tool, toolSchema } from "./tools.ts";
import { type Engine, Scheduler, type SchedulerOptions, type SchedulerStats } from "./scheduler.ts";
import type { RequestDefaults, RequestLimits } from "./validate.ts";

/** Default request limits. */
export const DEFAULT_LIMITS: RequestLimits = {
  maxBodyBytes: 1 << 20,
  maxContextTokens: 4096,
  maxCompletionTokens: 4096,
  maxMessages: 512,
  maxStop: 4,
  bodyTimeoutMs: 30_000,
};

/** Default sampling (MiniMind's `serve_openai_api.py`: temperature 0.7, top_p 0.92; top_k 50). */
export const DEFAULT_REQUEST_DEFAULTS: RequestDefaults = {
  temperature: 0.7,
  topP: 0.92,
  topK: 50,
  maxTokens: 512,
};

/**
 * Refuses a tokenizer whose chat template does not render a one-message conversation: served,
 * it would fail every chat request.
 */
function checkChatTemplate(tok: Tokenizer): void {
  if (tok.config.chat_template === undefined) return; // /v1/chat/completions answers 500
  try {
    tok.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true });
  } catch (e) {
    throw new Error(`Cannot serve with this tokenizer's chat template: ${(e as Error).message}`);
  }
}

/** What `createApp` needs. */
export interface CreateAppOptions {
  /** The model: config + params (e.g. from `loadModel`). */
  model: ServeModel;
  /** The tokenizer (with its chat template). */
  tokenizer: Tokenizer;
  /** Model id reported by `/v1/models`, carried by replies and accepted in requests (default "minimind"). */
  modelId?: string;
  /**
   * Other ids requests may name for the same model, also listed by `/v1/models` (default
   * `["minimind"]`, the id the README's client examples use).
   */
  modelAliases?: string[];
  /**
   * Web origins, besides the server's own, whose pages may call `/v1` (e.g.
   * `"http://localhost:3000"`, or `"*"` for any). Default none: a request that carries an
   * `Origin` header from another site gets 403, so a page the user visits cannot drive the server.
   */
  corsOrigins?: string[];
  /** Require `Authorization: Bearer <apiKey>` on `/v1/*` (default: no key). */
  apiKey?: string | null;
  /** Request limits (defaults: {@link DEFAULT_LIMITS}). */
  limits?: Partial<RequestLimits>;
  /** Defaults for omitted request fields (defaults: {@link DEFAULT_REQUEST_DEFAULTS}). */
  defaults?: Partial<RequestDefaults>;
  /** Batch size, queue bound and timeouts of the scheduler. */
  scheduler?: SchedulerOptions;
  /** Serve the chat page at `/` (default true). */
  page?: boolean;
  /** An engine to use instead of the MiniMind engine built from `model` (advanced). */
  engine?: Engine;
  /**
   * Bytes of finished requests' keys and values the engine keeps, so that a prompt starting
   * with the same tokens (a chat's next turn, a shared system prompt) prefills only the rest
   * (default 64 MiB; 0 = off).
   */
  prefixCacheBytes?: number;
  /**
   * Tools the server runs itself (`serve.ts --tools builtin`): a request that offers one of them
   * gets the tool loop — calls run here, results fed back, the next turn generated — and the
   * executed calls reported as `executed_tool_calls`. Calls of other tools go back to the client
   * as `tool_calls` (OpenAI behaviour; with no tools here, the only behaviour). Listed at
   * `GET /v1/tools`.
   */
  tools?: readonly Tool[];
  /** Most assistant turns per request while the server runs tools (default 4). */
  maxToolTurns?: number;
}

/** The server app: a Hono app (`fetch`, `request`) plus lifecycle and counters. */
export interface ServeApp {
  /**
   * Handles a request (pass it to `Deno.serve`).
   *
   * @param request the request
   * @returns the response
   */
  fetch(request: Request, ...rest: unknown[]): Response | Promise<Response>;
  /**
   * Sends a request to the app without a socket (tests).
   *
   * @param input a path such as "/v1/models", a URL or a Request
   * @param init method, headers, body
   * @returns the response
   */
  request(input: string | URL | Request, init?: RequestInit): Response | Promise<Response>;
  /** Stops accepting requests, cancels running ones, and waits for the batching loop to end. */
  close(): Promise<void>;
  /** Scheduler counters (running, waiting, steps, tokens, largest batch) and the prefix cache's. */
  stats(): SchedulerStats & { prefixCache: PrefixCacheStats | null };
}

/**
 * Builds the OpenAI-compatible server app: `POST /v1/chat/completions`, `POST /v1/completions`,
 * `POST /v1/responses`, `GET /v1/models`, `GET /v1/tools` (the tools the server runs),
 * `POST /tokenize`, `POST /detokenize`, `GET /health`, and the chat page at `/`.
 *
 * @param options model, tokenizer, key, limits, defaults, scheduler settings
 * @returns the app (bind it with `Deno.serve(app.fetch)`)
 * @example
 * ```ts ignore
 * import * as mm from "@minimind/ts";
 * const cfg = mm.config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * const tokenizer = await mm.Tokenizer.fromFile("tokenizer.json");
 * const app = mm.createApp({ model: { cfg, params: mm.init(cfg, mm.random.key(0)) }, tokenizer });
 * const res = await app.request("/v1/chat/completions", {
 *   method: "POST",
 *   headers: { "content-type": "application/json" },
 *   body: JSON.stringify({ messages: [{ role: "user", content: "你好" }], max_tokens: 8 }),
 * });
 * console.log((await res.json()).choices[0].message.content);
 * await app.close();
 * ```
 */
export function createApp(options: CreateAppOptions): ServeApp {
  if (options.apiKey === "") {
    throw new Error("Invalid API key: empty (pass a non-empty key, or none for no authentication)");
  }
  checkChatTemplate(options.tokenizer);
  const limits = { ...DEFAULT_LIMITS, ...options.limits };
  const defaults = { ...DEFAULT_REQUEST_DEFAULTS, ...options.defaults };
  const engine = options.engine ??
    new MiniMindEngine(options.model, {
      maxPositions: limits.maxContextTokens + 1,
      prefixCacheBytes: options.prefixCacheBytes,
    });
  const scheduler = new Scheduler(engine, options.scheduler);
  const tok = options.tokenizer;
  tok.minTokens(""); // finds the longest token now rather than during the first request
  const stopIds = new Set<number>([options.model.cfg.eosTokenId]);
  if (tok.eosId >= 0) stopIds.add(tok.eosId);
  const modelId = options.modelId ?? "minimind";
  const deps: RouteDeps = {
    scheduler,
    tokenizer: tok,
    modelId,
    modelIds: [...new Set([modelId, ...options.modelAliases ?? ["minimind"]])],
    created: Math.floor(Date.now() / 1000),
    limits,
    defaults,
    stopIds,
    tools: options.tools ?? [],
    maxToolTurns: options.maxToolTurns ?? 4,
  };

  const app = new Hono();
  app.onError(renderError);
  app.notFound((c) => {
    const e = new ApiError(404, `Unknown route: ${c.req.method} ${new URL(c.req.url).pathname}`, {
      code: "unknown_route",
    });
    return c.json(e.toBody(), 404);
  });
  // the API, and llama.cpp's / vLLM's token routes beside it, behind the same guards
  for (const path of ["/v1/*", "/tokenize", "/detokenize"]) {
    app.use(path, originGuard({ allow: options.corsOrigins ?? [] }));
    if (options.apiKey) app.use(path, apiKeyAuth({ apiKey: options.apiKey }));
    app.use(path, bodyLimit({ maxBytes: limits.maxBodyBytes }));
    app.use(path, jsonOnly());
  }

  app.get("/health", (c) => {
    const s = scheduler.stats;
    return c.json({ status: "ok", model: deps.modelId, running: s.running, waiting: s.waiting });
  });
  app.get(
    "/v1/models",
    (c) => c.json({ object: "list", data: deps.modelIds.map((id) => modelEntry(deps, id)) }),
  );
  app.get("/v1/models/:id", (c) => {
    const id = c.req.param("id");
    if (!deps.modelIds.includes(id)) {
      throw new ApiError(404, `The model '${id}' does not exist`, {
        param: "model",
        code: "model_not_found",
      });
    }
    return c.json(modelEntry(deps, id));
  });
  app.get("/v1/tools", (c) => c.json({ object: "list", data: deps.tools.map(toolSchema) }));
  app.post("/v1/chat/completions", chatCompletions(deps));
  app.post("/v1/completions", completions(deps));
  app.post("/v1/responses", responses(deps));
  app.post("/tokenize", tokenize(deps));
  app.post("/detokenize", detokenize(deps));
  for (const path of ["/v1/chat/completions", "/v1/completions", "/v1/responses"]) {
    app.on(["GET", "PUT", "DELETE", "PATCH"], path, (c) => {
      throw new ApiError(405, `Method ${c.req.method} is not allowed on ${path}; use POST`, {
        code: "method_not_allowed",
        headers: { Allow: "POST, OPTIONS" },
      });
    });
  }
  if (options.page ?? true) {
    app.get("/", (c) => {
      c.header("Cache-Control", "no-cache");
      c.header(
        "Content-Security-Policy",
        "default-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
      );
      return c.html(CHAT_PAGE_HTML);
    });
  }

  return Object.assign(app, {
    close: async () => {
      await scheduler.close();
      if (engine instanceof MiniMindEngine) engine.dispose();
    },
    stats: () => ({
      ...scheduler.stats,
      prefixCache: engine instanceof MiniMindEngine ? engine.prefixStats : null,
    }),
  }) as unknown as ServeApp;
}
