/**
 * `deno task model-size [--preset minimind2-small] [--hidden_size N] [--num_hidden_layers N]
 * [--use_moe 0|1] [--num_attention_heads N] [--num_key_value_heads N] [--vocab_size N]
 * [--intermediate_size N]` — the study path's day-2 exercise: prints where a MiniMind config's
 * parameters live (one row per module kind, layers and experts folded) and the total, in the
 * reference trainers' "Model Params: 25.83M" form.
 * @module
 */
import { countParams, paramShapes } from "../nn/model/minimind.ts";
import { config, PRESETS } from "../nn/model/minimind_config.ts";
import type { ConfigOverrides, MiniMindConfig, PresetName } from "../nn/model/minimind_config.ts";

/** One row of the table: a module kind with its shape and how often it occurs. */
export interface SizeRow {
  /** Key pattern, layer index as `{l}` and expert index as `{e}`. */
  readonly module: string;
  /** Shape of one instance. */
  readonly shape: readonly number[];
  /** Number of instances. */
  readonly count: number;
  /** Parameters over all instances. */
  readonly params: number;
}

/**
 * The per-module breakdown of a config (tied lm_head folded into the embedding row).
 *
 * @param cfg model config
 * @returns rows in state-dict order
 */
export function sizeRows(cfg: MiniMindConfig): SizeRow[] {
  const rows = new Map<string, { shape: number[]; count: number }>();
  for (const [key, shape] of paramShapes(cfg)) {
    const pattern = key.replace(/^model\.layers\.\d+\./, "model.layers.{l}.")
      .replace(/\.(experts|shared_experts)\.\d+\./, ".$1.{e}.")
      .replace(/\.weight$/, "");
    const r = rows.get(pattern);
    if (r) r.count++;
    else rows.set(pattern, { shape, count: 1 });
  }
  return [...rows].map(([module, r]) => ({
    module,
    shape: r.shape,
    count: r.count,
    params: r.count * r.shape.reduce((a, b) => a * b, 1),
  }));
}

function millions(n: number): string {
  return `${(n / 1e6).toFixed(2)}M`;
}

/**
 * The printable report: config line, table, total (and active parameters for MoE).
 *
 * @param cfg model config
 * @returns text with a trailing newline
 */
export function formatModelSize(cfg: MiniMindConfig): string {
  const { total, active } = countParams(cfg);
  const rows = sizeRows(cfg);
  const num = (n: number) => n.toLocaleString("en-US");
  const lines = [
    `${cfg.generation}: hidden_size ${cfg.hiddenSize}, num_hidden_layers ${cfg.numHiddenLayers}, ` +
    `heads ${cfg.numAttentionHeads}/${cfg.numKeyValueHeads} kv, head_dim ${cfg.headDim}, ` +
    `intermediate_size ${
      cfg.useMoe && cfg.generation === "minimind3" ? cfg.moeIntermediateSize : cfg.intermediateSize
    }, ` +
    `vocab ${cfg.vocabSize}${cfg.tieWordEmbeddings ? ", lm_head tied to embed_tokens" : ""}` +
    (cfg.useMoe
      ? cfg.generation === "minimind2"
        ? `, MoE ${cfg.nRoutedExperts} routed top-${cfg.numExpertsPerTok} + ${cfg.nSharedExperts} shared`
        : `, MoE ${cfg.numExperts} experts top-${cfg.numExpertsPerTok}`
      : ""),
    "",
  ];
  const head = ["module", "shape", "×", "params", "share"];
  const body = rows.map((r) => [
    r.module,
    `[${r.shape.join(", ")}]`,
    String(r.count),
    num(r.params),
    `${((100 * r.params) / total).toFixed(1)}%`,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const fmtRow = (c: string[]) =>
    c.map((x, i) => (i === 0 || i === 1 ? x.padEnd(w[i]) : x.padStart(w[i]))).join("  ");
  lines.push(fmtRow(head), w.map((n) => "-".repeat(n)).join("  "), ...body.map(fmtRow), "");
  lines.push(`total ${num(total)}${cfg.useMoe ? `, active per token ${num(active)}` : ""}`);
  lines.push(`Model Params: ${millions(total)}${cfg.useMoe ? `-A${millions(active)}` : ""}`);
  return lines.join("\n") + "\n";
}

const FLAGS: Record<string, keyof ConfigOverrides> = {
  hidden_size: "hiddenSize",
  num_hidden_layers: "numHiddenLayers",
  num_attention_heads: "numAttentionHeads",
  num_key_value_heads: "numKeyValueHeads",
  vocab_size: "vocabSize",
  intermediate_size: "intermediateSize",
  use_moe: "useMoe",
};

/**
 * Parses the CLI flags into a preset and overrides.
 *
 * @param args command-line arguments
 * @returns the resolved config
 */
export function configFromArgs(args: readonly string[]): MiniMindConfig {
  let preset: PresetName = "minimind2-small";
  const o: Record<string, number | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const m = /^--([a-z_]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`Cannot parse argument "${a}": expected --flag value`);
    const name = m[1];
    const value = m[2] ?? args[++i];
    if (value === undefined) throw new Error(`Cannot parse --${name}: it needs a value`);
    if (name === "preset") {
      if (!(value in PRESETS)) {
        throw new Error(
          `Cannot use --preset ${value}: expected one of ${Object.keys(PRESETS).join(", ")}`,
        );
      }
      preset = value as PresetName;
    } else if (FLAGS[name]) {
      const n = Number(value);
      if (!Number.isInteger(n) || n < 0) {
        throw new Error(`Cannot use --${name} ${value}: expected a non-negative integer`);
      }
      o[FLAGS[name]] = name === "use_moe" ? n !== 0 : n;
    } else {
      throw new Error(
        `Cannot use --${name}: known flags are --preset, ${
          Object.keys(FLAGS).map((f) => `--${f}`).join(", ")
        }`,
      );
    }
  }
  return config(preset, o as ConfigOverrides);
}

if (import.meta.main) {
  try {
    console.log(formatModelSize(configFromArgs(Deno.args)));
  } catch (e) {
    console.error((e as Error).message);
    Deno.exit(1);
  }
}
