/**
 * The contract between the training loop (`runTraining` in `loop.ts`) and what it trains. The
 * loop owns the bookkeeping — data order and resume position, the lr schedule, late loss reads,
 * metrics and log lines, checkpoints, Ctrl-C and NaN stops — and a {@link Trainer} owns one step
 * and its state. Pretraining and SFT use {@link stepTrainer} around `makeTrainStep`; a PPO, GRPO,
 * DPO or LoRA trainer writes its own `step` (e.g. rollout → loss → update) and keeps whatever it
 * needs (a critic, a frozen reference model, running statistics) in its state, which the resume
 * checkpoint saves and restores whole.
 * @module
 */
import type { Tree } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import type { LossScaleState, StepOutput, TrainState, TrainStep } from "./step.ts";

/** The hyperparameters the loop passes to each step. */
export interface LoopHyper {
  /** Learning rate of this step (MiniMind's `get_lr` schedule). */
  readonly lr: number;
}

/**
 * What `runTraining` trains. `S` is the whole state carried from one micro-batch to the next: a
 * tree whose tensor leaves the resume checkpoint stores as tensors and whose number, string and
 * boolean leaves it stores as JSON — so a critic, a reference model or a running baseline put in
 * the state survive Ctrl-C and `--from_resume 1` bit-exactly.
 *
 * @example A trainer that keeps a frozen reference model and a running baseline in its state
 * ```ts
 * import { adamw } from "./optim.ts";
 * import { makeTrainStep } from "./step.ts";
 * import type { TrainState } from "./step.ts";
 * import { savedField, stepTrainer } from "./trainer.ts";
 * import type { Trainer } from "./trainer.ts";
 * import { mapTree } from "../nn/tree.ts";
 * import type { Tree } from "../nn/tree.ts";
 * import { Tensor } from "../nn/tensor.ts";
 * import { affine, mean, square, sub } from "../nn/ops/mod.ts";
 *
 * type Batch = { y: Tensor; ref: Tree };
 * type State = { train: TrainState; ref: Tree; baseline: number };
 * // the policy's own update: any (params, batch) → loss, here pulled towards the batch
 * const inner = stepTrainer(makeTrainStep((p: Tree, b: Batch) => {
 *   const w = (p as { w: Tensor }).w;
 *   return mean(square(sub(w, b.y)));
 * }, adamw({ lr: 0.1 })));
 * // the reference model: a copy of the initial params that no update touches
 * const copy = (t: Tree) => mapTree(t, (x) => x instanceof Tensor ? affine(x, 1) : x);
 * const trainer: Trainer<State, { y: Tensor }> = {
 *   init: (params) => ({ train: inner.init(params), ref: copy(params), baseline: 0 }),
 *   restore: (saved, path) => ({
 *     train: inner.restore(savedField(saved, "train", path), path),
 *     ref: savedField(saved, "ref", path),
 *     baseline: Number(savedField(saved, "baseline", path)),
 *   }),
 *   step: (s, batch, hyper) => {
 *     const [train, out] = inner.step(s.train, { ...batch, ref: s.ref }, hyper);
 *     return [{ ...s, train, baseline: 0.9 * s.baseline + 0.1 }, out];
 *   },
 *   weights: (s) => s.train.params,
 *   updates: (s) => s.train.updates,
 * };
 * ```
 */
export interface Trainer<S extends Tree, B> {
  /** A fresh state around the initial params (takes ownership of them). */
  init(params: Tree): S;
  /**
   * The state from a resume checkpoint's tree (fresh tensors, owned by the state). Check the
   * fields ({@link savedField}) so a checkpoint of another trainer fails naming what is missing.
   */
  restore(saved: Tree, path: string): S;
  /**
   * One micro-batch: the next state and the step's report. Runs inside a `scope`; tensors of
   * `state` that the next state no longer holds must be disposed (`makeTrainStep` does), and
   * tensors the next state keeps (a frozen reference model) must be the same handles.
   */
  step(state: S, batch: B, hyper: LoopHyper): [S, StepOutput<Tensor>];
  /** Not set: the step is synchronous (see {@link AsyncTrainer}). */
  readonly async?: false;
  /** The weights the run writes (a subtree of the state). */
  weights(state: S): Tree;
  /** Optimizer updates done so far. */
  updates(state: S): number;
  /**
   * End of an epoch: apply a partial accumulation group (MiniMind HEAD does); null when nothing
   * is pending. Optional.
   */
  flush?(state: S, hyper: LoopHyper): S | null;
  /** Compiles a step's kernels before the first one (WebGPU); leaves the state untouched. */
  warmup?(state: S, batch: B, hyper: LoopHyper): Promise<number>;
}

/**
 * A {@link Trainer} whose step is asynchronous (data parallel: it waits for the other ranks), so
 * it cannot run inside a `scope`: the step disposes what it creates itself, and the loop disposes
 * the batch after it.
 */
export interface AsyncTrainer<S extends Tree, B> extends Omit<Trainer<S, B>, "step" | "async"> {
  /** Marks the asynchronous step. */
  readonly async: true;
  /** One micro-batch (see {@link Trainer.step}), resolved when every rank has done it. */
  step(state: S, batch: B, hyper: LoopHyper): Promise<[S, StepOutput<Tensor>]>;
}

/**
 * One field of a saved state tree, or an error naming the checkpoint and the field.
 *
 * @param saved the tree from the checkpoint
 * @param name the field
 * @param path the checkpoint (for the message)
 * @returns the field's subtree
 */
export function savedField(saved: Tree, name: string, path: string): Tree {
  const isFields = saved !== null && typeof saved === "object" && !Array.isArray(saved) &&
    !(saved instanceof Tensor);
  const fields = isFields ? saved as { readonly [key: string]: Tree } : null;
  if (!fields || !(name in fields)) {
    throw new Error(
      `Cannot resume from ${path}: its state has no field "${name}" (it holds ${
        fields ? Object.keys(fields).join(", ") || "nothing" : typeof saved
      }); it was written by another trainer`,
    );
  }
  return fields[name];
}

function savedNumber(saved: Tree, name: string, path: string): number {
  const v = savedField(saved, name, path);
  if (typeof v !== "number") {
    throw new Error(`Cannot resume from ${path}: its state's "${name}" is ${v}, not a number`);
  }
  return v;
}

/**
 * A {@link TrainState} from a saved tree, checking its fields.
 *
 * @param saved the tree from the checkpoint
 * @param path the checkpoint (for the message)
 * @returns the state
 */
export function asTrainState(saved: Tree, path: string): TrainState {
  return {
    params: savedField(saved, "params", path),
    optState: savedField(saved, "optState", path),
    grads: savedField(saved, "grads", path) ?? null,
    micro: savedNumber(saved, "micro", path),
    updates: savedNumber(saved, "updates", path),
    lossScale: savedLossScale(saved, path),
  };
}

/** A saved state's loss scale: float16 runs carry one; other checkpoints have none (null). */
function savedLossScale(saved: Tree, path: string): LossScaleState | null {
  const ls = (saved as { readonly [key: string]: Tree }).lossScale ?? null;
  if (ls === null) return null;
  const f = ls as { readonly [key: string]: Tree };
  if (!(f.scale instanceof Tensor && f.good instanceof Tensor && f.steps instanceof Tensor)) {
    throw new Error(
      `Cannot resume from ${path}: its "lossScale" is not {scale, good, steps} (it holds ${
        typeof ls === "object" ? Object.keys(ls).join(", ") : typeof ls
      })`,
    );
  }
  return { scale: f.scale, good: f.good, steps: f.steps };
}

/**
 * The trainer of pretraining and SFT: a `makeTrainStep` step (loss → gradients → accumulation →
 * clipping → optimizer update) over a {@link TrainState}.
 *
 * @param step the step (its loss function returns `[loss, auxLoss]` when `hasAux` is on)
 * @returns the trainer
 */
export function stepTrainer<B>(
  step: TrainStep<B, Tensor>,
): Trainer<TrainState, B> & Required<Pick<Trainer<TrainState, B>, "step">> {
  return {
    init: (params) => step.init(params),
    restore: asTrainState,
    step: (state, batch, hyper) => step(state, batch, hyper),
    weights: (state) => state.params,
    updates: (state) => state.updates,
    flush: (state, hyper) => {
      if (state.micro === 0) return null;
      const [next, norm] = step.flush(state, hyper);
      norm?.dispose();
      return next;
    },
    warmup: (state, batch, hyper) => step.warmup(state, batch, hyper),
  };
}
