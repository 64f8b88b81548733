/**
 * MiniMind's gated MLP (`FeedForward`): down(act(gate(x)) ⊙ up(x)). With the reference
 * `hiddenAct: "silu"` it is SwiGLU and runs the fused `swiglu` op; `hiddenAct: "sigmoid"` is the
 * study path's gated variant up(x)·σ(W_g x) (classic GLU).
 * @module
 */
// N = leading dims (B, T), H = hidden, I = intermediate
import type { HiddenAct } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { linear } from "./linear.ts";
import type { LinearParams } from "./linear.ts";
import { swiglu } from "../../ops/swiglu.ts";
import { mul } from "../../ops/arith.ts";
import { sigmoid } from "../../ops/unary.ts";

/** Parameters of one MLP (Linear weights [out, in]). */
export type MlpParams = {
  /** gate_proj.weight (I, H). */
  readonly gate_proj: LinearParams;
  /** up_proj.weight (I, H). */
  readonly up_proj: LinearParams;
  /** down_proj.weight (H, I). */
  readonly down_proj: LinearParams;
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
  const g = linear(p.gate_proj, x); // (..., I)
  const u = linear(p.up_proj, x); // (..., I)
  const a = act === "silu" ? swiglu(g, u) : mul(sigmoid(g), u); // (..., I)
  return linear(p.down_proj, a); // (..., H)
}
