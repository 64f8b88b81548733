/**
 * The elementwise ops the other elementwise VJP rules are written in: `neg`, `log`, `cast`
 * (unary), `mul`, `div` (binary, broadcasting) and `affine` (a·x + b with static scalars). Their
 * own rules use only one another, so `unary.ts` and `binary.ts` import this file and not each
 * other.
 * @module
 */
import type { DType } from "../dtype.ts";
import { isFloat } from "../dtype.ts";
import type { KernelOp, NoParams } from "../op.ts";
import { defineOp } from "../op.ts";
import { apply1 } from "../apply.ts";
import { sizeOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { callBinary, makeBinary, makeUnary } from "./_elementwise.ts";
import { mapWgsl, wgslType } from "../backend/webgpu/wgsl.ts";

/** Elementwise −x (a unary row). */
export const negOp: KernelOp<NoParams> = makeUnary(
  // d(-x) = -dx
  {
    name: "neg",
    f: (x) => -x,
    wgsl: "-x",
    grad: (ct) => neg(ct),
    save: "none",
    kind: "normal",
    ints: true,
  },
);

/** Elementwise natural log (a unary row). */
export const logOp: KernelOp<NoParams> = makeUnary(
  // d log(x) = dx / x
  {
    name: "log",
    f: Math.log,
    wgsl: "log(x)",
    grad: (ct, s) => div(ct, s.x),
    save: "x",
    kind: "positive",
  },
);

/** Elementwise a · b, broadcasting (a binary row). */
export const mulOp: KernelOp<NoParams> = makeBinary(
  // d(ab) = b da + a db
  {
    name: "mul",
    f: (a, b) => a * b,
    wgsl: "a * b",
    out: "same",
    grad: (ct, a, b) => [mul(ct, b), mul(ct, a)],
  },
);

/** Elementwise a / b, broadcasting (a binary row). */
export const divOp: KernelOp<NoParams> = makeBinary(
  // d(a/b) = da/b - a/b^2 db
  {
    name: "div",
    f: (a, b) => a / b,
    wgsl: "a / b",
    out: "same",
    grad: (ct, a, b) => [div(ct, b), neg(div(mul(ct, a), mul(b, b)))],
    kinds: ["normal", "positive"],
  },
);

/** Elementwise −x. @param x input @returns −x */
export function neg(x: Tensor): Tensor {
  return apply1(negOp, [x], {});
}

/** Elementwise natural log. @param x input @returns log(x) */
export function log(x: Tensor): Tensor {
  return apply1(logOp, [x], {});
}

/** Elementwise a · b (broadcasting). @param a left @param b right @returns a · b */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, b, 0);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, a, 0);
  return callBinary(mulOp, a, b);
}

/** Elementwise a / b (broadcasting). @param a left @param b right @returns a / b */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) {
    return affine(a, 1 / b, 0);
  }
  return callBinary(divOp, a, b);
}

/** Params of `affine`. */
export interface AffineParams {
  /** Scale. */
  readonly a: number;
  /** Shift. */
  readonly b: number;
}

/** a·x + b with static scalars (scaling without a scalar tensor). */
export const affineOp: KernelOp<AffineParams, "affine"> = defineOp<AffineParams, "affine">({
  name: "affine",
  infer: ([x]) => {
    if (!isFloat(x.dtype)) {
      throw new Error(`Cannot apply affine to a ${x.dtype} tensor: it needs a float dtype`);
    }
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  cpu: ([x], [y], { params: { a, b } }) => {
    for (let i = 0; i < x.length; i++) y[i] = a * x[i] + b;
  },
  wgsl: ({ inputs: [x], params: { a, b } }) => [
    mapWgsl(["x"], ["f32"], "f32", "u.a * x + u.b", sizeOf(x.shape), {
      fields: "a: f32, b: f32",
      words: [a, b],
      types: ["f32", "f32"],
    }),
  ],
  // d(a x + b) = a dx
  vjp: (ct, ctx) => [affine(ct[0]!, ctx.params.a, 0)],
  saves: { inputs: false },
  examples: [{ inputs: [{ shape: [3, 4] }], params: { a: -1.5, b: 0.25 } }],
});

/**
 * a·x + b with plain-number a and b.
 *
 * @param x input
 * @param a scale
 * @param b shift (default 0)
 * @returns a·x + b
 */
export function affine(x: Tensor, a: number, b = 0): Tensor {
  return apply1(affineOp, [x], { a, b });
}

/** Params of `cast`. */
export interface CastParams {
  /** Target dtype. */
  readonly dtype: DType;
}

/** Converts the element type (floats truncate toward zero when cast to integers). */
export const castOp: KernelOp<CastParams, "cast"> = defineOp<CastParams, "cast">({
  name: "cast",
  infer: ([x], p) => [{ shape: x.shape, dtype: p.dtype }],
  cpu: ([x], [y], call) => {
    const to = call.params.dtype;
    if (to === "i32" || to === "u32") {
      for (let i = 0; i < x.length; i++) y[i] = Math.trunc(x[i]);
    } else for (let i = 0; i < x.length; i++) y[i] = x[i];
  },
  // f32 → int truncates (WGSL clamps out-of-range values); int ↔ int reinterprets the bits
  wgsl: ({ inputs: [x], outputs: [y] }) => {
    const from = wgslType(x.dtype), to = wgslType(y.dtype);
    let expr = `${to}(x)`;
    if (from === "f32" && to === "u32") expr = "u32(i32(x))";
    else if (from !== "f32" && to !== "f32" && from !== to) expr = `bitcast<${to}>(x)`;
    return [mapWgsl(["x"], [from], to, expr, sizeOf(x.shape))];
  },
  // d cast(x) = cast back (only between float types)
  vjp: (ct, ctx) => [isFloat(ctx.inMetas[0].dtype) ? cast(ct[0]!, ctx.inMetas[0].dtype) : null],
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [2, 3] }], params: { dtype: "f32" } },
    { inputs: [{ shape: [4], kind: "int", high: 9, dtype: "i32" }], params: { dtype: "f32" } },
  ],
});

/**
 * Converts `x` to `dtype` (a no-op handle copy when it already has it).
 *
 * @param x input
 * @param dtype target type
 * @returns the converted tensor
 */
export function cast(x: Tensor, dtype: DType): Tensor {
  return apply1(castOp, [x], { dtype });
}
