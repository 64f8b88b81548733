/**
 * Tools and the multi-turn tool loop. A tool is a plain async function with a JSON schema
 * (`{name, description, parameters, run}`); {@link runAgentLoop} generates a turn, lifts its
 * `<tool_call>` blocks out with the server's {@link ReplyParser}, runs each call under a time limit,
 * appends the `tool` messages and generates again, up to `maxTurns` (MiniMind `train_agent.py` /
 * `web_demo.py`). Nothing a tool or the model does can crash the loop: a malformed call, an unknown
 * tool, bad arguments, a tool that throws and one that runs out of time each become a `tool`
 * message whose content is `{"error": "…"}`.
 *
 * It lives in `serve/` because the server runs it for `--tools builtin` and reuses the reply
 * parser; the evaluation and the agentic trainer (`agent/`) import it from here. The model is
 * behind a callback, so this file knows nothing of tensors.
 * @module
 */
import type { ChatMessage } from "../data/chat_template.ts";
import { ReplyParser, type ToolCall } from "./reply_parser.ts";

/** The subset of JSON Schema the tools use and {@link checkArguments} checks. */
export interface JsonSchema {
  /** "object", "string", "number", "integer", "boolean" or "array". */
  type?: string;
  /** What the value means (shown to the model). */
  description?: string;
  /** Object fields. */
  properties?: Record<string, JsonSchema>;
  /** Object fields that must be present. */
  required?: string[];
  /** Allowed values. */
  enum?: unknown[];
  /** Array items. */
  items?: JsonSchema;
}

/** What a tool's `run` gets besides its arguments. */
export interface ToolContext {
  /** Aborted when the call runs out of time or the loop is cancelled. */
  signal: AbortSignal;
}

/** A tool: name, description and parameter schema (shown to the model), and the function. */
export interface Tool {
  /** Function name the model calls. */
  name: string;
  /** One-line description for the model. */
  description: string;
  /** JSON schema of the arguments object. */
  parameters: JsonSchema;
  /**
   * Runs the tool. A string result is sent as is, anything else as JSON; a throw becomes an error
   * message for the model.
   */
  run(args: Record<string, unknown>, context: ToolContext): unknown;
}

/** The OpenAI `tools` entry of a tool (what the chat template renders). */
export interface ToolSchema {
  /** Always "function". */
  type: "function";
  /** Name, description, parameters. */
  function: { name: string; description: string; parameters: JsonSchema };
}

/**
 * The OpenAI `tools` entry of a tool.
 *
 * @param tool the tool
 * @returns `{type: "function", function: {name, description, parameters}}`
 */
export function toolSchema(tool: Tool): ToolSchema {
  return {
    type: "function",
    function: { name: tool.name, description: tool.description, parameters: tool.parameters },
  };
}

function typeOk(type: string | undefined, v: unknown): boolean {
  switch (type) {
    case undefined:
      return true;
    case "string":
      return typeof v === "string";
    case "number":
      return typeof v === "number" && Number.isFinite(v);
    case "integer":
      return Number.isInteger(v);
    case "boolean":
      return typeof v === "boolean";
    case "array":
      return Array.isArray(v);
    case "object":
      return typeof v === "object" && v !== null && !Array.isArray(v);
    default:
      return true;
  }
}

/**
 * Checks arguments against a tool's schema: an object, required fields present, known fields of
 * the declared primitive type and within `enum`.
 *
 * @param schema the tool's `parameters`
 * @param args the parsed arguments
 * @returns null when they fit, else what is wrong
 */
export function checkArguments(schema: JsonSchema, args: unknown): string | null {
  if (!typeOk("object", args)) {
    return `arguments must be a JSON object, got ${JSON.stringify(args)}`;
  }
  const o = args as Record<string, unknown>;
  for (const r of schema.required ?? []) {
    if (!(r in o)) return `missing required argument '${r}'`;
  }
  for (const [k, s] of Object.entries(schema.properties ?? {})) {
    if (!(k in o)) continue;
    if (!typeOk(s.type, o[k])) {
      return `argument '${k}' must be of type ${s.type}, got ${JSON.stringify(o[k])}`;
    }
    if (s.enum && !s.enum.includes(o[k])) {
      return `argument '${k}' must be one of ${JSON.stringify(s.enum)}, got ${
        JSON.stringify(o[k])
      }`;
    }
  }
  return null;
}

/** A `tool` message (the result of one call). */
export interface ToolMessage extends ChatMessage {
  /** Always "tool". */
  role: "tool";
  /** The call it answers. */
  tool_call_id: string;
  /** The tool's name ("" for a malformed call). */
  name: string;
  /** The result text, or `{"error": "…"}`. */
  content: string;
}

/** Why a call produced no result. */
export type ToolErrorKind = "malformed" | "unknown_tool" | "bad_arguments" | "failed" | "timeout";

/** The outcome of one call. */
export interface ToolOutcome {
  /** The `tool` message to append. */
  message: ToolMessage;
  /** The call (null for a malformed one). */
  call: ToolCall | null;
  /** null when the tool ran and returned. */
  error: ToolErrorKind | null;
}

/** Options of {@link runToolCall}. */
export interface RunToolOptions {
  /** Time limit per call in ms (default 1000, MiniMind's one-second alarm). */
  timeoutMs?: number;
  /** Longest result text; longer ones are cut (default 2048, MiniMind's). */
  maxChars?: number;
  /** Aborts the call. */
  signal?: AbortSignal;
}

function errorMessage(id: string, name: string, text: string): ToolMessage {
  return { role: "tool", tool_call_id: id, name, content: JSON.stringify({ error: text }) };
}

function resultText(v: unknown, maxChars: number): string {
  let s: string;
  if (typeof v === "string") s = v;
  else {
    try {
      s = JSON.stringify(v) ?? String(v);
    } catch {
      s = String(v);
    }
  }
  return s.length > maxChars ? s.slice(0, maxChars) + "…(truncated)" : s;
}

let malformedCount = 0;

/**
 * The outcome of a `<tool_call>` block that is not a JSON `{"name", "arguments"}` object.
 *
 * @param raw the block as generated
 * @returns an error `tool` message
 */
export function malformedOutcome(raw: string): ToolOutcome {
  const shown = raw.length > 200 ? raw.slice(0, 200) + "…" : raw;
  return {
    message: errorMessage(
      `call_malformed_${(malformedCount++).toString(36)}`,
      "",
      `malformed tool call: expected <tool_call>{"name": …, "arguments": {…}}</tool_call>, got ${shown}`,
    ),
    call: null,
    error: "malformed",
  };
}

/**
 * Runs one tool call under a time limit. Never throws: every failure is a `tool` message with
 * `{"error": "…"}` and the kind of failure.
 *
 * @param tools the available tools
 * @param call the parsed call
 * @param options time limit, result cap, abort signal
 * @returns the message and whether (and how) it failed
 */
export async function runToolCall(
  tools: readonly Tool[],
  call: ToolCall,
  options: RunToolOptions = {},
): Promise<ToolOutcome> {
  const { name, arguments: argText } = call.function;
  const fail = (error: ToolErrorKind, text: string): ToolOutcome => ({
    message: errorMessage(call.id, name, text),
    call,
    error,
  });
  const tool = tools.find((t) => t.name === name);
  if (!tool) {
    return fail(
      "unknown_tool",
      `unknown tool '${name}'; available: ${tools.map((t) => t.name).join(", ") || "(none)"}`,
    );
  }
  let args: unknown;
  try {
    args = JSON.parse(argText);
  } catch (e) {
    return fail("bad_arguments", `arguments of ${name} are not JSON: ${(e as Error).message}`);
  }
  const bad = checkArguments(tool.parameters, args);
  if (bad) return fail("bad_arguments", `${name}: ${bad}`);
  const timeoutMs = options.timeoutMs ?? 1000;
  const ac = new AbortController();
  const onAbort = () => ac.abort(options.signal?.reason);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  try {
    const r = await Promise.race([
      Promise.resolve().then(() => tool.run(args as Record<string, unknown>, { signal: ac.signal }))
        .then((value) => ({ value })),
      timeout,
    ]);
    if (r === "timeout") {
      ac.abort(new Error("timeout"));
      return fail("timeout", `${name} timed out after ${timeoutMs} ms`);
    }
    return {
      message: {
        role: "tool",
        tool_call_id: call.id,
        name,
        content: resultText(r.value, options.maxChars ?? 2048),
      },
      call,
      error: null,
    };
  } catch (e) {
    return fail("failed", `${name} failed: ${(e as Error)?.message ?? String(e)}`);
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Generates one assistant turn: gets the conversation so far and the tools' schemas, returns the
 * raw generated text (with `<think>` / `<tool_call>` tags, without the end-of-turn token).
 */
export type TurnGenerator = (
  messages: readonly ChatMessage[],
  tools: readonly ToolSchema[],
) => Promise<string>;

/** One turn of a loop. */
export interface AgentTurn {
  /** The raw generated text. */
  text: string;
  /** Its assistant message (content, reasoning_content, tool_calls). */
  assistant: ChatMessage;
  /** The outcome of each call (valid and malformed), in order. */
  outcomes: ToolOutcome[];
}

/** Options of {@link runAgentLoop}. */
export interface AgentLoopOptions extends RunToolOptions {
  /** The tools that run when called. */
  tools: readonly Tool[];
  /** The tool schemas shown to the model (default: those of `tools`). */
  offered?: readonly ToolSchema[];
  /** Most assistant turns (default 3, MiniMind's `max_turns`). */
  maxTurns?: number;
  /** The prompt ends inside an open think block (the generator's template must agree). */
  openThinking?: boolean;
  /** Called after each turn's calls ran (e.g. to stream their results). */
  onTurn?: (turn: AgentTurn) => void | Promise<void>;
  /**
   * Whether to run a turn's calls (default: always). When false the loop ends there and the calls
   * are returned unrun in `pending` — the server hands calls of client-side tools back this way.
   */
  shouldRun?: (calls: readonly ToolCall[]) => boolean;
}

/** What a loop produced. */
export interface AgentResult {
  /** The input messages plus every assistant and tool message appended. */
  messages: ChatMessage[];
  /** The turns in order. */
  turns: AgentTurn[];
  /** The answer: the last turn's content ("" when the loop ended on a call). */
  final: string;
  /** The last allowed turn still made a call (MiniMind's `unfinished`). */
  unfinished: boolean;
  /** Tool calls made (valid JSON ones). */
  calls: number;
  /** `<tool_call>` blocks that were not valid calls. */
  malformed: number;
  /** Calls of the last turn left unrun because `shouldRun` said no (else empty). */
  pending: ToolCall[];
}

function parseArgs(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/**
 * Splits a generated turn into its assistant message, the valid calls and the malformed blocks.
 *
 * @param text raw generated text
 * @param openThinking the prompt ended inside an open think block
 * @returns the assistant message, calls and malformed blocks
 */
export function parseTurn(
  text: string,
  openThinking = false,
): { assistant: ChatMessage; calls: ToolCall[]; malformed: string[] } {
  const p = new ReplyParser({ openThinking, parseTools: true });
  p.push(text);
  p.end();
  const assistant: ChatMessage = { role: "assistant", content: p.content };
  if (p.reasoning) assistant.reasoning_content = p.reasoning;
  // arguments as an object, so the template re-renders them as it renders training data
  // (`tojson`: `{"a": 1}`), not as the compact string of the OpenAI call
  if (p.toolCalls.length) {
    assistant.tool_calls = p.toolCalls.map((c) => ({
      ...c,
      function: { name: c.function.name, arguments: parseArgs(c.function.arguments) },
    }));
  }
  return { assistant, calls: p.toolCalls, malformed: p.malformedCalls };
}

/**
 * The multi-turn tool loop: generate → parse tool calls → run them (time-limited) → append `tool`
 * messages → generate again, until a turn makes no call or `maxTurns` turns were generated.
 *
 * @param generateTurn the model behind a callback
 * @param messages the conversation so far (not modified)
 * @param options tools, max turns, time limit, result cap, abort signal
 * @returns the messages, turns, final answer and call counts
 * @example
 * ```ts
 * import { runAgentLoop, type Tool } from "./tools.ts";
 * const add: Tool = {
 *   name: "add", description: "a + b",
 *   parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } } },
 *   run: ({ a, b }) => String(Number(a) + Number(b)),
 * };
 * const replies = ['<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>', "5"];
 * const r = await runAgentLoop(async () => replies.shift()!, [{ role: "user", content: "2+3?" }], {
 *   tools: [add],
 * });
 * r.final; // "5"; r.messages[2] is the tool message with content "5"
 * ```
 */
export async function runAgentLoop(
  generateTurn: TurnGenerator,
  messages: readonly ChatMessage[],
  options: AgentLoopOptions,
): Promise<AgentResult> {
  const maxTurns = options.maxTurns ?? 3;
  const schemas = options.offered ?? options.tools.map(toolSchema);
  const out: ChatMessage[] = [...messages];
  const turns: AgentTurn[] = [];
  let calls = 0, malformed = 0, final = "", unfinished = false;
  for (let t = 0; t < maxTurns; t++) {
    options.signal?.throwIfAborted();
    const text = await generateTurn(out, schemas);
    const { assistant, calls: tc, malformed: bad } = parseTurn(text, options.openThinking);
    if (tc.length && options.shouldRun && !options.shouldRun(tc)) {
      out.push(assistant);
      turns.push({ text, assistant, outcomes: [] });
      calls += tc.length;
      return { messages: out, turns, final: "", unfinished: false, calls, malformed, pending: tc };
    }
    const outcomes: ToolOutcome[] = [];
    for (const c of tc) outcomes.push(await runToolCall(options.tools, c, options));
    for (const b of bad) outcomes.push(malformedOutcome(b));
    calls += tc.length;
    malformed += bad.length;
    out.push(assistant, ...outcomes.map((o) => o.message));
    const turn = { text, assistant, outcomes };
    turns.push(turn);
    await options.onTurn?.(turn);
    if (outcomes.length === 0) {
      final = String(assistant.content ?? "");
      break;
    }
    if (t === maxTurns - 1) unfinished = true;
  }
  return { messages: out, turns, final, unfinished, calls, malformed, pending: [] };
}
