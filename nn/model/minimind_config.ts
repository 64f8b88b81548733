/**
 * MiniMind configuration: the two reference generations (MiniMind2 = the V2 code line, the
 * default family; minimind-3 = HEAD), the five presets, the derived-size rules and HF
 * `config.json` I/O. Field names are the camelCase of the HF names (`hidden_size` → `hiddenSize`).
 * @module
 */

/** Which reference code line a config follows. */
export type Generation = "minimind2" | "minimind3";

/** Names accepted by `config`. */
export type PresetName =
  | "minimind2-small"
  | "minimind2"
  | "minimind2-moe"
  | "minimind3"
  | "minimind3-moe";

/** YaRN parameters (`rope_scaling` in HF configs). */
export interface RopeScaling {
  /** Always "yarn". */
  readonly type: "yarn";
  /** Context-extension factor (16). */
  readonly factor: number;
  /** Trained context length (2048). */
  readonly originalMaxPositionEmbeddings: number;
  /** High-frequency boundary in rotations (32). */
  readonly betaFast: number;
  /** Low-frequency boundary in rotations (1). */
  readonly betaSlow: number;
  /** cos/sin magnitude factor (1.0). */
  readonly attentionFactor: number;
}

/** Activation of the gated MLP: silu = SwiGLU (reference); sigmoid = GLU, up(x)·σ(gate(x)). */
export type HiddenAct = "silu" | "sigmoid";

/**
 * A resolved MiniMind config: every field of both generations, derived sizes filled in. Static:
 * it never goes into the parameter tree.
 */
export interface MiniMindConfig {
  /** Reference generation (QK-norm, MoE style, init, size rules). */
  readonly generation: Generation;
  /** Model width H. */
  readonly hiddenSize: number;
  /** Number of decoder blocks L. */
  readonly numHiddenLayers: number;
  /** Query heads NH. */
  readonly numAttentionHeads: number;
  /** Key/value heads NKV (GQA). */
  readonly numKeyValueHeads: number;
  /** Head width HD (minimind2: always H/NH). */
  readonly headDim: number;
  /** Vocabulary size V. */
  readonly vocabSize: number;
  /** Dense MLP width I (derived by the generation's rule unless given). */
  readonly intermediateSize: number;
  /** MLP activation; "silu" (default) is the reference SwiGLU. */
  readonly hiddenAct: HiddenAct;
  /** RoPE table length. */
  readonly maxPositionEmbeddings: number;
  /** RMSNorm epsilon (1e-5 minimind2, 1e-6 minimind3). */
  readonly rmsNormEps: number;
  /** RoPE base θ. */
  readonly ropeTheta: number;
  /** Dropout probability (only 0 is supported for training). */
  readonly dropout: number;
  /** Reference flag for the SDPA path (no effect here: the fused attention is always used). */
  readonly flashAttn: boolean;
  /** `<|im_start|>` id. */
  readonly bosTokenId: number;
  /** `<|im_end|>` id. */
  readonly eosTokenId: number;
  /** lm_head shares the embedding matrix (always true in minimind2). */
  readonly tieWordEmbeddings: boolean;
  /** Turns YaRN on. */
  readonly inferenceRopeScaling: boolean;
  /** YaRN parameters when `inferenceRopeScaling`, else null. */
  readonly ropeScaling: RopeScaling | null;
  /** Replace every MLP by a mixture of experts. */
  readonly useMoe: boolean;
  /** Experts per token k (minimind2 default 2, minimind3 default 1). */
  readonly numExpertsPerTok: number;
  /** Renormalise the top-k weights. */
  readonly normTopkProb: boolean;
  /** minimind3: number of experts E. */
  readonly numExperts: number;
  /** minimind3: expert MLP width (defaults to intermediateSize). */
  readonly moeIntermediateSize: number;
  /** minimind3: token-level load-balancing coefficient. */
  readonly routerAuxLossCoef: number;
  /** minimind2: routed experts E. */
  readonly nRoutedExperts: number;
  /** minimind2: always-on shared experts. */
  readonly nSharedExperts: number;
  /** minimind2: router scoring ("softmax" only). */
  readonly scoringFunc: "softmax";
  /** minimind2: load-balancing coefficient. */
  readonly auxLossAlpha: number;
  /** minimind2: per-sequence (true) or batch-level (false) aux loss. */
  readonly seqAux: boolean;
}

/** Fields that may be overridden (derived ones included: given values win over the rules). */
export type ConfigOverrides = {
  -readonly [K in keyof MiniMindConfig]?: K extends "ropeScaling" ? Partial<RopeScaling> | null
    : MiniMindConfig[K];
};

/** The reference YaRN parameters (minimind2 and minimind3 agree). */
export const YARN_DEFAULTS: RopeScaling = Object.freeze({
  type: "yarn",
  factor: 16,
  originalMaxPositionEmbeddings: 2048,
  betaFast: 32,
  betaSlow: 1,
  attentionFactor: 1.0,
});

/** Generation defaults before derivation (derived sizes left undefined). */
const BASE: Record<Generation, ConfigOverrides> = {
  minimind2: {
    generation: "minimind2",
    hiddenSize: 512,
    numHiddenLayers: 8,
    numAttentionHeads: 8,
    numKeyValueHeads: 2,
    vocabSize: 6400,
    hiddenAct: "silu",
    maxPositionEmbeddings: 32768,
    rmsNormEps: 1e-5,
    ropeTheta: 1e6,
    dropout: 0,
    flashAttn: true,
    bosTokenId: 1,
    eosTokenId: 2,
    tieWordEmbeddings: true,
    inferenceRopeScaling: false,
    useMoe: false,
    numExpertsPerTok: 2,
    normTopkProb: true,
    numExperts: 4,
    routerAuxLossCoef: 5e-4,
    nRoutedExperts: 4,
    nSharedExperts: 1,
    scoringFunc: "softmax",
    auxLossAlpha: 0.01,
    seqAux: true,
  },
  minimind3: {
    generation: "minimind3",
    hiddenSize: 768,
    numHiddenLayers: 8,
    numAttentionHeads: 8,
    numKeyValueHeads: 4,
    vocabSize: 6400,
    hiddenAct: "silu",
    maxPositionEmbeddings: 32768,
    rmsNormEps: 1e-6,
    ropeTheta: 1e6,
    dropout: 0,
    flashAttn: true,
    bosTokenId: 1,
    eosTokenId: 2,
    tieWordEmbeddings: true,
    inferenceRopeScaling: false,
    useMoe: false,
    numExpertsPerTok: 1,
    normTopkProb: true,
    numExperts: 4,
    routerAuxLossCoef: 5e-4,
    nRoutedExperts: 4,
    nSharedExperts: 1,
    scoringFunc: "softmax",
    auxLossAlpha: 0.01,
    seqAux: true,
  },
};

/** The presets: a generation plus the fields that differ from its defaults. */
export const PRESETS: Readonly<Record<PresetName, ConfigOverrides>> = Object.freeze({
  // MiniMind2-Small, 25.83M
  "minimind2-small": { generation: "minimind2" },
  // MiniMind2, 104M
  "minimind2": { generation: "minimind2", hiddenSize: 768, numHiddenLayers: 16 },
  // MiniMind2-MoE, 145M (4 routed top-2 + 1 shared)
  "minimind2-moe": { generation: "minimind2", hiddenSize: 640, useMoe: true },
  // minimind-3, 64M
  "minimind3": { generation: "minimind3" },
  // minimind-3-moe, 198M-A64M (4 experts top-1)
  "minimind3-moe": { generation: "minimind3", useMoe: true },
});

/**
 * Dense MLP width by the generation's rule. minimind2: 64·ceil(int(8H/3)/64) (1408 at 512);
 * minimind3: ceil(H·π/64)·64 (2432 at 768).
 *
 * @param generation reference generation
 * @param hiddenSize H
 * @returns the intermediate size
 */
export function defaultIntermediateSize(generation: Generation, hiddenSize: number): number {
  if (generation === "minimind2") return 64 * Math.ceil(Math.trunc((hiddenSize * 8) / 3) / 64);
  return Math.ceil((hiddenSize * Math.PI) / 64) * 64;
}

const KEYS: readonly (keyof MiniMindConfig)[] = [
  "generation",
  "hiddenSize",
  "numHiddenLayers",
  "numAttentionHeads",
  "numKeyValueHeads",
  "headDim",
  "vocabSize",
  "intermediateSize",
  "hiddenAct",
  "maxPositionEmbeddings",
  "rmsNormEps",
  "ropeTheta",
  "dropout",
  "flashAttn",
  "bosTokenId",
  "eosTokenId",
  "tieWordEmbeddings",
  "inferenceRopeScaling",
  "ropeScaling",
  "useMoe",
  "numExpertsPerTok",
  "normTopkProb",
  "numExperts",
  "moeIntermediateSize",
  "routerAuxLossCoef",
  "nRoutedExperts",
  "nSharedExperts",
  "scoringFunc",
  "auxLossAlpha",
  "seqAux",
];

function isPosInt(x: unknown): boolean {
  return typeof x === "number" && Number.isInteger(x) && x > 0;
}

/** Fills derived fields and validates; throws naming the field and value. */
function resolve(o: ConfigOverrides, what: string): MiniMindConfig {
  for (const k of Object.keys(o)) {
    if (!(KEYS as readonly string[]).includes(k)) {
      throw new Error(`Cannot build ${what}: unknown config field "${k}"`);
    }
  }
  const gen = o.generation ?? "minimind2";
  if (gen !== "minimind2" && gen !== "minimind3") {
    throw new Error(`Cannot build ${what}: generation "${gen}" is not minimind2 or minimind3`);
  }
  const m: ConfigOverrides = { ...BASE[gen], ...o, generation: gen };
  const h = m.hiddenSize!, nh = m.numAttentionHeads!, nkv = m.numKeyValueHeads!;
  for (
    const k of [
      "hiddenSize",
      "numHiddenLayers",
      "numAttentionHeads",
      "numKeyValueHeads",
      "vocabSize",
      "maxPositionEmbeddings",
      "numExpertsPerTok",
      "numExperts",
      "nRoutedExperts",
    ] as const
  ) {
    if (!isPosInt(m[k])) {
      throw new Error(`Cannot build ${what}: ${k} must be a positive integer, got ${m[k]}`);
    }
  }
  if (nh % nkv !== 0) {
    throw new Error(
      `Cannot build ${what}: numAttentionHeads ${nh} is not a multiple of numKeyValueHeads ${nkv}`,
    );
  }
  const derivedHd = Math.floor(h / nh);
  if (m.headDim === undefined) {
    if (h % nh !== 0) {
      throw new Error(
        `Cannot build ${what}: hiddenSize ${h} is not divisible by numAttentionHeads ${nh}`,
      );
    }
    m.headDim = derivedHd;
  } else if (gen === "minimind2" && m.headDim !== h / nh) {
    throw new Error(
      `Cannot build ${what}: minimind2 has headDim = hiddenSize/numAttentionHeads = ${
        h / nh
      }, got ${m.headDim}`,
    );
  }
  if (!isPosInt(m.headDim) || m.headDim! % 2 !== 0) {
    throw new Error(
      `Cannot build ${what}: headDim must be a positive even integer, got ${m.headDim}`,
    );
  }
  m.intermediateSize ??= defaultIntermediateSize(gen, h);
  m.moeIntermediateSize ??= m.intermediateSize;
  for (const k of ["intermediateSize", "moeIntermediateSize"] as const) {
    if (!isPosInt(m[k])) {
      throw new Error(`Cannot build ${what}: ${k} must be a positive integer, got ${m[k]}`);
    }
  }
  if (m.hiddenAct !== "silu" && m.hiddenAct !== "sigmoid") {
    throw new Error(`Cannot build ${what}: hiddenAct "${m.hiddenAct}" is not silu or sigmoid`);
  }
  if (m.scoringFunc !== "softmax") {
    throw new Error(
      `Cannot build ${what}: scoringFunc "${m.scoringFunc}" is not supported (only softmax)`,
    );
  }
  if (
    !(typeof m.nSharedExperts === "number" && Number.isInteger(m.nSharedExperts) &&
      m.nSharedExperts >= 0)
  ) {
    throw new Error(`Cannot build ${what}: nSharedExperts must be >= 0, got ${m.nSharedExperts}`);
  }
  const experts = gen === "minimind2" ? m.nRoutedExperts! : m.numExperts!;
  if (m.useMoe && m.numExpertsPerTok! > experts) {
    throw new Error(
      `Cannot build ${what}: numExpertsPerTok ${m.numExpertsPerTok} exceeds the ${experts} experts`,
    );
  }
  if (!(m.dropout! >= 0 && m.dropout! < 1)) {
    throw new Error(`Cannot build ${what}: dropout must be in [0, 1), got ${m.dropout}`);
  }
  if (m.inferenceRopeScaling) {
    const given = (m.ropeScaling ?? {}) as Partial<RopeScaling>;
    m.ropeScaling = { ...YARN_DEFAULTS, ...given, type: "yarn" };
  } else m.ropeScaling = null;
  const out: Record<string, unknown> = {};
  for (const k of KEYS) out[k] = m[k];
  return Object.freeze(out) as unknown as MiniMindConfig;
}

/**
 * A config from a preset and overrides. Derived sizes (headDim, intermediateSize,
 * moeIntermediateSize) follow the preset's generation rules unless given.
 *
 * @param preset preset name (default "minimind2-small")
 * @param overrides fields to change (camelCase HF names)
 * @returns the resolved, frozen config
 * @example
 * ```ts
 * import { config } from "@minimind/ts";
 * const cfg = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * cfg.intermediateSize; // 192 = 64·ceil(int(64·8/3)/64)
 * ```
 */
export function config(
  preset: PresetName = "minimind2-small",
  overrides: ConfigOverrides = {},
): MiniMindConfig {
  const p = PRESETS[preset];
  if (!p) {
    throw new Error(
      `Cannot build config "${preset}": unknown preset (expected one of ${
        Object.keys(PRESETS).join(", ")
      })`,
    );
  }
  if (overrides.generation && overrides.generation !== p.generation) {
    throw new Error(
      `Cannot build config "${preset}": it is a ${p.generation} preset, got generation ${overrides.generation}`,
    );
  }
  return resolve({ ...p, ...overrides }, `config "${preset}"`);
}

// ---------------------------------------------------------------------------------------------
// HF config.json I/O

/** HF field names written for each generation (the reference config object's attributes). */
const HF_FIELDS: Record<Generation, readonly string[]> = {
  minimind2: [
    "aux_loss_alpha",
    "bos_token_id",
    "dropout",
    "eos_token_id",
    "flash_attn",
    "hidden_act",
    "hidden_size",
    "inference_rope_scaling",
    "intermediate_size",
    "max_position_embeddings",
    "n_routed_experts",
    "n_shared_experts",
    "norm_topk_prob",
    "num_attention_heads",
    "num_experts_per_tok",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_scaling",
    "rope_theta",
    "scoring_func",
    "seq_aux",
    "use_moe",
    "vocab_size",
  ],
  minimind3: [
    "bos_token_id",
    "dropout",
    "eos_token_id",
    "flash_attn",
    "head_dim",
    "hidden_act",
    "hidden_size",
    "inference_rope_scaling",
    "intermediate_size",
    "max_position_embeddings",
    "moe_intermediate_size",
    "norm_topk_prob",
    "num_attention_heads",
    "num_experts",
    "num_experts_per_tok",
    "num_hidden_layers",
    "num_key_value_heads",
    "rms_norm_eps",
    "rope_scaling",
    "rope_theta",
    "router_aux_loss_coef",
    "tie_word_embeddings",
    "use_moe",
    "vocab_size",
  ],
};

/** Fields only the minimind2 config object has (their presence selects minimind2). */
const V2_MARKERS = [
  "n_routed_experts",
  "n_shared_experts",
  "aux_loss_alpha",
  "seq_aux",
  "scoring_func",
];
/** Fields only the minimind3 config object has. */
const M3_MARKERS = ["num_experts", "moe_intermediate_size", "router_aux_loss_coef", "head_dim"];

function camel(snake: string): string {
  return snake.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
}

function snake(camelName: string): string {
  return camelName.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());
}

/** Options of `configFromHF`. */
export interface ConfigFromHFOptions {
  /** Force a generation (default: inferred from the fields, else minimind2). */
  generation?: Generation;
}

/**
 * Reads an HF `config.json` object (MiniMind field names) of either generation. Unknown fields
 * (`architectures`, `max_seq_len`, …) are ignored, as `PretrainedConfig` stores them without
 * effect. The generation is inferred from generation-only fields when not given.
 *
 * @param json the parsed config.json
 * @param options generation override
 * @returns the resolved config
 * @example
 * ```ts
 * import { configFromHF } from "@minimind/ts";
 * const cfg = configFromHF({ hidden_size: 768, num_hidden_layers: 16, n_routed_experts: 4 });
 * cfg.generation; // "minimind2"
 * ```
 */
export function configFromHF(
  json: Record<string, unknown>,
  options: ConfigFromHFOptions = {},
): MiniMindConfig {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new Error(`Cannot read an HF config from ${JSON.stringify(json)}: expected an object`);
  }
  const gen: Generation = options.generation ??
    (V2_MARKERS.some((k) => k in json)
      ? "minimind2"
      : M3_MARKERS.some((k) => k in json)
      ? "minimind3"
      : "minimind2");
  const o: Record<string, unknown> = { generation: gen };
  const known = new Set([...HF_FIELDS.minimind2, ...HF_FIELDS.minimind3]);
  for (const [k, v] of Object.entries(json)) {
    if (!known.has(k) || v === null || v === undefined) continue;
    if (k === "rope_scaling") {
      const r = v as Record<string, unknown>;
      const rs: Record<string, unknown> = {};
      for (const [rk, rv] of Object.entries(r)) rs[camel(rk)] = rv;
      if (rs.type !== undefined && rs.type !== "yarn") {
        throw new Error(`Cannot read rope_scaling of type "${rs.type}": only yarn is supported`);
      }
      o.ropeScaling = rs;
    } else o[camel(k)] = v;
  }
  // the reference config derives head_dim itself in minimind2 (not a field there)
  if (gen === "minimind2") delete o.headDim;
  return resolve(o as ConfigOverrides, "config from HF json");
}

/**
 * Writes the HF `config.json` object of a config: the reference config object's fields for its
 * generation (snake_case) plus `model_type: "minimind"`.
 *
 * @param cfg the config
 * @returns a JSON-ready object
 */
export function configToHF(cfg: MiniMindConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { model_type: "minimind" };
  for (const k of HF_FIELDS[cfg.generation]) {
    if (k === "rope_scaling") {
      const r = cfg.ropeScaling;
      out[k] = r === null ? null : {
        beta_fast: r.betaFast,
        beta_slow: r.betaSlow,
        factor: r.factor,
        original_max_position_embeddings: r.originalMaxPositionEmbeddings,
        attention_factor: r.attentionFactor,
        type: r.type,
      };
      continue;
    }
    out[k] = (cfg as unknown as Record<string, unknown>)[camel(k)];
  }
  // extensions the minimind2 object cannot express otherwise
  if (cfg.generation === "minimind2" && !cfg.tieWordEmbeddings) out.tie_word_embeddings = false;
  return out;
}

/** @internal snake_case of a config field (error messages, CLI flags). */
export function hfName(field: keyof MiniMindConfig): string {
  return snake(field);
}
