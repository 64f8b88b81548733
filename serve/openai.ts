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
import {
  type AgentResult,
  runAgentLoop,
  type Tool,
  type ToolOutcome,
  type TurnGenerator,
} from "./tools.ts";
import { replyText } from "./reply.ts";
import type { Job, Scheduler } from "./scheduler.ts";
import type { StepLogprobs, TokenLogprob } from "./sampling.ts";
import {
  ReplyConstraint,
  type ReplyShape,
  type Segment,
  tokenizerVocab,
} from "../data/constrain.ts";
import {
  ANY_OBJECT,
  compileObjectSchema,
  SchemaError,
  type SchemaNode,
} from "../data/json_grammar.ts";
import {
  type ChatRequest,
  type GenerationRequest,
  parseChatRequest,
  parseCompletionRequest,
  parseDetokenizeRequest,
  parseTokenizeRequest,
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
  /** The served model id (replies carry it). */
  modelId: string;
  /** Every id requests may name: `modelId` first, then its aliases (listed by `/v1/models`). */
  modelIds: readonly string[];
  /** Unix seconds of start-up (`created` of the model). */
  created: number;
  /** Request limits. */
  limits: RequestLimits;
  /** Request defaults. */
  defaults: RequestDefaults;
  /** End-of-sequence token ids. */
  stopIds: ReadonlySet<number>;
  /** Tools the server runs itself (`--tools builtin`); calls of others go back to the client. */
  tools: readonly Tool[];
  /** Most assistant turns of one request while the server runs tools. */
  maxToolTurns: number;
}

/** Usage block of a reply (Chat Completions' names; the Responses route renames them). */
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  /** Prompt tokens the prefix cache spared (OpenAI's and vLLM's field). */
  prompt_tokens_details: { cached_tokens: number };
}

function usageOf(job: Job): Usage {
  return usage(job.promptTokens, job.completionTokens, job.cachedTokens);
}

function usage(prompt: number, completion: number, cached: number): Usage {
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: cached },
  };
}

/**
 * The usage of a request's choices: the prompt they share counted once (OpenAI's way with n > 1),
 * the prompts of later tool turns and every completion token added up.
 */
function sumUsage(usages: readonly Usage[], shared: Usage | null = null): Usage {
  const sp = shared?.prompt_tokens ?? 0, sc = shared?.prompt_tokens_details.cached_tokens ?? 0;
  let prompt = sp, completion = 0, cached = sc;
  for (const u of usages) {
    prompt += u.prompt_tokens - sp;
    cached += u.prompt_tokens_details.cached_tokens - sc;
    completion += u.completion_tokens;
  }
  return usage(prompt, completion, cached);
}

/**
 * Submits one job per choice; if one is refused (a full queue), cancels those already submitted.
 * Resolves once all are admitted (prefilled).
 */
async function submitAll(n: number, one: (choice: number) => Job): Promise<Job[]> {
  const jobs: Job[] = [];
  try {
    for (let i = 0; i < n; i++) jobs.push(one(i));
    await Promise.all(jobs.map((j) => j.admitted));
  } catch (e) {
    for (const j of jobs) j.cancel();
    throw e;
  }
  return jobs;
}

/** Writes SSE events one after another, whichever choice produces them. */
function serialWriter(s: SSE): (data: string) => Promise<void> {
  let chain = Promise.resolve();
  return (data) => (chain = chain.then(() => s.writeSSE({ data })));
}

/** A new random id with `prefix` (`chatcmpl-`, `resp_`, …). */
export function newId(prefix: string): string {
  const r = crypto.getRandomValues(new Uint8Array(12));
  return prefix + Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Reads and parses a JSON body, enforcing the byte limit while reading (a missing or lying
 * Content-Length cannot get past it) and a deadline for the whole body (a client that sends
 * slowly cannot hold the connection). A client that goes away mid-body gets a 400, not a 500.
 *
 * @param c the request context
 * @param maxBytes the limit
 * @param timeoutMs the deadline for receiving the body (default 30 s)
 * @returns the parsed value
 */
export async function readJson(c: Context, maxBytes: number, timeoutMs = 30_000): Promise<unknown> {
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
  let n = 0, timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array> | "timeout";
      try {
        r = await Promise.race([reader.read(), timedOut]);
      } catch (e) {
        throw new ApiError(
          400,
          `The request body could not be read (the client went away?): ${(e as Error).message}`,
          { code: "request_body_unreadable" },
        );
      }
      if (r === "timeout") {
        reader.cancel().catch(() => {});
        throw new ApiError(
          408,
          `The request body did not arrive within ${timeoutMs / 1000} s (${n} bytes received)`,
          { code: "request_timeout" },
        );
      }
      if (r.done) break;
      n += r.value.length;
      if (n > maxBytes) {
        await reader.cancel().catch(() => {});
        throw tooLarge(`more than ${maxBytes}`);
      }
      parts.push(r.value);
    }
  } finally {
    clearTimeout(timer);
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

/** A route's JSON body, within the server's size and time limits ({@linkcode readJson}). */
export function readBody(c: Context, deps: RouteDeps): Promise<unknown> {
  return readJson(c, deps.limits.maxBodyBytes, deps.limits.bodyTimeoutMs);
}

/** Token ids a request gives (`param`) must be ids of the served vocabulary. */
function checkTokenIds(deps: RouteDeps, ids: readonly number[], param: string): void {
  const V = deps.scheduler.engine.vocabSize;
  const bad = ids.findIndex((t) => t < 0 || t >= V);
  if (bad >= 0) {
    throw badRequest(
      `${param}[${bad}]`,
      `Invalid '${param}[${bad}]': token id ${ids[bad]} is outside 0..${V - 1}`,
    );
  }
}

/** `logit_bias` keys must be ids of the served vocabulary. */
function checkLogitBias(deps: RouteDeps, sampling: SamplingSettings): void {
  const V = deps.scheduler.engine.vocabSize;
  for (const id of sampling.logitBias?.keys() ?? []) {
    if (id >= V) {
      throw badRequest(
        `logit_bias.${id}`,
        `Invalid 'logit_bias.${id}': token id ${id} is outside 0..${V - 1}`,
      );
    }
  }
}

/** Refuses a request that names another model than the served one (or an alias). */
export function checkModel(deps: RouteDeps, model: string | null): void {
  if (model !== null && !deps.modelIds.includes(model)) {
    throw new ApiError(
      400,
      `The model '${model}' does not exist; this server serves ${
        deps.modelIds.map((id) => `'${id}'`).join(" (alias ")
      }${deps.modelIds.length > 1 ? ")" : ""}`,
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
  const ctx = contextTokens(deps);
  if (promptLen >= ctx) throw contextExceeded(ctx, promptLen, param);
  return Math.max(1, Math.min(asked ?? fallback, ctx - promptLen));
}

/**
 * Submits one generation of `req` (its sampling, seed, `ignore_eos`, log-probs) for `promptIds`;
 * `seed` overrides the request's (a later tool turn's), `shape` constrains the reply, `choice`
 * picks the seed's row.
 */
function submit(
  c: Context,
  deps: RouteDeps,
  req: GenerationRequest,
  promptIds: number[],
  maxTokens: number,
  { seed = req.seed, shape = null, choice = 0 }: {
    seed?: number | null;
    shape?: ReplyShape | null;
    choice?: number;
  } = {},
): Job {
  const stopIds = req.ignoreEos ? new Set<number>() : deps.stopIds;
  return deps.scheduler.submit({
    promptIds,
    maxTokens,
    sampling: req.sampling,
    seed: seed ?? undefined,
    choice,
    stopIds,
    signal: c.req.raw.signal,
    logprobs: req.logprobs ?? undefined,
    constraint: shape
      ? new ReplyConstraint(
        shape,
        tokenizerVocab(deps.tokenizer, deps.scheduler.engine.vocabSize),
        stopIds,
      )
      : undefined,
  });
}

/**
 * The arguments of a call of tool `name`: its `parameters` schema where `json_grammar.ts` can
 * follow it (tool schemas guide the model; OpenAI enforces them only in strict mode), else any
 * JSON object.
 */
function argumentsSchema(req: ChatRequest, name: string): SchemaNode {
  const tool = (req.tools ?? []).find((t) => toolName(t) === name);
  const params = (tool?.function as Record<string, unknown> | undefined)?.parameters;
  try {
    return compileObjectSchema(params ?? { type: "object" });
  } catch (e) {
    if (e instanceof SchemaError) return ANY_OBJECT;
    throw e;
  }
}

/**
 * The shape a chat turn's reply must follow, or null: one JSON object (`response_format`
 * json_object), or — on the first turn — tool calls in the chat template's form (`tool_choice`
 * "required": one or more, of any offered tool; a named tool: one call of it). A reply that
 * starts inside a think block (open_thinking) may think first, up to `</think>`.
 */
function replyShape(req: ChatRequest, turn: number): ReplyShape | null {
  const head: Segment[] = req.openThinking
    ? [{ kind: "until", text: "</think>" }, { kind: "space" }]
    : [];
  if (req.json) return { segments: [...head, { kind: "json", schema: req.json }] };
  const choice = turn === 0 ? req.toolChoice : "auto";
  if (choice !== "required" && typeof choice !== "object") return null;
  const names = choice === "required" ? (req.tools ?? []).map(toolName) : [choice.name];
  return {
    segments: [
      ...head,
      { kind: "literal", text: '<tool_call>\n{"name": "' },
      // names go inside a JSON string
      { kind: "oneOf", texts: names.map((n) => JSON.stringify(n).slice(1, -1)) },
      { kind: "literal", text: '", "arguments": ' },
      {
        kind: "json",
        schema: choice === "required" ? ANY_OBJECT : argumentsSchema(req, choice.name),
      },
      { kind: "literal", text: "}\n</tool_call>" },
    ],
    repeat: choice === "required" ? { separator: "\n", from: head.length } : undefined,
  };
}

/** OpenAI writes a log-prob of −∞ as −9999 (JSON has no infinities). */
function lpValue(x: number): number {
  return Number.isFinite(x) ? x : -9999;
}

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * A token's text as OpenAI writes it in log-probs: its UTF-8, or — for a byte-level token that
 * holds part of a character — `bytes:` and the bytes as `\\xNN` escapes.
 */
function tokenText(bytes: Uint8Array): string {
  try {
    return STRICT_UTF8.decode(bytes);
  } catch {
    return "bytes:" + Array.from(bytes, (b) => "\\x" + b.toString(16).padStart(2, "0")).join("");
  }
}

/** Token `id`'s bytes and its text as log-probs write it ({@linkcode tokenText}). */
function tokenPiece(tok: Tokenizer, id: number): { bytes: Uint8Array; text: string } {
  const bytes = tok.tokenBytes(id) ?? new Uint8Array();
  return { bytes, text: tokenText(bytes) };
}

/** One token as OpenAI's chat `logprobs.content` lists it: its text, log-prob and bytes. */
function tokenEntry(tok: Tokenizer, t: TokenLogprob): Record<string, unknown> {
  const { bytes, text } = tokenPiece(tok, t.id);
  return { token: text, logprob: lpValue(t.logprob), bytes: [...bytes] };
}

/** A chat `logprobs` object (null when there is nothing to report). */
function chatLogprobs(tok: Tokenizer, lps: readonly StepLogprobs[] | null): unknown {
  if (!lps) return null;
  return {
    content: lps.map((s) => ({
      ...tokenEntry(tok, s),
      top_logprobs: s.top.map((t) => tokenEntry(tok, t)),
    })),
    refusal: null,
  };
}

/**
 * The legacy endpoint's `logprobs` objects (`tokens`, `token_logprobs`, `top_logprobs` as
 * {text: log-prob} maps, `text_offset` into the reply), piece by piece: offsets run on across
 * calls, following the reply's text (special tokens are not in it).
 */
class LegacyLogprobs {
  readonly #tok: Tokenizer;
  readonly #dec: ReturnType<Tokenizer["decodeStream"]>;
  #offset = 0;

  constructor(tok: Tokenizer) {
    this.#tok = tok;
    this.#dec = tok.decodeStream({ skipSpecialTokens: true });
  }

  /**
   * The object for an echoed prompt's tokens, which come first (`scored[t − 1]` is token t's
   * log-prob; the first token has none: null, as OpenAI writes it). The prompt's text keeps its
   * special tokens.
   */
  prompt(ids: readonly number[], scored: readonly StepLogprobs[]): Record<string, unknown[]> {
    const dec = this.#tok.decodeStream({ skipSpecialTokens: false });
    const out = this.#entries(ids.map((id, t) => [id, t > 0 ? scored[t - 1] : null]), dec);
    this.#offset += dec.flush().length;
    return out;
  }

  /** The object for the next tokens of the reply. */
  next(lps: readonly StepLogprobs[]): Record<string, unknown[]> {
    return this.#entries(lps.map((s) => [s.id, s]), this.#dec);
  }

  /** The columns of tokens `[id, its log-probs or null]`, offsets advanced through `dec`. */
  #entries(
    tokens: readonly [number, StepLogprobs | null][],
    dec: ReturnType<Tokenizer["decodeStream"]>,
  ): Record<string, unknown[]> {
    const text = (id: number) => tokenPiece(this.#tok, id).text;
    const out: Record<string, unknown[]> = {
      tokens: [],
      token_logprobs: [],
      top_logprobs: [],
      text_offset: [],
    };
    for (const [id, s] of tokens) {
      out.tokens.push(text(id));
      out.token_logprobs.push(s ? lpValue(s.logprob) : null);
      out.top_logprobs.push(
        s ? Object.fromEntries(s.top.map((t) => [text(t.id), lpValue(t.logprob)])) : null,
      );
      out.text_offset.push(this.#offset);
      this.#offset += dec.push(id).length;
    }
    return out;
  }
}

/** Hands out a job's token log-probs as its reply consumes the tokens. */
class LogprobCursor {
  readonly #job: Job;
  #at = 0;

  constructor(job: Job) {
    this.#job = job;
  }

  /** The log-probs of the tokens consumed since the last call. */
  take(): StepLogprobs[] {
    const out = this.#job.logprobs.slice(this.#at, this.#job.consumed);
    this.#at += out.length;
    return out;
  }
}

function chatPrompt(
  deps: RouteDeps,
  req: ChatRequest,
  messages: ChatRequest["messages"],
): Promise<number[]> {
  // every template renders the last user message (the question): if it alone cannot fit, refuse
  // before rendering, whose string work on a 1 MB message takes tens of ms
  const last = messages.findLast((m) => m.role === "user");
  if (last) {
    const ctx = contextTokens(deps), least = deps.tokenizer.minTokens(last.content.trim());
    if (least >= ctx) throw contextExceeded(ctx, `at least ${least}`, "messages");
  }
  let text: string;
  try {
    text = deps.tokenizer.applyChatTemplate(messages, {
      addGenerationPrompt: true,
      tools: req.tools ?? undefined,
      openThinking: req.openThinking,
    });
  } catch (e) {
    // the request was validated: a template that fails on it is the server's fault
    throw new ApiError(500, `The server's chat template failed: ${(e as Error).message}`, {
      code: "chat_template_error",
    });
  }
  return encodePrompt(deps, text, "messages");
}

/**
 * Tokenizes a prompt without stalling the server: a text that cannot fit the context (by a
 * lower bound on its token count) is refused before encoding, and encoding yields to the event
 * loop every few milliseconds.
 */
async function encodePrompt(deps: RouteDeps, text: string, param: string): Promise<number[]> {
  const ctx = contextTokens(deps);
  const least = deps.tokenizer.minTokens(text);
  if (least >= ctx) throw contextExceeded(ctx, `at least ${least}`, param);
  // stops at the context length: the rest cannot change the answer (too long)
  const ids = await deps.tokenizer.encodeAsync(text, {
    addSpecialTokens: false,
    sliceMs: 5,
    stopAfter: ctx,
  });
  if (ids.length >= ctx) throw contextExceeded(ctx, `at least ${ids.length}`, param);
  return ids;
}

function contextTokens(deps: RouteDeps): number {
  return Math.min(deps.limits.maxContextTokens, deps.scheduler.engine.maxPositions);
}

function contextExceeded(ctx: number, promptLen: number | string, param: string): ApiError {
  return new ApiError(
    400,
    `This model's context is ${ctx} tokens; the prompt has ${promptLen} tokens, leaving no room for a reply`,
    { param, code: "context_length_exceeded" },
  );
}

/**
 * Submits one assistant turn of a chat request for each of `choices` (turn t > 0 follows tool
 * results): the prompt is rendered and tokenized once.
 */
export async function chatJobs(
  c: Context,
  deps: RouteDeps,
  req: ChatRequest,
  messages: ChatRequest["messages"],
  turn: number,
  choices: readonly number[],
): Promise<Job[]> {
  const promptIds = await chatPrompt(deps, req, messages);
  const maxTokens = budget(
    deps,
    promptIds.length,
    req.maxTokens,
    deps.defaults.maxTokens,
    "messages",
  );
  const seed = req.seed === null ? null : req.seed + turn;
  const shape = replyShape(req, turn);
  return submitAll(
    choices.length,
    (i) => submit(c, deps, req, promptIds, maxTokens, { seed, shape, choice: choices[i] }),
  );
}

function toolCallDeltas(calls: ToolCall[]): unknown[] {
  return calls.map((t, index) => ({ index, ...t }));
}

/** Finish reason of a chat reply. */
function chatFinish(f: "stop" | "length" | "cancelled", calls: ToolCall[]): string {
  if (calls.length && f !== "length") return "tool_calls";
  return f === "length" ? "length" : "stop";
}

/** A call the server ran: the OpenAI call plus its `result` (or `{"error": …}`) and error kind. */
function executedEntry(o: ToolOutcome): Record<string, unknown> {
  return {
    id: o.message.tool_call_id,
    type: "function",
    function: o.call?.function ?? { name: "", arguments: "" },
    result: o.message.content,
    error: o.error,
  };
}

class Cancelled extends Error {}

/** What a chat request produced over all its turns. */
export interface ChatOutcome {
  finish: "stop" | "length" | "cancelled";
  /** The last turn's parser (its content and reasoning are the reply). */
  last: ReplyParser;
  /** Calls handed to the client (OpenAI behaviour). */
  calls: ToolCall[];
  /** Calls the server ran, with results. */
  executed: Record<string, unknown>[];
  usage: Usage;
  /** With `logprobs`: every reply token's, all turns (else null). */
  logprobs: StepLogprobs[] | null;
  /** With `logprobs`: those not yet handed to `emit` (they go with the finish chunk). */
  unsent: StepLogprobs[];
}

/**
 * Runs a chat request: one turn, or — when the request offers tools this server runs
 * (`--tools builtin`) — the tool loop, which runs those calls, appends the results and generates
 * again. Calls of any other tool end the loop and go back to the client. `emit` receives the
 * deltas as they are produced (content, reasoning, and an `executed_tool_calls` delta per round),
 * each with the log-probs of the tokens consumed since the last (empty unless asked for).
 */
export async function runChat(
  c: Context,
  deps: RouteDeps,
  req: ChatRequest,
  first: Job,
  emit: (delta: Record<string, unknown>, logprobs: StepLogprobs[]) => Promise<void>,
  choice = 0,
): Promise<ChatOutcome> {
  const offered = new Set((req.tools ?? []).map((t) => toolName(t)));
  const runnable = req.parseToolCalls ? deps.tools.filter((t) => offered.has(t.name)) : [];
  const maxTurns = runnable.length ? deps.maxToolTurns : 1;
  const jobs: Job[] = [];
  let finish: "stop" | "length" | "cancelled" = "stop";
  let last = new ReplyParser();
  const all: StepLogprobs[] = [];
  let unsent: StepLogprobs[] = [];
  const send = async (d: Record<string, unknown>, cursor: LogprobCursor | null) => {
    const lps = [...unsent, ...(cursor?.take() ?? [])];
    unsent = [];
    await emit(d, lps);
  };
  const turn: TurnGenerator = async (messages) => {
    const job = jobs.length === 0
      ? first
      : (await chatJobs(c, deps, req, messages as ChatRequest["messages"], jobs.length, [
        choice,
      ]))[0];
    jobs.push(job);
    await job.admitted;
    const parser = new ReplyParser({
      openThinking: req.openThinking,
      parseTools: req.parseToolCalls,
    });
    last = parser;
    const cursor = new LogprobCursor(job);
    let raw = "";
    finish = await drain(replyText(job, deps.tokenizer, req.stop), async (piece) => {
      raw += piece;
      for (const d of parser.push(piece)) await send(d, cursor);
    });
    if (finish === "cancelled") throw new Cancelled();
    for (const d of parser.end()) await send(d, cursor);
    unsent.push(...cursor.take());
    all.push(...job.logprobs.slice(0, job.consumed));
    return raw;
  };
  const executed: Record<string, unknown>[] = [];
  const names = new Set(runnable.map((t) => t.name));
  let result: AgentResult | null = null;
  try {
    result = await runAgentLoop(turn, req.messages, {
      tools: runnable,
      offered: [],
      maxTurns,
      openThinking: req.openThinking,
      signal: c.req.raw.signal,
      shouldRun: (calls) =>
        finish === "stop" && jobs.length < maxTurns &&
        calls.every((t) => names.has(t.function.name)),
      onTurn: async (t) => {
        if (!t.outcomes.length) return;
        const entries = t.outcomes.map(executedEntry);
        executed.push(...entries);
        await send({ executed_tool_calls: entries }, null);
      },
    });
  } catch (e) {
    if (!(e instanceof Cancelled)) throw e;
  }
  const used = sumUsage(jobs.map(usageOf));
  const logprobs = req.logprobs === null ? null : all;
  if (!result) {
    return { finish: "cancelled", last, calls: [], executed, usage: used, logprobs, unsent };
  }
  // without server tools a call is never run: it goes back to the client, as before
  const calls = result.pending.length ? result.pending : runnable.length ? [] : last.toolCalls;
  return { finish, last, calls, executed, usage: used, logprobs, unsent };
}

/** The name of a tool definition (`function.name`, or a bare `name`). */
function toolName(t: Record<string, unknown>): string {
  const f = t.function as Record<string, unknown> | undefined;
  return String(f?.name ?? t.name ?? "");
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
      await readBody(c, deps),
      deps.defaults,
      deps.limits,
    );
    checkModel(deps, req.model);
    checkLogitBias(deps, req.sampling);
    const choices = Array.from({ length: req.n }, (_, i) => i);
    const jobs = await chatJobs(c, deps, req, req.messages, 0, choices);
    const shared = usage(jobs[0].promptTokens, 0, jobs[0].cachedTokens);
    const id = newId("chatcmpl-");
    const created = Math.floor(Date.now() / 1000);

    if (!req.stream) {
      const outs = await Promise.all(
        jobs.map((job, i) => runChat(c, deps, req, job, () => Promise.resolve(), i)),
      );
      return c.json({
        id,
        object: "chat.completion",
        created,
        model: deps.modelId,
        choices: outs.map((r, index) => {
          const message: Record<string, unknown> = {
            role: "assistant",
            content: r.calls.length && !r.last.content ? null : r.last.content,
          };
          if (r.last.reasoning) message.reasoning_content = r.last.reasoning;
          if (r.calls.length) message.tool_calls = r.calls;
          if (r.executed.length) message.executed_tool_calls = r.executed;
          return {
            index,
            message,
            logprobs: chatLogprobs(deps.tokenizer, r.logprobs),
            finish_reason: chatFinish(r.finish, r.calls),
          };
        }),
        usage: sumUsage(outs.map((r) => r.usage), shared),
      });
    }

    const base = { id, object: "chat.completion.chunk", created, model: deps.modelId };
    const usageNull = req.includeUsage ? { usage: null } : {};
    const chunk = (
      index: number,
      delta: Record<string, unknown>,
      finish: string | null = null,
      lps: StepLogprobs[] = [],
    ) =>
      JSON.stringify({
        ...base,
        choices: [{
          index,
          delta,
          logprobs: chatLogprobs(deps.tokenizer, lps.length ? lps : null),
          finish_reason: finish,
        }],
        ...usageNull,
      });
    return streamSSE(c, async (s) => {
      s.onAbort(() => jobs.forEach((j) => j.cancel()));
      const write = serialWriter(s);
      try {
        for (const i of choices) await write(chunk(i, { role: "assistant", content: "" }));
        const outs = await Promise.all(jobs.map(async (job, i) => {
          const r = await runChat(c, deps, req, job, (d, lps) => write(chunk(i, d, null, lps)), i);
          if (r.finish === "cancelled") return r;
          if (r.calls.length) await write(chunk(i, { tool_calls: toolCallDeltas(r.calls) }));
          await write(chunk(i, {}, chatFinish(r.finish, r.calls), r.unsent));
          return r;
        }));
        if (outs.some((r) => r.finish === "cancelled")) return;
        const total = sumUsage(outs.map((r) => r.usage), shared);
        await endStream(s, req.includeUsage ? { ...base, choices: [], usage: total } : null);
      } catch (e) {
        await failStream(s, jobs, e);
      }
    });
  };
}

/** A legacy prompt's ids: text tokenized as it is, or token ids checked against the vocab. */
async function legacyPromptIds(
  deps: RouteDeps,
  prompt: string | number[],
  param: string,
): Promise<number[]> {
  if (typeof prompt === "string") {
    const ids = await encodePrompt(deps, prompt, param);
    if (ids.length === 0) throw badRequest(param, `Invalid '${param}': it encodes to no tokens`);
    return ids;
  }
  checkTokenIds(deps, prompt, param);
  const ctx = contextTokens(deps);
  if (prompt.length >= ctx) throw contextExceeded(ctx, prompt.length, param);
  return prompt;
}

/** Joins the arrays of legacy log-prob objects, in order. */
function joinLegacy(parts: Record<string, unknown[]>[]): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  for (const p of parts) for (const [k, v] of Object.entries(p)) (out[k] ??= []).push(...v);
  return out;
}

/**
 * `POST /v1/completions` (legacy text completion; no template). `prompt` may list several
 * prompts; choice `i·n + j` is prompt i's j-th. `echo` returns each prompt before its completion
 * and, with `logprobs`, the log-prob of each prompt token after the first (the engine scores the
 * prompt); `max_tokens: 0` then only scores — lm-evaluation-harness's log-likelihood requests.
 *
 * @param deps shared state
 * @returns the handler
 */
export function completions(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function completionsHandler(c: Context): Promise<Response> {
    const req = parseCompletionRequest(
      await readBody(c, deps),
      deps.defaults,
      deps.limits,
    );
    checkModel(deps, req.model);
    checkLogitBias(deps, req.sampling);
    const many = req.prompts.length > 1;
    const param = (i: number) => (many ? `prompt[${i}]` : "prompt");
    const prompts: number[][] = [];
    for (const [i, p] of req.prompts.entries()) {
      prompts.push(await legacyPromptIds(deps, p, param(i)));
    }
    const n = req.n, tok = deps.tokenizer, engine = deps.scheduler.engine;
    // the prompts' own log-probs, for echo with logprobs
    let scored: StepLogprobs[][] | null = null;
    if (req.echo && req.logprobs !== null) {
      if (!engine.score) {
        throw new ApiError(
          400,
          "This server's engine cannot score prompts ('echo' with 'logprobs')",
          {
            param: "echo",
          },
        );
      }
      scored = [];
      for (const ids of prompts) scored.push(await engine.score(ids, req.logprobs));
    }
    // OpenAI's default for this endpoint is 16 tokens; 0 (with echo) generates nothing
    const jobs = req.maxTokens === 0 ? [] : await submitAll(prompts.length * n, (k) => {
      const i = Math.floor(k / n), ids = prompts[i];
      const maxTokens = budget(deps, ids.length, req.maxTokens, 16, param(i));
      return submit(c, deps, req, ids, maxTokens, { choice: k % n });
    });
    const choices = Array.from({ length: prompts.length * n }, (_, k) => {
      const i = Math.floor(k / n), job = jobs[k] ?? null;
      const legacy = req.logprobs === null ? null : new LegacyLogprobs(tok);
      const echo = req.echo ? tok.decode(prompts[i]) : "";
      return {
        job,
        cursor: job ? new LogprobCursor(job) : null,
        legacy,
        echo,
        echoLogprobs: legacy && scored ? legacy.prompt(prompts[i], scored[i]) : null,
      };
    });
    const id = newId("cmpl-");
    const created = Math.floor(Date.now() / 1000);
    const base = { id, object: "text_completion", created, model: deps.modelId };
    const used = () => {
      // each prompt counted once for its n choices
      const parts = prompts.map((ids, i) => {
        const own = jobs.slice(i * n, (i + 1) * n);
        if (!own.length) return usage(ids.length, 0, 0);
        return sumUsage(own.map(usageOf), usage(ids.length, 0, own[0].cachedTokens));
      });
      return sumUsage(parts);
    };
    const take = (k: number) => {
      const { cursor, legacy } = choices[k];
      return legacy && cursor ? legacy.next(cursor.take()) : null;
    };

    if (!req.stream) {
      const outs = await Promise.all(choices.map(async (ch, index) => {
        let text = ch.echo, finish = "length";
        if (ch.job) {
          const end = await drain(replyText(ch.job, tok, req.stop), (p) => (text += p));
          finish = end === "length" ? "length" : "stop";
        }
        const parts = [ch.echoLogprobs, take(index)].filter((x) => x !== null);
        const logprobs = ch.legacy ? joinLegacy(parts) : null;
        return { text, index, logprobs, finish_reason: finish };
      }));
      return c.json({ ...base, choices: outs, usage: used() });
    }

    const usageNull = req.includeUsage ? { usage: null } : {};
    const chunk = (
      index: number,
      text: string,
      finish: string | null = null,
      lp: Record<string, unknown[]> | null = take(index),
    ) => {
      const logprobs = lp && (lp.tokens?.length ?? 0) > 0 ? lp : null;
      return JSON.stringify({
        ...base,
        choices: [{ text, index, logprobs, finish_reason: finish }],
        ...usageNull,
      });
    };
    return streamSSE(c, async (s) => {
      s.onAbort(() => jobs.forEach((j) => j.cancel()));
      const write = serialWriter(s);
      try {
        const ends = await Promise.all(choices.map(async (ch, k) => {
          if (ch.echo) await write(chunk(k, ch.echo, null, ch.echoLogprobs));
          let finish: string = "length";
          if (ch.job) {
            finish = await drain(
              replyText(ch.job, tok, req.stop),
              (piece) => write(chunk(k, piece)),
            );
          }
          if (finish !== "cancelled") await write(chunk(k, "", finish));
          return finish;
        }));
        if (ends.includes("cancelled")) return;
        await endStream(s, req.includeUsage ? { ...base, choices: [], usage: used() } : null);
      } catch (e) {
        await failStream(s, jobs, e);
      }
    });
  };
}

/**
 * `POST /tokenize` (llama.cpp and vLLM): text, or chat messages rendered by the template with its
 * generation prompt, to ids — `{tokens, count, max_model_len}`; with `with_pieces` each token is
 * `{id, piece}` (a piece that holds part of a character is its bytes, as in log-probs).
 *
 * @param deps shared state
 * @returns the handler
 */
export function tokenize(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function tokenizeHandler(c: Context): Promise<Response> {
    const req = parseTokenizeRequest(
      await readBody(c, deps),
      deps.limits,
    );
    const tok = deps.tokenizer;
    const text = req.messages
      ? tok.applyChatTemplate(req.messages, { addGenerationPrompt: true })
      : req.text!;
    const ids = await tok.encodeAsync(text, {
      addSpecialTokens: req.messages ? false : req.addSpecial,
      sliceMs: 5,
    });
    const tokens = req.withPieces
      ? ids.map((id) => ({ id, piece: tokenPiece(tok, id).text }))
      : ids;
    return c.json({ tokens, count: ids.length, max_model_len: contextTokens(deps) });
  };
}

/**
 * `POST /detokenize` (llama.cpp and vLLM): ids to text, special tokens kept — `{content, prompt}`
 * (llama.cpp's and vLLM's names for it).
 *
 * @param deps shared state
 * @returns the handler
 */
export function detokenize(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function detokenizeHandler(c: Context): Promise<Response> {
    const ids = parseDetokenizeRequest(
      await readBody(c, deps),
    );
    checkTokenIds(deps, ids, "tokens");
    const text = deps.tokenizer.decode(ids);
    return c.json({ content: text, prompt: text });
  };
}

/** An open SSE stream of Hono's `streamSSE`. */
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

/** A generation that failed mid-stream: cancel its jobs and, if the client is still there, send the error and `[DONE]`. */
async function failStream(s: SSE, jobs: readonly Job[], e: unknown): Promise<void> {
  for (const j of jobs) j.cancel();
  if (s.aborted || s.closed) return;
  const err = e instanceof ApiError
    ? e
    : new ApiError(500, `Generation failed: ${(e as Error).message}`);
  await s.writeSSE({ data: JSON.stringify(err.toBody()) }).catch(() => {});
  await s.writeSSE({ data: "[DONE]" }).catch(() => {});
}

/**
 * The `/v1/models` entry of one id of the served model.
 *
 * @param deps start-up time
 * @param id the model id or an alias
 * @returns the entry
 */
export function modelEntry(deps: Pick<RouteDeps, "created">, id: string): Record<string, unknown> {
  return { id, object: "model", created: deps.created, owned_by: "minimind" };
}
