// `deno task tokenizer`: train a MiniMind-style byte-level BPE tokenizer (MiniMind's
// trainer/train_tokenizer.py) and write tokenizer.json + tokenizer_config.json.
//
//   deno task tokenizer [--data file.jsonl|file.txt] [--vocab_size 6400] [--out out/tokenizer]
//                       [--max_lines N] [--min_frequency 0]
//
// Without --data it trains on the embedded corpus's pretrain text. JSONL lines contribute their
// "text" field, or (SFT format) their conversation contents joined with "\n"; .txt files one
// line per text.

import { parseArgs } from "node:util";
import { trainTokenizer } from "./bpe_trainer.ts";
import { buildCorpus } from "./corpus/build.ts";
import { JsonlFile } from "./jsonl.ts";

/**
 * Reads training texts from a JSONL file (`text`, or `conversations[].content` joined with "\n",
 * as MiniMind's train_tokenizer.py does) or from a plain text file (one text per line).
 *
 * @param path JSONL or text file.
 * @param options `maxLines`: stop after this many texts; `skipBadLines`: skip malformed lines.
 * @returns The texts.
 * @example
 * ```ts
 * import { readTrainingTexts } from "./train_tokenizer.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"text": "床前明月光"}\n');
 * readTrainingTexts(path); // ["床前明月光"]
 * ```
 */
export function readTrainingTexts(
  path: string,
  options: { maxLines?: number; skipBadLines?: boolean } = {},
): string[] {
  const max = options.maxLines ?? Infinity;
  if (!path.endsWith(".jsonl") && !path.endsWith(".json")) {
    return Deno.readTextFileSync(path).split(/\r?\n/).filter((l) => l.length > 0).slice(0, max);
  }
  const file = JsonlFile.open(path, {
    skipBadLines: options.skipBadLines,
    validate: false,
    cacheDir: null,
  });
  const texts: string[] = [];
  try {
    for (let i = 0; i < file.length && texts.length < max; i++) {
      const rec = file.get(i) as Record<string, unknown>;
      if (typeof rec?.text === "string") {
        texts.push(rec.text);
      } else if (Array.isArray(rec?.conversations)) {
        texts.push(
          (rec.conversations as { content?: unknown }[])
            .map((m) => typeof m.content === "string" ? m.content : "").join("\n"),
        );
      } else {
        throw new Error(
          `Invalid record at ${path}:${file.lineNumber(i)}: expected "text" or "conversations"`,
        );
      }
    }
  } finally {
    file.close();
  }
  return texts;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      data: { type: "string" },
      data_path: { type: "string" },
      vocab_size: { type: "string", default: "6400" },
      out: { type: "string", default: "out/tokenizer" },
      max_lines: { type: "string" },
      min_frequency: { type: "string", default: "0" },
      skip_bad_lines: { type: "boolean" },
    },
  });
  const vocabSize = Number(values.vocab_size);
  if (!Number.isInteger(vocabSize) || vocabSize < 293) {
    throw new Error(`Invalid --vocab_size ${values.vocab_size}: need an integer ≥ 293`);
  }
  let data = values.data ?? values.data_path;
  if (!data) {
    const corpus = await buildCorpus({ log: (m) => console.error(m) });
    data = corpus.pretrain;
  }
  const t0 = performance.now();
  const texts = readTrainingTexts(data, {
    maxLines: values.max_lines ? Number(values.max_lines) : undefined,
    skipBadLines: values.skip_bad_lines,
  });
  const readSec = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const tok = trainTokenizer(texts, {
    vocabSize,
    minFrequency: Number(values.min_frequency),
    onProgress: (m, b) =>
      console.error(`  merges ${m}/${b} (${((performance.now() - t1) / 1000).toFixed(1)}s)`),
  });
  const sec = (performance.now() - t1) / 1000;
  await tok.save(values.out!);
  let bytes = 0;
  const enc = new TextEncoder();
  for (const t of texts) bytes += enc.encode(t).length;
  const sample = texts.slice(0, 1000).join("\n");
  const chars = [...sample].length;
  console.log(
    `Trained ${tok.vocabSize} tokens (${tok.model.merges.length} merges) on ${texts.length} texts, ` +
      `${(bytes / 1e6).toFixed(2)} MB, in ${sec.toFixed(2)}s (${
        (bytes / 1e6 / sec).toFixed(2)
      } MB/s; ` +
      `reading ${readSec.toFixed(2)}s)`,
  );
  console.log(
    `${(chars / tok.encode(sample).length).toFixed(2)} characters per token on the first texts`,
  );
  console.log(`Wrote ${values.out}/tokenizer.json and tokenizer_config.json`);
}
