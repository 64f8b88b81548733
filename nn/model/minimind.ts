/**
 * The MiniMind model (`model/model_minimind.py`) as pure functions over a parameter tree whose
 * keys are the PyTorch state-dict names: `init(cfg, key)` → params, `forward(cfg, params, ids)` →
 * `{logits, auxLoss, cache}`, `lossFromLogits` (MiniMind's internal shift, ignore −100),
 * `countParams`. Both reference generations: minimind2 (Llama-like, DeepSeek-style MoE with shared
 * experts) and minimind3 (QK-norm, Qwen3-style MoE).
 * @module
 */
// B = batch, T = new time steps, S = key steps (cache + new), H = hidden, V = vocab,
// L = layers, NH/NKV = query/kv heads, HD = head dim, I = MLP width, E = experts
import type { DType } from "../dtype.ts";
import { isFloat } from "../dtype.ts";
import type { Tensor } from "../tensor.ts";
import { full, ones, tensor } from "../creation.ts";
import { foldIn, normalArray, uniformArray } from "../random.ts";
import type { Key } from "../random.ts";
import { scope } from "../scope.ts";
import { fmt } from "../shape.ts";
import { unflatten } from "../tree.ts";
import type { Tree } from "../tree.ts";
import { apply as applyLora } from "./layers/linear.ts";
import { add } from "../ops/binary.ts";
import { cast } from "../ops/arith.ts";
import { embedding } from "../ops/gather.ts";
import { matmul } from "../ops/matmul.ts";
import { concat, reshape, sliceAxis } from "../ops/movement.ts";
import { rmsNorm } from "../ops/rms_norm.ts";
import { crossEntropy } from "../ops/cross_entropy.ts";
import type { MiniMindConfig } from "./minimind_config.ts";
import type { SelfAttentionParams } from "./layers/attention.ts";
import { selfAttention } from "./layers/attention.ts";
import type { MlpParams } from "./layers/mlp.ts";
import { mlp } from "./layers/mlp.ts";
import type { MoeDispatch, MoeParams, RouterInfo } from "./layers/moe.ts";
import { moe, routedExperts } from "./layers/moe.ts";
import type { KvCache, LayerCache } from "./layers/kv_cache.ts";
import { cacheLength, cacheRows } from "./layers/kv_cache.ts";
import { ropeTables } from "./layers/rope_table.ts";

/** A weight holder, as in PyTorch modules (`.weight`). */
export type Weight = {
  /** The tensor. */
  readonly weight: Tensor;
};

/** One decoder block's parameters. */
export type LayerParams = {
  /** Attention (q/k/v/o projections; minimind3 adds q_norm/k_norm). */
  readonly self_attn: SelfAttentionParams;
  /** RMSNorm before attention (H). */
  readonly input_layernorm: Weight;
  /** RMSNorm before the MLP (H). */
  readonly post_attention_layernorm: Weight;
  /** Dense MLP or MoE block. */
  readonly mlp: MlpParams | MoeParams;
};

/**
 * The parameter tree. `tree.flatten(params)` gives the PyTorch state-dict names; a tied lm_head
 * is stored once, as `model.embed_tokens.weight`.
 */
export type MiniMindParams = {
  /** The transformer. */
  readonly model: {
    /** Token embedding (V, H). */
    readonly embed_tokens: Weight;
    /** Decoder blocks. */
    readonly layers: readonly LayerParams[];
    /** Final RMSNorm (H). */
    readonly norm: Weight;
  };
  /** Output head (V, H) — only when embeddings are not tied. */
  readonly lm_head?: Weight;
};

// ---------------------------------------------------------------------------------------------
// parameter shapes, counts, init, loading

/**
 * Every parameter key with its shape, in the reference state-dict order (a tied lm_head is
 * omitted: it is `model.embed_tokens.weight`).
 *
 * @param cfg model config
 * @returns `[key, shape]` pairs
 */
export function paramShapes(cfg: MiniMindConfig): [string, number[]][] {
  const h = cfg.hiddenSize, hd = cfg.headDim;
  const out: [string, number[]][] = [["model.embed_tokens.weight", [cfg.vocabSize, h]]];
  const ffn = (pre: string, i: number) => {
    // FeedForward registers gate_proj, down_proj, up_proj in this order
    out.push([`${pre}.gate_proj.weight`, [i, h]]);
    out.push([`${pre}.down_proj.weight`, [h, i]]);
    out.push([`${pre}.up_proj.weight`, [i, h]]);
  };
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    out.push([`${p}.self_attn.q_proj.weight`, [cfg.numAttentionHeads * hd, h]]);
    out.push([`${p}.self_attn.k_proj.weight`, [cfg.numKeyValueHeads * hd, h]]);
    out.push([`${p}.self_attn.v_proj.weight`, [cfg.numKeyValueHeads * hd, h]]);
    out.push([`${p}.self_attn.o_proj.weight`, [h, cfg.numAttentionHeads * hd]]);
    if (cfg.generation === "minimind3") {
      out.push([`${p}.self_attn.q_norm.weight`, [hd]]);
      out.push([`${p}.self_attn.k_norm.weight`, [hd]]);
    }
    out.push([`${p}.input_layernorm.weight`, [h]]);
    out.push([`${p}.post_attention_layernorm.weight`, [h]]);
    if (!cfg.useMoe) ffn(`${p}.mlp`, cfg.intermediateSize);
    else if (cfg.generation === "minimind3") {
      out.push([`${p}.mlp.gate.weight`, [cfg.numExperts, h]]);
      for (let e = 0; e < cfg.numExperts; e++) {
        ffn(`${p}.mlp.experts.${e}`, cfg.moeIntermediateSize);
      }
    } else {
      // minimind2 registers experts, then the gate, then the shared experts
      for (let e = 0; e < cfg.nRoutedExperts; e++) {
        ffn(`${p}.mlp.experts.${e}`, cfg.intermediateSize);
      }
      out.push([`${p}.mlp.gate.weight`, [cfg.nRoutedExperts, h]]);
      for (let e = 0; e < cfg.nSharedExperts; e++) {
        ffn(`${p}.mlp.shared_experts.${e}`, cfg.intermediateSize);
      }
    }
  }
  out.push(["model.norm.weight", [h]]);
  if (!cfg.tieWordEmbeddings) out.push(["lm_head.weight", [cfg.vocabSize, h]]);
  return out;
}

/** Parameter counts (tied embeddings counted once). */
export interface ParamCount {
  /** Every parameter. */
  readonly total: number;
  /** Parameters one token uses (MoE: k routed experts + shared + router; dense: = total). */
  readonly active: number;
}

/**
 * Counts parameters analytically (MiniMind2-Small: 25,829,888).
 *
 * @param cfg model config
 * @returns total and active counts
 * @example
 * ```ts
 * import { config, countParams } from "@minimind/ts";
 * countParams(config("minimind3-moe")); // { total: 198416640, active: 63936768 }
 * ```
 */
export function countParams(cfg: MiniMindConfig): ParamCount {
  let total = 0;
  for (const [, s] of paramShapes(cfg)) total += s.reduce((a, b) => a * b, 1);
  let active = total;
  if (cfg.useMoe) {
    const i = cfg.generation === "minimind3" ? cfg.moeIntermediateSize : cfg.intermediateSize;
    const idle = routedExperts(cfg) - cfg.numExpertsPerTok;
    active -= cfg.numHiddenLayers * idle * 3 * cfg.hiddenSize * i;
  }
  return { total, active };
}

/** Options of `init`. */
export interface InitOptions {
  /** Float dtype of the parameters (default f32; f64 for gradient checks on CPU). */
  dtype?: DType;
}

/**
 * Fresh parameters following the reference init. minimind2 (no `post_init`, PyTorch defaults):
 * Linear and router U(±1/√in); the tied embedding keeps lm_head's U(±1/√H); RMSNorm weights 1.
 * minimind3 (HF `post_init`): every Linear/Embedding N(0, 0.02); RMSNorm weights 1. Parameter
 * number i draws from `foldIn(key, i)` in state-dict order.
 *
 * @param cfg model config
 * @param key PRNG key
 * @param options dtype
 * @returns the parameter tree
 * @example
 * ```ts
 * import { config, init, random } from "@minimind/ts";
 * const params = init(config("minimind2-small", { hiddenSize: 64 }), random.key(0));
 * ```
 */
export function init(cfg: MiniMindConfig, key: Key, options: InitOptions = {}): MiniMindParams {
  const dt = options.dtype ?? "f32";
  if (!isFloat(dt)) throw new Error(`Cannot init parameters with dtype ${dt}: it must be a float`);
  const flat: Record<string, Tensor> = {};
  paramShapes(cfg).forEach(([name, shape], ord) => {
    const k = foldIn(key, ord);
    const n = shape.reduce((a, b) => a * b, 1);
    if (shape.length === 1) {
      flat[name] = ones(shape, dt); // RMSNorm weight
      return;
    }
    const vals = dt === "f64" ? new Float64Array(n) : new Float32Array(n);
    const isEmbed = name === "model.embed_tokens.weight";
    if (cfg.generation === "minimind3") {
      const z = normalArray(k, n);
      for (let i = 0; i < n; i++) vals[i] = 0.02 * z[i];
    } else if (isEmbed && !cfg.tieWordEmbeddings) {
      const z = normalArray(k, n); // nn.Embedding default N(0, 1)
      for (let i = 0; i < n; i++) vals[i] = z[i];
    } else {
      // kaiming_uniform(a=√5) = U(±1/√fan_in); a tied embedding is lm_head's Linear(H, V)
      const bound = 1 / Math.sqrt(shape[1]);
      const u = uniformArray(k, n);
      for (let i = 0; i < n; i++) vals[i] = (2 * u[i] - 1) * bound;
    }
    flat[name] = tensor(vals, shape, dt);
  });
  return unflatten(flat) as unknown as MiniMindParams;
}

/** Options of `paramsFromFlat`. */
export interface FromFlatOptions {
  /** Reject keys the config does not have (default true; a tied `lm_head.weight` is accepted). */
  strict?: boolean;
}

/**
 * Builds the parameter tree from a flat state-dict-style record (e.g. `loadSafetensors`), checking
 * every key and shape against the config. Tensors are used as they are (not copied).
 *
 * @param cfg model config
 * @param flat record keyed by PyTorch names
 * @param options strictness
 * @returns the parameter tree
 */
export function paramsFromFlat(
  cfg: MiniMindConfig,
  flat: Readonly<Record<string, Tensor>>,
  options: FromFlatOptions = {},
): MiniMindParams {
  const picked: Record<string, Tensor> = {};
  const shapes = paramShapes(cfg);
  for (const [name, shape] of shapes) {
    const t = flat[name];
    if (!t) {
      throw new Error(
        `Cannot load parameters: missing ${name} (expected shape ${fmt(shape)})`,
      );
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new Error(
        `Cannot load parameter ${name}: shape ${fmt(t.shape)} differs from the expected ${
          fmt(shape)
        }`,
      );
    }
    if (!isFloat(t.dtype)) {
      throw new Error(`Cannot load parameter ${name}: dtype ${t.dtype} is not a float type`);
    }
    picked[name] = t;
  }
  if (options.strict ?? true) {
    const known = new Set(shapes.map(([n]) => n));
    if (cfg.tieWordEmbeddings) known.add("lm_head.weight");
    const extra = Object.keys(flat).filter((k) => !known.has(k));
    if (extra.length) {
      throw new Error(
        `Cannot load parameters: ${extra.length} unexpected key(s) for this config: ${
          extra.slice(0, 5).join(", ")
        }${extra.length > 5 ? ", …" : ""}`,
      );
    }
  }
  return unflatten(picked) as unknown as MiniMindParams;
}

// ---------------------------------------------------------------------------------------------
// forward

/** Options of `forward`. */
export interface ForwardOptions {
  /** Keys/values of earlier steps (from a previous `forward`); new tokens go after them. */
  cache?: KvCache | null;
  /** Return the updated cache (default: true when `cache` is given). */
  useCache?: boolean;
  /**
   * 1/0 mask of real tokens: (B, T) for the new tokens (joined to the cache's mask), or
   * (B, S) over cache + new tokens (HF `attention_mask`). Masked keys are never attended to.
   * Right padding needs no mask: causality already hides trailing pads from real tokens.
   */
  attentionMask?: Tensor;
  /** Per-row RoPE positions i32 (B, T) (continuous batching); default: cache length + t. */
  positions?: Tensor;
  /** Only compute logits for the last k positions (0 = all). */
  logitsToKeep?: number;
  /** Training mode: the MoE aux loss is computed (dropout must be 0). */
  train?: boolean;
  /** MoE execution: "auto" (sparse on CPU, dense elsewhere), "sparse" or "dense". */
  moeDispatch?: MoeDispatch;
  /** Also return the residual stream: [embeddings, each block's output, final norm]. */
  outputHiddenStates?: boolean;
  /** Also return each MoE block's routing. */
  outputRouting?: boolean;
  /**
   * LoRA adapters (from `lora.init` / `lora.load`): shorthand for the forward over
   * `lora.apply(params, lora)`, i.e. W·x + B(A(x)) on each adapted Linear, unmerged.
   */
  lora?: Tree;
}

/** What `forward` returns. */
export interface ForwardResult {
  /** Logits (B, T', V), T' = T or logitsToKeep. */
  readonly logits: Tensor;
  /** Sum of the MoE aux losses (scalar; 0 for dense models and outside training). */
  readonly auxLoss: Tensor;
  /** The updated cache, or null when not requested. */
  readonly cache: KvCache | null;
  /** With `outputHiddenStates`: L + 2 tensors (B, T, H). */
  readonly hiddenStates?: Tensor[];
  /** With `outputRouting`: one entry per MoE block. */
  readonly routing?: RouterInfo[];
}

/**
 * The MiniMind forward pass (`MiniMindForCausalLM.forward`): embeddings, L pre-norm blocks
 * (GQA attention with RoPE/YaRN and the KV cache, then MLP or MoE), final RMSNorm, tied lm_head.
 * Pure: params and cache are not modified.
 *
 * @param cfg model config
 * @param params parameter tree (from `init` or `paramsFromFlat`)
 * @param ids token ids, i32 (B, T)
 * @param options cache, mask, positions, logitsToKeep, train
 * @returns logits, aux loss and the new cache
 * @example
 * ```ts
 * import { config, forward, init, random, tensor } from "@minimind/ts";
 * const cfg = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * const params = init(cfg, random.key(0));
 * const { logits } = forward(cfg, params, tensor([[1, 5, 9]], [1, 3], "i32"));
 * ```
 */
export function forward(
  cfg: MiniMindConfig,
  params: MiniMindParams,
  ids: Tensor,
  options: ForwardOptions = {},
): ForwardResult {
  if (ids.rank !== 2 || (ids.dtype !== "i32" && ids.dtype !== "u32")) {
    throw new Error(
      `Cannot run forward on ids ${ids.dtype} ${fmt(ids.shape)}: expected integer ids (B, T)`,
    );
  }
  if (options.lora) params = applyLora(params, options.lora);
  const train = options.train ?? false;
  if (train && cfg.dropout > 0) {
    throw new Error(
      `Cannot train with dropout ${cfg.dropout}: only dropout 0 (the reference default) is supported`,
    );
  }
  const [b, t] = ids.shape;
  const embed = params.model.embed_tokens.weight;
  const dt = embed.dtype, backend = embed.backend;
  const past = options.cache ?? null;
  const s0 = cacheLength(past);
  const s = s0 + t;
  if (past && past.layers.length !== cfg.numHiddenLayers) {
    throw new Error(
      `Cannot use a KV cache of ${past.layers.length} layers with a ${cfg.numHiddenLayers}-layer model`,
    );
  }
  if (past && s0 > 0 && cacheRows(past) !== b) {
    throw new Error(`Cannot use a KV cache of ${cacheRows(past)} rows with ids of ${b} rows`);
  }

  // key mask (B, S): the cache's mask joined with the new tokens' mask
  let mask: Tensor | undefined;
  const am = options.attentionMask;
  if (am) {
    if (am.rank !== 2 || am.shape[0] !== b || (am.shape[1] !== t && am.shape[1] !== s)) {
      throw new Error(
        `Cannot use attention mask ${fmt(am.shape)} with ids ${
          fmt(ids.shape)
        } and ${s0} cached steps: expected [${b}, ${t}] or [${b}, ${s}]`,
      );
    }
    // a new handle (view or cast) so the returned cache never aliases the caller's tensor
    const m = am.dtype === dt ? reshape(am, am.shape) : cast(am, dt); // (B, T) or (B, S)
    mask = am.shape[1] === s ? m : concat([past?.mask ?? ones([b, s0], dt, { backend }), m], 1); // (B, S)
  } else if (past?.mask) {
    mask = concat([past.mask, ones([b, t], dt, { backend })], 1); // (B, S)
  }

  // RoPE tables covering every position used
  const pos = options.positions;
  let rows = s;
  if (pos) {
    if (pos.dtype !== "i32" || pos.rank !== 2 || pos.shape[0] !== b || pos.shape[1] !== t) {
      throw new Error(
        `Cannot use positions ${pos.dtype} ${fmt(pos.shape)}: expected i32 [${b}, ${t}]`,
      );
    }
    // the table must cover the largest position: read it where reading is free (the CPU's
    // arrays), else build the whole table (cached) rather than stall the device
    rows = pos.backend.readSync
      ? (pos.size ? Math.max(...(pos.dataSync() as Int32Array)) + 1 : 1) // sync point (CPU only)
      : cfg.maxPositionEmbeddings;
  }
  const tables = ropeTables(
    {
      headDim: cfg.headDim,
      theta: cfg.ropeTheta,
      end: cfg.maxPositionEmbeddings,
      scaling: cfg.ropeScaling,
    },
    rows,
    dt,
    backend,
  );
  const useCache = options.useCache ?? past !== null;
  const ctx = { tables, offset: s0, positions: pos, mask, cache: useCache || past !== null };

  const hidden: Tensor[] = [];
  const routing: RouterInfo[] = [];
  const kvs: (LayerCache | null)[] = [];
  let h = embedding(embed, ids); // (B, T, H)
  if (options.outputHiddenStates) hidden.push(h);
  let aux: Tensor = full([], 0, dt, { backend }); // ()
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const lp = params.model.layers[l];
    // one scope per block frees the block's intermediates early (the tape keeps what it saves)
    const r = scope(() => {
      const x = rmsNorm(h, lp.input_layernorm.weight, { eps: cfg.rmsNormEps }); // (B, T, H)
      const a = selfAttention(cfg, lp.self_attn, x, ctx, past?.layers[l]);
      const h1 = add(h, a.out); // (B, T, H)
      const x2 = rmsNorm(h1, lp.post_attention_layernorm.weight, { eps: cfg.rmsNormEps }); // (B, T, H)
      if (!cfg.useMoe) {
        const y = mlp(lp.mlp as MlpParams, x2, cfg.hiddenAct); // (B, T, H)
        return { h: add(h1, y), kv: a.kv, aux: null, route: null };
      }
      const m = moe(cfg, lp.mlp as MoeParams, x2, { train, dispatch: options.moeDispatch });
      // routing tensors outlive the block only when asked for
      return {
        h: add(h1, m.y),
        kv: a.kv,
        aux: m.aux,
        route: options.outputRouting ? m.routing : null,
      };
    });
    h = r.h; // (B, T, H)
    kvs.push(r.kv);
    if (r.aux) aux = add(aux, r.aux);
    if (r.route) routing.push(r.route);
    if (options.outputHiddenStates) hidden.push(h);
  }
  h = rmsNorm(h, params.model.norm.weight, { eps: cfg.rmsNormEps }); // (B, T, H)
  if (options.outputHiddenStates) hidden.push(h);
  const keep = options.logitsToKeep ?? 0;
  if (keep > 0 && keep < t) h = sliceAxis(h, 1, t - keep, t); // (B, T', H)
  const head = cfg.tieWordEmbeddings ? embed : params.lm_head?.weight;
  if (!head) {
    throw new Error("Cannot compute logits: params have no lm_head.weight (untied config)");
  }
  const logits = matmul(h, head, { transB: true }); // (B, T', V)

  return {
    logits,
    auxLoss: aux,
    cache: useCache ? { layers: kvs as LayerCache[], mask: mask ?? null } : null,
    ...(options.outputHiddenStates ? { hiddenStates: hidden } : {}),
    ...(options.outputRouting ? { routing } : {}),
  };
}

/**
 * MiniMind's LM loss: cross-entropy of logits[:, t] against labels[:, t+1] (the shift happens
 * here; datasets pass unshifted labels), mean over targets ≠ −100.
 *
 * @param logits (B, T, V)
 * @param labels i32 (B, T), −100 = ignore
 * @returns scalar loss
 * @example
 * ```ts
 * import { lossFromLogits, zeros, tensor } from "@minimind/ts";
 * const loss = lossFromLogits(zeros([1, 3, 8]), tensor([[1, 2, -100]], [1, 3], "i32")); // ln 8
 * ```
 */
export function lossFromLogits(logits: Tensor, labels: Tensor): Tensor {
  const [b, t] = labels.shape;
  if (
    labels.rank !== 2 || labels.dtype !== "i32" || logits.rank !== 3 || logits.shape[0] !== b ||
    logits.shape[1] !== t
  ) {
    throw new Error(
      `Cannot compute the LM loss of logits ${fmt(logits.shape)} with labels ${labels.dtype} ${
        fmt(labels.shape)
      }: expected (B, T, V) and i32 (B, T)`,
    );
  }
  // targets[b, t] = labels[b, t + 1], the last column ignored: shifting the (small) labels
  // instead of slicing the (B, T, V) logits avoids a copy
  const tail = full([b, 1], -100, "i32", { backend: labels.backend }); // (B, 1)
  const targets = t > 1 ? concat([sliceAxis(labels, 1, 1, t), tail], 1) : tail; // (B, T)
  return crossEntropy(logits, targets, { ignoreIndex: -100 });
}
