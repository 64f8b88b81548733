/**
 * Request validation for the OpenAI routes: every field the server reads is checked for type and
 * range, and a bad one is a 400 that names it (`messages[2].role`). Unknown fields are ignored, as
 * the OpenAI-compatible servers (llama.cpp, vLLM, Ollama) do.
 * @module
 */
import { badRequest } from "./errors.ts";
import {
  ANY_OBJECT,
  compileObjectSchema,
  SchemaError,
  type SchemaNode,
} from "../data/json_grammar.ts";

/** A chat message as the template sees it. */
export interface TemplateMessage {
  /** system | user | assistant | tool. */
  role: string;
  /** Text (parts joined). */
  content: string;
  /** Assistant reasoning (rendered into the think block). */
  reasoning_content?: string;
  /** Assistant tool calls. */
  tool_calls?: { id?: string; type: "function"; function: { name: string; arguments: string } }[];
  /** Tool message: the call it answers. */
  tool_call_id?: string;
  /** Optional participant name. */
  name?: string;
  /** Other fields (none are produced; present for the template's message type). */
  [field: string]: unknown;
}

/** Sampling settings of one request. */
export interface SamplingSettings {
  /** Softmax temperature; 0 = greedy. */
  temperature: number;
  /** Nucleus mass in (0, 1]. */
  topP: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** MiniMind repetition penalty (1 = off). */
  repetitionPenalty: number;
  /** OpenAI presence penalty in [-2, 2], subtracted once from each generated token's logit (0 = off). */
  presencePenalty: number;
  /** OpenAI frequency penalty in [-2, 2], subtracted per occurrence of a generated token (0 = off). */
  frequencyPenalty: number;
  /** OpenAI `logit_bias`: token id → value in [-100, 100] added to its logit at every step. */
  logitBias?: ReadonlyMap<number, number>;
  /** llama.cpp's and vLLM's `min_p` in [0, 1]: after top-p, drop tokens below it × the best one's probability (0 = off). */
  minP?: number;
}

/** Defaults the server applies to omitted fields. */
export interface RequestDefaults {
  /** Default temperature (MiniMind's server: 0.7). */
  temperature: number;
  /** Default top-p (MiniMind's server: 0.92). */
  topP: number;
  /** Default top-k (MiniMind's generate: 50). */
  topK: number;
  /** Default max tokens of a chat reply. */
  maxTokens: number;
}

/** Limits that turn a request into a 400 or 413 instead of a long computation. */
export interface RequestLimits {
  /** Largest request body in bytes (413 above). */
  maxBodyBytes: number;
  /** Largest prompt + completion, in tokens. */
  maxContextTokens: number;
  /** Largest `max_tokens` a request may ask for. */
  maxCompletionTokens: number;
  /** Most messages in one chat request. */
  maxMessages: number;
  /** Most stop sequences. */
  maxStop: number;
  /** Longest time to receive a whole request body, in ms (408 after it). */
  bodyTimeoutMs: number;
}

/** What chat and legacy completion requests share, validated. */
export interface GenerationRequest {
  /** Requested model id (null = the served model). */
  model: string | null;
  /** Max new tokens (null = server default). */
  maxTokens: number | null;
  /** Sampling. */
  sampling: SamplingSettings;
  /** Stop strings. */
  stop: string[];
  /** Choices to generate (`n`, 1..{@linkcode MAX_CHOICES}), each its own sample of the prompt. */
  n: number;
  /** Seed (null = random). */
  seed: number | null;
  /** SSE streaming. */
  stream: boolean;
  /** Add a usage chunk at the end of the stream. */
  includeUsage: boolean;
  /** Keep generating past end-of-sequence tokens (vLLM's `ignore_eos`; for benchmarks). */
  ignoreEos: boolean;
  /**
   * Log-probs of the reply's tokens with this many most likely alternatives each (chat:
   * `logprobs: true` + `top_logprobs`; legacy: `logprobs: N`); null = not asked.
   */
  logprobs: number | null;
}

/** A request's `tool_choice`: a named tool is `{ name }`. */
export type ToolChoice = "none" | "auto" | "required" | { name: string };

/** A validated chat completion request. */
export interface ChatRequest extends GenerationRequest {
  /** Messages, normalised for the template. */
  messages: TemplateMessage[];
  /** Tools given (null = none). */
  tools: Record<string, unknown>[] | null;
  /** Whether tool calls are parsed from the reply (tools given and tool_choice ≠ "none"). */
  parseToolCalls: boolean;
  /** `tool_choice`; "required" and a named tool make the first turn's reply tool calls. */
  toolChoice: ToolChoice;
  /** `response_format` json_object / json_schema: the reply is one JSON object of this node. */
  json: SchemaNode | null;
  /** Start the reply inside an open think block. */
  openThinking: boolean;
  /** Which field set `maxTokens` (for error messages). */
  maxTokensField: string;
}

/** A validated legacy completion request. */
export interface CompletionRequest extends GenerationRequest {
  /** The prompts (`prompt` is one, or a list): text, or token ids. */
  prompts: (string | number[])[];
  /** Return each prompt before its completion, and with `logprobs` its tokens' log-probs too. */
  echo: boolean;
}

/** Most prompts one legacy completion request may list. */
export const MAX_PROMPTS = 64;

type Json = Record<string, unknown>;

/** A JSON value's kind as error messages name it ("null", "array", "string", …). */
export function kind(v: unknown): string {
  if (v === null) return "null";
  // JSON.parse turns a literal beyond the double range (1e309) into ±Infinity
  if (typeof v === "number" && !Number.isFinite(v)) {
    return `${v} (a number outside the range of a double)`;
  }
  if (Array.isArray(v)) return "array";
  return typeof v;
}

/** Whether a JSON value is an object (not null, not an array). */
export function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function optNumber(
  body: Json,
  field: string,
  range: { min: number; max: number; minExclusive?: boolean },
): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw badRequest(field, `Invalid '${field}': expected a number, got ${kind(v)}`);
  }
  const low = range.minExclusive ? v <= range.min : v < range.min;
  if (low || v > range.max) {
    throw badRequest(
      field,
      `Invalid '${field}': ${v} is out of range; expected a number in ${
        range.minExclusive ? "(" : "["
      }${range.min}, ${range.max}]`,
    );
  }
  return v;
}

function optInteger(body: Json, field: string, min: number, max: number): number | undefined {
  const v = body[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    const got = typeof v === "number" && Number.isFinite(v) ? String(v) : kind(v);
    throw badRequest(field, `Invalid '${field}': expected an integer, got ${got}`);
  }
  if (v < min || v > max) {
    throw badRequest(field, `Invalid '${field}': ${v} is out of range; expected ${min}..${max}`);
  }
  return v;
}

function optBoolean(obj: Json, field: string, path = field): boolean | undefined {
  const v = obj[field];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") {
    throw badRequest(path, `Invalid '${path}': expected a boolean, got ${kind(v)}`);
  }
  return v;
}

function parseModel(body: Json): string | null {
  const v = body.model;
  if (v === undefined || v === null) return null;
  if (typeof v !== "string") {
    throw badRequest("model", `Invalid 'model': expected a string, got ${kind(v)}`);
  }
  return v;
}

function parseStop(body: Json, limits: RequestLimits): string[] {
  const v = body.stop;
  if (v === undefined || v === null) return [];
  const list = typeof v === "string" ? [v] : v;
  if (!Array.isArray(list)) {
    throw badRequest(
      "stop",
      `Invalid 'stop': expected a string or an array of strings, got ${kind(v)}`,
    );
  }
  if (list.length > limits.maxStop) {
    throw badRequest("stop", `Invalid 'stop': ${list.length} sequences; at most ${limits.maxStop}`);
  }
  list.forEach((s, i) => {
    if (typeof s !== "string") {
      throw badRequest(`stop[${i}]`, `Invalid 'stop[${i}]': expected a string, got ${kind(s)}`);
    }
    if (s.length === 0 || s.length > 256) {
      throw badRequest(`stop[${i}]`, `Invalid 'stop[${i}]': length ${s.length}; expected 1..256`);
    }
  });
  return list as string[];
}

function parseSampling(body: Json, defaults: RequestDefaults): SamplingSettings {
  const temperature = optNumber(body, "temperature", { min: 0, max: 2 }) ?? defaults.temperature;
  const topP = optNumber(body, "top_p", { min: 0, max: 1, minExclusive: true }) ?? defaults.topP;
  const topK = optInteger(body, "top_k", -1, 1_000_000) ?? defaults.topK;
  const rp = optNumber(body, "repetition_penalty", { min: 0, max: 10, minExclusive: true }) ?? 1;
  return {
    temperature,
    topP,
    topK: topK < 0 ? 0 : topK,
    repetitionPenalty: rp,
    presencePenalty: optNumber(body, "presence_penalty", { min: -2, max: 2 }) ?? 0,
    frequencyPenalty: optNumber(body, "frequency_penalty", { min: -2, max: 2 }) ?? 0,
    minP: optNumber(body, "min_p", { min: 0, max: 1 }) ?? 0,
    ...parseLogitBias(body),
  };
}

/** Most `logit_bias` entries (OpenAI's limit). */
export const MAX_LOGIT_BIAS = 300;

/** `logit_bias`: {"token id": bias in [-100, 100]}; ids are checked against the vocab later. */
function parseLogitBias(body: Json): { logitBias?: Map<number, number> } {
  const v = body.logit_bias;
  if (v === undefined || v === null) return {};
  if (!isObject(v)) {
    throw badRequest("logit_bias", `Invalid 'logit_bias': expected an object, got ${kind(v)}`);
  }
  const entries = Object.entries(v);
  if (entries.length > MAX_LOGIT_BIAS) {
    throw badRequest(
      "logit_bias",
      `Invalid 'logit_bias': ${entries.length} entries; at most ${MAX_LOGIT_BIAS}`,
    );
  }
  const out = new Map<number, number>();
  for (const [k, b] of entries) {
    const p = `logit_bias.${k}`;
    if (!/^(0|[1-9][0-9]{0,8})$/.test(k)) {
      throw badRequest(p, `Invalid '${p}': the key must be a token id (a non-negative integer)`);
    }
    if (typeof b !== "number" || !(b >= -100 && b <= 100)) {
      throw badRequest(p, `Invalid '${p}': ${JSON.stringify(b)}; expected a number in [-100, 100]`);
    }
    if (b !== 0) out.set(Number(k), b);
  }
  return out.size ? { logitBias: out } : {};
}

/** Most choices (`n`) one request may ask for. */
export const MAX_CHOICES = 16;

/** Most `top_logprobs` a request may ask for (OpenAI's limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Chat's `logprobs` (boolean) and `top_logprobs` (0..20, only with `logprobs: true`). */
function parseChatLogprobs(body: Json): number | null {
  const on = optBoolean(body, "logprobs") ?? false;
  const top = optInteger(body, "top_logprobs", 0, MAX_TOP_LOGPROBS);
  if (top !== undefined && !on) {
    throw badRequest(
      "top_logprobs",
      `Invalid 'top_logprobs': ${top} needs 'logprobs' set to true`,
    );
  }
  return on ? top ?? 0 : null;
}

/** The legacy endpoint's `logprobs`: how many most likely tokens to list per position (0..20). */
function parseCompletionLogprobs(body: Json): number | null {
  return optInteger(body, "logprobs", 0, MAX_TOP_LOGPROBS) ?? null;
}

function parseCommon(
  body: Json,
  limits: RequestLimits,
): { n: number; seed: number | null; stream: boolean; includeUsage: boolean; ignoreEos: boolean } {
  const n = optInteger(body, "n", 1, MAX_CHOICES) ?? 1;
  const seed = optInteger(body, "seed", Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER) ?? null;
  const stream = optBoolean(body, "stream") ?? false;
  let includeUsage = false;
  const so = body.stream_options;
  if (so !== undefined && so !== null) {
    if (!isObject(so)) {
      throw badRequest(
        "stream_options",
        `Invalid 'stream_options': expected an object, got ${kind(so)}`,
      );
    }
    includeUsage = optBoolean(so, "include_usage", "stream_options.include_usage") ?? false;
  }
  void limits;
  const ignoreEos = optBoolean(body, "ignore_eos") ?? false;
  return { n, seed, stream, includeUsage, ignoreEos };
}

function parseMaxTokens(
  body: Json,
  limits: RequestLimits,
  least = 1,
): { maxTokens: number | null; field: string } {
  // llama.cpp's priority: max_completion_tokens over max_tokens.
  for (const f of ["max_completion_tokens", "max_tokens"]) {
    const v = optInteger(body, f, least, Number.MAX_SAFE_INTEGER);
    if (v === undefined) continue;
    if (v > limits.maxCompletionTokens) {
      throw badRequest(
        f,
        `Invalid '${f}': ${v} is more than this server allows (${limits.maxCompletionTokens})`,
      );
    }
    return { maxTokens: v, field: f };
  }
  return { maxTokens: null, field: "max_tokens" };
}

/**
 * A message's content: a string, or an array of text parts (of the `partTypes` kinds) joined.
 *
 * @param v the content
 * @param path how errors name it (`messages[2].content`)
 * @param partTypes the part types taken as text (Chat Completions: "text")
 * @returns the text
 */
export function parseContent(v: unknown, path: string, partTypes = ["text"]): string {
  if (v === undefined || v === null) return "";
  if (typeof v === "string") return v;
  if (!Array.isArray(v)) {
    throw badRequest(
      path,
      `Invalid '${path}': expected a string or an array of parts, got ${kind(v)}`,
    );
  }
  let out = "";
  v.forEach((part, j) => {
    const p = `${path}[${j}]`;
    if (!isObject(part)) {
      throw badRequest(p, `Invalid '${p}': expected an object, got ${kind(part)}`);
    }
    if (!partTypes.includes(part.type as string)) {
      throw badRequest(
        `${p}.type`,
        `Unsupported '${p}.type': ${JSON.stringify(part.type)}; only ${
          partTypes.map((t) => JSON.stringify(t)).join(", ")
        } parts are supported`,
      );
    }
    if (typeof part.text !== "string") {
      throw badRequest(
        `${p}.text`,
        `Invalid '${p}.text': expected a string, got ${kind(part.text)}`,
      );
    }
    out += part.text;
  });
  return out;
}

const ROLES = new Set(["system", "developer", "user", "assistant", "tool"]);

function parseToolCalls(v: unknown, path: string): TemplateMessage["tool_calls"] {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v)) {
    throw badRequest(path, `Invalid '${path}': expected an array, got ${kind(v)}`);
  }
  return v.map((c, j) => {
    const p = `${path}[${j}]`;
    if (!isObject(c) || !isObject(c.function)) {
      throw badRequest(`${p}.function`, `Invalid '${p}.function': expected an object`);
    }
    const name = c.function.name;
    if (typeof name !== "string" || name.length === 0) {
      throw badRequest(
        `${p}.function.name`,
        `Invalid '${p}.function.name': expected a non-empty string`,
      );
    }
    const args = c.function.arguments ?? "{}";
    const argText = typeof args === "string" ? args : JSON.stringify(args);
    return {
      ...(typeof c.id === "string" ? { id: c.id } : {}),
      type: "function" as const,
      function: { name, arguments: argText },
    };
  });
}

function parseMessages(body: Json, limits: RequestLimits): TemplateMessage[] {
  const v = body.messages;
  if (v === undefined || v === null) {
    throw badRequest("messages", "Missing required parameter: 'messages'");
  }
  if (!Array.isArray(v)) {
    throw badRequest("messages", `Invalid 'messages': expected an array, got ${kind(v)}`);
  }
  if (v.length === 0) {
    throw badRequest("messages", "Invalid 'messages': empty array; expected at least one message");
  }
  if (v.length > limits.maxMessages) {
    throw badRequest(
      "messages",
      `Invalid 'messages': ${v.length} messages; at most ${limits.maxMessages}`,
    );
  }
  return v.map((m, i) => {
    const p = `messages[${i}]`;
    if (!isObject(m)) throw badRequest(p, `Invalid '${p}': expected an object, got ${kind(m)}`);
    if (typeof m.role !== "string" || !ROLES.has(m.role)) {
      throw badRequest(
        `${p}.role`,
        `Invalid '${p}.role': ${
          JSON.stringify(m.role)
        }; expected one of system, developer, user, assistant, tool`,
      );
    }
    const out: TemplateMessage = {
      role: m.role === "developer" ? "system" : m.role,
      content: parseContent(m.content, `${p}.content`),
    };
    if (m.role !== "assistant" && (m.content === undefined || m.content === null)) {
      throw badRequest(`${p}.content`, `Missing required parameter: '${p}.content'`);
    }
    if (m.name !== undefined && m.name !== null) {
      if (typeof m.name !== "string") {
        throw badRequest(`${p}.name`, `Invalid '${p}.name': expected a string`);
      }
      out.name = m.name;
    }
    if (m.role === "assistant") {
      if (m.reasoning_content !== undefined && m.reasoning_content !== null) {
        if (typeof m.reasoning_content !== "string") {
          throw badRequest(
            `${p}.reasoning_content`,
            `Invalid '${p}.reasoning_content': expected a string`,
          );
        }
        out.reasoning_content = m.reasoning_content;
      }
      const calls = parseToolCalls(m.tool_calls, `${p}.tool_calls`);
      if (calls && calls.length) out.tool_calls = calls;
    }
    if (m.role === "tool" && typeof m.tool_call_id === "string") out.tool_call_id = m.tool_call_id;
    return out;
  });
}

/** Deepest nesting of objects and arrays a tool definition may have (its JSON schema included). */
export const MAX_TOOL_DEPTH = 32;

/** Nesting depth of `v` (a scalar is 0), counted without recursion and only up to `limit + 1`. */
function nestingDepth(v: unknown, limit: number): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (typeof x !== "object" || x === null) continue;
    if (d + 1 > deepest) deepest = d + 1;
    if (deepest > limit) return deepest;
    for (const child of Array.isArray(x) ? x : Object.values(x)) stack.push([child, d + 1]);
  }
  return deepest;
}

function parseTools(body: Json): Record<string, unknown>[] | null {
  const v = body.tools;
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v)) {
    throw badRequest("tools", `Invalid 'tools': expected an array, got ${kind(v)}`);
  }
  if (v.length > 64) throw badRequest("tools", `Invalid 'tools': ${v.length} tools; at most 64`);
  v.forEach((t, i) => {
    const p = `tools[${i}]`;
    if (!isObject(t)) throw badRequest(p, `Invalid '${p}': expected an object, got ${kind(t)}`);
    const depth = nestingDepth(t, MAX_TOOL_DEPTH);
    if (depth > MAX_TOOL_DEPTH) {
      throw badRequest(
        p,
        `Invalid '${p}': nested more than ${MAX_TOOL_DEPTH} levels deep; at most ${MAX_TOOL_DEPTH}`,
      );
    }
    if (t.type !== "function") {
      throw badRequest(
        `${p}.type`,
        `Invalid '${p}.type': ${JSON.stringify(t.type)}; expected "function"`,
      );
    }
    if (!isObject(t.function) || typeof t.function.name !== "string" || !t.function.name) {
      throw badRequest(
        `${p}.function.name`,
        `Invalid '${p}.function.name': expected a non-empty string`,
      );
    }
  });
  return v.length ? v as Record<string, unknown>[] : null;
}

/**
 * `tool_choice`: "none", "auto" (the default), "required" (the reply is one or more tool calls)
 * or {"type": "function", "function": {"name"}} (the reply is a call of that tool). The last two
 * need `tools`, and the name must be one of them.
 */
function parseToolChoice(body: Json, tools: Record<string, unknown>[] | null): ToolChoice {
  const v = body.tool_choice;
  if (v === undefined || v === null || v === "auto") return "auto";
  if (v === "none") return "none";
  const names = (tools ?? []).map((t) => (t.function as Json).name as string);
  if (v === "required") {
    if (!names.length) {
      throw badRequest("tool_choice", `Invalid 'tool_choice': "required" needs 'tools'`);
    }
    return "required";
  }
  if (isObject(v) && v.type === "function" && isObject(v.function)) {
    const name = v.function.name;
    if (typeof name !== "string" || !names.includes(name)) {
      throw badRequest(
        "tool_choice.function.name",
        `Invalid 'tool_choice.function.name': ${JSON.stringify(name)} is not among 'tools' (${
          names.length ? names.map((n) => JSON.stringify(n)).join(", ") : "none given"
        })`,
      );
    }
    return { name };
  }
  throw badRequest(
    "tool_choice",
    `Invalid 'tool_choice': ${
      JSON.stringify(v)
    }; expected "none", "auto", "required" or {"type": "function", "function": {"name": …}}`,
  );
}

function parseThinking(body: Json): boolean {
  const top = optBoolean(body, "open_thinking");
  const kw = body.chat_template_kwargs;
  let fromKw: boolean | undefined;
  if (kw !== undefined && kw !== null) {
    if (!isObject(kw)) {
      throw badRequest(
        "chat_template_kwargs",
        `Invalid 'chat_template_kwargs': expected an object, got ${kind(kw)}`,
      );
    }
    fromKw = optBoolean(kw, "open_thinking", "chat_template_kwargs.open_thinking") ??
      optBoolean(kw, "enable_thinking", "chat_template_kwargs.enable_thinking");
  }
  return fromKw ?? top ?? false;
}

/**
 * `response_format`: {"type": "text"} (the default: null), {"type": "json_object"} (any JSON
 * object) or {"type": "json_schema", "json_schema": {"name", "schema"}} (an object of that
 * schema, compiled by `json_grammar.ts`; the root must be an object, as OpenAI requires).
 */
function parseResponseFormat(body: Json): SchemaNode | null {
  const v = body.response_format;
  if (v === undefined || v === null) return null;
  if (isObject(v) && v.type === "text") return null;
  if (isObject(v) && v.type === "json_object") return ANY_OBJECT;
  if (isObject(v) && v.type === "json_schema") {
    const js = v.json_schema;
    const at = "response_format.json_schema";
    if (!isObject(js)) throw badRequest(at, `Invalid '${at}': expected an object with 'schema'`);
    if (typeof js.name !== "string" || !/^[A-Za-z0-9_-]{1,64}$/.test(js.name)) {
      throw badRequest(
        `${at}.name`,
        `Invalid '${at}.name': expected 1-64 of a-z, A-Z, 0-9, _ and -`,
      );
    }
    try {
      return compileObjectSchema(js.schema, `${at}.schema`);
    } catch (e) {
      if (!(e instanceof SchemaError)) throw e;
      throw badRequest(e.path, `Invalid '${e.path}': ${e.reason}`);
    }
  }
  throw badRequest(
    "response_format",
    `Unsupported 'response_format': ${
      JSON.stringify(isObject(v) ? v.type : v)
    }; expected {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {…}}`,
  );
}

function requireObject(body: unknown): Json {
  if (!isObject(body)) {
    throw badRequest(null, `Invalid request body: expected a JSON object, got ${kind(body)}`);
  }
  return body;
}

/**
 * Validates a `/v1/chat/completions` body.
 *
 * @param raw the parsed JSON body
 * @param defaults sampling and length defaults
 * @param limits request limits
 * @returns the request, normalised
 */
export function parseChatRequest(
  raw: unknown,
  defaults: RequestDefaults,
  limits: RequestLimits,
): ChatRequest {
  const body = requireObject(raw);
  const model = parseModel(body);
  const messages = parseMessages(body, limits);
  const tools = parseTools(body);
  const toolChoice = parseToolChoice(body, tools);
  const { maxTokens, field } = parseMaxTokens(body, limits);
  const json = parseResponseFormat(body);
  if (json && toolChoice !== "auto" && toolChoice !== "none") {
    throw badRequest(
      "response_format",
      `Invalid 'response_format': a JSON object reply cannot also be the tool calls 'tool_choice' asks for`,
    );
  }
  return {
    model,
    messages,
    tools: toolChoice === "none" ? null : tools,
    parseToolCalls: tools !== null && toolChoice !== "none",
    toolChoice,
    json,
    openThinking: parseThinking(body),
    maxTokens,
    maxTokensField: field,
    sampling: parseSampling(body, defaults),
    stop: parseStop(body, limits),
    logprobs: parseChatLogprobs(body),
    ...parseCommon(body, limits),
  };
}

/**
 * Validates a `/v1/completions` body.
 *
 * @param raw the parsed JSON body
 * @param defaults sampling and length defaults
 * @param limits request limits
 * @returns the request, normalised
 */
export function parseCompletionRequest(
  raw: unknown,
  defaults: RequestDefaults,
  limits: RequestLimits,
): CompletionRequest {
  const body = requireObject(raw);
  const model = parseModel(body);
  const prompts = parsePrompts(body.prompt);
  for (const f of ["suffix", "best_of"]) {
    const v = body[f];
    if (v !== undefined && v !== null && v !== false && v !== 1) {
      throw badRequest(f, `Unsupported '${f}'`);
    }
  }
  const echo = optBoolean(body, "echo") ?? false;
  // with echo, 0 new tokens scores the prompt (lm-evaluation-harness's log-likelihood requests)
  const { maxTokens } = parseMaxTokens(body, limits, echo ? 0 : 1);
  const common = parseCommon(body, limits);
  if (prompts.length * common.n > MAX_PROMPTS) {
    throw badRequest(
      "n",
      `Invalid 'n': ${prompts.length} prompts × n = ${common.n} is ${
        prompts.length * common.n
      } completions; at most ${MAX_PROMPTS}`,
    );
  }
  return {
    model,
    prompts,
    echo,
    maxTokens,
    sampling: parseSampling(body, defaults),
    stop: parseStop(body, limits),
    logprobs: parseCompletionLogprobs(body),
    ...common,
  };
}

/**
 * The legacy `prompt`: a string, token ids, or a list of either (one completion per prompt, in
 * order; at most {@linkcode MAX_PROMPTS}).
 */
function parsePrompts(p: unknown): (string | number[])[] {
  if (p === undefined || p === null) {
    throw badRequest("prompt", "Missing required parameter: 'prompt'");
  }
  const ids = (x: unknown): x is number[] =>
    Array.isArray(x) && x.length > 0 && x.every((t) => Number.isInteger(t));
  if (typeof p === "string" || ids(p)) return [p];
  if (!Array.isArray(p) || p.length === 0) {
    throw badRequest(
      "prompt",
      `Invalid 'prompt': expected a string, token ids, or a list of them, got ${kind(p)}`,
    );
  }
  if (p.length > MAX_PROMPTS) {
    throw badRequest("prompt", `Invalid 'prompt': ${p.length} prompts; at most ${MAX_PROMPTS}`);
  }
  p.forEach((x, i) => {
    if (typeof x !== "string" && !ids(x)) {
      throw badRequest(
        `prompt[${i}]`,
        `Invalid 'prompt[${i}]': expected a string or a non-empty array of token ids, got ${
          kind(x)
        }`,
      );
    }
  });
  return p as (string | number[])[];
}

/** A validated `/tokenize` body (llama.cpp's `content` or vLLM's `prompt` / `messages`). */
export interface TokenizeRequest {
  /** Text to tokenize as it is (null when `messages` are given). */
  text: string | null;
  /** Chat messages to render with the template and its generation prompt (vLLM). */
  messages: TemplateMessage[] | null;
  /** Add the tokenizer's special tokens (`add_special` / `add_special_tokens`; default false). */
  addSpecial: boolean;
  /** Return each id with its text (llama.cpp's `with_pieces`). */
  withPieces: boolean;
}

/**
 * Validates a `/tokenize` body: `content` (llama.cpp) or `prompt` (vLLM) text, or vLLM's chat
 * `messages`.
 *
 * @param raw the parsed JSON body
 * @param limits request limits (messages count)
 * @returns the request
 */
export function parseTokenizeRequest(raw: unknown, limits: RequestLimits): TokenizeRequest {
  const body = requireObject(raw);
  const addSpecial = optBoolean(body, "add_special") ?? optBoolean(body, "add_special_tokens") ??
    false;
  const withPieces = optBoolean(body, "with_pieces") ?? false;
  if (body.messages !== undefined && body.messages !== null) {
    return { text: null, messages: parseMessages(body, limits), addSpecial, withPieces };
  }
  const field = body.content !== undefined ? "content" : "prompt";
  const text = body[field];
  if (typeof text !== "string") {
    throw badRequest(
      field,
      `Invalid '${field}': expected a string (or 'messages'), got ${kind(text)}`,
    );
  }
  return { text, messages: null, addSpecial, withPieces };
}

/**
 * Validates a `/detokenize` body: `tokens`, an array of token ids (checked against the vocab by
 * the route).
 *
 * @param raw the parsed JSON body
 * @returns the ids
 */
export function parseDetokenizeRequest(raw: unknown): number[] {
  const body = requireObject(raw);
  const t = body.tokens;
  if (!Array.isArray(t)) {
    throw badRequest("tokens", `Invalid 'tokens': expected an array of token ids, got ${kind(t)}`);
  }
  t.forEach((x, i) => {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
      throw badRequest(
        `tokens[${i}]`,
        `Invalid 'tokens[${i}]': expected a token id, got ${kind(x)}`,
      );
    }
  });
  return t as number[];
}
