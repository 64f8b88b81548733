/**
 * `makeTrainStep(lossFn, optimizer, {accumulationSteps, gradClip})`: one micro-batch of
 * training as a function of (state, batch) — `valueAndGrad` of the loss, gradient accumulation,
 * global-norm clipping on the last micro-batch of a group, then the optimizer update. Everything
 * runs inside one `scope`; the old state's tensors that the new state no longer uses are disposed,
 * so memory stays flat from step to step. Nothing is read back: the loss comes out as a tensor the
 * loop reads late (after encoding the next step on WebGPU).
 * @module
 */
import type { Tree } from "../nn/tree.ts";
import { dispose, leaves, mapTree, zip } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { scope } from "../nn/scope.ts";
import { defaultBackend } from "../nn/backend/select.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { add } from "../nn/ops/binary.ts";
import { affine } from "../nn/ops/arith.ts";
import type { Optimizer, StepHyper } from "./optim.ts";
import { clipGrads } from "./optim.ts";

/** Everything a training run carries from one micro-batch to the next (a tree: checkpointable). */
export type TrainState = {
  /** Parameter tree. */
  params: Tree;
  /** Optimizer state. */
  optState: Tree;
  /** Gradients accumulated over the current group (null at a group boundary). */
  grads: Tree | null;
  /** Micro-batches done in the current accumulation group (0 ≤ micro < accumulationSteps). */
  micro: number;
  /** Optimizer updates done. */
  updates: number;
};

/** What one call reports (tensors: read them late, then dispose them). */
export interface StepOutput<A extends Tree = Tree> {
  /** The micro-batch loss (unscaled by accumulation), scalar. */
  loss: Tensor;
  /** The loss function's aux output (null without `hasAux`). */
  aux: A | null;
  /** Global gradient norm before clipping (only when this call updated and clipping is on). */
  gradNorm: Tensor | null;
  /** Whether this call ran an optimizer update. */
  updated: boolean;
  /** More scalars to log in the metrics (a trainer's reward, KL, …); none from `makeTrainStep`. */
  scalars?: Record<string, Tensor>;
}

/**
 * Disposes a step's report (after reading it, or when a run stops before reading it).
 *
 * @param out the report
 */
export function disposeOutput(out: StepOutput): void {
  out.loss.dispose();
  dispose(out.aux);
  out.gradNorm?.dispose();
  for (const t of Object.values(out.scalars ?? {})) t.dispose();
}

/** A loss function: (params, batch) → scalar loss, or [loss, aux] with `hasAux`. */
export type LossFn<B, A extends Tree = Tree> = (params: Tree, batch: B) => Tensor | [Tensor, A];

/** Options of {@link makeTrainStep}. */
export interface TrainStepOptions {
  /** Micro-batches per update (default 1). The loss is divided by it before backward. */
  accumulationSteps?: number;
  /** Global-norm clipping bound (default 1.0, MiniMind's; 0 = off). */
  gradClip?: number;
  /** The loss function returns `[loss, aux]` (default false). */
  hasAux?: boolean;
}

/** The step function with its helpers. */
export interface TrainStep<B, A extends Tree = Tree> {
  /** One micro-batch: returns the new state (the old one's unused tensors are disposed). */
  (state: TrainState, batch: B, hyper?: StepHyper): [TrainState, StepOutput<A>];
  /** A fresh state for `params` (takes ownership of `params`). */
  init(params: Tree): TrainState;
  /**
   * Applies a partial accumulation group (MiniMind HEAD flushes it at the end of an epoch);
   * returns the state unchanged when nothing is pending.
   */
  flush(state: TrainState, hyper?: StepHyper): [TrainState, Tensor | null];
  /**
   * Start-up warm-up on backends that compile kernels (WebGPU): traces one step on `batch`
   * without running it, so pipelines are built before the first real step. The state is left
   * untouched; resolves to the number of kernels prepared (0 on CPU).
   */
  warmup(state: TrainState, batch: B, hyper?: StepHyper): Promise<number>;
  /** The options in effect. */
  readonly options: Required<TrainStepOptions>;
}

/**
 * Disposes the tensors of `old` that `next` does not hold.
 *
 * @param old the tree replaced
 * @param next the tree that replaces it
 */
export function disposeReplaced(old: Tree, next: Tree): void {
  const live = new Set(leaves(next).filter((x) => x instanceof Tensor));
  for (const t of leaves(old)) if (t instanceof Tensor && !live.has(t)) t.dispose();
}

function stateTree(s: TrainState): Tree {
  return [s.params, s.optState, s.grads];
}

/**
 * Builds the train step.
 *
 * @param lossFn (params, batch) → loss (or [loss, aux])
 * @param optimizer the update rule (e.g. `adamw()`)
 * @param options accumulation, clipping, aux
 * @returns the step function
 * @example
 * ```ts
 * import { mean, scope, square, sub, tensor } from "../mod.ts";
 * import { adamw } from "./optim.ts";
 * import { disposeOutput, makeTrainStep } from "./step.ts";
 * const loss = (p: any, b: any) => mean(square(sub(p.w, b.y)));
 * const step = makeTrainStep(loss, adamw({ lr: 0.1 }));
 * let state = step.init({ w: tensor([0, 0]) });
 * for (let i = 0; i < 10; i++) {
 *   const [next, out] = scope(() => step(state, { y: tensor([1, 2]) }));
 *   state = next;
 *   disposeOutput(out);
 * }
 * ```
 */
export function makeTrainStep<B, A extends Tree = Tree>(
  lossFn: LossFn<B, A>,
  optimizer: Optimizer,
  options: TrainStepOptions = {},
): TrainStep<B, A> {
  const opts: Required<TrainStepOptions> = {
    accumulationSteps: options.accumulationSteps ?? 1,
    gradClip: options.gradClip ?? 1.0,
    hasAux: options.hasAux ?? false,
  };
  const accum = opts.accumulationSteps;
  if (!(Number.isInteger(accum) && accum >= 1)) {
    throw new Error(`Cannot use accumulationSteps ${accum}: it must be an integer ≥ 1`);
  }
  if (!(opts.gradClip >= 0)) throw new Error(`Cannot use gradClip ${opts.gradClip}: need ≥ 0`);

  // loss / accumulation_steps, differentiated w.r.t. params; aux carries [loss, user aux]
  const scaled = (params: Tree, batch: B): [Tensor, Tree] => {
    const r = lossFn(params, batch);
    const [loss, aux] = opts.hasAux ? (r as [Tensor, Tree]) : [r as Tensor, null];
    return [accum === 1 ? loss : affine(loss, 1 / accum), [loss, aux]];
  };
  const vg = valueAndGrad(scaled, { hasAux: true });

  // clip, then one optimizer update: the state after it (gradients consumed, group reset)
  const update = (s: TrainState, grads: Tree, hyper?: StepHyper) => {
    let g = grads;
    let norm: Tensor | null = null;
    if (opts.gradClip > 0) [g, norm] = clipGrads(g, opts.gradClip);
    const [params, optState] = optimizer.update(g, s.optState, s.params, hyper);
    const next: TrainState = { params, optState, grads: null, micro: 0, updates: s.updates + 1 };
    return { next, norm };
  };

  const step = ((state: TrainState, batch: B, hyper?: StepHyper) => {
    const [next, out] = scope(() => {
      const [[scaledLoss, [loss, aux]], g] = vg(state.params, batch);
      if (scaledLoss !== loss) scaledLoss.dispose();
      const grads = state.grads === null
        ? g
        : zip([state.grads, g], ([a, b]) =>
          a instanceof Tensor && b instanceof Tensor ? add(a, b) : a ?? b);
      const micro = state.micro + 1;
      if (micro < accum) {
        const s: TrainState = { ...state, grads, micro };
        return [s, { loss, aux, gradNorm: null, updated: false }] as const;
      }
      const u = update(state, grads, hyper);
      return [u.next, { loss, aux, gradNorm: u.norm, updated: true }] as const;
    });
    disposeReplaced(stateTree(state), stateTree(next));
    return [next, out as StepOutput<A>];
  }) as TrainStep<B, A>;

  step.warmup = (state: TrainState, batch: B, hyper?: StepHyper): Promise<number> => {
    const backend = defaultBackend();
    if (!backend.warmup) return Promise.resolve(0);
    // step() disposes the state it replaces: give it handles of its own on the same storages
    const own = (t: Tree) =>
      mapTree(t, (x) => (x instanceof Tensor ? new Tensor(x.storage, x.shape, x.dtype) : x));
    return backend.warmup(() =>
      scope(() => {
        const alias = {
          ...state,
          params: own(state.params),
          optState: own(state.optState),
          grads: state.grads && own(state.grads),
        };
        step(alias, batch, hyper);
      })
    );
  };

  step.init = (params: Tree): TrainState => ({
    params,
    optState: optimizer.init(params),
    grads: null,
    micro: 0,
    updates: 0,
  });

  step.flush = (state: TrainState, hyper?: StepHyper): [TrainState, Tensor | null] => {
    if (state.grads === null || state.micro === 0) return [state, null];
    const [next, norm] = scope(() => {
      const u = update(state, state.grads!, hyper);
      return [u.next, u.norm] as const;
    });
    disposeReplaced(stateTree(state), stateTree(next));
    return [next, norm];
  };

  Object.defineProperty(step, "options", { value: opts });
  return step;
}

/**
 * Disposes every tensor of a train state.
 *
 * @param state the state
 */
export function disposeState(state: TrainState): void {
  for (const t of leaves(stateTree(state))) if (t instanceof Tensor) t.dispose();
}
