/**
 * A model as the tool loop's turn generator. Turns requested together (by loops running side by
 * side) are decoded as one batch: each call renders the chat template with the offered tools,
 * waits one macrotask for company, then one `generateBatch` serves every waiting turn.
 * @module
 */
import type { ChatMessage } from "../data/chat_template.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { generateBatch } from "../nn/model/generate.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { ToolSchema, TurnGenerator } from "../serve/tools.ts";

/** A chat model: config, params and tokenizer (with its chat template). */
export interface ChatModel {
  /** Model config. */
  cfg: MiniMindConfig;
  /** Parameters. */
  params: MiniMindParams;
  /** Tokenizer with a chat template. */
  tokenizer: Tokenizer;
}

/** Sampling of the turns (defaults: MiniMind's `eval_toolcall.py`). */
export interface TurnOptions {
  /** Most tokens per turn (default 512). */
  maxNewTokens?: number;
  /** Temperature (default 0.9). */
  temperature?: number;
  /** Nucleus mass (default 0.9). */
  topP?: number;
  /** Top-k (default 50). */
  topK?: number;
  /** Argmax decoding (default false). */
  greedy?: boolean;
  /** Seed; each batch uses the next one (default 0). */
  seed?: number;
  /** Open a think block at the start of each turn (default false). */
  openThinking?: boolean;
  /** Most turns decoded together (default 16). */
  maxBatch?: number;
  /** Longest prompt in tokens; longer ones are cut from the left (default 2048). */
  maxPromptTokens?: number;
}

/** One generated turn with its tokens. */
export interface GeneratedTurn {
  /** The prompt's token ids (template rendered with tools and generation prompt). */
  promptIds: number[];
  /** The sampled token ids, end-of-turn token excluded. */
  tokens: number[];
  /** Their text (special tokens other than `<tool_call>`/`<think>` tags dropped). */
  text: string;
}

/**
 * Renders the prompt of the next assistant turn.
 *
 * @param tokenizer tokenizer with the chat template
 * @param messages conversation so far
 * @param tools offered tool schemas
 * @param openThinking open a think block
 * @returns prompt text
 */
export function turnPrompt(
  tokenizer: Tokenizer,
  messages: readonly ChatMessage[],
  tools: readonly ToolSchema[],
  openThinking = false,
): string {
  return tokenizer.applyChatTemplate([...messages], {
    addGenerationPrompt: true,
    tools: tools.length ? [...tools] : undefined,
    openThinking,
  });
}

interface Waiting {
  ids: number[];
  resolve: (t: GeneratedTurn) => void;
  reject: (e: unknown) => void;
}

/** Batches the turns of loops running side by side into shared decodes. */
export class TurnBatcher {
  readonly #model: ChatModel;
  readonly #opts: Required<TurnOptions>;
  #queue: Waiting[] = [];
  #scheduled = false;
  #seed: number;
  /** Decodes run so far. */
  batches = 0;
  /** Tokens generated so far. */
  tokens = 0;

  /**
   * @param model config, params, tokenizer
   * @param options sampling and batching
   */
  constructor(model: ChatModel, options: TurnOptions = {}) {
    this.#model = model;
    this.#opts = {
      maxNewTokens: options.maxNewTokens ?? 512,
      temperature: options.temperature ?? 0.9,
      topP: options.topP ?? 0.9,
      topK: options.topK ?? 50,
      greedy: options.greedy ?? false,
      seed: options.seed ?? 0,
      openThinking: options.openThinking ?? false,
      maxBatch: options.maxBatch ?? 16,
      maxPromptTokens: options.maxPromptTokens ?? 2048,
    };
    this.#seed = this.#opts.seed;
  }

  /**
   * Generates one turn (batched with the turns requested in the same tick).
   *
   * @param messages conversation so far
   * @param tools offered tool schemas
   * @returns prompt ids, sampled ids and text
   */
  generate(messages: readonly ChatMessage[], tools: readonly ToolSchema[]): Promise<GeneratedTurn> {
    const tok = this.#model.tokenizer;
    const text = turnPrompt(tok, messages, tools, this.#opts.openThinking);
    const ids = tok.encode(text, { addSpecialTokens: false }).slice(-this.#opts.maxPromptTokens);
    return new Promise((resolve, reject) => {
      this.#queue.push({ ids, resolve, reject });
      if (!this.#scheduled) {
        this.#scheduled = true;
        setTimeout(() => this.#drain(), 0);
      }
    });
  }

  /** The turn generator for {@link runAgentLoop} (text only). */
  readonly turn: TurnGenerator = async (messages, tools) =>
    (await this.generate(messages, tools)).text;

  async #drain(): Promise<void> {
    while (this.#queue.length) {
      const batch = this.#queue.splice(0, this.#opts.maxBatch);
      try {
        const out = await this.#decode(batch.map((w) => w.ids));
        batch.forEach((w, i) => w.resolve(out[i]));
      } catch (e) {
        for (const w of batch) w.reject(e);
      }
    }
    this.#scheduled = false;
  }

  async #decode(prompts: number[][]): Promise<GeneratedTurn[]> {
    const { tokenizer } = this.#model;
    const o = this.#opts;
    const out = prompts.map((promptIds) => ({ promptIds, tokens: [] as number[], text: "" }));
    const pad = tokenizer.padId;
    for await (
      const p of generateBatch(this.#model, prompts, {
        maxNewTokens: o.maxNewTokens,
        temperature: o.temperature,
        topP: o.topP,
        topK: o.topK,
        greedy: o.greedy,
        seed: this.#seed++,
      })
    ) {
      const row = out[p.index];
      row.text += p.text;
      if (p.token >= 0 && p.token !== tokenizer.eosId && p.token !== pad) row.tokens.push(p.token);
    }
    this.batches++;
    for (const r of out) this.tokens += r.tokens.length;
    return out;
  }
}
