/**
 * Optimizers as pure `{init, update}` pairs over parameter trees (optax style). A
 * `GradientTransformation` maps gradients to transformed gradients (clipping, scaling); an
 * `Optimizer` maps gradients to new parameters — the last link of a `chain`, so a fused kernel
 * (`adamwUpdate`) can write p', m', v' in one pass per tensor. Nothing here mutates or disposes
 * its inputs: the train step replaces and disposes the old trees.
 *
 * ```ts
 * import { adamw, chain, clipByGlobalNorm } from "./optim.ts";
 * import { getLr } from "./schedule.ts";
 * import { tensor } from "../nn/creation.ts";
 * import type { Tree } from "../nn/tree.ts";
 * let params: Tree = { w: tensor([1, 2]) };
 * const grads = { w: tensor([0.5, -0.25]) };
 * const opt = chain(clipByGlobalNorm(1.0), adamw({ lr: 5e-4 }));
 * let state = opt.init(params);
 * [params, state] = opt.update(grads, state, params, { lr: getLr(1, 100, 5e-4) });
 * ```
 * @module
 */
import type { Leaf, Tree } from "../nn/tree.ts";
import { leaves, mapTree, zip } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { zerosLike } from "../nn/creation.ts";
import { add, minimum } from "../nn/ops/binary.ts";
import { affine, div, mul } from "../nn/ops/arith.ts";
import { sqrt } from "../nn/ops/unary.ts";
import { sumSquares } from "../nn/ops/reduce.ts";
import { adamwUpdate } from "../nn/ops/adamw.ts";
import type { Schedule } from "./schedule.ts";

/** Per-step hyper-parameters the trainer injects (MiniMind sets the lr before every step). */
export interface StepHyper {
  /** Learning rate of this step (overrides the optimizer's own `lr`). */
  lr?: number;
  /**
   * A scalar every gradient is multiplied by before the update (the global-norm clipping
   * coefficient; under loss scaling also 1/scale, and +Inf for an update to skip, which leaves
   * params and state unchanged). Only passed to optimizers with `scalesGrads`, which apply it
   * inside their own kernels instead of a separate pass over the gradients.
   */
  gradScale?: Tensor;
  /**
   * This update's 1-based step count as a device scalar, for the bias corrections instead of the
   * optimizer's own count (loss scaling: skipped updates do not count). Only passed with
   * `gradScale`, to optimizers with `scalesGrads`.
   */
  stepCount?: Tensor;
  /**
   * The caller gives up `params` and the optimizer state (the train step disposes them right
   * after): the update may write the new values into their buffers (CPU), as PyTorch's optimizers
   * update in place.
   */
  donate?: boolean;
}

/** grads → transformed grads (optax `GradientTransformation`). */
export interface GradientTransformation<S extends Tree = Tree> {
  /** Discriminator. */
  readonly kind: "transform";
  /** State for `params` (e.g. moments); `{}` when stateless. */
  init(params: Tree): S;
  /** Transforms `grads` (null leaves pass through); returns new grads and state. */
  update(grads: Tree, state: S, params: Tree, hyper?: StepHyper): [Tree, S];
}

/** grads → new params. */
export interface Optimizer<S extends Tree = Tree> {
  /** Discriminator. */
  readonly kind: "optimizer";
  /** State for `params`. */
  init(params: Tree): S;
  /** One update: returns new params (unchanged leaves are the same handles) and state. */
  update(grads: Tree, state: S, params: Tree, hyper?: StepHyper): [Tree, S];
  /** `update` honours `hyper.gradScale` (fused into its kernels, as `adamw` does). */
  readonly scalesGrads?: boolean;
}

/** Selects leaves by dotted path (e.g. `(path) => !path.endsWith("norm.weight")`). */
export type Mask = (path: string, leaf: Tensor) => boolean;

function lrAt(lr: number | Schedule | undefined, count: number, hyper?: StepHyper): number {
  if (hyper?.lr !== undefined) return hyper.lr;
  if (lr === undefined) throw new Error("Cannot update: no learning rate (set lr or pass {lr})");
  return typeof lr === "number" ? lr : lr(count);
}

function isT(x: Leaf): x is Tensor {
  return x instanceof Tensor;
}

/**
 * The global L2 norm of a gradient tree: √(Σ ‖g‖²) over every tensor leaf (one scalar tensor,
 * no readback).
 *
 * @param grads gradient tree
 * @returns scalar f32 tensor
 */
export function globalNorm(grads: Tree): Tensor {
  let total: Tensor | null = null;
  for (const g of leaves(grads)) {
    if (!isT(g)) continue;
    const s = sumSquares(g);
    total = total ? add(total, s) : s;
  }
  if (!total) throw new Error("Cannot compute the global norm of a tree without tensors");
  return sqrt(total);
}

/**
 * Scales every gradient by `min(1, maxNorm / (‖g‖ + 1e-6))` (PyTorch `clip_grad_norm_`, which
 * always multiplies).
 *
 * @param grads gradient tree
 * @param maxNorm the norm bound
 * @returns `[clipped grads, norm before clipping]`
 * @example
 * ```ts
 * import { tensor } from "../mod.ts";
 * import { clipGrads } from "./optim.ts";
 * const [g, norm] = clipGrads({ w: tensor([3, 4]) }, 1); // norm 5, g ≈ [0.6, 0.8]
 * ```
 */
export function clipGrads(grads: Tree, maxNorm: number): [Tree, Tensor] {
  const [coef, norm] = clipCoefficient(grads, maxNorm);
  return [mapTree(grads, (g) => (isT(g) ? mul(g, coef) : g)), norm];
}

/**
 * The global-norm clipping coefficient `min(1, maxNorm / (‖g‖ + 1e-6))` and the norm, without
 * scaling anything: for optimizers that fuse the scaling into their update (`scalesGrads`).
 *
 * @param grads gradient tree
 * @param maxNorm the norm bound
 * @returns `[coefficient, norm]`, scalar tensors
 */
export function clipCoefficient(grads: Tree, maxNorm: number): [Tensor, Tensor] {
  const norm = globalNorm(grads);
  return [minimum(div(maxNorm, affine(norm, 1, 1e-6)), 1), norm];
}

/**
 * A transformation clipping gradients by their global norm.
 *
 * @param maxNorm the norm bound (MiniMind: 1.0)
 * @returns the transformation
 */
export function clipByGlobalNorm(maxNorm: number): GradientTransformation<Record<string, never>> {
  if (!(maxNorm > 0)) throw new Error(`Cannot clip to max norm ${maxNorm}: it must be > 0`);
  return {
    kind: "transform",
    init: () => ({}),
    update: (grads, state) => [clipGrads(grads, maxNorm)[0], state],
  };
}

/** Multiplies gradients by a constant. */
export function scale(factor: number): GradientTransformation<Record<string, never>> {
  return {
    kind: "transform",
    init: () => ({}),
    update: (grads, state) => [mapTree(grads, (g) => (isT(g) ? affine(g, factor) : g)), state],
  };
}

/** Options of {@link adamw}. */
export interface AdamwOptions {
  /** Learning rate, or a schedule of the 0-based update count (the trainer may pass `{lr}`). */
  lr?: number | Schedule;
  /** β₁ (default 0.9). */
  beta1?: number;
  /** β₂ (default 0.999). */
  beta2?: number;
  /** ε (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay (default 0.01, PyTorch's AdamW default that MiniMind inherits). */
  weightDecay?: number;
  /** Leaves that get weight decay (default: all). */
  weightDecayMask?: Mask;
}

/** AdamW state: update count and the two moment trees (shaped like the params). */
export interface AdamwState {
  /** Updates done so far. */
  count: number;
  /** First moments (PyTorch `exp_avg`). */
  mu: Tree;
  /** Second moments (PyTorch `exp_avg_sq`). */
  nu: Tree;
  /** (Index signature: the state is a plain tree.) */
  [key: string]: Tree;
}

/**
 * AdamW with PyTorch semantics (`torch.optim.AdamW`: decoupled decay, bias correction, eps
 * outside the root), one fused kernel per tensor. Null gradient leaves leave the param as is.
 *
 * @param options lr, betas, eps, weight decay (+ mask)
 * @returns the optimizer
 * @example
 * ```ts
 * import { tensor } from "../mod.ts";
 * import { adamw } from "./optim.ts";
 * const opt = adamw({ lr: 1e-3 });
 * const params = { w: tensor([1, 2]) };
 * const [next, state] = opt.update({ w: tensor([0.5, -0.5]) }, opt.init(params), params);
 * ```
 */
export function adamw(options: AdamwOptions = {}): Optimizer<AdamwState> {
  const beta1 = options.beta1 ?? 0.9, beta2 = options.beta2 ?? 0.999;
  const eps = options.eps ?? 1e-8, wd = options.weightDecay ?? 0.01;
  const mask = options.weightDecayMask;
  return {
    kind: "optimizer",
    scalesGrads: true,
    init: (params) => ({
      count: 0,
      mu: mapTree(params, (p) => (isT(p) ? zerosLike(p) : null)),
      nu: mapTree(params, (p) => (isT(p) ? zerosLike(p) : null)),
    }),
    update: (grads, state, params, hyper) => {
      const lr = lrAt(options.lr, state.count, hyper);
      const step = state.count + 1;
      const newMu: Leaf[] = [], newNu: Leaf[] = [];
      const newParams = zip([params, grads, state.mu, state.nu], ([p, g, m, v], path) => {
        if (!isT(p) || !isT(g)) {
          newMu.push(m);
          newNu.push(v);
          return p;
        }
        const weightDecay = mask && !mask(path, p) ? 0 : wd;
        const [p2, m2, v2] = adamwUpdate(
          p,
          g,
          m as Tensor,
          v as Tensor,
          {
            lr,
            beta1,
            beta2,
            eps,
            weightDecay,
            step,
            inPlace: hyper?.donate,
          },
          hyper?.gradScale,
          hyper?.stepCount,
        );
        newMu.push(m2);
        newNu.push(v2);
        return p2;
      });
      let i = 0, j = 0;
      const mu = mapTree(state.mu, () => newMu[i++]);
      const nu = mapTree(state.nu, () => newNu[j++]);
      return [newParams, { count: step, mu, nu }];
    },
  };
}

/** Options of {@link sgd}. */
export interface SgdOptions {
  /** Learning rate or schedule (or pass `{lr}` per update). */
  lr?: number | Schedule;
  /** Momentum μ (default 0 = plain SGD). */
  momentum?: number;
  /** L2 weight decay added to the gradient (PyTorch SGD; default 0). */
  weightDecay?: number;
}

/** SGD state: update count and the momentum buffers (null without momentum). */
export interface SgdState {
  /** Updates done so far. */
  count: number;
  /** Momentum buffers. */
  trace: Tree;
  /** (Index signature: the state is a plain tree.) */
  [key: string]: Tree;
}

/**
 * Stochastic gradient descent with optional momentum (PyTorch `torch.optim.SGD`:
 * g ← g + λp; b ← μb + g (b = g at the first step); p ← p − lr·b).
 *
 * @param options lr, momentum, weight decay
 * @returns the optimizer
 */
export function sgd(options: SgdOptions = {}): Optimizer<SgdState> {
  const mom = options.momentum ?? 0, wd = options.weightDecay ?? 0;
  return {
    kind: "optimizer",
    init: (params) => ({
      count: 0,
      trace: mapTree(params, (p) => (isT(p) && mom !== 0 ? zerosLike(p) : null)),
    }),
    update: (grads, state, params, hyper) => {
      const lr = lrAt(options.lr, state.count, hyper);
      const traces: Leaf[] = [];
      const newParams = zip([params, grads, state.trace], ([p, g, b]) => {
        if (!isT(p) || !isT(g)) {
          traces.push(b);
          return p;
        }
        let d = wd !== 0 ? add(g, affine(p, wd)) : g;
        if (mom !== 0) {
          d = state.count === 0 ? add(d, zerosLike(d)) : add(affine(b as Tensor, mom), d);
          traces.push(d);
        } else traces.push(b);
        return add(p, affine(d, -lr));
      });
      let i = 0;
      const trace = mapTree(state.trace, () => traces[i++]);
      return [newParams, { count: state.count + 1, trace }];
    },
  };
}

/**
 * Applies `inner` only to the leaves selected by `mask`; the others keep their gradient (for a
 * transformation) or their value (for an optimizer). Useful for freezing or per-group settings.
 *
 * @param inner a transformation or optimizer
 * @param mask selects the leaves `inner` sees
 * @returns the masked link (same kind as `inner`)
 */
export function masked<L extends GradientTransformation | Optimizer>(inner: L, mask: Mask): L {
  const select = (t: Tree, params: Tree): Tree => {
    const ps = leaves(params);
    let k = 0;
    return mapTree(t, (x, path) => {
      const p = ps[k++];
      return isT(p) && mask(path, p) ? x : null;
    });
  };
  return {
    kind: inner.kind,
    init: (params: Tree) => inner.init(select(params, params)),
    update: (grads: Tree, state: Tree, params: Tree, hyper?: StepHyper) => {
      const [out, s] = inner.update(select(grads, params), state, select(params, params), hyper);
      const fallback = inner.kind === "optimizer" ? params : grads;
      const outs = leaves(out), fb = leaves(fallback);
      let k = 0;
      const merged = mapTree(fallback, () => {
        const o = outs[k], f = fb[k];
        k++;
        return o === null || o === undefined ? f : o;
      });
      return [merged, s];
    },
  } as L;
}

/** Chain state: one state per link, in order. */
export type ChainState = Tree[];

/**
 * Composes links left to right: transformations first, then (optionally) one optimizer. With an
 * optimizer last the chain is an optimizer, else a transformation.
 *
 * @param links transformations, optionally ending with an optimizer
 * @returns the composed link
 */
export function chain(
  ...links: [...GradientTransformation[], Optimizer]
): Optimizer<ChainState>;
/**
 * Composes transformations left to right into one transformation.
 *
 * @param links transformations
 * @returns the composed transformation
 */
export function chain(...links: GradientTransformation[]): GradientTransformation<ChainState>;
export function chain(
  ...links: (GradientTransformation | Optimizer)[]
): GradientTransformation<ChainState> | Optimizer<ChainState> {
  if (links.length === 0) throw new Error("Cannot chain zero transformations");
  links.forEach((l, i) => {
    if (l.kind === "optimizer" && i !== links.length - 1) {
      throw new Error(
        `Cannot chain an optimizer at position ${i} of ${links.length}: it must come last`,
      );
    }
  });
  const kind = links[links.length - 1].kind;
  return {
    kind,
    init: (params: Tree) => links.map((l) => l.init(params)),
    update: (grads: Tree, state: ChainState, params: Tree, hyper?: StepHyper) => {
      let g = grads;
      const states: Tree[] = [];
      links.forEach((l, i) => {
        const [out, s] = l.update(g, state[i], params, hyper);
        g = out;
        states.push(s);
      });
      return [g, states];
    },
  } as GradientTransformation<ChainState> | Optimizer<ChainState>;
}

/**
 * `params + updates` leafwise (for chains that end with a transformation, optax
 * `apply_updates`).
 *
 * @param params parameter tree
 * @param updates update tree (null leaves keep the param)
 * @returns the new params
 */
export function applyUpdates(params: Tree, updates: Tree): Tree {
  return zip([params, updates], ([p, u]) => (isT(p) && isT(u) ? add(p, u) : p));
}
