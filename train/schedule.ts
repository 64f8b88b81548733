/**
 * Learning-rate schedules: MiniMind's `get_lr` (cosine from lr down to lr/10, no warmup) and
 * nanoGPT's warmup-then-cosine. Schedules are plain functions of the step; the trainer calls them
 * and hands the value to the optimizer (MiniMind sets `param_group["lr"]` the same way).
 * @module
 */

/** A schedule: step → learning rate. */
export type Schedule = (step: number) => number;

/**
 * MiniMind's `get_lr(current_step, total_steps, lr)` (trainer_utils.py):
 * `lr · (0.1 + 0.45 · (1 + cos(π · step / total)))`, a cosine from `lr` at step 0 down to
 * `lr / 10` at `total`. The trainers call it with `epoch · iters + step` (step 1-based within the
 * epoch) and `epochs · iters`.
 *
 * @param step current step
 * @param total total steps
 * @param lr peak learning rate
 * @returns the learning rate at `step`
 * @example
 * ```ts
 * import { getLr } from "./schedule.ts";
 * getLr(50, 100, 5e-4); // 2.75e-4
 * ```
 */
export function getLr(step: number, total: number, lr: number): number {
  if (!(total > 0)) throw new Error(`Cannot compute get_lr with total_steps ${total}: need > 0`);
  return lr * (0.1 + 0.45 * (1 + Math.cos((Math.PI * step) / total)));
}

/** Options of {@link warmupCosine}. */
export interface WarmupCosineOptions {
  /** Peak learning rate reached after warmup. */
  peak: number;
  /** Linear warmup steps. */
  warmupSteps: number;
  /** Step at which the cosine reaches `minLr` (and stays there). */
  decaySteps: number;
  /** Final learning rate (default peak / 10). */
  minLr?: number;
}

/**
 * nanoGPT's `get_lr`: (1) linear warmup to `peak` over `warmupSteps`, (2) after `decaySteps`
 * return `minLr`, (3) in between, cosine decay from `peak` down to `minLr`.
 *
 * @param options peak, warmup and decay lengths, floor
 * @returns the schedule
 * @example
 * ```ts
 * import { warmupCosine } from "./schedule.ts";
 * const lr = warmupCosine({ peak: 1e-3, warmupSteps: 100, decaySteps: 1000 });
 * lr(0); lr(100); lr(5000); // ≈1e-5, 1e-3, 1e-4
 * ```
 */
export function warmupCosine(options: WarmupCosineOptions): Schedule {
  const { peak, warmupSteps, decaySteps } = options;
  const minLr = options.minLr ?? peak / 10;
  if (!(decaySteps > warmupSteps)) {
    throw new Error(
      `Cannot build warmupCosine with decaySteps ${decaySteps} ≤ warmupSteps ${warmupSteps}`,
    );
  }
  return (step: number) => {
    // 1) linear warmup
    if (step < warmupSteps) return (peak * (step + 1)) / (warmupSteps + 1);
    // 2) past the decay: the floor
    if (step > decaySteps) return minLr;
    // 3) cosine from peak down to minLr
    const ratio = (step - warmupSteps) / (decaySteps - warmupSteps);
    const coeff = 0.5 * (1 + Math.cos(Math.PI * ratio));
    return minLr + coeff * (peak - minLr);
  };
}

/**
 * A constant schedule.
 *
 * @param lr the learning rate
 * @returns the schedule
 */
export function constant(lr: number): Schedule {
  return () => lr;
}
