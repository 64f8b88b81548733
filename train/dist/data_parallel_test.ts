import assert from "node:assert/strict";
import { Tokenizer } from "../../data/tokenizer.ts";
import { PretrainDataset } from "../../data/datasets.ts";
import { DataLoader } from "../../data/loader.ts";
import type { LMSample } from "../../data/datasets.ts";
import { init } from "../../nn/model/minimind.ts";
import { config } from "../../nn/model/minimind_config.ts";
import { key } from "../../nn/random.ts";
import { scope } from "../../nn/scope.ts";
import { flatten } from "../../nn/tree.ts";
import type { Tree } from "../../nn/tree.ts";
import type { Tensor } from "../../nn/tensor.ts";
import { fixture } from "../../tests/_util.ts";
import { adamw } from "../optim.ts";
import { disposeState, makeTrainStep } from "../step.ts";
import type { TrainState } from "../step.ts";
import { lmBatch, lmLoss } from "../lm.ts";
import type { LmBatch } from "../lm.ts";
import {
  broadcastBytes,
  broadcastJson,
  CollectiveTimeoutError,
  inProcessGroup,
  worldFromEnv,
} from "./comm.ts";
import { dataParallel } from "./data_parallel.ts";
import { ShardedLoader } from "./shard.ts";

const POEMS = [
  "床前明月光，疑是地上霜。",
  "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
  "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
  "紅豆生南國。",
  "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
];
// 13 ragged texts: with a global batch of 4, the last step has one row (rank 1's shard is empty)
const TEXTS = Array.from({ length: 13 }, (_, i) => ({ text: `${i}${POEMS[i % POEMS.length]}` }));
const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});
const dataset = new PretrainDataset(TEXTS, tok, { maxLength: 20 });
const makeStep = () =>
  makeTrainStep<LmBatch, Tensor>(lmLoss(cfg), adamw({ lr: 3e-3 }), {
    accumulationSteps: 2,
    gradClip: 1,
    hasAux: true,
  });

async function finalParams(state: TrainState): Promise<Record<string, Float32Array>> {
  const out: Record<string, Float32Array> = {};
  for (const [k, t] of Object.entries(flatten(state.params))) {
    out[k] = (await t.data()) as Float32Array;
  }
  return out;
}

/** One process, global batch 4, two epochs: per-step losses and final params. */
async function single() {
  const step = makeStep();
  let state = step.init(init(cfg, key(7)) as unknown as Tree);
  const loader = new DataLoader(dataset, { batchSize: 4, seed: 3, trimPadding: true });
  const losses: number[] = [];
  for (let epoch = 0; epoch < 2; epoch++) {
    for (const b of loader.batches(epoch)) {
      const [next, out] = scope(() => step(state, lmBatch(b), { lr: 3e-3 }));
      state = next;
      losses.push(await out.loss.item());
      out.loss.dispose(), out.aux?.dispose(), out.gradNorm?.dispose();
    }
    const [next, norm] = step.flush(state, { lr: 3e-3 });
    state = next, norm?.dispose();
  }
  const params = await finalParams(state);
  disposeState(state);
  return { losses, params };
}

/** Rank `rank` of 2, batch 2 each, same seed; rank 1 starts from other params (rank 0's win). */
async function rankRun(rank: number, comm: ReturnType<typeof inProcessGroup>[number]) {
  const dp = dataParallel(makeStep(), comm, { weight: (b) => b.targets });
  let state = await dp.init(init(cfg, key(rank === 0 ? 7 : 99)) as unknown as Tree);
  const loader = new ShardedLoader(
    new DataLoader(dataset, { batchSize: 4, seed: 3, trimPadding: true }),
    rank,
    2,
  );
  const losses: number[] = [];
  let empty = 0;
  for (let epoch = 0; epoch < 2; epoch++) {
    for (const b of loader.batches(epoch)) {
      if (b.batch === 0) empty++;
      const batch = b.batch === 0 ? null : lmBatch(b);
      const [next, out] = await dp(state, batch, { lr: 3e-3 });
      if (batch) batch.ids.dispose(), batch.labels.dispose();
      state = next;
      losses.push(await out.loss.item());
      out.loss.dispose(), out.aux?.dispose(), out.gradNorm?.dispose();
    }
    const [next, norm] = dp.flush(state, { lr: 3e-3 });
    state = next, norm?.dispose();
  }
  const params = await finalParams(state);
  disposeState(state);
  return { losses, params, empty };
}

Deno.test("dataParallel: 2 in-process ranks × batch 2 = one process × batch 4 (losses, params)", async () => {
  const one = await single();
  const comms = inProcessGroup(2, { timeoutMs: 60_000 });
  const [r0, r1] = await Promise.all([rankRun(0, comms[0]), rankRun(1, comms[1])]);
  assert.equal(r1.empty, 2, "rank 1's shard of the last global batch of each epoch is empty");
  assert.equal(one.losses.length, 8);
  assert.deepEqual(r0.losses, r1.losses, "every rank reports the same global loss");
  // f32 summation order: the per-shard token means are recombined with weights
  for (let i = 0; i < one.losses.length; i++) {
    const d = Math.abs(one.losses[i] - r0.losses[i]);
    assert.ok(
      d <= 2e-5 * Math.abs(one.losses[i]),
      `step ${i}: ${one.losses[i]} vs ${r0.losses[i]}`,
    );
  }
  let maxDiff = 0;
  for (const [k, want] of Object.entries(one.params)) {
    const a = r0.params[k], b = r1.params[k];
    assert.deepEqual(a, b, `${k}: both ranks hold the same params`);
    for (let i = 0; i < want.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[i] - want[i]));
  }
  console.log(
    `max loss rel diff ${
      Math.max(...one.losses.map((l, i) => Math.abs(l - r0.losses[i]) / l)).toExponential(2)
    }, max param diff ${maxDiff.toExponential(2)}`,
  );
  assert.ok(maxDiff < 1e-5, `final params within 1e-5 of the one-process run: ${maxDiff}`);
  assert.ok(one.losses[7] < one.losses[0], "it trains");
});

Deno.test("ShardedLoader: step k of rank r holds rows r, r+N, … of the global step k", () => {
  const global = new DataLoader<LMSample>(dataset, { batchSize: 6, seed: 5 });
  const shards = [0, 1, 2].map((r) => [...new ShardedLoader(global, r, 3).batches(1)]);
  const want = [...global.batches(1)];
  assert.equal(shards[0].length, want.length);
  want.forEach((g, k) => {
    const got = [0, 1, 2].flatMap((r) => shards[r][k].indices);
    assert.deepEqual(got.sort(), [...g.indices].sort(), `step ${k}`);
    assert.deepEqual(shards[1][k].indices, g.indices.filter((_, i) => i % 3 === 1));
  });
  assert.throws(() => new ShardedLoader(global, 0, 4), /not a multiple/);
});

Deno.test("inProcessGroup: sums, broadcasts, and names the rank that never arrives", async () => {
  const comms = inProcessGroup(3, { timeoutMs: 200 });
  const xs = comms.map((c) => new Float32Array([c.rank, 1]));
  await Promise.all(comms.map((c, r) => c.allReduceSum(xs[r])));
  for (const x of xs) assert.deepEqual(Array.from(x), [3, 3]);
  const bs = comms.map((c) => new Uint8Array([c.rank * 10, 7]));
  await Promise.all(comms.map((c, r) => c.broadcast(bs[r], 2)));
  for (const b of bs) assert.deepEqual(Array.from(b), [20, 7]);
  // rank 1 never reaches the third collective
  const waits = [0, 2].map((r) => comms[r].allReduceSum(new Float32Array(1)));
  for (const w of waits) {
    await assert.rejects(w, (e: Error) => {
      assert.ok(e instanceof CollectiveTimeoutError);
      assert.match(e.message, /all-reduce #2 .* rank 1 never reached it/);
      return true;
    });
  }
});

Deno.test("worldFromEnv: mpirun's variables, then MiniMind's RANK/WORLD_SIZE", () => {
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  assert.deepEqual(worldFromEnv(env({ OMPI_COMM_WORLD_RANK: "1", OMPI_COMM_WORLD_SIZE: "4" })), {
    rank: 1,
    size: 4,
    source: "ompi",
  });
  assert.deepEqual(worldFromEnv(env({ RANK: "0", WORLD_SIZE: "2" })).source, "torchrun-style");
  assert.deepEqual(worldFromEnv(env({})), { rank: 0, size: 1, source: "none" });
  assert.throws(() => worldFromEnv(env({ RANK: "2", WORLD_SIZE: "2" })), /0 ≤ rank < size/);
});

Deno.test("broadcastBytes/broadcastJson: rank 0's payload of any length reaches every rank", async () => {
  const comms = inProcessGroup(2, { timeoutMs: 5000 });
  const got = await Promise.all(
    comms.map((c) =>
      broadcastJson(c, c.rank === 0 ? { seed: 42, resume: true } : { seed: 7, resume: false })
    ),
  );
  assert.deepEqual(got, [{ seed: 42, resume: true }, { seed: 42, resume: true }]);
  const big = new Uint8Array(10_000).map((_, i) => i & 255);
  const bytes = await Promise.all(comms.map((c) => broadcastBytes(c, c.rank === 0 ? big : null)));
  assert.deepEqual(bytes[1], big);
});
