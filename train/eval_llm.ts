/**
 * `deno task eval` — MiniMind's eval_llm.py: load weights (ours from `out/`, a `.safetensors`
 * file or an HF folder), then either run the fixed test prompts or chat interactively, streaming
 * the reply and printing tokens/s.
 *
 *   deno task eval                                   # out/full_sft_512.safetensors, auto-test
 *   deno task eval --weight pretrain --hidden_size 256
 *   deno task eval --load_from out/full_sft_512.safetensors --mode chat --historys 2
 * @module
 */
import { join } from "node:path";
import { loadModel } from "../convert/hf.ts";
import * as lora from "../convert/lora.ts";
import { YARN_DEFAULTS } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { generate } from "../nn/model/generate.ts";
import type { ChatMessage } from "../data/chat_template.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { deviceFlag, parseFlags, runMain, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { applyDtype, decodeDtypeFlag, DEFAULT_TOKENIZER, selectDevice } from "./lm.ts";
import { weightStem } from "./checkpoint.ts";

/** eval_llm.py's flags (plus `--mode`, `--top_k`, `--seed`, `--tokenizer_path`). */
export const EVAL_FLAGS = {
  load_from: {
    type: "string",
    default: "model",
    help: "'model' = <save_dir>/<weight>_<hidden>.safetensors; else a file or HF folder",
  },
  save_dir: { type: "string", default: "out", help: "where our weights are" },
  weight: { type: "string", default: "full_sft", help: "weight prefix (pretrain, full_sft, …)" },
  lora_weight: {
    type: "string",
    default: "None",
    help: "adapters applied unmerged: a file, or <save_dir>/lora/<name>_<hidden>.safetensors",
  },
  hidden_size: { type: "int", default: 512, min: 8, help: "selects the weight file" },
  num_hidden_layers: { type: "int", default: 8, min: 1, help: "accepted (the file has it)" },
  use_moe: { type: "bool01", default: false, help: "selects the _moe weight file" },
  inference_rope_scaling: { type: "switch", default: false, help: "YaRN 16x context" },
  max_new_tokens: { type: "int", default: 8192, min: 1, help: "most tokens per reply" },
  temperature: { type: "float", default: 0.85, min: 0, help: "sampling temperature" },
  top_p: { type: "float", default: 0.95, min: 0, help: "nucleus mass" },
  top_k: { type: "int", default: 50, min: 0, help: "top-k (0 = off)" },
  repetition_penalty: { type: "float", default: 1, min: 0, help: "penalty on seen tokens" },
  open_thinking: { type: "bool01", default: false, help: "let the model think first" },
  historys: { type: "int", default: 0, min: 0, help: "past messages kept (even)" },
  show_speed: { type: "bool01", default: true, help: "print tokens/s" },
  device: deviceFlag(),
  dtype: decodeDtypeFlag(),
  mode: {
    type: "choice",
    default: "ask",
    choices: ["ask", "auto", "chat"],
    help: "auto-test prompts, interactive chat, or ask (auto when stdin is not a terminal)",
  },
  tokenizer_path: { type: "optional", help: "tokenizer (default: beside the weights)" },
  seed: { type: "int", default: 0, help: "sampling seed" },
} satisfies FlagTable;

/** The auto-test prompts: the corpus's poetry tasks, then general ones as eval_llm.py has. */
export const TEST_PROMPTS: readonly string[] = [
  "写一首五言绝句，题为《春晓》。",
  "请以《秋夜》为题，写一首七言绝句。",
  "作一首五言律诗，题目是《登高》。",
  "「床前明月光」的下一句是什么？",
  "《静夜思》的作者是谁？",
  "下面这首诗是什么体裁？\n白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。",
  "你有什么特长？",
  "解释一下什么是机器学习",
];

const COMMAND = "deno task eval";

/** Something bytes can be written to (`Deno.stdout`), possibly fewer than given per call. */
export interface ByteWriter {
  /** Writes some of `p`; resolves to how many bytes it took. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * Writes all of `text`: a single `write` may take only part of the bytes (a terminal often does),
 * and what it leaves must not be lost.
 *
 * @param w the writer
 * @param text the text
 * @returns when every byte is written
 */
export async function writeAll(w: ByteWriter, text: string): Promise<void> {
  let bytes = new TextEncoder().encode(text);
  while (bytes.length > 0) bytes = bytes.subarray(await w.write(bytes));
}

/**
 * Reads lines from a byte stream, keeping what one read brought beyond the line for the next
 * call (piped input arrives many lines per read).
 */
export class LineReader {
  readonly #src: { read(p: Uint8Array): Promise<number | null> };
  readonly #dec = new TextDecoder();
  readonly #buf = new Uint8Array(4096);
  #pending = "";
  #ended = false;

  /** @param src where bytes come from (`Deno.stdin`) */
  constructor(src: { read(p: Uint8Array): Promise<number | null> }) {
    this.#src = src;
  }

  /** The next line without its line ending, or null at the end of the input. */
  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#pending.indexOf("\n");
      if (nl >= 0) {
        const line = this.#pending.slice(0, nl).replace(/\r$/, "");
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      if (this.#ended) {
        const rest = this.#pending;
        this.#pending = "";
        return rest.length ? rest : null;
      }
      const n = await this.#src.read(this.#buf);
      if (n === null) {
        this.#ended = true;
        this.#pending += this.#dec.decode();
      } else this.#pending += this.#dec.decode(this.#buf.subarray(0, n), { stream: true });
    }
  }
}

/** The flags that pick a weight file. */
export interface WeightFlags {
  /** 'model' = `<save_dir>/<weight>_<hidden>[_moe].safetensors`; else a file or HF folder. */
  load_from: string;
  /** Where our weights are. */
  save_dir: string;
  /** Weight prefix. */
  weight: string;
  /** Hidden size in the file name. */
  hidden_size: number;
  /** `_moe` in the file name. */
  use_moe: boolean;
  /** Tokenizer path (default: beside the weights, else `out/tokenizer`). */
  tokenizer_path?: string;
}

/**
 * Loads the weights the flags name, with their tokenizer.
 *
 * @param a the weight flags
 * @returns the path and the model (config, params, tokenizer)
 * @throws UsageError naming the missing file and the task that trains it
 */
export async function loadWeightsFor(
  a: WeightFlags,
): Promise<
  { path: string; model: { cfg: MiniMindConfig; params: MiniMindParams; tokenizer: Tokenizer } }
> {
  const path = a.load_from === "model"
    ? join(a.save_dir, `${weightStem(a.weight, a.hidden_size, a.use_moe)}.safetensors`)
    : a.load_from;
  if (!(await Deno.stat(path).catch(() => null))) {
    throw new UsageError(
      `Cannot load ${path}: no such file (train it with deno task ${
        a.weight === "pretrain" ? "pretrain" : "sft"
      }, or pass --load_from / --weight / --hidden_size)`,
    );
  }
  const loaded = await loadModel(path);
  const tokenizer = a.tokenizer_path
    ? await Tokenizer.fromFile(a.tokenizer_path)
    : loaded.tokenizer ?? await Tokenizer.fromFile(DEFAULT_TOKENIZER);
  return { path, model: { cfg: loaded.cfg, params: loaded.params, tokenizer } };
}

/**
 * Runs the eval command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, EVAL_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Chat with or auto-test a model (eval_llm.py).", EVAL_FLAGS));
    return 0;
  }
  const device = await selectDevice(a.device);
  const { path, model: loaded } = await loadWeightsFor(a);
  let cfg: MiniMindConfig = loaded.cfg;
  if (a.inference_rope_scaling) {
    cfg = { ...cfg, inferenceRopeScaling: true, ropeScaling: YARN_DEFAULTS };
  }
  let params = loaded.params;
  if (a.lora_weight !== "None") {
    const lp = lora.resolvePath(a.lora_weight, a.save_dir, cfg);
    params = await lora.applyFile(params, lp);
    console.log(`LoRA: ${lp} (${lora.count(lora.split(params)[0])} adapter params, unmerged)`);
  }
  const { tokenizer } = loaded;
  const model = { cfg, params, tokenizer };
  console.log(
    `Loaded ${path} on ${device} (hidden ${cfg.hiddenSize}, ${cfg.numHiddenLayers} layers); ${
      applyDtype(a.dtype, device)
    }`,
  );
  const raw = /pretrain/.test(a.weight) && a.load_from === "model" ||
    /pretrain/.test(path.split("/").pop() ?? "");

  const stdin = new LineReader(Deno.stdin);
  const readLine = async (prompt: string) => {
    await writeAll(Deno.stdout, prompt);
    return await stdin.next();
  };
  let mode = a.mode;
  if (mode === "ask") {
    if (!Deno.stdin.isTerminal()) mode = "auto";
    else {
      const ans = await readLine("[0] auto-test  [1] chat: ");
      mode = ans?.trim() === "1" ? "chat" : "auto";
    }
  }
  const history: ChatMessage[] = [];
  const answer = async (prompt: string, seed: number) => {
    const past = a.historys > 0 ? history.slice(-a.historys) : [];
    const messages: ChatMessage[] = [...past, { role: "user", content: prompt }];
    const text = raw
      ? `${tokenizer.config.bos_token ?? "<|im_start|>"}${prompt}`
      : tokenizer.applyChatTemplate(messages, {
        addGenerationPrompt: true,
        openThinking: a.open_thinking,
      });
    const t0 = performance.now();
    let n = 0, reply = "";
    await writeAll(Deno.stdout, "🤖: ");
    for await (
      const piece of generate(model, [text], {
        maxNewTokens: a.max_new_tokens,
        temperature: a.temperature,
        topP: a.top_p,
        topK: a.top_k,
        repetitionPenalty: a.repetition_penalty,
        seed,
      })
    ) {
      n++;
      reply += piece.text;
      if (piece.text) await writeAll(Deno.stdout, piece.text);
    }
    const s = (performance.now() - t0) / 1000;
    console.log(a.show_speed ? `\n[Speed]: ${(n / s).toFixed(2)} tokens/s\n` : "\n");
    history.push({ role: "user", content: prompt }, { role: "assistant", content: reply });
  };
  if (mode === "auto") {
    for (const [i, p] of TEST_PROMPTS.entries()) {
      console.log(`💬: ${p}`);
      await answer(p, a.seed + i);
    }
    return 0;
  }
  for (let i = 0;; i++) {
    const line = await readLine("💬: ");
    if (line === null) return 0;
    if (!line.trim()) continue;
    await answer(line, a.seed + i);
  }
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
