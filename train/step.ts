/**
 * `makeTrainStep(lossFn, optimizer, {accumulationSteps, gradClip})`: one micro-batch of
 * training as a function of (state, batch) — `valueAndGrad` of the loss, gradient accumulation,
 * global-norm clipping on the last micro-batch of a group, then the optimizer update. Everything
 * runs inside one `scope`; the old state's tensors that the new state no longer uses are disposed,
 * so memory stays flat from step to step. Nothing is read back: the loss comes out as a tensor the
 * loop reads late (after encoding the next step on WebGPU). With `lossScale` the loss is
 * multiplied by a dynamic scale before backward (PyTorch's `GradScaler`, for the float16
 * precision): the update unscales, skips itself when a gradient overflowed and adjusts the scale,
 * all on the device (`lossScaleUpdate`).
 * @module
 */
import type { Tree } from "../nn/tree.ts";
import { dispose, leaves, mapTree, zip } from "../nn/tree.ts";
import { alias, Tensor } from "../nn/tensor.ts";
import { scope } from "../nn/scope.ts";
import { defaultBackend } from "../nn/backend/select.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { add } from "../nn/ops/binary.ts";
import { affine, mul } from "../nn/ops/arith.ts";
import { lossScaleUpdate } from "../nn/ops/loss_scale.ts";
import { scalar } from "../nn/creation.ts";
import type { Optimizer, StepHyper } from "./optim.ts";
import { clipCoefficient, clipGrads, globalNorm } from "./optim.ts";

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
  /** Dynamic loss scaling's state (absent or null without `lossScale`). */
  lossScale?: LossScaleState | null;
};

/** The dynamic loss scale a run carries (scalar f32 tensors; checkpointed with the state). */
export type LossScaleState = {
  /** The factor the loss is multiplied by before backward. */
  scale: Tensor;
  /** Updates with finite gradients since the scale last changed. */
  good: Tensor;
  /** Updates applied (skipped ones not counted): the step count of AdamW's bias corrections. */
  steps: Tensor;
};

/** Dynamic loss scaling (PyTorch `torch.cuda.amp.GradScaler`; its defaults). */
export interface LossScaleOptions {
  /** The first scale (default 2¹⁶). */
  initScale?: number;
  /** Multiplies the scale after `growthInterval` finite updates in a row (default 2). */
  growthFactor?: number;
  /** Multiplies the scale after an update whose gradients overflowed (default 0.5). */
  backoffFactor?: number;
  /** Finite updates in a row before the scale grows (default 2000). */
  growthInterval?: number;
}

/** What one call reports (tensors: read them late, then dispose them). */
export interface StepOutput<A extends Tree = Tree> {
  /** The micro-batch loss (unscaled by accumulation), scalar. */
  loss: Tensor;
  /** The loss function's aux output (null without `hasAux`). */
  aux: A | null;
  /**
   * Global gradient norm before clipping (only when this call updated and clipping is on; Inf or
   * NaN when loss scaling skipped the update).
   */
  gradNorm: Tensor | null;
  /** Whether this call ran an optimizer update. */
  updated: boolean;
  /**
   * Tokens of the whole step when they are not this process's batch (data parallel: every
   * rank's); the loop counts `batch × seqLen` of its own batch otherwise.
   */
  tokens?: number;
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
  /**
   * Dynamic loss scaling (default null: off). An update whose gradients hold an Inf or NaN is
   * skipped (params and moments unchanged, and it does not count in AdamW's bias corrections) and
   * halves the scale. Needs an optimizer that scales gradients inside its update (`adamw`).
   * `TrainState.updates` and the learning-rate schedule count every update, as MiniMind's do.
   */
  lossScale?: LossScaleOptions | null;
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
  /**
   * The first half of a call, for transforms that act between backward and the update (data
   * parallel): the micro-batch's loss, aux and gradients of `loss / accumulationSteps` (times
   * `lossScale`, the state's `lossScale.scale` under loss scaling), with nothing accumulated or
   * updated. Call it inside a `scope` (or dispose what it returns).
   */
  gradients(params: Tree, batch: B, lossScale?: Tensor | null): MicroGrads<A>;
  /**
   * The second half: adds `grads` (a tree like the params, of `loss / accumulationSteps`) to the
   * group and runs the update when the group is complete. Takes ownership of `grads`; the old
   * state's unused tensors are disposed, as by a call.
   */
  applyGradients(
    state: TrainState,
    grads: Tree,
    hyper?: StepHyper,
  ): [TrainState, { gradNorm: Tensor | null; updated: boolean }];
  /** The options in effect. */
  readonly options: Required<TrainStepOptions>;
}

/** One micro-batch's results before accumulation (see {@link TrainStep.gradients}). */
export interface MicroGrads<A extends Tree = Tree> {
  /** The micro-batch loss (unscaled), scalar. */
  loss: Tensor;
  /** The loss function's aux output (null without `hasAux`). */
  aux: A | null;
  /** Gradients of `loss / accumulationSteps`, shaped like the params. */
  grads: Tree;
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
  return [s.params, s.optState, s.grads, s.lossScale ?? null];
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
    lossScale: options.lossScale ?? null,
  };
  const ls = opts.lossScale && {
    initScale: opts.lossScale.initScale ?? 65536,
    growthFactor: opts.lossScale.growthFactor ?? 2,
    backoffFactor: opts.lossScale.backoffFactor ?? 0.5,
    growthInterval: opts.lossScale.growthInterval ?? 2000,
  };
  if (ls && !optimizer.scalesGrads) {
    throw new Error(
      "Cannot use loss scaling with this optimizer: a skipped update needs one that scales " +
        "gradients inside its update (adamw)",
    );
  }
  if (ls && !(ls.initScale > 0 && Number.isFinite(ls.initScale))) {
    throw new Error(`Cannot use loss scale ${ls.initScale}: it must be finite and > 0`);
  }
  const freshScale = (updates: number): LossScaleState => ({
    scale: scalar(ls!.initScale),
    good: scalar(0),
    steps: scalar(updates),
  });
  // a state without the loss scale this step needs (a float32 run's checkpoint) gets a fresh one
  const withScale = (s: TrainState): TrainState =>
    ls && !s.lossScale ? { ...s, lossScale: freshScale(s.updates) } : s;
  const accum = opts.accumulationSteps;
  if (!(Number.isInteger(accum) && accum >= 1)) {
    throw new Error(`Cannot use accumulationSteps ${accum}: it must be an integer ≥ 1`);
  }
  if (!(opts.gradClip >= 0)) throw new Error(`Cannot use gradClip ${opts.gradClip}: need ≥ 0`);

  // loss / accumulation_steps (× the loss scale), differentiated w.r.t. params; aux carries
  // [loss, user aux]
  const scaled = (
    params: Tree,
    input: { batch: B; lossScale: Tensor | null },
  ): [Tensor, [Tensor, Tree]] => {
    const r = lossFn(params, input.batch);
    const [loss, aux] = opts.hasAux ? (r as [Tensor, Tree]) : [r as Tensor, null];
    const l = accum === 1 ? loss : affine(loss, 1 / accum);
    return [input.lossScale ? mul(l, input.lossScale) : l, [loss, aux]];
  };
  const vg = valueAndGrad(scaled, { hasAux: true });

  // clip, then one optimizer update: the state after it (gradients consumed, group reset)
  const update = (s: TrainState, grads: Tree, hyper?: StepHyper) => {
    let g = grads;
    let norm: Tensor | null = null;
    // the step owns its state and disposes it after the update: the optimizer may write in place
    let h: StepHyper = { ...hyper, donate: true };
    let lossScale: LossScaleState | null = null;
    if (ls) {
      // unscale, clip and skip on overflow in the optimizer's kernels; the next scale
      const { scale, good, steps } = s.lossScale!;
      let coef: Tensor, scale2: Tensor, good2: Tensor, steps2: Tensor;
      [coef, norm, scale2, good2, steps2] = lossScaleUpdate(globalNorm(g), scale, good, steps, {
        maxNorm: opts.gradClip,
        growthFactor: ls.growthFactor,
        backoffFactor: ls.backoffFactor,
        growthInterval: ls.growthInterval,
      });
      h = { ...h, gradScale: coef, stepCount: steps2 };
      lossScale = { scale: scale2, good: good2, steps: steps2 };
    } else if (opts.gradClip > 0 && optimizer.scalesGrads) {
      // the optimizer scales each gradient inside its update kernel: no pass of its own
      let coef: Tensor;
      [coef, norm] = clipCoefficient(g, opts.gradClip);
      h = { ...h, gradScale: coef };
    } else if (opts.gradClip > 0) [g, norm] = clipGrads(g, opts.gradClip);
    const [params, optState] = optimizer.update(g, s.optState, s.params, h);
    const next: TrainState = {
      params,
      optState,
      grads: null,
      micro: 0,
      updates: s.updates + 1,
      lossScale,
    };
    return { next, norm };
  };

  // micro-batch gradients: the loss scaled for accumulation, differentiated
  const gradients = (params: Tree, batch: B, lossScale?: Tensor | null): MicroGrads<A> => {
    if (ls && !lossScale) {
      throw new Error("Cannot take the gradients of a loss-scaled step without the loss scale");
    }
    const [[scaledLoss, [loss, aux]], grads] = vg(params, {
      batch,
      lossScale: ls ? lossScale! : null,
    });
    if (scaledLoss !== loss) scaledLoss.dispose();
    return { loss, aux: aux as A | null, grads };
  };

  // adds a micro-batch's gradients to the group; updates when the group is complete
  const accumulate = (state: TrainState, g: Tree, hyper?: StepHyper) => {
    const grads = state.grads === null
      ? g
      : zip([state.grads, g], ([a, b]) =>
        a instanceof Tensor && b instanceof Tensor ? add(a, b) : a ?? b);
    const micro = state.micro + 1;
    if (micro < accum) {
      return { next: { ...state, grads, micro } as TrainState, norm: null, updated: false };
    }
    return { ...update(state, grads, hyper), updated: true };
  };

  const step = ((given: TrainState, batch: B, hyper?: StepHyper) => {
    const state = withScale(given);
    const [next, out] = scope(() => {
      const scale = state.lossScale?.scale ?? null;
      const { loss, aux, grads } = gradients(state.params, batch, scale);
      const r = accumulate(state, grads, hyper);
      const o: StepOutput<A> = { loss, aux: aux as A | null, gradNorm: r.norm, updated: r.updated };
      // the scale this micro-batch's loss was multiplied by, logged with the metrics
      if (ls) o.scalars = { loss_scale: alias(scale!) };
      return [r.next, o] as const;
    });
    disposeReplaced(stateTree(state), stateTree(next));
    return [next, out];
  }) as TrainStep<B, A>;

  step.gradients = gradients;

  step.applyGradients = (given: TrainState, grads: Tree, hyper?: StepHyper) => {
    const state = withScale(given);
    const r = scope(() => accumulate(state, grads, hyper));
    disposeReplaced([stateTree(state), grads], stateTree(r.next));
    return [r.next, { gradNorm: r.norm, updated: r.updated }];
  };

  step.warmup = (state: TrainState, batch: B, hyper?: StepHyper): Promise<number> => {
    const backend = defaultBackend();
    if (!backend.warmup) return Promise.resolve(0);
    // step() disposes the state it replaces: give it handles of its own on the same storages
    const own = (t: Tree) => mapTree(t, (x) => (x instanceof Tensor ? alias(x) : x));
    return backend.warmup(() =>
      scope(() => {
        const alias = {
          ...state,
          params: own(state.params),
          optState: own(state.optState),
          grads: state.grads && own(state.grads),
          lossScale: state.lossScale && (own(state.lossScale) as LossScaleState),
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
    lossScale: ls ? freshScale(0) : null,
  });

  step.flush = (given: TrainState, hyper?: StepHyper): [TrainState, Tensor | null] => {
    if (given.grads === null || given.micro === 0) return [given, null];
    const state = withScale(given);
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
