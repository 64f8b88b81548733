/**
 * `deno task pretrain` — MiniMind's trainer/train_pretrain.py: next-token prediction on
 * `{"text": …}` JSONL (default: the embedded classical-poetry corpus), AdamW with `get_lr`,
 * gradient accumulation and clipping; weights to `out/pretrain_<hidden>.safetensors`.
 *
 *   deno task pretrain                                   # MiniMind2-Small on the poetry corpus
 *   deno task pretrain --hidden_size 256 --num_hidden_layers 4 --batch_size 16 --epochs 1
 *   deno task pretrain --data_path dataset/pretrain_hq.jsonl --tokenizer_path model/
 *   deno task pretrain --from_resume 1                   # continue after Ctrl-C
 * @module
 */
import { PretrainDataset } from "../data/datasets.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import { lmFlags, runLmCommand } from "./lm.ts";

/** MiniMind2's train_pretrain.py defaults (epochs 1, batch 32, lr 5e-4, accumulation 8, 340 tokens). */
export const PRETRAIN_FLAGS = lmFlags({
  saveWeight: "pretrain",
  epochs: 1,
  batchSize: 32,
  learningRate: 5e-4,
  accumulationSteps: 8,
  maxSeqLen: 340,
  fromWeight: "none",
});

const COMMAND = "deno task pretrain";

/**
 * Runs the pretrain command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: args, given, help } = parseFlags(argv, PRETRAIN_FLAGS, COMMAND);
  if (help) {
    console.log(
      usage(COMMAND, "Pretrain a MiniMind model (trainer/train_pretrain.py).", PRETRAIN_FLAGS),
    );
    return 0;
  }
  return await runLmCommand(args, given, {
    corpus: "pretrain",
    dataset: (path, tokenizer, o) => new PretrainDataset(path, tokenizer, o),
    records: "texts",
  });
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
