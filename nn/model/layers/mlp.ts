/**
 * MiniMind's gated MLP (`FeedForward`): down(act(gate(x)) ⊙ up(x)). With the reference
 * `hiddenAct: "silu"` it is SwiGLU and runs the fused `swiglu` op; `hiddenAct: "sigmoid"` is the
 * study path's gated variant up(x)·σ(W_g x) (classic GLU).
 *
 * In the CPU's bfloat16 precision (`activationDtype`) SwiGLU keeps its hidden activations in bf16,
 * as PyTorch's CPU autocast does: gate(x) and up(x) are stored bf16, the SwiGLU reads and writes
 * bf16, down reads it as it is, and the gradients of those three tensors are bf16 too (products
 * and SwiGLU accumulate and compute in f32, rounding once when they store). The hidden tensors are
 * the MLP's widest (I = 2.75·H), so this halves the bytes the step moves there and drops their
 * separate roundings. Adapted (LoRA) Linears keep the f32 path.
 * @module
 */
// N = leading dims (B, T), H = hidden, I = intermediate
import type { HiddenAct } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { linear } from "./linear.ts";
import type { LinearParams } from "./linear.ts";
import { swiglu } from "../../ops/swiglu.ts";
import { mul } from "../../ops/arith.ts";
import { activationDtype, matmul } from "../../ops/matmul.ts";
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
  const plain = !p.gate_proj.lora && !p.up_proj.lora && !p.down_proj.lora;
  if (act === "silu" && plain && activationDtype(x) === "bf16") {
    const t = { transB: true, dtype: "bf16" } as const;
    const g = matmul(x, p.gate_proj.weight, t), u = matmul(x, p.up_proj.weight, t); // bf16 (..., I)
    return matmul(swiglu(g, u), p.down_proj.weight, { transB: true, dtype: "f32" }); // (..., H)
  }
  const g = linear(p.gate_proj, x); // (..., I)
  const u = linear(p.up_proj, x); // (..., I)
  const a = act === "silu" ? swiglu(g, u) : mul(sigmoid(g), u); // (..., I)
  return linear(p.down_proj, a); // (..., H)
}
