/**
 * Mixture-of-experts MLP, both reference generations:
 * - minimind2 (DeepSeek style): softmax router `mlp.gate.weight`, top-k (2) renormalised when
 *   k > 1, routed experts weighted, every shared expert added unweighted; aux loss per sequence
 *   (`seqAux`) or per batch, times `auxLossAlpha`.
 * - minimind3 (Qwen3-MoE style): router `mlp.gate` (a Linear), top-k (1) always renormalised
 *   (so k = 1 gives weight 1.0 and the router learns only from the aux loss), no shared expert;
 *   token-level aux loss Σ_e load_e·P_e·E·coef.
 * The aux loss exists only in training. Two equivalent executions: "sparse" gathers each
 * expert's tokens (reads the routing on the host: CPU), "dense" runs every expert on every token
 * and weights by a combine matrix that is 0 off the top-k (no host read: WebGPU).
 * @module
 */
// N = tokens (B·T), H = hidden, E = experts, k = experts per token, m = tokens of one expert
import type { MiniMindConfig } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { tensor, zeros } from "../../creation.ts";
import { ones } from "../../creation.ts";
import { matmul } from "../../ops/matmul.ts";
import { reshape, sliceAxis } from "../../ops/movement.ts";
import { softmax } from "../../ops/softmax.ts";
import { embedding, scatterAdd, takeAlongAxis, topk } from "../../ops/gather.ts";
import { add } from "../../ops/binary.ts";
import { div, mul } from "../../ops/arith.ts";
import { mean, sum } from "../../ops/reduce.ts";
import type { MlpParams } from "./mlp.ts";
import { mlp } from "./mlp.ts";

/** Parameters of one MoE block. */
export type MoeParams = {
  /** Router weight (E, H). */
  readonly gate: { readonly weight: Tensor };
  /** Routed experts, E of them. */
  readonly experts: readonly MlpParams[];
  /** minimind2 shared experts (always applied, unweighted). */
  readonly shared_experts?: readonly MlpParams[];
};

/** The routing decisions of one MoE block (row n = b·T + t). */
export interface RouterInfo {
  /** Router logits (N, E). */
  readonly logits: Tensor;
  /** Router probabilities (N, E). */
  readonly probs: Tensor;
  /** Chosen experts, descending probability, i32 (N, k). */
  readonly topkIdx: Tensor;
  /** Their (renormalised) weights (N, k). */
  readonly topkWeight: Tensor;
}

/** How experts are executed. */
export type MoeDispatch = "auto" | "sparse" | "dense";

/** Number of routed experts of a config. */
export function routedExperts(cfg: MiniMindConfig): number {
  return cfg.generation === "minimind2" ? cfg.nRoutedExperts : cfg.numExperts;
}

/**
 * The MoE MLP on x (B, T, H).
 *
 * @param cfg model config
 * @param p block parameters
 * @param x normalised input (B, T, H)
 * @param options train (aux loss on) and dispatch strategy
 * @returns output (B, T, H), aux loss (scalar), routing
 */
export function moe(
  cfg: MiniMindConfig,
  p: MoeParams,
  x: Tensor,
  options: { train?: boolean; dispatch?: MoeDispatch } = {},
): { y: Tensor; aux: Tensor; routing: RouterInfo } {
  const [b, t, h] = x.shape;
  const n = b * t, e = routedExperts(cfg), k = cfg.numExpertsPerTok;
  const dt = x.dtype, backend = x.backend;
  const xf = reshape(x, [n, h]); // (N, H)
  const logits = matmul(xf, p.gate.weight, { transB: true }); // (N, E)
  const probs = softmax(logits); // (N, E)
  const [, idx] = topk(probs, k); // (N, k) i32, descending
  let w = takeAlongAxis(probs, idx, 1); // (N, k): differentiable gather of the chosen probs
  // minimind2 renormalises only for k > 1; minimind3 always (k = 1 → exactly 1.0)
  if (cfg.normTopkProb && (cfg.generation === "minimind3" || k > 1)) {
    w = div(w, add(sum(w, -1, true), 1e-20)); // (N, k)
  }

  let dispatch = options.dispatch ?? "auto";
  if (dispatch === "auto") dispatch = backend.readSync ? "sparse" : "dense";
  let y: Tensor; // (N, H)
  if (dispatch === "sparse") {
    // sync point on non-CPU backends (auto picks dense there)
    const ids = idx.dataSync();
    const wf = reshape(w, [n * k]); // (N·k)
    y = zeros([n, h], dt, { backend }); // (N, H)
    for (let ex = 0; ex < e; ex++) {
      // (token, slot) pairs routed to ex, in flat order n·k + j
      const flat: number[] = [];
      for (let f = 0; f < n * k; f++) if (ids[f] === ex) flat.push(f);
      const m = flat.length;
      if (m === 0) continue; // unused expert: no gradient reaches it (zeros)
      const tok = Int32Array.from(flat, (f) => Math.floor(f / k));
      const rows = embedding(xf, tensor(tok, [m], "i32", { backend })); // (m, H) row gather
      const out = mlp(p.experts[ex], rows, cfg.hiddenAct); // (m, H)
      const we = takeAlongAxis(wf, tensor(Int32Array.from(flat), [m], "i32", { backend }), 0); // (m)
      const upd = mul(out, reshape(we, [m, 1])); // (m, H)
      const at = new Int32Array(m * h);
      for (let i = 0; i < m; i++) at.fill(tok[i], i * h, (i + 1) * h);
      y = scatterAdd(y, tensor(at, [m, h], "i32", { backend }), upd, 0); // (N, H) index_add
    }
  } else {
    // combine weights: (N, E), the top-k weights scattered into their expert columns
    const comb = scatterAdd(zeros([n, e], dt, { backend }), idx, w, 1); // (N, E)
    let acc: Tensor | null = null;
    for (let ex = 0; ex < e; ex++) {
      const out = mlp(p.experts[ex], xf, cfg.hiddenAct); // (N, H)
      const term = mul(out, sliceAxis(comb, 1, ex, ex + 1)); // (N, H)
      acc = acc ? add(acc, term) : term;
    }
    y = acc!;
  }
  for (const s of p.shared_experts ?? []) y = add(y, mlp(s, xf, cfg.hiddenAct)); // (N, H)

  let aux: Tensor = zeros([], dt, { backend }); // ()
  if (options.train) {
    if (cfg.generation === "minimind2" && cfg.auxLossAlpha > 0) {
      if (cfg.seqAux) {
        // ce[b, e] = (# of the T·k choices of sequence b that went to e) / (T·k/E)
        const counts = scatterAdd(
          zeros([b, e], dt, { backend }),
          reshape(idx, [b, t * k]),
          ones([b, t * k], dt, { backend }),
          1,
        ); // (B, E)
        const ce = div(counts, (t * k) / e); // (B, E)
        const pm = mean(reshape(probs, [b, t, e]), 1); // (B, E) mean_t probs
        aux = mul(mean(sum(mul(ce, pm), -1)), cfg.auxLossAlpha); // ()
      } else {
        // fi = E · fraction of the N·k choices per expert; Pi = mean probs
        const counts = scatterAdd(
          zeros([1, e], dt, { backend }),
          reshape(idx, [1, n * k]),
          ones([1, n * k], dt, { backend }),
          1,
        ); // (1, E)
        const fi = mul(div(counts, n * k), e); // (1, E)
        aux = mul(sum(mul(reshape(mean(probs, 0), [1, e]), fi)), cfg.auxLossAlpha); // ()
      }
    } else if (cfg.generation === "minimind3" && cfg.routerAuxLossCoef > 0) {
      // load[e] = Σ_k one_hot(idx).mean over tokens; aux = Σ load·mean(probs)·E·coef
      const counts = scatterAdd(
        zeros([1, e], dt, { backend }),
        reshape(idx, [1, n * k]),
        ones([1, n * k], dt, { backend }),
        1,
      ); // (1, E)
      const load = div(counts, n); // (1, E)
      const pm = reshape(mean(probs, 0), [1, e]); // (1, E)
      aux = mul(sum(mul(load, pm)), e * cfg.routerAuxLossCoef); // ()
    }
  }
  return {
    y: reshape(y, [b, t, h]),
    aux,
    routing: { logits, probs, topkIdx: idx, topkWeight: w },
  };
}
