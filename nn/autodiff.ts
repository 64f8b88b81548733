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
import { Tensor } from "./tensor.ts";
import type { Tree } from "./tree.ts";
import { leaves, mapTree } from "./tree.ts";
import { fullLike, zeros } from "./creation.ts";
import { add } from "./ops/binary.ts";
import { sum } from "./ops/reduce.ts";
import { reshape } from "./ops/movement.ts";
import { cast } from "./ops/arith.ts";

/** A new handle on `x`'s storage, scoped, with no autodiff trace. */
function alias(x: Tensor): Tensor {
  return new Tensor(x.storage, x.shape, x.dtype);
}

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
 * Sweeps `tape` backwards from the seeded cotangents and returns the cotangent of every id in
 * `wanted` (null where none flowed). Releases every node's saved values.
 */
function backward(
  tape: Tape,
  seeds: Map<number, Tensor>,
  wanted: readonly number[],
): (Tensor | null)[] {
  const cts = new Map<number, Tensor>();
  const accumulate = (id: number, g: Tensor) => {
    const prev = cts.get(id);
    if (prev === undefined) cts.set(id, traced(g));
    else {
      cts.set(id, add(prev, g));
      prev.dispose();
    }
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
    out = f(...traced);
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
 * `valueAndGrad(f)(...args)` → `[value, grads]` (or `[[value, aux], grads]` with `hasAux`).
 * `value` must be a one-element float tensor; grads are trees shaped like the differentiated
 * argument(s) (null at non-float leaves). Every intermediate is freed before returning.
 *
 * @param f scalar-valued function of trees
 * @param options argnums and hasAux
 * @returns the transformed function
 * @example
 * ```ts
 * import { valueAndGrad, tensor, sum, mul } from "@minimind/ts";
 * const f = (p: { w: ReturnType<typeof tensor> }) => sum(mul(p.w, p.w));
 * const [loss, grads] = valueAndGrad(f)({ w: tensor([1, 2]) }); // grads.w = 2w
 * ```
 */
// deno-lint-ignore no-explicit-any
export function valueAndGrad<A extends any[]>(
  f: (...args: A) => Tree,
  options: GradOptions = {},
  // deno-lint-ignore no-explicit-any
): (...args: A) => [any, any] {
  const argnums = options.argnums ?? 0;
  const nums = typeof argnums === "number" ? [argnums] : [...argnums];
  // deno-lint-ignore no-explicit-any
  return (...args: A): [any, any] =>
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
        if (!options.hasAux) return [r, null];
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
      // deno-lint-ignore no-explicit-any
      return [options.hasAux ? [value, aux] : value, g] as [any, any];
    });
}

/**
 * `grad(f)(...args)` → gradient tree(s) of a scalar-valued `f` (see `valueAndGrad`).
 *
 * @param f scalar-valued function
 * @param options argnums and hasAux
 * @returns the transformed function
 */
// deno-lint-ignore no-explicit-any
export function grad<A extends any[]>(
  f: (...args: A) => Tree,
  options: GradOptions = {},
  // deno-lint-ignore no-explicit-any
): (...args: A) => any {
  const vg = valueAndGrad(f, options);
  return (...args: A) => {
    const [v, g] = vg(...args);
    const value = options.hasAux ? v[0] : v;
    (value as Tensor).dispose();
    return options.hasAux ? [g, v[1]] : g;
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
