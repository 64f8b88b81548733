/**
 * Elementwise binary ops with NumPy broadcasting (one row each), `affine` (a·x + b with static
 * scalars), `powScalar` and the ternary `where`. Operands must share a dtype; plain numbers are
 * accepted where a scalar makes sense.
 * @module
 */
import type { DType } from "../dtype.ts";
import { isFloat } from "../dtype.ts";
import type { Meta, NoParams, OpDef, Vjp } from "../op.ts";
import { apply1, defineOp, NONDIFF } from "../op.ts";
import { broadcastShapes, fmt, sameShape, sizeOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { full } from "../creation.ts";
import { forEachBroadcast } from "./_broadcast.ts";
import { specialize } from "./_specialize.ts";
import { cast, log, neg } from "./unary.ts";
import { broadcastWgsl, mapWgsl, wgslType } from "../backend/webgpu/wgsl.ts";

interface BinaryRow {
  name: string;
  /** Scalar function. */
  f: (a: number, b: number) => number;
  /** WGSL expression of `a` and `b`. */
  wgsl: string;
  /** Output dtype rule: same as inputs, or u32 (comparisons). */
  out: "same" | "u32";
  /** VJP (null: not differentiable). Gets the saved inputs and output. */
  grad: ((ct: Tensor, a: Tensor, b: Tensor, y: Tensor) => [Tensor | null, Tensor | null]) | null;
  /** Saves the output too. */
  saveOut?: boolean;
  /** Example kinds for (a, b). */
  kinds?: ["normal" | "positive", "normal" | "positive"];
  /** Only float dtypes. */
  floatOnly?: boolean;
}

const ROWS: BinaryRow[] = [
  // d(a+b) = da + db
  { name: "add", f: (a, b) => a + b, wgsl: "a + b", out: "same", grad: (ct) => [ct, ct] },
  // d(a-b) = da - db
  { name: "sub", f: (a, b) => a - b, wgsl: "a - b", out: "same", grad: (ct) => [ct, neg(ct)] },
  // d(ab) = b da + a db
  {
    name: "mul",
    f: (a, b) => a * b,
    wgsl: "a * b",
    out: "same",
    grad: (ct, a, b) => [mul(ct, b), mul(ct, a)],
  },
  // d(a/b) = da/b - a/b^2 db
  {
    name: "div",
    f: (a, b) => a / b,
    wgsl: "a / b",
    out: "same",
    grad: (ct, a, b) => [div(ct, b), neg(div(mul(ct, a), mul(b, b)))],
    kinds: ["normal", "positive"],
  },
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

function inferBinary(
  name: string,
  a: Meta,
  b: Meta,
  out: "same" | "u32",
  floatOnly?: boolean,
): Meta[] {
  if (a.dtype !== b.dtype) {
    throw new Error(
      `Cannot ${name} ${a.dtype} ${fmt(a.shape)} and ${b.dtype} ${fmt(b.shape)}: dtypes differ`,
    );
  }
  if (floatOnly && !isFloat(a.dtype)) {
    throw new Error(`Cannot ${name} ${a.dtype} tensors: it needs a float dtype`);
  }
  const shape = broadcastShapes(a.shape, b.shape);
  return [{ shape, dtype: out === "u32" ? "u32" : a.dtype }];
}

interface BinaryLoops {
  same(
    a: ArrayLike<number>,
    b: ArrayLike<number>,
    y: { [i: number]: number; length: number },
  ): void;
  scalarB(a: ArrayLike<number>, b: number, y: { [i: number]: number; length: number }): void;
  scalarA(a: number, b: ArrayLike<number>, y: { [i: number]: number; length: number }): void;
  strided(
    a: ArrayLike<number>,
    b: ArrayLike<number>,
    y: { [i: number]: number },
    o: number,
    n: number,
    ia: number,
    ib: number,
    da: number,
    db: number,
  ): void;
}

function loopsFor(f: (a: number, b: number) => number): BinaryLoops {
  return {
    same: specialize(
      f,
      ["a", "b", "y"],
      "for (let i = 0; i < y.length; i++) y[i] = f(a[i], b[i]);",
    ),
    scalarB: specialize(
      f,
      ["a", "b", "y"],
      "for (let i = 0; i < y.length; i++) y[i] = f(a[i], b);",
    ),
    scalarA: specialize(
      f,
      ["a", "b", "y"],
      "for (let i = 0; i < y.length; i++) y[i] = f(a, b[i]);",
    ),
    strided: specialize(
      f,
      ["a", "b", "y", "o", "n", "ia", "ib", "da", "db"],
      "for (let i = 0; i < n; i++, ia += da, ib += db) y[o + i] = f(a[ia], b[ib]);",
    ),
  };
}

function makeBinary(row: BinaryRow): OpDef<NoParams> {
  const k = loopsFor(row.f);
  const grad = row.grad;
  const vjp: Vjp<NoParams> | typeof NONDIFF = grad === null ? NONDIFF : (ct, ctx) => {
    return grad(ct[0]!, ctx.inputs[0]!, ctx.inputs[1]!, ctx.outputs[0]!);
  };
  const kinds = row.kinds ?? ["normal", "normal"];
  return defineOp<NoParams>({
    name: row.name,
    infer: ([a, b]) => inferBinary(row.name, a, b, row.out, row.floatOnly),
    writesAll: true,
    cpu: ([a, b], [y], call) => {
      const sa = call.inputs[0].shape, sb = call.inputs[1].shape, so = call.outputs[0].shape;
      if (sameShape(sa, sb)) k.same(a, b, y);
      else if (b.length === 1) k.scalarB(a, b[0], y);
      else if (a.length === 1) k.scalarA(a[0], b, y);
      else {forEachBroadcast(so, [sa, sb], (o, n, offs, st) =>
          k.strided(a, b, y, o, n, offs[0], offs[1], st[0], st[1]));}
    },
    wgsl: ({ inputs: [a, b], outputs: [y] }) => {
      const t = wgslType(a.dtype);
      return [
        broadcastWgsl(["a", "b"], [t, t], wgslType(y.dtype), row.wgsl, [a.shape, b.shape], y.shape),
      ];
    },
    vjp,
    saves: { inputs: true, outputs: !!row.saveOut },
    examples: [
      {
        inputs: [{ shape: [3, 4], kind: kinds[0] }, { shape: [3, 4], kind: kinds[1] }],
        params: {},
      },
      {
        inputs: [{ shape: [2, 3, 4], kind: kinds[0] }, { shape: [4], kind: kinds[1] }],
        params: {},
        label: "broadcast row",
      },
      {
        inputs: [{ shape: [2, 1, 4], kind: kinds[0] }, { shape: [3, 1], kind: kinds[1] }],
        params: {},
        label: "broadcast both",
      },
      {
        inputs: [{ shape: [5], kind: kinds[0] }, { shape: [], kind: kinds[1] }],
        params: {},
        label: "scalar",
      },
    ],
  });
}

/** WGSL expressions of the binary rows. */
export const BINARY_WGSL: Readonly<Record<string, string>> = Object.fromEntries(
  ROWS.map((r) => [r.name, r.wgsl]),
);

/** The binary op table, keyed by name. */
export const BINARY_OPS: Readonly<Record<string, OpDef<NoParams>>> = Object.fromEntries(
  ROWS.map((r) => [r.name, makeBinary(r)]),
);

function scalarFor(x: Tensor, v: number): Tensor {
  return full([], v, x.dtype, { backend: x.backend });
}

function bin(name: string, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number" && typeof b === "number") {
    throw new Error(`Cannot ${name} two numbers: at least one operand must be a tensor`);
  }
  const ta = typeof a === "number" ? scalarFor(b as Tensor, a) : a;
  const tb = typeof b === "number" ? scalarFor(ta, b) : b;
  return apply1(BINARY_OPS[name], [ta, tb], {});
}

/** Elementwise a + b (broadcasting). @param a left @param b right @returns a + b */
export function add(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, 1, b);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, 1, a);
  return bin("add", a, b);
}
/** Elementwise a − b (broadcasting). @param a left @param b right @returns a − b */
export function sub(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, 1, -b);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, -1, a);
  return bin("sub", a, b);
}
/** Elementwise a · b (broadcasting). @param a left @param b right @returns a · b */
export function mul(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) return affine(a, b, 0);
  if (typeof a === "number" && typeof b !== "number" && isFloat(b.dtype)) return affine(b, a, 0);
  return bin("mul", a, b);
}
/** Elementwise a / b (broadcasting). @param a left @param b right @returns a / b */
export function div(a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof b === "number" && typeof a !== "number" && isFloat(a.dtype)) {
    return affine(a, 1 / b, 0);
  }
  return bin("div", a, b);
}
/** Elementwise maximum (broadcasting). @param a left @param b right @returns max(a, b) */
export function maximum(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("maximum", a, b);
}
/** Elementwise minimum (broadcasting). @param a left @param b right @returns min(a, b) */
export function minimum(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("minimum", a, b);
}
/** Elementwise aᵇ (broadcasting; a number exponent uses `powScalar`). @param a base @param b exponent @returns a^b */
export function pow(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return powScalar(a, b);
  return bin("pow", a, b);
}
/** Elementwise a == b as u32 0/1. @param a left @param b right @returns mask */
export function equal(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("equal", a, b);
}
/** Elementwise a != b as u32 0/1. @param a left @param b right @returns mask */
export function notEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("not_equal", a, b);
}
/** Elementwise a < b as u32 0/1. @param a left @param b right @returns mask */
export function less(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("less", a, b);
}
/** Elementwise a <= b as u32 0/1. @param a left @param b right @returns mask */
export function lessEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("less_equal", a, b);
}
/** Elementwise a > b as u32 0/1. @param a left @param b right @returns mask */
export function greater(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("greater", a, b);
}
/** Elementwise a >= b as u32 0/1. @param a left @param b right @returns mask */
export function greaterEqual(a: Tensor | number, b: Tensor | number): Tensor {
  return bin("greater_equal", a, b);
}

/** Params of `affine`. */
export interface AffineParams {
  /** Scale. */
  readonly a: number;
  /** Shift. */
  readonly b: number;
}

/** a·x + b with static scalars (scaling without a scalar tensor). */
export const affineOp: OpDef<AffineParams> = defineOp<AffineParams>({
  name: "affine",
  infer: ([x]) => {
    if (!isFloat(x.dtype)) {
      throw new Error(`Cannot apply affine to a ${x.dtype} tensor: it needs a float dtype`);
    }
    return [{ shape: x.shape, dtype: x.dtype }];
  },
  writesAll: true,
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

/** Params of `powScalar`. */
export interface PowScalarParams {
  /** Exponent. */
  readonly p: number;
}

/** xᵖ with a static exponent. */
export const powScalarOp: OpDef<PowScalarParams> = defineOp<PowScalarParams>({
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
export const whereOp: OpDef<NoParams> = defineOp<NoParams>({
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

/** The dtype of a binary result (exported for backends). */
export function binaryOutDtype(name: string, dtype: DType): DType {
  return BINARY_OPS[name] &&
      ["equal", "not_equal", "less", "less_equal", "greater", "greater_equal"].includes(name)
    ? "u32"
    : dtype;
}
