/**
 * Reverse-mode autodiff over the tape: `vjp`, `grad`, `valueAndGrad`, `stopGradient`,
 * `customVjp`, `checkpoint`. The engine — not the rules — sums the gradients of reused values
 * and reduces broadcast gradients to the input shape. It never names a specific op.
 * @module
 */
import { isFloat } from "./dtype.ts";
import type { Meta } from "./op.ts";
import { fmt, sameShape } from "./shape.ts";
import { scope } from "./scope.ts";
import type { Node, NodeVjp } from "./tape.ts";
import { idOn, mark, popTape, pushTape, record, suspended, Tape, tapesFrom } from "./tape.ts";
import { alias, Tensor } from "./tensor.ts";
import type { Tree } from "./tree.ts";
import { leaves, mapTree } from "./tree.ts";
import { fullLike, zeros } from "./creation.ts";
import { accumulateOp, add } from "./ops/binary.ts";
import { apply1 } from "./apply.ts";
import { sum } from "./ops/reduce.ts";
import { reshape } from "./ops/movement.ts";
import { cast } from "./ops/arith.ts";

/** A new scoped handle on `x`'s storage that keeps its traces (gradients stay differentiable). */
function traced(x: Tensor): Tensor {
  const h = alias(x);
  if (x._tr) h._tr = x._tr.slice();
  return h;
}

/** Sums `g` down to `m.shape` (undoing broadcasting) and matches the dtype. */
function reduceTo(g: Tensor, m: Meta, name: string): Tensor {
  if (sameShape(g.shape, m.shape)) return g.dtype === m.dtype ? g : cast(g, m.dtype);
  const lead = g.rank - m.shape.length;
  if (lead < 0) {
    throw new Error(
      `Cannot reduce gradient ${fmt(g.shape)} of ${name} to input shape ${fmt(m.shape)}`,
    );
  }
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead) axes.push(i);
    else if (m.shape[i - lead] === 1 && g.shape[i] !== 1) axes.push(i);
    else if (m.shape[i - lead] !== g.shape[i]) {
      throw new Error(
        `Cannot reduce gradient ${fmt(g.shape)} of ${name} to input shape ${fmt(m.shape)}`,
      );
    }
  }
  const r = reshape(sum(g, axes, true), m.shape);
  return r.dtype === m.dtype ? r : cast(r, m.dtype);
}

/**
 * prev + g, for a cotangent `prev` about to be dropped: written into prev's storage (the CPU
 * backend's in-place `accumulate`) when prev's is the only handle to it and neither is traced (no
 * outer `grad` records this sum), so the sum needs no new array; else a new `add`.
 */
function sumInto(prev: Tensor, g: Tensor): Tensor {
  const alone = prev.storage.refs === 1 && prev.storage !== g.storage;
  const untraced = !prev._tr?.length && !g._tr?.length;
  return alone && untraced && prev.dtype === g.dtype && isFloat(prev.dtype) &&
      sameShape(prev.shape, g.shape)
    ? apply1(accumulateOp, [prev, g], { into: true })
    : add(prev, g);
}

/**
 * Sweeps `tape` backwards from the seeded cotangents and returns the cotangent of every id in
 * `wanted` (null where none flowed). Releases every node's saved values.
 */
function backward(
  tape: Tape,
  seeds: Map<number, Tensor>,
  wanted: readonly number[],
): (Tensor | null)[] {
  const cts = new Map<number, Tensor>();
  /** Cotangents made while processing the current node (kept past its scope). */
  let made: Tensor[] = [];
  const accumulate = (id: number, g: Tensor) => {
    const prev = cts.get(id);
    const next = prev === undefined ? traced(g) : sumInto(prev, g);
    cts.set(id, next);
    made.push(next);
    prev?.dispose();
  };
  for (const [id, g] of seeds) accumulate(id, g);
  const keepIds = new Set(wanted);
  const nodes = tape.nodes;
  suspended(() => {
    for (let n = nodes.length - 1; n >= 0; n--) {
      const node: Node = nodes[n];
      const outCts = node.outIds.map((id) => (id === null ? null : cts.get(id) ?? null));
      if (outCts.every((c) => c === null)) {
        node.release();
        continue;
      }
      // the rule's temporaries (and the unreduced gradients) die with this node's scope; the
      // accumulated cotangents it made are returned, so they live on
      made = [];
      scope(() => {
        const grads = node.vjp(outCts);
        if (grads.length !== node.inIds.length) {
          throw new Error(
            `VJP of ${node.name} returned ${grads.length} gradients for ${node.inIds.length} inputs`,
          );
        }
        for (let i = 0; i < grads.length; i++) {
          const id = node.inIds[i], g = grads[i];
          if (id === null || g === null) continue;
          accumulate(id, reduceTo(g, node.inMetas[i], node.name));
        }
        return made;
      });
      for (const id of node.outIds) {
        if (id === null || keepIds.has(id)) continue;
        const c = cts.get(id);
        if (c) {
          c.dispose();
          cts.delete(id);
        }
      }
      node.release();
    }
  }, tapesFrom(tape));
  nodes.length = 0;
  const out = wanted.map((id) => cts.get(id) ?? null);
  for (const [id, c] of cts) if (!keepIds.has(id)) c.dispose();
  return out;
}

/** Wraps the float tensor leaves of `tree` as traced values on `tape`; returns the new tree and ids. */
function traceTree(tree: Tree, tape: Tape, ids: (number | null)[]): Tree {
  return mapTree(tree, (x) => {
    if (!(x instanceof Tensor) || !isFloat(x.dtype)) {
      ids.push(null);
      return x;
    }
    const h = alias(x);
    if (x._tr) h._tr = x._tr.slice();
    const id = tape.nextId++;
    mark(h, tape, id);
    ids.push(id);
    return h;
  });
}

/** Removes `tape`'s marks from every tensor in `value`. */
function untrace(value: unknown, tape: Tape): void {
  for (const t of leaves(value as Tree)) {
    if (t instanceof Tensor && t._tr) {
      t._tr = t._tr.filter((e) => e.tape !== tape);
      if (t._tr.length === 0) t._tr = undefined;
    }
  }
}

/** Gradient trees aligned with the traced argument trees (zeros where nothing flowed). */
function gradTrees(
  args: readonly Tree[],
  ids: readonly (number | null)[][],
  gs: (Tensor | null)[],
): Tree[] {
  let k = 0;
  return args.map((a, ai) => {
    let j = 0;
    return mapTree(a, (x) => {
      const id = ids[ai][j++];
      if (id === null) return null;
      const g = gs[k++];
      return g ??
        zeros((x as Tensor).shape, (x as Tensor).dtype, { backend: (x as Tensor).backend });
    });
  });
}

/** The backward function returned by `vjp`. Call it once; `dispose()` drops it without calling. */
export interface VjpFn {
  /** Pulls cotangents (a tree shaped like the output) back to one gradient tree per primal. */
  (ct: Tree): Tree[];
  /** Releases the saved values without running backward. */
  dispose(): void;
}

/**
 * Runs `f(...primals)` recording a tape and returns the output with a function that pulls
 * cotangents back to the primals.
 *
 * @param f the function (trees of tensors in, a tree of tensors out)
 * @param primals the arguments
 * @returns `[output, vjpFn]`
 * @example
 * ```ts
 * import { vjp, tensor, mul, ones } from "@minimind/ts";
 * const x = tensor([1, 2, 3]);
 * const [y, back] = vjp((a) => mul(a, a), x);
 * const [dx] = back(ones([3])); // 2x
 * ```
 */
export function vjp<A extends Tree[], R extends Tree>(
  f: (...args: A) => R,
  ...primals: A
): [R, VjpFn] {
  const tape = new Tape();
  const ids: (number | null)[][] = [];
  const traced = primals.map((p) => {
    const list: (number | null)[] = [];
    ids.push(list);
    return traceTree(p, tape, list);
  }) as A;
  pushTape(tape);
  let out: R;
  try {
    // the forward's intermediate handles die here: what backward needs, the tape holds, and
    // releases node by node as the sweep passes it, so activations are freed at their last use
    out = scope(() => f(...traced));
  } finally {
    popTape(tape);
  }
  const outLeaves = leaves(out);
  const outIds = outLeaves.map((t) => (t instanceof Tensor ? idOn(t, tape) ?? null : null));
  untrace(out, tape);
  let done = false;
  const release = () => {
    for (const n of tape.nodes) n.release();
    tape.nodes.length = 0;
    done = true;
  };
  const back = ((ct: Tree): Tree[] => {
    if (done) throw new Error("Cannot call a vjp function twice: its saved values were released");
    done = true;
    const ctLeaves = leaves(ct);
    if (ctLeaves.length !== outLeaves.length) {
      throw new Error(
        `Cannot pull back ${ctLeaves.length} cotangents through ${outLeaves.length} outputs`,
      );
    }
    const seeds = new Map<number, Tensor>();
    const extra: Tensor[] = [];
    ctLeaves.forEach((c, i) => {
      const id = outIds[i];
      if (id === null || !(c instanceof Tensor)) return;
      const prev = seeds.get(id);
      if (prev) {
        const s = add(prev, c);
        extra.push(s);
        seeds.set(id, s);
      } else seeds.set(id, c);
    });
    const wanted = ids.flat().filter((i): i is number => i !== null);
    const gs = backward(tape, seeds, wanted);
    for (const e of extra) e.dispose();
    return gradTrees(primals, ids, gs);
  }) as VjpFn;
  back.dispose = release;
  return [out, back];
}

/** Options of `grad` / `valueAndGrad`. */
export interface GradOptions {
  /** Which positional argument(s) to differentiate (default 0). */
  argnums?: number | readonly number[];
  /** `f` returns `[value, aux]`; aux is passed through. */
  hasAux?: boolean;
}

/**
 * The gradient of a value of type `T`: the same tree with a tensor at every tensor leaf (null at
 * run time where the leaf is not a float tensor) and null at non-tensor leaves.
 */
export type GradOf<T> = [Tree] extends [T] ? Tree // an untyped tree: its gradient is a tree
  : T extends Tensor ? Tensor
  : T extends readonly unknown[] | object ? GradTree<T>
  : null;

/** {@link GradOf} through an array, tuple or object (a homomorphic map keeps tuples tuples). */
export type GradTree<T> = { -readonly [K in keyof T]: GradOf<T[K]> };

/** The gradients at argument positions `I` of arguments `A`. */
export type GradsAt<A extends readonly unknown[], I> = {
  -readonly [K in keyof I]: I[K] extends number ? GradOf<A[I[K]]> : never;
};

/** The gradients `valueAndGrad` returns for arguments `A` under options `O`. */
export type GradsOf<A extends readonly unknown[], O extends GradOptions> = O["argnums"] extends
  number ? GradOf<A[O["argnums"]]>
  : O["argnums"] extends readonly number[] ? GradsAt<A, O["argnums"]>
  : GradOf<A[0]>;

/** The aux output of `f`'s result `R` under options `O` (never without `hasAux`). */
export type AuxOf<R, O extends GradOptions> = O["hasAux"] extends true
  ? R extends readonly [unknown, infer X] ? X : never
  : never;

/**
 * `valueAndGrad(f)(...args)` → `[value, grads]` (or `[[value, aux], grads]` with `hasAux`).
 * `value` must be a one-element float tensor; grads are trees shaped like the differentiated
 * argument(s) (see {@link GradOf}). Every intermediate is freed before returning. The types
 * follow `argnums`: a number gives that argument's gradient, a tuple a tuple of gradients.
 *
 * @param f scalar-valued function of trees (returning `[value, aux] as const` with `hasAux`)
 * @param options argnums and hasAux
 * @returns the transformed function
 * @example
 * ```ts
 * import { valueAndGrad, tensor, sum, mul } from "@minimind/ts";
 * import type { Tensor } from "@minimind/ts";
 * const f = (p: { w: Tensor }) => sum(mul(p.w, p.w));
 * const [loss, grads] = valueAndGrad(f)({ w: tensor([1, 2]) });
 * grads.w; // a Tensor: 2w
 * const g = (a: Tensor, b: Tensor) => sum(mul(a, b));
 * const [, [da, db]] = valueAndGrad(g, { argnums: [0, 1] })(tensor([1, 2]), tensor([3, 4]));
 * ```
 */
export function valueAndGrad<
  A extends unknown[],
  const R extends Tree,
  const O extends GradOptions = Record<never, never>,
>(f: (...args: A) => R, options?: O): (...args: A) => [R, GradsOf<A, O>] {
  const opts: GradOptions = options ?? {};
  const argnums = opts.argnums ?? 0;
  const nums = typeof argnums === "number" ? [argnums] : [...argnums];
  return (...args: A): [R, GradsOf<A, O>] =>
    scope(() => {
      for (const i of nums) {
        if (i < 0 || i >= args.length) {
          throw new Error(`Cannot differentiate argument ${i} of ${args.length}`);
        }
      }
      const inner = (...xs: Tree[]): Tree => {
        const all = [...args] as Tree[];
        nums.forEach((i, k) => (all[i] = xs[k]));
        const r = f(...(all as A));
        if (!opts.hasAux) return [r, null];
        if (!Array.isArray(r) || r.length !== 2) {
          throw new Error("Cannot use hasAux: the function must return [value, aux]");
        }
        return [r[0], r[1]];
      };
      const [out, back] = vjp(inner, ...nums.map((i) => args[i] as Tree));
      const [value, aux] = out as [Tree, Tree];
      if (!(value instanceof Tensor) || value.size !== 1 || !isFloat(value.dtype)) {
        back.dispose();
        const d = value instanceof Tensor ? `${value.dtype} ${fmt(value.shape)}` : typeof value;
        throw new Error(
          `Cannot take the gradient of a non-scalar output (${d}): f must return a one-element float tensor`,
        );
      }
      const grads = back([fullLike(value, 1), mapTree(aux, () => null)]);
      const g = typeof argnums === "number" ? grads[0] : grads;
      // the trees built here have the shapes the signature names
      const result = opts.hasAux ? [value, aux] : value;
      return [result as R, g as GradsOf<A, O>];
    });
}

/**
 * `grad(f)(...args)` → gradient tree(s) of a scalar-valued `f` (see `valueAndGrad`), or
 * `[grads, aux]` with `hasAux`.
 *
 * @param f scalar-valued function
 * @param options argnums and hasAux
 * @returns the transformed function
 * @example
 * ```ts
 * import { grad, mul, sum, tensor } from "@minimind/ts";
 * import type { Tensor } from "@minimind/ts";
 * const dx = grad((x: Tensor) => sum(mul(x, x)))(tensor([1, 2])); // 2x
 * ```
 */
export function grad<
  A extends unknown[],
  const R extends Tree,
  const O extends GradOptions = Record<never, never>,
>(
  f: (...args: A) => R,
  options?: O,
): (...args: A) => O["hasAux"] extends true ? [GradsOf<A, O>, AuxOf<R, O>] : GradsOf<A, O> {
  const vg = valueAndGrad(f, options);
  const hasAux = options?.hasAux ?? false;
  return (...args: A) => {
    const [v, g] = vg(...args);
    const [value, aux] = hasAux ? (v as readonly [Tensor, AuxOf<R, O>]) : [v as Tensor, null];
    value.dispose();
    const out = hasAux ? [g, aux] : g;
    return out as O["hasAux"] extends true ? [GradsOf<A, O>, AuxOf<R, O>] : GradsOf<A, O>;
  };
}

/**
 * The same values with no gradient flowing back (a new handle, no copy).
 *
 * @param x a tensor
 * @returns an untraced handle on the same storage
 */
export function stopGradient(x: Tensor): Tensor {
  return alias(x);
}

/**
 * Defines a function with a hand-written backward. `fwd` returns the output and the residuals the
 * backward needs; `bwd(residuals, cts)` returns one gradient per input (null for none). First
 * order only: the backward itself is not differentiated.
 *
 * @param fwd forward: tensors in, `[outputs, residuals]` out
 * @param bwd backward: residuals and one cotangent per output (null where none) → input grads
 * @returns the differentiable function
 */
export function customVjp(
  fwd: (...xs: Tensor[]) => [Tensor[], Tensor[]],
  bwd: (residuals: readonly Tensor[], cts: readonly (Tensor | null)[]) => (Tensor | null)[],
): (...xs: Tensor[]) => Tensor[] {
  return (...xs: Tensor[]) => {
    const [outs, res] = suspended(() => fwd(...xs));
    record("custom_vjp", xs, outs, () => res, (saved) => (cts) => bwd(saved as Tensor[], cts));
    return outs;
  };
}

/**
 * Rematerialisation: the outputs of `f` are recorded as one node that saves only the inputs and
 * re-runs `f` under `vjp` during backward (memory for compute).
 *
 * @param f function of trees returning a tree of tensors
 * @returns the same function, checkpointed
 */
export function checkpoint<A extends Tree[], R extends Tree>(
  f: (...args: A) => R,
): (...args: A) => R {
  return (...args: A) => {
    const ins = leaves(args as Tree).filter((x): x is Tensor => x instanceof Tensor);
    const out = suspended(() => f(...args));
    const outs = leaves(out).filter((x): x is Tensor => x instanceof Tensor);
    const rule = (saved: (Tensor | null)[]): NodeVjp => (cts) => {
      let k = 0;
      const rebuilt = mapTree(
        args as Tree,
        (x) => (x instanceof Tensor ? saved[k++] : x),
      ) as Tree[];
      const [out2, back] = vjp(f as unknown as (...a: Tree[]) => Tree, ...rebuilt);
      const o2 = leaves(out2).filter((x): x is Tensor => x instanceof Tensor);
      let j = 0;
      const ctTree = mapTree(out2, (x) => (x instanceof Tensor ? cts[j++] : null));
      const gs = back(ctTree);
      for (const t of o2) t.dispose();
      const flat = leaves(gs as Tree);
      const out: (Tensor | null)[] = [];
      leaves(args as Tree).forEach((x, i) => {
        if (x instanceof Tensor) out.push((flat[i] as Tensor | null) ?? null);
      });
      return out;
    };
    record("checkpoint", ins, outs, () => ins, rule);
    return out;
  };
}
