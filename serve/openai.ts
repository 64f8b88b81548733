/**
 * The OpenAI routes as thin handlers: validate → template + tokenize → submit to the scheduler →
 * answer JSON or SSE (`chat.completion.chunk` objects, role first, `finish_reason` last, an
 * optional usage chunk with `choices: []`, then `data: [DONE]`).
 * @module
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { Tokenizer } from "../data/tokenizer.ts";
import { ApiError, badRequest } from "./errors.ts";
import { ReplyParser, type ToolCall } from "./reply_parser.ts";
import { replyText } from "./reply.ts";
import type { Job, Scheduler } from "./scheduler.ts";
import {
  type ChatRequest,
  parseChatRequest,
  parseCompletionRequest,
  type RequestDefaults,
  type RequestLimits,
  type SamplingSettings,
} from "./validate.ts";

/** What the handlers share. */
export interface RouteDeps {
  /** The batching scheduler. */
  scheduler: Scheduler;
  /** Tokenizer with a chat template. */
  tokenizer: Tokenizer;
  /** The served model id. */
  modelId: string;
  /** Unix seconds of start-up (`created` of the model). */
  created: number;
  /** Request limits. */
  limits: RequestLimits;
  /** Request defaults. */
  defaults: RequestDefaults;
  /** End-of-sequence token ids. */
  stopIds: ReadonlySet<number>;
}

/** Usage block of a reply. */
interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

function usageOf(job: Job): Usage {
  return {
    prompt_tokens: job.promptTokens,
    completion_tokens: job.completionTokens,
    total_tokens: job.promptTokens + job.completionTokens,
  };
}

function newId(prefix: string): string {
  const r = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Reads and parses a JSON body, enforcing the byte limit while reading (a missing or lying
 * Content-Length cannot get past it).
 *
 * @param c the request context
 * @param maxBytes the limit
 * @returns the parsed value
 */
export async function readJson(c: Context, maxBytes: number): Promise<unknown> {
  const tooLarge = (n: number | string) =>
    new ApiError(413, `Request body of ${n} bytes is larger than the limit of ${maxBytes} bytes`, {
      code: "request_too_large",
    });
  const declared = c.req.header("content-length");
  if (declared && Number(declared) > maxBytes) throw tooLarge(declared);
  const body = c.req.raw.body;
  if (!body) throw badRequest(null, "Missing request body: expected a JSON object");
  const reader = body.getReader();
  const parts: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(`more than ${maxBytes}`);
    }
    parts.push(value);
  }
  const all = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    all.set(p, o);
    o += p.length;
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(all);
  } catch {
    throw badRequest(null, "Invalid request body: not valid UTF-8");
  }
  if (!text.trim()) throw badRequest(null, "Missing request body: expected a JSON object");
  try {
    return JSON.parse(text);
  } catch (e) {
    throw badRequest(null, `Invalid JSON in request body: ${(e as Error).message}`, "invalid_json");
  }
}

function checkModel(deps: RouteDeps, model: string | null): void {
  if (model !== null && model !== deps.modelId) {
    throw new ApiError(
      400,
      `The model '${model}' does not exist; this server serves '${deps.modelId}'`,
      {
        param: "model",
        code: "model_not_found",
      },
    );
  }
}

/** Prompt-length check and the max_tokens clamp (the reply may not overflow the context). */
function budget(
  deps: RouteDeps,
  promptLen: number,
  asked: number | null,
  fallback: number,
  param: string,
): number {
  const ctx = Math.min(deps.limits.maxContextTokens, deps.scheduler.engine.maxPositions);
  if (promptLen >= ctx) {
    throw new ApiError(
      400,
      `This model's context is ${ctx} tokens; the prompt has ${promptLen} tokens, leaving no room for a reply`,
      { param, code: "context_length_exceeded" },
    );
  }
  return Math.max(1, Math.min(asked ?? fallback, ctx - promptLen));
}

function submit(
  c: Context,
  deps: RouteDeps,
  promptIds: number[],
  maxTokens: number,
  sampling: SamplingSettings,
  seed: number | null,
  ignoreEos: boolean,
): Job {
  return deps.scheduler.submit({
    promptIds,
    maxTokens,
    sampling,
    seed: seed ?? undefined,
    stopIds: ignoreEos ? new Set() : deps.stopIds,
    signal: c.req.raw.signal,
  });
}

function chatPrompt(deps: RouteDeps, req: ChatRequest): number[] {
  let text: string;
  try {
    text = deps.tokenizer.applyChatTemplate(req.messages, {
      addGenerationPrompt: true,
      tools: req.tools ?? undefined,
      openThinking: req.openThinking,
    });
  } catch (e) {
    throw badRequest("messages", `Cannot apply the chat template: ${(e as Error).message}`);
  }
  return deps.tokenizer.encode(text, { addSpecialTokens: false });
}

function toolCallDeltas(calls: ToolCall[]): unknown[] {
  return calls.map((t, index) => ({ index, ...t }));
}

/** Finish reason of a chat reply. */
function chatFinish(f: "stop" | "length" | "cancelled", calls: ToolCall[]): string {
  if (calls.length && f !== "length") return "tool_calls";
  return f === "length" ? "length" : "stop";
}

/**
 * `POST /v1/chat/completions`.
 *
 * @param deps shared state
 * @returns the handler
 */
export function chatCompletions(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function chatCompletionsHandler(c: Context): Promise<Response> {
    const req = parseChatRequest(
      await readJson(c, deps.limits.maxBodyBytes),
      deps.defaults,
      deps.limits,
    );
    checkModel(deps, req.model);
    const promptIds = chatPrompt(deps, req);
    const maxTokens = budget(
      deps,
      promptIds.length,
      req.maxTokens,
      deps.defaults.maxTokens,
      "messages",
    );
    const job = submit(c, deps, promptIds, maxTokens, req.sampling, req.seed, req.ignoreEos);
    await job.admitted;
    const id = newId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);
    const parser = new ReplyParser({
      openThinking: req.openThinking,
      parseTools: req.parseToolCalls,
    });

    if (!req.stream) {
      const finish = await drain(
        replyText(job, deps.tokenizer, req.stop),
        (piece) => parser.push(piece),
      );
      parser.end();
      const calls = parser.toolCalls;
      const message: Record<string, unknown> = {
        role: "assistant",
        content: calls.length && !parser.content ? null : parser.content,
      };
      if (parser.reasoning) message.reasoning_content = parser.reasoning;
      if (calls.length) message.tool_calls = calls;
      return c.json({
        id,
        object: "chat.completion",
        created,
        model: deps.modelId,
        choices: [{ index: 0, message, logprobs: null, finish_reason: chatFinish(finish, calls) }],
        usage: usageOf(job),
      });
    }

    const base = { id, object: "chat.completion.chunk", created, model: deps.modelId };
    const usageNull = req.includeUsage ? { usage: null } : {};
    const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
      JSON.stringify({
        ...base,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...usageNull,
      });
    return streamSSE(c, async (s) => {
      s.onAbort(() => job.cancel());
      try {
        await s.writeSSE({ data: chunk({ role: "assistant", content: "" }) });
        const finish = await drain(replyText(job, deps.tokenizer, req.stop), async (piece) => {
          for (const d of parser.push(piece)) await s.writeSSE({ data: chunk(d) });
        });
        if (finish === "cancelled") return;
        for (const d of parser.end()) await s.writeSSE({ data: chunk(d) });
        const calls = parser.toolCalls;
        if (calls.length) await s.writeSSE({ data: chunk({ tool_calls: toolCallDeltas(calls) }) });
        await s.writeSSE({ data: chunk({}, chatFinish(finish, calls)) });
        await endStream(s, req.includeUsage ? { ...base, choices: [], usage: usageOf(job) } : null);
      } catch (e) {
        await failStream(s, job, e);
      }
    });
  };
}

/**
 * `POST /v1/completions` (legacy text completion; no template).
 *
 * @param deps shared state
 * @returns the handler
 */
export function completions(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function completionsHandler(c: Context): Promise<Response> {
    const req = parseCompletionRequest(
      await readJson(c, deps.limits.maxBodyBytes),
      deps.defaults,
      deps.limits,
    );
    checkModel(deps, req.model);
    let promptIds: number[];
    if (typeof req.prompt === "string") {
      promptIds = deps.tokenizer.encode(req.prompt, { addSpecialTokens: false });
      if (promptIds.length === 0) {
        throw badRequest("prompt", "Invalid 'prompt': it encodes to no tokens");
      }
    } else {
      const V = deps.scheduler.engine.vocabSize;
      const bad = req.prompt.findIndex((t) => t < 0 || t >= V);
      if (bad >= 0) {
        throw badRequest(
          `prompt[${bad}]`,
          `Invalid 'prompt[${bad}]': token id ${req.prompt[bad]} is outside 0..${V - 1}`,
        );
      }
      promptIds = req.prompt;
    }
    // OpenAI's default for the legacy endpoint is 16 tokens.
    const maxTokens = budget(deps, promptIds.length, req.maxTokens, 16, "prompt");
    const job = submit(c, deps, promptIds, maxTokens, req.sampling, req.seed, req.ignoreEos);
    await job.admitted;
    const id = newId("cmpl-");
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: "text_completion", created, model: deps.modelId };

    if (!req.stream) {
      let text = "";
      const end = await drain(replyText(job, deps.tokenizer, req.stop), (piece) => (text += piece));
      const finish = end === "length" ? "length" : "stop";
      return c.json({
        ...base,
        choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
        usage: usageOf(job),
      });
    }

    const usageNull = req.includeUsage ? { usage: null } : {};
    const chunk = (text: string, finish: string | null = null) =>
      JSON.stringify({
        ...base,
        choices: [{ text, index: 0, logprobs: null, finish_reason: finish }],
        ...usageNull,
      });
    return streamSSE(c, async (s) => {
      s.onAbort(() => job.cancel());
      try {
        const finish = await drain(
          replyText(job, deps.tokenizer, req.stop),
          (piece) => s.writeSSE({ data: chunk(piece) }),
        );
        if (finish === "cancelled") return;
        await s.writeSSE({ data: chunk("", finish) });
        await endStream(s, req.includeUsage ? { ...base, choices: [], usage: usageOf(job) } : null);
      } catch (e) {
        await failStream(s, job, e);
      }
    });
  };
}

type SSE = Parameters<Parameters<typeof streamSSE>[1]>[0];

/** Hands each piece of a reply to `each` (awaited, in order) and returns how the reply ended. */
async function drain<T>(
  reply: AsyncGenerator<string, T>,
  each: (piece: string) => unknown,
): Promise<T> {
  for (;;) {
    const r = await reply.next();
    if (r.done) return r.value;
    await each(r.value);
  }
}

/** Ends a stream: the usage chunk when asked for, then `[DONE]`. */
async function endStream(s: SSE, usageChunk: Record<string, unknown> | null): Promise<void> {
  if (usageChunk) await s.writeSSE({ data: JSON.stringify(usageChunk) });
  await s.writeSSE({ data: "[DONE]" });
}

/** A generation that failed mid-stream: cancel it and, if the client is still there, send the error and `[DONE]`. */
async function failStream(s: SSE, job: Job, e: unknown): Promise<void> {
  job.cancel();
  if (s.aborted || s.closed) return;
  const err = e instanceof ApiError
    ? e
    : new ApiError(500, `Generation failed: ${(e as Error).message}`);
  await s.writeSSE({ data: JSON.stringify(err.toBody()) }).catch(() => {});
  await s.writeSSE({ data: "[DONE]" }).catch(() => {});
}

/** The `/v1/models` entry of the served model. */
export function modelEntry(deps: Pick<RouteDeps, "modelId" | "created">): Record<string, unknown> {
  return { id: deps.modelId, object: "model", created: deps.created, owned_by: "minimind" };
}
