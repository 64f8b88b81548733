// Chat templates are rendered with @huggingface/jinja from the tokenizer config, exactly as
// transformers' `apply_chat_template` does. MINIMIND_CHAT_TEMPLATE is minimind-3's template
// (Qwen3-like: think blocks, tools, tool responses), written into every tokenizer we train.

import { Template } from "@huggingface/jinja";

/**
 * The minimind-3 chat template (`tokenizer_config.json` → `chat_template`), byte for byte.
 *
 * @example
 * ```ts
 * import { MINIMIND_CHAT_TEMPLATE, renderChatTemplate } from "./chat_template.ts";
 * renderChatTemplate(MINIMIND_CHAT_TEMPLATE, [{ role: "user", content: "你好" }], {
 *   addGenerationPrompt: true,
 * });
 * // "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
 * ```
 */
export const MINIMIND_CHAT_TEMPLATE: string = "{%- if tools %}\n" +
  "    {{- '<|im_start|>system\\n' }}\n" +
  "    {%- if messages[0].role == 'system' %}\n" +
  "        {{- messages[0].content + '\\n\\n' }}\n" +
  "    {%- endif %}\n" +
  '    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n' +
  "    {%- for tool in tools %}\n" +
  '        {{- "\\n" }}\n' +
  "        {{- tool | tojson }}\n" +
  "    {%- endfor %}\n" +
  '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n' +
  "{%- else %}\n" +
  "    {%- if messages[0].role == 'system' %}\n" +
  "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n" +
  "    {%- endif %}\n" +
  "{%- endif %}\n" +
  "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n" +
  "{%- for message in messages[::-1] %}\n" +
  "    {%- set index = (messages|length - 1) - loop.index0 %}\n" +
  "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n" +
  "        {%- set ns.multi_step_tool = false %}\n" +
  "        {%- set ns.last_query_index = index %}\n" +
  "    {%- endif %}\n" +
  "{%- endfor %}\n" +
  "{%- for message in messages %}\n" +
  "    {%- if message.content is string %}\n" +
  "        {%- set content = message.content %}\n" +
  "    {%- else %}\n" +
  "        {%- set content = '' %}\n" +
  "    {%- endif %}\n" +
  '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}\n' +
  "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n" +
  '    {%- elif message.role == "assistant" %}\n' +
  "        {%- set reasoning_content = '' %}\n" +
  "        {%- if message.reasoning_content is string %}\n" +
  "            {%- set reasoning_content = message.reasoning_content %}\n" +
  "        {%- else %}\n" +
  "            {%- if '</think>' in content %}\n" +
  "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n" +
  "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n" +
  "            {%- endif %}\n" +
  "        {%- endif %}\n" +
  "        {%- if true %}\n" +
  "            {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n" +
  "        {%- endif %}\n" +
  "        {%- if message.tool_calls %}\n" +
  "            {%- for tool_call in message.tool_calls %}\n" +
  "                {%- if (loop.first and content) or (not loop.first) %}\n" +
  "                    {{- '\\n' }}\n" +
  "                {%- endif %}\n" +
  "                {%- if tool_call.function %}\n" +
  "                    {%- set tool_call = tool_call.function %}\n" +
  "                {%- endif %}\n" +
  '                {{- \'<tool_call>\\n{"name": "\' }}\n' +
  "                {{- tool_call.name }}\n" +
  '                {{- \'", "arguments": \' }}\n' +
  "                {%- if tool_call.arguments is string %}\n" +
  "                    {{- tool_call.arguments }}\n" +
  "                {%- else %}\n" +
  "                    {{- tool_call.arguments | tojson }}\n" +
  "                {%- endif %}\n" +
  "                {{- '}\\n</tool_call>' }}\n" +
  "            {%- endfor %}\n" +
  "        {%- endif %}\n" +
  "        {{- '<|im_end|>\\n' }}\n" +
  '    {%- elif message.role == "tool" %}\n' +
  '        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}\n' +
  "            {{- '<|im_start|>user' }}\n" +
  "        {%- endif %}\n" +
  "        {{- '\\n<tool_response>\\n' }}\n" +
  "        {{- content }}\n" +
  "        {{- '\\n</tool_response>' }}\n" +
  '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n' +
  "            {{- '<|im_end|>\\n' }}\n" +
  "        {%- endif %}\n" +
  "    {%- endif %}\n" +
  "{%- endfor %}\n" +
  "{%- if add_generation_prompt %}\n" +
  "    {{- '<|im_start|>assistant\\n' }}\n" +
  "    {%- if open_thinking is defined and open_thinking is true %}\n" +
  "        {{- '<think>\\n' }}\n" +
  "    {%- else %}\n" +
  "        {{- '<think>\\n\\n</think>\\n\\n' }}\n" +
  "    {%- endif %}\n" +
  "{%- endif %}";

/** One chat message. Extra fields (`reasoning_content`, `tool_calls`, …) reach the template as is. */
export interface ChatMessage {
  /** `system`, `user`, `assistant` or `tool`. */
  role: string;
  /** The message text (the template treats anything that is not a string as ""). */
  content?: unknown;
  /** Any other field the template reads, e.g. `reasoning_content` or `tool_calls`. */
  [field: string]: unknown;
}

/**
 * Template variables. The named ones are the variables MiniMind's templates read; any other key is
 * passed too. camelCase keys are renamed to snake_case (`addGenerationPrompt` →
 * `add_generation_prompt`); snake_case keys pass unchanged; `undefined` values are left out so
 * that `is defined` tests in the template see them as undefined.
 */
export interface ChatTemplateOptions {
  /** Append the assistant header (and, for minimind-3, the think prefix). */
  addGenerationPrompt?: boolean;
  /** Tool (function) schemas, rendered into the system prompt. */
  tools?: unknown[] | null;
  /** minimind-3: start the answer inside an open `<think>` block. */
  openThinking?: boolean;
  /** MiniMind2 / Qwen3: `false` inserts an empty think block. */
  enableThinking?: boolean;
  /** Any other template variable. */
  [variable: string]: unknown;
}

const templateCache = new Map<string, Template>();

function snakeCase(key: string): string {
  return key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

/**
 * Renders a Jinja chat template the way transformers' `apply_chat_template(tokenize=False)` does.
 *
 * @param template Jinja source (a tokenizer config's `chat_template`).
 * @param messages The conversation.
 * @param options Template variables (see {@link ChatTemplateOptions}).
 * @param specialTokens Extra variables such as `bos_token`/`eos_token`, overridden by `options`.
 * @returns The rendered prompt text.
 * @example
 * ```ts
 * import { MINIMIND_CHAT_TEMPLATE, renderChatTemplate } from "./chat_template.ts";
 * const text = renderChatTemplate(MINIMIND_CHAT_TEMPLATE, [{ role: "user", content: "hi" }], {
 *   addGenerationPrompt: true,
 *   openThinking: true,
 * });
 * // text ends with "<|im_start|>assistant\n<think>\n"
 * ```
 */
export function renderChatTemplate(
  template: string,
  messages: ChatMessage[],
  options: ChatTemplateOptions = {},
  specialTokens: Record<string, unknown> = {},
): string {
  let compiled = templateCache.get(template);
  if (!compiled) {
    try {
      compiled = new Template(template);
    } catch (e) {
      throw new Error(`Cannot parse chat template: ${(e as Error).message}`);
    }
    templateCache.set(template, compiled);
  }
  const vars: Record<string, unknown> = { ...specialTokens, messages };
  vars.add_generation_prompt = false;
  for (const [k, v] of Object.entries(options)) {
    if (v !== undefined) vars[snakeCase(k)] = v;
  }
  try {
    return compiled.render(vars);
  } catch (e) {
    throw new Error(
      `Cannot render chat template for ${messages.length} messages: ${(e as Error).message}`,
    );
  }
}
