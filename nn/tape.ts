/**
 * Autodiff recording state: the stack of active tapes and how values are marked on them. No
 * reverse sweep happens here (that is `autodiff.ts`); ops call `record` after they run.
 * @module
 */
import type { Meta } from "./op.ts";
import { isDifferentiable } from "./dtype.ts";
import { alias, metaOf } from "./tensor.ts";
import type { Tensor } from "./tensor.ts";

/** Maps output cotangents (null = none reached it) to one gradient per input (null = none). */
export type NodeVjp = (cts: (Tensor | null)[]) => (Tensor | null)[];

/** One recorded primitive application. */
export interface Node {
  /** Op name (debugging, error messages). */
  readonly name: string;
  /** Tape ids of the inputs (null where an input is not traced). */
  readonly inIds: (number | null)[];
  /** Shapes/dtypes of the inputs (gradients are reduced to these). */
  readonly inMetas: Meta[];
  /** Tape ids of the outputs (null for non-float outputs). */
  readonly outIds: (number | null)[];
  /** Shapes/dtypes of the outputs. */
  readonly outMetas: Meta[];
  /** The rule. */
  readonly vjp: NodeVjp;
  /** Drops the saved tensors. */
  readonly release: () => void;
}

/** A recording of primitive applications, swept backwards by `autodiff.ts`. */
export class Tape {
  /** Next value id. */
  nextId = 0;
  /** Recorded nodes, in execution order. */
  readonly nodes: Node[] = [];
  /** While > 0 nothing is recorded on this tape. */
  suspended = 0;
}

const stack: Tape[] = [];

/** Pushes a tape: ops on values traced by it are recorded until `popTape`. */
export function pushTape(t: Tape): void {
  stack.push(t);
}

/** Pops `t`, which must be the innermost tape. */
export function popTape(t: Tape): void {
  if (stack[stack.length - 1] !== t) throw new Error("Cannot pop a tape that is not innermost");
  stack.pop();
}

/** Tapes currently recording, outermost first. */
export function recordingTapes(): Tape[] {
  return stack.filter((t) => t.suspended === 0);
}

/** Runs `fn` with recording suspended on `tapes` (default: every tape). */
export function suspended<T>(fn: () => T, tapes: Tape[] = stack.slice()): T {
  for (const t of tapes) t.suspended++;
  try {
    return fn();
  } finally {
    for (const t of tapes) t.suspended--;
  }
}

/** Tapes from `t` inward (t and every tape pushed after it). */
export function tapesFrom(t: Tape): Tape[] {
  const i = stack.indexOf(t);
  return i < 0 ? [t] : stack.slice(i);
}

/** The id of `x` on `tape`, if traced there. */
export function idOn(x: Tensor, tape: Tape): number | undefined {
  const tr = x._tr;
  if (tr === undefined) return undefined;
  for (const e of tr) if (e.tape === tape) return e.id;
  return undefined;
}

/** Marks `x` as value `id` on `tape`. */
export function mark(x: Tensor, tape: Tape, id: number): void {
  (x._tr ??= []).push({ tape, id });
}

/** A new unscoped handle on the same storage, carrying the same traces (for saved values). */
export function retain(x: Tensor): Tensor {
  const h = alias(x, false);
  if (x._tr) h._tr = x._tr.slice();
  return h;
}

/**
 * Records one application on every recording tape that traces one of `inputs`. `save` is
 * called at most once and its tensors are retained until every tape releases the node.
 *
 * @param name op name
 * @param inputs the op's inputs
 * @param outputs the op's outputs (float outputs get ids)
 * @param make builds the rule from the retained saved tensors and which inputs need a gradient
 *   (traced on a recording tape; a rule may skip the others' gradients)
 * @param save the tensors the rule needs (retained)
 * @param noGrad output indices that are never differentiated (saved statistics)
 */
export function record(
  name: string,
  inputs: readonly Tensor[],
  outputs: readonly Tensor[],
  save: () => (Tensor | null)[],
  make: (saved: (Tensor | null)[], needs: readonly boolean[]) => NodeVjp,
  noGrad?: readonly number[],
): void {
  if (stack.length === 0) return;
  const on: { tape: Tape; inIds: (number | null)[] }[] = [];
  for (const tape of stack) {
    if (tape.suspended > 0) continue;
    let any = false;
    const inIds = inputs.map((x) => {
      const id = idOn(x, tape);
      if (id !== undefined) any = true;
      return id ?? null;
    });
    if (any) on.push({ tape, inIds });
  }
  if (on.length === 0) return;
  // mark outputs on every tape first, so saved outputs carry their traces (grad of grad)
  const outIdsPer = on.map(({ tape }) =>
    outputs.map((o, i) => {
      if (!isDifferentiable(o.dtype) || noGrad?.includes(i)) return null;
      const id = tape.nextId++;
      mark(o, tape, id);
      return id;
    })
  );
  let saved: (Tensor | null)[] | null = save().map((s) => (s ? retain(s) : null));
  const needs = inputs.map((_, i) => on.some(({ inIds }) => inIds[i] !== null));
  const vjp = make(saved, needs);
  let holders = on.length;
  const release = () => {
    if (--holders === 0 && saved) {
      for (const s of saved) s?.dispose();
      saved = null;
    }
  };
  on.forEach(({ tape, inIds }, k) => {
    tape.nodes.push({
      name,
      inIds,
      inMetas: inputs.map(metaOf),
      outIds: outIdsPer[k],
      outMetas: outputs.map(metaOf),
      vjp,
      release,
    });
  });
}
