/**
 * MiniMind's gated MLP (`FeedForward`): down(act(gate(x)) ⊙ up(x)). With the reference
 * `hiddenAct: "silu"` it is SwiGLU and runs the fused `swiglu` op; `hiddenAct: "sigmoid"` is the
 * study path's gated variant up(x)·σ(W_g x) (classic GLU).
 * @module
 */
// N = leading dims (B, T), H = hidden, I = intermediate
import type { HiddenAct } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { matmul } from "../../ops/matmul.ts";
import { swiglu } from "../../ops/swiglu.ts";
import { mul } from "../../ops/arith.ts";
import { sigmoid } from "../../ops/unary.ts";

/** Parameters of one MLP (Linear weights [out, in]). */
export type MlpParams = {
  /** gate_proj.weight (I, H). */
  readonly gate_proj: { readonly weight: Tensor };
  /** up_proj.weight (I, H). */
  readonly up_proj: { readonly weight: Tensor };
  /** down_proj.weight (H, I). */
  readonly down_proj: { readonly weight: Tensor };
};

/**
 * The gated MLP on x (..., H).
 *
 * @param p weights
 * @param x input (..., H)
 * @param act activation of the gate (default silu = SwiGLU)
 * @returns (..., H)
 */
export function mlp(p: MlpParams, x: Tensor, act: HiddenAct = "silu"): Tensor {
  const g = matmul(x, p.gate_proj.weight, { transB: true }); // (..., I)
  const u = matmul(x, p.up_proj.weight, { transB: true }); // (..., I)
  const a = act === "silu" ? swiglu(g, u) : mul(sigmoid(g), u); // (..., I)
  return matmul(a, p.down_proj.weight, { transB: true }); // (..., H)
}
