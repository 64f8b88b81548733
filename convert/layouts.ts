/**
 * The stock transformers architectures a MiniMind model maps onto, as MiniMind's
 * `scripts/convert_model.py` does: `LlamaForCausalLM` for MiniMind2 dense
 * (`convert_torch2transformers_llama`), `Qwen3ForCausalLM` / `Qwen3MoeForCausalLM` for minimind-3
 * (`convert_torch2transformers`), and MiniMind's own layout with `auto_map`
 * (`convert_torch2transformers_minimind`). MiniMind's state-dict names already equal Llama's and
 * Qwen3's, so only config.json differs; Qwen3-MoE checkpoints written by transformers ≥ 5 with
 * fused experts (`mlp.experts.gate_up_proj` [E, 2I, H], `mlp.experts.down_proj` [E, H, I]) are
 * split back into per-expert weights when read.
 * @module
 */
import {
  config as makeConfig,
  configFromHF,
  configToHF,
  type MiniMindConfig,
} from "../nn/model/minimind_config.ts";
import type { RawTensor } from "./safetensors.ts";

/** HF folder layouts `saveModel` writes. */
export type HfLayout = "minimind" | "llama" | "qwen3";

/** Float dtypes of exported weights. */
export type ExportDType = "f32" | "f16" | "bf16";

const TORCH_DTYPE: Record<ExportDType, string> = {
  f32: "float32",
  f16: "float16",
  bf16: "bfloat16",
};

function ropeScalingHF(cfg: MiniMindConfig): Record<string, unknown> | null {
  const r = cfg.ropeScaling;
  return r === null ? null : {
    rope_type: "yarn",
    factor: r.factor,
    original_max_position_embeddings: r.originalMaxPositionEmbeddings,
    beta_fast: r.betaFast,
    beta_slow: r.betaSlow,
    attention_factor: r.attentionFactor,
  };
}

/**
 * Which stock layout a model can be exported to, or why not.
 *
 * @param cfg model config
 * @param layout requested layout
 * @returns null when possible, else the reason
 */
export function layoutProblem(cfg: MiniMindConfig, layout: HfLayout): string | null {
  if (layout === "minimind") return null;
  if (layout === "llama") {
    if (cfg.generation !== "minimind2") {
      return `the llama layout is for MiniMind2 models; this one is ${cfg.generation} (QK-norm): use --to qwen3`;
    }
    if (cfg.useMoe) {
      return "MiniMind2-MoE (shared experts) has no stock transformers architecture: use --to minimind";
    }
    return null;
  }
  if (cfg.generation !== "minimind3") {
    return `the qwen3 layout is for minimind-3 models (QK-norm); this one is ${cfg.generation}: use --to llama`;
  }
  return null;
}

/**
 * The `config.json` of an export in `layout`.
 *
 * @param cfg model config
 * @param layout target layout
 * @param dtype stored weight dtype
 * @returns the JSON object
 */
export function hfConfigFor(
  cfg: MiniMindConfig,
  layout: HfLayout,
  dtype: ExportDType = "f32",
): Record<string, unknown> {
  const problem = layoutProblem(cfg, layout);
  if (problem) throw new Error(`Cannot export to the ${layout} layout: ${problem}`);
  const td = TORCH_DTYPE[dtype];
  if (layout === "minimind") {
    return {
      architectures: ["MiniMindForCausalLM"],
      auto_map: {
        AutoConfig: "model_minimind.MiniMindConfig",
        AutoModelForCausalLM: "model_minimind.MiniMindForCausalLM",
      },
      ...configToHF(cfg),
      torch_dtype: td,
    };
  }
  const common: Record<string, unknown> = {
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    num_key_value_heads: cfg.numKeyValueHeads,
    head_dim: cfg.headDim,
    hidden_act: cfg.hiddenAct,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    rms_norm_eps: cfg.rmsNormEps,
    rope_theta: cfg.ropeTheta,
    rope_scaling: ropeScalingHF(cfg),
    tie_word_embeddings: cfg.tieWordEmbeddings,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    attention_bias: false,
    attention_dropout: 0.0,
    initializer_range: 0.02,
    use_cache: true,
    torch_dtype: td,
    dtype: td,
  };
  if (layout === "llama") {
    return {
      architectures: ["LlamaForCausalLM"],
      model_type: "llama",
      ...common,
      mlp_bias: false,
      pretraining_tp: 1,
    };
  }
  const qwen: Record<string, unknown> = {
    ...common,
    use_sliding_window: false,
    sliding_window: null,
    max_window_layers: cfg.numHiddenLayers,
  };
  if (!cfg.useMoe) return { architectures: ["Qwen3ForCausalLM"], model_type: "qwen3", ...qwen };
  return {
    architectures: ["Qwen3MoeForCausalLM"],
    model_type: "qwen3_moe",
    ...qwen,
    num_experts: cfg.numExperts,
    num_experts_per_tok: cfg.numExpertsPerTok,
    moe_intermediate_size: cfg.moeIntermediateSize,
    norm_topk_prob: cfg.normTopkProb,
    decoder_sparse_step: 1,
    mlp_only_layers: [],
    router_aux_loss_coef: cfg.routerAuxLossCoef,
    output_router_logits: false,
  };
}

function num(json: Record<string, unknown>, k: string, file: string): number {
  const v = json[k];
  if (typeof v !== "number") {
    throw new Error(`Cannot read ${file}: ${k} is ${JSON.stringify(v)}, not a number`);
  }
  return v;
}

/**
 * Reads a `config.json` of any supported layout: MiniMind's own (`model_type` "minimind"),
 * `llama`, `qwen3` or `qwen3_moe`. Fields a MiniMind model cannot express (biases, sliding
 * windows, dense layers inside a MoE stack, head widths other than H/NH for Llama) are refused.
 *
 * @param json the parsed config.json
 * @param file its path (error messages)
 * @returns the MiniMind config
 */
export function configFromAnyHF(
  json: Record<string, unknown>,
  file = "config.json",
): MiniMindConfig {
  const type = json.model_type;
  if (type === undefined || type === "minimind") return configFromHF(json);
  if (type !== "llama" && type !== "qwen3" && type !== "qwen3_moe") {
    throw new Error(
      `Cannot read ${file}: model_type "${type}" is not minimind, llama, qwen3 or qwen3_moe`,
    );
  }
  for (const k of ["attention_bias", "mlp_bias", "use_sliding_window"]) {
    if (json[k] === true) {
      throw new Error(`Cannot read ${file}: ${k} = true is not a MiniMind model`);
    }
  }
  const params = (json.rope_parameters ?? {}) as Record<string, unknown>;
  const theta = json.rope_theta ?? params.rope_theta ?? 10000;
  const scaling = (json.rope_scaling ?? (params.rope_type === "yarn" ? params : null)) as
    | Record<string, unknown>
    | null;
  if (
    scaling && scaling.rope_type !== "yarn" && scaling.type !== "yarn" &&
    scaling.rope_type !== "default"
  ) {
    throw new Error(`Cannot read ${file}: rope_scaling ${JSON.stringify(scaling)} is not yarn`);
  }
  const yarn = scaling && (scaling.rope_type === "yarn" || scaling.type === "yarn");
  const h = num(json, "hidden_size", file), nh = num(json, "num_attention_heads", file);
  const o: Record<string, unknown> = {
    vocabSize: num(json, "vocab_size", file),
    hiddenSize: h,
    intermediateSize: num(json, "intermediate_size", file),
    numHiddenLayers: num(json, "num_hidden_layers", file),
    numAttentionHeads: nh,
    numKeyValueHeads: json.num_key_value_heads ?? nh,
    hiddenAct: json.hidden_act ?? "silu",
    maxPositionEmbeddings: json.max_position_embeddings ?? 2048,
    rmsNormEps: json.rms_norm_eps ?? 1e-6,
    ropeTheta: theta,
    tieWordEmbeddings: json.tie_word_embeddings ?? false,
    bosTokenId: json.bos_token_id ?? 1,
    eosTokenId: Array.isArray(json.eos_token_id) ? json.eos_token_id[0] : json.eos_token_id ?? 2,
    inferenceRopeScaling: Boolean(yarn),
  };
  if (yarn) {
    o.ropeScaling = {
      factor: scaling!.factor,
      originalMaxPositionEmbeddings: scaling!.original_max_position_embeddings,
      betaFast: scaling!.beta_fast ?? 32,
      betaSlow: scaling!.beta_slow ?? 1,
      attentionFactor: scaling!.attention_factor ?? 1.0,
    };
  }
  if (type === "llama") {
    if (json.head_dim != null && json.head_dim !== h / nh) {
      throw new Error(
        `Cannot read ${file}: head_dim ${json.head_dim} ≠ hidden_size/num_attention_heads = ${
          h / nh
        } (MiniMind2 has no head_dim)`,
      );
    }
    return makeConfig("minimind2-small", o);
  }
  o.headDim = json.head_dim ?? h / nh;
  if (type === "qwen3_moe") {
    const only = json.mlp_only_layers as unknown[] | undefined;
    if ((json.decoder_sparse_step ?? 1) !== 1 || (only && only.length)) {
      throw new Error(
        `Cannot read ${file}: decoder_sparse_step ${json.decoder_sparse_step} / mlp_only_layers ${
          JSON.stringify(only)
        } mix dense and MoE layers, which MiniMind does not`,
      );
    }
    o.useMoe = true;
    o.numExperts = num(json, "num_experts", file);
    o.numExpertsPerTok = num(json, "num_experts_per_tok", file);
    o.moeIntermediateSize = num(json, "moe_intermediate_size", file);
    o.normTopkProb = json.norm_topk_prob ?? false;
    if (typeof json.router_aux_loss_coef === "number") {
      o.routerAuxLossCoef = json.router_aux_loss_coef;
    }
  }
  return makeConfig("minimind3", o);
}

/**
 * Splits transformers-5 fused Qwen3-MoE expert tensors into MiniMind's per-expert names (in
 * place): `…mlp.experts.gate_up_proj` [E, 2I, H] → `…mlp.experts.{e}.gate_proj.weight` [I, H] and
 * `…up_proj.weight`; `…mlp.experts.down_proj` [E, H, I] → `…mlp.experts.{e}.down_proj.weight`.
 *
 * @param flat raw tensors by name
 * @returns the same record
 */
export function unfuseExperts(flat: Record<string, RawTensor>): Record<string, RawTensor> {
  for (const name of Object.keys(flat)) {
    const m = /^(.*\.mlp\.experts)\.(gate_up_proj|down_proj)$/.exec(name);
    if (!m) continue;
    const t = flat[name];
    if (t.shape.length !== 3) {
      throw new Error(`Cannot split ${name}: shape [${t.shape}] is not [experts, out, in]`);
    }
    const [e, rows, cols] = t.shape;
    const eb = t.data.length / (e * rows * cols);
    const slice = (ex: number, r0: number, r1: number): RawTensor => ({
      dtype: t.dtype,
      shape: [r1 - r0, cols],
      data: t.data.slice((ex * rows + r0) * cols * eb, (ex * rows + r1) * cols * eb),
    });
    for (let ex = 0; ex < e; ex++) {
      if (m[2] === "down_proj") flat[`${m[1]}.${ex}.down_proj.weight`] = slice(ex, 0, rows);
      else {
        flat[`${m[1]}.${ex}.gate_proj.weight`] = slice(ex, 0, rows / 2);
        flat[`${m[1]}.${ex}.up_proj.weight`] = slice(ex, rows / 2, rows);
      }
    }
    delete flat[name];
  }
  return flat;
}
