// MiniMind's datasets (dataset/lm_dataset.py, HEAD) with the same semantics, producing plain typed
// arrays. T = max_length. Randomness (system-prompt insertion, empty-think removal, open_thinking)
// is drawn from Rng(mixSeed(seed, epoch, index)), so a sample is the same on every run and resume.

import type { ChatMessage } from "./chat_template.ts";
import { JsonlFile, type JsonlOptions } from "./jsonl.ts";
import { mixSeed, Rng } from "./random.ts";
import type { Tokenizer } from "./tokenizer.ts";

/** Label value ignored by the loss (PyTorch's `ignore_index`). */
export const IGNORE_INDEX: number = -100;

/** MiniMind's 10 system prompts, one of which `pre_processing_chat` may prepend. */
export const SYSTEM_PROMPTS: readonly string[] = [
  "你是一个知识丰富的AI，尽力为用户提供准确的信息。",
  "你是minimind，一个小巧但有用的语言模型。",
  "你是一个专业的AI助手，请提供有价值的回答。",
  "你是minimind，请尽力帮助用户解决问题。",
  "你是一个可靠的AI，请给出准确的回答。",
  "You are a helpful AI assistant.",
  "You are minimind, a lightweight intelligent assistant.",
  "You are a friendly chatbot. Please answer the user's questions carefully.",
  "You are a knowledgeable AI. Try your best to provide accurate information.",
  "You are minimind, a small but useful language model.",
];

const EMPTY_THINK = "<think>\n\n</think>\n\n";

/** A dataset: `length` samples, each computed on demand. */
export interface Dataset<T> {
  /** Number of samples. */
  readonly length: number;
  /**
   * Computes one sample.
   * @param index Sample index in [0, length).
   * @param epoch Epoch number; seeds the sample's random augmentations.
   * @returns The sample.
   */
  get(index: number, epoch?: number): T;
}

/** A language-modelling sample: ids and unshifted labels (the model shifts), both length T. */
export interface LMSample {
  /** Token ids, right-padded with the pad id. (T) */
  inputIds: Int32Array;
  /** Targets: the id, or -100 where no loss is taken. (T) */
  labels: Int32Array;
}

/** A DPO sample: inputs/targets/loss masks for the chosen and rejected answers, each T−1 long. */
export interface DPOSample {
  /** chosen ids[:-1]. (T-1) */
  xChosen: Int32Array;
  /** chosen ids[1:]. (T-1) */
  yChosen: Int32Array;
  /** 1 where y is an assistant token. (T-1) */
  maskChosen: Int32Array;
  /** rejected ids[:-1]. (T-1) */
  xRejected: Int32Array;
  /** rejected ids[1:]. (T-1) */
  yRejected: Int32Array;
  /** 1 where y is an assistant token. (T-1) */
  maskRejected: Int32Array;
}

/** An RL prompt: the rendered prompt, an empty answer, and the source record (e.g. its `form`). */
export interface RLAIFSample {
  /** Chat-template text ending with the generation prompt. */
  prompt: string;
  /** Always "" (HEAD): the policy writes the answer. */
  answer: string;
  /** The JSONL record the prompt came from. */
  record: Record<string, unknown>;
}

/** Where records come from: a JSONL path, an opened {@link JsonlFile}, or an in-memory array. */
export type RecordSource = string | JsonlFile | readonly Record<string, unknown>[];

/** Options shared by the JSONL-backed datasets. */
export interface DatasetOptions {
  /** Sequence length T. */
  maxLength?: number;
  /** Seed of the per-sample augmentations (default 42). */
  seed?: number;
  /** Count and skip malformed JSONL lines instead of failing. */
  skipBadLines?: boolean;
  /** Index cache folder for JSONL files (see {@link JsonlOptions.cacheDir}). */
  cacheDir?: string | null;
}

class Records {
  readonly length: number;
  readonly #file: JsonlFile | null;
  readonly #array: readonly Record<string, unknown>[] | null;
  readonly #name: string;
  readonly #fields: readonly string[];

  constructor(
    source: RecordSource,
    fields: string | readonly string[],
    options: DatasetOptions,
    checkName: string,
  ) {
    this.#fields = typeof fields === "string" ? [fields] : fields;
    const check = (r: unknown) => this.#problem(r);
    if (typeof source === "string") {
      const jo: JsonlOptions = {
        skipBadLines: options.skipBadLines,
        cacheDir: options.cacheDir,
        check,
        checkName,
      };
      this.#file = JsonlFile.open(source, jo);
      this.#array = null;
      this.#name = source;
    } else if (source instanceof JsonlFile) {
      this.#file = source;
      this.#array = null;
      this.#name = source.path;
    } else {
      this.#file = null;
      this.#array = source;
      this.#name = "<array>";
    }
    this.length = this.#file ? this.#file.length : this.#array!.length;
  }

  get(index: number): Record<string, unknown> {
    if (this.#file) {
      const r = this.#file.get(index);
      const problem = this.#problem(r);
      if (problem) {
        throw new Error(
          `Invalid record at ${this.#name}:${this.#file.lineNumber(index)}: ${problem}`,
        );
      }
      return r as Record<string, unknown>;
    }
    if (!(index >= 0 && index < this.length)) {
      throw new RangeError(`Cannot read record ${index}: the dataset has ${this.length}`);
    }
    return this.#array![index];
  }

  /** Why a record lacks the required fields (naming the first missing one), or null. */
  #problem(r: unknown): string | null {
    if (r === null || typeof r !== "object" || Array.isArray(r)) {
      return `expected an object with ${this.#fields.map((f) => `a "${f}"`).join(" and ")} field`;
    }
    const missing = this.#fields.find((f) => !(f in r));
    return missing === undefined
      ? null
      : `expected an object with a "${missing}" field (it has ${
        Object.keys(r).map((k) => `"${k}"`).join(", ") || "no fields"
      })`;
  }

  where(index: number): string {
    return this.#file ? `${this.#name}:${this.#file.lineNumber(index)}` : `record ${index}`;
  }
}

function requireId(id: number, what: string): number {
  if (id < 0) {
    throw new Error(`Cannot build dataset: the tokenizer config defines no ${what} token`);
  }
  return id;
}

function tokenText(tok: Tokenizer, key: "bos_token" | "eos_token"): string {
  const t = tok.config[key];
  const s = typeof t === "string" ? t : t?.content;
  if (!s) throw new Error(`Cannot build dataset: the tokenizer config has no ${key}`);
  return s;
}

/**
 * MiniMind's `pre_processing_chat`: unless a message carries `tools`, prepend one of
 * {@link SYSTEM_PROMPTS} with probability `ratio` when the first message is not a system message.
 *
 * @param conversations The messages.
 * @param rng Random source.
 * @param ratio Probability of adding a system prompt (MiniMind: 0.2).
 * @returns The same array, or a new one with a system message first.
 * @example
 * ```ts
 * import { preProcessChat } from "./datasets.ts";
 * import { Rng } from "./random.ts";
 * preProcessChat([{ role: "user", content: "hi" }], new Rng(0), 1)[0].role; // "system"
 * ```
 */
export function preProcessChat(
  conversations: ChatMessage[],
  rng: Rng,
  ratio = 0.2,
): ChatMessage[] {
  if (conversations.some((m) => m.tools)) return conversations;
  if (conversations.length > 0 && conversations[0].role !== "system" && rng.float() < ratio) {
    return [{ role: "system", content: rng.pick(SYSTEM_PROMPTS) }, ...conversations];
  }
  return conversations;
}

/**
 * MiniMind's `post_processing_chat`: with probability 1 − `keepRatio`, remove every empty think
 * block `<think>\n\n</think>\n\n` from a rendered prompt.
 *
 * @param prompt Rendered chat text.
 * @param rng Random source.
 * @param keepRatio Probability of keeping empty think blocks (HEAD 0.2, MiniMind2 0.05).
 * @returns The possibly shortened prompt.
 * @example
 * ```ts
 * import { postProcessChat } from "./datasets.ts";
 * import { Rng } from "./random.ts";
 * postProcessChat("<think>\n\n</think>\n\nhi", new Rng(0), 0); // "hi"
 * ```
 */
export function postProcessChat(prompt: string, rng: Rng, keepRatio = 0.2): string {
  if (prompt.includes(EMPTY_THINK) && rng.float() > keepRatio) {
    return prompt.replaceAll(EMPTY_THINK, "");
  }
  return prompt;
}

/**
 * MiniMind's `generate_labels` scan: every span from after `<|im_start|>assistant\n` up to and
 * including the next `<|im_end|>\n` (capped at `maxLength`) is a target; without a closing eos
 * the span runs to the end. Calls `mark(j)` for every target position.
 */
function scanAssistantSpans(
  ids: Int32Array,
  bos: number[],
  eos: number[],
  maxLength: number,
  mark: (j: number) => void,
): void {
  const n = ids.length;
  const matchAt = (i: number, seq: number[]) => {
    if (i + seq.length > n) return false;
    for (let k = 0; k < seq.length; k++) if (ids[i + k] !== seq[k]) return false;
    return true;
  };
  let i = 0;
  while (i < n) {
    if (matchAt(i, bos)) {
      const start = i + bos.length;
      let end = start;
      while (end < n && !matchAt(end, eos)) end++;
      const stop = Math.min(end + eos.length, maxLength, n);
      for (let j = start; j < stop; j++) mark(j);
      i = end < n ? end + eos.length : n;
    } else {
      i++;
    }
  }
}

function padTo(ids: number[], maxLength: number, pad: number): Int32Array {
  const out = new Int32Array(maxLength).fill(pad);
  out.set(ids.length > maxLength ? ids.slice(0, maxLength) : ids);
  return out;
}

function parseMaybeJson(v: unknown, where: string, what: string): unknown {
  if (typeof v !== "string") return v;
  try {
    return JSON.parse(v);
  } catch (e) {
    throw new Error(`Invalid ${what} JSON string in ${where}: ${(e as Error).message}`);
  }
}

function conversationOf(rec: Record<string, unknown>, field: string, where: string): ChatMessage[] {
  const conv = rec[field];
  if (!Array.isArray(conv) || conv.some((m) => m === null || typeof m !== "object")) {
    throw new Error(`Invalid record at ${where}: "${field}" must be a list of messages`);
  }
  return conv as ChatMessage[];
}

/**
 * Pretraining on `{"text": …}` records: `[bos] + tokens(text)[:T−2] + [eos]`, right-padded with
 * the pad id; labels equal the ids except −100 wherever the id is the pad id.
 *
 * @example
 * ```ts
 * import { PretrainDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = new PretrainDataset([{ text: "Hello world" }], tok, { maxLength: 8 });
 * ds.get(0).inputIds; // Int32Array [1, 1602, 1707, 2, 0, 0, 0, 0]
 * ```
 */
export class PretrainDataset implements Dataset<LMSample> {
  /** Number of records. */
  readonly length: number;
  /** Sequence length T. */
  readonly maxLength: number;
  readonly #records: Records;
  readonly #tok: Tokenizer;

  /**
   * Creates the dataset.
   * @param source JSONL path, opened file or array of `{text}` records.
   * @param tokenizer The tokenizer (needs bos, eos and pad tokens).
   * @param options `maxLength` (default 512), bad-line policy, index cache.
   */
  constructor(source: RecordSource, tokenizer: Tokenizer, options: DatasetOptions = {}) {
    this.maxLength = options.maxLength ?? 512;
    if (this.maxLength < 3) throw new Error(`Cannot use maxLength ${this.maxLength}: need ≥ 3`);
    requireId(tokenizer.bosId, "bos");
    requireId(tokenizer.eosId, "eos");
    requireId(tokenizer.padId, "pad");
    this.#records = new Records(source, "text", options, "pretrain:text");
    this.length = this.#records.length;
    this.#tok = tokenizer;
  }

  /**
   * Computes one sample.
   * @param index Sample index.
   * @returns `{inputIds, labels}`, each of length T.
   */
  get(index: number): LMSample {
    const text = String(this.#records.get(index).text);
    const tok = this.#tok;
    const ids = tok.encode(text, { addSpecialTokens: false });
    if (ids.length > this.maxLength - 2) ids.length = this.maxLength - 2;
    const inputIds = padTo([tok.bosId, ...ids, tok.eosId], this.maxLength, tok.padId);
    const labels = inputIds.map((id) => id === tok.padId ? IGNORE_INDEX : id);
    return { inputIds, labels };
  }
}

/** Options of {@link SFTDataset}. */
export interface SFTOptions extends DatasetOptions {
  /** Probability of prepending a random system prompt (default 0.2). */
  addSystemRatio?: number;
  /** Probability of keeping empty think blocks (default 0.2 = minimind-3; MiniMind2 used 0.05). */
  emptyThinkRatio?: number;
}

/**
 * Supervised fine-tuning on `{"conversations": [...]}` records (messages may carry
 * `reasoning_content`, and `tools` / `tool_calls` as JSON strings). The conversation is rendered
 * with the chat template; labels are the assistant spans (`<|im_start|>assistant\n` … `<|im_end|>\n`
 * exclusive of the header, inclusive of the end), −100 elsewhere.
 *
 * @example
 * ```ts
 * import { SFTDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = new SFTDataset([{ conversations: [
 *   { role: "user", content: "你好" }, { role: "assistant", content: "你好！" },
 * ] }], tok, { maxLength: 32 });
 * ds.get(0).labels; // −100 everywhere except the assistant's tokens
 * ```
 */
export class SFTDataset implements Dataset<LMSample> {
  /** Number of records. */
  readonly length: number;
  /** Sequence length T. */
  readonly maxLength: number;
  /** Token ids of `<|im_start|>assistant\n`. */
  readonly assistantStart: number[];
  /** Token ids of `<|im_end|>\n`. */
  readonly assistantEnd: number[];
  readonly #records: Records;
  readonly #tok: Tokenizer;
  readonly #seed: number;
  readonly #systemRatio: number;
  readonly #thinkRatio: number;

  /**
   * Creates the dataset.
   * @param source JSONL path, opened file or array of `{conversations}` records.
   * @param tokenizer The tokenizer (needs a chat template, bos/eos/pad tokens).
   * @param options `maxLength` (default 1024), seed, augmentation ratios, bad-line policy.
   */
  constructor(source: RecordSource, tokenizer: Tokenizer, options: SFTOptions = {}) {
    this.maxLength = options.maxLength ?? 1024;
    this.#seed = options.seed ?? 42;
    this.#systemRatio = options.addSystemRatio ?? 0.2;
    this.#thinkRatio = options.emptyThinkRatio ?? 0.2;
    requireId(tokenizer.padId, "pad");
    this.assistantStart = tokenizer.encode(`${tokenText(tokenizer, "bos_token")}assistant\n`, {
      addSpecialTokens: false,
    });
    this.assistantEnd = tokenizer.encode(`${tokenText(tokenizer, "eos_token")}\n`, {
      addSpecialTokens: false,
    });
    this.#records = new Records(source, "conversations", options, "sft:conversations");
    this.length = this.#records.length;
    this.#tok = tokenizer;
  }

  /**
   * The rendered (and post-processed) chat text of a sample, before tokenization.
   * @param index Sample index.
   * @param epoch Epoch (seeds the augmentations).
   * @returns The prompt text.
   */
  prompt(index: number, epoch = 0): string {
    const rec = this.#records.get(index);
    const where = this.#records.where(index);
    const rng = new Rng(mixSeed(this.#seed, epoch, index));
    const conv = preProcessChat(
      conversationOf(rec, "conversations", where),
      rng,
      this.#systemRatio,
    );
    let tools: unknown = undefined;
    const messages = conv.map((m) => {
      const msg: ChatMessage = { ...m };
      if (msg.role === "system" && msg.tools) tools = parseMaybeJson(msg.tools, where, "tools");
      if (msg.tool_calls) msg.tool_calls = parseMaybeJson(msg.tool_calls, where, "tool_calls");
      return msg;
    });
    const text = this.#tok.applyChatTemplate(messages, {
      addGenerationPrompt: false,
      tools: tools as unknown[] | undefined,
    });
    return postProcessChat(text, rng, this.#thinkRatio);
  }

  /**
   * Computes one sample.
   * @param index Sample index.
   * @param epoch Epoch (seeds the augmentations).
   * @returns `{inputIds, labels}`, each of length T.
   */
  get(index: number, epoch = 0): LMSample {
    const ids = this.#tok.encode(this.prompt(index, epoch));
    const inputIds = padTo(ids, this.maxLength, this.#tok.padId);
    const labels = new Int32Array(this.maxLength).fill(IGNORE_INDEX);
    scanAssistantSpans(
      inputIds,
      this.assistantStart,
      this.assistantEnd,
      this.maxLength,
      (j) => labels[j] = inputIds[j],
    );
    return { inputIds, labels };
  }
}

/** Options of {@link DPODataset}. */
export interface DPOOptions extends DatasetOptions {
  /** Probability of keeping empty think blocks (default 0.2). */
  emptyThinkRatio?: number;
}

/**
 * DPO on `{"chosen": [...], "rejected": [...]}` records: each side is rendered, post-processed
 * independently, truncated/padded to T, and turned into x = ids[:−1], y = ids[1:],
 * mask = assistant-span mask[1:].
 *
 * @example
 * ```ts
 * import { DPODataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const u = { role: "user", content: "1+1?" };
 * const ds = new DPODataset([{
 *   chosen: [u, { role: "assistant", content: "2" }],
 *   rejected: [u, { role: "assistant", content: "3" }],
 * }], tok, { maxLength: 32 });
 * ds.get(0).xChosen.length; // 31
 * ```
 */
export class DPODataset implements Dataset<DPOSample> {
  /** Number of records. */
  readonly length: number;
  /** Sequence length T (samples are T−1 long). */
  readonly maxLength: number;
  readonly #records: Records;
  readonly #tok: Tokenizer;
  readonly #seed: number;
  readonly #thinkRatio: number;
  readonly #start: number[];
  readonly #end: number[];

  /**
   * Creates the dataset.
   * @param source JSONL path, opened file or array of `{chosen, rejected}` records.
   * @param tokenizer The tokenizer.
   * @param options `maxLength` (default 4096), seed, empty-think ratio, bad-line policy.
   */
  constructor(source: RecordSource, tokenizer: Tokenizer, options: DPOOptions = {}) {
    this.maxLength = options.maxLength ?? 4096;
    this.#seed = options.seed ?? 42;
    this.#thinkRatio = options.emptyThinkRatio ?? 0.2;
    requireId(tokenizer.padId, "pad");
    this.#start = tokenizer.encode(`${tokenText(tokenizer, "bos_token")}assistant\n`, {
      addSpecialTokens: false,
    });
    this.#end = tokenizer.encode(`${tokenText(tokenizer, "eos_token")}\n`, {
      addSpecialTokens: false,
    });
    this.#records = new Records(source, ["chosen", "rejected"], options, "dpo:chosen+rejected");
    this.length = this.#records.length;
    this.#tok = tokenizer;
  }

  #side(messages: ChatMessage[], rng: Rng): [Int32Array, Int32Array, Int32Array] {
    const text = postProcessChat(
      this.#tok.applyChatTemplate(messages, { addGenerationPrompt: false }),
      rng,
      this.#thinkRatio,
    );
    const T = this.maxLength;
    const ids = padTo(this.#tok.encode(text), T, this.#tok.padId);
    const mask = new Int32Array(T);
    scanAssistantSpans(ids, this.#start, this.#end, T, (j) => mask[j] = 1);
    return [ids.slice(0, T - 1), ids.slice(1), mask.slice(1)];
  }

  /**
   * Computes one sample.
   * @param index Sample index.
   * @param epoch Epoch (seeds the empty-think removal).
   * @returns The six arrays, each of length T−1.
   */
  get(index: number, epoch = 0): DPOSample {
    const rec = this.#records.get(index);
    const where = this.#records.where(index);
    const rng = new Rng(mixSeed(this.#seed, epoch, index));
    const [xChosen, yChosen, maskChosen] = this.#side(conversationOf(rec, "chosen", where), rng);
    const [xRejected, yRejected, maskRejected] = this.#side(
      conversationOf(rec, "rejected", where),
      rng,
    );
    return { xChosen, yChosen, maskChosen, xRejected, yRejected, maskRejected };
  }
}

/** Options of {@link RLAIFDataset}. */
export interface RLAIFOptions extends DatasetOptions {
  /** Probability of `open_thinking` (constructor default 0.5; PPO/GRPO pass 0.9). */
  thinkingRatio?: number;
  /** Probability of prepending a random system prompt (default 0.2). */
  addSystemRatio?: number;
}

/**
 * RL prompts from `{"conversations": [...]}` records whose last message is an assistant
 * placeholder: prompt = template(conversation[:−1], generation prompt, open_thinking with
 * probability `thinkingRatio`), answer = "".
 *
 * @example
 * ```ts
 * import { RLAIFDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = new RLAIFDataset([{ conversations: [
 *   { role: "user", content: "写一首五言绝句" }, { role: "assistant", content: "无" },
 * ] }], tok, { thinkingRatio: 0, addSystemRatio: 0 });
 * ds.get(0).prompt; // "<|im_start|>user\n写一首五言绝句<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
 * ```
 */
export class RLAIFDataset implements Dataset<RLAIFSample> {
  /** Number of records. */
  readonly length: number;
  readonly #records: Records;
  readonly #tok: Tokenizer;
  readonly #seed: number;
  readonly #thinkingRatio: number;
  readonly #systemRatio: number;

  /**
   * Creates the dataset.
   * @param source JSONL path, opened file or array of `{conversations}` records.
   * @param tokenizer The tokenizer (for its chat template).
   * @param options Thinking and system-prompt ratios, seed, bad-line policy.
   */
  constructor(source: RecordSource, tokenizer: Tokenizer, options: RLAIFOptions = {}) {
    this.#seed = options.seed ?? 42;
    this.#thinkingRatio = options.thinkingRatio ?? 0.5;
    this.#systemRatio = options.addSystemRatio ?? 0.2;
    this.#records = new Records(source, "conversations", options, "rlaif:conversations");
    this.length = this.#records.length;
    this.#tok = tokenizer;
  }

  /**
   * Computes one sample.
   * @param index Sample index.
   * @param epoch Epoch (seeds the system prompt and open_thinking draws).
   * @returns `{prompt, answer: "", record}`.
   */
  get(index: number, epoch = 0): RLAIFSample {
    const rec = this.#records.get(index);
    const rng = new Rng(mixSeed(this.#seed, epoch, index));
    const conv = preProcessChat(
      conversationOf(rec, "conversations", this.#records.where(index)),
      rng,
      this.#systemRatio,
    );
    const openThinking = rng.float() < this.#thinkingRatio;
    const prompt = this.#tok.applyChatTemplate(conv.slice(0, -1), {
      addGenerationPrompt: true,
      openThinking,
    });
    return { prompt, answer: "", record: rec };
  }
}

/** Options of {@link PlainTextDataset}. */
export interface PlainTextOptions {
  /** Sequence length T (default 512). */
  maxLength?: number;
  /**
   * `"line"` (default): one sample per non-empty line, `[bos] + tokens[:T−2] + [eos]`, padded
   * like {@link PretrainDataset}. `"packed"`: all lines as `bos … eos` concatenated into one
   * stream cut into consecutive windows of T tokens (no padding; a final partial window is
   * dropped unless it is the only one).
   */
  mode?: "line" | "packed";
}

/**
 * Plain text (the study path's text dataset): a `.txt` file or string, one document per line.
 *
 * @example
 * ```ts
 * import { PlainTextDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = PlainTextDataset.fromText("床前明月光\n疑是地上霜\n", tok, { maxLength: 8, mode: "packed" });
 * ds.get(0).inputIds.length; // 8
 * ```
 */
export class PlainTextDataset implements Dataset<LMSample> {
  /** Number of samples. */
  readonly length: number;
  /** Sequence length T. */
  readonly maxLength: number;
  /** `line` or `packed`. */
  readonly mode: "line" | "packed";
  readonly #lines: string[];
  readonly #tok: Tokenizer;
  readonly #stream: Int32Array | null;

  /**
   * Creates the dataset.
   * @param lines The documents (empty lines are ignored).
   * @param tokenizer The tokenizer (needs bos, eos, pad).
   * @param options `maxLength`, `mode`.
   */
  constructor(lines: readonly string[], tokenizer: Tokenizer, options: PlainTextOptions = {}) {
    this.maxLength = options.maxLength ?? 512;
    this.mode = options.mode ?? "line";
    if (this.maxLength < 3) throw new Error(`Cannot use maxLength ${this.maxLength}: need ≥ 3`);
    requireId(tokenizer.bosId, "bos");
    requireId(tokenizer.eosId, "eos");
    requireId(tokenizer.padId, "pad");
    this.#lines = lines.filter((l) => l.trim().length > 0);
    this.#tok = tokenizer;
    if (this.mode === "packed") {
      const all: number[] = [];
      for (const l of this.#lines) {
        all.push(tokenizer.bosId);
        for (const id of tokenizer.encode(l, { addSpecialTokens: false })) all.push(id);
        all.push(tokenizer.eosId);
      }
      this.#stream = Int32Array.from(all);
      const full = Math.floor(all.length / this.maxLength);
      this.length = full > 0 ? full : all.length > 0 ? 1 : 0;
    } else {
      this.#stream = null;
      this.length = this.#lines.length;
    }
  }

  /**
   * Reads a UTF-8 text file.
   * @param path File path.
   * @param tokenizer The tokenizer.
   * @param options `maxLength`, `mode`.
   * @returns The dataset.
   */
  static async fromFile(
    path: string,
    tokenizer: Tokenizer,
    options: PlainTextOptions = {},
  ): Promise<PlainTextDataset> {
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      throw new Error(`Cannot read text file ${path}: ${(e as Error).message}`);
    }
    return PlainTextDataset.fromText(text, tokenizer, options);
  }

  /**
   * Builds the dataset from text in memory.
   * @param text Text with one document per line.
   * @param tokenizer The tokenizer.
   * @param options `maxLength`, `mode`.
   * @returns The dataset.
   */
  static fromText(
    text: string,
    tokenizer: Tokenizer,
    options: PlainTextOptions = {},
  ): PlainTextDataset {
    return new PlainTextDataset(text.split(/\r?\n/), tokenizer, options);
  }

  /**
   * Computes one sample.
   * @param index Sample index.
   * @returns `{inputIds, labels}` of length T.
   */
  get(index: number): LMSample {
    if (!(index >= 0 && index < this.length)) {
      throw new RangeError(`Cannot read sample ${index}: the dataset has ${this.length}`);
    }
    const T = this.maxLength, tok = this.#tok;
    if (this.#stream) {
      const window = this.#stream.subarray(index * T, (index + 1) * T);
      const inputIds = new Int32Array(T).fill(tok.padId);
      inputIds.set(window);
      const labels = new Int32Array(T).fill(IGNORE_INDEX);
      labels.set(window);
      return { inputIds, labels };
    }
    const ids = tok.encode(this.#lines[index], { addSpecialTokens: false });
    if (ids.length > T - 2) ids.length = T - 2;
    const inputIds = padTo([tok.bosId, ...ids, tok.eosId], T, tok.padId);
    const labels = inputIds.map((id) => id === tok.padId ? IGNORE_INDEX : id);
    return { inputIds, labels };
  }
}
