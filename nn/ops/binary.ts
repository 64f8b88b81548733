/**
 * Elementwise binary ops with NumPy broadcasting (one row each), `affine` (a·x + b with static
 * scalars), `powScalar` and the ternary `where`. Operands must share a dtype; plain numbers are
 * accepted where a scalar makes sense.
 * @module
 */
import { isFloat } from "../dtype.ts";
import type { KernelOp, NoParams } from "../op.ts";
import { defineOp } from "../op.ts";
import { apply1 } from "../apply.ts";
import { broadcastShapes, fmt, sameShape, sizeOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { full } from "../creation.ts";
import { forEachBroadcast } from "./_broadcast.ts";
import { affine, cast, div, divOp, log, mul, mulOp, neg } from "./arith.ts";
import { callBinary, makeBinary, scalarFor } from "./_elementwise.ts";
import type { BinaryRow } from "./_elementwise.ts";
import { broadcastWgsl, mapWgsl, wgslType } from "../backend/webgpu/wgsl.ts";
import { add as addF32 } from "../backend/cpu/threads/mod.ts";

const ROWS: BinaryRow[] = [
  // d(a+b) = da + db
  {
    name: "add",
    f: (a, b) => a + b,
    wgsl: "a + b",
    out: "same",
    grad: (ct) => [ct, ct],
    cpuSame: addF32,
  },
  // d(a-b) = da - db
  { name: "sub", f: (a, b) => a - b, wgsl: "a - b", out: "same", grad: (ct) => [ct, neg(ct)] },
  // the larger operand gets the gradient (ties go to a)
  {
    name: "maximum",
    f: (a, b) => (a >= b ? a : b),
    wgsl: "max(a, b)",
    out: "same",
    grad: (ct, a, b) => {
      const m = cast(greaterEqual(a, b), ct.dtype);
      return [mul(ct, m), mul(ct, affine(m, -1, 1))];
    },
  },
  {
    name: "minimum",
    f: (a, b) => (a <= b ? a : b),
    wgsl: "min(a, b)",
    out: "same",
    grad: (ct, a, b) => {
      const m = cast(lessEqual(a, b), ct.dtype);
      return [mul(ct, m), mul(ct, affine(m, -1, 1))];
    },
  },
  // d a^b = b a^(b-1) da + a^b log(a) db
  {
    name: "pow",
    f: Math.pow,
    wgsl: "pow(a, b)",
    out: "same",
    grad: (ct, a, b, y) => [mul(ct, mul(b, div(y, a))), mul(ct, mul(y, log(a)))],
    saveOut: true,
    kinds: ["positive", "normal"],
    floatOnly: true,
  },
  {
    name: "equal",
    f: (a, b) => (a === b ? 1 : 0),
    wgsl: "select(0u, 1u, a == b)",
    out: "u32",
    grad: null,
  },
  {
    name: "not_equal",
    f: (a, b) => (a !== b ? 1 : 0),
    wgsl: "select(0u, 1u, a != b)",
    out: "u32",
    grad: null,
  },
  {
    name: "less",
    f: (a, b) => (a < b ? 1 : 0),
    wgsl: "select(0u, 1u, a < b)",
    out: "u32",
    grad: null,
  },
  {
    name: "less_equal",
    f: (a, b) => (a <= b ? 1 : 0),
    wgsl: "select(0u, 1u, a <= b)",
    out: "u32",
    grad: null,
  },
  {
    name: "greater",
    f: (a, b) => (a > b ? 1 : 0),
    wgsl: "select(0u, 1u, a > b)",
    out: "u32",
    grad: null,
  },
  {
    name: "greater_equal",
    f: (a, b) => (a >= b ? 1 : 0),
    wgsl: "select(0u, 1u, a >= b)",
    out: "u32",
    grad: null,
  },
];

/** The binary op table, keyed by name (`mul` and `div` are defined in `arith.ts`). */
export const BINARY_OPS: Readonly<Record<string, KernelOp<NoParams>>> = {
  mul: mulOp,
  div: divOp,
  ...Object.fromEntries(ROWS.map((r) => [r.name, makeBinary(r)])),
};

/** Elementwise a + b (broadcasting). @param a left @param b right @returns a + b */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, 1, b);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, 1, a);
  return callBinary(BINARY_OPS.add, a, b);
}
/** Params of `accumulate`. */
export interface AccumulateParams {
  /** Write the sum into a's storage where the backend can (CPU): the caller gives a up. */
  readonly into?: boolean;
}

/**
 * a + b of one shape and float dtype; with `into`, written into a's storage where the backend can
 * (CPU): the sum autodiff makes when it adds a cotangent into one it alone holds (`autodiff.ts`),
 * which then needs no new array.
 */
export const accumulateOp: KernelOp<AccumulateParams, "accumulate"> = defineOp<
  AccumulateParams,
  "accumulate"
>({
  name: "accumulate",
  infer: ([a, b]) => {
    if (!isFloat(a.dtype) || a.dtype !== b.dtype || !sameShape(a.shape, b.shape)) {
      throw new Error(
        `Cannot accumulate ${b.dtype} ${fmt(b.shape)} into ${a.dtype} ${
          fmt(a.shape)
        }: one float dtype and one shape`,
      );
    }
    return [{ shape: a.shape, dtype: a.dtype }];
  },
  writesAll: true,
  inPlace: (p) => p.into ? [0] : null,
  cpu: ([a, b], [y]) => {
    if (addF32(a, b, y)) return; // y may be a: each element is read before it is written
    for (let i = 0; i < y.length; i++) y[i] = a[i] + b[i];
  },
  wgsl: ({ inputs: [a] }) => {
    const t = wgslType(a.dtype);
    return [mapWgsl(["a", "b"], [t, t], t, "a + b", sizeOf(a.shape))];
  },
  vjp: (ct) => [ct[0], ct[0]],
  examples: [{ inputs: [{ shape: [3, 4] }, { shape: [3, 4] }], params: {} }],
});

/** Elementwise a − b (broadcasting). @param a left @param b right @returns a − b */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, 1, -b);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, -1, a);
  return callBinary(BINARY_OPS.sub, a, b);
}
/** Elementwise maximum (broadcasting). @param a left @param b right @returns max(a, b) */
export function maximum(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.maximum, a, b);
}
/** Elementwise minimum (broadcasting). @param a left @param b right @returns min(a, b) */
export function minimum(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.minimum, a, b);
}
/** Elementwise aᵇ (broadcasting; a number exponent uses `powScalar`). @param a base @param b exponent @returns a^b */
export function pow(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return powScalar(a, b);
  return callBinary(BINARY_OPS.pow, a, b);
}
/** Elementwise a == b as u32 0/1. @param a left @param b right @returns mask */
export function equal(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.equal, a, b);
}
/** Elementwise a != b as u32 0/1. @param a left @param b right @returns mask */
export function notEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.not_equal, a, b);
}
/** Elementwise a < b as u32 0/1. @param a left @param b right @returns mask */
export function less(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.less, a, b);
}
/** Elementwise a <= b as u32 0/1. @param a left @param b right @returns mask */
export function lessEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.less_equal, a, b);
}
/** Elementwise a > b as u32 0/1. @param a left @param b right @returns mask */
export function greater(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.greater, a, b);
}
/** Elementwise a >= b as u32 0/1. @param a left @param b right @returns mask */
export function greaterEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return callBinary(BINARY_OPS.greater_equal, a, b);
}

/** Params of `powScalar`. */
export interface PowScalarParams {
  /** Exponent. */
  readonly p: number;
}

/** xᵖ with a static exponent. */
export const powScalarOp: KernelOp<PowScalarParams, "pow_scalar"> = defineOp<
  PowScalarParams,
  "pow_scalar"
>({
  name: "pow_scalar",
  infer: ([x]) => {
    if (!isFloat(x.dtype)) throw new Error(`Cannot apply powScalar to a ${x.dtype} tensor`);
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  cpu: ([x], [y], { params: { p } }) => {
    for (let i = 0; i < x.length; i++) y[i] = Math.pow(x[i], p);
  },
  // integer exponents keep the sign of negative bases (WGSL pow is exp2(p·log2 x))
  wgsl: ({ inputs: [x], params: { p } }) => {
    const odd = Number.isInteger(p) && Math.abs(p % 2) === 1;
    const expr = Number.isInteger(p)
      ? (p === 0 ? "1.0" : `select(1.0, ${odd ? "sign(x)" : "1.0"}, x < 0.0) * pow(abs(x), u.p)`)
      : "pow(x, u.p)";
    return [
      mapWgsl(["x"], ["f32"], "f32", expr, sizeOf(x.shape), {
        fields: "p: f32",
        words: [p],
        types: ["f32"],
      }),
    ];
  },
  // d x^p = p x^(p-1) dx
  vjp: (
    ct,
    ctx,
  ) => [mul(ct[0]!, affine(powScalar(ctx.inputs[0]!, ctx.params.p - 1), ctx.params.p))],
  examples: [
    { inputs: [{ shape: [6], kind: "positive" }], params: { p: 3 } },
    { inputs: [{ shape: [2, 3], kind: "positive" }], params: { p: -0.5 } },
  ],
});

/**
 * xᵖ with a number exponent.
 *
 * @param x base
 * @param p exponent
 * @returns x^p
 */
export function powScalar(x: Tensor, p: number): Tensor {
  return apply1(powScalarOp, [x], { p });
}

/** where(cond, a, b): a where cond ≠ 0, else b (broadcasting all three). */
export const whereOp: KernelOp<NoParams, "where"> = defineOp<NoParams, "where">({
  name: "where",
  infer: ([c, a, b]) => {
    if (a.dtype !== b.dtype) {
      throw new Error(`Cannot where() ${a.dtype} and ${b.dtype} branches: dtypes differ`);
    }
    return [{ shape: broadcastShapes(c.shape, a.shape, b.shape), dtype: a.dtype }];
  },
  cpu: ([c, a, b], [y], call) => {
    const so = call.outputs[0].shape;
    forEachBroadcast(so, call.inputs.map((m) => m.shape), (o, n, offs, st) => {
      let ic = offs[0], ia = offs[1], ib = offs[2];
      for (let i = 0; i < n; i++, ic += st[0], ia += st[1], ib += st[2]) {
        y[o + i] = c[ic] !== 0 ? a[ia] : b[ib];
      }
    });
  },
  wgsl: ({ inputs: [c, a, b], outputs: [y] }) => {
    const t = wgslType(y.dtype);
    return [
      broadcastWgsl(
        ["c", "a", "b"],
        [wgslType(c.dtype), t, t],
        t,
        `select(b, a, c != ${wgslType(c.dtype)}(0))`,
        [c.shape, a.shape, b.shape],
        y.shape,
      ),
    ];
  },
  // the selected branch gets the gradient
  vjp: (ct, ctx) => {
    const g = ct[0]!;
    const c = ctx.inputs[0]!;
    const z = full([], 0, g.dtype, { backend: g.backend });
    return [null, where(c, g, z), where(c, z, g)];
  },
  saves: { inputs: [0] },
  examples: [
    {
      inputs: [{ shape: [3, 4], kind: "bool", dtype: "u32" }, { shape: [3, 4] }, { shape: [3, 4] }],
      params: {},
    },
    {
      inputs: [{ shape: [3, 1], kind: "bool", dtype: "u32" }, { shape: [4] }, { shape: [] }],
      params: {},
      label: "broadcast",
    },
  ],
});

/**
 * Selects `a` where `cond` is non-zero, else `b` (broadcasting).
 *
 * @param cond condition (any dtype; non-zero = true)
 * @param a value where true
 * @param b value where false
 * @returns the selection
 */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const ref = typeof a === "number" ? (b as Tensor) : a;
  if (typeof a === "number" && typeof b === "number") {
    throw new Error("Cannot where() two numbers: at least one branch must be a tensor");
  }
  const ta = typeof a === "number" ? scalarFor(ref, a) : a;
  const tb = typeof b === "number" ? scalarFor(ref, b) : b;
  return apply1(whereOp, [cond, ta, tb], {});
}
