// Study path: a mini pretrain on plain text with the library API only — PlainTextDataset (packed
// windows), DataLoader, makeTrainStep(valueAndGrad + clipping + AdamW), get_lr, then sampling.
// The whole loop fits on one screen; `deno task pretrain` adds checkpoints, logging and resume.
//
//   deno run -A examples/plaintext_pretrain.ts [file.txt] [--steps 200]
import {
  config,
  forward,
  generate,
  getLr,
  init,
  lossFromLogits,
  makeTrainStep,
  optim,
  random,
  scope,
  tensor,
} from "../mod.ts";
import type { MiniMindParams, Tensor, Tree } from "../mod.ts";
import { DataLoader, PlainTextDataset } from "../data/mod.ts";
import { resolveTokenizer } from "../train/lm.ts";

const file = Deno.args.find((a) => !a.startsWith("--") && !/^\d+$/.test(a));
const steps = Number(Deno.args[Deno.args.indexOf("--steps") + 1]) || 200;
const text = file ? await Deno.readTextFile(file) : [
  "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
  "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
  "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
  "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
].join("\n");

// data: one document per line, packed into windows of 32 tokens
const tok = await resolveTokenizer(undefined);
const data = PlainTextDataset.fromText(text, tok, { maxLength: 32, mode: "packed" });
const loader = new DataLoader(data, { batchSize: 4 });
console.log(`${data.length} windows of 32 tokens`);

// model: a tiny MiniMind2
const cfg = config("minimind2-small", {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  vocabSize: tok.vocabSize,
});
const loss = (p: Tree, b: { ids: Tensor }) => {
  const { logits } = forward(cfg, p as unknown as MiniMindParams, b.ids, { train: true });
  return lossFromLogits(logits, b.ids); // labels = ids: the model shifts internally
};
const step = makeTrainStep(loss, optim.adamw(), { gradClip: 1.0 });
let state = step.init(init(cfg, random.key(0)) as unknown as Tree);

// the loop: get_lr per step, one scope per step, the loss read after the step
let s = 0;
for (let epoch = 0; s < steps; epoch++) {
  for (const b of loader.batches(epoch)) {
    if (s++ >= steps) break;
    const lr = getLr(s, steps, 3e-3);
    const [next, out] = scope(() =>
      step(state, { ids: tensor(b.inputIds, [b.batch, b.seqLen], "i32") }, { lr })
    );
    state = next;
    const l = await out.loss.item(); // sync point
    out.loss.dispose();
    out.gradNorm?.dispose();
    if (s % 20 === 0) console.log(`step ${s}: loss ${l.toFixed(3)} lr ${lr.toExponential(2)}`);
  }
}

// sample a continuation
const model = { cfg, params: state.params as unknown as MiniMindParams, tokenizer: tok };
let out = "";
for await (const piece of generate(model, "床前", { maxNewTokens: 24, temperature: 0.7 })) {
  out += piece;
}
console.log(`床前${out}`);
