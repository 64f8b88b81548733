/**
 * `deno task sft` — MiniMind's trainer/train_full_sft.py: supervised fine-tuning on
 * `{"conversations": […]}` JSONL (default: the embedded corpus's poetry tasks) with the loss on
 * the assistant spans only, starting from `out/pretrain_<hidden>.safetensors`; weights to
 * `out/full_sft_<hidden>.safetensors`.
 *
 *   deno task sft                                        # after deno task pretrain
 *   deno task sft --data_path dataset/sft_mini_512.jsonl --tokenizer_path model/
 *   deno task sft --from_weight out/pretrain_256.safetensors --epochs 1
 * @module
 */
import { SFTDataset } from "../data/datasets.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import { lmFlags, runLmCommand } from "./lm.ts";

/**
 * train_full_sft.py defaults: epochs 2, batch 16, accumulation 1, 340 tokens (MiniMind2), from
 * the pretrain weights; lr 1e-5 (minimind-3's; MiniMind2 used 1e-6).
 */
export const SFT_FLAGS = lmFlags({
  saveWeight: "full_sft",
  epochs: 2,
  batchSize: 16,
  learningRate: 1e-5,
  accumulationSteps: 1,
  maxSeqLen: 340,
  fromWeight: "pretrain",
});

const COMMAND = "deno task sft";

/**
 * Runs the SFT command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: args, given, help } = parseFlags(argv, SFT_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Supervised fine-tuning (trainer/train_full_sft.py).", SFT_FLAGS));
    return 0;
  }
  return await runLmCommand(args, given, {
    corpus: "sft",
    dataset: (path, tokenizer, o) => new SFTDataset(path, tokenizer, o),
    records: "conversations",
  });
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
