// Data pipeline throughput: how many tokens per second the datasets + DataLoader deliver
// (tokenize, template, label, collate) on the embedded corpus, next to how many tokens per second
// a training step consumes, so that tokenization never starves training. Under `deno bench` it
// registers one batch of each loader on generated poem-like records with a small tokenizer.
//
//   deno run -A bench/data_bench.ts
//   deno bench -A bench/data_bench.ts

import {
  buildCorpus,
  DataLoader,
  type Dataset,
  PretrainDataset,
  readTrainingTexts,
  SFTDataset,
  trainTokenizer,
} from "../data/mod.ts";

function measure<T extends object>(
  name: string,
  ds: Dataset<T>,
  batchSize: number,
  seconds = 3,
): number {
  const loader = new DataLoader(ds, { batchSize, seed: 1 });
  let tokens = 0, batches = 0, targets = 0;
  const t0 = performance.now();
  outer: for (let epoch = 0;; epoch++) {
    for (const b of loader.batches(epoch)) {
      tokens += b.batch * b.seqLen;
      const labels = (b as unknown as { labels: Int32Array }).labels;
      for (let i = 0; i < labels.length; i++) if (labels[i] !== -100) targets++;
      batches++;
      if (performance.now() - t0 > seconds * 1000) break outer;
    }
  }
  const sec = (performance.now() - t0) / 1000;
  const rate = tokens / sec;
  console.log(
    `  ${name.padEnd(34)} ${(rate / 1e3).toFixed(0).padStart(6)}k tokens/s ` +
      `(${(targets / sec / 1e3).toFixed(0)}k non-ignored targets/s, ` +
      `${(batches / sec).toFixed(1)} batches/s)`,
  );
  return rate;
}

/** Poem-like lines over a few hundred CJK characters (deterministic). */
function syntheticLines(n: number): string[] {
  let x = 12345;
  const ch = () => {
    x = (x * 1103515245 + 12345) % 2147483648;
    return String.fromCharCode(0x4e00 + (x % 400));
  };
  const line = () => Array.from({ length: 7 }, ch).join("");
  return Array.from({ length: n }, () => `${line()}，${line()}。${line()}，${line()}。`);
}

if (!import.meta.main) {
  const lines = syntheticLines(2000);
  const tok = trainTokenizer(lines, { vocabSize: 600 });
  const pre = new PretrainDataset(lines.map((text) => ({ text })), tok, { maxLength: 340 });
  const sft = new SFTDataset(
    lines.map((l, i) => ({
      conversations: [
        { role: "user", content: `写一首七言绝句，题为《${l.slice(0, 2)}》。${i}` },
        { role: "assistant", content: l },
      ],
    })),
    tok,
    { maxLength: 512 },
  );
  for (
    const [name, ds, b] of [["pretrain B=32 T=340", pre, 32], ["sft B=16 T=512", sft, 16]] as const
  ) {
    const loader = new DataLoader(ds as Dataset<object>, { batchSize: b, seed: 1 });
    let it = loader.batches(0)[Symbol.iterator](), epoch = 0;
    Deno.bench({ name: `one batch, ${name}`, group: "loader" }, () => {
      let r = it.next();
      if (r.done) r = (it = loader.batches(++epoch)[Symbol.iterator]()).next();
    });
  }
}

if (import.meta.main) {
  const corpus = await buildCorpus();
  const tok = trainTokenizer(readTrainingTexts(corpus.pretrain), { vocabSize: 6400 });
  console.log("DataLoader throughput (batch × seq_len positions per second, one core)");
  const pre = new PretrainDataset(corpus.pretrain, tok, { maxLength: 340 });
  const rPre = measure("pretrain  B=32 T=340", pre, 32);
  const sft = new SFTDataset(corpus.sft, tok, { maxLength: 512 });
  const rSft = measure("sft       B=16 T=512", sft, 16);
  // A train step costs ≈ 6 · params FLOPs per token (forward + backward). MiniMind2-Small has
  // 25.8M params; a good CPU core sustains ~50 GFLOP/s in f32 matmul, a GPU ~10–100 TFLOP/s.
  const flopsPerToken = 6 * 25_829_888;
  for (const [what, flops] of [["CPU core @ 50 GFLOP/s", 50e9], ["GPU @ 20 TFLOP/s", 20e12]]) {
    const need = (flops as number) / flopsPerToken;
    console.log(
      `  MiniMind2-Small on a ${what}: ~${(need / 1e3).toFixed(1)}k tokens/s needed → ` +
        `loader headroom ×${(Math.min(rPre, rSft) / need).toFixed(1)}`,
    );
  }
}
