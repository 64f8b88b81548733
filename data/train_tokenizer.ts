// `deno task tokenizer`: train a MiniMind-style byte-level BPE tokenizer (MiniMind's
// trainer/train_tokenizer.py) and write tokenizer.json + tokenizer_config.json.
//
//   deno task tokenizer [--data file.jsonl|file.txt] [--vocab_size 6400] [--out out/tokenizer]
//                       [--max_lines N] [--min_frequency 0]
//
// Without --data it trains on the embedded corpus's pretrain text. JSONL lines contribute their
// "text" field, or (SFT format) their conversation contents joined with "\n"; .txt files one
// line per text.

import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
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

/** The flags of `deno task tokenizer`. */
export const TOKENIZER_FLAGS = {
  data: {
    type: "optional",
    help: "JSONL or .txt file (default: the embedded corpus's pretrain text)",
  },
  data_path: { type: "alias", of: "data", help: "same as --data (the trainers' name)" },
  vocab_size: { type: "int", default: 6400, min: 293, help: "vocabulary size" },
  out: { type: "string", default: "out/tokenizer", help: "output folder" },
  max_lines: { type: "optional_int", min: 1, help: "read at most N texts" },
  min_frequency: { type: "int", default: 0, min: 0, help: "skip merges seen fewer times" },
  skip_bad_lines: { type: "switch", default: false, help: "skip malformed JSONL lines" },
} as const satisfies FlagTable;

const COMMAND = "deno task tokenizer";

/**
 * Runs the tokenizer command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values, help } = parseFlags(argv, TOKENIZER_FLAGS, COMMAND);
  if (help) {
    console.log(
      usage(
        COMMAND,
        "Train a byte-level BPE tokenizer (trainer/train_tokenizer.py).",
        TOKENIZER_FLAGS,
      ),
    );
    return 0;
  }
  const vocabSize = values.vocab_size;
  let data = values.data;
  if (!data) {
    const corpus = await buildCorpus({ log: (m) => console.error(m) });
    data = corpus.pretrain;
  }
  const t0 = performance.now();
  const texts = readTrainingTexts(data, {
    maxLines: values.max_lines,
    skipBadLines: values.skip_bad_lines,
  });
  const readSec = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const tok = trainTokenizer(texts, {
    vocabSize,
    minFrequency: values.min_frequency,
    onProgress: (m, b) =>
      console.error(`  merges ${m}/${b} (${((performance.now() - t1) / 1000).toFixed(1)}s)`),
  });
  const sec = (performance.now() - t1) / 1000;
  await tok.save(values.out);
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
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
