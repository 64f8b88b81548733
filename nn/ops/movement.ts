/**
 * Movement ops: `reshape` (a view), `transpose`, `broadcastTo`, `slice` / `pad` (each other's
 * VJP), `concat`, plus `squeeze`/`expandDims` composed from reshape.
 * @module
 */
import type { TypedArray } from "../dtype.ts";
import type { KernelOp, ViewOp } from "../op.ts";
import { defineOp } from "../op.ts";
import { apply, apply1 } from "../apply.ts";
import {
  broadcastShapes,
  fmt,
  normAxis,
  resolveReshape,
  sameShape,
  sizeOf,
  stridesOf,
} from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { forEachBroadcast } from "./_broadcast.ts";
import { broadcastStrides, gatherCopyWgsl, scatterCopyWgsl } from "../backend/webgpu/wgsl.ts";

// ---------------------------------------------------------------------------------------------
// reshape

/** Params of `reshape`. */
export interface ReshapeParams {
  /** Target shape (resolved, no -1). */
  readonly shape: readonly number[];
}

/** Reshape: a view on the same storage, no copy. */
export const reshapeOp: ViewOp<ReshapeParams, "reshape"> = defineOp<ReshapeParams, "reshape">({
  name: "reshape",
  infer: ([x], p) => [{ shape: resolveReshape(x.shape, p.shape), dtype: x.dtype }],
  view: true,
  // d reshape = reshape back
  vjp: (ct, ctx) => [reshape(ct[0]!, ctx.inMetas[0].shape)],
  saves: { inputs: false },
  examples: [{ inputs: [{ shape: [2, 6] }], params: { shape: [3, 4] } }],
});

/**
 * Reshapes without copying (one axis may be -1).
 *
 * @param x input
 * @param shape target shape
 * @returns a view with the new shape
 */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const s = resolveReshape(x.shape, shape);
  return apply1(reshapeOp, [x], { shape: s });
}

/**
 * Inserts a size-1 axis at `axis`.
 *
 * @param x input
 * @param axis position of the new axis
 * @returns a view
 */
export function expandDims(x: Tensor, axis: number): Tensor {
  const a = normAxis(axis, x.rank + 1);
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

/**
 * Removes size-1 axes (all of them, or the given ones).
 *
 * @param x input
 * @param axes axes to remove
 * @returns a view
 */
export function squeeze(x: Tensor, axes?: number | readonly number[]): Tensor {
  const list = axes === undefined
    ? x.shape.map((d, i) => (d === 1 ? i : -1)).filter((i) => i >= 0)
    : (typeof axes === "number" ? [axes] : axes).map((a) => normAxis(a, x.rank));
  for (const a of list) {
    if (x.shape[a] !== 1) {
      throw new Error(`Cannot squeeze axis ${a} of shape ${fmt(x.shape)}: its size is not 1`);
    }
  }
  return reshape(x, x.shape.filter((_, i) => !list.includes(i)));
}

// ---------------------------------------------------------------------------------------------
// transpose

/** Params of `transpose`. */
export interface TransposeParams {
  /** Output axis i is input axis perm[i]. */
  readonly perm: readonly number[];
}

/** Permutes axes (copies). */
export const transposeOp: KernelOp<TransposeParams, "transpose"> = defineOp<
  TransposeParams,
  "transpose"
>({
  name: "transpose",
  infer: ([x], { perm }) => {
    const r = x.shape.length;
    if (perm.length !== r || new Set(perm).size !== r || perm.some((p) => p < 0 || p >= r)) {
      throw new Error(
        `Cannot transpose shape ${fmt(x.shape)} with permutation [${perm.join(", ")}]`,
      );
    }
    return [{ shape: perm.map((p) => x.shape[p]), dtype: x.dtype }];
  },
  cpu: ([x], [y], { inputs, outputs, params }) => {
    const inStr = stridesOf(inputs[0].shape);
    const os = outputs[0].shape;
    const r = os.length;
    if (r === 0) {
      y[0] = x[0];
      return;
    }
    const st = params.perm.map((p) => inStr[p]); // input stride of each output axis
    const n = os[r - 1], sn = st[r - 1];
    const idx = new Array<number>(r).fill(0);
    let off = 0;
    const outer = sizeOf(os) / Math.max(1, n);
    for (let o = 0; o < outer; o++) {
      const base = o * n;
      for (let i = 0, p = off; i < n; i++, p += sn) y[base + i] = x[p];
      for (let ax = r - 2; ax >= 0; ax--) {
        idx[ax]++;
        off += st[ax];
        if (idx[ax] < os[ax]) break;
        off -= st[ax] * os[ax];
        idx[ax] = 0;
      }
    }
  },
  wgsl: ({ inputs: [x], outputs: [y], params }) => {
    const st = stridesOf(x.shape);
    return [gatherCopyWgsl(y.shape, params.perm.map((p) => st[p]))];
  },
  // d transpose = transpose by the inverse permutation
  vjp: (ct, ctx) => {
    const inv = new Array<number>(ctx.params.perm.length);
    ctx.params.perm.forEach((p, i) => (inv[p] = i));
    return [transpose(ct[0]!, inv)];
  },
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [3, 4] }], params: { perm: [1, 0] } },
    { inputs: [{ shape: [2, 3, 4, 5] }], params: { perm: [0, 2, 1, 3] }, label: "heads" },
  ],
});

/**
 * Permutes axes (default: reverse them).
 *
 * @param x input
 * @param perm output axis i takes input axis perm[i]
 * @returns the transposed copy
 */
export function transpose(x: Tensor, perm?: readonly number[]): Tensor {
  const p = perm ? perm.map((a) => normAxis(a, x.rank)) : [...x.shape.keys()].reverse();
  return apply1(transposeOp, [x], { perm: p });
}

// ---------------------------------------------------------------------------------------------
// broadcastTo

/** Params of `broadcastTo`. */
export interface BroadcastParams {
  /** Target shape. */
  readonly shape: readonly number[];
}

/** Materialises a broadcast. */
export const broadcastToOp: KernelOp<BroadcastParams, "broadcast_to"> = defineOp<
  BroadcastParams,
  "broadcast_to"
>({
  name: "broadcast_to",
  infer: ([x], { shape }) => {
    const b = broadcastShapes(x.shape, shape);
    if (!sameShape(b, shape)) {
      throw new Error(`Cannot broadcast shape ${fmt(x.shape)} to ${fmt(shape)}`);
    }
    return [{ shape: [...shape], dtype: x.dtype }];
  },
  cpu: ([x], [y], { inputs, outputs }) => {
    forEachBroadcast(outputs[0].shape, [inputs[0].shape], (o, n, offs, st) => {
      for (let i = 0, p = offs[0]; i < n; i++, p += st[0]) y[o + i] = x[p];
    });
  },
  wgsl: (
    { inputs: [x], outputs: [y] },
  ) => [gatherCopyWgsl(y.shape, broadcastStrides(x.shape, y.shape))],
  // the engine sums the cotangent back to the input shape
  vjp: (ct) => [ct[0]],
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [3, 1] }], params: { shape: [2, 3, 4] } },
    { inputs: [{ shape: [] }], params: { shape: [5] }, label: "scalar" },
  ],
});

/**
 * Broadcasts `x` to `shape` (NumPy rules), materialising the copy.
 *
 * @param x input
 * @param shape target shape
 * @returns the broadcast tensor
 */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return x;
  return apply1(broadcastToOp, [x], { shape });
}

// ---------------------------------------------------------------------------------------------
// slice / pad

/** Params of `slice`: begin (inclusive) and end (exclusive) per axis. */
export interface SliceParams {
  /** Start index per axis. */
  readonly begin: readonly number[];
  /** End index per axis (exclusive). */
  readonly end: readonly number[];
}

/** Params of `pad`: zeros before and after per axis. */
export interface PadParams {
  /** Zeros before, per axis. */
  readonly before: readonly number[];
  /** Zeros after, per axis. */
  readonly after: readonly number[];
}

/** Copies `src` (shape `small`) into/out of `big` at offset `begin`; `into` picks the direction. */
function blockCopy(
  big: TypedArray,
  bigShape: readonly number[],
  small: TypedArray,
  smallShape: readonly number[],
  begin: readonly number[],
  intoBig: boolean,
): void {
  const r = smallShape.length;
  if (r === 0) {
    if (intoBig) big[0] = small[0];
    else small[0] = big[0];
    return;
  }
  const bs = stridesOf(bigShape);
  let base = 0;
  for (let i = 0; i < r; i++) base += begin[i] * bs[i];
  // one copy per contiguous run: the block's trailing axes that span all of big's are merged into
  // the run, with the next axis in (a KV cache append copies each row's whole past at once)
  let d = r - 1, n = smallShape[d];
  while (d > 0 && smallShape[d] === bigShape[d]) n *= smallShape[--d];
  const outer = sizeOf(smallShape) / Math.max(1, n);
  const idx = new Array<number>(r).fill(0);
  let off = base;
  for (let o = 0; o < outer; o++) {
    if (intoBig) big.set(small.subarray(o * n, o * n + n), off);
    else small.set(big.subarray(off, off + n), o * n);
    for (let ax = d - 1; ax >= 0; ax--) {
      idx[ax]++;
      off += bs[ax];
      if (idx[ax] < smallShape[ax]) break;
      off -= bs[ax] * smallShape[ax];
      idx[ax] = 0;
    }
  }
}

/** Takes a contiguous block. */
export const sliceOp: KernelOp<SliceParams, "slice"> = defineOp<SliceParams, "slice">({
  name: "slice",
  infer: ([x], { begin, end }) => {
    const r = x.shape.length;
    if (begin.length !== r || end.length !== r) {
      throw new Error(
        `Cannot slice shape ${fmt(x.shape)} with begin [${begin}] and end [${end}]: ranks differ`,
      );
    }
    for (let i = 0; i < r; i++) {
      if (begin[i] < 0 || end[i] > x.shape[i] || begin[i] > end[i]) {
        throw new Error(
          `Cannot slice axis ${i} of shape ${fmt(x.shape)} from ${begin[i]} to ${end[i]}`,
        );
      }
    }
    return [{ shape: begin.map((b, i) => end[i] - b), dtype: x.dtype }];
  },
  writesAll: true,
  cpu: ([x], [y], { inputs, outputs, params }) =>
    blockCopy(x, inputs[0].shape, y, outputs[0].shape, params.begin, false),
  wgsl: ({ inputs: [x], outputs: [y], params }) => {
    const st = stridesOf(x.shape);
    const base = params.begin.reduce((acc, b, i) => acc + b * st[i], 0);
    return [gatherCopyWgsl(y.shape, st, base)];
  },
  // d slice = pad with zeros back to the input shape
  vjp: (ct, ctx) => [
    pad(ct[0]!, ctx.params.begin, ctx.inMetas[0].shape.map((d, i) => d - ctx.params.end[i])),
  ],
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [5, 6] }], params: { begin: [1, 2], end: [4, 6] } },
    {
      inputs: [{ shape: [2, 7, 3] }],
      params: { begin: [0, 3, 0], end: [2, 4, 3] },
      label: "one row",
    },
  ],
});

/** Pads with zeros. */
export const padOp: KernelOp<PadParams, "pad"> = defineOp<PadParams, "pad">({
  name: "pad",
  infer: ([x], { before, after }) => {
    if (before.length !== x.shape.length || after.length !== x.shape.length) {
      throw new Error(
        `Cannot pad shape ${fmt(x.shape)} with [${before}] / [${after}]: ranks differ`,
      );
    }
    return [{ shape: x.shape.map((d, i) => d + before[i] + after[i]), dtype: x.dtype }];
  },
  cpu: ([x], [y], { inputs, outputs, params }) =>
    blockCopy(y, outputs[0].shape, x, inputs[0].shape, params.before, true),
  wgsl: ({ inputs: [x], outputs: [y], params }) => {
    const st = stridesOf(y.shape);
    const base = params.before.reduce((acc, b, i) => acc + b * st[i], 0);
    return { kernels: [scatterCopyWgsl(x.shape, st, base)], zero: [0] };
  },
  // d pad = slice out the original block
  vjp: (ct, ctx) => {
    const b = ctx.params.before;
    return [slice(ct[0]!, b, b.map((v, i) => v + ctx.inMetas[0].shape[i]))];
  },
  saves: { inputs: false },
  examples: [{ inputs: [{ shape: [3, 4] }], params: { before: [1, 0], after: [2, 3] } }],
});

/**
 * Takes `x[begin:end]` on every axis (step 1). Missing trailing axes are taken whole; negative
 * indices count from the end.
 *
 * @param x input
 * @param begin start per axis
 * @param end exclusive end per axis
 * @returns the block (a copy)
 */
export function slice(x: Tensor, begin: readonly number[], end?: readonly number[]): Tensor {
  const r = x.rank;
  const b = x.shape.map((d, i) => {
    const v = begin[i] ?? 0;
    return v < 0 ? v + d : v;
  });
  const e = x.shape.map((d, i) => {
    const v = end?.[i] ?? d;
    return v < 0 ? v + d : v;
  });
  if (begin.length > r) {
    throw new Error(`Cannot slice shape ${fmt(x.shape)} with ${begin.length} begin indices`);
  }
  if (b.every((v) => v === 0) && e.every((v, i) => v === x.shape[i])) return x;
  return apply1(sliceOp, [x], { begin: b, end: e });
}

/**
 * Takes `[start, end)` along one axis.
 *
 * @param x input
 * @param axis the axis
 * @param start first index
 * @param end exclusive end
 * @returns the block
 */
export function sliceAxis(x: Tensor, axis: number, start: number, end: number): Tensor {
  const a = normAxis(axis, x.rank);
  const b = x.shape.map((_, i) => (i === a ? start : 0));
  const e = x.shape.map((d, i) => (i === a ? end : d));
  return slice(x, b, e);
}

/**
 * Pads with zeros.
 *
 * @param x input
 * @param before zeros before, per axis
 * @param after zeros after, per axis
 * @returns the padded tensor
 */
export function pad(x: Tensor, before: readonly number[], after: readonly number[]): Tensor {
  return apply1(padOp, [x], { before, after });
}

// ---------------------------------------------------------------------------------------------
// concat

/** Params of `concat`. */
export interface ConcatParams {
  /** The axis joined along. */
  readonly axis: number;
}

/** Joins tensors along an axis. */
export const concatOp: KernelOp<ConcatParams, "concat"> = defineOp<ConcatParams, "concat">({
  name: "concat",
  infer: (xs, { axis }) => {
    const s0 = xs[0].shape;
    let total = 0;
    for (const x of xs) {
      if (
        x.dtype !== xs[0].dtype || x.shape.length !== s0.length ||
        x.shape.some((d, i) => i !== axis && d !== s0[i])
      ) {
        throw new Error(
          `Cannot concat ${
            xs.map((m) => `${m.dtype} ${fmt(m.shape)}`).join(", ")
          } along axis ${axis}`,
        );
      }
      total += x.shape[axis];
    }
    const shape = [...s0];
    shape[axis] = total;
    return [{ shape, dtype: xs[0].dtype }];
  },
  writesAll: true, // the inputs tile the output along the axis
  // with only size-1 axes before the axis, input 0 is the output's prefix (a step appended to the
  // time-major KV cache): the CPU backend may extend its array in place
  extendsInput: ({ axis }, xs) => xs[0].shape.slice(0, axis).every((d) => d === 1) ? 0 : null,
  cpu: (xs, [y], { inputs, outputs, params }) => {
    let at = 0;
    const begin = outputs[0].shape.map(() => 0);
    // an output that extends input 0's array in place already begins with its values
    const extended = y.buffer === xs[0].buffer && y.byteOffset === xs[0].byteOffset;
    for (let k = 0; k < xs.length; k++) {
      begin[params.axis] = at;
      if (k > 0 || !extended) blockCopy(y, outputs[0].shape, xs[k], inputs[k].shape, begin, true);
      at += inputs[k].shape[params.axis];
    }
  },
  // one block copy per input, bound as (input k, output)
  wgsl: ({ inputs, outputs: [y], params }) => {
    const st = stridesOf(y.shape);
    let at = 0;
    return inputs.map((m, k) => {
      const kern = {
        ...scatterCopyWgsl(m.shape, st, at * st[params.axis]),
        bindings: [k, inputs.length],
      };
      at += m.shape[params.axis];
      return kern;
    });
  },
  // d concat = the slices of ct
  vjp: (ct, ctx) => {
    let at = 0;
    return ctx.inMetas.map((m) => {
      const a = ctx.params.axis;
      const g = sliceAxis(ct[0]!, a, at, at + m.shape[a]);
      at += m.shape[a];
      return g;
    });
  },
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [2, 3] }, { shape: [2, 4] }], params: { axis: 1 } },
    {
      inputs: [{ shape: [1, 3] }, { shape: [2, 3] }, { shape: [3, 3] }],
      params: { axis: 0 },
      label: "three",
    },
  ],
});

/**
 * Joins tensors along `axis`.
 *
 * @param xs tensors with equal shapes except on `axis`
 * @param axis the axis (default 0)
 * @returns the joined tensor
 */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error("Cannot concat an empty list of tensors");
  if (xs.length === 1) return xs[0];
  return apply(concatOp, xs, { axis: normAxis(axis, xs[0].rank) })[0];
}

/**
 * Stacks tensors of equal shape along a new axis.
 *
 * @param xs tensors of equal shape
 * @param axis position of the new axis (default 0)
 * @returns the stacked tensor
 */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  if (xs.length === 0) throw new Error("Cannot stack an empty list of tensors");
  const a = normAxis(axis, xs[0].rank + 1);
  return concat(xs.map((x) => expandDims(x, a)), a);
}
