/**
 * Rotary position embedding, rotate-half (NeoX / HF Llama) layout:
 * x' = x·cos[p] + rotate_half(x)·sin[p], rotate_half(x) = concat(−x[d/2:], x[:d/2]).
 * With duplicated-half tables the VJP is the same op with −sin. On the CPU x may be bf16 (the
 * bfloat16 precision's attention activations) with f32 tables: computed as for the widened f32
 * values, each result rounded to bf16 once.
 * @module
 */
// B = batch, T = time, NH = heads, HD = head dim, P = table positions
import { computeDtype, isFloat } from "../dtype.ts";
import type { KernelOp } from "../op.ts";
import { defineOp, STATUS_BINDING } from "../op.ts";
import { apply1 } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { grid, GRID_ARGS, gridIndex, statusDecl } from "../backend/webgpu/wgsl.ts";
import { parallel } from "../backend/cpu/threads/mod.ts";
import { f32Simd, mapSimd } from "../backend/cpu/simd/mod.ts";

/** Fewest elements per piece of a pooled rotation (a handoff costs microseconds). */
const ROPE_GRAIN = 32768;

/** Params of `rope`. */
export interface RopeParams {
  /** Position of time step 0 when no positions tensor is given (the KV-cache length). */
  readonly offset: number;
  /** Rotate by −angle (the VJP). */
  readonly inverse: boolean;
}

/** x [B,T,NH,HD], cos [P,HD], sin [P,HD], optional pos i32 [B,T] → rotated x. */
export const ropeOp: KernelOp<RopeParams, "rope"> = defineOp<RopeParams, "rope">({
  name: "rope",
  infer: ([x, c, s, pos], p) => {
    const [, t, , hd] = x.shape;
    const table = computeDtype(x.dtype); // bf16 rows turn by f32 tables
    const ok = x.shape.length === 4 && isFloat(table) && hd % 2 === 0 &&
      c.shape.length === 2 && c.shape[1] === hd && s.shape[0] === c.shape[0] &&
      s.shape[1] === hd && c.dtype === table && s.dtype === table;
    if (!ok) {
      throw new Error(
        `Cannot apply RoPE to ${x.dtype} ${fmt(x.shape)} with tables ${c.dtype} ${
          fmt(c.shape)
        } / ${s.dtype} ${fmt(s.shape)}`,
      );
    }
    if (
      pos &&
      (pos.dtype !== "i32" || pos.shape.length !== 2 || pos.shape[0] !== x.shape[0] ||
        pos.shape[1] !== t)
    ) {
      throw new Error(
        `Cannot apply RoPE to ${fmt(x.shape)} with positions ${pos.dtype} ${fmt(pos.shape)}`,
      );
    }
    if (!pos && p.offset + t > c.shape[0]) {
      throw new Error(
        `Cannot apply RoPE at positions ${p.offset}..${p.offset + t - 1}: the table has ${
          c.shape[0]
        } rows`,
      );
    }
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  writesAll: true,
  cpu: ([x, c, s, pos], [y], { inputs, params }) => {
    const [b, t, nh, hd] = inputs[0].shape;
    const P = inputs[1].shape[0];
    const sg = params.inverse ? -1 : 1;
    // every position is checked here, before any thread runs the rotation
    for (let q = 0; q < b * t; q++) {
      const p = pos ? pos[q] : params.offset + q % t;
      if (p < 0 || p >= P) {
        throw new Error(`Cannot apply RoPE at position ${p}: the table has ${P} rows`);
      }
    }
    const grain = Math.max(1, Math.ceil(ROPE_GRAIN / Math.max(1, nh * hd)));
    const vec = f32Simd(c, s) !== null && mapSimd(x, y) !== null; // x, y f32 or bf16
    const kernel = pos ? (vec ? "rope_pos_simd" : "rope_pos") : vec ? "rope_simd" : "rope";
    const arrays = pos ? [x, c, s, pos, y] : [x, c, s, y];
    parallel(kernel, arrays, [t, nh, hd, pos ? 0 : params.offset, sg], 0, b * t, grain);
  },
  // one invocation per (row, i < HD/2) pair; positions from the optional i32 input
  wgsl: ({ inputs: [x, c, , pos], params }) => {
    const [b, t, nh, hd] = x.shape;
    const half = hd / 2;
    const count = b * t * nh * half;
    const posDecl = pos
      ? `@group(0) @binding(3) var<storage, read> pos: array<i32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
${statusDecl(5)}`
      : `@group(0) @binding(3) var<storage, read_write> y: array<f32>;
${statusDecl(4)}`;
    const p = pos ? "pos[bt]" : "i32(u.offset + bt % u.t)";
    return [{
      code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> cs: array<f32>;
@group(0) @binding(2) var<storage, read> sn: array<f32>;
${posDecl}
struct U { count: u32, t: u32, nh: u32, half: u32, table: u32, offset: u32, sg: f32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let q = ${gridIndex(256)};
  if (q >= u.count) { return; }
  let i = q % u.half;
  let row = q / u.half;          // (b, t, h)
  let bt = row / u.nh;           // (b, t)
  let p = ${p};
  let base = row * 2u * u.half;
  if (p < 0 || u32(p) >= u.table) {
    report(2u, p, u.table);
    y[base + i] = 0.0;
    y[base + i + u.half] = 0.0;
    return;
  }
  let tb = u32(p) * 2u * u.half;
  let x1 = x[base + i];
  let x2 = x[base + i + u.half];
  y[base + i] = x1 * cs[tb + i] - x2 * u.sg * sn[tb + i];
  y[base + i + u.half] = x2 * cs[tb + i + u.half] + x1 * u.sg * sn[tb + i + u.half];
}`,
      workgroups: grid(count),
      uniforms: [count, t, nh, half, c.shape[0], params.offset, params.inverse ? -1 : 1],
      uniformTypes: ["u32", "u32", "u32", "u32", "u32", "u32", "f32"],
      bindings: pos ? [0, 1, 2, 3, 4, STATUS_BINDING] : [0, 1, 2, 3, STATUS_BINDING],
    }];
  },
  // inverse rotation (tables have equal halves)
  vjp: (ct, ctx) => [
    apply1(ropeOp, [ct[0]!, ...(ctx.inputs.slice(1) as Tensor[])], {
      ...ctx.params,
      inverse: !ctx.params.inverse,
    }),
    null,
    null,
    ...(ctx.inputs.length > 3 ? [null] : []),
  ],
  saves: { inputs: [1, 2, 3] },
  examples: [
    {
      inputs: [{ shape: [2, 3, 2, 8] }, ropeTable(6, 8, "cos"), ropeTable(6, 8, "sin")],
      params: { offset: 1, inverse: false },
    },
    {
      inputs: [{ shape: [1, 2, 3, 4] }, ropeTable(9, 4, "cos"), ropeTable(9, 4, "sin"), {
        shape: [1, 2],
        dtype: "i32",
        values: [7, 2],
      }],
      params: { offset: 0, inverse: false },
      label: "positions",
    },
  ],
});

/** An example input: a valid cos/sin table (θ = 10000) for `p` positions of width `hd`. */
function ropeTable(
  p: number,
  hd: number,
  which: "cos" | "sin",
): { shape: number[]; values: number[] } {
  const values: number[] = [];
  for (let t = 0; t < p; t++) {
    for (let j = 0; j < hd; j++) {
      const a = t / Math.pow(10000, (2 * (j % (hd / 2))) / hd);
      values.push(which === "cos" ? Math.cos(a) : Math.sin(a));
    }
  }
  return { shape: [p, hd], values };
}

/**
 * Applies rotary embeddings to q or k.
 *
 * @param x [B, T, NH, HD]
 * @param cos table [P, HD] (halves equal)
 * @param sin table [P, HD] (halves equal)
 * @param options `offset` (position of t = 0) or `positions` (i32 [B, T], per-row positions)
 * @returns rotated x
 */
export function rope(
  x: Tensor,
  cos: Tensor,
  sin: Tensor,
  options: { offset?: number; positions?: Tensor } = {},
): Tensor {
  const ins = options.positions ? [x, cos, sin, options.positions] : [x, cos, sin];
  return apply1(ropeOp, ins, { offset: options.offset ?? 0, inverse: false });
}
