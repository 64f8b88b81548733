/**
 * A MiniMind config from a bare state dict (a `.pth` holds no config): the sizes the tensor shapes
 * determine are read from them, the rest come from MiniMind's model flags (`--hidden_size`,
 * `--num_hidden_layers`, `--num_attention_heads`, `--num_key_value_heads`, `--use_moe`,
 * `--preset`, …) and the preset's defaults. A flag that contradicts the shapes is an error naming
 * the flag and the value the weights need.
 * @module
 */
import {
  config as makeConfig,
  type ConfigOverrides,
  type MiniMindConfig,
  type PresetName,
  PRESETS,
} from "../nn/model/minimind_config.ts";

/** Model flags as MiniMind's scripts spell them (all optional). */
export interface ModelFlags {
  /** `--preset` (default: minimind2-small, or minimind3 when the weights have QK-norm). */
  preset?: PresetName;
  /** `--hidden_size`. */
  hidden_size?: number;
  /** `--num_hidden_layers`. */
  num_hidden_layers?: number;
  /** `--num_attention_heads` (minimind2: the shapes cannot tell it). */
  num_attention_heads?: number;
  /** `--num_key_value_heads`. */
  num_key_value_heads?: number;
  /** `--use_moe` (0/1 or boolean). */
  use_moe?: number | boolean;
  /** `--intermediate_size`. */
  intermediate_size?: number;
  /** `--num_experts_per_tok`. */
  num_experts_per_tok?: number;
  /** `--rope_theta`. */
  rope_theta?: number;
  /** `--max_position_embeddings`. */
  max_position_embeddings?: number;
  /** `--rms_norm_eps`. */
  rms_norm_eps?: number;
}

/**
 * Infers the config of a MiniMind state dict from its tensor shapes plus `flags`.
 *
 * Determined by the shapes: generation (QK-norm weights → minimind3), vocab and hidden size
 * (embedding), layer count, MLP/expert widths, MoE on/off and expert counts, head width
 * (minimind3's q_norm), key/value heads, and tying (an `lm_head.weight` with other values than the
 * embedding → untied). minimind2's query-head count is not visible in the shapes (q_proj is always
 * H × H) and comes from `--num_attention_heads` (default 8).
 *
 * @param shapes tensor shapes by state-dict key
 * @param flags MiniMind's model flags
 * @param tied whether lm_head equals the embedding (when both are present), default true
 * @returns the resolved config
 */
export function inferConfig(
  shapes: Readonly<Record<string, readonly number[]>>,
  flags: ModelFlags = {},
  tied = true,
): MiniMindConfig {
  const fail = (msg: string): never => {
    throw new Error(`Cannot infer the model config from the weights: ${msg}`);
  };
  const shape = (k: string): readonly number[] => shapes[k] ?? fail(`${k} is missing`);
  const fmt = (k: string) => `${k} [${shape(k).join(", ")}]`;
  const [vocab, hidden] = shape("model.embed_tokens.weight");
  let layers = 0;
  for (const k of Object.keys(shapes)) {
    const m = /^model\.layers\.(\d+)\./.exec(k);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (!layers) fail("no model.layers.N.* keys");
  const m3 = "model.layers.0.self_attn.q_norm.weight" in shapes;
  const gen = m3 ? "minimind3" : "minimind2";
  const preset: PresetName = flags.preset ?? (m3 ? "minimind3" : "minimind2-small");
  if (!PRESETS[preset]) fail(`unknown --preset ${preset}`);
  if (PRESETS[preset].generation !== gen) {
    fail(
      `--preset ${preset} is a ${PRESETS[preset].generation} model, but the weights are ${gen} (${
        m3 ? "they have" : "they lack"
      } self_attn.q_norm); set --preset ${m3 ? "minimind3" : "minimind2-small"}`,
    );
  }
  const agree = (flag: keyof ModelFlags, given: unknown, actual: number, why: string) => {
    if (given !== undefined && Number(given) !== actual) {
      fail(`--${flag} ${given} disagrees with ${why}; set --${flag} ${actual} (or drop it)`);
    }
  };
  agree("hidden_size", flags.hidden_size, hidden, fmt("model.embed_tokens.weight"));
  agree("num_hidden_layers", flags.num_hidden_layers, layers, `the ${layers} layers in the file`);
  const p0 = "model.layers.0.";
  const qRows = shape(p0 + "self_attn.q_proj.weight")[0];
  const kRows = shape(p0 + "self_attn.k_proj.weight")[0];
  let heads: number, headDim: number;
  if (m3) {
    headDim = shape(p0 + "self_attn.q_norm.weight")[0];
    heads = qRows / headDim;
    agree(
      "num_attention_heads",
      flags.num_attention_heads,
      heads,
      `${fmt(p0 + "self_attn.q_proj.weight")} / head_dim ${headDim}`,
    );
  } else {
    heads = flags.num_attention_heads ?? 8;
    if (hidden % heads !== 0) {
      fail(
        `--num_attention_heads ${heads} does not divide hidden_size ${hidden}; set --num_attention_heads to the trained value`,
      );
    }
    headDim = hidden / heads;
  }
  const kvHeads = kRows / headDim;
  if (!Number.isInteger(kvHeads)) {
    fail(
      `${
        fmt(p0 + "self_attn.k_proj.weight")
      } is not a whole number of ${headDim}-wide heads; set --num_attention_heads to the trained value`,
    );
  }
  agree(
    "num_key_value_heads",
    flags.num_key_value_heads,
    kvHeads,
    `${fmt(p0 + "self_attn.k_proj.weight")} / head_dim ${headDim}`,
  );
  const moe = `${p0}mlp.gate.weight` in shapes;
  if (flags.use_moe !== undefined && Boolean(Number(flags.use_moe)) !== moe) {
    fail(
      `--use_moe ${flags.use_moe} disagrees with the weights, which ${
        moe ? "have" : "lack"
      } mlp.gate/mlp.experts; set --use_moe ${moe ? 1 : 0}`,
    );
  }
  const o: ConfigOverrides = {
    generation: gen,
    vocabSize: vocab,
    hiddenSize: hidden,
    numHiddenLayers: layers,
    numAttentionHeads: heads,
    numKeyValueHeads: kvHeads,
    useMoe: moe,
    tieWordEmbeddings: tied || !("lm_head.weight" in shapes),
  };
  if (m3) o.headDim = headDim;
  if (!moe) {
    o.intermediateSize = shape(p0 + "mlp.gate_proj.weight")[0];
    agree(
      "intermediate_size",
      flags.intermediate_size,
      o.intermediateSize,
      fmt(p0 + "mlp.gate_proj.weight"),
    );
  } else {
    const experts = shape(p0 + "mlp.gate.weight")[0];
    const width = shape(p0 + "mlp.experts.0.gate_proj.weight")[0];
    if (m3) {
      o.numExperts = experts;
      o.moeIntermediateSize = width;
      if (flags.intermediate_size !== undefined) o.intermediateSize = flags.intermediate_size;
    } else {
      o.nRoutedExperts = experts;
      o.intermediateSize = width;
      let shared = 0;
      while (`${p0}mlp.shared_experts.${shared}.gate_proj.weight` in shapes) shared++;
      o.nSharedExperts = shared;
    }
  }
  if (flags.num_experts_per_tok !== undefined) o.numExpertsPerTok = flags.num_experts_per_tok;
  if (flags.rope_theta !== undefined) o.ropeTheta = flags.rope_theta;
  if (flags.max_position_embeddings !== undefined) {
    o.maxPositionEmbeddings = flags.max_position_embeddings;
  }
  if (flags.rms_norm_eps !== undefined) o.rmsNormEps = flags.rms_norm_eps;
  return makeConfig(preset, o);
}
