/**
 * GGUF export (llama.cpp, Ollama `FROM ./model.gguf`): `llama` architecture for MiniMind2 dense
 * models (q/k rows permuted from the rotate-half pairing to llama.cpp's interleaved one, as its
 * HF converter does), `qwen3` / `qwen3moe` for minimind-3 (NeoX RoPE, QK-norm; no permutation).
 * Tensor types F32, F16, BF16 or Q8_0 (1-D norms stay F32; Q8_0 needs rows of 32k values, other
 * rows fall back to F16). The tokenizer's vocab, merges, token types, special ids and chat
 * template go into the metadata (`tokenizer.ggml.model` "gpt2", pre-tokenizer "gpt-2").
 *
 * Layout (GGUF v3, little-endian): magic, version, tensor count, metadata count, metadata
 * key/values, tensor infos (name, dims fastest-first, type, offset), padding to the alignment
 * (32), tensor data (each tensor padded to the alignment).
 * @module
 */
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { toHalf } from "./safetensors.ts";

/** Tensor types of a GGUF export. */
export type GgufDType = "f32" | "f16" | "bf16" | "q8_0";

/** Options of {@link exportGguf}. */
export interface GgufOptions {
  /** Type of the 2-D weights (default f16). */
  dtype?: GgufDType;
  /** `general.name` (default "MiniMind"). */
  name?: string;
}

/** What {@link exportGguf} writes. */
export interface GgufModel {
  /** Model config. */
  cfg: MiniMindConfig;
  /** Parameters. */
  params: MiniMindParams;
  /** The tokenizer (required: llama.cpp reads the vocabulary from the file). */
  tokenizer: Tokenizer;
}

const GGML = { F32: 0, F16: 1, Q8_0: 8, BF16: 30 } as const;
const FILE_TYPE: Record<GgufDType, number> = { f32: 0, f16: 1, q8_0: 7, bf16: 32 };
const ALIGN = 32;

type Meta =
  | { t: "u32"; v: number }
  | { t: "i32"; v: number }
  | { t: "f32"; v: number }
  | { t: "bool"; v: boolean }
  | { t: "str"; v: string }
  | { t: "strs"; v: readonly string[] }
  | { t: "i32s"; v: readonly number[] };

const VALUE_TYPE = { u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9 } as const;

/** Little-endian byte sink that grows as needed. */
class Sink {
  buf = new Uint8Array(1 << 16);
  len = 0;
  #enc = new TextEncoder();
  #ensure(n: number): DataView {
    if (this.len + n > this.buf.length) {
      const nb = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
      nb.set(this.buf.subarray(0, this.len));
      this.buf = nb;
    }
    return new DataView(this.buf.buffer, this.len, n);
  }
  u32(x: number): void {
    this.#ensure(4).setUint32(0, x, true);
    this.len += 4;
  }
  i32(x: number): void {
    this.#ensure(4).setInt32(0, x, true);
    this.len += 4;
  }
  u64(x: number): void {
    this.#ensure(8).setBigUint64(0, BigInt(x), true);
    this.len += 8;
  }
  f32(x: number): void {
    this.#ensure(4).setFloat32(0, x, true);
    this.len += 4;
  }
  u8(x: number): void {
    this.#ensure(1).setUint8(0, x);
    this.len += 1;
  }
  str(s: string): void {
    const b = this.#enc.encode(s);
    this.u64(b.length);
    this.#ensure(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }
  pad(): void {
    while (this.len % ALIGN) this.u8(0);
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.len);
  }
}

function writeMeta(s: Sink, key: string, m: Meta): void {
  s.str(key);
  switch (m.t) {
    case "u32":
      s.u32(VALUE_TYPE.u32);
      s.u32(m.v);
      break;
    case "i32":
      s.u32(VALUE_TYPE.i32);
      s.i32(m.v);
      break;
    case "f32":
      s.u32(VALUE_TYPE.f32);
      s.f32(m.v);
      break;
    case "bool":
      s.u32(VALUE_TYPE.bool);
      s.u8(m.v ? 1 : 0);
      break;
    case "str":
      s.u32(VALUE_TYPE.str);
      s.str(m.v);
      break;
    case "strs":
      s.u32(VALUE_TYPE.arr);
      s.u32(VALUE_TYPE.str);
      s.u64(m.v.length);
      for (const x of m.v) s.str(x);
      break;
    case "i32s":
      s.u32(VALUE_TYPE.arr);
      s.u32(VALUE_TYPE.i32);
      s.u64(m.v.length);
      for (const x of m.v) s.i32(x);
      break;
  }
}

/** f32 → f16 bits (round to nearest even), via the safetensors helper. */
function f16Bits(values: Float32Array): Uint16Array {
  const raw = toHalf(values, [values.length], "F16");
  return new Uint16Array(raw.data.buffer, raw.data.byteOffset, values.length);
}

/**
 * Quantises rows of 32-multiples to ggml's Q8_0 blocks: per 32 values an f16 scale
 * d = max|x| / 127 and 32 int8 values round(x / d) (half away from zero), 34 bytes a block.
 *
 * @param values row-major values (length a multiple of 32)
 * @returns the block bytes
 */
export function quantizeQ8_0(values: Float32Array): Uint8Array {
  const n = values.length;
  if (n % 32) throw new Error(`Cannot quantise ${n} values to Q8_0: not a multiple of 32`);
  const blocks = n / 32, out = new Uint8Array(blocks * 34);
  const dv = new DataView(out.buffer);
  const scales = new Float32Array(blocks);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(values[b * 32 + i]));
    scales[b] = Math.fround(amax / 127);
  }
  const dBits = f16Bits(scales);
  for (let b = 0; b < blocks; b++) {
    const d = scales[b], id = d ? Math.fround(1 / d) : 0;
    dv.setUint16(b * 34, dBits[b], true);
    for (let i = 0; i < 32; i++) {
      const x = Math.fround(values[b * 32 + i] * id);
      const q = Math.sign(x) * Math.round(Math.abs(x)); // roundf: half away from zero
      dv.setInt8(b * 34 + 2 + i, q);
    }
  }
  return out;
}

/**
 * Permutes the rows of a q/k projection [heads·hd, in] from rotate-half pairs (i, i + hd/2) to
 * llama.cpp's interleaved pairs (2i, 2i + 1), per head: new row h·hd + 2j + s = old row
 * h·hd + s·hd/2 + j.
 *
 * @param w row-major weight
 * @param heads head count
 * @param cols columns (input width)
 * @returns the permuted copy
 */
export function permuteQK(w: Float32Array, heads: number, cols: number): Float32Array {
  const rows = w.length / cols, hd = rows / heads, half = hd / 2;
  const out = new Float32Array(w.length);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < half; j++) {
      for (let s = 0; s < 2; s++) {
        const src = h * hd + s * half + j, dst = h * hd + 2 * j + s;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
      }
    }
  }
  return out;
}

/** The GGUF architecture of a model, or why it has none. */
export function ggufArch(cfg: MiniMindConfig): "llama" | "qwen3" | "qwen3moe" {
  if (cfg.generation === "minimind2") {
    if (cfg.useMoe) {
      throw new Error(
        "Cannot export MiniMind2-MoE to GGUF: llama.cpp has no architecture with its shared experts (export it with --to minimind instead)",
      );
    }
    return "llama";
  }
  if (!cfg.useMoe) return "qwen3";
  if (!cfg.normTopkProb) {
    throw new Error(
      "Cannot export to GGUF qwen3moe: llama.cpp always renormalises the top-k weights, but this model has norm_topk_prob false",
    );
  }
  return "qwen3moe";
}

interface TensorOut {
  name: string;
  /** torch shape (slowest first). */
  shape: number[];
  type: number;
  data: Uint8Array;
}

function encodeTensor(
  name: string,
  shape: number[],
  f32: Float32Array,
  dtype: GgufDType,
): TensorOut {
  const asF32 = (): TensorOut => ({
    name,
    shape,
    type: GGML.F32,
    data: new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength),
  });
  if (shape.length === 1 || dtype === "f32") return asF32();
  const ne0 = shape[shape.length - 1];
  if (dtype === "q8_0" && ne0 % 32 === 0) {
    return { name, shape, type: GGML.Q8_0, data: quantizeQ8_0(f32) };
  }
  if (dtype === "bf16") {
    return { name, shape, type: GGML.BF16, data: toHalf(f32, shape, "BF16").data };
  }
  return { name, shape, type: GGML.F16, data: toHalf(f32, shape, "F16").data };
}

function tokenizerMeta(tok: Tokenizer, cfg: MiniMindConfig): [string, Meta][] {
  const n = Math.max(tok.vocabSize, cfg.vocabSize);
  const tokens: string[] = [], types: number[] = [];
  const added = new Map(tok.addedTokens.map((t) => [t.id, t]));
  for (let id = 0; id < n; id++) {
    const a = added.get(id);
    const s = tok.idToToken(id);
    if (s === undefined) {
      tokens.push(`[PAD${id}]`);
      types.push(5); // unused (the model's vocab is larger than the tokenizer's)
    } else {
      tokens.push(s);
      types.push(a ? (a.special ? 3 : 4) : 1);
    }
  }
  const out: [string, Meta][] = [
    ["tokenizer.ggml.model", { t: "str", v: "gpt2" }],
    ["tokenizer.ggml.pre", { t: "str", v: "gpt-2" }],
    ["tokenizer.ggml.tokens", { t: "strs", v: tokens }],
    ["tokenizer.ggml.token_type", { t: "i32s", v: types }],
    ["tokenizer.ggml.merges", { t: "strs", v: tok.model.merges.map(([a, b]) => `${a} ${b}`) }],
    ["tokenizer.ggml.bos_token_id", { t: "u32", v: tok.bosId >= 0 ? tok.bosId : cfg.bosTokenId }],
    ["tokenizer.ggml.eos_token_id", { t: "u32", v: tok.eosId >= 0 ? tok.eosId : cfg.eosTokenId }],
    ["tokenizer.ggml.add_bos_token", { t: "bool", v: false }],
    ["tokenizer.ggml.add_eos_token", { t: "bool", v: false }],
  ];
  if (tok.padId >= 0) out.push(["tokenizer.ggml.padding_token_id", { t: "u32", v: tok.padId }]);
  const tpl = tok.config.chat_template;
  if (typeof tpl === "string") out.push(["tokenizer.chat_template", { t: "str", v: tpl }]);
  return out;
}

/**
 * Serialises a model as GGUF bytes.
 *
 * @param model config, params, tokenizer
 * @param options tensor type, name
 * @returns the file contents
 */
export async function serializeGguf(
  model: GgufModel,
  options: GgufOptions = {},
): Promise<Uint8Array> {
  const { cfg, params, tokenizer } = model;
  const dtype = options.dtype ?? "f16";
  if (!(dtype in FILE_TYPE)) {
    throw new Error(`Cannot export GGUF with dtype ${dtype}: expected f32, f16, bf16 or q8_0`);
  }
  const arch = ggufArch(cfg);
  const meta: [string, Meta][] = [
    ["general.architecture", { t: "str", v: arch }],
    ["general.name", { t: "str", v: options.name ?? "MiniMind" }],
    ["general.file_type", { t: "u32", v: FILE_TYPE[dtype] }],
    ["general.alignment", { t: "u32", v: ALIGN }],
  ];
  if (dtype === "q8_0") meta.push(["general.quantization_version", { t: "u32", v: 2 }]);
  const a = (k: string, m: Meta) => meta.push([`${arch}.${k}`, m]);
  a("context_length", { t: "u32", v: cfg.maxPositionEmbeddings });
  a("embedding_length", { t: "u32", v: cfg.hiddenSize });
  a("block_count", { t: "u32", v: cfg.numHiddenLayers });
  a("feed_forward_length", { t: "u32", v: cfg.intermediateSize });
  a("attention.head_count", { t: "u32", v: cfg.numAttentionHeads });
  a("attention.head_count_kv", { t: "u32", v: cfg.numKeyValueHeads });
  a("attention.key_length", { t: "u32", v: cfg.headDim });
  a("attention.value_length", { t: "u32", v: cfg.headDim });
  a("attention.layer_norm_rms_epsilon", { t: "f32", v: cfg.rmsNormEps });
  a("rope.dimension_count", { t: "u32", v: cfg.headDim });
  a("rope.freq_base", { t: "f32", v: cfg.ropeTheta });
  a("vocab_size", { t: "u32", v: cfg.vocabSize });
  if (cfg.ropeScaling) {
    a("rope.scaling.type", { t: "str", v: "yarn" });
    a("rope.scaling.factor", { t: "f32", v: cfg.ropeScaling.factor });
    a("rope.scaling.original_context_length", {
      t: "u32",
      v: cfg.ropeScaling.originalMaxPositionEmbeddings,
    });
  }
  if (arch === "qwen3moe") {
    a("expert_count", { t: "u32", v: cfg.numExperts });
    a("expert_used_count", { t: "u32", v: cfg.numExpertsPerTok });
    a("expert_feed_forward_length", { t: "u32", v: cfg.moeIntermediateSize });
  }
  meta.push(...tokenizerMeta(tokenizer, cfg));

  const flat = flatten(params as unknown as Tree);
  const f32 = async (k: string): Promise<Float32Array> => {
    const t = flat[k];
    if (!t) throw new Error(`Cannot export GGUF: parameter ${k} is missing`);
    const d = await t.data();
    return d instanceof Float32Array ? d : Float32Array.from(d);
  };
  const tensors: TensorOut[] = [];
  const put = async (name: string, key: string, transform?: (w: Float32Array) => Float32Array) => {
    const w = await f32(key);
    tensors.push(encodeTensor(name, [...flat[key].shape], transform ? transform(w) : w, dtype));
  };
  await put("token_embd.weight", "model.embed_tokens.weight");
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const p = `model.layers.${l}`, b = `blk.${l}`, h = cfg.hiddenSize;
    await put(`${b}.attn_norm.weight`, `${p}.input_layernorm.weight`);
    const llama = arch === "llama";
    await put(
      `${b}.attn_q.weight`,
      `${p}.self_attn.q_proj.weight`,
      llama ? (w) => permuteQK(w, cfg.numAttentionHeads, h) : undefined,
    );
    await put(
      `${b}.attn_k.weight`,
      `${p}.self_attn.k_proj.weight`,
      llama ? (w) => permuteQK(w, cfg.numKeyValueHeads, h) : undefined,
    );
    await put(`${b}.attn_v.weight`, `${p}.self_attn.v_proj.weight`);
    await put(`${b}.attn_output.weight`, `${p}.self_attn.o_proj.weight`);
    if (!llama) {
      await put(`${b}.attn_q_norm.weight`, `${p}.self_attn.q_norm.weight`);
      await put(`${b}.attn_k_norm.weight`, `${p}.self_attn.k_norm.weight`);
    }
    await put(`${b}.ffn_norm.weight`, `${p}.post_attention_layernorm.weight`);
    if (arch !== "qwen3moe") {
      await put(`${b}.ffn_gate.weight`, `${p}.mlp.gate_proj.weight`);
      await put(`${b}.ffn_up.weight`, `${p}.mlp.up_proj.weight`);
      await put(`${b}.ffn_down.weight`, `${p}.mlp.down_proj.weight`);
    } else {
      await put(`${b}.ffn_gate_inp.weight`, `${p}.mlp.gate.weight`);
      for (const [g, proj] of [["gate", "gate_proj"], ["up", "up_proj"], ["down", "down_proj"]]) {
        const parts: Float32Array[] = [];
        for (let e = 0; e < cfg.numExperts; e++) {
          parts.push(await f32(`${p}.mlp.experts.${e}.${proj}.weight`));
        }
        const one = flat[`${p}.mlp.experts.0.${proj}.weight`].shape;
        const all = new Float32Array(parts.reduce((s, x) => s + x.length, 0));
        parts.forEach((x, e) => all.set(x, e * x.length));
        tensors.push(
          encodeTensor(`${b}.ffn_${g}_exps.weight`, [cfg.numExperts, ...one], all, dtype),
        );
      }
    }
  }
  await put("output_norm.weight", "model.norm.weight");
  if (!cfg.tieWordEmbeddings) await put("output.weight", "lm_head.weight");

  const head = new Sink();
  for (const c of [0x47, 0x47, 0x55, 0x46]) head.u8(c); // "GGUF"
  head.u32(3);
  head.u64(tensors.length);
  head.u64(meta.length);
  for (const [k, m] of meta) writeMeta(head, k, m);
  let offset = 0;
  for (const t of tensors) {
    head.str(t.name);
    head.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) head.u64(t.shape[i]); // fastest first
    head.u32(t.type);
    head.u64(offset);
    offset += Math.ceil(t.data.length / ALIGN) * ALIGN;
  }
  head.pad();
  const h = head.bytes();
  const out = new Uint8Array(h.length + offset);
  out.set(h);
  let at = h.length;
  for (const t of tensors) {
    out.set(t.data, at);
    at += Math.ceil(t.data.length / ALIGN) * ALIGN;
  }
  return out;
}

/**
 * Writes a model as a GGUF file that llama.cpp (and Ollama, LM Studio, …) loads: `llama` arch
 * for MiniMind2 dense, `qwen3` / `qwen3moe` for minimind-3; the tokenizer and chat template are
 * embedded. Written atomically (temp file, then rename).
 *
 * @param path output `.gguf` file
 * @param model config, params, tokenizer
 * @param options tensor type (f32, f16, bf16, q8_0; default f16), name
 * @returns when the file is written
 * @example
 * ```ts ignore
 * import * as mm from "@minimind/ts";
 * const m = await mm.loadModel("out/full_sft_512.safetensors");
 * await mm.exportGguf("minimind.gguf", { ...m, tokenizer: m.tokenizer! }, { dtype: "q8_0" });
 * ```
 */
export async function exportGguf(
  path: string,
  model: GgufModel,
  options: GgufOptions = {},
): Promise<void> {
  const bytes = await serializeGguf(model, options);
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeFile(tmp, bytes);
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
