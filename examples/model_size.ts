// Study path: "how big is the model?" — parameter counts of the MiniMind presets and of a custom
// config, computed from the config (no weights) and checked against a real init.
//
//   deno run -A examples/model_size.ts
import { config, countParams, init, PRESETS, random, tree } from "../mod.ts";
import type { PresetName } from "../mod.ts";

const fmt = (n: number) => `${(n / 1e6).toFixed(2)}M`;
console.log("preset".padEnd(18), "hidden", "layers", "heads", "kv", "mlp".padStart(5), "params");
for (const name of Object.keys(PRESETS) as PresetName[]) {
  const cfg = config(name);
  const n = countParams(cfg);
  console.log(
    name.padEnd(18),
    String(cfg.hiddenSize).padStart(6),
    String(cfg.numHiddenLayers).padStart(6),
    String(cfg.numAttentionHeads).padStart(5),
    String(cfg.numKeyValueHeads).padStart(2),
    String(cfg.intermediateSize).padStart(5),
    cfg.useMoe ? `${fmt(n.total)} (${fmt(n.active)} active)` : fmt(n.total),
  );
}

// The demo's model: where do its parameters sit? (the tied embedding is counted once)
const cfg = config("minimind2-small", {
  hiddenSize: 192,
  numHiddenLayers: 4,
  numAttentionHeads: 6,
});
const params = init(cfg, random.key(0));
const groups: Record<string, number> = {};
for (const [name, t] of Object.entries(tree.flatten(params))) {
  const group = name.replace(/layers\.\d+\./, "layers.*.").replace(/\.weight$/, "");
  groups[group] = (groups[group] ?? 0) + t.size;
}
console.log(`\ndemo model (hidden 192, 4 layers, 6 heads): ${fmt(countParams(cfg).total)}`);
for (const [g, n] of Object.entries(groups)) console.log(`  ${g.padEnd(44)} ${n.toLocaleString()}`);
tree.dispose(params);
