/**
 * The builders behind the elementwise ops: a unary row (scalar function, WGSL expression, VJP)
 * becomes an `OpDef`, a binary row a broadcasting `OpDef`, and `callBinary` turns number operands
 * into scalar tensors. `arith.ts`, `unary.ts` and `binary.ts` build their ops with them.
 * @module
 */
import { isFloat } from "../dtype.ts";
import type { InputSpec, KernelOp, Meta, NoParams, OpDef, Vjp } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply1 } from "../apply.ts";
import { broadcastShapes, fmt, sameShape, sizeOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import type { TypedArray } from "../dtype.ts";
import { full } from "../creation.ts";
import { forEachBroadcast } from "./_broadcast.ts";
import { specialize } from "./_specialize.ts";
import { broadcastWgsl, mapWgsl, wgslType } from "../backend/webgpu/wgsl.ts";
import { type MapKind, mapUnary } from "../backend/cpu/simd/ops.ts";

/** What a unary VJP rule gets: the saved input and output. */
export type Saved = { x: Tensor; y: Tensor };

/** One unary op: scalar function, WGSL expression, VJP, example input. */
export interface UnaryRow {
  /** Op name. */
  name: string;
  /** Scalar function (f64 math; f32 kernels round on store). */
  f: (x: number) => number;
  /** WGSL expression of `x` (a f32). */
  wgsl: string;
  /** ct → dx, or null for non-differentiable rows. */
  grad: ((ct: Tensor, s: Saved) => Tensor) | null;
  /** Which value the rule needs. */
  save: "x" | "y" | "none";
  /** Input distribution for examples. */
  kind: InputSpec["kind"];
  /** Also defined on integer dtypes. */
  ints?: boolean;
  /** The wasm SIMD kernel computing this row on f32 arrays, if any. */
  simd?: MapKind;
}

/**
 * The op of a unary row.
 *
 * @param row the row
 * @returns its op
 */
export function makeUnary(row: UnaryRow): KernelOp<NoParams> {
  const loop = specialize<(x: ArrayLike<number>, y: { [i: number]: number }) => void>(
    row.f,
    ["x", "y"],
    "for (let i = 0; i < x.length; i++) y[i] = f(x[i]);",
  );
  const grad = row.grad, simdKind = row.simd;
  const vjp: Vjp<Record<string, never>> | typeof NONDIFF = grad === null ? NONDIFF : (ct, ctx) => {
    return [grad(ct[0]!, { x: ctx.inputs[0]!, y: ctx.outputs[0]! })];
  };
  return defineOp<Record<string, never>>({
    name: row.name,
    infer: ([x]) => {
      if (!row.ints && !isFloat(x.dtype)) {
        throw new Error(`Cannot apply ${row.name} to a ${x.dtype} tensor: it needs a float dtype`);
      }
      return [{ shape: x.shape, dtype: x.dtype }];
    },
    writesAll: true,
    cpu: simdKind
      ? ([x], [y]) => {
        if (!mapUnary(simdKind, x, y)) loop(x, y);
      }
      : ([x], [y]) => loop(x, y),
    wgsl: ({ inputs: [x] }) => {
      const t = wgslType(x.dtype);
      let expr = row.wgsl;
      if (t === "u32" && row.name === "neg") expr = "0u - x";
      if (t === "u32" && row.name === "abs") expr = "x";
      return [mapWgsl(["x"], [t], t, expr, sizeOf(x.shape))];
    },
    vjp,
    saves: { inputs: row.save === "x", outputs: row.save === "y" },
    examples: [
      { inputs: [{ shape: [7], kind: row.kind }], params: {} },
      { inputs: [{ shape: [3, 5], kind: row.kind }], params: {} },
    ],
  });
}

/** One binary op: scalar function, WGSL expression, output dtype, VJP. */
export interface BinaryRow {
  /** Op name. */
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
  /**
   * A faster CPU path for same-shape inputs (native code); returns false where it does not apply
   * (then the JS loop runs). Must give the loop's bits.
   */
  cpuSame?: (a: TypedArray, b: TypedArray, y: TypedArray) => boolean;
}

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

/**
 * The broadcasting op of a binary row.
 *
 * @param row the row
 * @returns its op
 */
export function makeBinary(row: BinaryRow): KernelOp<NoParams> {
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
      if (sameShape(sa, sb)) {
        if (!row.cpuSame?.(a, b, y)) k.same(a, b, y);
      } else if (b.length === 1) k.scalarB(a, b[0], y);
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

/**
 * A scalar tensor of `x`'s dtype on `x`'s backend.
 *
 * @param x the tensor it goes with
 * @param v the value
 * @returns the scalar
 */
export function scalarFor(x: Tensor, v: number): Tensor {
  return full([], v, x.dtype, { backend: x.backend });
}

/**
 * Applies a binary op, turning a number operand into a scalar tensor.
 *
 * @param op the op
 * @param a left
 * @param b right
 * @returns op(a, b)
 */
export function callBinary(op: OpDef<NoParams>, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === "number" && typeof b === "number") {
    throw new Error(`Cannot ${op.name} two numbers: at least one operand must be a tensor`);
  }
  const ta = typeof a === "number" ? scalarFor(b as Tensor, a) : a;
  const tb = typeof b === "number" ? scalarFor(ta, b) : b;
  return apply1(op, [ta, tb], {});
}
