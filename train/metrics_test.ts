import assert from "node:assert/strict";
import { join } from "node:path";
import { type MetricsRecord, MetricsWriter } from "./metrics.ts";

function record(globalStep: number): MetricsRecord {
  return {
    update: globalStep,
    epoch: 0,
    step: globalStep,
    globalStep,
    loss: 5 - globalStep / 10,
    auxLoss: 0,
    lr: 1e-3,
    gradNorm: 1,
    tokensPerS: 1000,
    tokens: 64 * globalStep,
    elapsedS: globalStep,
  };
}

Deno.test("MetricsWriter on resume keeps the records through the checkpoint's step, drops later ones and a torn line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "pretrain_metrics.jsonl");
    const w = new MetricsWriter(path, { truncate: true });
    for (let s = 1; s <= 20; s++) w.write(record(s));
    // kill -9 mid-write: half a record, no newline
    await Deno.writeTextFile(path, '{"epoch":0,"step":21,"glo', { append: true });
    // the checkpoint was saved at step 7: steps 8–20 will be run again
    const resumed = new MetricsWriter(path, { keepThroughStep: 7 });
    for (let s = 8; s <= 10; s++) resumed.write(record(s));
    const steps = MetricsWriter.read(path).map((r) => r.globalStep);
    assert.deepEqual(steps, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    assert.ok((await Deno.readTextFile(path)).endsWith("}\n"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
