/**
 * `POST /v1/responses`, OpenAI's Responses API, stateless (as Ollama's): the request's `input`
 * (a string, or message, `function_call` and `function_call_output` items) and `instructions`
 * become a chat request — the same template, scheduler, sampling, JSON formats and tool calls as
 * `/v1/chat/completions` — and the reply comes back as a `response` object with `reasoning`,
 * `message` and `function_call` output items, or as its event stream (`response.created`, …,
 * `response.output_text.delta`, …, `response.completed`). Nothing is stored:
 * `previous_response_id` is refused, and the whole conversation goes in `input`.
 * @module
 */
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import { ApiError, badRequest } from "./errors.ts";
import {
  chatJobs,
  type ChatOutcome,
  checkModel,
  newId,
  readBody,
  type RouteDeps,
  runChat,
  type Usage,
} from "./openai.ts";
import { isObject, kind, parseChatRequest, parseContent } from "./validate.ts";

type Json = Record<string, unknown>;

/** The content part types a Responses message may hold. */
const PART_TYPES = ["input_text", "output_text", "text"];

const ROLES = new Set(["user", "system", "developer", "assistant"]);

/** `input` (and `instructions`) as chat messages. */
function inputMessages(body: Json): Json[] {
  const out: Json[] = [];
  if (body.instructions !== undefined && body.instructions !== null) {
    if (typeof body.instructions !== "string") {
      throw badRequest(
        "instructions",
        `Invalid 'instructions': expected a string, got ${kind(body.instructions)}`,
      );
    }
    out.push({ role: "system", content: body.instructions });
  }
  const input = body.input;
  if (typeof input === "string") return [...out, { role: "user", content: input }];
  if (!Array.isArray(input) || input.length === 0) {
    throw badRequest(
      "input",
      `Invalid 'input': expected a string or a non-empty array of items, got ${kind(input)}`,
    );
  }
  input.forEach((item, i) => {
    const p = `input[${i}]`;
    if (!isObject(item)) {
      throw badRequest(p, `Invalid '${p}': expected an object, got ${kind(item)}`);
    }
    const type = item.type ?? "message";
    if (type === "message") {
      if (!ROLES.has(item.role as string)) {
        throw badRequest(
          `${p}.role`,
          `Invalid '${p}.role': ${JSON.stringify(item.role)}; expected one of ${
            [...ROLES].join(", ")
          }`,
        );
      }
      out.push({
        role: item.role,
        content: parseContent(item.content, `${p}.content`, PART_TYPES),
      });
    } else if (type === "function_call") {
      for (const f of ["call_id", "name", "arguments"]) {
        if (typeof item[f] !== "string") {
          throw badRequest(
            `${p}.${f}`,
            `Invalid '${p}.${f}': expected a string, got ${kind(item[f])}`,
          );
        }
      }
      const call = {
        id: item.call_id,
        type: "function",
        function: { name: item.name, arguments: item.arguments },
      };
      // consecutive calls are one assistant turn
      const last = out.at(-1);
      if (last?.role === "assistant" && Array.isArray(last.tool_calls) && last.content === "") {
        (last.tool_calls as unknown[]).push(call);
      } else out.push({ role: "assistant", content: "", tool_calls: [call] });
    } else if (type === "function_call_output") {
      if (typeof item.call_id !== "string") {
        throw badRequest(`${p}.call_id`, `Invalid '${p}.call_id': expected a string`);
      }
      const output = typeof item.output === "string" ? item.output : JSON.stringify(item.output);
      out.push({ role: "tool", tool_call_id: item.call_id, content: output });
    } else if (type !== "reasoning") {
      // earlier reasoning items are dropped, as the template drops earlier think blocks
      throw badRequest(
        `${p}.type`,
        `Unsupported '${p}.type': ${
          JSON.stringify(type)
        }; expected "message", "function_call", "function_call_output" or "reasoning"`,
      );
    }
  });
  return out;
}

/** Responses' `text.format` as Chat Completions' `response_format`. */
function responseFormat(text: unknown): unknown {
  if (text === undefined || text === null) return undefined;
  if (!isObject(text)) {
    throw badRequest("text", `Invalid 'text': expected an object, got ${kind(text)}`);
  }
  const f = text.format;
  if (f === undefined || f === null) return undefined;
  if (!isObject(f)) {
    throw badRequest("text.format", `Invalid 'text.format': expected an object, got ${kind(f)}`);
  }
  if (f.type !== "json_schema") return f; // text, json_object (others are refused by the chat parser)
  return { type: "json_schema", json_schema: { name: f.name, schema: f.schema } };
}

/** Responses' flat function tools as Chat Completions' `{type, function}` ones. */
function chatTools(tools: unknown): unknown {
  if (!Array.isArray(tools)) return tools;
  return tools.map((t, i) => {
    if (!isObject(t) || t.type !== "function") {
      throw badRequest(
        `tools[${i}].type`,
        `Unsupported 'tools[${i}].type': ${
          JSON.stringify(isObject(t) ? t.type : t)
        }; only "function" tools are supported`,
      );
    }
    const { name, description, parameters } = t;
    return { type: "function", function: { name, description, parameters } };
  });
}

/** Responses' `tool_choice` ({type: "function", name}) as Chat Completions' one. */
function chatToolChoice(v: unknown): unknown {
  if (isObject(v) && v.type === "function" && typeof v.name === "string") {
    return { type: "function", function: { name: v.name } };
  }
  return v;
}

/**
 * `reasoning: {effort}`: "low", "medium" or "high" opens the reply in a think block (MiniMind's
 * `open_thinking`); "none", "minimal" or no `reasoning` leave it closed.
 */
function thinking(r: unknown): Json | undefined {
  if (r === undefined || r === null) return undefined;
  if (!isObject(r)) {
    throw badRequest("reasoning", `Invalid 'reasoning': expected an object, got ${kind(r)}`);
  }
  const effort = r.effort ?? "medium";
  if (!["none", "minimal", "low", "medium", "high"].includes(effort as string)) {
    throw badRequest(
      "reasoning.effort",
      `Invalid 'reasoning.effort': ${
        JSON.stringify(effort)
      }; expected none, minimal, low, medium or high`,
    );
  }
  return { open_thinking: effort !== "none" && effort !== "minimal" };
}

/** The chat completion request a Responses request stands for. */
function asChatBody(body: Json): Json {
  if (body.previous_response_id !== undefined && body.previous_response_id !== null) {
    throw badRequest(
      "previous_response_id",
      "Unsupported 'previous_response_id': this server keeps no responses; send the whole conversation in 'input'",
    );
  }
  const chat: Json = {
    messages: inputMessages(body),
    model: body.model,
    stream: body.stream,
    temperature: body.temperature,
    top_p: body.top_p,
    top_k: body.top_k,
    seed: body.seed,
    max_tokens: body.max_output_tokens,
    tools: chatTools(body.tools),
    tool_choice: chatToolChoice(body.tool_choice),
    response_format: responseFormat(body.text),
    chat_template_kwargs: body.chat_template_kwargs ?? thinking(body.reasoning),
  };
  for (const k of Object.keys(chat)) if (chat[k] === undefined) delete chat[k];
  return chat;
}

/** Chat usage in the Responses API's names. */
function responseUsage(u: Usage): Json {
  return {
    input_tokens: u.prompt_tokens,
    input_tokens_details: { cached_tokens: u.prompt_tokens_details.cached_tokens },
    output_tokens: u.completion_tokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: u.total_tokens,
  };
}

/** The output items of a finished chat outcome, with the ids the stream already used. */
function outputItems(r: ChatOutcome, ids: { reasoning: string; message: string }): Json[] {
  const out: Json[] = [];
  if (r.last.reasoning) out.push(reasoningItem(ids.reasoning, r.last.reasoning));
  if (r.last.content || !r.calls.length) {
    out.push(messageItem(ids.message, r.last.content, "completed"));
  }
  for (const c of r.calls) out.push(callItem(c.id, c.function.name, c.function.arguments));
  return out;
}

function reasoningItem(id: string, text: string): Json {
  return { type: "reasoning", id, summary: [], content: [{ type: "reasoning_text", text }] };
}

function messageItem(id: string, text: string | null, status: string): Json {
  return {
    type: "message",
    id,
    status,
    role: "assistant",
    content: text === null ? [] : [{ type: "output_text", text, annotations: [], logprobs: [] }],
  };
}

function callItem(callId: string, name: string, args: string): Json {
  return {
    type: "function_call",
    id: `fc_${callId.replace(/^call_?/, "")}`,
    call_id: callId,
    name,
    arguments: args,
    status: "completed",
  };
}

/**
 * `POST /v1/responses`.
 *
 * @param deps shared state
 * @returns the handler
 */
export function responses(deps: RouteDeps): (c: Context) => Promise<Response> {
  return async function responsesHandler(c: Context): Promise<Response> {
    const raw = await readBody(c, deps);
    if (!isObject(raw)) {
      throw badRequest(null, `Invalid request body: expected a JSON object, got ${kind(raw)}`);
    }
    const req = parseChatRequest(asChatBody(raw), deps.defaults, deps.limits);
    checkModel(deps, req.model);
    const [job] = await chatJobs(c, deps, req, req.messages, 0, [0]);
    const id = newId("resp_"), created = Math.floor(Date.now() / 1000);
    const ids = { reasoning: newId("rs_"), message: newId("msg_") };
    const response = (status: string, output: Json[], usage: Json | null, incomplete = false) => ({
      id,
      object: "response",
      created_at: created,
      status,
      error: null,
      incomplete_details: incomplete ? { reason: "max_output_tokens" } : null,
      instructions: typeof raw.instructions === "string" ? raw.instructions : null,
      max_output_tokens: req.maxTokens,
      model: deps.modelId,
      output,
      parallel_tool_calls: true,
      previous_response_id: null,
      store: false,
      temperature: req.sampling.temperature,
      top_p: req.sampling.topP,
      text: {
        format: isObject(raw.text) && isObject(raw.text.format)
          ? raw.text.format
          : { type: "text" },
      },
      tool_choice: raw.tool_choice ?? "auto",
      tools: Array.isArray(raw.tools) ? raw.tools : [],
      usage,
      metadata: isObject(raw.metadata) ? raw.metadata : {},
    });
    const finished = (r: ChatOutcome) => {
      const incomplete = r.finish === "length";
      return response(
        incomplete ? "incomplete" : "completed",
        outputItems(r, ids),
        responseUsage(r.usage),
        incomplete,
      );
    };

    if (!req.stream) {
      return c.json(finished(await runChat(c, deps, req, job, () => Promise.resolve())));
    }

    return streamSSE(c, async (s) => {
      s.onAbort(() => job.cancel());
      let seq = 0;
      const event = (type: string, data: Json) =>
        s.writeSSE({
          event: type,
          data: JSON.stringify({ type, sequence_number: seq++, ...data }),
        });
      // the item being streamed: reasoning first (open_thinking), then the message
      let open: { kind: "reasoning" | "message"; index: number; text: string } | null = null;
      let items = 0;
      const close = async () => {
        if (!open) return;
        const { kind, index, text } = open;
        open = null;
        if (kind === "reasoning") {
          const at = { item_id: ids.reasoning, output_index: index, content_index: 0 };
          await event("response.reasoning_text.done", { ...at, text });
          await event("response.content_part.done", {
            ...at,
            part: { type: "reasoning_text", text },
          });
          await event("response.output_item.done", {
            output_index: index,
            item: reasoningItem(ids.reasoning, text),
          });
          return;
        }
        const part = { type: "output_text", text, annotations: [], logprobs: [] };
        const at = { item_id: ids.message, output_index: index, content_index: 0 };
        await event("response.output_text.done", { ...at, text, logprobs: [] });
        await event("response.content_part.done", { ...at, part });
        await event("response.output_item.done", {
          output_index: index,
          item: messageItem(ids.message, text, "completed"),
        });
      };
      const openItem = async (kind: "reasoning" | "message") => {
        if (open?.kind === kind) return open;
        await close();
        const index = items++;
        open = { kind, index, text: "" };
        if (kind === "reasoning") {
          await event("response.output_item.added", {
            output_index: index,
            item: { type: "reasoning", id: ids.reasoning, summary: [], content: [] },
          });
          await event("response.content_part.added", {
            item_id: ids.reasoning,
            output_index: index,
            content_index: 0,
            part: { type: "reasoning_text", text: "" },
          });
        } else {
          await event("response.output_item.added", {
            output_index: index,
            item: messageItem(ids.message, null, "in_progress"),
          });
          await event("response.content_part.added", {
            item_id: ids.message,
            output_index: index,
            content_index: 0,
            part: { type: "output_text", text: "", annotations: [], logprobs: [] },
          });
        }
        return open;
      };
      try {
        await event("response.created", { response: response("in_progress", [], null) });
        await event("response.in_progress", { response: response("in_progress", [], null) });
        const r = await runChat(c, deps, req, job, async (d) => {
          for (
            const [key, kind] of [["reasoning_content", "reasoning"], [
              "content",
              "message",
            ]] as const
          ) {
            const delta = d[key];
            if (typeof delta !== "string" || !delta) continue;
            const it = await openItem(kind);
            it.text += delta;
            await event(
              kind === "reasoning" ? "response.reasoning_text.delta" : "response.output_text.delta",
              {
                item_id: kind === "reasoning" ? ids.reasoning : ids.message,
                output_index: it.index,
                content_index: 0,
                delta,
                ...(kind === "message" ? { logprobs: [] } : {}),
              },
            );
          }
        });
        if (r.finish === "cancelled") return;
        if (!r.calls.length && !r.last.content) await openItem("message"); // an empty reply
        await close();
        for (const call of r.calls) {
          const item = callItem(call.id, call.function.name, call.function.arguments);
          const index = items++;
          await event("response.output_item.added", {
            output_index: index,
            item: { ...item, arguments: "", status: "in_progress" },
          });
          const at = { item_id: item.id, output_index: index };
          await event("response.function_call_arguments.delta", { ...at, delta: item.arguments });
          await event("response.function_call_arguments.done", {
            ...at,
            name: item.name,
            arguments: item.arguments,
          });
          await event("response.output_item.done", { output_index: index, item });
        }
        const done = finished(r);
        await event(
          done.status === "completed" ? "response.completed" : "response.incomplete",
          { response: done },
        );
      } catch (e) {
        // the Responses stream's error event (no [DONE] in this API)
        job.cancel();
        if (s.aborted || s.closed) return;
        const err = e instanceof ApiError
          ? e
          : new ApiError(500, `Generation failed: ${(e as Error).message}`);
        const { message, code, param } = err.toBody().error;
        await event("error", { code, message, param }).catch(() => {});
      }
    });
  };
}
