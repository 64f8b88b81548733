import assert from "node:assert/strict";
import { join } from "node:path";
import { main as demo } from "./demo.ts";
import { main as evalMain } from "./train/eval.ts";

Deno.test("deno task demo --quick runs corpus → tokenizer → pretrain → SFT → report; eval loads its weights", async () => {
  const dir = await Deno.makeTempDir();
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    assert.equal(await demo(["--quick", "--device", "cpu", "--save_dir", dir]), 0);
  } finally {
    console.log = log;
  }
  const text = lines.join("\n");
  assert.match(text, /untrained: held-out perplexity \d+/);
  assert.match(text, /held-out perplexity +\d+\.\d +\d+\.\d +\d+\.\d/);
  assert.match(text, /form accuracy \(line lengths\) +\d+\.\d% +\d+\.\d% +\d+\.\d%/);
  for (const f of ["pretrain_64.safetensors", "full_sft_64.safetensors", "full_sft_64_loss.svg"]) {
    assert.ok(await Deno.stat(join(dir, f)), f);
  }
  // the eval CLI loads the fine-tuned weights (with their tokenizer) and answers the test prompts
  const out: string[] = [];
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  try {
    const code = await evalMain([
      ...["--load_from", join(dir, "full_sft_64.safetensors"), "--mode", "auto"],
      ...["--max_new_tokens", "8", "--device", "cpu", "--show_speed", "1"],
    ]);
    assert.equal(code, 0);
  } finally {
    console.log = log;
  }
  assert.equal(out.filter((l) => l.startsWith("💬: ")).length, 8);
  assert.equal(out.filter((l) => /\[Speed\]: [\d.]+ tokens\/s/.test(l)).length, 8);
  await Deno.remove(dir, { recursive: true });
});
