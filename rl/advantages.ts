/**
 * Advantages of the RL trainers, as pure functions over row-major arrays (B rows × R response
 * positions): they run once per rollout on values already read back for the rewards, so they
 * stay on the host.
 *
 * - {@link gae}: MiniMind HEAD PPO's generalised advantage estimation (γ = 1, λ = 0.95) with
 *   masked whitening (spec §4.6).
 * - {@link groupAdvantages}: GRPO's per-group normalisation (r − mean_g)/(std_g + 1e-4) with the
 *   population std (spec §4.7).
 * - {@link SpoTracker}: SPO's persistent Beta baseline (`AutoAdaptiveValueTracker`, spec §4.8).
 * @module
 */

/** Options of {@link gae}. */
export interface GaeOptions {
  /** Discount γ (default 1.0, MiniMind's). */
  gamma?: number;
  /** GAE λ (default 0.95). */
  lambda?: number;
  /** Whiten the advantages over the masked entries of the whole batch (default true). */
  whiten?: boolean;
}

/** What {@link gae} returns, each (B, R) row-major. */
export interface GaeResult {
  /** Advantages (whitened and masked when `whiten`). */
  advantages: Float32Array;
  /** Returns = raw advantages + old values (the critic's targets). */
  returns: Float32Array;
}

function checkRows(name: string, a: ArrayLike<number>, b: number, r: number): void {
  if (a.length !== b * r) {
    throw new Error(`Cannot use ${name} of length ${a.length}: expected ${b}×${r} = ${b * r}`);
  }
}

/**
 * MiniMind HEAD's GAE over the full padded length: going backwards,
 * δ_t = r_t + γ·V_{t+1} − V_t (V_R = 0) and A_t = δ_t + γλ·A_{t+1}; returns = A + V. Then (by
 * default) A ← (A − μ)/√(σ² + 1e-8)·mask with μ, σ² the masked mean and variance over the batch.
 * `values` are expected already multiplied by the mask, as MiniMind does.
 *
 * @param rewards token rewards (B, R): the sequence reward at its last valid position, else 0
 * @param values old critic values (B, R), masked
 * @param mask response mask (B, R), 1/0
 * @param rows B
 * @param options γ, λ, whitening
 * @returns advantages and returns
 * @example
 * ```ts
 * import { gae } from "./advantages.ts";
 * const r = gae([0, 1], [0.5, 0.25], [1, 1], 1, { whiten: false });
 * // δ = [0 + 0.25 − 0.5, 1 − 0.25], A₁ = 0.75, A₀ = −0.25 + 0.95·0.75
 * ```
 */
export function gae(
  rewards: ArrayLike<number>,
  values: ArrayLike<number>,
  mask: ArrayLike<number>,
  rows: number,
  options: GaeOptions = {},
): GaeResult {
  const gamma = options.gamma ?? 1.0, lambda = options.lambda ?? 0.95;
  const len = rows === 0 ? 0 : rewards.length / rows;
  checkRows("rewards", rewards, rows, len);
  checkRows("values", values, rows, len);
  checkRows("mask", mask, rows, len);
  const adv = new Float64Array(rows * len);
  const returns = new Float32Array(rows * len);
  for (let b = 0; b < rows; b++) {
    let next = 0, last = 0;
    for (let t = len - 1; t >= 0; t--) {
      const i = b * len + t;
      const delta = rewards[i] + gamma * next - values[i];
      last = delta + gamma * lambda * last;
      adv[i] = last;
      returns[i] = last + values[i];
      next = values[i];
    }
  }
  const out = new Float32Array(rows * len);
  if (options.whiten === false) {
    out.set(adv);
    return { advantages: out, returns };
  }
  let n = 0, sum = 0;
  for (let i = 0; i < adv.length; i++) if (mask[i]) n++, sum += adv[i];
  const mu = n ? sum / n : 0;
  let sq = 0;
  for (let i = 0; i < adv.length; i++) if (mask[i]) sq += (adv[i] - mu) ** 2;
  const inv = 1 / Math.sqrt((n ? sq / n : 0) + 1e-8);
  for (let i = 0; i < adv.length; i++) out[i] = (adv[i] - mu) * inv * mask[i];
  return { advantages: out, returns };
}

/** Options of {@link groupAdvantages}. */
export interface GroupAdvantageOptions {
  /** Added to the group std (default 1e-4, HEAD's). */
  eps?: number;
  /** Unbiased (n − 1) std instead of the population std (V2; default false = HEAD). */
  unbiased?: boolean;
}

/**
 * GRPO's group-normalised advantages: rewards come in contiguous groups of `groupSize`
 * completions of one prompt; A = (r − mean_g)/(std_g + eps).
 *
 * @param rewards one reward per completion (length a multiple of `groupSize`)
 * @param groupSize completions per prompt (num_generations)
 * @param options eps, std flavour
 * @returns one advantage per completion
 * @example
 * ```ts
 * import { groupAdvantages } from "./advantages.ts";
 * groupAdvantages([1, 3], 2); // [−1/(1 + 1e-4), 1/(1 + 1e-4)]
 * ```
 */
export function groupAdvantages(
  rewards: ArrayLike<number>,
  groupSize: number,
  options: GroupAdvantageOptions = {},
): Float32Array {
  if (!(Number.isInteger(groupSize) && groupSize >= 1) || rewards.length % groupSize !== 0) {
    throw new Error(
      `Cannot group ${rewards.length} rewards into groups of ${groupSize}: need a divisor ≥ 1`,
    );
  }
  const eps = options.eps ?? 1e-4;
  const out = new Float32Array(rewards.length);
  for (let g = 0; g < rewards.length; g += groupSize) {
    let sum = 0;
    for (let i = g; i < g + groupSize; i++) sum += rewards[i];
    const mu = sum / groupSize;
    let sq = 0;
    for (let i = g; i < g + groupSize; i++) sq += (rewards[i] - mu) ** 2;
    const div = options.unbiased ? groupSize - 1 : groupSize;
    const std = div > 0 ? Math.sqrt(sq / div) : 0;
    for (let i = g; i < g + groupSize; i++) out[i] = (rewards[i] - mu) / (std + eps);
  }
  return out;
}

/** SPO tracker settings (V2 `AutoAdaptiveValueTracker` defaults). */
export interface SpoTrackerOptions {
  /** Half-distance of the KL-driven forgetting factor (default 0.06). */
  dHalf?: number;
  /** Smallest ρ (default 0.5); also sets the prior strength N0 = 1/(1 − clipLower). */
  clipLower?: number;
  /** Largest ρ (default 0.96). */
  clipUpper?: number;
  /** ρ of the first update, before any log-prob history (default 0.9). */
  rhoConst?: number;
  /** Reward range mapped onto the Beta's [0, 1] (default [−3, 3], MiniMind's). */
  rewardRange?: readonly [number, number];
}

/** The tracker's state, as stored in a resume checkpoint. */
export interface SpoTrackerState {
  /** Beta α. */
  alpha: number;
  /** Beta β. */
  beta: number;
  /** Masked mean log-prob of the previous update (null before the first). */
  lastMeanLogprob: number | null;
}

/**
 * SPO's single-stream baseline: a Beta(α, β) estimate of the normalised reward whose memory
 * shrinks when the policy moves (ρ = clamp(2^(−|Δ mean logp| / D_half), lower, upper)).
 * Baseline on the reward scale = lo + (hi − lo)·α/(α + β); advantage = clamp(r − baseline, −5, 5).
 */
export class SpoTracker {
  /** Current state (copy it to save). */
  state: SpoTrackerState;
  readonly #o: Required<SpoTrackerOptions>;

  /**
   * Creates a tracker at its prior: N0 = 1/(1 − clipLower), α = β = N0/2.
   *
   * @param options settings (MiniMind's defaults)
   * @param state a saved state to continue from
   */
  constructor(options: SpoTrackerOptions = {}, state?: SpoTrackerState) {
    this.#o = {
      dHalf: options.dHalf ?? 0.06,
      clipLower: options.clipLower ?? 0.5,
      clipUpper: options.clipUpper ?? 0.96,
      rhoConst: options.rhoConst ?? 0.9,
      rewardRange: options.rewardRange ?? [-3, 3],
    };
    const [lo, hi] = this.#o.rewardRange;
    if (!(hi > lo)) throw new Error(`Cannot track rewards in [${lo}, ${hi}]: need hi > lo`);
    const n0 = 1 / (1 - this.#o.clipLower);
    this.state = state ? { ...state } : { alpha: 0.5 * n0, beta: 0.5 * n0, lastMeanLogprob: null };
  }

  /** @returns the baseline on the reward scale */
  baseline(): number {
    const [lo, hi] = this.#o.rewardRange;
    return lo + (hi - lo) * this.state.alpha / (this.state.alpha + this.state.beta);
  }

  /**
   * Advantages of a batch against the current baseline.
   *
   * @param rewards one per sample
   * @returns clamp(r − baseline, −5, 5)
   */
  advantages(rewards: ArrayLike<number>): Float32Array {
    const b = this.baseline();
    return Float32Array.from(rewards, (r) => Math.min(5, Math.max(-5, r - b)));
  }

  /**
   * Folds a batch in: ρ from the change of mean log-prob, then α ← ρα + r̂, β ← ρβ + (1 − r̂)
   * with r̂ the batch's mean normalised reward.
   *
   * @param rewards the batch's rewards
   * @param meanLogprob masked mean log-prob of the batch's responses under the current policy
   * @returns the ρ used
   */
  update(rewards: ArrayLike<number>, meanLogprob: number): number {
    const o = this.#o, s = this.state;
    const [lo, hi] = o.rewardRange;
    const rho = s.lastMeanLogprob === null ? o.rhoConst : Math.min(
      o.clipUpper,
      Math.max(o.clipLower, 2 ** (-Math.abs(s.lastMeanLogprob - meanLogprob) / o.dHalf)),
    );
    let sum = 0;
    for (let i = 0; i < rewards.length; i++) sum += (rewards[i] - lo) / (hi - lo);
    const rhat = rewards.length ? sum / rewards.length : 0;
    this.state = {
      alpha: rho * s.alpha + rhat,
      beta: rho * s.beta + (1 - rhat),
      lastMeanLogprob: meanLogprob,
    };
    return rho;
  }
}
