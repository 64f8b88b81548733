/**
 * Shared fixture of the serving tests: a real, randomly initialised tiny MiniMind (H 64, 2 layers,
 * the real 6400-token vocab) with minimind-3's real tokenizer and chat template.
 * @module
 */
import { init } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { createApp, type CreateAppOptions, type Engine, type ServeApp } from "../serve/mod.ts";
import { tensor } from "../nn/creation.ts";
import { fixture } from "./_util.ts";

/** The tiny model's config. */
export const TINY_CFG: MiniMindConfig = config("minimind2-small", {
  hiddenSize: 64,
  numHiddenLayers: 2,
});

let params: MiniMindParams | null = null;
let tok: Tokenizer | null = null;

/** The tiny model (created once per test process). */
export function tinyModel(): { cfg: MiniMindConfig; params: MiniMindParams } {
  params ??= init(TINY_CFG, key(7));
  return { cfg: TINY_CFG, params };
}

/** minimind-3's tokenizer (loaded once). */
export async function tokenizer(): Promise<Tokenizer> {
  tok ??= await Tokenizer.fromFile(fixture("minimind/minimind-3"));
  return tok;
}

/** An app over the tiny model. */
export async function tinyApp(options: Partial<CreateAppOptions> = {}): Promise<ServeApp> {
  return createApp({ model: tinyModel(), tokenizer: await tokenizer(), ...options });
}

/** POST JSON to an app. */
export function postJson(
  app: ServeApp,
  path: string,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  }));
}

/** Parses an SSE body into its `data:` payloads. */
export function sseData(text: string): string[] {
  return text.split("\n\n").map((e) =>
    e.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n")
  ).filter((d) => d.length > 0);
}

/**
 * A scripted engine for testing the tool flow without a trained model: for each prompt it decodes
 * the prompt text, asks `reply` what the model "says", and emits those tokens and then eos as
 * near-one-hot logits (every sampler picks them).
 *
 * @param tok the tokenizer (to read prompts and encode replies)
 * @param reply prompt text → reply text
 * @returns the engine
 */
export function scriptedEngine(tok: Tokenizer, reply: (prompt: string) => string): Engine {
  const V = 6400;
  type Row = { length: number; script: number[]; at: number };
  const logits = (rows: Row[]) => {
    const data = new Float32Array(rows.length * V);
    rows.forEach((r, i) => data[i * V + (r.script[r.at] ?? tok.eosId)] = 40);
    return tensor(data, [rows.length, V]);
  };
  return {
    vocabSize: V,
    maxPositions: 4096,
    prefill(ids) {
      const text = tok.decode([...ids], { skipSpecialTokens: false });
      const script = [...tok.encode(reply(text), { addSpecialTokens: false }), tok.eosId];
      const row: Row = { length: ids.length, script, at: 0 };
      return { row, logits: logits([row]) };
    },
    decode(rows, _tokens) {
      const rs = rows as Row[];
      for (const r of rs) {
        r.at++;
        r.length++;
      }
      return logits(rs);
    },
    release() {},
  };
}

/**
 * An engine with the same logits at every step: `prefs[i]` (a token's text) gets 100 − i, the
 * end-of-sequence token `eos`, every other token 0. Greedy decoding then picks the most preferred
 * token a constraint allows, so a constrained reply's path is known.
 *
 * @param tok the tokenizer (to find the tokens)
 * @param prefs token texts, most preferred first
 * @param eos the logit of the end-of-sequence token
 * @returns the engine
 */
export function rankedEngine(tok: Tokenizer, prefs: readonly string[], eos: number): Engine {
  const V = 6400;
  const row = new Float32Array(V);
  prefs.forEach((t, i) => {
    const ids = tok.encode(t, { addSpecialTokens: false });
    if (ids.length !== 1) {
      throw new Error(`rankedEngine: ${JSON.stringify(t)} is ${ids.length} tokens`);
    }
    row[ids[0]] = 100 - i;
  });
  row[tok.eosId] = eos;
  const logits = (n: number) => {
    const data = new Float32Array(n * V);
    for (let i = 0; i < n; i++) data.set(row, i * V);
    return tensor(data, [n, V]);
  };
  return {
    vocabSize: V,
    maxPositions: 4096,
    prefill(ids) {
      return { row: { length: ids.length }, logits: logits(1) };
    },
    decode(rows) {
      return logits(rows.length);
    },
    release() {},
  };
}
