/**
 * `dataParallel(step, comm)`: the data-parallel transform over a {@link TrainStep}. Every rank
 * runs the same program on its own shard of the global batch:
 *
 * 1. local gradients of the shard's loss (`step.gradients`);
 * 2. one all-reduce per step of a single f32 bucket holding every gradient scaled by the shard's
 *    weight `w` (e.g. its count of target tokens), followed by `w`, `w·loss`, `w·aux` and the
 *    shard's token count;
 * 3. the bucket divided by `W = Σw` is the gradient of the global batch's loss — exactly the one
 *    process on the whole batch computes, up to f32 summation order — and `step.applyGradients`
 *    accumulates it and updates, identically on every rank.
 *
 * Weights make shards with different numbers of target tokens (ragged text, padding) average
 * like the one-process token mean; with the default weight 1 it is DDP's plain mean of the ranks'
 * gradients. A rank whose shard is empty passes `null` (weight 0) and still takes part.
 *
 * Since the gradients are reduced every micro-batch (as MiniMind's DDP does: no `no_sync`), all
 * ranks hold the same state at every step and rank 0's checkpoint is everyone's.
 *
 * Overlap with backward: none. `valueAndGrad` hands back all gradients when backward ends, and on
 * the CPU backend backward is one synchronous JS call during which nothing could drive Open MPI
 * (it progresses a nonblocking collective only inside MPI calls on this thread); on WebGPU the
 * gradients must be read back to the host first, after the step's commands finish. So the bucket
 * is reduced right after backward, in one collective.
 * @module
 */
import type { Tree } from "../../nn/tree.ts";
import { leaves, mapTree } from "../../nn/tree.ts";
import { Tensor } from "../../nn/tensor.ts";
import { tensor } from "../../nn/creation.ts";
import type { Backend } from "../../nn/backend/backend.ts";
import { scope } from "../../nn/scope.ts";
import type { StepHyper } from "../optim.ts";
import type { StepOutput, TrainState, TrainStep } from "../step.ts";
import type { Communicator } from "./comm.ts";
import type { AsyncTrainer } from "../trainer.ts";
import { stepTrainer } from "../trainer.ts";

/** Options of {@link dataParallel}. */
export interface DataParallelOptions<B> {
  /**
   * The shard's weight in the global mean: for a token-mean loss the number of target tokens,
   * so that N ranks reproduce one process on the N shards together. Default 1 (DDP's mean).
   */
  weight?: (batch: B) => number;
  /** The shard's token count; the step then reports the tokens of all ranks in `out.tokens`. */
  tokens?: (batch: B) => number;
}

/** What a data-parallel call reports: the step's output, for the global batch. */
export interface DataParallelOutput<A extends Tree = Tree> extends StepOutput<A> {
  /** Σ of the ranks' weights. */
  weight: number;
  /** Milliseconds this call spent in the all-reduce (waiting for other ranks included). */
  reduceMs: number;
  /** Of `reduceMs`, the wait for the other ranks to arrive (when the communicator tells). */
  waitMs?: number;
}

/** The data-parallel step. */
export interface DataParallelStep<B, A extends Tree = Tree> {
  /**
   * One micro-batch of the global batch: this rank's shard (or `null` when it is empty). Returns
   * the new state (the same on every rank) and the global batch's loss and aux.
   */
  (
    state: TrainState,
    batch: B | null,
    hyper?: StepHyper,
  ): Promise<[TrainState, DataParallelOutput<A>]>;
  /** A fresh state for rank 0's `params` (broadcast to all; takes ownership of `params`). */
  init(params: Tree): Promise<TrainState>;
  /** Applies a partial accumulation group (the gradients are already reduced). */
  flush(state: TrainState, hyper?: StepHyper): [TrainState, Tensor | null];
  /** Compiles the step's GPU kernels on this rank's shard (see `TrainStep.warmup`). */
  warmup(state: TrainState, batch: B | null, hyper?: StepHyper): Promise<number>;
  /** The communicator. */
  readonly comm: Communicator;
  /** The wrapped step. */
  readonly step: TrainStep<B, A>;
}

/** The f32 tensors of a param tree in tree order, with their total size. */
function layout(params: Tree): { tensors: Tensor[]; total: number } {
  const tensors = leaves(params).filter((x): x is Tensor => x instanceof Tensor);
  if (tensors.length === 0) throw new Error("Cannot run data parallel: the params hold no tensors");
  let total = 0;
  for (const t of tensors) {
    if (t.dtype !== "f32") {
      throw new Error(
        `Cannot run data parallel on a ${t.dtype} parameter of shape [${t.shape}]: only f32`,
      );
    }
    total += t.size;
  }
  return { tensors, total };
}

/** A tree like `like` whose tensors are copies of consecutive slices of `flat`, times `scale`. */
function unflattenLike(like: Tree, flat: Float32Array, scale = 1): Tree {
  let off = 0;
  return mapTree(like, (x) => {
    if (!(x instanceof Tensor)) return x;
    const part = flat.slice(off, off + x.size);
    off += x.size;
    if (scale !== 1) { for (let i = 0; i < part.length; i++) part[i] *= scale; }
    return tensor(part, x.shape, "f32", { backend: x.backend }); // the rank's device
  });
}

/** FNV-1a of a string: a cheap fingerprint to compare the ranks' param layouts. */
function fingerprint(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/**
 * Replaces every rank's params by rank 0's (same layout required, checked first).
 *
 * @param comm the group
 * @param params this rank's params (disposed; the returned tree replaces them)
 * @returns rank 0's params, as new tensors
 */
export async function broadcastParams(comm: Communicator, params: Tree): Promise<Tree> {
  if (comm.size === 1) return params;
  const { tensors, total } = layout(params);
  const sig = tensors.map((t) => `[${t.shape}]`).join(",");
  const mine = new Float32Array([fingerprint(sig) & 0xffff, fingerprint(sig) >>> 16]);
  const root = mine.slice();
  await comm.broadcast(new Uint8Array(root.buffer));
  if (root[0] !== mine[0] || root[1] !== mine[1]) {
    throw new Error(
      `Rank ${comm.rank}: its parameter layout (${tensors.length} tensors, ${total} values) ` +
        `differs from rank 0's: every rank must build the same model`,
    );
  }
  const flat = new Float32Array(total);
  if (comm.rank === 0) {
    let off = 0;
    for (const t of tensors) {
      flat.set((await t.data()) as Float32Array, off);
      off += t.size;
    }
  }
  await comm.broadcast(new Uint8Array(flat.buffer));
  const out = unflattenLike(params, flat);
  for (const t of tensors) t.dispose();
  return out;
}

/**
 * Makes `step` data parallel over `comm`.
 *
 * @param step a step from `makeTrainStep`
 * @param comm the group of ranks (Open MPI, in-process, or solo)
 * @param options the shard's weight and token count
 * @returns the data-parallel step (async: it waits for the other ranks)
 * @example
 * ```ts
 * import { mean, square, sub, tensor } from "../../mod.ts";
 * import { adamw } from "../optim.ts";
 * import { makeTrainStep } from "../step.ts";
 * import { inProcessGroup } from "./comm.ts";
 * import { dataParallel } from "./data_parallel.ts";
 * const loss = (p: any, b: any) => mean(square(sub(p.w, b.y)));
 * const comms = inProcessGroup(2);
 * await Promise.all(comms.map(async (comm, rank) => {
 *   const dp = dataParallel(makeTrainStep(loss, adamw({ lr: 0.1 })), comm);
 *   let state = await dp.init({ w: tensor([0, 0]) });
 *   const [next, out] = await dp(state, { y: tensor([rank, 2]) });
 *   state = next; // identical on both ranks
 *   out.loss.dispose();
 * }));
 * ```
 */
export function dataParallel<B, A extends Tree = Tree>(
  step: TrainStep<B, A>,
  comm: Communicator,
  options: DataParallelOptions<B> = {},
): DataParallelStep<B, A> {
  const weightOf = options.weight ?? (() => 1);
  let bucket: Float32Array | null = null;
  // outputs live on the rank's device (the params'); the aux output (a scalar tensor, e.g. the
  // MoE loss) is reported as the weighted mean
  const scalar = (v: number, backend: Backend) => tensor([v], [], "f32", { backend });

  const dp = (async (state: TrainState, batch: B | null, hyper?: StepHyper) => {
    const { tensors: ps, total } = layout(state.params);
    const device = ps[0].backend; // the update replaces (disposes) these params
    const tail = 4; // w, w·loss, w·aux, tokens
    if (!bucket || bucket.length !== total + tail) bucket = new Float32Array(total + tail);
    const buf = bucket;
    const w = batch === null ? 0 : weightOf(batch);
    if (!(w >= 0 && Number.isFinite(w))) {
      throw new Error(`Rank ${comm.rank}: the shard's weight is ${w}: expected a finite w ≥ 0`);
    }
    const local = { loss: 0, aux: 0, tokens: batch === null ? 0 : options.tokens?.(batch) ?? 0 };
    if (w > 0) {
      const m = scope(() => step.gradients(state.params, batch as B, state.lossScale?.scale));
      try {
        // the grad tree mirrors the params leaf for leaf; a missing gradient is zero
        const pl = leaves(state.params), gl = leaves(m.grads);
        let off = 0;
        for (let i = 0; i < pl.length; i++) {
          const p = pl[i], g = gl[i];
          if (!(p instanceof Tensor)) continue;
          if (g instanceof Tensor) {
            const d = (await g.data()) as Float32Array;
            if (w === 1) buf.set(d, off);
            else for (let j = 0; j < d.length; j++) buf[off + j] = d[j] * w;
          } else buf.fill(0, off, off + p.size);
          off += p.size;
        }
        const aux = m.aux instanceof Tensor && m.aux.size === 1 ? await m.aux.item() : 0;
        local.loss = await m.loss.item(), local.aux = aux;
      } finally {
        for (const t of leaves([m.grads, m.loss, m.aux])) if (t instanceof Tensor) t.dispose();
      }
    } else buf.fill(0, 0, total);
    buf[total] = w;
    buf[total + 1] = w * local.loss;
    buf[total + 2] = w * local.aux;
    buf[total + 3] = local.tokens;
    const t0 = performance.now();
    await comm.allReduceSum(buf);
    const reduceMs = performance.now() - t0;
    const W = buf[total];
    if (!(W > 0)) {
      throw new Error(
        `Rank ${comm.rank}: no rank had data in this step (Σ weights = ${W}): nothing to average`,
      );
    }
    const grads = unflattenLike(state.params, buf.subarray(0, total), 1 / W);
    const [next, r] = step.applyGradients(state, grads, hyper);
    const out: DataParallelOutput<A> = {
      loss: scalar(buf[total + 1] / W, device),
      aux: (step.options.hasAux ? scalar(buf[total + 2] / W, device) : null) as A | null,
      gradNorm: r.gradNorm,
      updated: r.updated,
      ...(options.tokens ? { tokens: buf[total + 3] } : {}),
      weight: W,
      reduceMs,
      ...(comm.lastWaitMs !== undefined ? { waitMs: comm.lastWaitMs } : {}),
    };
    return [next, out] as [TrainState, DataParallelOutput<A>];
  }) as DataParallelStep<B, A>;

  dp.init = async (params: Tree) => step.init(await broadcastParams(comm, params));
  dp.flush = (state, hyper) => step.flush(state, hyper);
  dp.warmup = (state, batch, hyper) =>
    batch === null ? Promise.resolve(0) : step.warmup(state, batch, hyper);
  Object.defineProperty(dp, "comm", { value: comm });
  Object.defineProperty(dp, "step", { value: step });
  return dp;
}

/**
 * The loop's {@link Trainer} of a data-parallel step (pretraining and SFT under `mpirun`): like
 * `stepTrainer`, but asynchronous, and a rank whose shard is empty gets `null` as its batch.
 *
 * @param dp the data-parallel step (its params were broadcast before: see {@link broadcastParams})
 * @returns the trainer
 */
export function dataParallelTrainer<B>(
  dp: DataParallelStep<B, Tensor>,
): AsyncTrainer<TrainState, B | null> {
  const { step: _sync, async: _flag, ...inner } = stepTrainer(dp.step);
  return {
    ...inner,
    async: true,
    step: (state, batch, hyper) => dp(state, batch, hyper),
    warmup: (state, batch, hyper) => dp.warmup(state, batch, hyper),
  };
}
