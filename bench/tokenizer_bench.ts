// Tokenizer throughput: encode MB/s (ours, cold and warm cache, vs @huggingface/tokenizers) on
// the embedded corpus and on mixed English/code/chat text, and BPE training time and MB/s.
//
//   deno run -A bench/tokenizer_bench.ts     # prints a table
//   deno bench -A bench/tokenizer_bench.ts   # Deno.bench timings

import { Tokenizer as OracleTokenizer } from "@huggingface/tokenizers";
import { buildCorpus, readTrainingTexts, Tokenizer, trainTokenizer } from "../data/mod.ts";

const FIXTURE = new URL("../tokenizers/minimind-3/", import.meta.url);

async function loadTexts(): Promise<{ poetry: string[]; chat: string[] }> {
  const corpus = await buildCorpus();
  const poetry = readTrainingTexts(corpus.pretrain);
  const tok = await Tokenizer.fromFile(new URL("tokenizer.json", FIXTURE).pathname);
  const chat = readTrainingTexts(corpus.sft, { maxLines: 5000 }).map((t, i) =>
    tok.applyChatTemplate([
      {
        role: "system",
        content: "You are a helpful AI assistant. Answer carefully, step by step.",
      },
      { role: "user", content: t },
      {
        role: "assistant",
        content: `Sure! Here's answer #${i}: it's ${t.length} characters long.`,
      },
    ])
  );
  return { poetry, chat };
}

function mbps(texts: string[], encode: (s: string) => unknown): number {
  const bytes = texts.reduce((n, t) => n + new TextEncoder().encode(t).length, 0);
  const t0 = performance.now();
  for (const t of texts) encode(t);
  return bytes / 1e6 / ((performance.now() - t0) / 1000);
}

async function fixtureTokenizers(): Promise<{ ours: Tokenizer; oracle: OracleTokenizer }> {
  const json = JSON.parse(await Deno.readTextFile(new URL("tokenizer.json", FIXTURE)));
  const config = JSON.parse(await Deno.readTextFile(new URL("tokenizer_config.json", FIXTURE)));
  return { ours: Tokenizer.fromJSON(json, config), oracle: new OracleTokenizer(json, config) };
}

if (import.meta.main) {
  const { poetry, chat } = await loadTexts();
  console.log("encode MB/s (minimind-3 tokenizer)");
  for (const [name, texts] of [["poetry corpus", poetry], ["chat/English", chat]] as const) {
    const { ours, oracle } = await fixtureTokenizers();
    const cold = mbps(texts, (s) => ours.encode(s));
    const warm = mbps(texts, (s) => ours.encode(s));
    const ref = mbps(texts, (s) => oracle.encode(s, { add_special_tokens: false }));
    console.log(
      `  ${name.padEnd(14)} ours ${cold.toFixed(2)} (cold cache), ${warm.toFixed(2)} (warm); ` +
        `@huggingface/tokenizers ${ref.toFixed(2)}`,
    );
  }
  const bytes = poetry.reduce((n, t) => n + new TextEncoder().encode(t).length, 0);
  for (const vocabSize of [2000, 6400]) {
    const t0 = performance.now();
    trainTokenizer(poetry, { vocabSize });
    const sec = (performance.now() - t0) / 1000;
    console.log(
      `train vocab ${vocabSize} on ${(bytes / 1e6).toFixed(2)} MB: ${sec.toFixed(2)}s ` +
        `(${(bytes / 1e6 / sec).toFixed(2)} MB/s)`,
    );
  }
} else {
  const { poetry, chat } = await loadTexts();
  const sample = [...poetry.slice(0, 2000), ...chat.slice(0, 500)];
  const { ours, oracle } = await fixtureTokenizers();
  Deno.bench({
    name: "encode 2500 texts (ours, warm)",
    group: "encode",
    fn: () => {
      for (const t of sample) ours.encode(t);
    },
  });
  Deno.bench({
    name: "encode 2500 texts (@huggingface/tokenizers)",
    group: "encode",
    baseline: true,
    fn: () => {
      for (const t of sample) oracle.encode(t, { add_special_tokens: false });
    },
  });
  Deno.bench({
    name: "train BPE vocab 2000 on 2000 poems",
    n: 3,
    warmup: 0,
    fn: () => {
      trainTokenizer(poetry.slice(0, 2000), { vocabSize: 2000 });
    },
  });
}
