// Study path: "what does the model actually see?" — one pretrain sample and one SFT sample from
// the embedded poetry corpus: token ids, the tokens, and which positions carry a loss (labels ≠
// −100). The model shifts internally: the label at position t is predicted from positions < t.
//
//   deno run -A examples/inspect_samples.ts [--tokenizer_path out/tokenizer]
import { buildCorpus } from "../data/corpus/build.ts";
import { PretrainDataset, SFTDataset } from "../data/mod.ts";
import { resolveTokenizer } from "../train/lm.ts";

const path = Deno.args[0] === "--tokenizer_path" ? Deno.args[1] : undefined;
const tok = await resolveTokenizer(path);
const corpus = await buildCorpus();

function show(title: string, ids: Int32Array, labels: Int32Array): void {
  console.log(`\n${title}`);
  let end = ids.length;
  while (end > 0 && ids[end - 1] === tok.padId && labels[end - 1] === -100) end--;
  const rows: string[] = [];
  for (let t = 0; t < Math.min(end + 1, ids.length); t++) {
    const piece = JSON.stringify(tok.decode([ids[t]]));
    const mark = labels[t] === -100 ? "  ·" : "  ✓ loss";
    rows.push(`${String(t).padStart(4)} ${String(ids[t]).padStart(5)} ${piece.padEnd(16)}${mark}`);
  }
  console.log(rows.join("\n"));
  console.log(`  (${end} real tokens, then padding id ${tok.padId} up to ${ids.length})`);
}

const pre = new PretrainDataset(corpus.pretrain, tok, { maxLength: 48 });
const p = pre.get(0);
show("Pretrain sample: [bos] + text + [eos], every real token is a target", p.inputIds, p.labels);

const sft = new SFTDataset(corpus.sft, tok, { maxLength: 96 });
let i = 0;
while (sft.prompt(i).startsWith("<|im_start|>system")) i++; // one without a system prompt
console.log(`\nSFT sample ${i} rendered with the chat template:\n${sft.prompt(i)}`);
const s = sft.get(i);
show(
  "SFT sample: only the assistant's reply (and its <|im_end|>\\n) is a target",
  s.inputIds,
  s.labels,
);
