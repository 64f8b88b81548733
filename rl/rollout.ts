/**
 * Rollouts: sample responses for a batch of prompts from the policy through the batched decode
 * the generator and the server share (`generateBatch` → `decodeStep`: one KV cache for every
 * row, left-padded prompts under a key mask, a per-row sampling key, stop at eos or the length
 * limit), keeping each sampled token's log-prob under the policy as the "old" log-prob.
 *
 * A rollout is laid out for training as MiniMind does: `ids` = left-padded prompt (width P) then
 * the response (width R, right-padded after eos); the response mask covers tokens up to and
 * including the first eos; the logits at position P − 1 + j score response token j.
 * @module
 */
// N = rows, P = prompt width, R = response width, V = vocab
import type { Tensor } from "../nn/tensor.ts";
import { tensor } from "../nn/creation.ts";
import { sliceAxis } from "../nn/ops/movement.ts";
import { forward } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { generateBatch } from "../nn/model/generate.ts";
import type { GenerateModel, GenerationPiece } from "../nn/model/generate.ts";
import { responseLogProbs } from "./losses.ts";
import { scope } from "../nn/scope.ts";

/** Sampling settings of a rollout (MiniMind's RL defaults). */
export interface RolloutOptions {
  /** Most new tokens per row (MiniMind: 1024 HEAD, 1536 V2). */
  maxNewTokens: number;
  /** Temperature (default 0.8). */
  temperature?: number;
  /** Nucleus mass (default 0.85, the model's generate default). */
  topP?: number;
  /** Top-k (default 50). */
  topK?: number;
  /** Seed of the sampling keys (row r uses foldIn(key(seed), r)). */
  seed: number;
  /** Stop token (default: the tokenizer's eos). */
  eos?: number;
  /** Tokens between readbacks (generateBatch's default when omitted). */
  chunk?: number;
}

/** A batch of sampled responses, row-major typed arrays. */
export interface Rollout {
  /** Rows N. */
  rows: number;
  /** Prompt width P (left-padded). */
  promptWidth: number;
  /** Response width R (longest response, eos included). */
  responseWidth: number;
  /** Prompt + response ids (N, P + R); pads are the tokenizer's pad id (0 otherwise). */
  ids: Int32Array;
  /** Key mask (N, P + R): 0 on left pads, 1 elsewhere (right pads sit after every real token). */
  attention: Float32Array;
  /** Response ids (N, R). */
  response: Int32Array;
  /** Response mask (N, R): 1 up to and including the first eos. */
  mask: Float32Array;
  /** log π_old of each response token (N, R), 0 where masked. */
  oldLogp: Float32Array;
  /** Decoded responses (special tokens dropped). */
  texts: string[];
  /** Response tokens per row (eos included). */
  lengths: number[];
}

/**
 * Samples one response per prompt.
 *
 * @param model config, params and tokenizer of the policy
 * @param prompts token ids per row (already truncated)
 * @param options sampling settings
 * @returns the rollout
 */
export async function rollout(
  model: GenerateModel,
  prompts: readonly (readonly number[])[],
  options: RolloutOptions,
): Promise<Rollout> {
  const tokens: number[][] = prompts.map(() => []);
  const logps: number[][] = prompts.map(() => []);
  const texts = prompts.map(() => "");
  const gen = generateBatch(model, prompts, {
    maxNewTokens: options.maxNewTokens,
    temperature: options.temperature ?? 0.8,
    topP: options.topP ?? 0.85,
    topK: options.topK ?? 50,
    seed: options.seed,
    eos: options.eos,
    chunk: options.chunk,
    logprobs: true,
  });
  for await (const p of gen as AsyncGenerator<GenerationPiece>) {
    texts[p.index] += p.text;
    if (p.token < 0) continue; // the final flush of an unfinished row
    tokens[p.index].push(p.token);
    logps[p.index].push(p.logprob!);
  }
  const pad = model.tokenizer && model.tokenizer.padId >= 0 ? model.tokenizer.padId : 0;
  return packRollout(
    prompts.map((prompt, i) => ({
      prompt,
      response: tokens[i],
      logp: logps[i],
      text: texts[i].trim(),
    })),
    pad,
  );
}

/** One row of a rollout before packing. */
export interface RolloutRow {
  /** Prompt token ids. */
  prompt: readonly number[];
  /** Every token after the prompt. */
  response: readonly number[];
  /** Loss mask per response token (default 1 for every one; 0 on e.g. tool observations). */
  mask?: readonly number[];
  /** Sampling log-prob per response token. */
  logp: readonly number[];
  /** The decoded text. */
  text: string;
}

/**
 * Packs rows into MiniMind's layout: prompts left-padded to the longest, responses right-padded
 * to the longest (at least 1), attention 1 from each prompt's first token on.
 *
 * @param rows the rows
 * @param pad the pad token id
 * @returns the rollout
 */
export function packRollout(rows: readonly RolloutRow[], pad: number): Rollout {
  const n = rows.length;
  const P = Math.max(...rows.map((r) => r.prompt.length));
  const R = Math.max(1, ...rows.map((r) => r.response.length));
  const W = P + R;
  const ids = new Int32Array(n * W).fill(pad), attention = new Float32Array(n * W);
  const response = new Int32Array(n * R).fill(pad), mask = new Float32Array(n * R);
  const oldLogp = new Float32Array(n * R);
  rows.forEach((r, i) => {
    const p = r.prompt, t = r.response;
    ids.set(p, i * W + P - p.length);
    ids.set(t, i * W + P);
    attention.fill(1, i * W + P - p.length, (i + 1) * W);
    response.set(t, i * R);
    if (r.mask) mask.set(r.mask, i * R);
    else mask.fill(1, i * R, i * R + t.length);
    oldLogp.set(r.logp, i * R);
  });
  return {
    rows: n,
    promptWidth: P,
    responseWidth: R,
    ids,
    attention,
    response,
    mask,
    oldLogp,
    texts: rows.map((r) => r.text),
    lengths: rows.map((r) => r.response.length),
  };
}

/** A rollout's arrays as tensors (what the losses take). */
export interface RolloutTensors {
  /** i32 (N, P + R). */
  ids: Tensor;
  /** f32 (N, P + R). */
  attention: Tensor;
  /** i32 (N, R). */
  response: Tensor;
  /** f32 (N, R). */
  mask: Tensor;
  /** f32 (N, R). */
  oldLogp: Tensor;
}

/**
 * Uploads the rows `rows` of a rollout (all when omitted) as tensors.
 *
 * @param r the rollout
 * @param rows row indices (a minibatch)
 * @returns the tensors
 */
export function rolloutTensors(r: Rollout, rows?: readonly number[]): RolloutTensors {
  const W = r.promptWidth + r.responseWidth, R = r.responseWidth;
  const pick = rows ?? Array.from({ length: r.rows }, (_, i) => i);
  const take = <A extends Int32Array | Float32Array>(a: A, w: number): A => {
    const out = new (a.constructor as { new (n: number): A })(pick.length * w);
    pick.forEach((row, i) => out.set(a.subarray(row * w, (row + 1) * w), i * w));
    return out;
  };
  const m = pick.length;
  return {
    ids: tensor(take(r.ids, W), [m, W], "i32"),
    attention: tensor(take(r.attention, W), [m, W], "f32"),
    response: tensor(take(r.response, R), [m, R], "i32"),
    mask: tensor(take(r.mask, R), [m, R], "f32"),
    oldLogp: tensor(take(r.oldLogp, R), [m, R], "f32"),
  };
}

/**
 * Log-probs of the response tokens under `params` (differentiable): one forward over prompt +
 * response with the key mask, logits of the last R + 1 positions.
 *
 * @param cfg model config
 * @param params model params
 * @param x the rollout tensors
 * @returns log π (N, R)
 */
export function policyLogProbs(
  cfg: MiniMindConfig,
  params: MiniMindParams,
  x: { ids: Tensor; attention: Tensor; response: Tensor },
): { logp: Tensor; logits: Tensor } {
  const r = x.response.shape[1];
  const { logits } = forward(cfg, params, x.ids, {
    attentionMask: x.attention,
    logitsToKeep: r + 1,
  }); // (N, R + 1, V)
  return { logp: responseLogProbs(logits, x.response), logits: sliceAxis(logits, 1, 0, r) };
}

/**
 * Rows per forward of {@link scoreLogProbs}: one forward's (rows, R + 1, vocab) f32 logits must fit
 * one device buffer (16 × 97 × 6,400: 40 MB; Mesa's software adapter binds at most 128 MiB, and a
 * 64-row group's logits were 140 MB).
 */
export const SCORE_ROWS = 16;

/**
 * The response tokens' log-probs under `params` without gradients (a reference model, the old
 * policy), read back: all rows (N·R) or rows `rows` (rows.length·R, in their order), scored
 * {@link SCORE_ROWS} rows per forward.
 *
 * @param cfg model config
 * @param params model params
 * @param r the rollout
 * @param rows the rows to score (default: all)
 * @returns log π, row-major (N, R) or (rows.length, R)
 */
export async function scoreLogProbs(
  cfg: MiniMindConfig,
  params: MiniMindParams,
  r: Rollout,
  rows?: readonly number[],
): Promise<Float32Array> {
  const pick = rows ?? Array.from({ length: r.rows }, (_, i) => i);
  const R = r.responseWidth;
  const out = new Float32Array(pick.length * R);
  for (let a = 0; a < pick.length; a += SCORE_ROWS) {
    const part = pick.slice(a, a + SCORE_ROWS);
    const t = scope(() => policyLogProbs(cfg, params, rolloutTensors(r, part)).logp);
    try {
      out.set(await t.data(), a * R);
    } finally {
      t.dispose();
    }
  }
  return out;
}
