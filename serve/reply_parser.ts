/**
 * Reply post-processing, incremental so streaming and non-streaming replies agree:
 * `StopMatcher` cuts the text at the first stop sequence (holding back what could still become
 * one), and `ReplyParser` splits it into `reasoning_content` (think blocks) and `content`, and
 * lifts `<tool_call>{"name", "arguments"}</tool_call>` blocks out as OpenAI tool calls — the
 * shapes MiniMind's `serve_openai_api.py` produces.
 * @module
 */

/** Longest suffix of `s` that is a proper prefix of one of `tags`. */
function partialTagSuffix(s: string, tags: readonly string[]): number {
  let best = 0;
  for (const t of tags) {
    for (let n = Math.min(t.length - 1, s.length); n > best; n--) {
      if (s.endsWith(t.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}

/** Cuts generated text at the first stop sequence. */
export class StopMatcher {
  readonly #stops: readonly string[];
  #held = "";
  #stopped = false;

  /** @param stops the stop sequences (may be empty) */
  constructor(stops: readonly string[]) {
    this.#stops = stops;
  }

  /** Whether a stop sequence was seen. */
  get stopped(): boolean {
    return this.#stopped;
  }

  /**
   * Adds text; returns what is safe to pass on.
   *
   * @param text newly decoded text
   * @returns text before any (possible) stop sequence
   */
  push(text: string): string {
    if (this.#stopped) return "";
    if (this.#stops.length === 0) return text;
    const s = this.#held + text;
    let cut = -1;
    for (const stop of this.#stops) {
      const i = s.indexOf(stop);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.#stopped = true;
      this.#held = "";
      return s.slice(0, cut);
    }
    const keep = partialTagSuffix(s, this.#stops);
    this.#held = s.slice(s.length - keep);
    return s.slice(0, s.length - keep);
  }

  /** @returns held-back text at the end of generation */
  flush(): string {
    const h = this.#held;
    this.#held = "";
    return this.#stopped ? "" : h;
  }
}

/** An OpenAI tool call. */
export interface ToolCall {
  /** `call_…` id. */
  id: string;
  /** Always "function". */
  type: "function";
  /** Name and JSON-encoded arguments. */
  function: { name: string; arguments: string };
}

/** A piece of the reply: reasoning text or answer text. */
export type ReplyDelta = { reasoning_content: string } | { content: string };

const THINK_OPEN = "<think>";
const THINK_CLOSE = "</think>";
const TOOL_OPEN = "<tool_call>";
const TOOL_CLOSE = "</tool_call>";

type Mode = "content" | "reasoning" | "tool";

let callCounter = 0;

/** A fresh tool-call id. */
function callId(): string {
  const r = crypto.getRandomValues(new Uint8Array(6));
  return `call_${Date.now().toString(36)}${(callCounter++).toString(36)}${
    Array.from(r, (b) => b.toString(16).padStart(2, "0")).join("")
  }`;
}

/**
 * Parses one `<tool_call>` body: `{"name": …, "arguments": {…}}`.
 *
 * @param body text between the tags
 * @returns the call, or null when it is not valid JSON of that shape
 */
export function parseToolCallBody(body: string): ToolCall | null {
  let v: unknown;
  try {
    v = JSON.parse(body.trim());
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) return null;
  const o = v as Record<string, unknown>;
  if (typeof o.name !== "string" || !o.name) return null;
  const args = o.arguments ?? o.parameters ?? {};
  return {
    id: callId(),
    type: "function",
    function: { name: o.name, arguments: typeof args === "string" ? args : JSON.stringify(args) },
  };
}

/** Splits generated text into reasoning, content and tool calls, incrementally. */
export class ReplyParser {
  #mode: Mode;
  readonly #tools: boolean;
  #buf = "";
  #tool = "";
  #stripLead: boolean;
  /** All reasoning text so far. */
  reasoning = "";
  /** All content text so far. */
  content = "";
  /** Tool calls parsed so far. */
  readonly toolCalls: ToolCall[] = [];
  /** Raw `<tool_call>` blocks that were not valid JSON calls (closed or not); kept as content too. */
  readonly malformedCalls: string[] = [];

  /**
   * @param options `openThinking`: the prompt ended inside an open think block; `parseTools`:
   * lift `<tool_call>` blocks out of the content
   */
  constructor(options: { openThinking?: boolean; parseTools?: boolean } = {}) {
    this.#mode = options.openThinking ? "reasoning" : "content";
    this.#tools = options.parseTools ?? false;
    this.#stripLead = true;
  }

  #tags(): string[] {
    if (this.#mode === "reasoning") return [THINK_CLOSE];
    if (this.#mode === "tool") return [TOOL_CLOSE];
    return this.#tools ? [THINK_OPEN, THINK_CLOSE, TOOL_OPEN] : [THINK_OPEN, THINK_CLOSE];
  }

  #emit(text: string, out: ReplyDelta[], final: boolean): void {
    if (this.#stripLead) {
      text = text.replace(/^\n+/, "");
      if (!text) return;
      this.#stripLead = false;
    }
    if (this.#mode === "tool") {
      this.#tool += text;
      return;
    }
    // Trailing newlines (reasoning) or whitespace (content) wait for what follows: dropped
    // before </think> or after the last tool call, emitted otherwise.
    const held = final ? "" : (this.#mode === "reasoning" ? /\n+$/ : /\s+$/).exec(text)?.[0] ?? "";
    const now = text.slice(0, text.length - held.length);
    this.#buf = held;
    if (!now) return;
    if (this.#mode === "reasoning") {
      this.reasoning += now;
      out.push({ reasoning_content: now });
    } else {
      this.content += now;
      out.push({ content: now });
    }
  }

  /**
   * Adds generated text.
   *
   * @param text newly decoded text (after stop-sequence cutting)
   * @returns deltas to stream now
   */
  push(text: string): ReplyDelta[] {
    const out: ReplyDelta[] = [];
    let s = this.#buf + text;
    this.#buf = "";
    for (;;) {
      const tags = this.#tags();
      let at = -1, tag = "";
      for (const t of tags) {
        const i = s.indexOf(t);
        if (i >= 0 && (at < 0 || i < at)) {
          at = i;
          tag = t;
        }
      }
      if (at < 0) {
        const keep = partialTagSuffix(s, tags);
        this.#emit(s.slice(0, s.length - keep), out, false);
        this.#buf += s.slice(s.length - keep);
        return out;
      }
      const before = s.slice(0, at);
      s = s.slice(at + tag.length);
      if (this.#mode === "tool") {
        this.#tool += before;
        const call = parseToolCallBody(this.#tool);
        if (call) this.toolCalls.push(call);
        else {
          this.malformedCalls.push(TOOL_OPEN + this.#tool + TOOL_CLOSE);
          this.#emitRaw(TOOL_OPEN + this.#tool + TOOL_CLOSE, out);
        }
        this.#tool = "";
        this.#mode = "content";
        this.#stripLead = false;
        continue;
      }
      if (this.#mode === "reasoning") {
        this.#emit(before.replace(/\n+$/, ""), out, false);
        this.#buf = ""; // newlines before </think> are dropped
        this.#mode = "content";
        this.#stripLead = true;
        continue;
      }
      // content mode
      if (tag === THINK_OPEN) {
        this.#emit(before, out, true);
        this.#mode = "reasoning";
        this.#stripLead = true;
      } else if (tag === THINK_CLOSE) {
        // A bare </think>: drop the tag, and the newlines after it.
        this.#emit(before, out, false);
        this.#buf = "";
        this.#stripLead = true;
      } else {
        this.#emit(before, out, false);
        this.#buf = ""; // whitespace before a tool call is dropped
        this.#mode = "tool";
        this.#tool = "";
        this.#stripLead = false;
      }
    }
  }

  #emitRaw(text: string, out: ReplyDelta[]): void {
    this.content += text;
    out.push({ content: text });
  }

  /**
   * Ends the reply: flushes held-back text; an unclosed tool call becomes content.
   *
   * @returns the last deltas
   */
  end(): ReplyDelta[] {
    const out: ReplyDelta[] = [];
    const rest = this.#buf;
    this.#buf = "";
    if (this.#mode === "tool") {
      this.malformedCalls.push(TOOL_OPEN + this.#tool + rest);
      this.#emitRaw(TOOL_OPEN + this.#tool + rest, out);
      this.#tool = "";
      this.#mode = "content";
      return out;
    }
    if (this.#mode === "content" && this.toolCalls.length > 0 && !rest.trim()) return out;
    if (this.#mode === "reasoning" && !rest.trim()) return out;
    if (rest) this.#emit(rest, out, true);
    return out;
  }
}
