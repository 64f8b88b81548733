/**
 * Text generation with the KV cache, in MiniMind's `generate()` order (HEAD §1.11): prefill the
 * prompt, then per step feed only the new token, take the last position's logits, filter and
 * sample them with the `sample` op (temperature, repetition penalty, top-k, top-p, a host-drawn
 * uniform per row), force eos on finished rows, stop when every row is done. Batched prompts are
 * left-padded with a key mask (positions are absolute, as in MiniMind). On WebGPU tokens stay on
 * the device between steps and are read back in chunks.
 *
 * `decodeStep` is the reusable per-step function (the server's continuous batching calls it with
 * per-row positions).
 * @module
 */
// B = rows, T = new tokens this step, S = cache + new, V = vocab
import type { TypedArray } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { full, tensor } from "../creation.ts";
import { keep, scope } from "../scope.ts";
import { foldIn, key as makeKey, uniformArray } from "../random.ts";
import type { Key } from "../random.ts";
import { concat, reshape } from "../ops/movement.ts";
import { scatterAdd, takeAlongAxis } from "../ops/gather.ts";
import { logsumexp } from "../ops/softmax.ts";
import { add, sub } from "../ops/binary.ts";
import { sample } from "../ops/sample.ts";
import { forward } from "./minimind.ts";
import { disposeCache } from "./layers/kv_cache.ts";
import type { MiniMindParams } from "./minimind.ts";
import type { KvCache } from "./layers/kv_cache.ts";
import type { MiniMindConfig } from "./minimind_config.ts";

/** What generation needs of a tokenizer (the `data/` Tokenizer fits). */
export interface GenerateTokenizer {
  /** Text → ids (no special tokens added). */
  encode(text: string): number[];
  /** An incremental decoder that holds back incomplete UTF-8. */
  decodeStream(options?: { skipSpecialTokens?: boolean }): {
    push(id: number): string;
    flush(): string;
  };
  /** End-of-sequence id (-1 if none). */
  readonly eosId: number;
  /** Padding id (-1 if none). */
  readonly padId: number;
}

/** A model to generate with: config, params and (for text prompts) its tokenizer. */
export interface GenerateModel {
  /** Model config. */
  readonly cfg: MiniMindConfig;
  /** Parameters. */
  readonly params: MiniMindParams;
  /** Tokenizer (needed for string prompts and text output). */
  readonly tokenizer?: GenerateTokenizer;
}

/** Options of {@link generate}. */
export interface GenerateOptions {
  /** Most tokens to generate per row (default 512). */
  maxNewTokens?: number;
  /** Temperature (default 0.85, MiniMind's). */
  temperature?: number;
  /** Nucleus mass (default 0.85; 1 = off). */
  topP?: number;
  /** Top-k (default 50; 0 = off). */
  topK?: number;
  /** Repetition penalty on tokens already in the row, prompt included (default 1 = off). */
  repetitionPenalty?: number;
  /** Min-p: after top-p, drop tokens below `minP` × the best one's probability (default 0 = off). */
  minP?: number;
  /** Argmax decoding (default false). */
  greedy?: boolean;
  /** Seed of the sampling uniforms (default 0); row r, step s uses foldIn(foldIn(key(seed), r), s). */
  seed?: number;
  /** Stop token(s) (default: the tokenizer's eos, else the config's eos id). */
  eos?: number | readonly number[];
  /** Drop special tokens from the text (default true). */
  skipSpecialTokens?: boolean;
  /** Stops generation when aborted (e.g. a client disconnect). */
  signal?: AbortSignal;
  /** Tokens sampled between readbacks (default 1 on CPU, 8 on WebGPU). */
  chunk?: number;
  /**
   * Also report each sampled token's log-prob under the model's raw distribution (log-softmax
   * of the logits before temperature and filtering, as MiniMind's `compute_per_token_logps`),
   * read back with the tokens (default false).
   */
  logprobs?: boolean;
  /** OpenAI's presence penalty: subtracted once from the logit of each token generated so far. */
  presencePenalty?: number;
  /** OpenAI's frequency penalty: subtracted from a token's logit per time it was generated. */
  frequencyPenalty?: number;
  /** OpenAI's `logit_bias`: id → value added to its logit at every step. */
  logitBias?: ReadonlyMap<number, number>;
  /**
   * Per prompt, a constraint on its reply (a JSON object or schema, tool calls: `ReplyConstraint`
   * of `data/constrain.ts`) or null: tokens it forbids are masked, and the row ends once it is
   * done.
   */
  constraints?: readonly (TokenConstraint | null)[];
}

/**
 * What a row's reply must follow, token by token (`ReplyConstraint` of `data/constrain.ts` is
 * one): the tokens that may come next, and the reply so far.
 */
export interface TokenConstraint {
  /** The (V) logit addend of the next step: 0 where a token may come, −∞ elsewhere. */
  mask(): { addend: Float32Array; allowed: number };
  /** Advances past a sampled token. */
  accept(id: number): void;
  /** Whether the reply is complete (the row ends). */
  readonly done: boolean;
}

/** What one row adds to its logits before sampling ({@linkcode logitAddend}). */
export interface LogitAdjustment {
  /** id → value added to its logit. */
  logitBias?: ReadonlyMap<number, number>;
  /** How often each id was generated so far (for the penalties). */
  counts?: ReadonlyMap<number, number>;
  /** Subtracted once from each generated id's logit. */
  presencePenalty?: number;
  /** Subtracted per time an id was generated. */
  frequencyPenalty?: number;
  /** A (V) mask of 0 and −∞ ({@linkcode TokenConstraint.mask}). */
  allowed?: Float32Array;
}

/**
 * Rows' logit addends as one (B, V) array: the mask, then `logitBias`, then
 * −(count·frequency + presence) at each generated id — OpenAI's formulas, before temperature
 * and the filters (vLLM's order). Shared by `generate` and the server's sampler.
 *
 * @param rows one adjustment per row
 * @param V vocab size
 * @returns the addend (B, V)
 */
export function logitAddend(rows: readonly LogitAdjustment[], V: number): Float32Array {
  const out = new Float32Array(rows.length * V);
  rows.forEach((r, b) => {
    if (r.allowed) {
      if (r.allowed.length !== V) {
        throw new Error(`A token mask of ${r.allowed.length} entries for a vocab of ${V}`);
      }
      out.set(r.allowed, b * V);
    }
    for (const [id, v] of r.logitBias ?? []) if (id >= 0 && id < V) out[b * V + id] += v;
    const pp = r.presencePenalty ?? 0, fp = r.frequencyPenalty ?? 0;
    if (pp === 0 && fp === 0) return;
    for (const [id, c] of r.counts ?? []) {
      if (id >= 0 && id < V && c > 0) out[b * V + id] -= c * fp + pp;
    }
  });
  return out;
}

/** A piece of a batched generation. */
export interface GenerationPiece {
  /** Which prompt. */
  index: number;
  /** The new text (may be "" while a multi-byte character is incomplete). */
  text: string;
  /** The token id that produced it (-1 for the final flush). */
  token: number;
  /** With `logprobs`: log π(token) (absent for the final flush). */
  logprob?: number;
}

/** The state of a decode: cache and how many positions each row has. */
export interface DecodeState {
  /** KV cache (owned by the state; `decodeStep` disposes the old one). */
  cache: KvCache | null;
}

/** Options of {@link decodeStep}. */
export interface DecodeStepOptions {
  /** Per-row RoPE positions i32 (B, T) (default: cache length + t). */
  positions?: Tensor;
  /** 1/0 mask of real tokens, (B, T) or (B, S). */
  attentionMask?: Tensor;
}

/**
 * Feeds `ids` (B, T) after the cached tokens and returns the last position's logits (B, V). The
 * old cache is disposed and replaced in `state`.
 *
 * @param model config and params
 * @param state the cache (updated in place)
 * @param ids i32 token ids (B, T)
 * @param options positions, attention mask
 * @returns logits of the last position (B, V)
 */
export function decodeStep(
  model: GenerateModel,
  state: DecodeState,
  ids: Tensor,
  options: DecodeStepOptions = {},
): Tensor {
  const old = state.cache;
  const r = scope(() => {
    const { logits, cache } = forward(model.cfg, model.params, ids, {
      cache: old,
      useCache: true,
      logitsToKeep: 1,
      positions: options.positions,
      attentionMask: options.attentionMask,
    });
    return { logits: reshape(logits, [ids.shape[0], model.cfg.vocabSize]), cache }; // (B, V)
  });
  disposeCache(old);
  state.cache = keep(r.cache); // owned by the state, whatever scope the caller runs in
  return r.logits;
}

function isIds(p: unknown): p is readonly number[] {
  return Array.isArray(p) && p.length > 0 && p.every((x) => typeof x === "number");
}

/**
 * Generates text for one prompt (yielding text pieces) or for a batch of prompts (yielding
 * `{index, text, token}`). A string prompt is tokenized as is: apply the chat template first for
 * chat models.
 *
 * @param model config, params, tokenizer
 * @param prompt a string or token ids, or an array of them
 * @param options sampling, length, stop tokens, seed, abort signal
 * @returns an async generator of pieces
 * @example
 * ```ts
 * import { config, generate, init, random } from "@minimind/ts";
 * const cfg = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * const model = { cfg, params: init(cfg, random.key(0)) };
 * const ids: number[] = [];
 * for await (const p of generate(model, [[1, 5, 9]], { maxNewTokens: 4, greedy: true })) ids.push(p.token);
 * ```
 */
export function generate(
  model: GenerateModel,
  prompt: string | readonly number[],
  options?: GenerateOptions,
): AsyncGenerator<string>;
/**
 * Generates for a batch of prompts, yielding `{index, text, token}` pieces.
 *
 * @param model config, params, tokenizer
 * @param prompts strings or token-id arrays
 * @param options sampling, length, stop tokens, seed, abort signal
 * @returns an async generator of pieces
 */
export function generate(
  model: GenerateModel,
  prompts: readonly (string | readonly number[])[],
  options?: GenerateOptions,
): AsyncGenerator<GenerationPiece>;
export function generate(
  model: GenerateModel,
  prompt: string | readonly number[] | readonly (string | readonly number[])[],
  options: GenerateOptions = {},
): AsyncGenerator<string> | AsyncGenerator<GenerationPiece> {
  if (typeof prompt === "string" || isIds(prompt)) {
    return single(model, prompt as string | readonly number[], options);
  }
  return generateBatch(model, prompt as readonly (string | readonly number[])[], options);
}

async function* single(
  model: GenerateModel,
  prompt: string | readonly number[],
  options: GenerateOptions,
): AsyncGenerator<string> {
  for await (const p of generateBatch(model, [prompt], options)) if (p.text) yield p.text;
}

/**
 * The batched generator behind {@link generate}.
 *
 * @param model config, params, tokenizer
 * @param prompts strings or token-id arrays
 * @param options sampling options
 * @returns pieces tagged with their prompt index
 */
export async function* generateBatch(
  model: GenerateModel,
  prompts: readonly (string | readonly number[])[],
  options: GenerateOptions = {},
): AsyncGenerator<GenerationPiece> {
  const { cfg } = model;
  const tok = model.tokenizer;
  if (prompts.length === 0) throw new Error("Cannot generate for zero prompts");
  const rows = prompts.map((p, i) => {
    if (typeof p === "string") {
      if (!tok) throw new Error(`Cannot encode prompt ${i}: the model has no tokenizer`);
      return tok.encode(p);
    }
    return [...p];
  });
  rows.forEach((r, i) => {
    if (r.length === 0) throw new Error(`Cannot generate from prompt ${i}: it has no tokens`);
    for (const id of r) {
      if (!(Number.isInteger(id) && id >= 0 && id < cfg.vocabSize)) {
        throw new Error(
          `Cannot generate from prompt ${i}: token ${id} is outside [0, ${cfg.vocabSize})`,
        );
      }
    }
  });
  const B = rows.length, V = cfg.vocabSize;
  const maxNew = options.maxNewTokens ?? 512;
  const eosList = options.eos === undefined
    ? [tok && tok.eosId >= 0 ? tok.eosId : cfg.eosTokenId]
    : typeof options.eos === "number"
    ? [options.eos]
    : [...options.eos];
  const eos = new Set(eosList);
  const sampling = {
    temperature: options.temperature ?? 0.85,
    topK: options.topK ?? 50,
    topP: options.topP ?? 0.85,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    greedy: options.greedy ?? false,
    minP: options.minP ?? 0,
  };
  const baseKey: Key = makeKey(options.seed ?? 0);
  const rowKeys = rows.map((_, r) => foldIn(baseKey, r));
  const backend = model.params.model.embed_tokens.weight.backend;
  const constraints = options.constraints ?? [];
  if (constraints.length > B) {
    throw new Error(`Cannot apply ${constraints.length} constraints to ${B} prompts`);
  }
  const presence = options.presencePenalty ?? 0, frequency = options.frequencyPenalty ?? 0;
  const penalized = presence !== 0 || frequency !== 0;
  // penalties and constraints change with every token: their addend is built on the host each
  // step, so each token is read back before the next
  const perStep = penalized || constraints.some((c) => c);
  // generated ids and their counts, for the penalties
  const counts = penalized ? rows.map(() => new Map<number, number>()) : null;
  const chunk = perStep ? 1 : Math.max(1, options.chunk ?? (backend.name === "cpu" ? 1 : 8));
  // the bias alone is the same at every step: one addend on the device for the whole run
  const biasAddend = !perStep && (options.logitBias?.size ?? 0) > 0
    ? tensor(logitAddend(rows.map(() => ({ logitBias: options.logitBias })), V), [B, V], "f32", {
      backend,
    })
    : null; // (B, V)
  const streams = rows.map(() =>
    tok?.decodeStream({ skipSpecialTokens: options.skipSpecialTokens ?? true }) ?? null
  );

  // left-pad to a rectangle; the key mask hides the pads (positions stay absolute, as MiniMind)
  const L = Math.max(...rows.map((r) => r.length));
  const padId = tok && tok.padId >= 0 ? tok.padId : 0;
  const ids0 = new Int32Array(B * L).fill(padId), mask0 = new Float32Array(B * L);
  const seen0 = sampling.repetitionPenalty !== 1 ? new Float32Array(B * V) : null;
  rows.forEach((r, b) => {
    ids0.set(r, b * L + L - r.length);
    mask0.fill(1, b * L + L - r.length, (b + 1) * L);
    if (seen0) { for (const id of r) seen0[b * V + id] = 1; }
  });
  const ragged = rows.some((r) => r.length !== L);
  const state: DecodeState = { cache: null };
  let seen = seen0 ? tensor(seen0, [B, V], "f32", { backend }) : null; // (B, V)
  const done = new Array<boolean>(B).fill(false);
  let last: Tensor | null = null; // sampled ids (B) of the previous step, on the device
  try {
    let step = 0;
    while (step < maxNew && !done.every(Boolean)) {
      // sample up to `chunk` tokens without reading anything back
      const pending: Tensor[] = [];
      const pendingLp: Tensor[] = []; // with `logprobs`: log π of each sampled token (B)
      for (let c = 0; c < chunk && step < maxNew; c++, step++) {
        if (options.signal?.aborted) return;
        const u = new Float32Array(B);
        for (let b = 0; b < B; b++) u[b] = uniformArray(foldIn(rowKeys[b], step), 1)[0];
        const addend = perStep
          ? logitAddend(
            rows.map((_, b) => {
              const c = constraints[b];
              let allowed: Float32Array | undefined;
              if (c && !done[b]) {
                const m = c.mask();
                if (m.allowed === 0) {
                  throw new Error(
                    `Cannot continue prompt ${b}'s reply: its constraint allows no token`,
                  );
                }
                allowed = m.addend;
              }
              return {
                logitBias: options.logitBias,
                counts: counts?.[b],
                presencePenalty: presence,
                frequencyPenalty: frequency,
                allowed,
              };
            }),
            V,
          )
          : null;
        const { next, lp } = scope(() => {
          const input = last === null
            ? tensor(ids0, [B, L], "i32", { backend })
            : reshape(last, [B, 1]); // (B, T)
          const logits = decodeStep(model, state, input, {
            attentionMask: last === null && ragged
              ? tensor(mask0, [B, L], "f32", { backend })
              : undefined,
          }); // (B, V)
          const adj = addend ? tensor(addend, [B, V], "f32", { backend }) : biasAddend;
          const x = adj ? add(logits, adj) : logits;
          const next = sample(x, tensor(u, [B], "f32", { backend }), {
            ...sampling,
            seen: seen ?? undefined,
          }); // (B)
          // log π(token) = logit[token] − logsumexp(logits): one reduction, no (B, V) output
          const lp = options.logprobs
            ? sub(reshape(takeAlongAxis(logits, reshape(next, [B, 1]), 1), [B]), logsumexp(logits))
            : null; // (B)
          return { next, lp };
        });
        if (lp) pendingLp.push(lp);
        if (seen) {
          const old: Tensor = seen;
          seen = scope(() =>
            scatterAdd(old, reshape(next, [B, 1]), full([B, 1], 1, "f32", { backend }), 1)
          );
          old.dispose();
        }
        const prev: Tensor | null = last;
        last = next;
        pending.push(next);
        if (prev && !pending.includes(prev)) prev.dispose(); // read back in the previous chunk
      }
      // one readback per chunk; the joined chunk is this loop's to free
      const joined = pending.length === 1 ? pending[0] : concat(pending, 0); // (chunk·B)
      let got: TypedArray;
      try {
        got = await joined.data(); // sync point
      } finally {
        if (joined !== pending[0]) joined.dispose();
      }
      for (const t of pending) if (t !== last) t.dispose();
      let lps: TypedArray | null = null;
      if (pendingLp.length) {
        const joinedLp = pendingLp.length === 1 ? pendingLp[0] : concat(pendingLp, 0); // (chunk·B)
        try {
          lps = await joinedLp.data(); // read back with the tokens
        } finally {
          if (joinedLp !== pendingLp[0]) joinedLp.dispose();
          for (const t of pendingLp) t.dispose();
        }
      }
      for (let c = 0; c < pending.length; c++) {
        for (let b = 0; b < B; b++) {
          if (done[b]) continue;
          const id = got[c * B + b];
          const lp = lps ? { logprob: lps[c * B + b] } : {};
          if (eos.has(id)) {
            done[b] = true;
            const tail = streams[b]?.flush() ?? "";
            yield { index: b, text: tail, token: id, ...lp };
            continue;
          }
          constraints[b]?.accept(id);
          counts?.[b].set(id, (counts[b].get(id) ?? 0) + 1);
          const text = streams[b]?.push(id) ?? "";
          yield { index: b, text, token: id, ...lp };
          if (constraints[b]?.done) {
            done[b] = true; // the reply is complete
            const tail = streams[b]?.flush() ?? "";
            if (tail) yield { index: b, text: tail, token: -1 };
          }
          if (options.signal?.aborted) return;
        }
      }
    }
    for (let b = 0; b < B; b++) {
      if (done[b]) continue;
      const tail = streams[b]?.flush() ?? "";
      if (tail) yield { index: b, text: tail, token: -1 };
    }
  } finally {
    (last as Tensor | null)?.dispose();
    (seen as Tensor | null)?.dispose();
    biasAddend?.dispose();
    disposeCache(state.cache);
  }
}
